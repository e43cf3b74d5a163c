/**
 * The SessionBackend contract (src/backend.ts), written once as a function of a
 * factory and run on every implementation: the file Store on disk, the file
 * Store on the in-memory filesystem, and PostgreSQL. Each test opens its own
 * storage; "reopen" closes the backend and opens a new one on the same storage,
 * as a restarted process would.
 *
 * Every test takes a session with `loadSession` before appending, as the
 * runtime does (a multi-node backend writes only for sessions it holds).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SessionBackend } from '../../src/backend/backend.ts';
import { type ErrorCode } from '../../src/core/errors.ts';
import type { AppendInput } from '../../src/file/journal/journal.ts';
import { hooks, type ChatState } from '../crash/power-loss-harness.ts';
import { rejectsWith } from '../helpers/assertions.ts';

export interface BackendStorage {
  /** Opens a backend on this storage; after `close()` a new one sees the same data. */
  open(options: { maxSnapshotsPerSession: number }): Promise<SessionBackend<ChatState>>;
  /** Removes the storage (temp dir, schema). */
  cleanup(): Promise<void>;
}

export interface ContractOptions {
  /** A reason to skip every test of this implementation (e.g. no database configured). */
  skip?: string | false;
}

const MAX_SNAPSHOTS = 2;

const ev = (sid: string, n: number, extra: Partial<AppendInput> = {}): AppendInput => ({ sid, type: 'user_message_sent', data: { n }, ...extra });


function replay(ns: number[]): ChatState {
  return ns.reduce((s, n) => hooks.reducer(s, { lsn: 0, sid: 'x', seq: 0, ts: 0, type: 'user_message_sent', v: 1, data: { n } }), hooks.initialState('x'));
}

/** Registers the contract's tests for one implementation. */
export function backendContract(name: string, makeStorage: () => Promise<BackendStorage>, options: ContractOptions = {}): void {
  const skip = options.skip ?? false;

  /** Runs `body` with fresh storage and an open backend; closes and cleans up after, also on failure. */
  function contractTest(title: string, body: (ctx: { backend: () => SessionBackend<ChatState>; reopen: () => Promise<SessionBackend<ChatState>> }) => Promise<void>): void {
    test(`${name}: ${title}`, { skip, timeout: 60_000 }, async () => {
      const storage = await makeStorage();
      let current = await storage.open({ maxSnapshotsPerSession: MAX_SNAPSHOTS });
      try {
        await body({
          backend: () => current,
          reopen: async () => {
            await current.close();
            current = await storage.open({ maxSnapshotsPerSession: MAX_SNAPSHOTS });
            return current;
          },
        });
      } finally {
        await current.close();
        await storage.cleanup();
      }
    });
  }

  contractTest('seqs are gapless from 1 per session, for appends interleaved in one tick', async ({ backend }) => {
    const b = backend();
    for (const sid of ['a', 'b', 'c']) assert.equal(await b.loadSession(sid), undefined);
    // when three sessions append interleaved, all in one tick
    const results = await Promise.all(Array.from({ length: 30 }, (_, i) => b.append(ev(['a', 'b', 'c'][i % 3]!, i))));
    // then each session's seqs run 1..10 in call order
    for (const [k, sid] of ['a', 'b', 'c'].entries()) {
      const mine = results.filter((r) => r.sid === sid);
      assert.deepEqual(mine.map((r) => r.seq), Array.from({ length: 10 }, (_, i) => i + 1));
      assert.ok(mine.every((r) => r.duplicate === false));
      const records = await b.read(sid);
      assert.deepEqual(records.map((r) => r.seq), Array.from({ length: 10 }, (_, i) => i + 1));
      assert.deepEqual(records.map((r) => (r.data as { n: number }).n), Array.from({ length: 10 }, (_, i) => i * 3 + k));
    }
  });

  contractTest('an expectedSeq mismatch rejects with ARBOR_SEQ_CONFLICT and writes nothing', async ({ backend }) => {
    const b = backend();
    await b.loadSession('s');
    await b.append(ev('s', 1));
    await b.append(ev('s', 2));
    // when an append expects seq 1 but the session is at 2
    const { details } = await rejectsWith(b.append(ev('s', 99, { expectedSeq: 1 })), 'ARBOR_SEQ_CONFLICT');
    // then the error names the session and both seqs, and nothing was written
    assert.equal(details.sessionId, 's');
    assert.equal(details.expectedSeq, 1);
    assert.equal(details.actualSeq, 2);
    assert.deepEqual((await b.read('s')).map((r) => r.seq), [1, 2]);
    // and the right expectation goes through with the next seq
    assert.equal((await b.append(ev('s', 3, { expectedSeq: 2 }))).seq, 3);
  });

  contractTest('a retried clientMessageId answers the original result and writes nothing, also after a reopen', async ({ backend, reopen }) => {
    let b = backend();
    await b.loadSession('s');
    const original = await b.append(ev('s', 1, { clientMessageId: 'm-1' }));
    await b.append(ev('s', 2));
    // when the same clientMessageId comes again (same process)
    const again = await b.append(ev('s', 111, { clientMessageId: 'm-1' }));
    assert.equal(again.duplicate, true);
    assert.equal(again.seq, original.seq);
    assert.equal(again.ts, original.ts);
    // and concurrently with its own original
    const [first, second] = await Promise.all([b.append(ev('s', 3, { clientMessageId: 'm-3' })), b.append(ev('s', 333, { clientMessageId: 'm-3' }))]);
    assert.equal(first.duplicate, false);
    assert.equal(second.duplicate, true);
    assert.equal(second.seq, first.seq);
    // and after a restart
    b = await reopen();
    await b.loadSession('s');
    const afterReopen = await b.append(ev('s', 1111, { clientMessageId: 'm-1' }));
    assert.equal(afterReopen.duplicate, true);
    assert.equal(afterReopen.seq, 1);
    // then nothing was written twice
    assert.deepEqual((await b.read('s')).map((r) => (r.data as { n: number }).n), [1, 2, 3]);
    assert.equal((await b.append(ev('s', 4))).seq, 4);
  });

  contractTest('dedupe survives snapshots that released the original event', async ({ backend, reopen }) => {
    let b = backend();
    await b.loadSession('s');
    await b.append(ev('s', 1, { clientMessageId: 'first' }));
    for (let n = 2; n <= 6; n += 1) await b.append(ev('s', n));
    // given snapshots past the original, more than the retention keeps
    for (const seq of [2, 4, 6]) await b.snapshot('s', replay([1, 2, 3, 4, 5, 6].slice(0, seq)), seq);
    b = await reopen();
    const loaded = await b.loadSession('s');
    assert.deepEqual(loaded?.state, replay([1, 2, 3, 4, 5, 6]));
    // when the first message is retried
    const retried = await b.append(ev('s', 100, { clientMessageId: 'first' }));
    // then it is still recognised
    assert.equal(retried.duplicate, true);
    assert.equal(retried.seq, 1);
    assert.equal((await b.append(ev('s', 7))).seq, 7);
  });

  contractTest('a snapshot then a reload gives the same state as replaying every event', async ({ backend, reopen }) => {
    let b = backend();
    await b.loadSession('s');
    for (let n = 1; n <= 6; n += 1) await b.append(ev('s', n * 10));
    // given a snapshot at seq 6, then four more events
    await b.snapshot('s', replay([10, 20, 30, 40, 50, 60]), 6);
    assert.equal(await b.snapshotSeq('s'), 6);
    for (let n = 7; n <= 10; n += 1) await b.append(ev('s', n * 10));
    // when reopened and loaded
    b = await reopen();
    const loaded = await b.loadSession('s');
    // then the state is the full replay, rebuilt from the snapshot plus four events
    assert.ok(loaded !== undefined);
    assert.deepEqual(loaded.state, replay([10, 20, 30, 40, 50, 60, 70, 80, 90, 100]));
    assert.equal(loaded.seq, 10);
    assert.equal(loaded.status, 'recovered');
    assert.equal(loaded.report.snapshotSeq, 6);
    assert.deepEqual((await b.read('s', 7)).map((r) => r.seq), [7, 8, 9, 10]);
  });

  contractTest('read(fromSeq) returns the events from that seq on, in order, as written', async ({ backend }) => {
    const b = backend();
    await b.loadSession('s');
    const acks = [];
    for (let n = 1; n <= 5; n += 1) acks.push(await b.append({ sid: 's', type: n % 2 === 0 ? 'command_executed' : 'user_message_sent', v: n === 5 ? 2 : 1, data: { n, text: `ü ${n}` }, clientMessageId: `c${n}`, ts: 1_700_000_000_000 + n }));
    const from3 = await b.read('s', 3);
    assert.deepEqual(from3.map((r) => r.seq), [3, 4, 5]);
    const r5 = from3[2]!;
    assert.equal(r5.sid, 's');
    assert.equal(r5.type, 'user_message_sent');
    assert.equal(r5.v, 2);
    assert.deepEqual(r5.data, { n: 5, text: 'ü 5' });
    assert.equal(r5.cid, 'c5');
    assert.equal(r5.ts, 1_700_000_000_005);
    assert.equal(from3[1]!.type, 'command_executed');
    assert.deepEqual((await b.read('s', 6)), []);
    assert.deepEqual((await b.read('nobody')), []);
  });

  contractTest(`snapshot retention keeps the newest ${MAX_SNAPSHOTS} and loads from the newest`, async ({ backend, reopen }) => {
    let b = backend();
    await b.loadSession('s');
    const ns: number[] = [];
    for (let n = 1; n <= 8; n += 1) {
      await b.append(ev('s', n));
      ns.push(n);
      if (n % 2 === 0) await b.snapshot('s', replay(ns), n);
    }
    assert.equal(await b.snapshotSeq('s'), 8);
    b = await reopen();
    const loaded = await b.loadSession('s');
    assert.deepEqual(loaded?.state, replay(ns));
    assert.equal(loaded?.report.snapshotSeq, 8);
    assert.equal(loaded?.report.replayed, 0);
  });

  contractTest('a reopen recovers every acknowledged append of every session', async ({ backend, reopen }) => {
    let b = backend();
    const sids = Array.from({ length: 20 }, (_, i) => `sess-${i}`);
    for (const sid of sids) await b.loadSession(sid);
    const expected = new Map<string, number[]>(sids.map((s) => [s, []]));
    // given 200 appends in flight at once across 20 sessions, some with clientMessageIds
    await Promise.all(
      Array.from({ length: 200 }, (_, i) => {
        const sid = sids[i % sids.length]!;
        expected.get(sid)!.push(i);
        return b.append(ev(sid, i, i % 3 === 0 ? { clientMessageId: `k${i}` } : {}));
      }),
    );
    // when the process restarts
    b = await reopen();
    // then every session is listed and comes back at its last acknowledged seq
    assert.deepEqual(new Set(await b.sessionIds()), new Set(sids));
    for (const sid of sids) {
      const loaded = await b.loadSession(sid);
      assert.equal(loaded?.seq, 10, sid);
      assert.deepEqual(loaded?.state, replay(expected.get(sid)!), sid);
    }
  });

  contractTest('bad input is refused with the field named and nothing written', async ({ backend }) => {
    const b = backend();
    await b.loadSession('s');
    const cases: [string, AppendInput, ErrorCode, string | undefined][] = [
      ['empty type', { sid: 's', type: '', data: {} }, 'ARBOR_INVALID_INPUT', 'type'],
      ['v 0', { sid: 's', type: 't', v: 0, data: {} }, 'ARBOR_INVALID_INPUT', 'v'],
      ['empty clientMessageId', { sid: 's', type: 't', data: {}, clientMessageId: '' }, 'ARBOR_INVALID_INPUT', 'clientMessageId'],
      ['negative ts', { sid: 's', type: 't', data: {}, ts: -1 }, 'ARBOR_INVALID_INPUT', 'ts'],
      ['undefined data', { sid: 's', type: 't', data: undefined }, 'ARBOR_INVALID_INPUT', 'data'],
      ['a BigInt in data', { sid: 's', type: 't', data: { n: 1n } }, 'ARBOR_INVALID_INPUT', 'data'],
      ['a 2 MiB event', { sid: 's', type: 't', data: 'x'.repeat(2 * 1024 * 1024) }, 'ARBOR_TOO_LARGE', undefined],
      ['a session id with a slash', { sid: '../s', type: 't', data: {} }, 'ARBOR_INVALID_SESSION_ID', undefined],
    ];
    for (const [what, input, code, field] of cases) {
      const { details } = await rejectsWith(b.append(input), code);
      if (field !== undefined) assert.equal(details.field, field, what);
      if (code !== 'ARBOR_INVALID_SESSION_ID') assert.equal(details.sessionId, 's', what);
    }
    // then nothing was written: the next append is seq 1
    assert.deepEqual(await b.read('s'), []);
    assert.equal((await b.append(ev('s', 1))).seq, 1);
  });

  contractTest('loadSession of a session never written is undefined; a snapshot past the last seq is a RangeError', async ({ backend }) => {
    const b = backend();
    assert.equal(await b.loadSession('never'), undefined);
    assert.equal(await b.snapshotSeq('never'), 0);
    await b.append(ev('never', 1));
    await assert.rejects(b.snapshot('never', replay([1]), 2), RangeError);
    assert.equal(await b.snapshotSeq('never'), 0);
  });

  contractTest('close flushes, is idempotent, and later calls reject with ARBOR_CLOSED', async ({ backend, reopen }) => {
    let b = backend();
    await b.loadSession('s');
    // given appends not yet acknowledged when close is called
    const pending = [b.append(ev('s', 1)), b.append(ev('s', 2))];
    await Promise.all([b.close(), b.close()]);
    await b.close();
    // then they were flushed before close resolved
    assert.deepEqual((await Promise.all(pending)).map((r) => r.seq), [1, 2]);
    assert.equal(b.stats().state, 'closed');
    await rejectsWith(b.append(ev('s', 3)), 'ARBOR_CLOSED');
    b = await reopen();
    assert.equal((await b.loadSession('s'))?.seq, 2);
  });

  contractTest('listSessions names every stored session with its newest seq, and takes no lease', async ({ backend, reopen }) => {
    let b = backend();
    for (const sid of ['l1', 'l2']) await b.loadSession(sid);
    for (let i = 1; i <= 3; i += 1) await b.append(ev('l1', i));
    await b.append(ev('l2', 1));
    await b.snapshot('l2', replay([1]), 1);
    // when listed, and again after a reopen (nothing loaded)
    const sorted = (xs: { sid: string; seq: number }[]) => [...xs].sort((x, y) => x.sid.localeCompare(y.sid));
    assert.deepEqual(sorted(await b.listSessions()), [{ sid: 'l1', seq: 3 }, { sid: 'l2', seq: 1 }]);
    b = await reopen();
    assert.deepEqual(sorted(await b.listSessions()), [{ sid: 'l1', seq: 3 }, { sid: 'l2', seq: 1 }]);
    // then a session only listed or peeked can still be loaded and written (no lease was taken)
    assert.deepEqual((await b.peekSession('l1'))?.state, replay([1, 2, 3]));
    await b.loadSession('l1');
    assert.equal((await b.append(ev('l1', 4))).seq, 4);
  });

  contractTest('peekSession rebuilds the state at a seq from a kept snapshot and held events, and names the oldest reachable seq otherwise', async ({ backend }) => {
    const b = backend();
    assert.equal(await b.peekSession('nothing'), undefined);
    await b.loadSession('p');
    for (let i = 1; i <= 9; i += 1) {
      await b.append(ev('p', i));
      if (i % 3 === 0) await b.snapshot('p', replay(Array.from({ length: i }, (_, k) => k + 1)), i);
    }
    // snapshots at 6 and 9 are kept (two per session): each kept snapshot's seq is reachable, and every seq from the newest on
    const upTo = (n: number) => replay(Array.from({ length: n }, (_, k) => k + 1));
    for (const at of [6, 9]) {
      const peeked = await b.peekSession('p', at);
      assert.equal(peeked?.seq, at);
      assert.deepEqual(peeked?.state, upTo(at));
    }
    // between kept snapshots it depends on what the backend still holds (PostgreSQL: the events after the oldest kept
    // snapshot; files: the records after the newest): the right state, or the refusal naming atSeq
    for (const at of [7, 8]) {
      const peeked = await b.peekSession('p', at).catch((err: unknown) => err);
      if (peeked instanceof Error) assert.equal((peeked as { details?: { field?: unknown } }).details?.field, 'atSeq');
      else assert.deepEqual((peeked as { state?: unknown } | undefined)?.state, upTo(at));
    }
    assert.equal((await b.peekSession('p'))?.seq, 9);
    // when a point before the oldest kept snapshot is asked for
    const err = await rejectsWith(b.peekSession('p', 4), 'ARBOR_INVALID_INPUT', { field: 'atSeq', atSeq: 4 });
    assert.equal(err.details.oldestSeq, 6);
  });

  contractTest('seedSession starts a new session from a state at a seq; the next append follows it; an existing one is refused', async ({ backend, reopen }) => {
    let b = backend();
    await b.seedSession('seeded', replay([1, 2, 3, 4]), 4);
    await b.loadSession('seeded');
    assert.equal((await b.append(ev('seeded', 5))).seq, 5);
    await rejectsWith(b.seedSession('seeded', replay([]), 1), 'ARBOR_SESSION_EXISTS');
    await b.loadSession('other');
    await b.append(ev('other', 1));
    await rejectsWith(b.seedSession('other', replay([]), 3), 'ARBOR_SESSION_EXISTS');
    // then after a reopen it rebuilds from the seed and its own events
    b = await reopen();
    const loaded = await b.loadSession('seeded');
    assert.deepEqual([loaded?.seq, loaded?.state], [5, replay([1, 2, 3, 4, 5])]);
    assert.deepEqual((await b.read('seeded')).map((r) => r.seq), [5]);
  });

  contractTest('deleteSession is durable: nothing of it is left, also after a reopen; the id starts over at seq 1; others untouched', async ({ backend, reopen }) => {
    let b = backend();
    for (const sid of ['del', 'other']) assert.equal(await b.loadSession(sid), undefined);
    for (let n = 1; n <= 6; n += 1) {
      await b.append(ev('del', n, { clientMessageId: `c${n}` }));
      await b.append(ev('other', n * 10));
    }
    await b.snapshot('del', replay([1, 2, 3, 4]), 4);
    // when the session is deleted
    await b.deleteSession('del');
    // then the backend holds nothing of it, now and after a reopen
    for (let round = 0; round < 2; round += 1) {
      assert.equal(await b.exists('del'), false);
      assert.deepEqual(await b.read('del'), []);
      assert.equal(await b.snapshotSeq('del'), 0);
      assert.ok(!(await b.sessionIds()).includes('del'));
      assert.equal(await b.loadSession('del'), undefined);
      assert.deepEqual((await b.read('other')).map((r) => (r.data as { n: number }).n), [10, 20, 30, 40, 50, 60]);
      if (round === 0) b = await reopen();
    }
    // and the id is a new session: seq 1, and the old clientMessageIds are forgotten
    await b.loadSession('other');
    const again = await b.append(ev('del', 7, { clientMessageId: 'c1' }));
    assert.deepEqual([again.seq, again.duplicate], [1, false]);
    await b.erasure?.whenErased('del');
    b = await reopen();
    assert.deepEqual((await b.loadSession('del'))?.state, replay([7]));
    assert.deepEqual((await b.loadSession('other'))?.state, replay([10, 20, 30, 40, 50, 60]));
  });
}
