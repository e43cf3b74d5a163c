import { SESSION_HOOKS } from '../core/session-hooks.ts';
import type { SessionState } from '../core/state.ts';
import { Store } from '../file/store.ts';
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
  /** the oldest segment left, when such a session pins it (segments go oldest first, so it holds back the newer ones too) */
  blockedBy?: { segment: string; sessions: string[] };
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
 * server holds it), recovers every session, then, oldest segment first,
 * snapshots the sessions whose records pin it (at their last seq), which
 * releases and deletes it, until only the newest segment (never deleted) is
 * left. Damaged or failed sessions are never snapshotted (that would accept
 * their loss, which only `salvage` may do): a segment one of them pins stays,
 * and so do the newer ones (`blockedBy`).
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
    SESSION_HOOKS,
  );
  try {
    // Measured after open: the open itself may truncate a torn tail or remove temp files.
    const j0 = await dirBytes(fs, journalDir, '.wal');
    const s0 = await dirBytes(fs, snapshotDir, '.snap');
    const skipped: CompactResult['skipped'] = [];
    for (const [sid, r] of store.recovered) if (r.status === 'damaged' || r.status === 'failed') skipped.push({ session: sid, status: r.status });
    const unsafe = new Set(skipped.map((x) => x.session));
    // Oldest segment first (segments are deleted oldest first): snapshot the sessions that pin it,
    // which deletes it, until only the newest is left or a session that must not be snapshotted pins one.
    const deleted: string[] = [];
    const sealed = Math.max(0, store.journal.segmentNames().length - 1);
    const snapshotted = new Set<string>();
    let blockedBy: string[] = [];
    for (;;) {
      const pinning = store.journal.sessionsPinningOldest();
      if (pinning.length === 0) break;
      blockedBy = pinning.filter((sid) => unsafe.has(sid));
      if (blockedBy.length > 0) break;
      for (const sid of pinning) {
        const r = store.recovered.get(sid);
        // Not recovered at open, or snapshotted already and still pinning: it cannot be released here.
        if (r === undefined || snapshotted.has(sid)) {
          blockedBy = [sid];
          break;
        }
        const { deletedSegments } = await store.snapshot(sid, r.state, r.seq);
        snapshotted.add(sid);
        deleted.push(...deletedSegments);
      }
      if (blockedBy.length > 0) break;
      options.onProgress?.(Math.min(sealed, deleted.length), sealed);
    }
    deleted.push(...(await store.compact()));
    const j1 = await dirBytes(fs, journalDir, '.wal');
    const s1 = await dirBytes(fs, snapshotDir, '.snap');
    return {
      before: { journalBytes: j0.bytes, snapshotBytes: s0.bytes, segments: j0.files },
      after: { journalBytes: j1.bytes, snapshotBytes: s1.bytes, segments: j1.files },
      snapshotted: snapshotted.size,
      deletedSegments: deleted,
      skipped,
      ...(blockedBy.length === 0 ? {} : { blockedBy: { segment: store.journal.segmentNames()[0]!, sessions: blockedBy } }),
      durationMs: performance.now() - started,
    };
  } finally {
    await store.close();
  }
}
