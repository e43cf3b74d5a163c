import { randomUUID } from 'node:crypto';
import { createArbor, isArborError, type Arbor, type Session, type SessionPage, type SessionUpdate } from '../index.ts';
import { toArborOptions, type ArborConfig } from '../server.ts';

/**
 * What `arbor chat` and `arbor sessions` talk to: a running server over HTTP
 * (`--url`, bearer token from ARBOR_TOKEN), or a data directory opened in
 * this process (when no server holds it). Both give the same view.
 */

/** A message as the chat shows it. */
export interface ChatMessage {
  role: string;
  content: string;
}

/** What the chat prints while a session changes. */
export type ChatUpdate =
  | { kind: 'started' }
  | { kind: 'chunk'; text: string }
  | { kind: 'completed' }
  | { kind: 'interrupted'; reason: string }
  | { kind: 'notice'; content: string };

export interface ChatTarget {
  /** e.g. `http://127.0.0.1:4000` or `data directory ./data` */
  readonly where: string;
  /** Opens the session (creating it when missing) and starts delivering updates; resolves with its messages. */
  open(onUpdate: (u: ChatUpdate) => void): Promise<ChatMessage[]>;
  history(): Promise<ChatMessage[]>;
  /** Resolves once the message is durable; the answer then streams as updates. */
  send(content: string): Promise<void>;
  retry(): Promise<void>;
  /** `stopped`: a running answer was ended (kept as it stood); `idle`: nothing was streaming; `unsupported`: a server without the stop route. */
  stop(): Promise<'stopped' | 'idle' | 'unsupported'>;
  close(): Promise<void>;
}

/** A failure of the client with the server's code, when it sent one. */
export class ClientError extends Error {
  constructor(message: string, readonly code: string | undefined, readonly status: number | undefined) {
    super(message);
  }
}

function viewMessages(messages: readonly { role: string; content: string }[]): ChatMessage[] {
  return messages.map((m) => ({ role: m.role, content: m.content }));
}

// ---- in this process, on a data directory ------------------------------------

/** Opens Arbor on the configuration's data directory (or database) for one CLI command. */
export async function openLocal(config: Readonly<ArborConfig>): Promise<Arbor> {
  return createArbor(toArborOptions(config).options);
}

export class LocalTarget implements ChatTarget {
  readonly where: string;
  #session: Session | undefined;
  #unsubscribe: (() => void) | undefined;

  constructor(readonly arbor: Arbor, readonly sessionId: string, where: string) {
    this.where = where;
  }

  async open(onUpdate: (u: ChatUpdate) => void): Promise<ChatMessage[]> {
    const session = this.arbor.session(this.sessionId);
    this.#session = session;
    const state = await session.load();
    this.#unsubscribe = session.subscribe((u: SessionUpdate) => {
      if (u.kind === 'chunk') onUpdate({ kind: 'chunk', text: u.chunk.text });
      else if (u.kind === 'event') {
        const data = u.event.data as { reason?: string; content?: string };
        if (u.event.type === 'assistant_stream_started') onUpdate({ kind: 'started' });
        else if (u.event.type === 'assistant_response_completed') onUpdate({ kind: 'completed' });
        else if (u.event.type === 'stream_interrupted') onUpdate({ kind: 'interrupted', reason: String(data.reason) });
        else if (u.event.type === 'system_notice_added') onUpdate({ kind: 'notice', content: String(data.content) });
      }
    });
    return viewMessages(state.messages);
  }

  async history(): Promise<ChatMessage[]> {
    return viewMessages((await this.#session!.load()).messages);
  }

  async send(content: string): Promise<void> {
    await this.#session!.sendMessage({ content, clientMessageId: randomUUID() });
  }

  async retry(): Promise<void> {
    await this.#session!.retry();
  }

  async stop(): Promise<'stopped' | 'idle' | 'unsupported'> {
    if (this.#session === undefined) return 'idle';
    return (await this.#session.stop()).stopped ? 'stopped' : 'idle';
  }

  async close(): Promise<void> {
    this.#unsubscribe?.();
    await this.#session?.idle().catch(() => undefined);
    await this.arbor.close();
  }
}

// ---- over HTTP -------------------------------------------------------------------

/** A fetch against the server with the bearer token; an error answer becomes a ClientError with its code. */
export class HttpClient {
  constructor(readonly url: string, readonly token: string | undefined) {}

  headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.token === undefined ? {} : { authorization: `Bearer ${this.token}` }), ...extra };
  }

  async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, { method, headers: this.headers(body === undefined ? {} : { 'content-type': 'application/json' }), ...(body === undefined ? {} : { body: JSON.stringify(body) }), ...(signal === undefined ? {} : { signal }) });
    } catch (err) {
      throw new ClientError(`cannot reach the server at ${this.url}: ${(err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message}; is \`arbor serve\` running there?`, undefined, undefined);
    }
    return res;
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.request(method, path, body);
    const text = await res.text();
    if (!res.ok) throw errorOf(res.status, text, `${method} ${path}`);
    return (text === '' ? {} : JSON.parse(text)) as T;
  }
}

function errorOf(status: number, text: string, what: string): ClientError {
  let code: string | undefined;
  let message = text.slice(0, 300);
  try {
    const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
    code = body.error?.code;
    message = body.error?.message ?? message;
  } catch {
    // not JSON: the text itself
  }
  if (status === 401) message += ' (set ARBOR_TOKEN to a token the server knows)';
  return new ClientError(`${what}: ${status} ${code ?? ''} ${message}`.replace(/ +/g, ' '), code, status);
}

export class HttpTarget implements ChatTarget {
  readonly where: string;
  readonly #client: HttpClient;
  readonly #abort = new AbortController();
  #reading: Promise<void> | undefined;

  constructor(client: HttpClient, readonly sessionId: string) {
    this.#client = client;
    this.where = client.url;
  }

  #path(suffix = ''): string {
    return `/v1/sessions/${encodeURIComponent(this.sessionId)}${suffix}`;
  }

  async open(onUpdate: (u: ChatUpdate) => void): Promise<ChatMessage[]> {
    const found = await this.#client.request('GET', this.#path());
    if (found.status === 404) {
      await found.body?.cancel();
      await this.#client.json('POST', '/v1/sessions', { id: this.sessionId });
    } else if (!found.ok) throw errorOf(found.status, await found.text(), `GET ${this.#path()}`);
    else await found.body?.cancel();
    const res = await this.#client.request('GET', this.#path('/stream'), undefined, this.#abort.signal);
    if (!res.ok || res.body === null) throw errorOf(res.status, await res.text(), `GET ${this.#path('/stream')}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let first: ((messages: ChatMessage[]) => void) | undefined;
    const initial = new Promise<ChatMessage[]>((resolve) => (first = resolve));
    const deliver = (event: string, data: string): void => {
      const d = JSON.parse(data) as { data?: { reason?: string; content?: string }; text?: string; messages?: ChatMessage[] };
      if (event === 'state') first?.(viewMessages(d.messages ?? []));
      else if (event === 'chunk') onUpdate({ kind: 'chunk', text: String(d.text) });
      else if (event === 'assistant_stream_started') onUpdate({ kind: 'started' });
      else if (event === 'assistant_response_completed') onUpdate({ kind: 'completed' });
      else if (event === 'stream_interrupted') onUpdate({ kind: 'interrupted', reason: String(d.data?.reason) });
      else if (event === 'system_notice_added') onUpdate({ kind: 'notice', content: String(d.data?.content) });
    };
    this.#reading = (async () => {
      let buffer = '';
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffer += value;
          for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let event = 'message';
            const data: string[] = [];
            for (const line of block.split('\n')) {
              if (line.startsWith('event:')) event = line.slice(6).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            }
            if (data.length > 0) deliver(event, data.join('\n'));
          }
        }
      } catch {
        // aborted on close, or the server went away
      }
      if (!this.#abort.signal.aborted) onUpdate({ kind: 'notice', content: `the server at ${this.where} closed the stream` });
    })();
    return initial;
  }

  async history(): Promise<ChatMessage[]> {
    return viewMessages((await this.#client.json<{ messages: ChatMessage[] }>('GET', this.#path())).messages);
  }

  async send(content: string): Promise<void> {
    await this.#client.json('POST', this.#path('/messages'), { content, clientMessageId: randomUUID() });
  }

  async retry(): Promise<void> {
    await this.#client.json('POST', this.#path('/retry'));
  }

  async stop(): Promise<'stopped' | 'idle' | 'unsupported'> {
    // POST /v1/chat/:id/stop answers {stopped}; a server older than the route answers 404 ARBOR_NOT_FOUND.
    const res = await this.#client.request('POST', `/v1/chat/${encodeURIComponent(this.sessionId)}/stop`);
    const text = await res.text();
    if (res.status === 404 && text.includes('ARBOR_NOT_FOUND')) return 'unsupported';
    if (!res.ok) throw errorOf(res.status, text, 'stop');
    return (JSON.parse(text) as { stopped?: unknown }).stopped === true ? 'stopped' : 'idle';
  }

  async close(): Promise<void> {
    this.#abort.abort();
    await this.#reading;
  }
}

/** One page of sessions, from a server (GET /v1/sessions) or a data directory (arbor.sessions). */
export async function listSessions(target: { client: HttpClient } | { arbor: Arbor }, options: { limit?: number; cursor?: string }): Promise<SessionPage> {
  if ('arbor' in target) return target.arbor.sessions({ ...(options.limit === undefined ? {} : { limit: options.limit }), ...(options.cursor === undefined ? {} : { cursor: options.cursor }) });
  const query = new URLSearchParams();
  if (options.limit !== undefined) query.set('limit', String(options.limit));
  if (options.cursor !== undefined) query.set('cursor', options.cursor);
  const q = query.toString();
  return target.client.json<SessionPage>('GET', `/v1/sessions${q === '' ? '' : `?${q}`}`);
}

/** True when `err` says another process holds the data directory. */
export function isLocked(err: unknown): boolean {
  return isArborError(err, 'ARBOR_LOCKED');
}
