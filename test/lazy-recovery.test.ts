import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { openStore, type Store } from '../src/file/store.ts';
import { isArborError } from '../src/core/errors.ts';
import { MemoryFileSystem } from '../src/testing/memory-fs.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';
import { createArbor, MockProvider } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';
import { GatedFileSystem } from './helpers/gated-fs.ts';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { SessionState } from '../src/core/state.ts';

// Lazy recovery (first access + background pass) must give exactly what an eager
// open gives: the same status, seq and state per session, the same quarantine,
// the same dedupe — whatever order accesses and the pass take, and whatever
// damage the data directory holds.

const OPTIONS = { dataDir: '/data', journalMaxSizeMb: 2048 / 1024 / 1024, maxSnapshotsPerSession: 2, journalFlushIntervalMs: 3_600_000 };
const SESSIONS = ['s0', 's1', 's2', 's3', 's4'];

type Op = { kind: 'append'; s: number; cid: boolean } | { kind: 'snapshot'; s: number } | { kind: 'checkpoint'; lie: boolean };
type Damage = { file: 'segment' | 'snapshot' | 'checkpoint'; pick: number; at: number; xor: number };

async function build(ops: Op[]): Promise<MemoryFileSystem> {
  const fs = new MemoryFileSystem();
  const store = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  const states = new Map<string, ChatState>();
  const lsns = new Map<string, number>();
  let n = 0;
  for (const op of ops) {
    if (op.kind === 'checkpoint') {
      // A lying checkpoint claims LSNs the journal does not have at those seqs: it must be ignored.
      await store.writeCheckpoint([...states].map(([sid, state]) => ({ sid, seq: state.ns.length, lsn: lsns.get(sid)! + (op.lie ? 1 : 0), state, dedupe: store.journal.dedupeEntries(sid, state.ns.length) })));
      continue;
    }
    const sid = SESSIONS[op.s]!;
    if (op.kind === 'append') {
      n += 1;
      const r = await store.append({ sid, type: 't', data: { n }, ...(op.cid ? { clientMessageId: `c${n}` } : {}) });
      states.set(sid, { ns: [...(states.get(sid)?.ns ?? []), n] });
      lsns.set(sid, r.lsn);
    } else if (states.has(sid)) {
      await store.snapshot(sid, states.get(sid)!, states.get(sid)!.ns.length);
    }
  }
  await store.close();
  return fs;
}

async function damage(fs: MemoryFileSystem, d: Damage): Promise<void> {
  const dir = d.file === 'segment' ? '/data/journals' : d.file === 'snapshot' ? '/data/snapshots' : '/data/checkpoint';
  if (!fs.exists(dir)) return;
  const names = (await fs.readdir(dir)).filter((x) => x.endsWith(d.file === 'segment' ? '.wal' : d.file === 'snapshot' ? '.snap' : '.ckpt')).sort();
  if (names.length === 0) return;
  const path = `${dir}/${names[d.pick % names.length]}`;
  const bytes = await fs.readFile(path);
  if (bytes.length === 0) return;
  const at = d.at % bytes.length;
  const h = await fs.open(path, 'r+');
  await h.write(Uint8Array.of(bytes[at]! ^ d.xor), 0, 1, at);
  await h.sync();
  await h.close();
}

interface Outcome {
  status: string;
  seq: number;
  state: ChatState;
  /** what an append does now: 'ok' or the error code */
  write: string;
  /** what a retried clientMessageId of the first acknowledged append gives */
  dedupe: string;
}

async function probe(store: Store<ChatState>, sid: string, r: { status: string; seq: number; state: ChatState } | undefined): Promise<Outcome> {
  let write = 'ok';
  try {
    await store.append({ sid, type: 't', data: { n: -1 }, clientMessageId: `probe-${sid}` });
  } catch (err) {
    write = isArborError(err) ? err.code : String(err);
  }
  let dedupe = 'none';
  for (const n of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]) {
    try {
      const again = await store.append({ sid, type: 't', data: { n: -2 }, clientMessageId: `c${n}` });
      if (again.duplicate) {
        dedupe = `c${n}@${again.seq}`;
        break;
      }
    } catch (err) {
      dedupe = isArborError(err) ? err.code : String(err);
      break;
    }
  }
  return { status: r?.status ?? 'absent', seq: r?.seq ?? 0, state: r?.state ?? { ns: [] }, write, dedupe };
}

test('lazy recovery (first access racing the background pass) equals eager recovery, with and without damage', async () => {
  const op = fc.oneof(
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('append' as const), s: fc.nat(SESSIONS.length - 1), cid: fc.boolean() }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('snapshot' as const), s: fc.nat(SESSIONS.length - 1) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('checkpoint' as const), lie: fc.boolean() }) },
  );
  const dmg = fc.record({ file: fc.constantFrom('segment' as const, 'snapshot' as const, 'checkpoint' as const), pick: fc.nat(), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) });
  let damagedRuns = 0;
  let checkpointUsed = 0;
  let checkpointRejected = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(op, { minLength: 1, maxLength: 60 }),
      fc.array(dmg, { maxLength: 2 }),
      fc.array(fc.nat(SESSIONS.length - 1), { maxLength: 6 }),
      // the lazy store's pass reads segments in pieces this small (frames straddle them, or are longer), or in its default 4 MiB ones
      fc.option(fc.integer({ min: 16, max: 400 }), { nil: undefined }),
      async (ops, damages, accessOrder, passPieceBytes) => {
        const fs = await build(ops);
        for (const d of damages) await damage(fs, d);
        // given two identical copies of the data directory, and a third without its checkpoint
        const eagerFs = fs.crashImageWith(0, 'none');
        const lazyFs = fs.crashImageWith(0, 'none');
        const plainFs = fs.crashImageWith(0, 'none');
        if (plainFs.exists('/data/checkpoint/table.ckpt')) await plainFs.unlink('/data/checkpoint/table.ckpt');
        // when one is opened eagerly and the other lazily, some sessions accessed while the pass runs
        const eager = await openStore<ChatState>({ ...OPTIONS, fs: eagerFs }, hooks);
        const lazy = await openStore<ChatState>({ ...OPTIONS, fs: lazyFs, recovery: 'lazy' }, hooks, passPieceBytes === undefined ? {} : { passPieceBytes });
        assert.equal(lazy.recovered.size, 0, 'a lazy open rebuilt sessions before resolving');
        const fromLazy = new Map<string, { status: string; seq: number; state: ChatState } | undefined>();
        const fromPass = new Map<string, { status: string; seq: number; state: ChatState }>();
        const pass = lazy.recoverAll((sid, r) => fromPass.set(sid, r));
        await Promise.all(accessOrder.map(async (i) => {
          const sid = SESSIONS[i]!;
          const r = await lazy.loadSession(sid);
          if (!fromLazy.has(sid)) fromLazy.set(sid, r);
        }));
        await pass;
        assert.equal(lazy.pendingRecoveries, 0);
        const report = lazy.recoveryReport();
        assert.equal(report.pending, 0);
        assert.ok(report.completedAt !== undefined);
        if (eager.recoveryReport().counts.recovered !== eager.recovered.size) damagedRuns += 1;
        checkpointUsed += eager.recoveryReport().checkpoint?.used ?? 0;
        checkpointRejected += eager.recoveryReport().checkpoint?.rejected ?? 0;
        // and the checkpoint changes nothing but speed: without it, recovery gives the same
        const plain = await openStore<ChatState>({ ...OPTIONS, fs: plainFs }, hooks);
        for (const sid of SESSIONS) {
          const e = eager.recovered.get(sid);
          const p = plain.recovered.get(sid);
          assert.deepEqual([p?.status, p?.seq, p?.state], [e?.status, e?.seq, e?.state], `session ${sid}: with the checkpoint ${JSON.stringify(eager.recoveryReport().checkpoint)}`);
        }
        await plain.close();
        // then every session comes back the same, and behaves the same afterwards
        for (const sid of SESSIONS) {
          const e = eager.recovered.get(sid);
          const l = fromPass.get(sid) ?? fromLazy.get(sid);
          const a = await probe(eager, sid, e);
          const b = await probe(lazy, sid, l);
          assert.ok(isDeepStrictEqual(a, b), `session ${sid}: eager ${JSON.stringify(a)} ≠ lazy ${JSON.stringify(b)} (accessed first: ${fromLazy.has(sid)})`);
        }
        assert.deepEqual(
          [...lazy.recoveryReport().sessions].map((s) => [s.sid, s.status, s.seq]).sort(),
          [...eager.recoveryReport().sessions].map((s) => [s.sid, s.status, s.seq]).sort(),
        );
        await eager.close();
        await lazy.close();
      },
    ),
    { numRuns: 150, seed: 0x1a2b },
  );
  assert.ok(damagedRuns > 10, `only ${damagedRuns} runs recovered a damaged session: the damage does not reach recovery`);
  assert.ok(checkpointUsed > 50, `only ${checkpointUsed} checkpoint entries were used: the property does not exercise the checkpoint`);
  assert.ok(checkpointRejected > 10, `only ${checkpointRejected} checkpoint entries were rejected: lying checkpoints are not exercised`);
});

test('a checkpoint entry at the newest snapshot\'s own seq stands in for that snapshot, only when tied to that very snapshot', async () => {
  // given s0 snapshotted at its last event and s1 with an event after its snapshot, then a checkpoint
  const ops: Op[] = [
    ...[0, 1, 0, 1, 0, 1].map((s) => ({ kind: 'append' as const, s, cid: true })),
    { kind: 'snapshot', s: 0 },
    { kind: 'snapshot', s: 1 },
    { kind: 'append', s: 1, cid: true },
    { kind: 'checkpoint', lie: false },
  ];
  const fs = await build(ops);
  const plainFs = fs.crashImageWith(0, 'none');
  await plainFs.unlink('/data/checkpoint/table.ckpt');
  // when it is opened with the checkpoint and without
  const withCkpt = await openStore<ChatState>({ ...OPTIONS, fs: fs.crashImageWith(0, 'none') }, hooks);
  const plain = await openStore<ChatState>({ ...OPTIONS, fs: plainFs }, hooks);
  // then both sessions start from the checkpoint: s0 without decoding its snapshot, s1 proven by the journal
  assert.deepEqual(withCkpt.recoveryReport().checkpoint, { used: 2, skipped: 0, rejected: 0 });
  assert.deepEqual(withCkpt.recoveryReport().sessions.filter((r) => r.checkpointSeq !== undefined).map((r) => [r.sid, r.checkpointSeq]).sort(), [['s0', 3], ['s1', 4]]);
  for (const sid of ['s0', 's1']) assert.deepEqual(withCkpt.recovered.get(sid)?.state, plain.recovered.get(sid)?.state, sid);
  assert.deepEqual(withCkpt.recovered.get('s0')?.state, { ns: [1, 3, 5] });
  // and the tie came through the restart: the next checkpoint ties s0 to the same snapshot again
  const tiedLsn = withCkpt.snapshots.newestLsnAt('s0', 3);
  assert.ok(tiedLsn !== undefined && tiedLsn >= 5, `s0's snapshot header LSN is known after the restart: ${tiedLsn}`);
  await plain.close();

  await withCkpt.close();

  // given a checkpoint whose s0 entry claims another state, tied to a snapshot write that is not the one on disk
  const fs2 = await build(ops);
  const reopened = await openStore<ChatState>({ ...OPTIONS, fs: fs2 }, hooks);
  await reopened.writeCheckpoint([{ sid: 's0', seq: 3, lsn: 5, state: { ns: [999] }, dedupe: [], snapshotLsn: reopened.snapshots.newestLsnAt('s0', 3)! + 1 }]);
  await reopened.close();
  const again = await openStore<ChatState>({ ...OPTIONS, fs: fs2.crashImageWith(0, 'none') }, hooks);
  // then the entry is not used: s0 comes from its snapshot, as without a checkpoint
  assert.deepEqual(again.recoveryReport().checkpoint, { used: 0, skipped: 1, rejected: 0 });
  assert.deepEqual(again.recovered.get('s0')?.state, { ns: [1, 3, 5] });
  await again.close();
});

test('a lazy store answers before the pass and holds segment deletion until every snapshot was checked', async () => {
  // given a session whose only snapshot is damaged, whose records share their segments with s2's
  const fs = await build([
    ...Array.from({ length: 80 }, (_, i) => ({ kind: 'append' as const, s: i % 2 === 0 ? 0 : 2, cid: false })),
    ...Array.from({ length: 40 }, () => ({ kind: 'append' as const, s: 0, cid: false })),
    { kind: 'snapshot', s: 0 },
    { kind: 'append', s: 0, cid: false },
  ]);
  const snaps = (await fs.readdir('/data/snapshots')).sort();
  const s0 = snaps.find((n) => n.startsWith('s0.'))!;
  await damage(fs, { file: 'snapshot', pick: snaps.indexOf(s0), at: 40, xor: 0xff });
  const segmentsBefore = (await fs.readdir('/data/journals')).length;
  // when it opens lazily and s2, which pins those segments, snapshots before the pass ran
  const store = await openStore<ChatState>({ ...OPTIONS, fs, recovery: 'lazy' }, hooks);
  const s2 = await store.loadSession('s2');
  assert.equal(s2?.seq, 40);
  await store.snapshot('s2', s2!.state, 40);
  // then no segment was deleted: s0's damaged snapshot claimed to cover records only they still hold
  assert.ok(segmentsBefore > 2);
  assert.equal((await fs.readdir('/data/journals')).length, segmentsBefore);
  // and s0, loaded on access, waits for the pass and comes back whole from the journal
  const s0r = await store.loadSession('s0');
  assert.equal(s0r?.status, 'recovered');
  assert.equal(s0r?.seq, 81);
  assert.deepEqual(s0r?.report.damagedSnapshots.map((d) => d.file), [s0]);
  // and recovery replaced the damaged snapshot, so the journal can be compacted safely
  await store.recoverAll();
  await store.compact();
  await store.close();
  const again = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  assert.equal(again.recovered.get('s0')?.seq, 81);
  assert.equal(again.recovered.get('s0')?.status, 'recovered');
  assert.equal(again.recovered.get('s2')?.seq, 40);
  await again.close();
});

test('the background pass finishes while an append never settles: its waits for the foreground are bounded', async () => {
  // given two sessions of 6,000 events each (the pass replays them in several slices)
  const mem = new MemoryFileSystem();
  const writer = await openStore<ChatState>({ dataDir: '/data', fs: mem, journalFlushIntervalMs: 3_600_000 }, hooks);
  for (let n = 1; n <= 6_000; n += 1) await Promise.all(['s0', 's1'].map((sid) => writer.append({ sid, type: 't', data: { n } })));
  await writer.close();
  // when it reopens lazily and an append's fdatasync is held for as long as the pass runs
  const fs = new GatedFileSystem(mem);
  const store = await openStore<ChatState>({ dataDir: '/data', fs, recovery: 'lazy', journalFlushIntervalMs: 3_600_000 }, hooks);
  fs.hold();
  const started = fs.nextSync();
  const append = store.append({ sid: 'other', type: 't', data: { n: 1 } });
  await started;
  assert.equal(store.journal.writesPending, true);
  // then the pass, which waits for the foreground between slices only so long each time, still finishes
  const recovered = new Map<string, { seq: number; state: ChatState }>();
  await store.recoverAll((sid, r) => recovered.set(sid, r));
  assert.equal(store.journal.writesPending, true, 'the append settled before the pass was done: nothing tested the give-way bound');
  for (const sid of ['s0', 's1']) {
    assert.equal(recovered.get(sid)?.seq, 6_000, sid);
    assert.deepEqual(recovered.get(sid)?.state.ns, Array.from({ length: 6_000 }, (_, i) => i + 1), sid);
  }
  // and the append is acknowledged once its sync is let go
  fs.release();
  assert.equal((await append).seq, 1);
  await store.close();
});

test('after a SIGKILL, the next start recovers sessions from the whole-table checkpoint plus the records after it', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  // given a process that wrote a checkpoint, then more turns, then was killed
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./helpers/checkpoint-child.ts', import.meta.url)), '--data-dir', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = await new Promise<{ checkpoint: { entries: number }; states: Record<string, SessionState> }>((resolve, reject) => {
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /^ready (.*)$/m.exec(buf);
      if (m !== null) resolve(JSON.parse(m[1]!));
    });
    child.on('exit', (code) => reject(new Error(`checkpoint child exited with ${code} before ready`)));
  });
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  assert.equal(ready.checkpoint.entries, 12);
  // when the directory is opened again
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }), snapshotEveryEvents: 4 });
  const report = await arbor.whenRecovered();
  // then the sessions whose last snapshot is older than the checkpoint started from it, proven by the journal
  assert.equal(report.checkpoint?.problem, undefined);
  assert.equal(report.checkpoint!.rejected, 0);
  const fromCheckpoint = report.sessions.filter((r) => r.checkpointSeq !== undefined).length;
  assert.equal(fromCheckpoint, report.checkpoint!.used);
  assert.ok(fromCheckpoint >= 4, `only ${fromCheckpoint} sessions came from the checkpoint: ${JSON.stringify(report.checkpoint)}`);
  // and every session is exactly as it was when the process died (JSON round trip: the child sent it as text)
  for (const [sid, state] of Object.entries(ready.states)) {
    assert.deepEqual(JSON.parse(JSON.stringify(arbor.session(sid).state)), state, `session ${sid}`);
    const again = await arbor.session(sid).sendMessage({ content: 'hello 0', clientMessageId: `${sid}-0` });
    assert.equal(again.duplicate, true, `session ${sid}: a retried clientMessageId was written again`);
  }
  await arbor.close();
});
