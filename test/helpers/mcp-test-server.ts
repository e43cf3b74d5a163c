/**
 * A real MCP server over stdio, built with @modelcontextprotocol/sdk, for the
 * tool tests. Run as a child process (see {@link mcpTestServerConfig}); every
 * tool call is appended to the file named by MCP_TEST_LOG (one JSON line,
 * fsynced before the tool answers), so a test can count invocations across
 * Arbor restarts.
 *
 * Tools:
 * - `record_note` ({ text }): not safe to repeat (no hints): records and answers `noted: <text>`.
 * - `lookup` ({ key }): `idempotentHint: true`: records and answers `value of <key>`.
 * - `delete_item` ({ id }): `destructiveHint: true`: records and answers `deleted <id>`.
 * - `slow_write` ({ text }): not safe to repeat: records FIRST, then waits
 *   MCP_TEST_SLOW_MS (default 60 s) before answering: the window in which a
 *   test SIGKILLs the Arbor server.
 * - `slow_lookup` ({ key }): `idempotentHint: true`, records first, then waits
 *   MCP_TEST_SLOW_LOOKUP_MS (default MCP_TEST_SLOW_MS).
 * - `fail` ({}): answers an MCP tool error (isError).
 */
import { appendFileSync, openSync, fsyncSync, closeSync, readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** One recorded invocation. */
export interface Invocation {
  tool: string;
  input: unknown;
  pid: number;
}

/** The invocations recorded in `logFile` so far. */
export function readInvocations(logFile: string): Invocation[] {
  if (!existsSync(logFile)) return [];
  return readFileSync(logFile, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Invocation);
}

/** The `mcpServers` entry that starts this server as a stdio child. */
export function mcpTestServerConfig(logFile: string, env: Record<string, string> = {}): { command: string; args: string[]; env: Record<string, string> } {
  return {
    command: process.execPath,
    args: ['--import', import.meta.resolve('tsx'), fileURLToPath(import.meta.url)],
    env: { MCP_TEST_LOG: logFile, ...env },
  };
}

async function main(): Promise<void> {
  const { McpServer } = await import('@modelcontextprotocol/sdk/server/mcp.js');
  const { StdioServerTransport } = await import('@modelcontextprotocol/sdk/server/stdio.js');
  const { z } = await import('zod');
  const logFile = process.env.MCP_TEST_LOG;
  if (logFile === undefined || logFile === '') throw new Error('MCP_TEST_LOG is not set');
  const slowMs = Number(process.env.MCP_TEST_SLOW_MS ?? '60000');

  const record = (tool: string, input: unknown): void => {
    appendFileSync(logFile, `${JSON.stringify({ tool, input, pid: process.pid })}\n`);
    const fd = openSync(logFile, 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  };
  const text = (t: string) => ({ content: [{ type: 'text' as const, text: t }] });

  const server = new McpServer({ name: 'arbor-test-mcp', version: '1.0.0' });
  server.registerTool('record_note', { description: 'Records a note (has an effect each time).', inputSchema: { text: z.string() } }, async ({ text: t }) => {
    record('record_note', { text: t });
    return text(`noted: ${t}`);
  });
  server.registerTool('lookup', { description: 'Looks a key up (idempotent).', inputSchema: { key: z.string() }, annotations: { idempotentHint: true } }, async ({ key }) => {
    record('lookup', { key });
    return text(`value of ${key}`);
  });
  server.registerTool('delete_item', { description: 'Deletes an item (destructive).', inputSchema: { id: z.string() }, annotations: { destructiveHint: true } }, async ({ id }) => {
    record('delete_item', { id });
    return text(`deleted ${id}`);
  });
  server.registerTool('slow_write', { description: 'Writes slowly (has an effect).', inputSchema: { text: z.string() } }, async ({ text: t }) => {
    record('slow_write', { text: t });
    await new Promise((r) => setTimeout(r, slowMs));
    return text(`written: ${t}`);
  });
  server.registerTool('slow_lookup', { description: 'Looks up slowly (idempotent).', inputSchema: { key: z.string() }, annotations: { idempotentHint: true } }, async ({ key }) => {
    record('slow_lookup', { key });
    await new Promise((r) => setTimeout(r, process.env.MCP_TEST_SLOW_LOOKUP_MS === undefined ? slowMs : Number(process.env.MCP_TEST_SLOW_LOOKUP_MS)));
    return text(`value of ${key}`);
  });
  server.registerTool('fail', { description: 'Always fails.', inputSchema: {} }, async () => {
    record('fail', {});
    return { ...text('this tool always fails'), isError: true };
  });
  // Arbor gone (stdin closed): exit, as MCP stdio servers do.
  process.stdin.on('end', () => process.exit(0));
  await server.connect(new StdioServerTransport());
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    process.stderr.write(`mcp-test-server: ${String((err as Error)?.stack ?? err)}\n`);
    process.exit(1);
  });
}
