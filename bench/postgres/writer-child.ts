/**
 * One writer node of bench/postgres/run.ts: opens its own backend (PgBackend
 * with its own nodeId, or the file Store), takes its sessions, says `ready`,
 * waits for `go` on stdin, then keeps `window` appends in flight round-robin
 * over its sessions for warm-up + measured seconds, and prints one JSON line
 * with what it measured.
 *
 *   node --import tsx bench/postgres/writer-child.ts '<json config>'
 */
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { PgBackend } from '../../src/postgres/pg-backend.ts';
import { openStore } from '../../src/file/store.ts';
import type { AppendInput, AppendResult } from '../../src/file/journal/journal.ts';
import { Samples } from '../lib/stats.ts';

export interface WriterConfig {
  kind: 'pg' | 'file';
  url?: string;
  schema?: string;
  dataDir?: string;
  nodeId: string;
  sessions: number;
  window: number;
  warmupSeconds: number;
  seconds: number;
}

export interface WriterResult {
  nodeId: string;
  appends: number;
  seconds: number;
  ackP50Ms: number;
  ackP99Ms: number;
  /** events per transaction during the measurement (pg only; null for the file store) */
  avgBatch: number | null;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as WriterConfig;
const HOOKS = { reducer: (s: null) => s, initialState: () => null };
const CONTENT = 'Hi! I ordered the blue running shoes last Tuesday but the tracking page still says "label created". Could you check whether they shipped?'.padEnd(200, '.');

let append: (input: AppendInput) => Promise<AppendResult>;
let batches: () => { batches: number; events: number };
let close: () => Promise<void>;
if (cfg.kind === 'pg') {
  const b = await PgBackend.open({ connectionString: cfg.url!, schema: cfg.schema!, hooks: HOOKS, nodeId: cfg.nodeId, poolSize: 4 });
  for (let i = 0; i < cfg.sessions; i += 1) await b.loadSession(`${cfg.nodeId}-s${i}`);
  append = (input) => b.append(input);
  batches = () => ({ batches: b.stats().flushes, events: b.stats().flushedEvents });
  close = () => b.close();
} else {
  const store = await openStore({ dataDir: cfg.dataDir!, durability: 'fsync' }, HOOKS);
  append = (input) => store.append(input);
  // The journal does not count its batches publicly (telemetry publish points are not in yet).
  batches = () => ({ batches: 0, events: 0 });
  close = () => store.close();
}

process.stdout.write('ready\n');
await once(process.stdin, 'data');
// A flowing stdin would keep this process alive after its result.
process.stdin.destroy();

const samples = new Samples();
let measuring = false;
let stopped = false;
let acked = 0;
let inflight = 0;
let next = 0;
let failure: unknown;
let drained: () => void = () => undefined;

function one(): void {
  if (stopped || failure !== undefined) {
    if (inflight === 0) drained();
    return;
  }
  const sid = `${cfg.nodeId}-s${next % cfg.sessions}`;
  next += 1;
  inflight += 1;
  const t0 = performance.now();
  append({ sid, type: 'user_message_sent', data: { content: CONTENT, n: next } }).then(
    () => {
      inflight -= 1;
      if (measuring) {
        acked += 1;
        samples.push(performance.now() - t0);
      }
      one();
    },
    (err: unknown) => {
      inflight -= 1;
      failure ??= err;
      if (inflight === 0) drained();
    },
  );
}

for (let i = 0; i < cfg.window; i += 1) one();
await new Promise((r) => setTimeout(r, cfg.warmupSeconds * 1000));
const b0 = batches();
measuring = true;
const started = performance.now();
await new Promise((r) => setTimeout(r, cfg.seconds * 1000));
measuring = false;
const seconds = (performance.now() - started) / 1000;
const b1 = batches();
stopped = true;
await new Promise<void>((resolve) => {
  drained = resolve;
  if (inflight === 0) resolve();
});
await close();
if (failure !== undefined) throw failure;
const s = samples.summary();
const result: WriterResult = {
  nodeId: cfg.nodeId,
  appends: acked,
  seconds,
  ackP50Ms: s.p50,
  ackP99Ms: s.p99,
  avgBatch: b1.batches > b0.batches ? (b1.events - b0.events) / (b1.batches - b0.batches) : null,
};
process.stdout.write(`${JSON.stringify(result)}\n`);
