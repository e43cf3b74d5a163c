import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStore, type Store } from '../src/file/store.ts';
import { isArborError } from '../src/core/errors.ts';
import { MemoryFileSystem } from '../src/testing/memory-fs.ts';
import { segmentFileName } from '../src/file/journal/format.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';
import { GatedFileSystem } from './helpers/gated-fs.ts';
import { tempDir } from './helpers/tmp.ts';

const base = { dataDir: '/data', journalFlushIntervalMs: 3_600_000 };
const ev = (sid: string, n: number, extra: Record<string, unknown> = {}) => ({ sid, type: 'user_message_sent', data: { n }, ...extra });
const code = (c: string) => (err: unknown) => isArborError(err) && err.code === c;

async function gated(options: Record<string, unknown> = {}): Promise<{ fs: GatedFileSystem; mem: MemoryFileSystem; store: Store<ChatState> }> {
  const mem = new MemoryFileSystem();
  const fs = new GatedFileSystem(mem);
  const store = await openStore<ChatState>({ ...base, fs, ...options }, hooks);
  fs.counts.clear();
  return { fs, mem, store };
}

test('group commit: 100 appends in one tick go out in one write and one fdatasync', async () => {
  const { fs, store } = await gated();
  // when 100 sessions append at once
  const results = await Promise.all(Array.from({ length: 100 }, (_, i) => store.append(ev(`s${i}`, i))));
  // then one write and one sync carried them all
  assert.equal(fs.count('write'), 1);
  assert.equal(fs.count('datasync'), 1);
  assert.deepEqual(results.map((r) => r.lsn), Array.from({ length: 100 }, (_, i) => i + 1));
  await store.close();
});

test('group commit: nothing is acknowledged before its sync; appends during a flush form the next batch, written while the first syncs', async () => {
  const { fs, store } = await gated();
  fs.hold();
  let firstAcked = false;
  // given a first append whose sync is in progress
  const syncing = fs.nextSync();
  const first = store.append(ev('a', 1)).then((r) => ((firstAcked = true), r));
  await syncing;
  // when 50 more arrive during that flush
  let restAcked = 0;
  const rest = Array.from({ length: 50 }, (_, i) => store.append(ev(`s${i}`, i)).then(() => (restAcked += 1)));
  for (let i = 0; i < 5; i += 1) await new Promise((r) => setImmediate(r));
  // then nothing is acknowledged while the syncs are pending
  assert.equal(firstAcked, false);
  assert.equal(restAcked, 0);
  // and the 50 went out together in a second write, whose sync is pipelined behind the first
  assert.equal(fs.count('write'), 2);
  assert.equal(fs.count('datasync'), 2);
  fs.release();
  await first;
  await Promise.all(rest);
  assert.equal(fs.count('write'), 2);
  assert.equal(fs.count('datasync'), 2);
  await store.close();
});

test('pipelined syncs acknowledge in log order: a later batch whose sync finishes first waits for the earlier one', async () => {
  const { fs, store } = await gated();
  // given the first batch's sync is slow and the second's is fast
  fs.holdNext();
  const order: string[] = [];
  const syncing = fs.nextSync();
  const first = store.append(ev('a', 1)).then(() => order.push('first'));
  await syncing;
  const second = store.append(ev('b', 1)).then(() => order.push('second'));
  for (let i = 0; i < 5; i += 1) await new Promise((r) => setImmediate(r));
  // then the second is not acknowledged before the first, although its own sync completed
  assert.equal(fs.count('datasync'), 2);
  assert.deepEqual(order, []);
  fs.release();
  await Promise.all([first, second]);
  assert.deepEqual(order, ['first', 'second']);
  await store.close();
});

test('a failed sync fails every batch in flight, including an earlier one whose own sync succeeds', async () => {
  const mem = new MemoryFileSystem();
  const fs = new GatedFileSystem(mem);
  const store = await openStore<ChatState>({ ...base, fs }, hooks);
  // given the first batch's sync is held, and the second batch's sync (which reaches the disk first) fails:
  // an fsync error may have dropped the first batch's dirty pages too
  fs.holdNext();
  mem.injectFault({ op: 'datasync', error: 'EIO' });
  const syncing = fs.nextSync();
  const first = store.append(ev('a', 1)).then(() => 'acknowledged', (e: unknown) => e);
  await syncing;
  const second = store.append(ev('b', 1)).then(() => 'acknowledged', (e: unknown) => e);
  for (let i = 0; i < 5; i += 1) await new Promise((r) => setImmediate(r));
  fs.release();
  // then neither is acknowledged, although the first one's own sync succeeds afterwards
  assert.ok(code('ARBOR_IO_ERROR')(await first), String(await first));
  assert.ok(code('ARBOR_IO_ERROR')(await second), String(await second));
  assert.equal(store.journal.state, 'failed');
  await store.close();
});

test('group commit: batches are capped in records (journalMaxBatchRecords=10 → 35 appends in 4 batches)', async () => {
  const { fs, store } = await gated({ journalMaxBatchRecords: 10 });
  await Promise.all(Array.from({ length: 35 }, (_, i) => store.append(ev(`s${i}`, i))));
  assert.equal(fs.count('datasync'), 4);
  await store.close();
});

test('a full queue rejects at once with ARBOR_QUEUE_FULL and writes nothing for it', async () => {
  const { fs, store } = await gated({ journalMaxQueueRecords: 5 });
  fs.hold();
  const accepted = Array.from({ length: 5 }, (_, i) => store.append(ev('a', i)));
  // when a sixth arrives while five wait for the writer
  await assert.rejects(store.append(ev('a', 99)), code('ARBOR_QUEUE_FULL'));
  fs.release();
  // then the five are written and the sixth never was
  assert.deepEqual((await Promise.all(accepted)).map((r) => r.seq), [1, 2, 3, 4, 5]);
  assert.deepEqual((await store.read('a')).map((r) => (r.data as { n: number }).n), [0, 1, 2, 3, 4]);
  await store.close();
});

test('seq is per session and gapless; expectedSeq conflicts are coded and write nothing', async () => {
  const { store } = await gated();
  assert.equal((await store.append(ev('a', 1))).seq, 1);
  assert.equal((await store.append(ev('b', 1))).seq, 1);
  assert.equal((await store.append(ev('a', 2, { expectedSeq: 1 }))).seq, 2);
  // when a writer races with a stale expectedSeq
  await assert.rejects(store.append(ev('a', 3, { expectedSeq: 1 })), (err: unknown) => isArborError(err, 'ARBOR_SEQ_CONFLICT') && err.details.actualSeq === 2 && err.details.sessionId === 'a');
  // then the session continues without a gap
  assert.equal((await store.append(ev('a', 3))).seq, 3);
  assert.deepEqual((await store.read('a')).map((r) => r.seq), [1, 2, 3]);
  await store.close();
});

test('clientMessageId dedupe: a retry returns the original result and writes nothing — concurrently, after restart, and after the segment is gone', async () => {
  const mem = new MemoryFileSystem();
  const options = { ...base, fs: mem, journalMaxSizeMb: 4096 / 1024 / 1024 };
  let store = await openStore<ChatState>(options, hooks);
  // when the same request is sent twice at once
  const [one, two] = await Promise.all([store.append(ev('a', 1, { clientMessageId: 'm1' })), store.append(ev('a', 1, { clientMessageId: 'm1' }))]);
  assert.equal(one.seq, 1);
  assert.deepEqual({ ...two, duplicate: false }, one);
  assert.equal(two.duplicate, true);
  await store.close();
  // then after a restart the retry still returns seq 1 and writes nothing
  store = await openStore<ChatState>(options, hooks);
  const again = await store.append(ev('a', 1, { clientMessageId: 'm1' }));
  assert.equal(again.seq, 1);
  assert.equal(again.duplicate, true);
  assert.equal(store.journal.lastSeq('a'), 1);
  // and after a snapshot released the record and its segment was deleted
  for (let n = 2; n <= 30; n += 1) await store.append({ sid: 'a', type: 't', data: { n, text: 'p'.repeat(300) }, clientMessageId: `m${n}` });
  const ns = Array.from({ length: 30 }, (_, i) => i + 1);
  const { deletedSegments } = await store.snapshot('a', { ns }, 30);
  assert.ok(deletedSegments.includes(segmentFileName(1)), `deleted ${deletedSegments}`);
  await store.close();
  store = await openStore<ChatState>(options, hooks);
  const late = await store.append(ev('a', 1, { clientMessageId: 'm1' }));
  assert.equal(late.seq, 1);
  assert.equal(late.duplicate, true);
  assert.equal((await store.append(ev('a', 31))).seq, 31);
  await store.close();
});

test('rotation keeps segments under journalMaxSizeMb; snapshots let old segments go; sessionsPinningOldest names who to snapshot', async () => {
  const mem = new MemoryFileSystem();
  const store = await openStore<ChatState>({ ...base, fs: mem, journalMaxSizeMb: 8192 / 1024 / 1024 }, hooks);
  const history = new Map<string, number[]>();
  for (let n = 1; n <= 200; n += 1) {
    const sid = `s${n % 4}`;
    await store.append({ sid, type: 't', data: { n, text: 'q'.repeat(200) } });
    history.set(sid, [...(history.get(sid) ?? []), n]);
  }
  const sizes = Object.entries(mem.dump()).filter(([p]) => p.endsWith('.wal')).map(([, b]) => b.length);
  assert.ok(sizes.length > 3, `${sizes.length} segments`);
  for (const size of sizes) assert.ok(size <= 8192, `segment of ${size} bytes`);
  // when the sessions pinning the oldest segment are snapshotted
  const pinning = store.journal.sessionsPinningOldest();
  assert.deepEqual(pinning.sort(), ['s0', 's1', 's2', 's3']);
  for (const sid of pinning) await store.snapshot(sid, { ns: history.get(sid)! }, history.get(sid)!.length);
  // then all sealed segments are deleted, and recovery from snapshots is exact
  assert.equal(store.journal.segmentNames().length, 1);
  await store.close();
  const reopened = await openStore<ChatState>({ ...base, fs: mem }, hooks);
  for (const [sid, ns] of history) assert.deepEqual(reopened.recovered.get(sid)!.state.ns, ns);
  await reopened.close();
});

test('buffered mode acknowledges before writing and writes once journalBatchSize events are queued', async () => {
  const { fs, store } = await gated({ durability: 'buffered', journalBatchSize: 5 });
  for (let n = 1; n <= 4; n += 1) await store.append(ev('a', n));
  // then four acknowledged events are not yet written
  assert.equal(fs.count('write'), 0);
  await store.append(ev('a', 5));
  await new Promise((r) => setImmediate(r));
  assert.equal(fs.count('write'), 1);
  assert.equal(fs.count('datasync'), 1);
  await store.close();
});

test('buffered mode writes and syncs after journalFlushIntervalMs when the batch is not full', async () => {
  const { fs, store } = await gated({ durability: 'buffered', journalBatchSize: 1000, journalFlushIntervalMs: 10 });
  await store.append(ev('a', 1));
  for (let i = 0; i < 100 && fs.count('datasync') === 0; i += 1) await new Promise((r) => setTimeout(r, 5));
  assert.equal(fs.count('write'), 1);
  assert.equal(fs.count('datasync'), 1);
  await store.close();
});

test('write mode acknowledges after write(2) and syncs on the interval', async () => {
  const { fs, store } = await gated({ durability: 'write', journalFlushIntervalMs: 10 });
  await store.append(ev('a', 1));
  assert.equal(fs.count('write'), 1);
  assert.equal(fs.count('datasync'), 0);
  for (let i = 0; i < 100 && fs.count('datasync') === 0; i += 1) await new Promise((r) => setTimeout(r, 5));
  assert.equal(fs.count('datasync'), 1);
  await store.close();
});

test('a corrupt record mid-log quarantines its session (readable, refuses writes) until reopened with salvage', async () => {
  // given a log where session a's second event is damaged and a has later events
  const mem = new MemoryFileSystem();
  let store = await openStore<ChatState>({ ...base, fs: mem }, hooks);
  for (const [sid, n] of [['a', 1], ['a', 2], ['b', 3], ['a', 4]] as const) await store.append(ev(sid, n));
  await store.close();
  const path = `/data/journals/${segmentFileName(1)}`;
  const bytes = mem.dump()[path]!;
  const text = Buffer.from(bytes).toString('latin1');
  const at = text.indexOf('"n":2');
  const h = await mem.open(path, 'r+');
  await h.write(Buffer.from('"n":9'), 0, 5, at);
  await h.close();
  // when it is opened
  store = await openStore<ChatState>({ ...base, fs: mem }, hooks);
  const report = store.recoveryReport();
  // then the damage is reported with segment and offset, a is damaged with the gap, b is fine
  assert.equal(report.journal.damage[0]!.segment, segmentFileName(1));
  assert.ok(report.journal.damage[0]!.offset > 0);
  const a = report.sessions.find((s) => s.sid === 'a')!;
  assert.equal(a.status, 'damaged');
  assert.deepEqual(a.missing, [2, 2]);
  assert.deepEqual(store.recovered.get('a')!.state.ns, [1]);
  await assert.rejects(store.append(ev('a', 5)), code('ARBOR_SESSION_QUARANTINED'));
  assert.equal((await store.append(ev('b', 6))).seq, 2);
  await store.close();
  // and an operator's salvage accepts the loss: a is recovered past its gap and writable
  store = await openStore<ChatState>({ ...base, fs: mem, salvage: true }, hooks);
  assert.equal(store.recoveryReport().sessions.find((s) => s.sid === 'a')!.status, 'salvaged');
  assert.deepEqual(store.recovered.get('a')!.state.ns, [1, 4]);
  assert.equal((await store.append(ev('a', 7))).seq, 4);
  await store.close();
  store = await openStore<ChatState>({ ...base, fs: mem }, hooks);
  assert.equal(store.recoveryReport().sessions.find((s) => s.sid === 'a')!.status, 'recovered');
  assert.deepEqual(store.recovered.get('a')!.state.ns, [1, 4, 7]);
  await store.close();
});

test('snapshots: retention keeps the newest maxSnapshotsPerSession; orphan temp files are removed at open', async () => {
  const mem = new MemoryFileSystem();
  let store = await openStore<ChatState>({ ...base, fs: mem, maxSnapshotsPerSession: 2 }, hooks);
  const ns: number[] = [];
  for (let n = 1; n <= 4; n += 1) {
    await store.append(ev('a', n));
    ns.push(n);
    await store.snapshot('a', { ns: [...ns] }, n);
  }
  assert.deepEqual(store.snapshots.seqs('a'), [3, 4]);
  await store.close();
  const h = await mem.open('/data/snapshots/a.00000000000000000009.snap.tmp', 'w+');
  await h.close();
  store = await openStore<ChatState>({ ...base, fs: mem, maxSnapshotsPerSession: 2 }, hooks);
  assert.deepEqual(store.recoveryReport().snapshotTempFilesRemoved, ['a.00000000000000000009.snap.tmp']);
  assert.equal(mem.exists('/data/snapshots/a.00000000000000000009.snap.tmp'), false);
  assert.deepEqual(store.recovered.get('a')!.state.ns, [1, 2, 3, 4]);
  await store.close();
});

test('snapshots of an older state schema go through upcastState; a newer one or a missing upcaster fails that session only', async () => {
  const mem = new MemoryFileSystem();
  let store = await openStore<{ list: number[] } | ChatState>({ ...base, fs: mem, stateSchemaVersion: 1 }, hooks as never);
  for (const sid of ['a', 'b']) {
    await store.append(ev(sid, 1));
    await store.snapshot(sid, { list: [1] }, 1);
  }
  await store.close();
  // when opened by a build with state schema 2 and an upcaster
  const upcasting = { ...hooks, upcastState: (s: unknown, from: number) => (assert.equal(from, 1), { ns: (s as { list: number[] }).list }) };
  store = await openStore<ChatState>({ ...base, fs: mem, stateSchemaVersion: 2 }, upcasting) as never;
  assert.deepEqual((store as Store<ChatState>).recovered.get('a')!.state.ns, [1]);
  await store.close();
  // and without one, each session fails on its own and is reported, not thrown
  const plain = await openStore<ChatState>({ ...base, fs: mem, stateSchemaVersion: 2 }, hooks);
  assert.equal(plain.recoveryReport().counts.failed, 2);
  await assert.rejects(plain.append(ev('a', 2)), code('ARBOR_SESSION_QUARANTINED'));
  await plain.close();
});

test('a reducer that throws fails only its session, which is reported with the seq', async () => {
  const mem = new MemoryFileSystem();
  let store = await openStore<ChatState>({ ...base, fs: mem }, hooks);
  await store.append(ev('a', 1));
  await store.append({ sid: 'bad', type: 'poison', data: { n: 1 } });
  await store.close();
  const picky = { ...hooks, reducer: (s: ChatState, e: { type: string; data: unknown }) => (e.type === 'poison' ? (() => { throw new Error('boom'); })() : hooks.reducer(s, e as never)) };
  store = await openStore<ChatState>({ ...base, fs: mem }, picky as never);
  const report = store.recoveryReport();
  assert.equal(report.sessions.find((s) => s.sid === 'a')!.status, 'recovered');
  const bad = report.sessions.find((s) => s.sid === 'bad')!;
  assert.equal(bad.status, 'failed');
  assert.match(bad.error!, /seq 1/);
  await store.close();
});

test('invalid session ids are refused before they reach any path', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const store = await openStore<ChatState>({ dataDir: dir }, hooks);
    for (const sid of ['../../etc/passwd', '..%2f', '/abs', 'a\\b', 'a\0b', 'a.b', '', 'x'.repeat(129), 'é']) {
      await assert.rejects(store.append({ sid, type: 't', data: 1 }), code('ARBOR_INVALID_SESSION_ID'), JSON.stringify(sid));
      await assert.rejects(store.snapshot(sid, { ns: [] }, 0), code('ARBOR_INVALID_SESSION_ID'));
    }
    await store.close();
    assert.deepEqual(readdirSync(dir).sort(), ['journals', 'snapshots']);
    assert.deepEqual(readdirSync(join(dir, 'snapshots')), []);
  } finally {
    cleanup();
  }
});

test('bad input names the field and writes nothing', async () => {
  const { store } = await gated({ maxEventBytes: 1000 });
  await assert.rejects(store.append({ sid: 'a', type: '', data: 1 }), (e: unknown) => isArborError(e, 'ARBOR_INVALID_INPUT') && e.details.field === 'type');
  await assert.rejects(store.append({ sid: 'a', type: 't', data: undefined }), (e: unknown) => isArborError(e, 'ARBOR_INVALID_INPUT') && e.details.field === 'data');
  await assert.rejects(store.append({ sid: 'a', type: 't', data: { n: 1n } }), (e: unknown) => isArborError(e, 'ARBOR_INVALID_INPUT') && e.details.field === 'data');
  await assert.rejects(store.append({ sid: 'a', type: 't', data: 'x'.repeat(2000) }), code('ARBOR_TOO_LARGE'));
  await assert.rejects(store.append({ sid: 'a', type: 't', data: 1, clientMessageId: '' }), (e: unknown) => isArborError(e, 'ARBOR_INVALID_INPUT') && e.details.field === 'clientMessageId');
  assert.equal(store.journal.lastSeq('a'), 0);
  assert.equal((await store.append({ sid: 'a', type: 't', data: 1 })).seq, 1);
  await store.close();
});

test('options are validated with the option name and the value', async () => {
  await assert.rejects(openStore({ ...base, durability: 'sometimes' as never }, hooks), /durability.*fsync, write, buffered.*"sometimes"/);
  await assert.rejects(openStore({ ...base, journalBatchSize: 0 }, hooks), /journalBatchSize/);
  await assert.rejects(openStore({ ...base, journalMaxSizeMb: -1 }, hooks), /journalMaxSizeMb/);
  await assert.rejects(openStore({ ...base, bogus: 1 } as never, hooks), /unknown option bogus/);
});

test('one process per data directory: a second open is refused, a dead owner\'s or torn lock is taken over', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const first = await openStore<ChatState>({ dataDir: dir }, hooks);
    // a second store on the same dir, even in this process, is refused and names the owner
    await assert.rejects(openStore<ChatState>({ dataDir: dir }, hooks), (e: unknown) => isArborError(e, 'ARBOR_LOCKED') && (e.details.owner as { pid: number }).pid === process.pid);
    await first.close();
    // a lock left by a dead process is stale
    writeFileSync(join(dir, 'LOCK'), JSON.stringify({ pid: 2 ** 22 + 7, host: (await import('node:os')).hostname(), startedAt: 'then' }));
    const second = await openStore<ChatState>({ dataDir: dir }, hooks);
    assert.equal((second.recoveryReport().staleLock as { pid: number }).pid, 2 ** 22 + 7);
    await second.close();
    // and so is a torn one
    writeFileSync(join(dir, 'LOCK'), '{"pid":12');
    const third = await openStore<ChatState>({ dataDir: dir }, hooks);
    assert.equal(third.recoveryReport().staleLock, 'unreadable');
    await third.close();
    assert.equal(existsSync(join(dir, 'LOCK')), false);
  } finally {
    cleanup();
  }
});

test('files are 0600 and directories 0700, also when they existed with wider modes', async () => {
  const { dir, cleanup } = tempDir();
  try {
    const dataDir = join(dir, 'data');
    mkdirSync(join(dataDir, 'journals'), { recursive: true, mode: 0o755 });
    chmodSync(dataDir, 0o755);
    let store = await openStore<ChatState>({ dataDir }, hooks);
    await store.append(ev('a', 1));
    await store.snapshot('a', { ns: [1] }, 1);
    await store.close();
    const wal = join(dataDir, 'journals', segmentFileName(1));
    chmodSync(wal, 0o644);
    store = await openStore<ChatState>({ dataDir }, hooks);
    const mode = (p: string) => statSync(p).mode & 0o777;
    assert.equal(mode(dataDir), 0o700);
    assert.equal(mode(join(dataDir, 'journals')), 0o700);
    assert.equal(mode(join(dataDir, 'snapshots')), 0o700);
    assert.equal(mode(wal), 0o600);
    assert.equal(mode(join(dataDir, 'LOCK')), 0o600);
    for (const f of readdirSync(join(dataDir, 'snapshots'))) assert.equal(mode(join(dataDir, 'snapshots', f)), 0o600);
    await store.close();
  } finally {
    cleanup();
  }
});

test('close is idempotent, flushes, and later calls fail with ARBOR_CLOSED', async () => {
  // given a buffered event that no batch has written yet
  const { fs, mem, store } = await gated({ durability: 'buffered', journalBatchSize: 100 });
  await store.append(ev('a', 1));
  assert.equal(fs.count('write'), 0);
  // when close is called several times
  await Promise.all([store.close(), store.close()]);
  await store.close();
  // then later calls are refused, and the event was written and synced: it survives a power cut
  await assert.rejects(store.append(ev('a', 2)), code('ARBOR_CLOSED'));
  const reopened = await openStore<ChatState>({ ...base, fs: mem.crashImageWith(0, 'none') }, hooks);
  assert.deepEqual(reopened.recovered.get('a')?.state.ns, [1]);
  await reopened.close();
});

test('a real-disk store survives close and reopen with every event, read back per session from a seq', async () => {
  const { dir, cleanup } = tempDir();
  try {
    // batches of at most 20 records, so the 0.01 MiB segments rotate
    let store = await openStore<ChatState>({ dataDir: dir, journalMaxSizeMb: 0.01, journalMaxBatchRecords: 20 }, hooks);
    await Promise.all(Array.from({ length: 300 }, (_, i) => store.append({ sid: `s${i % 7}`, type: 't', data: { n: i, text: 'w'.repeat(100) } })));
    await store.close();
    store = await openStore<ChatState>({ dataDir: dir, journalMaxSizeMb: 0.01 }, hooks);
    const total = [...store.recovered.values()].reduce((s, r) => s + r.seq, 0);
    assert.equal(total, 300);
    assert.ok(store.journal.segmentNames().length > 3);
    const tail = await store.read('s3', 40);
    assert.deepEqual(tail.map((r) => r.seq), Array.from({ length: store.recovered.get('s3')!.seq - 39 }, (_, i) => 40 + i));
    await store.close();
  } finally {
    cleanup();
  }
});

test('events of an older schema version go through upcastEvent before the reducer', async () => {
  const mem = new MemoryFileSystem();
  let store = await openStore<ChatState>({ ...base, fs: mem }, hooks);
  // given an event written as v1 with its number under another name
  await store.append({ sid: 'a', type: 'user_message_sent', v: 1, data: { number: 7 } });
  await store.append({ sid: 'a', type: 'user_message_sent', v: 2, data: { n: 8 } });
  await store.close();
  // when recovery runs with an upcaster from v1 to v2
  const seen: number[] = [];
  const upcastEvent = (e: import('../src/index.ts').JournalRecord) => {
    seen.push(e.v);
    return e.v === 1 ? { ...e, v: 2, data: { n: (e.data as { number: number }).number } } : e;
  };
  store = await openStore<ChatState>({ ...base, fs: mem }, { ...hooks, upcastEvent });
  // then the reducer saw both in the current shape
  assert.deepEqual(store.recovered.get('a')!.state.ns, [7, 8]);
  assert.deepEqual(seen, [1, 2]);
  await store.close();
});

test('snapshots finishing together delete each released segment once', async () => {
  for (let round = 0; round < 10; round += 1) {
    // given session a alone in the first segments and b alone in the next ones, on a disk with slow unlinks
    const mem = new (class extends MemoryFileSystem {
      override async unlink(p: string): Promise<void> {
        await new Promise((r) => setTimeout(r, 2));
        return super.unlink(p);
      }
    })();
    const store = await openStore<ChatState>({ ...base, fs: mem, journalMaxSizeMb: 4096 / 1024 / 1024 }, hooks);
    const history = new Map<string, number[]>();
    for (const [sid, count] of [['a', 20], ['b', 20], ['c', 1]] as const) {
      for (let n = 1; n <= count; n += 1) {
        await store.append({ sid, type: 't', data: { n, text: 'r'.repeat(300) } });
        history.set(sid, [...(history.get(sid) ?? []), n]);
      }
    }
    // when a and b are snapshotted at once, each freeing its own segments
    const results = await Promise.all(['a', 'b'].map((sid) => store.snapshot(sid, { ns: history.get(sid)! }, history.get(sid)!.length)));
    // then every freed segment was deleted exactly once, and no snapshot call failed
    const deleted = results.flatMap((r) => r.deletedSegments);
    assert.equal(new Set(deleted).size, deleted.length);
    assert.ok(deleted.length >= 2);
    await store.close();
  }
});
