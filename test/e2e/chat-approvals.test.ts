import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AbstractChat, DefaultChatTransport, lastAssistantMessageIsCompleteWithApprovalResponses, type ChatInit, type ChatState, type UIMessage } from 'ai';
import { hashToken, tokenIdOf } from '../../src/server/auth.ts';
import { startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { mcpTestServerConfig, readInvocations } from '../helpers/mcp-test-server.ts';
import { tempDir } from '../helpers/tmp.ts';

// End-to-end: tool approvals as the AI SDK's own client answers them (AbstractChat, what useChat wraps, with
// DefaultChatTransport and sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses), against a
// real `arbor serve` child with a real stdio MCP server whose tools record every invocation.

/** The SDK's chat in Node: AbstractChat with a plain state (what useChat's React state does). */
class NodeChat extends AbstractChat<UIMessage> {
  constructor(init: Omit<ChatInit<UIMessage>, 'messages'>) {
    const state: ChatState<UIMessage> = {
      status: 'ready',
      error: undefined,
      messages: [],
      pushMessage(m) {
        this.messages = [...this.messages, m];
      },
      popMessage() {
        this.messages = this.messages.slice(0, -1);
      },
      replaceMessage(i, m) {
        this.messages = this.messages.map((x, j) => (j === i ? m : x));
      },
      snapshot: (x) => structuredClone(x),
    };
    super({ ...init, state });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` holds (no time limit of its own: the test runner's timeout bounds it). */
async function until(check: () => boolean | Promise<boolean>, what: string, server: ServeProcess): Promise<void> {
  for (let i = 0; ; i++) {
    if (await check()) return;
    if (i > 3000) throw new Error(`gave up waiting for ${what}; server stderr:\n${server.stderr()}`);
    await sleep(20);
  }
}

type ToolPartView = { type: string; toolName?: string; toolCallId: string; state: string; approval?: { id: string; approved?: boolean; reason?: string }; output?: unknown };
const toolParts = (m: UIMessage | undefined): ToolPartView[] => (m?.parts ?? []).filter((p) => p.type === 'dynamic-tool' || p.type.startsWith('tool-')) as unknown as ToolPartView[];
const textOf = (m: UIMessage | undefined): string => (m?.parts ?? []).map((p) => (p.type === 'text' ? p.text : '')).join('');

const TOKEN = 'acme-token';
const AUTH = { authorization: `Bearer ${TOKEN}` };

async function withServer(fn: (s: ServeProcess, log: string) => Promise<void>): Promise<void> {
  const { dir, cleanup } = tempDir('arbor-approvals-');
  const log = join(dir, 'invocations.log');
  const config = join(dir, 'arbor.json');
  writeFileSync(config, JSON.stringify({ tokens: [{ tenant: 'acme', sha256: hashToken(TOKEN) }], mcpServers: { test: mcpTestServerConfig(log) }, toolsNeedApproval: ['record_note'] }));
  const server = await startServe(['--data-dir', join(dir, 'data'), '--config', config], { ARBOR_MOCK_CHUNKS: '3', ARBOR_MOCK_CHUNK_DELAY_MS: '0' });
  try {
    await fn(server, log);
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
}

/** A transport that keeps the bodies it POSTs (to send one again, as a client's retry would). */
function recordingTransport(url: string): { transport: DefaultChatTransport<UIMessage>; bodies: string[] } {
  const bodies: string[] = [];
  const transport = new DefaultChatTransport<UIMessage>({
    api: `${url}/v1/chat`,
    headers: AUTH,
    fetch: async (input, init) => {
      if (init?.method === 'POST' && typeof init.body === 'string') bodies.push(init.body);
      return fetch(input, init);
    },
  });
  return { transport, bodies };
}

async function events(url: string, id: string, type: string): Promise<{ seq: number; data: Record<string, unknown> }[]> {
  const res = await fetch(`${url}/v1/sessions/${id}/events?limit=200`, { headers: AUTH });
  const body = (await res.json()) as { events: { seq: number; type: string; data: Record<string, unknown> }[] };
  return body.events.filter((e) => e.type === type);
}

const post = (url: string, body: string) => fetch(`${url}/v1/chat`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json' }, body });

test('approvals over POST /v1/chat with the SDK client: approve → the tool runs and the answer streams; a repeated POST decides nothing twice; an unknown id is 404 ARBOR_NO_SUCH_APPROVAL; deny → output-denied and the tool never ran', async () => {
  await withServer(async (server, log) => {
    const { url } = server;
    const { transport, bodies } = recordingTransport(url);
    const chat = new NodeChat({ id: 'approve', transport, sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses });
    // when the model calls a tool that needs an approval
    await chat.sendMessage({ text: 'call record_note {"text":"hello"}' });
    // then the turn pauses with the SDK's approval request, and the tool has not run
    assert.equal(chat.error, undefined, String(chat.error));
    const paused = chat.messages.at(-1)!;
    const [asked] = toolParts(paused);
    assert.equal(asked?.state, 'approval-requested');
    assert.equal(asked?.type, 'dynamic-tool');
    assert.equal(asked?.toolName, 'record_note');
    const approvalId = asked!.approval!.id;
    assert.equal(readInvocations(log).length, 0);
    // and the same POST again (a client's retry after the turn paused) gets the paused answer with its approval request
    const retried = await (await post(url, bodies[0]!)).text();
    assert.match(retried, new RegExp(`"type":"tool-approval-request","approvalId":"${approvalId}"`));

    // when the client approves it (the SDK sends the answer by itself)
    await chat.addToolApprovalResponse({ id: approvalId, approved: true });
    await until(() => chat.status === 'ready' && toolParts(chat.messages.at(-1)).some((p) => p.state === 'output-available') && textOf(chat.messages.at(-1)) !== '', 'the resumed answer', server);
    // then the tool ran once and the answer streamed after it, into the same message on the client
    assert.equal(chat.error, undefined, String(chat.error));
    assert.deepEqual(readInvocations(log).map((i) => [i.tool, i.input]), [['record_note', { text: 'hello' }]]);
    const answered = chat.messages.at(-1)!;
    assert.equal(answered.role, 'assistant');
    assert.deepEqual((toolParts(answered)[0]!.output as { content: { text: string }[] }).content[0]!.text, 'noted: hello');
    // and the decision is journaled with who decided: the tenant and the token's id (never the token)
    const decided = await events(url, 'approve', 'permission_decided');
    assert.equal(decided.length, 1);
    assert.deepEqual(decided[0]!.data.decidedBy, { tenant: 'acme', tokenId: tokenIdOf(hashToken(TOKEN)) });
    assert.deepEqual([decided[0]!.data.approvalId, decided[0]!.data.decision, decided[0]!.data.scope], [approvalId, 'granted', 'once']);

    // when the same approval POST comes again (a client's retry)
    const approvalBody = bodies.at(-1)!;
    assert.match(approvalBody, /approval-responded/);
    const again = await post(url, approvalBody);
    // then it answers with the resumed answer's stream and decides nothing a second time; the tool did not run again
    assert.equal(again.status, 200);
    assert.equal(again.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
    assert.match(await again.text(), /"type":"finish"/);
    assert.equal((await events(url, 'approve', 'permission_decided')).length, 1);
    assert.equal(readInvocations(log).length, 1);
    // and the opposite answer to the decided approval is a conflict
    const flipped = await post(url, approvalBody.replace('"approved":true', '"approved":false'));
    assert.equal(flipped.status, 409);
    assert.equal(((await flipped.json()) as { error: { code: string } }).error.code, 'ARBOR_IDEMPOTENCY_MISMATCH');
    // and an approval id the session never asked for is 404 naming it; nothing is journaled
    const unknown = await post(url, approvalBody.replaceAll(approvalId, 'no-such-approval'));
    const err = (await unknown.json()) as { error: { code: string; message: string } };
    assert.equal(unknown.status, 404);
    assert.equal(err.error.code, 'ARBOR_NO_SUCH_APPROVAL');
    assert.match(err.error.message, /no-such-approval/);
    assert.equal((await events(url, 'approve', 'permission_decided')).length, 1);
    // and a malformed answer, or an assistant message last without any, is 400 naming the field
    const malformed = await post(url, approvalBody.replace('"approved":true', '"approved":"yes"'));
    assert.equal(malformed.status, 400);
    assert.match(((await malformed.json()) as { error: { message: string } }).error.message, /messages\.\d+\.parts\.\d+\.approval\.approved/);
    const parsed = JSON.parse(approvalBody) as { messages: UIMessage[] };
    const noAnswers = await post(url, JSON.stringify({ ...parsed, messages: [...parsed.messages.slice(0, -1), { ...parsed.messages.at(-1)!, parts: [{ type: 'text', text: 'hi' }] }] }));
    assert.equal(noAnswers.status, 400);
    assert.match(((await noAnswers.json()) as { error: { message: string } }).error.message, /messages\.\d+\.parts/);
    assert.equal((await events(url, 'approve', 'permission_decided')).length, 1);

    // when another chat's model calls a destructive tool and the client denies it
    const denyChat = new NodeChat({ id: 'deny', transport, sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithApprovalResponses });
    await denyChat.sendMessage({ text: 'call delete_item {"id":"precious"}' });
    const [ask] = toolParts(denyChat.messages.at(-1));
    assert.equal(ask?.state, 'approval-requested');
    await denyChat.addToolApprovalResponse({ id: ask!.approval!.id, approved: false, reason: 'not that one' });
    await until(() => denyChat.status === 'ready' && toolParts(denyChat.messages.at(-1)).some((p) => p.state === 'output-denied') && textOf(denyChat.messages.at(-1)) !== '', 'the answer after the denial', server);
    // then the part shows output-denied, the answer goes on, and the tool never ran
    assert.equal(denyChat.error, undefined, String(denyChat.error));
    assert.equal(readInvocations(log).filter((i) => i.tool === 'delete_item').length, 0);
    const history = (await (await fetch(`${url}/v1/chat/deny/messages`, { headers: AUTH })).json()) as UIMessage[];
    const deniedPart = history.flatMap(toolParts).find((p) => p.toolCallId === ask!.toolCallId);
    assert.equal(deniedPart?.state, 'output-denied');
    assert.deepEqual(deniedPart?.approval, { id: ask!.approval!.id, approved: false, reason: 'not that one' });
    // and nothing streams any more
    assert.equal(await transport.reconnectToStream({ chatId: 'deny' }), null);
  });
});

test('approvals over /v1/sessions: GET …/approvals lists the pending ones, POST …/approvals/:approvalId decides (journaled with who decided), once; an unknown id is 404 ARBOR_NO_SUCH_APPROVAL', async () => {
  await withServer(async (server, log) => {
    const { url } = server;
    const json = async (path: string, init?: RequestInit): Promise<{ status: number; body: any }> => {
      const res = await fetch(`${url}${path}`, { ...init, headers: { ...AUTH, 'content-type': 'application/json' } });
      return { status: res.status, body: await res.json() };
    };
    assert.equal((await json('/v1/sessions', { method: 'POST', body: JSON.stringify({ id: 's1' }) })).status, 201);
    assert.equal((await json('/v1/sessions/s1/messages', { method: 'POST', body: JSON.stringify({ content: 'call record_note {"text":"via sessions"}' }) })).status, 202);
    // then the pending approval shows
    let pending: any[] = [];
    await until(async () => (pending = (await json('/v1/sessions/s1/approvals')).body.approvals).length === 1, 'the approval request', server);
    assert.deepEqual([pending[0].tool, pending[0].input], ['record_note', { text: 'via sessions' }]);
    assert.equal(readInvocations(log).length, 0);
    // a bad body names its field; an unknown id is 404
    const bad = await json(`/v1/sessions/s1/approvals/${pending[0].approvalId}`, { method: 'POST', body: JSON.stringify({ decision: 'maybe' }) });
    assert.deepEqual([bad.status, bad.body.error.code], [400, 'ARBOR_INVALID_INPUT']);
    assert.match(bad.body.error.message, /decision/);
    const unknown = await json('/v1/sessions/s1/approvals/nope', { method: 'POST', body: JSON.stringify({ decision: 'granted' }) });
    assert.deepEqual([unknown.status, unknown.body.error.code], [404, 'ARBOR_NO_SUCH_APPROVAL']);
    assert.match(unknown.body.error.message, /nope/);
    // when it is granted
    const granted = await json(`/v1/sessions/s1/approvals/${pending[0].approvalId}`, { method: 'POST', body: JSON.stringify({ decision: 'granted', scope: 'once' }) });
    assert.equal(granted.status, 200);
    assert.equal(granted.body.duplicate, false);
    // then the turn goes on: the tool runs once, and the answer ends
    await until(async () => readInvocations(log).length === 1 && (await json('/v1/sessions/s1')).body.status === 'idle' && (await json('/v1/sessions/s1/approvals')).body.approvals.length === 0, 'the resumed answer', server);
    // and the same decision again changes nothing
    const again = await json(`/v1/sessions/s1/approvals/${pending[0].approvalId}`, { method: 'POST', body: JSON.stringify({ decision: 'granted', scope: 'once' }) });
    assert.deepEqual([again.status, again.body.duplicate], [200, true]);
    const decisions = (await json('/v1/sessions/s1/events?limit=200')).body.events.filter((e: { type: string }) => e.type === 'permission_decided');
    assert.equal(decisions.length, 1);
    assert.deepEqual(decisions[0].data.decidedBy, { tenant: 'acme', tokenId: tokenIdOf(hashToken(TOKEN)) });
    assert.equal(readInvocations(log).length, 1);
  });
});
