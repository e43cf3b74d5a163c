import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import diagnostics_channel from 'node:diagnostics_channel';
import { createArbor, MockProvider, openStore, type ArborOptions } from '../src/index.ts';
import { MemoryFileSystem } from '../src/testing.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';
import { ErrorCodes } from '../src/core/errors.ts';
import { tempDir } from './helpers/tmp.ts';
import { rejectsWith } from './helpers/assertions.ts';
import { fileStore } from './helpers/file-store.ts';
import { filesContaining } from './helpers/files.ts';

// The journal archive (journalArchiveDir, docs/pitr.md): every sealed segment is copied there before the
// journal deletes it, erasure reaches the copies, and retention removes old ones.

const DAY = 24 * 3_600_000;
const wals = (dir: string): string[] => readdirSync(dir).filter((f) => f.endsWith('.wal')).sort();

const options = (dataDir: string, archiveDir: string, extra: ArborOptions = {}): ArborOptions => ({
  dataDir,
  journalArchiveDir: archiveDir,
  llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }),
  // small segments and frequent snapshots: segments are sealed and deleted while the chats run
  journalMaxSizeMb: 0.004,
  snapshotEveryEvents: 4,
  erasureDeadlineMs: 2_000,
  ...extra,
});

test('every sealed segment is in the archive before the journal deletes it: the archive is the whole log, without a gap', async (t) => {
  const { dir, cleanup } = tempDir('arbor-archive-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  const archiveDir = join(dir, 'archive');
  const arbor = await createArbor(options(dataDir, archiveDir));
  for (let i = 0; i < 15; i += 1) {
    for (const sid of ['a', 'b']) {
      await arbor.session(sid).sendMessage({ content: `turn ${i} of ${sid} ${'z'.repeat(200)}` });
      await arbor.session(sid).idle();
    }
  }
  const store = fileStore(arbor);
  await store.archive.settled();
  const live = wals(join(dataDir, 'journals'));
  const archived = wals(archiveDir);
  // the journal did delete segments (snapshots released them), and each of them is archived
  assert.ok(archived[0]! < live[0]!, `the journal deleted segments (live ${live[0]}, archive from ${archived[0]})`);
  assert.equal(archived[0], '00000000000000000001.wal');
  // every sealed live segment is archived too (byte for byte); only the active one is not
  for (const name of live.slice(0, -1)) assert.deepEqual(readFileSync(join(archiveDir, name)), readFileSync(join(dataDir, 'journals', name)), name);
  assert.ok(!archived.includes(live.at(-1)!), 'the active segment is not archived');
  // contiguous: each archived segment starts where the previous one ended, and the last one ends where the active one starts
  const metas = store.archive.segments();
  assert.equal(metas.length, archived.length);
  for (let i = 1; i < metas.length; i += 1) assert.equal(metas[i]!.firstLsn, metas[i - 1]!.lastLsn + 1, `${metas[i]!.segment} follows ${metas[i - 1]!.segment}`);
  assert.equal(metas.at(-1)!.lastLsn + 1, Number(live.at(-1)!.slice(0, 20)));
  await arbor.close();

  // a restart archives what it finds sealed and not yet archived, and keeps what is there
  const again = await createArbor(options(dataDir, archiveDir));
  await fileStore(again).archive.settled();
  assert.deepEqual(wals(archiveDir).slice(0, archived.length), archived);
  await again.close();
});

test('erasure reaches the archive: after a delete no archived file holds the chat, the deletion is recorded there, and the other chats stay', async (t) => {
  const { dir, cleanup } = tempDir('arbor-archive-erase-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  const archiveDir = join(dir, 'archive');
  const MARKER = 'okapi-marker-41d9';
  const KEEP = 'heron-marker-8c2a';
  const arbor = await createArbor(options(dataDir, archiveDir));
  for (let i = 0; i < 12; i += 1) {
    await arbor.session('doomed').sendMessage({ content: `${MARKER} ${i} ${'x'.repeat(200)}` });
    await arbor.session('doomed').idle();
    await arbor.session('keep').sendMessage({ content: `${KEEP} ${i} ${'y'.repeat(200)}` });
    await arbor.session('keep').idle();
  }
  const store = fileStore(arbor);
  await store.archive.settled();
  assert.ok(filesContaining(archiveDir, MARKER).length > 0, 'the chat is in the archive before the delete');
  await arbor.session('doomed').delete();
  // the deletion is in the archive before delete() resolves
  assert.deepEqual(store.archive.deletions().map(([sid]) => sid), ['doomed']);
  await arbor.whenErased('doomed');
  assert.deepEqual(filesContaining(archiveDir, MARKER), []);
  assert.deepEqual(filesContaining(dataDir, MARKER), []);
  assert.ok(filesContaining(archiveDir, KEEP).length > 0, 'the other chat is still archived');
  const tomb = JSON.parse(readFileSync(join(archiveDir, 'tombstones.json'), 'utf8')) as { sessions: Record<string, { lsn: number }> };
  assert.ok(tomb.sessions.doomed !== undefined && tomb.sessions.doomed.lsn > 0);
  await arbor.close();
});

test('retention removes archived segments older than journalArchiveRetentionDays, oldest first, and keeps the rest', async (t) => {
  const { dir, cleanup } = tempDir('arbor-archive-retention-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  const archiveDir = join(dir, 'archive');
  const arbor = await createArbor(options(dataDir, archiveDir, { journalArchiveRetentionDays: 3 }));
  for (let i = 0; i < 12; i += 1) {
    await arbor.session('r').sendMessage({ content: `turn ${i} ${'q'.repeat(300)}` });
    await arbor.session('r').idle();
  }
  const store = fileStore(arbor);
  await store.archive.settled();
  const before = wals(archiveDir);
  assert.ok(before.length >= 2, `archived: ${before.join(', ')}`);
  // two days on: nothing is old enough
  assert.deepEqual((await store.archive.prune(Date.now() + 2 * DAY)).removed, []);
  assert.deepEqual(wals(archiveDir), before);
  // four days on: the archived segments the journal no longer holds go, oldest first (meta files with them)
  const { removed } = await store.archive.prune(Date.now() + 4 * DAY);
  const live = new Set(store.journal.segmentNames());
  assert.ok(removed.length > 0);
  assert.deepEqual(removed, before.slice(0, removed.length), 'oldest first, a prefix');
  assert.ok(removed.every((n) => !live.has(n)), 'never one the journal holds');
  assert.deepEqual(wals(archiveDir), before.slice(removed.length));
  assert.deepEqual(readdirSync(archiveDir).filter((f) => f.endsWith('.meta.json')).length, wals(archiveDir).length);
  await arbor.close();
});

test('journalArchiveDir: refused where it would share a directory with the journal, and on PostgreSQL (its PITR is WAL archiving)', async (t) => {
  const { dir, cleanup } = tempDir('arbor-archive-opts-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  await assert.rejects(createArbor({ dataDir, journalArchiveDir: join(dataDir, 'journals') }), /journalArchiveDir must be a directory of its own/);
  await assert.rejects(createArbor({ dataDir, journalArchiveDir: join(dir, 'a'), journalArchiveRetentionDays: 0 }), /journalArchiveRetentionDays/);
  const err = await rejectsWith(createArbor({ journalArchiveDir: join(dir, 'a'), postgres: { connectionString: 'postgres://127.0.0.1:1/none' } }), ErrorCodes.INVALID_OPTION);
  assert.equal(err.details.option, 'journalArchiveDir');
});

test('a copy into the archive that fails keeps the segment in the journal; once the archive works again it is copied, then deleted', async () => {
  // given a journal of sealed segments and an archive disk that fails every open (EIO)
  const fs = new MemoryFileSystem();
  const writer = await openStore<ChatState>({ dataDir: '/data', fs, journalMaxSizeMb: 0.004 }, hooks);
  for (let n = 1; n <= 40; n += 1) await writer.append({ sid: 'a', type: 'user_message_sent', data: { n, text: 'a'.repeat(150) } });
  await writer.close();
  fs.injectFault({ op: 'open', pathIncludes: '/archive/', persistent: true });
  const store = await openStore<ChatState>({ dataDir: '/data', fs, journalMaxSizeMb: 0.004, journalArchiveDir: '/archive' }, hooks);
  const errors: string[] = [];
  const onError = (m: unknown): void => {
    errors.push((m as { source: string }).source);
  };
  diagnostics_channel.subscribe('arbor:error', onError);
  try {
    const sealed = store.journal.segmentNames().slice(0, -1);
    assert.ok(sealed.length >= 2);
    // when a snapshot releases every sealed segment
    const r = await store.loadSession('a');
    const { deletedSegments } = await store.snapshot('a', r!.state, r!.seq);
    await store.archive.settled();
    // then none is deleted (none could be archived), and the failure is published
    assert.deepEqual(deletedSegments, []);
    assert.deepEqual(store.journal.segmentNames().slice(0, -1), sealed);
    assert.ok(errors.includes('archive'));
    // and when the archive works again, the next deletion archives them first
    fs.clearFaults();
    assert.deepEqual(await store.compact(), sealed);
    assert.deepEqual((await fs.readdir('/archive')).filter((f) => f.endsWith('.wal')).sort(), sealed);
  } finally {
    diagnostics_channel.unsubscribe('arbor:error', onError);
    await store.close();
  }
});
