/**
 * One node taking over sessions that another (dead) node wrote, for
 * bench/postgres/run.ts (issue 10, goal 5): a fresh process opens its backend
 * and takes the sessions over lazily, one by one, as requests reach them — the
 * PostgreSQL backend by taking each session's (expired) lease and reading its
 * rows, the file store by its lazy recovery. Prints one JSON line with its
 * timeline in ms since `open` was called:
 *
 *   open            the backend answers (PostgreSQL: connect + migrations; file: lock + journal scan)
 *   firstRequest    the probe session taken over and one append to it acknowledged (durable)
 *   allTouched      every session taken over (loaded), `concurrency` loads at a time
 *
 *   node --import tsx bench/postgres/takeover-child.ts '<json config>'
 */
import { performance } from 'node:perf_hooks';
import { PgBackend } from '../../src/postgres/pg-backend.ts';
import { openStore } from '../../src/file/store.ts';
import type { SessionBackend } from '../../src/backend/backend.ts';

export interface TakeoverConfig {
  kind: 'pg' | 'file';
  url?: string;
  schema?: string;
  dataDir?: string;
  nodeId: string;
  /** ids of the sessions to take over are `${prefix}${i}`, i < sessions */
  prefix: string;
  sessions: number;
  /** loads in flight at once while touching every session */
  concurrency: number;
}

export interface TakeoverResult {
  kind: 'pg' | 'file';
  openMs: number;
  firstRequestMs: number;
  allTouchedMs: number;
  /** events the reducer saw over every session (a check that each was really read) */
  events: number;
  sessions: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as TakeoverConfig;
/** The state is the number of events replayed: each session's history is read and reduced, nothing more. */
const HOOKS = { reducer: (s: number) => s + 1, initialState: () => 0 };

const t0 = performance.now();
let backend: SessionBackend<number>;
if (cfg.kind === 'pg') {
  backend = await PgBackend.open<number>({ connectionString: cfg.url!, schema: cfg.schema!, hooks: HOOKS, nodeId: cfg.nodeId, poolSize: 8 });
} else {
  backend = await openStore<number>({ dataDir: cfg.dataDir!, durability: 'fsync', recovery: 'lazy' }, HOOKS);
}
const openMs = performance.now() - t0;

const sid = (i: number): string => `${cfg.prefix}${i}`;
// The first request: a session in the middle of the table, taken over and written to.
const probe = Math.floor(cfg.sessions / 2);
const first = await backend.loadSession(sid(probe));
let events = first?.state ?? 0;
await backend.append({ sid: sid(probe), type: 'user_message_sent', data: { content: 'after the takeover' }, expectedSeq: first?.seq ?? 0 });
const firstRequestMs = performance.now() - t0;

let next = 0;
const worker = async (): Promise<void> => {
  for (;;) {
    const i = next++;
    if (i >= cfg.sessions) return;
    if (i === probe) continue;
    const r = await backend.loadSession(sid(i));
    events += r?.state ?? 0;
  }
};
await Promise.all(Array.from({ length: cfg.concurrency }, worker));
const allTouchedMs = performance.now() - t0;
await backend.close();
const result: TakeoverResult = { kind: cfg.kind, openMs, firstRequestMs, allTouchedMs, events, sessions: cfg.sessions };
process.stdout.write(`${JSON.stringify(result)}\n`);
