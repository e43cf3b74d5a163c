import { posix as path } from 'node:path';
import type { Journal } from './journal/journal.ts';
import type { JournalIndexFile } from './journal-index.ts';
import { removeJournalIndex } from './journal-index.ts';
import { readCheckpointHighWater, CHECKPOINT_FILE } from './table-checkpoint.ts';
import { readRestoreMarker, writeRestoreMarker, RESTORE_MARKER_FORMAT, RESTORE_MARKER_VERSION } from './restore-marker.ts';
import { hasCode, type FileSystem } from '../storage/fs-port.ts';

/** Acknowledged events a journal no longer holds: it ends below the durable high-water mark it once recorded. */
export interface JournalLoss {
  /** LSNs known lost, inclusive: from just after the journal's last record to the high-water mark */
  lostLsns: [number, number];
  /** how many events that is (at least: events written after the mark was recorded may be gone too) */
  events: number;
  /** where the mark came from */
  source: 'journal index' | 'checkpoint';
  /** when the mark was recorded (ms since the epoch) */
  recordedAt: number;
  /** sessions known to have lost events (from the index): their last seq then and now */
  sessions: { id: string; lastSeq: number; survivingSeq: number }[];
  /** whether the loss notice was arranged (RESTORED.json written); false when a restore marker was already there */
  noticed: boolean;
}

/**
 * Compares the journal's end after open with the durable high-water marks of
 * the journal index and the checkpoint, each trusted only when it is this
 * journal's (a segment it names still exists with its salt). The journal
 * holds every record up to the mark after any crash, so ending below it means
 * acknowledged events were cut from the disk.
 */
export async function detectLoss(o: { fs: FileSystem; dataDir: string; checkpointDir: string; journal: Journal; index: JournalIndexFile | { problem: string } }): Promise<JournalLoss | undefined> {
  const { journal } = o;
  const lastLsn = journal.report.lastLsn ?? journal.nextLsn - 1;
  let best: { lsn: number; source: JournalLoss['source']; at: number } | undefined;
  if ('image' in o.index && journal.report.index?.identity === 'same' && o.index.highWater > lastLsn) {
    best = { lsn: o.index.highWater, source: 'journal index', at: o.index.createdAt };
  }
  const ck = await readCheckpointHighWater(o.fs, o.checkpointDir);
  if (ck !== undefined && ck.lsn > lastLsn && ck.lsn > (best?.lsn ?? 0) && journal.segmentSalt(ck.segment) === ck.salt) {
    best = { lsn: ck.lsn, source: 'checkpoint', at: ck.createdAt };
  }
  if (best === undefined) return undefined;
  const sessions: JournalLoss['sessions'] = [];
  if ('image' in o.index && journal.report.index?.identity === 'same') {
    for (const e of o.index.image.sessions) {
      const now = journal.lastSeq(e.sid);
      if (e.lastSeq > now) sessions.push({ id: e.sid, lastSeq: e.lastSeq, survivingSeq: now });
    }
  }
  return { lostLsns: [lastLsn + 1, best.lsn], events: best.lsn - lastLsn, source: best.source, recordedAt: best.at, sessions, noticed: false };
}

/** The text of the notice a session that lost events gets. */
export function lossNoticeText(loss: JournalLoss): string {
  return `⚠️ Part of this conversation was lost from the server's storage: its journal was cut short (${loss.events} acknowledged events, recorded as durable by ${new Date(loss.recordedAt).toISOString()}, are gone). The newest messages may be missing.`;
}

/**
 * Makes the loss known for good: the affected sessions get the loss notice
 * through the restore marker (core/restore-notice.ts; idempotent per loss),
 * then the index and checkpoint that carried the old mark are removed, so
 * that the next open does not count the same loss again.
 */
export async function recordLoss(o: { fs: FileSystem; dataDir: string; checkpointDir: string; journal: Journal; loss: JournalLoss }): Promise<void> {
  const { fs, loss } = o;
  const existing = await readRestoreMarker(fs, o.dataDir).catch(() => 'unreadable' as const);
  if (existing === undefined && loss.sessions.length > 0) {
    const at = new Date(loss.recordedAt).toISOString();
    await writeRestoreMarker(fs, o.dataDir, {
      format: RESTORE_MARKER_FORMAT,
      version: RESTORE_MARKER_VERSION,
      backupId: `journal-loss-${loss.lostLsns[0]}-${loss.lostLsns[1]}`,
      backupStartedAt: at,
      backupStartedAtMs: loss.recordedAt,
      backupFinishedAt: at,
      restoredAt: new Date().toISOString(),
      sessions: loss.sessions.map((s) => ({ id: s.id, lastSeq: s.survivingSeq })),
      notice: lossNoticeText(loss),
    });
    loss.noticed = true;
  }
  await removeJournalIndex(fs, o.checkpointDir);
  try {
    await fs.unlink(path.join(o.checkpointDir, CHECKPOINT_FILE));
    await fs.syncDir(o.checkpointDir);
  } catch (err) {
    if (!hasCode(err, 'ENOENT')) throw err;
  }
}
