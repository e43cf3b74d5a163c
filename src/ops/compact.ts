import { upcastJournalRecord } from '../core/events.ts';
import { initialSessionState, reduceSession, type SessionState } from '../core/state.ts';
import { Store } from '../store.ts';
import { listDir, resolveLayout, type LayoutOptions, type ProgressFn } from './layout.ts';
import type { FileSystem } from '../storage/fs-port.ts';
import { posix as path } from 'node:path';

export interface CompactOptions extends LayoutOptions {
  maxEventBytes?: number;
  onProgress?: ProgressFn;
}

export interface CompactResult {
  before: { journalBytes: number; snapshotBytes: number; segments: number };
  after: { journalBytes: number; snapshotBytes: number; segments: number };
  /** sessions snapshotted at their last seq so their journal records no longer pin segments */
  snapshotted: number;
  deletedSegments: string[];
  /** sessions left alone because their history is damaged (snapshotting them would seal the gap: that is `salvage`) */
  skipped: { session: string; status: string }[];
  durationMs: number;
}

async function dirBytes(fs: FileSystem, dir: string, suffix: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0;
  let files = 0;
  for (const n of await listDir(fs, dir)) {
    if (!n.endsWith(suffix)) continue;
    try {
      bytes += (await fs.stat(path.join(dir, n))).size;
      files += 1;
    } catch {
      // vanished
    }
  }
  return { bytes, files };
}

/**
 * Offline compaction: takes the data directory's lock (ARBOR_LOCKED when a
 * server holds it), recovers every session, snapshots each one whose newest
 * snapshot is behind its last event, and deletes every journal segment those
 * snapshots release (all but the newest, which is never deleted). Damaged or
 * failed sessions are skipped: snapshotting them would accept their loss,
 * which only `salvage` may do.
 */
export async function compactDataDir(options: CompactOptions): Promise<CompactResult> {
  const started = performance.now();
  const layout = resolveLayout(options);
  const { fs, journalDir, snapshotDir } = layout;
  const store = await Store.open<SessionState>(
    {
      dataDir: layout.dataDir,
      journalDir,
      snapshotDir,
      fs,
      ...(options.maxEventBytes === undefined ? {} : { maxEventBytes: options.maxEventBytes }),
    },
    { initialState: initialSessionState, reducer: reduceSession, upcastEvent: upcastJournalRecord },
  );
  try {
    // Measured after open: the open itself may truncate a torn tail or remove temp files.
    const j0 = await dirBytes(fs, journalDir, '.wal');
    const s0 = await dirBytes(fs, snapshotDir, '.snap');
    const skipped: CompactResult['skipped'] = [];
    const todo: [string, { state: SessionState; seq: number }][] = [];
    for (const [sid, r] of store.recovered) {
      if (r.status === 'damaged' || r.status === 'failed') {
        skipped.push({ session: sid, status: r.status });
        continue;
      }
      if (r.seq > 0 && (store.snapshots.seqs(sid).at(-1) ?? 0) < r.seq) todo.push([sid, r]);
    }
    const deleted: string[] = [];
    let done = 0;
    for (const [sid, r] of todo) {
      const { deletedSegments } = await store.snapshot(sid, r.state, r.seq);
      deleted.push(...deletedSegments);
      done += 1;
      options.onProgress?.(done, todo.length);
    }
    deleted.push(...(await store.compact()));
    const j1 = await dirBytes(fs, journalDir, '.wal');
    const s1 = await dirBytes(fs, snapshotDir, '.snap');
    return {
      before: { journalBytes: j0.bytes, snapshotBytes: s0.bytes, segments: j0.files },
      after: { journalBytes: j1.bytes, snapshotBytes: s1.bytes, segments: j1.files },
      snapshotted: todo.length,
      deletedSegments: deleted,
      skipped,
      durationMs: performance.now() - started,
    };
  } finally {
    await store.close();
  }
}
