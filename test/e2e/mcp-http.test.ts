import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { mcpTestServerConfig, readInvocations, startMcpHttpTestServer } from '../helpers/mcp-test-server.ts';
import { tempDir } from '../helpers/tmp.ts';

// End-to-end: a real Streamable HTTP MCP server (@modelcontextprotocol/sdk's StreamableHTTPServerTransport on
// node:http, in a child process) registered through `mcpServers` with the `{ url }` shape, beside a stdio one, in a
// real `arbor serve`: a turn's tool call reaches it; killing it is detected (its tools withdrawn, /health names it)
// and the stdio server's tools keep working. The HTTP twin of test/tools-mcp.test.ts.

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean | Promise<boolean>, what: string, server: ServeProcess): Promise<void> {
  for (let i = 0; ; i++) {
    if (await check()) return;
    if (i > 3000) throw new Error(`gave up waiting for ${what}; server stderr:\n${server.stderr()}`);
    await sleep(20);
  }
}

async function json(url: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { ...init, headers: { 'content-type': 'application/json' } });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}

type ToolPartView = { type: string; toolName?: string; state: string; output?: { content?: { text: string }[] }; errorText?: string };

test('MCP over Streamable HTTP: a turn calls a real HTTP server\'s tool; the server killed is detected (tools withdrawn, /health names it) and the stdio server\'s tools keep working', async (t) => {
  const { dir, cleanup } = tempDir('arbor-mcp-http-');
  t.after(cleanup);
  const webLog = join(dir, 'web.log');
  const localLog = join(dir, 'local.log');
  const web = await startMcpHttpTestServer(webLog, { MCP_TEST_TOOL_PREFIX: 'web_' });
  t.after(() => web.kill());
  const config = join(dir, 'arbor.json');
  writeFileSync(config, JSON.stringify({ mcpServers: { web: { url: web.url, headers: { 'x-test': 'arbor' } }, local: mcpTestServerConfig(localLog) } }));
  const server = await startServe(['--data-dir', join(dir, 'data'), '--config', config], { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' });
  t.after(() => server.stop('SIGKILL'));
  const { url } = server;

  // given both servers connected
  const health = await json(`${url}/health`);
  assert.equal(health.body.checks.tools.status, 'ok');
  assert.deepEqual([health.body.checks.tools.mcpServers.web.state, health.body.checks.tools.mcpServers.web.transport], ['connected', 'http']);
  assert.ok(health.body.checks.tools.mcpServers.web.tools.includes('web_record_note'));
  assert.equal(health.body.checks.tools.mcpServers.local.state, 'connected');

  /** Sends `content` to session `id` (created) and waits for the answer; its tool parts. */
  const turn = async (id: string, content: string): Promise<ToolPartView[]> => {
    assert.equal((await json(`${url}/v1/sessions`, { method: 'POST', body: JSON.stringify({ id }) })).status, 201);
    assert.equal((await json(`${url}/v1/sessions/${id}/messages`, { method: 'POST', body: JSON.stringify({ content }) })).status, 202);
    let history: { parts: ToolPartView[] }[] = [];
    await until(async () => {
      history = (await json(`${url}/v1/chat/${id}/messages`)).body;
      return history.length >= 2 && (await json(`${url}/v1/chat/${id}/stream`)).status === 204;
    }, `the answer of ${id}`, server);
    // An MCP tool's part is `dynamic-tool`; a call of a tool nobody has is `tool-<name>`.
    return history.flatMap((m) => m.parts.filter((p) => p.type === 'dynamic-tool' || p.type.startsWith('tool-')));
  };

  // when a turn calls the HTTP server's tool
  const [called] = await turn('over-http', 'call web_record_note {"text":"over http"}');
  // then it reached the server (in its own process) and its answer is the call's output
  assert.deepEqual(readInvocations(webLog).map((i) => [i.tool, i.input, i.pid]), [['web_record_note', { text: 'over http' }, web.child.pid]]);
  assert.deepEqual([called?.toolName, called?.state, called?.output?.content?.[0]?.text], ['web_record_note', 'output-available', 'noted: over http']);

  // when the HTTP server is killed
  await web.kill('SIGKILL');
  // then Arbor notices: /health warns and names it, its tools are withdrawn, the stdio server is still connected
  let after: any;
  await until(async () => (after = (await json(`${url}/health`)).body).checks.tools.status === 'warn', '/health to report the dead server', server);
  assert.match(after.checks.tools.message, /web closed/);
  assert.equal(after.checks.tools.mcpServers.web.state, 'closed');
  assert.deepEqual(after.checks.tools.mcpServers.web.tools, []);
  assert.equal(after.checks.tools.mcpServers.local.state, 'connected');
  assert.match(server.stderr(), /ARBOR_TOOL_SERVER_FAILED|web/);
  // and a call of its tool is answered as not available (not run, nothing reached it), while the stdio tools work
  const [gone] = await turn('after-kill', 'call web_record_note {"text":"too late"}');
  assert.deepEqual([gone?.type, gone?.state], ['tool-web_record_note', 'output-error']);
  assert.match(gone?.errorText ?? '', /not available/);
  assert.equal(readInvocations(webLog).length, 1);
  const [local] = await turn('still-local', 'call lookup {"key":"k"}');
  assert.deepEqual([local?.state, local?.output?.content?.[0]?.text], ['output-available', 'value of k']);
  assert.deepEqual(readInvocations(localLog).map((i) => i.tool), ['lookup']);
});
