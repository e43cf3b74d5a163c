/**
 * SIGKILL of a real `arbor serve` child while a real MCP tool (stdio, built
 * with @modelcontextprotocol/sdk) runs: after the restart the call's outcome
 * is unknown and it is never re-run blindly; a tool safe to repeat is re-run
 * once by retry().
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createArbor, MockProvider, type SessionState } from '../../src/index.ts';
import { startServe, type ServeProcess } from '../helpers/serve-process.ts';
import { mcpTestServerConfig, readInvocations } from '../helpers/mcp-test-server.ts';
import { tempDir } from '../helpers/tmp.ts';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until `check` is true (no time limit of its own: the test runner's timeout bounds it). */
async function until(check: () => boolean | Promise<boolean>, what: string, server?: ServeProcess): Promise<void> {
  for (let i = 0; ; i++) {
    if (await check()) return;
    if (i > 3000) throw new Error(`gave up waiting for ${what}; server stderr:\n${server?.stderr() ?? ''}`);
    await sleep(20);
  }
}

async function json(url: string, init?: RequestInit): Promise<{ status: number; body: any }> {
  const res = await fetch(url, { ...init, headers: { 'content-type': 'application/json' } });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}

function serve(dir: string, config: string): Promise<ServeProcess> {
  return startServe(['--data-dir', join(dir, 'data'), '--config', config], { ARBOR_MOCK_CHUNK_DELAY_MS: '0', ARBOR_MOCK_CHUNKS: '3' });
}

function toolParts(state: SessionState) {
  return state.messages.flatMap((m) => m.parts.filter((p) => p.type === 'tool')) as unknown as { toolName: string; state: string; outcome?: string; errorText?: string }[];
}

test('SIGKILL while an MCP tool runs: the call is unknown after restart, and the invocation count stays 1 across the restart and two retries; an idempotent tool is re-run once by retry()', async () => {
  const { dir, cleanup } = tempDir('arbor-tool-kill-');
  const log = join(dir, 'invocations.log');
  const config = join(dir, 'arbor.json');
  const writeConfig = (slowMs: string) => writeFileSync(config, JSON.stringify({ mcpServers: { test: mcpTestServerConfig(log, { MCP_TEST_SLOW_MS: slowMs }) } }));
  let server: ServeProcess | undefined;
  try {
    writeConfig('600000');
    server = await serve(dir, config);
    const health = await json(`${server.url}/health`);
    assert.equal(health.body.checks.tools.mcpServers.test.state, 'connected');
    // a non-idempotent tool starts, and the server is killed while it runs
    assert.equal((await json(`${server.url}/v1/sessions`, { method: 'POST', body: JSON.stringify({ id: 's1' }) })).status, 201);
    assert.equal((await json(`${server.url}/v1/sessions/s1/messages`, { method: 'POST', body: JSON.stringify({ content: 'call slow_write {"text":"x"}' }) })).status, 202);
    await until(() => readInvocations(log).length === 1, 'the tool to be invoked', server);
    await server.stop('SIGKILL');
    // and an idempotent one, in another session
    writeConfig('600000');
    server = await serve(dir, config);
    assert.equal((await json(`${server.url}/v1/sessions`, { method: 'POST', body: JSON.stringify({ id: 's2' }) })).status, 201);
    assert.equal((await json(`${server.url}/v1/sessions/s2/messages`, { method: 'POST', body: JSON.stringify({ content: 'call slow_lookup {"key":"k"}' }) })).status, 202);
    await until(() => readInvocations(log).length === 2, 'the idempotent tool to be invoked', server);
    await server.stop('SIGKILL');

    // restart (tools answer at once now)
    writeConfig('0');
    server = await serve(dir, config);
    const s1 = await json(`${server.url}/v1/sessions/s1`);
    assert.equal(s1.status, 200);
    assert.ok(s1.body.messages.some((m: { content: string }) => m.content.includes('interrupted')), 'the interrupted notice');
    // nothing streams after the restart: the SDK's resume URL answers 204 for both sessions
    assert.equal((await fetch(`${server.url}/v1/chat/s1/stream`)).status, 204);
    assert.equal((await fetch(`${server.url}/v1/chat/s2/stream`)).status, 204);
    // regenerate (retry) twice
    for (let i = 0; i < 2; i++) {
      assert.equal((await json(`${server.url}/v1/sessions/s1/retry`, { method: 'POST' })).status, 202);
      await until(async () => (await json(`${server!.url}/v1/sessions/s1`)).body.status !== 'streaming', 'the retried answer', server);
    }
    assert.equal(readInvocations(log).filter((i) => i.tool === 'slow_write').length, 1, 'never re-run');
    // the idempotent one is re-run by retry()
    assert.equal((await json(`${server.url}/v1/sessions/s2/retry`, { method: 'POST' })).status, 202);
    await until(() => readInvocations(log).filter((i) => i.tool === 'slow_lookup').length === 2, 'the idempotent re-run', server);
    await until(async () => (await json(`${server!.url}/v1/sessions/s2`)).body.status !== 'streaming', 'the retried answer', server);
    await server.stop('SIGTERM');
    server = undefined;

    // what the journal says (opened without the MCP server)
    const arbor = await createArbor({ dataDir: join(dir, 'data'), llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
    try {
      const st1 = await arbor.session('s1').load();
      const calls1 = toolParts(st1);
      assert.equal(calls1[0]?.outcome, 'unknown');
      assert.equal(calls1[0]?.state, 'output-error');
      assert.match(calls1[0]?.errorText ?? '', /unknown/);
      assert.ok(calls1.slice(1).every((p) => p.state !== 'output-available'), 'no later call of it ran');
      assert.deepEqual(Object.keys(st1.toolCallsInFlight ?? {}), [], 'no started call is left without its finish');
      const st2 = await arbor.session('s2').load();
      const calls2 = toolParts(st2);
      assert.deepEqual(calls2.map((p) => [p.toolName, p.state]), [['slow_lookup', 'output-error'], ['slow_lookup', 'output-available']]);
    } finally {
      await arbor.close();
    }
    assert.equal(readInvocations(log).filter((i) => i.tool === 'slow_write').length, 1);
    assert.equal(readInvocations(log).filter((i) => i.tool === 'slow_lookup').length, 2);
  } finally {
    await server?.stop('SIGKILL');
    cleanup();
  }
});
