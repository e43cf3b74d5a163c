/**
 * Tools through the library (createArbor({ tools })): the multi-step turn, the
 * intent log, approvals and their scopes, the step cap.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { tool } from 'ai';
import { z } from 'zod';
import { createArbor, MockProvider, type Arbor, type ArborOptions, type ArborTool, type JournalRecord, type SessionState } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';
import { rejectsWith } from './helpers/assertions.ts';

function fixture(t: TestContext): { dir: string; open(options?: ArborOptions): Promise<Arbor> } {
  const { dir, cleanup } = tempDir('arbor-tools-');
  const opened: Arbor[] = [];
  t.after(async () => {
    for (const a of opened) await a.close().catch(() => undefined);
    cleanup();
  });
  return {
    dir,
    async open(options: ArborOptions = {}) {
      const a = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 3, chunkDelayMs: 0 }), ...options });
      opened.push(a);
      return a;
    },
  };
}

/** Tools that count their invocations. */
function counted() {
  const calls: { name: string; input: unknown }[] = [];
  const make = (name: string, extra: Partial<ArborTool> = {}): ArborTool =>
    ({
      ...tool({
        description: name,
        inputSchema: z.object({ text: z.string() }),
        execute: async (input: { text: string }) => {
          calls.push({ name, input });
          return { done: input.text };
        },
      }),
      ...extra,
    }) as ArborTool;
  return { calls, make };
}

function toolParts(state: SessionState) {
  return state.messages.flatMap((m) => m.parts.filter((p) => p.type === 'tool').map((p) => ({ message: m.id, ...(p as object) }))) as unknown as { message: string; toolCallId: string; toolName: string; state: string; output?: unknown; errorText?: string; outcome?: string; approval?: { id: string; approved?: boolean } }[];
}

function types(events: JournalRecord[]): string[] {
  return events.map((e) => e.type);
}

test('a turn calls a tool and answers after it: tool_call_started is journaled before the tool runs, tool_call_finished after', async (t) => {
  const f = fixture(t);
  const { calls, make } = counted();
  let startedBeforeRun = false;
  let arbor: Arbor | undefined;
  // the tool looks at the journal when it runs: its intent must be there already
  const tools = {
    note: {
      ...make('note'),
      execute: async (input: { text: string }) => {
        const evs = await arbor!.session('s1').events();
        startedBeforeRun = evs.at(-1)?.type === 'tool_call_started';
        calls.push({ name: 'note', input });
        return { done: input.text };
      },
    } as ArborTool,
  };
  arbor = await f.open({ tools });
  const s2 = arbor.session('s1');
  await s2.sendMessage({ content: 'call note {"text":"hi"}' });
  await s2.idle();
  assert.equal(startedBeforeRun, true, 'the intent was durable before the tool ran');
  assert.deepEqual(calls, [{ name: 'note', input: { text: 'hi' } }]);
  const evs = types(await s2.events());
  assert.deepEqual(evs, ['user_message_sent', 'assistant_stream_started', 'tool_call_started', 'tool_call_finished', 'assistant_response_completed']);
  const [part] = toolParts(s2.state);
  assert.equal(part?.state, 'output-available');
  assert.deepEqual(part?.output, { done: 'hi' });
  const answer = s2.state.messages.at(-1)!;
  assert.equal(answer.role, 'assistant');
  assert.equal(answer.content, 'Echo: call note {"text":"hi"}');
  assert.deepEqual(answer.parts.map((p) => p.type), ['tool', 'step-start', 'text']);
});

test('approval: a needsApproval tool pauses the turn; the pending approval survives a restart and shows in the state; a once grant runs that call only', async (t) => {
  const f = fixture(t);
  const { calls, make } = counted();
  const tools = { wipe: make('wipe', { needsApproval: true }) };
  let arbor = await f.open({ tools });
  let s = arbor.session('s1');
  await s.sendMessage({ content: 'call wipe {"text":"a"}' });
  await s.idle();
  assert.deepEqual(calls, []);
  const [pending] = s.state.pendingApprovals ? Object.values(s.state.pendingApprovals) : [];
  assert.equal(pending?.tool, 'wipe');
  assert.equal(toolParts(s.state)[0]?.state, 'approval-requested');
  // survives a restart
  await arbor.close();
  arbor = await f.open({ tools });
  s = arbor.session('s1');
  await s.load();
  assert.equal(Object.keys(s.state.pendingApprovals ?? {}).length, 1);
  // an unknown approval is refused with a code
  await rejectsWith(s.decidePermission({ approvalId: 'nope', decision: 'granted' }), 'ARBOR_NO_SUCH_APPROVAL');
  // granted once: the call runs, the turn goes on
  await s.decidePermission({ approvalId: pending!.approvalId, decision: 'granted', scope: 'once', decidedBy: { tenant: 't1', tokenId: 'k1' } });
  await s.idle();
  assert.deepEqual(calls, [{ name: 'wipe', input: { text: 'a' } }]);
  assert.equal(toolParts(s.state)[0]?.state, 'output-available');
  const grant = s.state.permissions['tool:wipe']!;
  assert.deepEqual([grant.used, grant.decidedBy?.tenant, grant.decidedBy?.tokenId], [true, 't1', 'k1']);
  assert.equal(s.state.messages.at(-1)?.content, 'Echo: call wipe {"text":"a"}');
  // the next call asks again: the once grant is used up (also after replay)
  await arbor.close();
  arbor = await f.open({ tools });
  s = arbor.session('s1');
  await s.sendMessage({ content: 'call wipe {"text":"b"}' });
  await s.idle();
  assert.equal(calls.length, 1);
  assert.equal(Object.keys(s.state.pendingApprovals ?? {}).length, 1);
});

test('approval: a session grant answers later calls until it expires; a denial shows output-denied and the tool never runs', async (t) => {
  const f = fixture(t);
  const { calls, make } = counted();
  const arbor = await f.open({ tools: { wipe: make('wipe', { needsApproval: true }) } });
  const s = arbor.session('s1');
  await s.sendMessage({ content: 'call wipe {"text":"a"}' });
  await s.idle();
  const first = Object.values(s.state.pendingApprovals!)[0]!;
  await s.decidePermission({ approvalId: first.approvalId, decision: 'denied', reason: 'not now' });
  await s.idle();
  assert.deepEqual(calls, []);
  assert.equal(toolParts(s.state)[0]?.state, 'output-denied');
  // a session-wide grant, already expired, is not reused
  await s.decidePermission({ permission: 'tool:wipe', decision: 'granted', scope: 'session', expiresAt: Date.now() - 1 });
  await s.sendMessage({ content: 'call wipe {"text":"b"}' });
  await s.idle();
  assert.deepEqual(calls, []);
  const second = Object.values(s.state.pendingApprovals!)[0]!;
  await s.decidePermission({ approvalId: second.approvalId, decision: 'granted', scope: 'session', expiresAt: Date.now() + 60_000 });
  await s.idle();
  await s.sendMessage({ content: 'call wipe {"text":"c"}' });
  await s.idle();
  assert.deepEqual((calls as { input: unknown }[]).map((c) => (c.input as { text: string }).text), ['b', 'c'], 'the session grant answered the third call without asking');
  assert.deepEqual(Object.keys(s.state.pendingApprovals ?? {}), []);
});

test('the step cap ends a turn that keeps calling tools', async (t) => {
  const f = fixture(t);
  const { calls, make } = counted();
  // a model that calls the tool at every step
  const llm = new MockProvider({ chunks: 1, chunkDelayMs: 0 });
  let n = 0;
  const looping = Object.assign(Object.create(llm) as MockProvider, {
    async *streamStep() {
      n += 1;
      yield { type: 'tool-call' as const, toolCallId: `c${n}`, toolName: 'note', input: { text: String(n) } };
      yield { type: 'finish' as const, finishReason: 'tool-calls' };
    },
  });
  const arbor = await f.open({ llm: looping, tools: { note: make('note') }, maxToolSteps: 3 });
  const s = arbor.session('s1');
  await s.sendMessage({ content: 'go' });
  await s.idle();
  assert.equal(calls.length, 3);
  const answer = s.state.messages.at(-1)!;
  assert.equal(answer.role, 'assistant');
  assert.equal((answer.metadata?.stats as { finishReason?: string }).finishReason, 'tool-calls');
});

test('a real OpenAI-compatible server: a streamed tool call runs and the model answers; HTTP 500 and a connection cut mid-tool-call end the turn interrupted, with no tool event journaled and the tool never run', async (t) => {
  const { startOpenAiCompatibleServer } = await import('./helpers/openai-compatible-server.ts');
  const { AiSdkProvider } = await import('../src/index.ts');
  const llmServer = await startOpenAiCompatibleServer({ chunks: ['Let me note. '], toolCall: { name: 'note', arguments: '{"text":"hello"}' } });
  t.after(() => llmServer.close());
  const f = fixture(t);
  const { calls, make } = counted();
  const arbor = await f.open({ llm: new AiSdkProvider({ baseURL: llmServer.baseURL, model: 'm', maxRetries: 0 }), tools: { note: make('note') } });
  const s = arbor.session('s1');
  // ok: the call runs, its result goes back, the model answers
  llmServer.setBehavior({ mode: 'ok', chunks: ['Let me note. '] });
  await s.sendMessage({ content: 'note hello' });
  await s.idle();
  assert.deepEqual(calls, [{ name: 'note', input: { text: 'hello' } }]);
  assert.equal(toolParts(s.state)[0]?.state, 'output-available');
  const second = llmServer.requests[1]!.body as { messages: { role: string }[] };
  assert.ok(second.messages.some((m) => m.role === 'tool'), 'the result went back to the model');
  // cut mid-tool-call, then HTTP 500
  for (const mode of ['cut', 'http-500'] as const) {
    llmServer.setBehavior({ mode });
    const before = (await s.events()).length;
    await s.sendMessage({ content: `again ${mode}` });
    await s.idle();
    const added = (await s.events()).slice(before).map((e) => e.type);
    assert.deepEqual(added, ['user_message_sent', 'assistant_stream_started', 'stream_interrupted'], mode);
    assert.equal(s.state.messages.at(-1)?.metadata?.interrupted, true, mode);
  }
  assert.equal(calls.length, 1, 'never run by a failed step');
  assert.deepEqual(Object.keys(s.state.toolCallsInFlight ?? {}), []);
});
