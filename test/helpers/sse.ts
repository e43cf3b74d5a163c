/** One Server-Sent Event as a client sees it. */
export interface SseEvent {
  id: string | undefined;
  event: string;
  data: string;
}

/**
 * A Server-Sent Events client over fetch: `next()` resolves with the next
 * event (undefined once the stream ended), `close()` drops the connection.
 */
export class SseClient {
  readonly #controller = new AbortController();
  #reader: ReadableStreamDefaultReader<string> | undefined;
  #buffer = '';
  readonly status: Promise<number>;
  #response: Promise<Response>;

  constructor(url: string, headers: Record<string, string> = {}) {
    this.#response = fetch(url, { headers: { accept: 'text/event-stream', ...headers }, signal: this.#controller.signal });
    this.status = this.#response.then((r) => r.status);
  }

  async response(): Promise<Response> {
    return this.#response;
  }

  async next(): Promise<SseEvent | undefined> {
    if (this.#reader === undefined) {
      const res = await this.#response;
      if (res.status !== 200 || res.body === null) throw new Error(`stream answered ${res.status}: ${await res.text()}`);
      this.#reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    }
    for (;;) {
      const end = this.#buffer.indexOf('\n\n');
      if (end >= 0) {
        const block = this.#buffer.slice(0, end);
        this.#buffer = this.#buffer.slice(end + 2);
        const e: SseEvent = { id: undefined, event: 'message', data: '' };
        const data: string[] = [];
        let any = false;
        for (const line of block.split('\n')) {
          if (line.startsWith(':') || line === '') continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          any = true;
          if (field === 'id') e.id = value;
          else if (field === 'event') e.event = value;
          else if (field === 'data') data.push(value);
        }
        if (!any) continue; // a comment (heartbeat)
        e.data = data.join('\n');
        return e;
      }
      let chunk: Awaited<ReturnType<ReadableStreamDefaultReader<string>['read']>>;
      try {
        chunk = await this.#reader.read();
      } catch {
        return undefined; // the connection was cut
      }
      if (chunk.done) return undefined;
      this.#buffer += chunk.value;
    }
  }

  /** Reads until `stop(event)` is true (inclusive) or the stream ends; returns what was read. */
  async until(stop: (e: SseEvent) => boolean): Promise<SseEvent[]> {
    const out: SseEvent[] = [];
    for (;;) {
      const e = await this.next();
      if (e === undefined) return out;
      out.push(e);
      if (stop(e)) return out;
    }
  }

  close(): void {
    this.#controller.abort();
  }
}
