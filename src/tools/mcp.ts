import { createMCPClient, type MCPClient, type MCPTransport } from '@ai-sdk/mcp';
import { Experimental_StdioMCPTransport as StdioMCPTransport } from '@ai-sdk/mcp/mcp-stdio';
import { z } from 'zod';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import type { ToolRegistry } from './registry.ts';

/**
 * MCP servers, in the shape MCP clients already use (`mcpServers` in the
 * config file): `{ command, args?, env? }` for a stdio child, `{ url,
 * headers? }` for Streamable HTTP. Each server is connected with
 * `@ai-sdk/mcp`; its tools go into the registry. A server that fails to start
 * or dies is reported (status, the onEvent callback the server logs) and its
 * tools are withdrawn; the others keep working.
 */

export const MCP_SERVER_CONFIG_SCHEMA = z.union([
  z.strictObject({
    command: z.string().min(1),
    args: z.array(z.string()).optional(),
    env: z.record(z.string(), z.string()).optional(),
    cwd: z.string().min(1).optional(),
  }),
  z.strictObject({
    url: z.string().regex(/^https?:\/\//, 'expected an http(s) URL'),
    headers: z.record(z.string(), z.string()).optional(),
  }),
]);

/** One MCP server's configuration. */
export type McpServerConfig = z.infer<typeof MCP_SERVER_CONFIG_SCHEMA>;

const SERVER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

export const MCP_SERVERS_SCHEMA = z.record(z.string().regex(SERVER_NAME, 'server names are 1-64 of A-Z a-z 0-9 _ . -'), MCP_SERVER_CONFIG_SCHEMA);

/**
 * Checks an `mcpServers` value; throws ARBOR_INVALID_INPUT naming the field
 * (`mcpServers.<name>.command`, …). Returns it parsed.
 */
export function parseMcpServers(value: unknown, field = 'mcpServers'): Record<string, McpServerConfig> {
  const r = MCP_SERVERS_SCHEMA.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  // A union names the branch poorly: say what each shape takes.
  const path = [field, ...issue.path.map(String)].join('.');
  const message = issue.code === 'invalid_union' ? 'expected { command, args?, env? } (stdio) or { url, headers? } (Streamable HTTP)' : issue.message;
  throw new ArborError(ErrorCodes.INVALID_INPUT, `invalid ${path}: ${message}`, { field: path });
}

/** Where one server is. */
export interface McpServerStatus {
  readonly state: 'connecting' | 'connected' | 'failed' | 'closed';
  readonly transport: 'stdio' | 'http';
  readonly tools: readonly string[];
  /** why it failed or closed */
  readonly error?: string;
  /** tools another source already had */
  readonly skipped?: readonly string[];
}

/** What the manager reports (the server logs each one). */
export type McpEvent =
  | { type: 'connected'; server: string; tools: string[]; skipped: string[] }
  | { type: 'failed'; server: string; error: string }
  | { type: 'closed'; server: string; withdrawn: string[]; error?: string };

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Errors (or their causes) that say nothing answers at a server's address any more: not an HTTP error, the connection itself. */
const CONNECTION_GONE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'UND_ERR_SOCKET']);

function isConnectionFailure(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && CONNECTION_GONE.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * The fetch of a Streamable HTTP server's transport: a request that cannot
 * reach the server (refused, reset) tells `onGone`. The SDK's transport keeps
 * a GET stream open and reconnects it when it breaks, so a server that dies
 * is noticed within its first reconnection delay (about a second); one
 * without that stream, at the next request.
 */
function watchedFetch(onGone: () => void): typeof fetch {
  return async (input, init) => {
    try {
      return await fetch(input, init);
    } catch (err) {
      if (isConnectionFailure(err)) onGone();
      throw err;
    }
  };
}

/** A transport that tells us when the underlying one closes, before the client hears of it. */
function watched(inner: MCPTransport, onClose: () => void): MCPTransport {
  let clientOnClose: (() => void) | undefined;
  inner.onclose = () => {
    onClose();
    clientOnClose?.();
  };
  return {
    start: () => inner.start(),
    send: (message, options) => inner.send(message, options),
    close: (options) => inner.close(options),
    get onclose() {
      return clientOnClose;
    },
    set onclose(fn) {
      clientOnClose = fn;
    },
    get onerror() {
      return inner.onerror;
    },
    set onerror(fn) {
      inner.onerror = fn;
    },
    get onmessage() {
      return inner.onmessage;
    },
    set onmessage(fn) {
      inner.onmessage = fn;
    },
  };
}

/** The MCP clients of one runtime. */
export class McpServers {
  readonly #registry: ToolRegistry;
  readonly #onEvent: (e: McpEvent) => void;
  readonly #clients = new Map<string, MCPClient>();
  readonly #status = new Map<string, McpServerStatus>();
  #closing = false;

  constructor(registry: ToolRegistry, onEvent: (e: McpEvent) => void = () => {}) {
    this.#registry = registry;
    this.#onEvent = onEvent;
  }

  /** Connects every server at once; resolves when each is connected or failed (never rejects). */
  async connect(servers: Readonly<Record<string, McpServerConfig>>, options: { timeoutMs?: number } = {}): Promise<void> {
    await Promise.all(Object.entries(servers).map(([name, config]) => this.#connectOne(name, config, options.timeoutMs ?? 30_000)));
  }

  async #connectOne(name: string, config: McpServerConfig, timeoutMs: number): Promise<void> {
    const kind = 'command' in config ? 'stdio' : 'http';
    this.#status.set(name, Object.freeze({ state: 'connecting', transport: kind, tools: [] }));
    let connected = false;
    const died = (): void => {
      if (this.#closing || !connected) return;
      connected = false;
      this.#clients.delete(name);
      const withdrawn = this.#registry.withdraw(name);
      this.#status.set(name, Object.freeze({ state: 'closed', transport: kind, tools: [], error: kind === 'http' ? 'the server does not answer any more (connection refused or reset)' : 'the server exited or closed its connection' }));
      this.#onEvent({ type: 'closed', server: name, withdrawn, error: kind === 'http' ? 'the server does not answer any more (connection refused or reset)' : 'the server exited or closed its connection' });
      // An HTTP client would go on trying to reach it; a stdio one is closed already.
      if (kind === 'http') void client?.close().catch(() => {});
    };
    let client: MCPClient | undefined;
    try {
      const transport =
        'command' in config
          ? watched(new StdioMCPTransport({ command: config.command, args: config.args ?? [], env: config.env ?? {}, ...(config.cwd === undefined ? {} : { cwd: config.cwd }) }), died)
          : { type: 'http' as const, url: config.url, ...(config.headers === undefined ? {} : { headers: config.headers }), fetch: watchedFetch(died) };
      const signal = AbortSignal.timeout(timeoutMs);
      client = await createMCPClient({ transport, clientName: 'arbor', initializationOptions: { signal }, onUncaughtError: () => {} });
      const tools = await client.tools();
      if (this.#closing) {
        await client.close();
        return;
      }
      const { added, skipped } = this.#registry.addServer(name, tools);
      this.#clients.set(name, client);
      connected = true;
      this.#status.set(name, Object.freeze({ state: 'connected', transport: kind, tools: Object.freeze(added), ...(skipped.length > 0 ? { skipped: Object.freeze(skipped) } : {}) }));
      this.#onEvent({ type: 'connected', server: name, tools: added, skipped });
    } catch (err) {
      await client?.close().catch(() => {}); // half-open: nothing else to do with it
      const error = messageOf(err);
      this.#status.set(name, Object.freeze({ state: 'failed', transport: kind, tools: [], error }));
      this.#onEvent({ type: 'failed', server: name, error });
    }
  }

  /** Each server's status, by name. */
  status(): Record<string, McpServerStatus> {
    return Object.fromEntries(this.#status);
  }

  /** True when every configured server is connected. */
  get healthy(): boolean {
    for (const s of this.#status.values()) if (s.state !== 'connected') return false;
    return true;
  }

  /** Closes every client (stdio children are ended). */
  async close(): Promise<void> {
    this.#closing = true;
    const clients = [...this.#clients.values()];
    this.#clients.clear();
    await Promise.all(clients.map((c) => c.close().catch(() => {})));
  }
}
