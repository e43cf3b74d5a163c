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
 *
 * MCP_TEST_TOOL_PREFIX, when set, is put before every tool name (two of these
 * servers in one config then have no clashing names). With MCP_TEST_HTTP=1 the
 * same tools are served over Streamable HTTP (StreamableHTTPServerTransport on
 * node:http, stateful, at `/mcp`) instead of stdio: see
 * {@link startMcpHttpTestServer}.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
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

/** A Streamable HTTP MCP server child ({@link startMcpHttpTestServer}). */
export interface McpHttpTestServer {
  /** e.g. `http://127.0.0.1:40123/mcp`: the `url` of an `mcpServers` entry */
  readonly url: string;
  readonly child: ChildProcess;
  /** Ends the child (SIGKILL: a crash) and waits for its exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts this server over Streamable HTTP in a child process, on a free port of 127.0.0.1. */
export async function startMcpHttpTestServer(logFile: string, env: Record<string, string> = {}): Promise<McpHttpTestServer> {
  const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), fileURLToPath(import.meta.url)], {
    env: { ...process.env, MCP_TEST_LOG: logFile, MCP_TEST_HTTP: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      const m = /MCP_TEST_URL (\S+)/.exec(out);
      if (m !== null) resolve(m[1]!);
    });
    child.once('exit', (code, signal) => reject(new Error(`the MCP HTTP test server exited (${code ?? signal}) before it listened; stderr:\n${stderr}`)));
  });
  return {
    url,
    child,
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}

async function main(): Promise<void> {
  const { McpServer } = await import('@modelcontextprotocol/sdk/server/mcp.js');
  const { StdioServerTransport } = await import('@modelcontextprotocol/sdk/server/stdio.js');
  const { z } = await import('zod');
  const prefix = process.env.MCP_TEST_TOOL_PREFIX ?? '';
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

  const makeServer = () => {
    const server = new McpServer({ name: 'arbor-test-mcp', version: '1.0.0' });
    server.registerTool(`${prefix}record_note`, { description: 'Records a note (has an effect each time).', inputSchema: { text: z.string() } }, async ({ text: t }) => {
      record(`${prefix}record_note`, { text: t });
      return text(`noted: ${t}`);
    });
    server.registerTool(`${prefix}lookup`, { description: 'Looks a key up (idempotent).', inputSchema: { key: z.string() }, annotations: { idempotentHint: true } }, async ({ key }) => {
      record(`${prefix}lookup`, { key });
      return text(`value of ${key}`);
    });
    server.registerTool(`${prefix}delete_item`, { description: 'Deletes an item (destructive).', inputSchema: { id: z.string() }, annotations: { destructiveHint: true } }, async ({ id }) => {
      record(`${prefix}delete_item`, { id });
      return text(`deleted ${id}`);
    });
    server.registerTool(`${prefix}slow_write`, { description: 'Writes slowly (has an effect).', inputSchema: { text: z.string() } }, async ({ text: t }) => {
      record(`${prefix}slow_write`, { text: t });
      await new Promise((r) => setTimeout(r, slowMs));
      return text(`written: ${t}`);
    });
    server.registerTool(`${prefix}slow_lookup`, { description: 'Looks up slowly (idempotent).', inputSchema: { key: z.string() }, annotations: { idempotentHint: true } }, async ({ key }) => {
      record(`${prefix}slow_lookup`, { key });
      await new Promise((r) => setTimeout(r, process.env.MCP_TEST_SLOW_LOOKUP_MS === undefined ? slowMs : Number(process.env.MCP_TEST_SLOW_LOOKUP_MS)));
      return text(`value of ${key}`);
    });
    server.registerTool(`${prefix}fail`, { description: 'Always fails.', inputSchema: {} }, async () => {
      record(`${prefix}fail`, {});
      return { ...text('this tool always fails'), isError: true };
    });
    return server;
  };
  if (process.env.MCP_TEST_HTTP === '1') {
    // Streamable HTTP, stateful: one transport (and server) per MCP session, found by its mcp-session-id header.
    const { StreamableHTTPServerTransport } = await import('@modelcontextprotocol/sdk/server/streamableHttp.js');
    const { createServer } = await import('node:http');
    const transports = new Map<string, InstanceType<typeof StreamableHTTPServerTransport>>();
    const http = createServer((req, res) => {
      void (async () => {
        const sid = req.headers['mcp-session-id'];
        let transport = typeof sid === 'string' ? transports.get(sid) : undefined;
        if (transport === undefined) {
          if (typeof sid === 'string') return void res.writeHead(404).end('no such MCP session');
          const created: InstanceType<typeof StreamableHTTPServerTransport> = new StreamableHTTPServerTransport({ sessionIdGenerator: () => randomUUID(), onsessioninitialized: (id) => void transports.set(id, created) });
          transport = created;
          await makeServer().connect(transport);
        }
        await transport.handleRequest(req, res);
      })().catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500).end(String(err));
      });
    });
    http.listen(0, '127.0.0.1', () => {
      const { port } = http.address() as { port: number };
      process.stdout.write(`MCP_TEST_URL http://127.0.0.1:${port}/mcp\n`);
    });
    return;
  }
  // Arbor gone (stdin closed): exit, as MCP stdio servers do.
  process.stdin.on('end', () => process.exit(0));
  await makeServer().connect(new StdioServerTransport());
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    process.stderr.write(`mcp-test-server: ${String((err as Error)?.stack ?? err)}\n`);
    process.exit(1);
  });
}
