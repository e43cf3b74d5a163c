import { posix as path } from 'node:path';
import { hasCode, writeFully, type FileSystem } from '../storage/fs-port.ts';
import { isSessionId } from '../core/ids.ts';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { RESTORE_MARKER_FORMAT, RESTORE_MARKER_VERSION, type RestoreMarker } from '../core/restore-notice.ts';

/**
 * The restore marker: a file `RESTORED.json` in the root of a data directory
 * (beside `LOCK`), written by `arbor restore` after the restored files are
 * durable. It tells the runtime which sessions came back from a backup and
 * when that backup was taken, so each of them can show its user that the
 * newest part of the conversation may be gone. docs/backup.md has the contract.
 *
 * Contract for the runtime (it reads the marker with `readRestoreMarker` and
 * asks `restoreNoticeFor` whether a session is due its notice):
 * - When a session listed in `sessions` is first loaded after the restore and
 *   its history does not yet hold a restore notice carrying this marker's
 *   `backupId`, the runtime journals one visible system notice whose text is
 *   `notice` (metadata: `{ restored: true, backupId, backupStartedAt }`). The
 *   check on `backupId` makes it idempotent across restarts; sessions created
 *   after the restore are not listed and get nothing.
 * - The runtime never rewrites the marker. It may delete it once every listed
 *   session holds its notice; otherwise it stays (it is small, and backups do
 *   not copy it: a backup of a restored directory holds the journaled notices).
 */
export const RESTORE_MARKER_FILE = 'RESTORED.json';
export { RESTORE_MARKER_FORMAT, RESTORE_MARKER_VERSION, restoreNoticeText, restoreNoticeFor, type RestoreMarker, type RestoreNoticeMetadata } from '../core/restore-notice.ts';

/** Writes the marker durably: temp file → fdatasync → rename → directory sync. */
export async function writeRestoreMarker(fs: FileSystem, dataDir: string, marker: RestoreMarker): Promise<void> {
  const file = path.join(dataDir, RESTORE_MARKER_FILE);
  const temp = `${file}.tmp`;
  const handle = await fs.open(temp, 'w+', 0o600);
  try {
    await writeFully(handle, Buffer.from(`${JSON.stringify(marker, null, 2)}\n`), 0);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await fs.rename(temp, file);
  await fs.syncDir(dataDir);
}

/**
 * Reads `<dataDir>/RESTORED.json`. Resolves undefined when there is none (the
 * directory was not restored from a backup); throws ARBOR_CORRUPTION naming the file
 * and the field when it exists but is malformed.
 */
export async function readRestoreMarker(fs: FileSystem, dataDir: string): Promise<RestoreMarker | undefined> {
  const file = path.join(dataDir, RESTORE_MARKER_FILE);
  let text: string;
  try {
    text = Buffer.from(await fs.readFile(file)).toString('utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
  const bad = (field: string, why: string): ArborError => new ArborError(ErrorCodes.CORRUPTION, `restore marker ${file}: ${field} ${why}`, { file, field });
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw bad('content', 'is not JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('content', 'is not a JSON object');
  const m = value as Record<string, unknown>;
  if (m.format !== RESTORE_MARKER_FORMAT) throw bad('format', `must be "${RESTORE_MARKER_FORMAT}"`);
  if (m.version !== RESTORE_MARKER_VERSION) throw bad('version', `${JSON.stringify(m.version)} is not supported (expected ${RESTORE_MARKER_VERSION})`);
  for (const key of ['backupId', 'backupStartedAt', 'backupFinishedAt', 'restoredAt', 'notice'] as const) {
    if (typeof m[key] !== 'string' || (m[key] as string).length === 0) throw bad(key, 'must be a non-empty string');
  }
  for (const key of ['backupStartedAt', 'backupFinishedAt', 'restoredAt'] as const) {
    if (Number.isNaN(Date.parse(m[key] as string))) throw bad(key, 'must be an ISO 8601 time');
  }
  if (typeof m.backupStartedAtMs !== 'number' || !Number.isSafeInteger(m.backupStartedAtMs) || m.backupStartedAtMs < 0) throw bad('backupStartedAtMs', 'must be a non-negative integer');
  if (!Array.isArray(m.sessions)) throw bad('sessions', 'must be an array');
  m.sessions.forEach((s: unknown, i: number) => {
    const e = s as { id?: unknown; lastSeq?: unknown } | null;
    if (typeof e !== 'object' || e === null || !isSessionId(e.id)) throw bad(`sessions[${i}].id`, 'must be a valid session id');
    if (typeof e.lastSeq !== 'number' || !Number.isSafeInteger(e.lastSeq) || e.lastSeq < 0) throw bad(`sessions[${i}].lastSeq`, 'must be a non-negative integer');
  });
  return m as unknown as RestoreMarker;
}
