import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A local OpenAI-compatible chat-completions server for tests: `POST
 * /v1/chat/completions` answers with a scripted stream of chunks, or fails in a
 * chosen way. It records every request it receives and how each response ended.
 */

/** How the server answers the next requests. */
export interface FakeLlmBehavior {
  /** Text deltas sent in order, one SSE event each. */
  chunks: readonly string[];
  /** Pause before each chunk. */
  chunkDelayMs: number;
  /**
   * - `ok`: every chunk, a final chunk with finish_reason "stop", then `data: [DONE]`.
   * - `http-500`: a JSON error body with status 500, no stream.
   * - `cut`: `cutAfterChunks` chunks, then the socket is destroyed (no finish, no [DONE]).
   * - `malformed`: `cutAfterChunks` chunks, then a `data:` line that is not JSON, then the response ends.
   * - `no-finish`: every chunk, then the response ends cleanly with neither a finish_reason nor [DONE].
   */
  mode: 'ok' | 'http-500' | 'cut' | 'malformed' | 'no-finish';
  /** `cut` and `malformed` only: chunks sent before the failure. */
  cutAfterChunks: number;
  /**
   * After the text chunks, a tool call (its arguments streamed in two halves),
   * finish reason `tool_calls` — only to a request without tool results (the
   * step after the results answers in text). With `cut`, the connection is cut
   * after the first half of the arguments.
   */
  toolCall?: { name: string; arguments: string } | undefined;
  /** `ok`: the finish_reason of the final chunk (default `stop`). */
  finishReason?: string;
  /** `ok`: usage sent with the final chunk (as OpenAI does with stream_options.include_usage). */
  usage?: { prompt_tokens: number; completion_tokens: number };
  /** Reasoning deltas (`reasoning_content`) sent before the text chunks. */
  reasoning?: readonly string[];
}

/** One request as the server received it. */
export interface RecordedRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body (undefined when it was not JSON). */
  body: unknown;
  /** Chunks written before the response ended. */
  chunksSent: number;
  /**
   * `pending` while the response is open; `completed` when the server ended it;
   * `client-closed` when the connection closed before the server was done;
   * `server-cut` when the server destroyed it on purpose (`cut` mode).
   */
  outcome: 'pending' | 'completed' | 'client-closed' | 'server-cut';
  /** Resolves once the response is over, whichever way. */
  settled: Promise<void>;
}

export interface FakeLlmServer {
  /** e.g. `http://127.0.0.1:40123/v1` — what `createOpenAICompatible` takes as baseURL. */
  readonly baseURL: string;
  readonly requests: readonly RecordedRequest[];
  /** Changes how later requests are answered (fields not given keep their value). */
  setBehavior(behavior: Partial<FakeLlmBehavior>): void;
  /** Closes every open connection and the listener. */
  close(): Promise<void>;
}

const DEFAULT_BEHAVIOR: Readonly<FakeLlmBehavior> = Object.freeze({
  chunks: ['Hello', ', ', 'world', '!'],
  chunkDelayMs: 0,
  mode: 'ok',
  cutAfterChunks: 1,
});

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  return Buffer.concat(parts).toString('utf8');
}

function chunkEvent(id: string, model: string, created: number, delta: Record<string, unknown>, finishReason: string | null, usage?: FakeLlmBehavior['usage']): string {
  const payload = {
    id,
    object: 'chat.completion.chunk',
    created,
    model,
    choices: [{ index: 0, delta, finish_reason: finishReason }],
    ...(usage === undefined ? {} : { usage: { ...usage, total_tokens: usage.prompt_tokens + usage.completion_tokens } }),
  };
  return `data: ${JSON.stringify(payload)}\n\n`;
}

/** Starts the server on 127.0.0.1, on a free port. */
export async function startOpenAiCompatibleServer(initial: Partial<FakeLlmBehavior> = {}): Promise<FakeLlmServer> {
  let behavior: FakeLlmBehavior = { ...DEFAULT_BEHAVIOR, ...initial };
  const requests: RecordedRequest[] = [];
  let nextId = 1;

  async function handle(req: IncomingMessage, res: ServerResponse, record: RecordedRequest, markSettled: () => void): Promise<void> {
    // Behaviour is read once per request, so a test may change it between requests.
    const b = behavior;
    const closed = new AbortController();
    res.on('close', () => {
      if (record.outcome === 'pending') record.outcome = res.writableFinished ? 'completed' : 'client-closed';
      closed.abort();
      markSettled();
    });

    const raw = await readBody(req);
    try {
      record.body = JSON.parse(raw);
    } catch {
      record.body = undefined;
    }

    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'not found' } }));
      return;
    }
    if (b.mode === 'http-500') {
      res
        .writeHead(500, { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { message: 'scripted internal error', type: 'server_error', code: 'internal' } }));
      return;
    }

    const body = (record.body ?? {}) as { model?: unknown; stream?: unknown };
    const model = typeof body.model === 'string' ? body.model : 'unknown-model';
    const id = `chatcmpl-${nextId++}`;
    const created = Math.floor(Date.now() / 1000);

    if (body.stream !== true) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({
          id,
          object: 'chat.completion',
          created,
          model,
          choices: [{ index: 0, message: { role: 'assistant', content: b.chunks.join('') }, finish_reason: 'stop' }],
        }),
      );
      return;
    }

    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    const hasResults = Array.isArray((body as { messages?: unknown }).messages) && ((body as { messages: { role?: unknown }[] }).messages).some((m) => m.role === 'tool');
    if (b.toolCall !== undefined && !hasResults) {
      for (let i = 0; i < b.chunks.length; i++) {
        res.write(chunkEvent(id, model, created, i === 0 ? { role: 'assistant', content: b.chunks[i] ?? '' } : { content: b.chunks[i] ?? '' }, null));
        record.chunksSent++;
      }
      const half = Math.floor(b.toolCall.arguments.length / 2);
      res.write(chunkEvent(id, model, created, { tool_calls: [{ index: 0, id: `call_${id}`, type: 'function', function: { name: b.toolCall.name, arguments: b.toolCall.arguments.slice(0, half) } }] }, null));
      record.chunksSent++;
      if (b.mode === 'cut') {
        record.outcome = 'server-cut';
        res.socket?.destroy();
        return;
      }
      res.write(chunkEvent(id, model, created, { tool_calls: [{ index: 0, function: { arguments: b.toolCall.arguments.slice(half) } }] }, null));
      res.write(chunkEvent(id, model, created, {}, 'tool_calls'));
      res.end('data: [DONE]\n\n');
      return;
    }
    const limit = b.mode === 'cut' || b.mode === 'malformed' ? Math.min(b.cutAfterChunks, b.chunks.length) : b.chunks.length;
    for (const text of b.reasoning ?? []) res.write(chunkEvent(id, model, created, { reasoning_content: text }, null));
    for (let i = 0; i < limit; i++) {
      await sleep(b.chunkDelayMs, closed.signal);
      if (closed.signal.aborted) return;
      const delta: Record<string, string> = i === 0 ? { role: 'assistant', content: b.chunks[i] ?? '' } : { content: b.chunks[i] ?? '' };
      res.write(chunkEvent(id, model, created, delta, null));
      record.chunksSent++;
    }
    if (closed.signal.aborted) return;
    switch (b.mode) {
      case 'cut':
        record.outcome = 'server-cut';
        // Destroying the socket (not ending the response) is what a crashed upstream looks like.
        res.socket?.destroy();
        return;
      case 'malformed':
        res.end('data: {"id": this is not json\n\n');
        return;
      case 'no-finish':
        res.end();
        return;
      case 'ok':
        res.write(chunkEvent(id, model, created, {}, b.finishReason ?? 'stop', b.usage));
        res.end('data: [DONE]\n\n');
        return;
    }
  }

  const server = createServer((req, res) => {
    let markSettled!: () => void;
    const settled = new Promise<void>((resolve) => (markSettled = resolve));
    const record: RecordedRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      body: undefined,
      chunksSent: 0,
      outcome: 'pending',
      settled,
    };
    requests.push(record);
    handle(req, res, record, markSettled).catch((err: unknown) => {
      res.destroy(err instanceof Error ? err : new Error(String(err)));
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    setBehavior(next) {
      behavior = { ...behavior, ...next };
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
