/**
 * Backup against a store that changes under it, deterministically: the
 * backup's `afterCopy` hook lets the "server" (a store open in this process,
 * holding the lock) append, snapshot, delete segments and prune snapshots at
 * exact points of the copy. A negative control shows the same interleaving
 * loses acknowledged events when a backup copies in the naive order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStore, NodeFileSystem, type ArborError, type JournalRecord, type Store } from '../src/index.ts';
import { MemoryFileSystem } from '../src/testing.ts';
import { backupDataDir, restoreBackup } from '../src/ops/backup.ts';
import { verifyDataDir } from '../src/ops/verify.ts';
import { readRestoreMarker, restoreNoticeFor, restoreNoticeText, writeRestoreMarker, RESTORE_MARKER_FILE, type RestoreMarker } from '../src/file/restore-marker.ts';
import { tempDir } from './helpers/tmp.ts';

type Ids = { ids: string[] };
const hooks = {
  initialState: (): Ids => ({ ids: [] }),
  reducer: (s: Ids, e: JournalRecord): Ids => ({ ids: [...s.ids, (e.data as { id: string }).id] }),
};
const SMALL = { journalMaxSizeMb: 4096 / (1024 * 1024), maxSnapshotsPerSession: 2 };
const SESSIONS = ['a', 'b', 'c'];

/** A "server": a store with per-session states, so it can snapshot like the runtime does. */
async function server(dataDir: string) {
  const store: Store<Ids> = await openStore<Ids>({ dataDir, ...SMALL }, hooks);
  const states = new Map<string, { state: Ids; seq: number }>();
  const acked: { sid: string; id: string }[] = [];
  let n = 0;
  return {
    store,
    acked,
    /** `count` appends per session, each awaited (acknowledged) */
    async append(count: number): Promise<void> {
      for (let i = 0; i < count; i += 1) {
        for (const sid of SESSIONS) {
          n += 1;
          const id = `${sid}-${n}`;
          const { seq } = await store.append({ sid, type: 'note', data: { id, pad: 'x'.repeat(60) } });
          const cur = states.get(sid) ?? { state: hooks.initialState(), seq: 0 };
          states.set(sid, { state: hooks.reducer(cur.state, { data: { id } } as JournalRecord), seq });
          acked.push({ sid, id });
        }
      }
    },
    /** snapshots every session at its last seq: releases (and deletes) every sealed segment, prunes old snapshots */
    async snapshotAll(): Promise<void> {
      for (const [sid, { state, seq }] of states) await store.snapshot(sid, state, seq);
    },
  };
}

async function missingAfterOpen(dataDir: string, acked: { sid: string; id: string }[]): Promise<{ missing: number; damaged: number }> {
  const store = await openStore<Ids>({ dataDir, ...SMALL }, hooks);
  try {
    const missing = acked.filter(({ sid, id }) => !(store.recovered.get(sid)?.state.ids.includes(id) ?? false)).length;
    return { missing, damaged: store.recoveryReport().counts.damaged };
  } finally {
    await store.close();
  }
}

test('backup: segments deleted and snapshots pruned at every step of the copy; every event acknowledged before it started is restored', async () => {
  const { dir, cleanup } = tempDir('arbor-backup-');
  try {
    const srv = await server(join(dir, 'data'));
    await srv.append(40); // many segments, no snapshot: every segment pinned
    const segmentsAtStart = readdirSync(join(dir, 'data', 'journals')).filter((f) => f.endsWith('.wal'));
    assert.ok(segmentsAtStart.length >= 4);
    const ackedBefore = srv.acked.slice();
    let journalCopies = 0;
    let snapshotCopies = 0;
    const result = await backupDataDir({
      dataDir: join(dir, 'data'),
      dest: join(dir, 'backup'),
      afterCopy: async (file) => {
        if (file.startsWith('journals/') && ++journalCopies === 1) {
          // After the first segment: the server moves on, snapshots everything and deletes every sealed segment.
          await srv.append(10);
          await srv.snapshotAll();
        }
        if (file.startsWith('snapshots/') && ++snapshotCopies === 1) {
          // After the first snapshot: two more rounds, so every snapshot listed (retention 2) is pruned.
          await srv.append(5);
          await srv.snapshotAll();
          await srv.append(5);
          await srv.snapshotAll();
        }
      },
    });
    assert.ok(result.droppedSegments.includes(segmentsAtStart[0]!), 'the first segment copy was dropped when the next one vanished');
    assert.ok(result.vanishedSnapshots.length > 0, 'snapshots were pruned during the copy');
    assert.ok(result.relists.snapshots >= 1, 'the snapshot listing was taken again');
    await srv.store.close();

    const restored = await restoreBackup({ src: join(dir, 'backup'), dataDir: join(dir, 'restored') });
    assert.equal(restored.verify.ok, true);
    assert.deepEqual(await missingAfterOpen(join(dir, 'restored'), ackedBefore), { missing: 0, damaged: 0 });
    const marker = await readRestoreMarker(new NodeFileSystem(), join(dir, 'restored'));
    assert.equal(marker?.backupId, result.manifest.backupId);
    assert.deepEqual(marker?.sessions.map((s) => s.id), SESSIONS);
  } finally {
    cleanup();
  }
});

test('negative control: copying snapshots first and segments after, under the same interleaving, loses acknowledged events', async () => {
  const { dir, cleanup } = tempDir('arbor-backup-naive-');
  try {
    const srv = await server(join(dir, 'data'));
    await srv.append(40);
    const ackedBefore = srv.acked.slice();
    const naive = join(dir, 'naive');
    mkdirSync(naive);
    cpSync(join(dir, 'data', 'snapshots'), join(naive, 'snapshots'), { recursive: true });
    await srv.append(10);
    await srv.snapshotAll();
    cpSync(join(dir, 'data', 'journals'), join(naive, 'journals'), { recursive: true });
    await srv.store.close();
    const naiveResult = await missingAfterOpen(naive, ackedBefore);
    assert.ok(naiveResult.missing > 0 && naiveResult.damaged > 0, `the naive copy should lose events: ${JSON.stringify(naiveResult)}`);
    assert.equal((await verifyDataDir({ dataDir: naive })).ok, false, 'and verify says so');
  } finally {
    cleanup();
  }
});

test('restore marker: written durably, read back, malformed content refused naming the field', async () => {
  const fs = new MemoryFileSystem();
  await fs.mkdir('/d', 0o700);
  assert.equal(await readRestoreMarker(fs, '/d'), undefined, 'no marker: not restored');
  const marker: RestoreMarker = {
    format: 'arbor-restore-marker',
    version: 1,
    backupId: 'b-1',
    backupStartedAt: '2026-01-02T03:04:05.000Z',
    backupStartedAtMs: Date.parse('2026-01-02T03:04:05.000Z'),
    backupFinishedAt: '2026-01-02T03:04:06.000Z',
    restoredAt: '2026-01-03T00:00:00.000Z',
    sessions: [{ id: 'chat-1', lastSeq: 7 }],
    notice: restoreNoticeText('2026-01-02T03:04:05.000Z'),
  };
  await writeRestoreMarker(fs, '/d', marker);
  assert.deepEqual(await readRestoreMarker(fs, '/d'), marker);
  assert.match(marker.notice, /restored from a backup taken at 2026-01-02T03:04:05\.000Z/);

  const bad = async (patch: Record<string, unknown>, field: string): Promise<void> => {
    const d = new MemoryFileSystem();
    await d.mkdir('/x', 0o700);
    const bytes = Buffer.from(JSON.stringify({ ...marker, ...patch }));
    const h = await d.open(`/x/${RESTORE_MARKER_FILE}`, 'w+', 0o600);
    await h.write(bytes, 0, bytes.length, 0);
    await h.close();
    await assert.rejects(readRestoreMarker(d, '/x'), (err: ArborError) => err.code === 'ARBOR_CORRUPTION' && err.details.field === field && err.details.file === `/x/${RESTORE_MARKER_FILE}`);
  };
  // Which sessions are due a notice: listed ones, once per backupId.
  const due = restoreNoticeFor(marker, { id: 'chat-1', messages: [{ role: 'user' }] });
  assert.deepEqual(due, { content: marker.notice, metadata: { restored: true, backupId: 'b-1', backupStartedAt: marker.backupStartedAt } });
  assert.equal(restoreNoticeFor(marker, { id: 'chat-1', messages: [{ role: 'system', metadata: due!.metadata }] }), undefined, 'already shown');
  assert.ok(restoreNoticeFor(marker, { id: 'chat-1', messages: [{ role: 'system', metadata: { ...due!.metadata, backupId: 'older' } }] }), 'a notice of another backup does not count');
  assert.equal(restoreNoticeFor(marker, { id: 'created-later', messages: [] }), undefined, 'not in the backup');

  await bad({ format: 'other' }, 'format');
  await bad({ version: 2 }, 'version');
  await bad({ backupStartedAt: 'yesterday' }, 'backupStartedAt');
  await bad({ sessions: [{ id: '../x', lastSeq: 1 }] }, 'sessions[0].id');
  await bad({ sessions: [{ id: 'ok', lastSeq: -1 }] }, 'sessions[0].lastSeq');
  const { dir, cleanup } = tempDir('arbor-marker-');
  try {
    writeFileSync(join(dir, RESTORE_MARKER_FILE), 'not json');
    await assert.rejects(readRestoreMarker(new NodeFileSystem(), dir), (err: ArborError) => err.code === 'ARBOR_CORRUPTION' && err.details.field === 'content');
  } finally {
    cleanup();
  }
});
