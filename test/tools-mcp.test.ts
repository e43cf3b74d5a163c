import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { McpServers, parseMcpServers, type McpEvent } from '../src/tools/mcp.ts';
import { ToolRegistry } from '../src/tools/registry.ts';
import { mcpTestServerConfig, readInvocations } from './helpers/mcp-test-server.ts';
import { tempDir } from './helpers/tmp.ts';

test('MCP over stdio: a real server\'s tools are registered with their hints; a server that fails to start is reported, one that dies is withdrawn, the others keep working', async () => {
  const { dir, cleanup } = tempDir();
  const registry = new ToolRegistry();
  const events: McpEvent[] = [];
  let closed: (() => void) | undefined;
  const closedOnce = new Promise<void>((r) => (closed = r));
  const servers = new McpServers(registry, (e) => {
    events.push(e);
    if (e.type === 'closed') closed?.();
  });
  try {
    const log1 = join(dir, 'one.log');
    // given two working servers (the second with its own names clashing with the first) and one that cannot start
    await servers.connect({
      one: mcpTestServerConfig(log1),
      broken: { command: join(dir, 'no-such-binary') },
    });
    // then
    const status = servers.status();
    assert.equal(status.one?.state, 'connected');
    assert.deepEqual([...status.one!.tools].sort(), ['delete_item', 'fail', 'lookup', 'record_note', 'slow_lookup', 'slow_write']);
    assert.equal(status.broken?.state, 'failed');
    assert.ok(events.some((e) => e.type === 'failed' && e.server === 'broken'));
    assert.equal(servers.healthy, false);
    assert.equal(registry.get('lookup')?.safety.idempotent, true);
    assert.equal(registry.get('record_note')?.safety.idempotent, false);
    assert.equal(registry.get('delete_item')?.safety.alwaysNeedsApproval, true);
    assert.equal(registry.get('lookup')?.dynamic, true);
    assert.equal('execute' in registry.definitions().lookup!, false, 'the model sees no execute');

    // when a tool runs
    const out = await registry.get('record_note')!.tool.execute!({ text: 'hi' }, { toolCallId: 't1', messages: [] });
    assert.equal((out as { content: { text: string }[] }).content[0]!.text, 'noted: hi');
    const [inv] = readInvocations(log1);
    assert.equal(inv?.tool, 'record_note');

    // and the server dies
    process.kill(inv!.pid, 'SIGKILL');
    await closedOnce;
    // then its tools are withdrawn and it is reported
    assert.equal(registry.get('record_note'), undefined);
    assert.equal(servers.status().one?.state, 'closed');
    assert.ok(events.some((e) => e.type === 'closed' && e.server === 'one' && e.withdrawn.includes('lookup')));
  } finally {
    await servers.close();
    cleanup();
  }
});

test('mcpServers config: stdio and Streamable HTTP shapes; a bad entry names its field', () => {
  assert.deepEqual(parseMcpServers({ a: { command: 'x', args: ['1'], env: { K: 'v' } }, b: { url: 'https://h/mcp', headers: { Authorization: 'Bearer t' } } }), {
    a: { command: 'x', args: ['1'], env: { K: 'v' } },
    b: { url: 'https://h/mcp', headers: { Authorization: 'Bearer t' } },
  });
  for (const [value, field] of [
    [{ a: { args: ['x'] } }, 'mcpServers.a'],
    [{ a: { url: 'ftp://x' } }, 'mcpServers.a.url'],
    [{ 'bad name!': { command: 'x' } }, 'mcpServers.bad name!'],
    [[], 'mcpServers'],
  ] as const) {
    assert.throws(() => parseMcpServers(value), (err: { code?: string; details?: { field?: string } }) => err.code === 'ARBOR_INVALID_INPUT' && err.details?.field === field, JSON.stringify(value));
  }
});
