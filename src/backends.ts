/**
 * The composition of the runtime side: the one module that knows the
 * concrete backends. The runtime and the sessions see only SessionBackend
 * (and its optional capabilities); this file opens the file store or the
 * PostgreSQL backend for them.
 */
import type { SessionBackend } from './backend/backend.ts';
import { ArborError, ErrorCodes } from './core/errors.ts';
import type { RecoveryHooks } from './backend/replay.ts';
import { DEFAULT_STORE_OPTIONS, type StoreOptions } from './file/options.ts';
import { Store, type RecoveryReport } from './file/store.ts';
import { openPgBackend, type PgBackendInternals, type PgBackendOptions } from './postgres/index.ts';

export type { StoreOptions } from './file/options.ts';
/** The storage engine's option names (createArbor takes them beside the runtime's). */
export const STORE_OPTION_NAMES: readonly string[] = Object.freeze(Object.keys(DEFAULT_STORE_OPTIONS));
export type { RecoveryReport } from './file/store.ts';

/** How to reach PostgreSQL (the runtime supplies the hooks). */
export type PostgresOptions<S> = Omit<PgBackendOptions<S>, 'hooks'> & PgBackendInternals;

/** What `openBackend` opens: PostgreSQL when `postgres` is set, else the file store with `store`. */
export interface BackendChoice<S> {
  store: Partial<StoreOptions>;
  postgres: PostgresOptions<S> | undefined;
}

/**
 * Opens the backend the options name. The file store opens with lazy
 * recovery unless `store.recovery` says otherwise, so the runtime answers
 * as soon as the journal is indexed.
 */
export async function openBackend<S>(choice: BackendChoice<S>, hooks: RecoveryHooks<S>): Promise<SessionBackend<S, RecoveryReport>> {
  if (choice.postgres !== undefined) {
    // The journal archive is the file store's; PostgreSQL's point-in-time recovery is its own WAL archiving (docs/pitr.md).
    if (choice.store.journalArchiveDir !== undefined) {
      throw new ArborError(ErrorCodes.INVALID_OPTION, 'option journalArchiveDir is for the file store: on PostgreSQL, point-in-time recovery is the server\'s own (WAL archiving with archive_command and a base backup, see docs/pitr.md); remove journalArchiveDir', { option: 'journalArchiveDir' });
    }
    // Encryption at rest is one option for both backends: createArbor's `encryptionKey` / `encryptionKeyFile` reach PostgreSQL too.
    const { encryptionKey, encryptionKeyFile, encryptionKeySource } = choice.store;
    const pgOptions: PgBackendOptions<S> = {
      ...choice.postgres,
      encryptionKey: choice.postgres.encryptionKey ?? encryptionKey,
      encryptionKeyFile: choice.postgres.encryptionKeyFile ?? encryptionKeyFile,
      encryptionKeySource: choice.postgres.encryptionKeySource ?? encryptionKeySource,
      hooks,
    };
    return openPgBackend<S>(pgOptions, { unsafeDisableFencing: choice.postgres.unsafeDisableFencing === true });
  }
  return Store.open<S>({ recovery: 'lazy', ...choice.store }, hooks);
}
