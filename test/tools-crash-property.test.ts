/**
 * Property test: process crashes at random points of multi-step tool turns.
 *
 * A model (StepModel, below) reads a plan from the user message — k steps,
 * each calling one or two tools — and calls them step by step, then answers.
 * `write` is not safe to repeat; `read` is (`idempotent: true`). Each call's
 * input carries a unique `op`, and every invocation is counted outside the
 * "process" (the tools' side effects survive the crash, as a real tool's do).
 *
 * The process dies at a random point: after the k-th filesystem call
 * (`freezeAfter`: that call and every later one never settle), or inside the
 * n-th tool invocation (after its `tool_call_started` was acknowledged, before
 * its finish: "between events"). The disk is then a random power-loss image of
 * what was written (`crashImage`: only synced data is sure to be there, the
 * rest is a random prefix, maybe torn). A new Arbor opens it, the session is
 * loaded (recovery repairs it), and `retry()` is called once.
 *
 * Invariants:
 * 1. no acknowledged event is lost: every event published before the crash is
 *    in the recovered journal at its seq with the same type and data;
 * 2. the state rebuilt from disk, up to the last acknowledged seq, deep-equals
 *    the live state before the crash;
 * 3. every `tool_call_started` has exactly one `tool_call_finished` (its output,
 *    its error, or `outcome: 'unknown'` written by recovery); a call whose
 *    finish was acknowledged is never marked unknown; nothing is left in flight;
 * 4. intent before effect: every invocation of a tool has its
 *    `tool_call_started` in the recovered journal;
 * 5. a non-idempotent tool never runs twice for the same `op` (across the
 *    crash, the recovery and the retry).
 *
 * ARBOR_TOOL_PROPERTY_RUNS sets the number of runs (default 25, a few seconds);
 * ARBOR_PROPERTY_SEED the seed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { tool } from 'ai';
import { z } from 'zod';
import { createArbor, ErrorCodes, initialSessionState, isArborError, reduceSession, type Arbor, type ArborTool, type JournalRecord, type SessionState } from '../src/index.ts';
import { MemoryFileSystem, mulberry32 } from '../src/testing.ts';
import type { ToolStepPart, ToolStepRequest } from '../src/llm/provider.ts';

const RUNS = Number(process.env.ARBOR_TOOL_PROPERTY_RUNS ?? 25);
const SEED = process.env.ARBOR_PROPERTY_SEED === undefined ? undefined : Number(process.env.ARBOR_PROPERTY_SEED);
const SID = 'tools';

type ToolName = 'write' | 'read';
/** A turn's plan: its steps, each the tools it calls. */
type Plan = ToolName[][];

/** The plan of a user message: `plan <json>`. */
const planText = (i: number, plan: Plan): string => `plan ${JSON.stringify(plan.map((step, s) => step.map((t, c) => ({ t, op: `m${i}s${s}c${c}` }))))}`;

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  return Array.isArray(content) ? content.map((p: { text?: unknown }) => (typeof p.text === 'string' ? p.text : '')).join('') : '';
}

/** A model that follows the plan in the last user message: step n calls plan[n]'s tools (n = tool results since that message), then answers. */
class StepModel {
  readonly name = 'steps';
  readonly model = 'steps-1';
  async *stream(): AsyncGenerator<string> {
    yield 'no tools';
  }
  async *streamStep(request: ToolStepRequest): AsyncGenerator<ToolStepPart> {
    const messages = request.messages as { role: string; content: unknown }[];
    let last = -1;
    for (let i = messages.length - 1; i >= 0 && last < 0; i--) if (messages[i]!.role === 'user') last = i;
    const text = last < 0 ? '' : textOf(messages[last]!.content);
    const plan = text.startsWith('plan ') ? (JSON.parse(text.slice(5)) as { t: ToolName; op: string }[][]) : [];
    const done = messages.slice(last + 1).filter((m) => m.role === 'tool').length;
    await Promise.resolve();
    if (done < plan.length) {
      for (let j = 0; j < plan[done]!.length; j++) {
        const c = plan[done]![j]!;
        yield { type: 'tool-call', toolCallId: `${request.messageId}-${done}-${j}`, toolName: c.t, input: { op: c.op } };
      }
      yield { type: 'finish', finishReason: 'tool-calls' };
      return;
    }
    yield { type: 'text', text: `done after ${done} steps` };
    yield { type: 'finish', finishReason: 'stop' };
  }
}

interface Invocation {
  tool: ToolName;
  op: string;
  toolCallId: string;
  life: number;
}

/** The two tools; `onRun` sees each invocation as it starts (the crash hook). */
function toolsFor(invocations: Invocation[], life: { n: number }, onRun: (count: number) => void): Record<string, ArborTool> {
  const make = (name: ToolName, idempotent: boolean): ArborTool =>
    ({
      ...tool({
        description: name,
        inputSchema: z.object({ op: z.string() }),
        execute: async (input: { op: string }, options: { toolCallId: string }) => {
          invocations.push({ tool: name, op: input.op, toolCallId: options.toolCallId, life: life.n });
          onRun(invocations.length);
          await Promise.resolve();
          return { ran: input.op };
        },
      }),
      ...(idempotent ? { idempotent: true } : {}),
    }) as ArborTool;
  return { write: make('write', false), read: make('read', true) };
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Runs macrotask turns until `done()` or `limit` turns passed; true when done. */
async function until(done: () => boolean, limit: number): Promise<boolean> {
  for (let i = 0; i < limit; i++) {
    if (done()) return true;
    await turn();
  }
  return done();
}

type Crash = { kind: 'fs'; k: number } | { kind: 'tool'; n: number };

const planArb: fc.Arbitrary<Plan> = fc.array(fc.array(fc.constantFrom<ToolName>('write', 'read'), { minLength: 1, maxLength: 2 }), { minLength: 1, maxLength: 3 });
const crashArb: fc.Arbitrary<Crash> = fc.oneof(
  fc.record({ kind: fc.constant('fs' as const), k: fc.integer({ min: 1, max: 50 }) }),
  fc.record({ kind: fc.constant('tool' as const), n: fc.integer({ min: 1, max: 4 }) }),
);

const OPTIONS = { dataDir: '/data', snapshotIntervalMs: 3_600_000, snapshotEveryEvents: 100_000, checkpointIntervalMs: 3_600_000 } as const;

const stats = { runs: 0, diedInTool: 0, diedAtFsCall: 0, diedIdle: 0, unknownOutcomes: 0, ackedEvents: 0, invocations: 0, repeatsHeld: 0 };

async function run(plans: Plan[], crash: Crash, imageSeed: number): Promise<void> {
  stats.runs += 1;
  const memfs = new MemoryFileSystem();
  const invocations: Invocation[] = [];
  const life = { n: 1 };
  const tools = toolsFor(invocations, life, (count) => {
    // "between events": the process dies while the tool runs (its start is durable, its finish is not written)
    if (crash.kind === 'tool' && count === crash.n && life.n === 1) memfs.freezeAfter(memfs.callCount);
  });
  const arbor = await createArbor({ ...OPTIONS, fs: memfs, llm: new StepModel(), tools });
  const session = arbor.session(SID);
  const acked: JournalRecord[] = [];
  let dead = false;
  session.subscribe((u) => {
    if (u.kind !== 'event') return;
    if (dead) throw new Error(`event seq ${u.event.seq} acknowledged after the process died`);
    acked.push(u.event);
  });
  if (crash.kind === 'fs') memfs.freezeAfter(memfs.callCount + crash.k);
  let finished = false;
  let failed: unknown;
  void (async () => {
    for (let i = 0; i < plans.length; i++) {
      await session.sendMessage({ content: planText(i, plans[i]!) });
      await session.idle();
    }
  })().then(
    () => (finished = true),
    // A dead disk never settles the work; any failure is a bug.
    (err: unknown) => (failed = err ?? new Error('failed')),
  );
  await until(() => finished || failed !== undefined || memfs.frozen, 100_000);
  if (failed !== undefined) throw failed;
  if (!memfs.frozen) memfs.freezeAfter(memfs.callCount);
  if (finished) stats.diedIdle += 1;
  else if (crash.kind === 'tool' && invocations.length >= crash.n) stats.diedInTool += 1;
  else stats.diedAtFsCall += 1;
  // Dead: what was already on its way settles; after that nothing may be acknowledged.
  await until(() => false, 5);
  dead = true;
  const live: SessionState = session.state;
  stats.ackedEvents += acked.length;
  const ackedSeq = acked.at(-1)?.seq ?? 0;
  assert.equal(live.seq, ackedSeq, 'the live state is the last acknowledged event');

  // Restart on a power-loss image of the disk.
  const image = memfs.crashImage(mulberry32(imageSeed));
  life.n = 2;
  const again = await createArbor({ ...OPTIONS, fs: image, llm: new StepModel(), tools: toolsFor(invocations, life, () => undefined) });
  try {
    const s = again.session(SID);
    await s.load();
    await s.idle();
    const recovered = await s.events();
    check(recovered, acked, live, invocations, 'after recovery');
    stats.unknownOutcomes += recovered.filter((e) => e.type === 'tool_call_finished' && (e.data as { outcome?: string }).outcome === 'unknown').length;

    // retry(): whatever it regenerates, no non-idempotent call runs twice
    if (recovered.some((e) => e.type === 'user_message_sent')) {
      await s.retry().catch((err: unknown) => {
        if (!isArborError(err, ErrorCodes.NOTHING_TO_RETRY)) throw err;
      });
      await s.idle();
      const after = await s.events();
      check(after, acked, live, invocations, 'after retry()');
      stats.repeatsHeld += after.filter((e) => e.type === 'tool_approval_requested').length;
    }
  } finally {
    await again.close();
  }
  stats.invocations += invocations.length;
}

function check(journal: JournalRecord[], acked: readonly JournalRecord[], live: SessionState, invocations: readonly Invocation[], when: string): void {
  const problems: string[] = [];
  journal.forEach((e, i) => {
    if (e.seq !== i + 1) problems.push(`journal position ${i} has seq ${e.seq}`);
  });
  // 1. nothing acknowledged lost
  for (const a of acked) {
    const r = journal[a.seq - 1];
    if (r === undefined || r.type !== a.type || !isDeepStrictEqual(r.data, a.data)) problems.push(`acknowledged ${a.type} seq ${a.seq} is ${r === undefined ? 'missing' : `now ${r.type}`}`);
  }
  // 2. the state rebuilt from disk equals the live one for everything acknowledged
  const rebuilt = journal.slice(0, live.seq).reduce(reduceSession, initialSessionState(SID));
  if (!isDeepStrictEqual(rebuilt, live)) problems.push(`the state rebuilt from disk up to seq ${live.seq} differs from the live state before the crash`);
  // 3. every started call has exactly one finish; an acknowledged finish is never turned unknown
  const starts = new Map<string, number>();
  const finishes = new Map<string, JournalRecord[]>();
  for (const e of journal) {
    const id = (e.data as { toolCallId?: string }).toolCallId;
    if (id === undefined) continue;
    if (e.type === 'tool_call_started') starts.set(id, (starts.get(id) ?? 0) + 1);
    if (e.type === 'tool_call_finished') finishes.set(id, [...(finishes.get(id) ?? []), e]);
  }
  for (const [id, n] of starts) {
    const f = finishes.get(id) ?? [];
    if (n !== 1 || f.length !== 1) problems.push(`tool call ${id}: ${n} starts, ${f.length} finishes`);
  }
  for (const [id, f] of finishes) {
    if (!starts.has(id) && f.some((e) => (e.data as { refused?: string }).refused === undefined)) problems.push(`tool call ${id} finished without a start and was not refused`);
  }
  for (const a of acked) {
    if (a.type === 'tool_call_finished' && (journal[a.seq - 1]?.data as { outcome?: string } | undefined)?.outcome === 'unknown') problems.push(`acknowledged finish of ${(a.data as { toolCallId: string }).toolCallId} turned unknown`);
  }
  const last = journal.reduce(reduceSession, initialSessionState(SID));
  if (Object.keys(last.toolCallsInFlight ?? {}).length > 0) problems.push(`calls left in flight: ${Object.keys(last.toolCallsInFlight!).join(', ')}`);
  // 4. intent before effect
  for (const inv of invocations) {
    if (!starts.has(inv.toolCallId)) problems.push(`${inv.tool} ${inv.op} (${inv.toolCallId}, life ${inv.life}) ran without a durable tool_call_started`);
  }
  // 5. a non-idempotent tool never runs twice for one op
  const writes = new Map<string, number>();
  for (const inv of invocations) if (inv.tool === 'write') writes.set(inv.op, (writes.get(inv.op) ?? 0) + 1);
  for (const [op, n] of writes) if (n > 1) problems.push(`write ${op} ran ${n} times`);
  if (problems.length > 0) throw new Error(`${when}: ${problems.length} problem(s):\n  ${problems.slice(0, 12).join('\n  ')}`);
}

test(`tool turns: random crash points (fs call or inside a tool) lose no acknowledged event, finish every started call exactly once, never run a non-idempotent tool twice (${RUNS} runs)`, { timeout: 300_000 }, async (t) => {
  await fc.assert(
    fc.asyncProperty(fc.array(planArb, { minLength: 1, maxLength: 2 }), crashArb, fc.integer(), async (plans, crash, imageSeed) => run(plans, crash, imageSeed)),
    { numRuns: RUNS, ...(SEED === undefined ? {} : { seed: SEED }), endOnFailure: true },
  );
  t.diagnostic(JSON.stringify(stats));
  // The crashes really hit every kind of point, and tool calls really ran (else the property says little).
  assert.ok(stats.diedInTool > 0 || RUNS < 10, `no run died inside a tool: ${JSON.stringify(stats)}`);
  assert.ok(stats.diedAtFsCall > 0 || RUNS < 10, `no run died at an fs call mid-work: ${JSON.stringify(stats)}`);
  assert.ok(stats.invocations > 0, 'no tool ever ran');
});
