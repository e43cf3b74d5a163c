import { ArborError, ErrorCodes } from '../core/errors.ts';
import { posix } from 'node:path';
import { checkMasterKey, erasedUpTo, KeyStore, parseMasterKey, readKeyStoreFile, resolveMasterKey, type MasterKey } from '../file/keystore.ts';
import { ERASURE_DIR, Tombstones } from '../file/erasure.ts';
import { openStore } from '../file/store.ts';
import { PgBackend } from '../postgres/pg-backend.ts';
import type { FileSystem } from '../storage/fs-port.ts';
import { NodeFileSystem } from '../storage/node-fs.ts';

/** The master key of an operations command: `encryptionKey` (base64) or `encryptionKeyFile`, as for the runtime. */
export interface KeyOptions {
  encryptionKey?: string | undefined;
  encryptionKeyFile?: string | undefined;
  /** How errors name where the key came from (the CLI: `--encryption-key` or `env ARBOR_ENCRYPTION_KEY`). */
  encryptionKeySource?: string | undefined;
}

/**
 * The data keys of `dataDir` for a read-only command, or undefined when it
 * is not encrypted. `required`: an encrypted directory without a key is
 * refused (ARBOR_ENCRYPTION_KEY); otherwise `'no-key'` says it is encrypted
 * and nothing could be opened. A wrong key is always refused. Writes nothing.
 */
export async function keysForOps(fs: FileSystem, dataDir: string, o: KeyOptions, required: boolean): Promise<KeyStore | 'no-key' | undefined> {
  const master = await resolveMasterKey(fs, o);
  let file;
  try {
    file = await checkMasterKey(fs, dataDir, master);
  } catch (err) {
    if (!required && master === undefined && err instanceof ArborError && err.code === ErrorCodes.ENCRYPTION_KEY) return 'no-key';
    throw err;
  }
  if (file === undefined || master === undefined) return undefined;
  return KeyStore.open(fs, dataDir, master, file, file.since);
}

export interface RotateKeyOptions extends KeyOptions {
  /** the file store's data directory (or `postgres`) */
  dataDir?: string;
  /** a PostgreSQL schema instead of a data directory: its key ring and data_keys table */
  postgres?: { connectionString: string; schema?: string };
  /** the new master key, 32 bytes in base64 */
  newEncryptionKey: string;
  fs?: FileSystem;
}

/**
 * `arbor keys rotate`: rewraps every session's data key with the new master
 * key and writes the key store durably. No journal, snapshot or checkpoint
 * byte changes. Takes the data directory's lock (no server may hold it).
 * On PostgreSQL (`postgres`): one transaction rewraps the `data_keys` rows and
 * records the new key in `key_ring`; no event or snapshot row changes.
 */
export async function rotateEncryptionKey(o: RotateKeyOptions): Promise<{ keys: number; dataDir?: string; schema?: string }> {
  const next: MasterKey = parseMasterKey(o.newEncryptionKey, 'the new key');
  if (o.postgres !== undefined) {
    const backend = await PgBackend.open({
      connectionString: o.postgres.connectionString,
      ...(o.postgres.schema === undefined ? {} : { schema: o.postgres.schema }),
      hooks: { initialState: () => undefined, reducer: (s: undefined) => s },
      poolSize: 3,
      encryptionKey: o.encryptionKey,
      encryptionKeyFile: o.encryptionKeyFile,
      encryptionKeySource: o.encryptionKeySource,
    });
    try {
      const { keys } = await backend.rotateMasterKey(o.newEncryptionKey, next.source);
      return { keys, schema: backend.options.schema };
    } finally {
      await backend.close();
    }
  }
  if (o.dataDir === undefined) throw new ArborError(ErrorCodes.USAGE, 'rotateEncryptionKey needs dataDir (the file store) or postgres', { option: 'dataDir' });
  const fs = o.fs ?? new NodeFileSystem();
  const store = await openStore(
    { dataDir: o.dataDir, fs, recovery: 'lazy', encryptionKey: o.encryptionKey, encryptionKeyFile: o.encryptionKeyFile, encryptionKeySource: o.encryptionKeySource },
    { initialState: () => undefined, reducer: (s: undefined) => s },
  );
  try {
    const { keys } = await store.rotateMasterKey(o.newEncryptionKey, next.source);
    return { keys, dataDir: o.dataDir };
  } finally {
    await store.close();
  }
}

/**
 * Which records of `dataDir` belong to deleted sessions (tombstones whose
 * erasure is not complete, and sessions whose data key was destroyed): the
 * operations commands leave them out as the store does. Reads no key.
 */
export async function erasedRecords(fs: FileSystem, dataDir: string): Promise<(sid: string, lsn: number) => boolean> {
  const tombstones = await Tombstones.open(fs, posix.join(dataDir, ERASURE_DIR));
  const keyFile = await readKeyStoreFile(fs, dataDir);
  const shredded = new Map<string, number>();
  for (const [sid, e] of Object.entries(keyFile?.keys ?? {})) {
    const upTo = erasedUpTo(e);
    if (upTo !== undefined) shredded.set(sid, upTo);
  }
  return (sid, lsn) => tombstones.isErased(sid, lsn) || lsn <= (shredded.get(sid) ?? 0);
}
