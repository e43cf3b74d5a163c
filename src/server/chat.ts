import type { Context, Hono } from 'hono';
import { createUIMessageStreamResponse, type UIMessageChunk } from 'ai';
import { z } from 'zod';
import { ArborError, assertSessionId, ErrorCodes, type Session, type SessionState, type UIChunk } from '../index.ts';
import { approvalAnswersOf, decideChatApprovals } from './approvals.ts';

/**
 * The AI SDK's chat protocol (ai@6, UI message stream protocol v1) over a
 * session: what `useChat` with `DefaultChatTransport({ api: '<base>/v1/chat' })`
 * talks. See docs/chat-protocol.md.
 *
 * - `POST /v1/chat`: `{ id, messages, trigger, messageId? }` (plus any body
 *   fields, ignored). `submit-message` sends the last (user) message to session
 *   `id`, `regenerate-message` retries the last answer; the answer is that
 *   turn's own UI message stream. A `submit-message` whose last message is
 *   the paused assistant message answers its tool approvals (approvals.ts);
 *   the answer is the resumed turn's stream.
 * - `GET /v1/chat/:id/stream`: 204 when nothing streams, else the running turn
 *   from its first chunk, then live.
 * - `GET /v1/chat/:id/messages`: the history as `UIMessage[]`.
 * - `POST /v1/chat/:id/stop`: ends the running answer, keeping it.
 */

/** What the chat routes need from the app (its closures: tenancy, disk checks, the stream index). */
export interface ChatDeps {
  /** The session of the request's tenant (404 otherwise); `read` loads it first. */
  find(c: Context, use: 'read' | 'write', id?: string): Promise<{ session: Session; state: SessionState }>;
  /** Session `id` for the request's tenant, created on first use (unless the tenant may not create sessions). */
  findOrCreate(c: Context, id: string): Promise<Session>;
  assertWritable(): Promise<void>;
  readJson(c: Context): Promise<unknown>;
  watch(session: Session): void;
  /** Who decides what the request decides (tool approvals): its tenant and token id. */
  decidedBy(c: Context): { tenant?: string; tokenId?: string };
  /** A comment line this often keeps proxies from closing an idle stream. */
  keepAliveMs: number;
}

// The body DefaultChatTransport sends. Parts are checked loosely here (their
// type must be a string): what a part may be depends on the message's role and
// is checked below, naming the field.
const UIPartBody = z.looseObject({ type: z.string().min(1) });
const UIMessageBody = z.looseObject({
  id: z.string().min(1).max(200),
  role: z.enum(['system', 'user', 'assistant']),
  parts: z.array(UIPartBody),
  metadata: z.unknown().optional(),
});
const ChatBody = z.looseObject({
  id: z.string(),
  messages: z.array(UIMessageBody).min(1),
  trigger: z.enum(['submit-message', 'regenerate-message']),
  messageId: z.string().optional(),
});
export type ChatRequestBody = z.infer<typeof ChatBody>;

function invalid(field: string, message: string): ArborError {
  return new ArborError(ErrorCodes.INVALID_INPUT, `invalid request body: ${field}: ${message}`, { field });
}

/** The body, checked: 400 naming the first bad field (`messages.0.parts`, `trigger`, …), before anything is written. */
export function parseChatBody(body: unknown): ChatRequestBody {
  const r = ChatBody.safeParse(body);
  if (!r.success) {
    const issue = r.error.issues[0]!;
    const field = issue.path.length > 0 ? issue.path.join('.') : 'body';
    throw invalid(field, issue.message);
  }
  assertSessionId(r.data.id);
  return r.data;
}

/** The text parts of the user message `messages[index]`: 400 for any other part, or no text at all. */
export function userTextParts(body: ChatRequestBody, index: number): { type: 'text'; text: string }[] {
  const m = body.messages[index]!;
  const field = `messages.${index}`;
  if (m.role !== 'user') throw invalid(`${field}.role`, `the last message of a submit-message must be a user message, got ${JSON.stringify(m.role)}`);
  const parts: { type: 'text'; text: string }[] = [];
  m.parts.forEach((p, j) => {
    if (p.type !== 'text') throw invalid(`${field}.parts.${j}.type`, `only text parts are taken in a user message, got ${JSON.stringify(p.type)}`);
    if (typeof p.text !== 'string') throw invalid(`${field}.parts.${j}.text`, 'expected a string');
    if (p.text.length > 0) parts.push({ type: 'text', text: p.text });
  });
  if (parts.length === 0) throw invalid(`${field}.parts`, 'a user message needs at least one non-empty text part');
  return parts;
}

/** A UI message stream response (SSE, `x-vercel-ai-ui-message-stream: v1`) of `chunks`; `abort` ends the reading when the client goes. */
function streamResponse(chunks: AsyncIterable<UIChunk>, abort: AbortController, keepAliveMs: number): Response {
  const iterator = chunks[Symbol.asyncIterator]();
  const stream = new ReadableStream<UIMessageChunk>({
    async pull(controller) {
      try {
        const next = await iterator.next();
        if (next.done === true) controller.close();
        else controller.enqueue(next.value as unknown as UIMessageChunk);
      } catch (err) {
        controller.error(err);
      }
    },
    async cancel() {
      // The client went away: the turn goes on (it is durable); only this reader stops.
      abort.abort();
      await iterator.return?.();
    },
  });
  return createUIMessageStreamResponse({ stream, keepAliveMs });
}

async function* empty(): AsyncGenerator<UIChunk, void, undefined> {}

/** Aborted when the client disconnects. */
function requestAbort(c: Context): AbortController {
  const abort = new AbortController();
  const signal = c.req.raw.signal;
  if (signal.aborted) abort.abort();
  else signal.addEventListener('abort', () => abort.abort(), { once: true });
  return abort;
}

export function registerChatRoutes(app: Hono<any>, deps: ChatDeps): void {
  app.post('/v1/chat', async (c) => {
    const body = parseChatBody(await deps.readJson(c));
    const last = body.messages.length - 1;
    const abort = requestAbort(c);
    if (body.trigger === 'submit-message' && body.messages[last]!.role === 'assistant') {
      // The SDK after addToolApprovalResponse: the paused answer with its approval responses; the answer goes on.
      const answers = approvalAnswersOf(body.messages[last]!, last);
      const { session } = await deps.find(c, 'read', body.id);
      await deps.assertWritable();
      deps.watch(session);
      const { requestMessageId } = await decideChatApprovals(session, answers, deps.decidedBy(c));
      return streamResponse(requestMessageId === undefined ? empty() : session.answerStream(requestMessageId, { signal: abort.signal }), abort, deps.keepAliveMs);
    }
    if (body.trigger === 'submit-message') {
      const parts = userTextParts(body, last);
      const message = body.messages[last]!;
      await deps.assertWritable();
      const session = await deps.findOrCreate(c, body.id);
      deps.watch(session);
      const r = await session.sendMessageStream({ parts, clientMessageId: message.id, signal: abort.signal });
      return streamResponse(r.stream, abort, deps.keepAliveMs);
    }
    // regenerate-message: the last answer again.
    const { session } = await deps.find(c, 'write', body.id);
    await deps.assertWritable();
    deps.watch(session);
    const r = await session.retryStream({ signal: abort.signal });
    return streamResponse(r.stream, abort, deps.keepAliveMs);
  });

  app.get('/v1/chat/:id/stream', async (c) => {
    const { session } = await deps.find(c, 'read');
    const abort = requestAbort(c);
    const chunks = session.resumeStream({ signal: abort.signal });
    if (chunks === undefined) return c.body(null, 204);
    return streamResponse(chunks, abort, deps.keepAliveMs);
  });

  app.get('/v1/chat/:id/messages', async (c) => {
    const { session } = await deps.find(c, 'read');
    return c.json(session.uiMessages());
  });

  app.post('/v1/chat/:id/stop', async (c) => {
    const { session } = await deps.find(c, 'write');
    await deps.assertWritable();
    const r = await session.stop();
    return c.json({ stopped: r.stopped, messageId: r.messageId ?? null });
  });
}

/** The session id a `POST /v1/chat` body names (for routing to its owner), or undefined when it names none. */
export function chatBodySessionId(body: unknown): string | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const id = (body as { id?: unknown }).id;
  return typeof id === 'string' ? id : undefined;
}

