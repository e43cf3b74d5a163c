/**
 * The crash child: opens an Arbor store on a data directory and appends to many
 * sessions under load until it is SIGKILLed — by its parent at a random moment,
 * or by itself at a named kill point. Run by crash-lane.ts as
 *
 *   node --import tsx test/crash/kill-child.ts --data-dir DIR [options]
 *
 * Options:
 *   --data-dir DIR        the store's data directory (required; reused across kills)
 *   --durability MODE     fsync (default) | write
 *   --sessions N          sessions appending concurrently (default 50), ids s000, s001, …
 *   --concurrency C       appends in flight per session (default 2)
 *   --think-ms T          each session worker pauses a random 0..T ms between appends (default 20; 0: none)
 *   --segment-mb X        journalMaxSizeMb (default 0.05: segments rotate constantly)
 *   --snapshot-every K    snapshot a session each time its acked seq is a multiple of K (default 25)
 *   --kill-point NAME     one of KILL_POINTS (arbor-runtime/testing); none: wait for the parent's SIGKILL
 *   --kill-at N           SIGKILL at the N-th occurrence of the kill point (default 1)
 *   --seed S              seeds text lengths and the kill point's variant (default 1)
 *   --max-ms MS           give up after MS without being killed: print `done`, exit 0 (default 60000)
 *
 * Protocol: lines on stdout, each written with one synchronous write(2), so a
 * line is out whole before anything that follows it happens:
 *   ready <pid> <sessions recovered>   the store is open (the lock is held)
 *   ack <sid> <seq> <n>                an append resolved (never printed before it did)
 *   snap <sid> <seq> <deleted segments> a snapshot resolved
 *   kill <point> <variant> <occurrence> about to SIGKILL itself at a named kill point
 *   violation <text>                   the child saw the store break a promise (then exits 4)
 *   done                               --max-ms passed
 * Any other failure goes to stderr with exit code 3.
 *
 * Each session continues from the seq the store recovered, so kill/restart
 * cycles on one data directory keep growing the history. At start, each
 * session re-sends its newest recovered event that carried a clientMessageId
 * and must get the original seq back as a duplicate (dedupe survives the crash).
 *
 * Up to 4 snapshots (of different sessions) run at once, so segment deletions
 * overlap too: before commit 199f0e6 two overlapping
 * `Journal.deleteReleasedSegments` loops unlinked the same segment and one
 * snapshot rejected with ENOENT (the child then exits 3).
 */
import { parseArgs } from 'node:util';
import type { AppendInput } from '../../src/file/journal/journal.ts';
import { NodeFileSystem } from '../../src/storage/node-fs.ts';
import { KillingFileSystem, KillSwitch, isKillPoint, mulberry32 as prng, randInt, writeLineSync as line, type KillPoint } from '../../src/testing.ts';
import { openStore, type Store } from '../../src/file/store.ts';
import { EVENT_TYPE, TEXT_MAX, TEXT_MIN, cidFor, crashHooks, crashReducer, initialCrashState, sessionId, usesExpectedSeq, type CrashEventData, type CrashState } from './crash-model.ts';

// ---- output ------------------------------------------------------------------


function die(message: string, code = 3): never {
  process.stderr.write(`kill-child: ${message}\n`);
  process.exit(code);
}

// ---- arguments -------------------------------------------------------------------

const { values: args } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    durability: { type: 'string', default: 'fsync' },
    sessions: { type: 'string', default: '50' },
    concurrency: { type: 'string', default: '2' },
    'think-ms': { type: 'string', default: '20' },
    'segment-mb': { type: 'string', default: '0.05' },
    'snapshot-every': { type: 'string', default: '25' },
    'kill-point': { type: 'string' },
    'kill-at': { type: 'string', default: '1' },
    seed: { type: 'string', default: '1' },
    'max-ms': { type: 'string', default: '60000' },
  },
  strict: true,
});

function positive(name: string, value: string | undefined): number {
  const n = Number(value);
  if (!(n > 0) || !Number.isFinite(n)) die(`--${name} must be a positive number, got ${value}`, 2);
  return n;
}

const dataDir = args['data-dir'] ?? die('--data-dir is required', 2);
const durability = args.durability;
if (durability !== 'fsync' && durability !== 'write') die(`--durability must be fsync or write, got ${durability}`, 2);
const sessions = Math.floor(positive('sessions', args.sessions));
const concurrency = Math.floor(positive('concurrency', args.concurrency));
const thinkMs = Math.floor(Number(args['think-ms']));
if (!(thinkMs >= 0)) die(`--think-ms must be a number >= 0, got ${args['think-ms']}`, 2);
const segmentMb = positive('segment-mb', args['segment-mb']);
const snapshotEvery = Math.floor(positive('snapshot-every', args['snapshot-every']));
const killAt = Math.floor(positive('kill-at', args['kill-at']));
const seed = Math.floor(Number(args.seed)) >>> 0;
const maxMs = positive('max-ms', args['max-ms']);
const killPointArg = args['kill-point'];
if (killPointArg !== undefined && !isKillPoint(killPointArg)) die(`unknown --kill-point ${killPointArg}`, 2);

const rand = prng(seed);
const killSwitch = new KillSwitch(killPointArg as KillPoint | undefined, killAt, rand);

// ---- the workload ----------------------------------------------------------------

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?';
const TEXT_POOL = Array.from({ length: 4 * TEXT_MAX }, () => ALPHABET[randInt(rand, 0, ALPHABET.length - 1)]).join('');

function randomText(): string {
  const len = randInt(rand, TEXT_MIN, TEXT_MAX);
  const start = randInt(rand, 0, TEXT_POOL.length - len);
  return TEXT_POOL.slice(start, start + len);
}

/** Snapshots: up to SNAPSHOTS_IN_FLIGHT at once, one at a time per session; a session already waiting keeps only its newest request. */
const SNAPSHOTS_IN_FLIGHT = 4;

class SnapshotQueue {
  readonly #store: Store<CrashState>;
  readonly #waiting = new Map<string, { state: CrashState; seq: number }>();
  readonly #running = new Set<string>();

  constructor(store: Store<CrashState>) {
    this.#store = store;
  }

  request(sid: string, state: CrashState, seq: number): void {
    this.#waiting.set(sid, { state, seq });
    this.#pump();
  }

  #pump(): void {
    for (const [sid, job] of this.#waiting) {
      if (this.#running.size >= SNAPSHOTS_IN_FLIGHT) return;
      if (this.#running.has(sid)) continue;
      this.#waiting.delete(sid);
      this.#running.add(sid);
      void this.#run(sid, job);
    }
  }

  async #run(sid: string, job: { state: CrashState; seq: number }): Promise<void> {
    try {
      const result = await this.#store.snapshot(sid, job.state, job.seq);
      line(`snap ${sid} ${job.seq} ${result.deletedSegments.length}`);
    } catch (err) {
      die(`snapshot of ${sid} at seq ${job.seq} failed: ${(err as Error).stack ?? String(err)}`);
    }
    this.#running.delete(sid);
    this.#pump();
  }
}

class SessionLoad {
  readonly sid: string;
  readonly #store: Store<CrashState>;
  readonly #snapshots: SnapshotQueue;
  /** the n (= expected seq) of the next append */
  #next: number;
  /** state after every acked event up to state.lastSeq */
  #state: CrashState;
  /** acked events not yet folded into #state (acks may only come in order, but do not rely on it) */
  readonly #acked = new Map<number, CrashEventData>();

  constructor(sid: string, store: Store<CrashState>, snapshots: SnapshotQueue, state: CrashState, seq: number) {
    this.sid = sid;
    this.#store = store;
    this.#snapshots = snapshots;
    this.#state = state;
    this.#next = seq + 1;
  }

  async worker(): Promise<never> {
    for (;;) {
      const n = this.#next++;
      const data: CrashEventData = { n, text: randomText() };
      const input: AppendInput = { sid: this.sid, type: EVENT_TYPE, data };
      const cid = cidFor(this.sid, n);
      if (cid !== undefined) input.clientMessageId = cid;
      if (usesExpectedSeq(n)) input.expectedSeq = n - 1;
      const result = await this.#store.append(input);
      // Acknowledged: only now may the parent hear of it.
      line(`ack ${this.sid} ${result.seq} ${n}`);
      if (result.seq !== n || result.duplicate) {
        line(`violation session ${this.sid}: append of n=${n} resolved with seq ${result.seq} duplicate=${result.duplicate}`);
        process.exit(4);
      }
      this.#onAck(result.seq, data);
      if (thinkMs > 0) await new Promise((resolve) => setTimeout(resolve, randInt(rand, 0, thinkMs)));
    }
  }

  #onAck(seq: number, data: CrashEventData): void {
    this.#acked.set(seq, data);
    for (let d = this.#acked.get(this.#state.lastSeq + 1); d !== undefined; d = this.#acked.get(this.#state.lastSeq + 1)) {
      const s = this.#state.lastSeq + 1;
      this.#acked.delete(s);
      this.#state = crashReducer(this.#state, { seq: s, type: EVENT_TYPE, data: d });
      if (s % snapshotEvery === 0) this.#snapshots.request(this.sid, this.#state, s);
    }
  }
}

/** Re-sends the newest recovered event that carried a clientMessageId: it must come back as a duplicate of its seq. */
async function checkDedupeAfterRestart(store: Store<CrashState>, sid: string, seq: number): Promise<void> {
  let m = seq;
  while (m > 0 && cidFor(sid, m) === undefined) m -= 1;
  if (m === 0) return;
  const data: CrashEventData = { n: m, text: 'retried after restart' };
  const result = await store.append({ sid, type: EVENT_TYPE, data, clientMessageId: cidFor(sid, m)! });
  if (!result.duplicate || result.seq !== m) {
    line(`violation session ${sid}: retry of clientMessageId ${cidFor(sid, m)} (seq ${m}) after restart resolved with seq ${result.seq} duplicate=${result.duplicate}`);
    process.exit(4);
  }
}

async function main(): Promise<void> {
  const fs = new KillingFileSystem(new NodeFileSystem(), killSwitch);
  const store = await openStore<CrashState>({ dataDir, durability: durability as 'fsync' | 'write', journalMaxSizeMb: segmentMb, fs }, crashHooks);
  line(`ready ${process.pid} ${store.recovered.size}`);
  const snapshots = new SnapshotQueue(store);
  const loads: SessionLoad[] = [];
  for (let i = 0; i < sessions; i += 1) {
    const sid = sessionId(i);
    const rec = store.recovered.get(sid);
    if (rec !== undefined && rec.status !== 'recovered' && rec.status !== 'tail-truncated') {
      line(`violation session ${sid} recovered as ${rec.status} at seq ${rec.seq}`);
      process.exit(4);
    }
    const seq = rec?.seq ?? 0;
    if (store.journal.lastSeq(sid) !== seq) {
      line(`violation session ${sid}: recovered seq ${seq} but the journal's last seq is ${store.journal.lastSeq(sid)}`);
      process.exit(4);
    }
    loads.push(new SessionLoad(sid, store, snapshots, rec?.state ?? initialCrashState(), seq));
  }
  await Promise.all(loads.map((l) => checkDedupeAfterRestart(store, l.sid, store.journal.lastSeq(l.sid))));
  setTimeout(() => {
    line('done');
    process.exit(0);
  }, maxMs).unref();
  await Promise.all(loads.flatMap((l) => Array.from({ length: concurrency }, () => l.worker())));
}

process.on('unhandledRejection', (err) => die(`unhandled rejection: ${(err as Error)?.stack ?? String(err)}`));
main().catch((err: unknown) => die((err as Error)?.stack ?? String(err)));
