/**
 * The child processes of bench/runtime/run.ts's restart measurement (figure c).
 * Not meant to be run by hand; run.ts spawns it as
 *
 *   node --import tsx bench/runtime/restart-child.ts write   --data-dir DIR --sessions N --events E [--kind turns|user-only]
 *   node --import tsx bench/runtime/restart-child.ts recover --data-dir DIR --probe SID --expect-sessions N --expect-seq E
 *
 * `write` opens Arbor on DIR and appends E session events to each of N sessions
 * through `arbor.backend.append` (the runtime's own store: valid session events,
 * recovered by the reducer like any others), in rounds of one event per session
 * with up to WINDOW appends in flight. With `--kind turns` (the default) the
 * events are complete turns (user_message_sent {messageId, content},
 * assistant_stream_started, assistant_response_completed), topped up with
 * session_config_changed; with `--kind user-only` they are all
 * user_message_sent, i.e. requests that were never answered (see eventFor). It
 * Before the last round it writes the periodic checkpoint (with the journal
 * index), as a server that ran for a while has (`--checkpoint-before-last no`:
 * never, so open scans the whole journal); with `--snapshot-before-last yes` (the
 * realistic variant) it snapshots every session first, as a server on default options
 * has, so restart loads snapshots and the older segments are gone;
 * then prints one line `ready {json}` and waits, holding the lock, for the
 * parent's SIGKILL.
 *
 * `recover` is the restarted server. Its timeline, in ms since the process
 * started (`performance.now()`, whose origin is the process start):
 *   modulesLoaded    the module body runs: node booted, tsx loaded, Arbor imported
 *   createCalled     just before `createArbor()`
 *   created          `createArbor()` resolved: the journal is indexed; sessions are
 *                    recovered on first access and by a background pass
 *   firstServed      the first request answered: `session(probe).load()` (recovered on
 *                    access, its seq checked) and one `sendMessage` acknowledged (durable)
 *   allRecovered     `arbor.whenRecovered()` resolved: the background pass is done
 * then checks that every session came back (hot tier size, recovery counts, a
 * sample of states at the expected seq), prints `served {json}` and waits for the
 * parent's SIGKILL (so each restart is a crash, like the first).
 *
 * Protocol: one line per message on stdout, written with one synchronous write.
 */
// First statement of the module body: everything before it is process start-up and imports.
const modulesLoadedMs = performance.now();

import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createArbor, MockProvider, type SessionState, type Store } from '../../src/index.ts';
import { writeLineSync as line } from '../../test/helpers/child-io.ts';


/** Session ids of the restart data set: r0000000, r0000001, … */
function restartSessionId(i: number): string {
  return `r${String(i).padStart(7, '0')}`;
}

/** Appends in flight at once while writing (the journal's queue holds 100,000 by default). */
const WINDOW = 50_000;

/** User + system CPU of the whole process since `from`, in ms. */
function cpuMsSince(from: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(from);
  return (d.user + d.system) / 1000;
}

function holdUntilKilled(): void {
  setInterval(() => undefined, 60_000);
}

/**
 * Event `r` (0-based) of session `i`. `turns`: complete turns — user_message_sent,
 * assistant_stream_started, assistant_response_completed — and, when `events`
 * is not a multiple of 3, session_config_changed events to fill up: every request
 * is answered, as after a crash between turns. `user-only`: only
 * user_message_sent (every message is then a request without an answer, which
 * createArbor ends with one stream_interrupted notice each).
 */
function eventFor(kind: 'turns' | 'user-only', r: number, events: number, ids: { user: string; assistant: string }): { type: string; data: Record<string, unknown> } {
  const turn = Math.floor(r / 3) + 1;
  const step = kind === 'user-only' ? 0 : r < events - (events % 3) ? r % 3 : 3;
  switch (step) {
    case 0:
      ids.user = randomUUID();
      return { type: 'user_message_sent', data: { messageId: ids.user, content: `msg ${kind === 'user-only' ? r + 1 : turn}` } };
    case 1:
      ids.assistant = randomUUID();
      return { type: 'assistant_stream_started', data: { messageId: ids.assistant, requestMessageId: ids.user, provider: 'mock', model: 'mock-echo' } };
    case 2:
      return { type: 'assistant_response_completed', data: { messageId: ids.assistant, requestMessageId: ids.user, content: `Echo: msg ${turn}`, stats: { chunks: 8 } } };
    default:
      return { type: 'session_config_changed', data: { key: `k${r}`, newValue: r } };
  }
}

/** A whole-table checkpoint entry (Store.writeCheckpoint): a session's state at its last event. */
type CheckpointEntry = { sid: string; seq: number; lsn: number; state: SessionState; dedupe: [] };

async function write(dataDir: string, sessions: number, events: number, kind: 'turns' | 'user-only', checkpointBeforeLast: boolean, snapshotBeforeLast: boolean): Promise<void> {
  const arbor = await createArbor({ dataDir });
  // The runtime's own file store (createArbor with a dataDir): the bench appends to its journal directly.
  const store = arbor.backend as Store<SessionState>;
  const t0 = performance.now();
  const total = sessions * events;
  const ids = Array.from({ length: sessions }, () => ({ user: '', assistant: '' }));
  let issued = 0;
  let done = 0;
  let failure: unknown;
  const inFlight = new Set<Promise<unknown>>();
  // Round r appends event r+1 of every session: the log interleaves sessions, as a busy server's does.
  outer: for (let r = 0; r < events; r += 1) {
    if (r === events - 1 && events > 1 && checkpointBeforeLast) {
      // A running server has written its periodic checkpoint (and with it the journal index) some time
      // before it is killed: here, before the last round, so that open reads the index and scans the last round.
      await Promise.all(inFlight);
      // The realistic variant: a server on default options has snapshotted every session by now (one
      // per snapshotEveryEvents = 100 events), and the snapshots released the journal's older segments.
      // Its periodic whole-table checkpoint holds every session in memory (all of them here) at its
      // last event; the bench's appends bypass the session actors, so that table is written here.
      if (snapshotBeforeLast) await store.writeCheckpoint(await snapshotAll(store, sessions));
      else await arbor.checkpoint();
    }
    for (let i = 0; i < sessions; i += 1) {
      if (failure !== undefined) break outer;
      while (issued - done >= WINDOW) await Promise.race(inFlight);
      const p = store.append({ sid: restartSessionId(i), ...eventFor(kind, r, events, ids[i]!) }).then(
        () => {
          done += 1;
        },
        (err: unknown) => {
          done += 1;
          failure ??= err;
        },
      );
      inFlight.add(p);
      void p.finally(() => inFlight.delete(p));
      issued += 1;
    }
  }
  await Promise.all(inFlight);
  if (failure !== undefined) throw failure;
  const writeMs = performance.now() - t0;
  const h = arbor.health();
  line(`ready ${JSON.stringify({ sessions, events, kind, total, writeMs, journalBytes: h.journal.bytes, segments: h.journal.segments })}`);
  holdUntilKilled();
}

/**
 * Snapshots every session at its current seq, 16 at a time (each rebuilt from the journal, as the
 * runtime's state is), and returns them as whole-table checkpoint entries.
 */
async function snapshotAll(store: Store<SessionState>, sessions: number): Promise<CheckpointEntry[]> {
  const entries: CheckpointEntry[] = [];
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < sessions) {
      const sid = restartSessionId(next);
      next += 1;
      const r = await store.peekSession(sid);
      if (r === undefined) continue;
      await store.snapshot(sid, r.state, r.seq);
      if (r.report.lastLsn !== undefined) entries.push({ sid, seq: r.seq, lsn: r.report.lastLsn, state: r.state, dedupe: [] });
    }
  };
  await Promise.all(Array.from({ length: 16 }, worker));
  return entries;
}

async function recover(dataDir: string, probe: string, expectSessions: number, expectSeq: number): Promise<void> {
  const createCalledMs = performance.now();
  const cpu0 = process.cpuUsage();
  const arbor = await createArbor({ dataDir, llm: new MockProvider({ chunks: 8, chunkDelayMs: 20 }) });
  const createdMs = performance.now();
  const session = arbor.session(probe);
  const seqBefore = (await session.load()).seq;
  const ack = await session.sendMessage({ content: 'first request after the restart' });
  const firstServedMs = performance.now();
  // Main-thread and thread-pool CPU together (the process's), since createArbor was called: the work behind the wall time.
  const firstServedCpuMs = cpuMsSince(cpu0);
  const pendingAtFirstServed = arbor.health().recovery.pending;
  await arbor.whenRecovered();
  const allRecoveredMs = performance.now();
  const allRecoveredCpuMs = cpuMsSince(cpu0);
  // Everything below is verification, after the timeline.
  await session.idle();
  // Every append since open is the probe's (its message and answer) or a notice recovery wrote.
  const lastLsnAtOpen = arbor.recoveryReport().journal.lastLsn ?? 0;
  const appendedByRecovery = (arbor.backend as Store<SessionState>).journal.nextLsn - 1 - lastLsnAtOpen - (session.state.seq - seqBefore);
  const h = arbor.health();
  const report = arbor.recoveryReport();
  let sampleOk = 0;
  const samples = Math.min(100, expectSessions);
  for (let k = 0; k < samples; k += 1) {
    const sid = restartSessionId(Math.floor((k * expectSessions) / samples));
    if (sid === probe) {
      sampleOk += 1;
      continue;
    }
    if (arbor.session(sid).state.seq >= expectSeq) sampleOk += 1;
  }
  const mem = process.memoryUsage();
  line(
    `served ${JSON.stringify({
      modulesLoadedMs,
      createCalledMs,
      createdMs,
      firstServedMs,
      pendingAtFirstServed,
      allRecoveredMs,
      firstServedCpuMs,
      allRecoveredCpuMs,
      storeOpenMs: report.durationMs,
      hotSessions: h.hot.sessions,
      recoveredCounts: report.counts,
      journalRecordsScanned: report.journal.records,
      journalIndex: report.journal.index ?? null,
      // Notices recovery appended for cut or unanswered turns, besides the probe's own (its load() repairs it before seqBefore is read).
      appendedByCreate: appendedByRecovery,
      journalBytesScanned: report.journal.bytes,
      probe,
      probeSeqBefore: seqBefore,
      probeAckSeq: ack.seq,
      sampleChecked: samples,
      sampleAtExpectedSeq: sampleOk,
      rssBytes: mem.rss,
      heapUsedBytes: mem.heapUsed,
    })}`,
  );
  holdUntilKilled();
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    strict: true,
    options: {
      'data-dir': { type: 'string' },
      sessions: { type: 'string', default: '0' },
      events: { type: 'string', default: '0' },
      probe: { type: 'string', default: restartSessionId(0) },
      'expect-sessions': { type: 'string', default: '0' },
      'expect-seq': { type: 'string', default: '0' },
      kind: { type: 'string', default: 'turns' },
      'checkpoint-before-last': { type: 'string', default: 'yes' },
      'snapshot-before-last': { type: 'string', default: 'no' },
    },
  });
  const dataDir = values['data-dir'];
  if (dataDir === undefined) throw new Error('--data-dir is required');
  const kind = values.kind;
  if (kind !== 'turns' && kind !== 'user-only') throw new Error(`--kind must be turns or user-only, got ${JSON.stringify(kind)}`);
  if (positionals[0] === 'write') await write(dataDir, Number(values.sessions), Number(values.events), kind, values['checkpoint-before-last'] !== 'no', values['snapshot-before-last'] === 'yes');
  else if (positionals[0] === 'recover') await recover(dataDir, values.probe!, Number(values['expect-sessions']), Number(values['expect-seq']));
  else throw new Error(`unknown mode ${JSON.stringify(positionals[0])}: write | recover`);
}

main().catch((err: unknown) => {
  process.stderr.write(`restart child failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(3);
});
