import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../src/file/store.ts';
import { MemoryFileSystem } from '../src/testing/memory-fs.ts';
import { SEGMENT_HEADER_BYTES, segmentFileName } from '../src/file/journal/format.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';

// Byte surgery on a small real segment and snapshot (after leveldb's log_test): every single-byte
// change, every truncation point and zero-filled tails. Nothing may be accepted wrongly, every change
// must be reported, truncations must recover exactly the complete records, and recovery never throws.

const SEGMENT = `/data/journals/${segmentFileName(1)}`;

interface Original {
  bytes: Uint8Array;
  /** per session, the `n` of each event in seq order */
  events: Map<string, number[]>;
  /** [start, end) of each record frame, with its session */
  frames: { start: number; end: number; sid: string; sidStart: number; sidEnd: number }[];
}

async function buildSegment(): Promise<Original> {
  const fs = new MemoryFileSystem();
  const store = await openStore<ChatState>({ dataDir: '/data', fs }, hooks);
  const events = new Map<string, number[]>();
  let n = 0;
  for (const sid of ['a', 'bb', 'a', 'a', 'bb', 'c']) {
    n += 1;
    await store.append({ sid, type: 'user_message_sent', data: { n, text: 'é'.repeat(n * 25) } });
    events.set(sid, [...(events.get(sid) ?? []), n]);
  }
  await store.close();
  const bytes = fs.dump()[SEGMENT]!;
  const frames: Original['frames'] = [];
  const view = Buffer.from(bytes);
  for (let at = SEGMENT_HEADER_BYTES; at < view.length; ) {
    const end = at + 8 + view.readUInt32LE(at + 4);
    const text = view.subarray(at + 8, end).toString('latin1');
    const m = /"sid":"([^"]+)"/.exec(text)!;
    frames.push({ start: at, end, sid: m[1]!, sidStart: at + 8 + m.index + 7, sidEnd: at + 8 + m.index + 7 + m[1]!.length });
    at = end;
  }
  return { bytes, events, frames };
}

async function recoverFrom(files: Record<string, Uint8Array>): Promise<Store<ChatState>> {
  const fs = new MemoryFileSystem();
  for (const [path, bytes] of Object.entries(files)) {
    await fs.mkdir(path.slice(0, path.lastIndexOf('/')), 0o700);
    const h = await fs.open(path, 'w+');
    await h.write(bytes, 0, bytes.length, 0);
    await h.close();
  }
  return openStore<ChatState>({ dataDir: '/data', fs }, hooks);
}

/** Every recovered event must be the original event at that seq: a prefix of the original history. */
function assertNoWrongEvent(store: Store<ChatState>, original: Original, where: string): void {
  for (const [sid, r] of store.recovered) {
    const expected = original.events.get(sid);
    assert.ok(expected !== undefined, `${where}: recovered a session ${sid} that never existed`);
    assert.deepEqual(r.state.ns, expected.slice(0, r.state.ns.length), `${where}: session ${sid} recovered a wrong event`);
  }
}

test('corruption sweep: every single-byte change of a segment is reported and never yields a wrong event', async () => {
  // given a small segment of 6 records in 3 sessions
  const original = await buildSegment();
  let mutations = 0;
  for (let i = 0; i < original.bytes.length; i += 1) {
    for (const change of [0x01, 0x80, 0xff, 'zero'] as const) {
      const bytes = Uint8Array.from(original.bytes);
      bytes[i] = change === 'zero' ? 0 : bytes[i]! ^ change;
      if (bytes[i] === original.bytes[i]) continue;
      mutations += 1;
      const where = `byte ${i} ${change === 'zero' ? '= 0' : `^ 0x${change.toString(16)}`}`;
      // when the store recovers from it
      const store = await recoverFrom({ [SEGMENT]: bytes });
      try {
        const report = store.recoveryReport();
        // then nothing wrong is accepted
        assertNoWrongEvent(store, original, where);
        // and the change is reported: as damage, or (only within the last record) as a torn tail
        const frame = original.frames.find((f) => i >= f.start && i < f.end);
        const isLastRecord = frame === original.frames.at(-1);
        assert.ok(report.journal.damage.length + report.journal.tornTails.length > 0, `${where}: change went unreported`);
        if (!isLastRecord) assert.ok(report.journal.damage.length > 0, `${where}: damage before valid records must be reported as corruption`);
        // and the session that lost a record is not reported clean (unless its id itself was the damaged byte)
        if (frame !== undefined && !isLastRecord && (i < frame.sidStart || i >= frame.sidEnd)) {
          const status = report.sessions.find((s) => s.sid === frame.sid)?.status;
          assert.equal(status, 'damaged', `${where}: session ${frame.sid} lost a record but is ${status}`);
        }
      } finally {
        await store.close();
      }
    }
  }
  assert.ok(mutations > 3 * original.bytes.length, `only ${mutations} mutations`);
});

test('truncation sweep: every truncation point recovers exactly the complete records and stays appendable', async () => {
  const original = await buildSegment();
  for (let length = 0; length <= original.bytes.length; length += 1) {
    // given the segment cut at `length`
    const store = await recoverFrom({ [SEGMENT]: original.bytes.subarray(0, length) });
    try {
      const where = `truncated to ${length}`;
      const report = store.recoveryReport();
      // then the recovered events are exactly the records that were complete
      const complete = original.frames.filter((f) => f.end <= length).length;
      const recovered = [...store.recovered.values()].reduce((sum, r) => sum + r.state.ns.length, 0);
      assert.equal(recovered, complete, where);
      assertNoWrongEvent(store, original, where);
      assert.deepEqual(report.journal.damage, [], where);
      const atBoundary = length === SEGMENT_HEADER_BYTES || original.frames.some((f) => f.end === length);
      assert.equal(report.journal.tornTails.length, atBoundary ? 0 : 1, `${where}: torn tail count`);
      // and the log takes appends again, which a reopen reads back
      const next = await store.append({ sid: 'a', type: 'user_message_sent', data: { n: 99 } });
      assert.equal(next.seq, (store.recovered.get('a')?.seq ?? 0) + 1, where);
    } finally {
      await store.close();
    }
  }
});

test('zero-filled tails: zeros appended, a zeroed last record, or zeros from a sector boundary are a torn tail', async () => {
  const original = await buildSegment();
  const last = original.frames.at(-1)!;
  const boundary = Math.ceil((last.start + 9) / 512) * 512;
  assert.ok(boundary < last.end, 'the last record must straddle a 512-byte boundary for this test');
  const cases: [string, Uint8Array, number, number][] = [];
  for (const extra of [1, 512, 4096]) {
    const b = new Uint8Array(original.bytes.length + extra);
    b.set(original.bytes);
    cases.push([`${extra} zero bytes appended`, b, original.bytes.length, original.frames.length]);
    const z = new Uint8Array(original.bytes.length + extra);
    z.set(original.bytes.subarray(0, last.start));
    cases.push([`last record zeroed + ${extra}`, z, last.start, original.frames.length - 1]);
  }
  for (const extra of [0, 512]) {
    const b = new Uint8Array(original.bytes.length + extra);
    b.set(original.bytes.subarray(0, boundary));
    cases.push([`zeros from sector boundary ${boundary} + ${extra}`, b, last.start, original.frames.length - 1]);
  }
  for (const [where, bytes, tornAt, records] of cases) {
    // given the file ends in zeros, as a torn sector write leaves it
    const store = await recoverFrom({ [SEGMENT]: bytes });
    try {
      const report = store.recoveryReport();
      // then it is a torn tail, truncated after the last complete record, and nothing is corrupt
      assert.equal(report.journal.tornTails.length, 1, where);
      assert.equal(report.journal.tornTails[0]!.offset, tornAt, where);
      assert.deepEqual(report.journal.damage, [], where);
      assertNoWrongEvent(store, original, where);
      const recovered = [...store.recovered.values()].reduce((sum, r) => sum + r.state.ns.length, 0);
      assert.equal(recovered, records, where);
    } finally {
      await store.close();
    }
  }
});

async function buildSnapshotPair(): Promise<{ files: Record<string, Uint8Array>; newest: string; events: Map<string, number[]> }> {
  const fs = new MemoryFileSystem();
  const store = await openStore<ChatState>({ dataDir: '/data', fs, maxSnapshotsPerSession: 2 }, hooks);
  const ns: number[] = [];
  for (let n = 1; n <= 4; n += 1) {
    await store.append({ sid: 'a', type: 'user_message_sent', data: { n } });
    ns.push(n);
    if (n === 2 || n === 4) await store.snapshot('a', { ns: [...ns] }, n);
  }
  await store.close();
  const files = fs.dump();
  const newest = Object.keys(files).filter((p) => p.endsWith('.snap')).sort().at(-1)!;
  return { files, newest, events: new Map([['a', ns]]) };
}

test('snapshot sweep: every single-byte change and truncation of a snapshot is detected and falls back to the previous one', async () => {
  // given two snapshots (seq 2 and 4); the journal still holds seqs 3..4 only if not released — here the
  // newest snapshot released them, so a damaged newest snapshot must surface as a reported gap, never as wrong state
  const { files, newest, events } = await buildSnapshotPair();
  const snap = files[newest]!;
  const variants: [string, Uint8Array][] = [];
  for (let i = 0; i < snap.length; i += 1) {
    const b = Uint8Array.from(snap);
    b[i] = b[i]! ^ 0x5a;
    variants.push([`byte ${i} ^ 0x5a`, b]);
  }
  for (let length = 0; length < snap.length; length += 1) variants.push([`truncated to ${length}`, snap.subarray(0, length)]);
  for (const [where, bytes] of variants) {
    const store = await recoverFrom({ ...files, [newest]: bytes });
    try {
      const report = store.recoveryReport();
      const a = report.sessions.find((s) => s.sid === 'a')!;
      // then the damaged snapshot is named, the previous one is used, and the state is a correct prefix
      assert.equal(a.damagedSnapshots.length, 1, `${where}: damaged snapshot not reported`);
      assert.equal(a.snapshotSeq, 2, where);
      assert.deepEqual(store.recovered.get('a')!.state.ns, events.get('a')!.slice(0, store.recovered.get('a')!.seq), where);
      // and the events the damaged snapshot alone held are reported missing, never silently dropped
      if (store.recovered.get('a')!.seq < 4) assert.equal(a.status, 'damaged', where);
    } finally {
      await store.close();
    }
  }
});

test('property: random multi-byte damage and cuts anywhere in segments and snapshots never throw and never yield a wrong event', async () => {
  const fc = await import('fast-check');
  // given a store with several segments and snapshots
  const fs = new MemoryFileSystem();
  const store = await openStore<ChatState>({ dataDir: '/data', fs, journalMaxSizeMb: 4096 / 1024 / 1024, maxSnapshotsPerSession: 2 }, hooks);
  const events = new Map<string, number[]>();
  for (let n = 1; n <= 60; n += 1) {
    const sid = `s${n % 4}`;
    await store.append({ sid, type: 'user_message_sent', data: { n, text: 'k'.repeat(n * 7) } });
    events.set(sid, [...(events.get(sid) ?? []), n]);
    if (n % 25 === 0) for (const [s, ns] of events) await store.snapshot(s, { ns: [...ns] }, ns.length);
  }
  await store.close();
  const files = fs.dump();
  const names = Object.keys(files).filter((p) => p.endsWith('.wal') || p.endsWith('.snap')).sort();
  const original: Original = { bytes: new Uint8Array(), events, frames: [] };
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.record({ file: fc.nat(names.length - 1), at: fc.double({ min: 0, max: 1, noNaN: true }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 }),
      fc.option(fc.record({ file: fc.nat(names.length - 1), at: fc.double({ min: 0, max: 1, noNaN: true }) })),
      async (flips, cut) => {
        // when some bytes are overwritten and maybe one file is cut short
        const damaged: Record<string, Uint8Array> = {};
        for (const [p, b] of Object.entries(files)) damaged[p] = Uint8Array.from(b);
        for (const f of flips) {
          const b = damaged[names[f.file]!]!;
          b[Math.min(b.length - 1, Math.floor(f.at * b.length))] = f.value;
        }
        if (cut !== null) {
          const p = names[cut.file]!;
          damaged[p] = damaged[p]!.subarray(0, Math.floor(cut.at * damaged[p]!.length));
        }
        // then recovery does not throw and every recovered event is the original one
        const recovered = await recoverFrom(damaged);
        try {
          assertNoWrongEvent(recovered, original, `flips ${JSON.stringify(flips)} cut ${JSON.stringify(cut)}`);
        } finally {
          await recovered.close();
        }
      },
    ),
    { numRuns: 300, seed: 42 },
  );
});
