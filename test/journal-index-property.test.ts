import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { openStore, type Store } from '../src/index.ts';
import { MemoryFileSystem } from '../src/testing.ts';

import { hooks, type ChatState } from './crash/power-loss-harness.ts';

// Property: whatever the workload (appends with and without clientMessageIds,
// snapshots that release and delete segments, checkpoints, clean closes that
// leave an index, a crash after the last index) and whatever happens to the
// index file (kept, removed, a byte flipped, cut short, swapped for an older
// one), every session's recovered state, status, seq, last seq and dedupe
// window are byte-identical to what the same directory gives without the index.

const OPTIONS = { dataDir: '/data', journalMaxSizeMb: 1024 / 1024 / 1024, maxSnapshotsPerSession: 2, journalFlushIntervalMs: 3_600_000 };
const SESSIONS = ['s0', 's1', 's2', 's3'];
const INDEX = '/data/checkpoint/journal.idx';

type Op = { kind: 'append'; s: number; cid: boolean; pad: number } | { kind: 'snapshot'; s: number } | { kind: 'checkpoint' } | { kind: 'reopen' } | { kind: 'keep-index' };
type IndexFate = { kind: 'keep' } | { kind: 'flip'; at: number; xor: number } | { kind: 'cut'; at: number } | { kind: 'older' };

async function build(ops: Op[]): Promise<{ fs: MemoryFileSystem; older: Uint8Array | undefined }> {
  const fs = new MemoryFileSystem();
  // As a process that then dies: its lock names a pid that is gone, and the next open takes it over.
  const dead = { lockPid: 2 ** 22 + 1 };
  let store = await openStore<ChatState>({ ...OPTIONS, fs }, hooks, dead);
  const states = new Map<string, ChatState>();
  let older: Uint8Array | undefined;
  let n = 0;
  for (const op of ops) {
    if (op.kind === 'checkpoint') {
      await store.writeCheckpoint([]);
    } else if (op.kind === 'reopen') {
      await store.close();
      store = await openStore<ChatState>({ ...OPTIONS, fs }, hooks, dead);
    } else if (op.kind === 'keep-index') {
      if (fs.exists(INDEX)) older = await fs.readFile(INDEX);
    } else if (op.kind === 'append') {
      const sid = SESSIONS[op.s]!;
      n += 1;
      await store.append({ sid, type: 't', data: { n, pad: 'x'.repeat(op.pad) }, ...(op.cid ? { clientMessageId: `c${n}` } : {}) });
      states.set(sid, { ns: [...(states.get(sid)?.ns ?? []), n] });
    } else {
      const sid = SESSIONS[op.s]!;
      const state = states.get(sid);
      if (state !== undefined) await store.snapshot(sid, state, state.ns.length);
    }
  }
  // The process dies here: what is written stays, the lock of a dead process is taken over.
  await store.journal.flush();
  return { fs: copyOf(fs), older };
}

/** A copy of everything written so far (as a crash that loses nothing leaves it). */
function copyOf(fs: MemoryFileSystem): MemoryFileSystem {
  return fs.crashImageWith(fs.pendingCount(), 'none');
}

async function put(fs: MemoryFileSystem, path: string, bytes: Uint8Array): Promise<void> {
  const h = await fs.open(path, 'w+');
  await h.write(bytes, 0, bytes.length, 0);
  await h.close();
}

async function recovered(fs: MemoryFileSystem, useJournalIndex: boolean): Promise<{ text: string; used: boolean | undefined }> {
  const store: Store<ChatState> = await openStore<ChatState>({ ...OPTIONS, fs, useJournalIndex }, hooks, { lockPid: 2 ** 22 + 1 });
  const rows = SESSIONS.map((sid) => {
    const r = store.recovered.get(sid);
    return [sid, r?.status ?? 'absent', r?.seq ?? 0, r?.state ?? null, r?.report.missing ?? null, store.journal.lastSeq(sid), store.journal.dedupeEntries(sid, Number.MAX_SAFE_INTEGER).map((d) => [d[0], d[1], d[2]]).sort()];
  });
  const used = store.recoveryReport().journal.index?.used;
  await store.close();
  return { text: JSON.stringify(rows), used };
}

test('the recovered state with the journal index is byte-identical to the one without, whatever became of the index', async () => {
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 8, arbitrary: fc.record({ kind: fc.constant('append' as const), s: fc.nat(SESSIONS.length - 1), cid: fc.boolean(), pad: fc.nat(120) }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('snapshot' as const), s: fc.nat(SESSIONS.length - 1) }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'checkpoint' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'keep-index' as const }) },
  );
  const fate: fc.Arbitrary<IndexFate> = fc.oneof(
    { weight: 3, arbitrary: fc.constant({ kind: 'keep' as const }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'older' as const }) },
  );
  let used = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 50 }), fate, async (ops, f) => {
      const { fs, older } = await build(ops);
      if (fs.exists(INDEX)) {
        const bytes = await fs.readFile(INDEX);
        if (f.kind === 'flip') {
          const copy = Uint8Array.from(bytes);
          copy[f.at % copy.length] = copy[f.at % copy.length]! ^ f.xor;
          await put(fs, INDEX, copy);
        } else if (f.kind === 'cut') {
          await put(fs, INDEX, bytes.subarray(0, f.at % bytes.length));
        } else if (f.kind === 'older' && older !== undefined) {
          await put(fs, INDEX, older);
        }
      }
      const withIndex = await recovered(copyOf(fs), true);
      const without = await recovered(copyOf(fs), false);
      if (withIndex.used === true) used += 1;
      assert.equal(withIndex.text, without.text);
    }),
    { numRuns: 120 },
  );
  // Coverage guard, not the property: the index is used in about a third of the runs (34-42 of 120
  // seen); fewer than a tenth would mean the generator stopped exercising it. (> 30 failed once in CI with 23.)
  assert.ok(used >= 12, `the index was used in only ${used} runs: the property hardly tests it`);
});
