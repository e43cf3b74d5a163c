import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openStore, type Store } from '../src/index.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';
import { tempDir } from './helpers/tmp.ts';
import { decodeJournalIndex } from '../src/file/journal-index.ts';
import { segmentFileName } from '../src/file/journal/format.ts';
import { crc32 } from 'node:zlib';
import { Packr } from 'msgpackr';

// The persisted journal index (checkpoint/journal.idx) is an accelerator: open
// reads it and scans only the journal's tail. Whatever the index is (good,
// stale, cut short, from another data directory, corrupt, or claiming more than
// the journal holds), the recovered state must be exactly what a full scan of
// the same directory gives.

const BASE = { journalMaxSizeMb: 8 / 1024, maxSnapshotsPerSession: 2 };
const SESSIONS = ['a', 'b', 'c', 'd'];

/** Appends `rounds` events to every session, some with a clientMessageId. */
async function write(store: Store<ChatState>, rounds: number, from = 0): Promise<void> {
  for (let r = 0; r < rounds; r += 1) {
    await Promise.all(SESSIONS.map((sid, i) => store.append({ sid, type: 't', data: { n: (from + r) * 10 + i }, ...(r % 3 === 0 ? { clientMessageId: `${sid}-${from + r}` } : {}) })));
  }
}

/** Every session as an eager open recovers it, serialized; and the open's journal report. */
async function recovered(dataDir: string, useJournalIndex: boolean): Promise<{ states: string; report: Store<ChatState>['journal']['report']; loss: unknown; dedupe: string }> {
  const store = await openStore<ChatState>({ ...BASE, dataDir, useJournalIndex }, hooks);
  try {
    const rows = [...store.recovered].sort(([x], [y]) => (x < y ? -1 : 1)).map(([sid, r]) => [sid, r.status, r.seq, r.state, r.report.missing ?? null]);
    const dedupe = JSON.stringify(SESSIONS.map((sid) => [sid, store.journal.lastSeq(sid), store.journal.dedupeEntries(sid, Number.MAX_SAFE_INTEGER).map((d) => [d[0], d[1], d[2]])]));
    return { states: JSON.stringify(rows), report: store.recoveryReport().journal, loss: store.recoveryReport().loss, dedupe };
  } finally {
    // Not closed cleanly on purpose: a close writes a fresh index, and each case looks at one open.
    await store.journal.close();
    await (store as unknown as { close(): Promise<void> }).close().catch(() => undefined);
  }
}

/** Opens `dir` with its index and a copy of it without: same state, and what open made of the index. */
async function compare(dir: string): Promise<Awaited<ReturnType<typeof recovered>>> {
  const { dir: copy, cleanup } = tempDir();
  try {
    cpSync(dir, copy, { recursive: true });
    const withIndex = await recovered(dir, true);
    const without = await recovered(copy, false);
    assert.equal(withIndex.states, without.states, 'the index changed a recovered state');
    assert.equal(withIndex.dedupe, without.dedupe, 'the index changed the dedupe window or a last seq');
    return withIndex;
  } finally {
    cleanup();
  }
}

async function build(dir: string, rounds: number): Promise<void> {
  const store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
  await write(store, rounds);
  await store.close();
}

const indexFile = (dir: string): string => join(dir, 'checkpoint', 'journal.idx');

test('a clean close leaves an index; the next open scans only what follows it and recovers the same', async () => {
  const { dir, cleanup } = tempDir();
  try {
    await build(dir, 30);
    assert.ok(existsSync(indexFile(dir)));
    const store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
    await write(store, 5, 30); // a tail after the index
    // the tail is not in the index: a crash now (no close) leaves it to the tail scan
    await store.journal.flush();
    const crashed = tempDir();
    try {
      // the directory as a crash now leaves it (the lock of a process that is gone)
      cpSync(dir, crashed.dir, { recursive: true });
      rmSync(join(crashed.dir, 'LOCK'), { force: true });
      await store.close();
      const r = await compare(crashed.dir);
    assert.equal(r.report.index?.used, true, r.report.index?.problem);
    assert.equal(r.report.index?.indexedRecords, 30 * SESSIONS.length);
    assert.equal(r.report.records, 35 * SESSIONS.length);
    const total = readdirSync(join(dir, 'journals')).reduce((sum, n) => sum + statSync(join(dir, 'journals', n)).size, 0);
    assert.ok(r.report.bytes < total / 2, `read ${r.report.bytes} of ${total} journal bytes: more than the tail`);
      assert.equal(r.loss, undefined);
    } finally {
      crashed.cleanup();
    }
  } finally {
    cleanup();
  }
});

test('a stale index (older than the journal) is used for its prefix; one whose last segment was deleted falls back to a full scan', async () => {
  const { dir, cleanup } = tempDir();
  try {
    await build(dir, 20);
    const old = readFileSync(indexFile(dir));
    let store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
    await write(store, 20, 20);
    await store.close();
    writeFileSync(indexFile(dir), old);
    let r = await compare(dir);
    assert.equal(r.report.index?.used, true, r.report.index?.problem);
    assert.equal(r.report.index?.indexedRecords, 20 * SESSIONS.length);
    assert.equal(r.loss, undefined);
    // snapshots release the oldest segments, which are deleted; the old index still names them
    store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
    for (const [sid, rec] of store.recovered) await store.snapshot(sid, rec.state, rec.seq);
    await store.close();
    writeFileSync(indexFile(dir), old);
    r = await compare(dir);
    assert.equal(r.report.index?.used, false);
    assert.match(r.report.index?.problem ?? '', /stale index/);
  } finally {
    cleanup();
  }
});

test('an index whose oldest segments were deleted since (snapshots released them) is used for the segments still there', async () => {
  const { dir, cleanup } = tempDir();
  try {
    // an index over two segments (88 records of this size fill one)
    await build(dir, 30);
    const old = readFileSync(indexFile(dir));
    const decoded = decodeJournalIndex(old);
    assert.ok(!('problem' in decoded), 'problem' in decoded ? decoded.problem : '');
    assert.ok(decoded.image.segments.length >= 2, `the index names ${decoded.image.segments.length} segment(s)`);
    const endName = segmentFileName(decoded.image.end.segment);
    // more records, then snapshots at seq 25 release the oldest segment, which is deleted
    const store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
    await write(store, 20, 30);
    const deleted: string[] = [];
    for (const sid of SESSIONS) {
      const at = await store.peekSession(sid, 25);
      assert.ok(at !== undefined);
      deleted.push(...(await store.snapshot(sid, at.state, 25)).deletedSegments);
    }
    await store.close();
    assert.ok(deleted.includes(segmentFileName(decoded.image.segments[0]!.id)), `deleted: ${deleted.join(', ')}`);
    assert.ok(readdirSync(join(dir, 'journals')).includes(endName), `the index's last segment ${endName} is still there`);
    // when the old index is what the next open finds (a crash right after the deletion)
    writeFileSync(indexFile(dir), old);
    const r = await compare(dir);
    // then it is used, and the state is exactly a full scan's
    assert.equal(r.report.index?.used, true, r.report.index?.problem);
    assert.ok((r.report.index?.indexedRecords ?? 0) > 0);
    assert.equal(r.loss, undefined);
  } finally {
    cleanup();
  }
});

test('an index cut short, or with a flipped byte, is refused and the journal scanned in full', async () => {
  const { dir, cleanup } = tempDir();
  try {
    await build(dir, 25);
    const good = readFileSync(indexFile(dir));
    truncateSync(indexFile(dir), Math.floor(good.length / 2));
    let r = await compare(dir);
    assert.equal(r.report.index?.used, false);
    assert.match(r.report.index?.problem ?? '', /cut short/);
    for (const at of [3, 30, 70, Math.floor(good.length / 2), good.length - 2]) {
      const bad = Buffer.from(good);
      bad[at] = bad[at]! ^ 0x10;
      writeFileSync(indexFile(dir), bad);
      r = await compare(dir);
      assert.equal(r.report.index?.used, false, `flipped byte at ${at} went unnoticed`);
      assert.match(r.report.index?.problem ?? '', /ARBORIDX|checksum/);
      assert.equal(r.loss, undefined);
    }
  } finally {
    cleanup();
  }
});

test('an index from another data directory (same session and segment names) is recognised as foreign', async () => {
  const a = tempDir();
  const b = tempDir();
  try {
    await build(a.dir, 25);
    await build(b.dir, 30); // longer: its index claims records a's journal does not hold
    writeFileSync(indexFile(a.dir), readFileSync(indexFile(b.dir)));
    const r = await compare(a.dir);
    assert.equal(r.report.index?.used, false);
    assert.equal(r.report.index?.identity, 'foreign');
    assert.match(r.report.index?.problem ?? '', /another journal/);
    assert.equal(r.loss, undefined, 'a foreign high-water mark is no loss of this journal');
  } finally {
    a.cleanup();
    b.cleanup();
  }
});

test('an index claiming more than the journal holds is refused (and its high-water mark reports the loss)', async () => {
  const { dir, cleanup } = tempDir();
  try {
    await build(dir, 25);
    const segs = readdirSync(join(dir, 'journals')).filter((n) => n.endsWith('.wal')).sort();
    const newest = join(dir, 'journals', segs.at(-1)!);
    truncateSync(newest, statSync(newest).size - 150);
    const r = await compare(dir);
    assert.equal(r.report.index?.used, false);
    assert.match(r.report.index?.problem ?? '', /more than the journal holds|is not there/);
    const loss = r.loss as { events: number; lostLsns: [number, number]; sessions: { id: string }[] } | undefined;
    assert.ok(loss !== undefined, 'a journal cut below its high-water mark must be reported as loss');
    assert.ok(loss.events >= 1);
    assert.equal(loss.lostLsns[1], 25 * SESSIONS.length);
    assert.ok(loss.sessions.length >= 1);
  } finally {
    cleanup();
  }
});

/** The same index in format version 1 (16 bytes a place), as a release before version 2 wrote it. */
function asVersion1(file: Buffer): Buffer {
  const decoded = decodeJournalIndex(file);
  assert.ok(!('problem' in decoded), 'problem' in decoded ? decoded.problem : '');
  const { image } = decoded;
  const segPos = new Map(image.segments.map((s, i) => [s.id, i]));
  const sessions = image.sessions.map((e) => {
    const locs = Buffer.alloc((e.locs.length / 4) * 16);
    for (let i = 0; i < e.locs.length; i += 4) {
      locs.writeUInt32LE(e.locs.at(i), i * 4);
      locs.writeUInt32LE(segPos.get(e.locs.at(i + 1))!, i * 4 + 4);
      locs.writeUInt32LE(e.locs.at(i + 2), i * 4 + 8);
      locs.writeUInt32LE(e.locs.at(i + 3), i * 4 + 12);
    }
    return [e.sid, e.lastSeq, e.covered, e.dedupe, locs];
  });
  const body = new Packr({ useRecords: false, moreTypes: false }).pack([image.segments.map((s) => [s.id, s.salt, s.seed, s.size, s.records]), sessions]);
  const header = Buffer.from(file.subarray(0, 64));
  header.writeUInt16LE(1, 8);
  header.writeUInt32LE(body.length, 56);
  header.writeUInt32LE(crc32(header.subarray(0, 60)), 60);
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32LE(crc32(body, header.readUInt32LE(60)));
  return Buffer.concat([header, body, trailer]);
}

test('an index of format version 1 is refused (the journal scanned in full, the same state), and the next close writes version 2', async () => {
  const { dir, cleanup } = tempDir();
  try {
    await build(dir, 25);
    const v2 = readFileSync(indexFile(dir));
    assert.equal(v2.readUInt16LE(8), 2);
    const v1 = asVersion1(v2);
    // version 2 takes about a third of version 1's bytes
    assert.ok(v2.length * 2 < v1.length, `version 2: ${v2.length} bytes, version 1: ${v1.length}`);
    writeFileSync(indexFile(dir), v1);
    const r = await compare(dir);
    assert.equal(r.report.index?.used, false);
    assert.match(r.report.index?.problem ?? '', /version 1, an older format/);
    assert.equal(r.report.records, 25 * SESSIONS.length);
    assert.equal(r.loss, undefined);
    const store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
    await store.close();
    assert.equal(readFileSync(indexFile(dir)).readUInt16LE(8), 2);
    assert.equal((await compare(dir)).report.index?.used, true);
  } finally {
    cleanup();
  }
});
