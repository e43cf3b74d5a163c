import type { Context, Hono } from 'hono';
import { z } from 'zod';
import { ArborError, ErrorCodes, isArborError, type Message, type Session, type SessionState, type ToolPart } from '../index.ts';

/** What the approval routes need from the app (the chat routes' deps have it all). */
export interface ApprovalDeps {
  find(c: Context, use: 'read' | 'write', id?: string): Promise<{ session: Session; state: SessionState }>;
  assertWritable(): Promise<void>;
  readJson(c: Context): Promise<unknown>;
  watch(session: Session): void;
  decidedBy(c: Context): DecidedBy;
}

/**
 * Answers to tool approval requests over HTTP (docs/tools.md):
 *
 * - through `POST /v1/chat`: what the AI SDK sends after the client's
 *   `addToolApprovalResponse` (the last message is the paused assistant
 *   message, with tool parts in state `approval-responded` carrying
 *   `approval: { id, approved, reason? }`); see chat.ts;
 * - through `POST /v1/sessions/:id/approvals/:approvalId` and
 *   `GET /v1/sessions/:id/approvals` (the pending ones).
 *
 * Each answer is `session.decidePermission`, journaled as
 * `permission_decided` with who decided (the request's tenant and token id).
 * The same answer sent again (a retried request) decides nothing a second
 * time; the opposite answer to a decided approval is 409.
 */

/** One answer to an approval request. */
export interface ApprovalAnswer {
  readonly approvalId: string;
  readonly approved: boolean;
  readonly reason?: string;
  /** where the request named it (for errors): `messages.3.parts.1.approval.id`, `approvalId` */
  readonly field: string;
}

/** Who decides: the request's tenant and token id. */
export type DecidedBy = { tenant?: string; tokenId?: string };

const ApprovalResponse = z.looseObject({
  id: z.string().min(1).max(200),
  approved: z.boolean(),
  reason: z.string().max(10_000).optional(),
});

function invalid(field: string, message: string): ArborError {
  return new ArborError(ErrorCodes.INVALID_INPUT, `invalid request body: ${field}: ${message}`, { field });
}

function isToolPartType(type: string): boolean {
  return type === 'dynamic-tool' || type.startsWith('tool-');
}

/**
 * The approval answers a chat request's last message carries: its tool parts
 * in state `approval-responded`. 400 naming the field when the last message is
 * an assistant message without any, or an answer is malformed.
 */
export function approvalAnswersOf(message: { role: string; parts: readonly { type: string; [k: string]: unknown }[] }, index: number): ApprovalAnswer[] {
  const out: ApprovalAnswer[] = [];
  message.parts.forEach((p, j) => {
    if (!isToolPartType(p.type) || p.state !== 'approval-responded') return;
    const field = `messages.${index}.parts.${j}.approval`;
    const r = ApprovalResponse.safeParse(p.approval);
    if (!r.success) {
      const issue = r.error.issues[0]!;
      throw invalid([field, ...issue.path.map(String)].join('.'), issue.message);
    }
    out.push({ approvalId: r.data.id, approved: r.data.approved, ...(r.data.reason === undefined ? {} : { reason: r.data.reason }), field: `${field}.id` });
  });
  if (out.length === 0) throw invalid(`messages.${index}.parts`, 'an assistant message last must carry tool approval responses (a tool part in state "approval-responded"); send a user message with submit-message');
  return out;
}

/** The tool part (and its message) that asked for approval `approvalId`, if any. */
function locate(state: SessionState, approvalId: string): { message: Message; part: ToolPart } | undefined {
  for (let i = state.messages.length - 1; i >= 0; i -= 1) {
    const message = state.messages[i]!;
    if (message.role !== 'assistant') continue;
    for (const part of message.parts) if (part.type === 'tool' && part.approval?.id === approvalId) return { message, part };
  }
  return undefined;
}

/**
 * Decides one approval: ARBOR_NO_SUCH_APPROVAL (404) naming the id when the
 * session never asked for it; nothing new when it was already answered the
 * same way (`duplicate`); ARBOR_IDEMPOTENCY_MISMATCH (409) when it was
 * answered the other way. Resolves once the decision is durable.
 */
export async function decideApproval(
  session: Session,
  answer: ApprovalAnswer,
  decidedBy: DecidedBy,
  options: { scope?: 'once' | 'session' | 'always'; expiresAt?: number } = {},
): Promise<{ duplicate: boolean; requestMessageId: string | undefined; seq?: number }> {
  const { approvalId } = answer;
  const noSuch = (): ArborError =>
    new ArborError(ErrorCodes.NO_SUCH_APPROVAL, `session ${session.id} has no tool approval ${JSON.stringify(approvalId)} (${answer.field})`, { sessionId: session.id, field: answer.field, approvalId });
  const found = locate(session.state, approvalId);
  if (found === undefined) throw noSuch();
  const requestOf = (m: Message): string | undefined => (typeof m.metadata?.requestMessageId === 'string' ? m.metadata.requestMessageId : undefined);
  if (session.state.pendingApprovals?.[approvalId] !== undefined) {
    try {
      const { seq } = await session.decidePermission({
        approvalId,
        decision: answer.approved ? 'granted' : 'denied',
        scope: options.scope ?? 'once',
        ...(answer.reason === undefined ? {} : { reason: answer.reason }),
        ...(options.expiresAt === undefined ? {} : { expiresAt: options.expiresAt }),
        decidedBy: { ...(decidedBy.tenant === undefined ? {} : { tenant: decidedBy.tenant }), ...(decidedBy.tokenId === undefined ? {} : { tokenId: decidedBy.tokenId }) },
      });
      return { duplicate: false, requestMessageId: requestOf(found.message), seq };
    } catch (err) {
      // Decided meanwhile (a concurrent retry of this request): judged below like any repeat.
      if (!isArborError(err, ErrorCodes.NO_SUCH_APPROVAL)) throw err;
    }
  }
  const now = locate(session.state, approvalId) ?? found;
  const decided = now.part.approval?.approved;
  if (decided === undefined) throw noSuch();
  if (decided !== answer.approved) {
    throw new ArborError(
      ErrorCodes.IDEMPOTENCY_MISMATCH,
      `session ${session.id}: tool approval ${JSON.stringify(approvalId)} was already ${decided ? 'approved' : 'denied'}; it cannot be ${answer.approved ? 'approved' : 'denied'} now (${answer.field})`,
      { sessionId: session.id, field: answer.field, approvalId, approved: decided },
    );
  }
  return { duplicate: true, requestMessageId: requestOf(now.message) };
}

/**
 * Decides every answer of a chat request in order. Resolves with the request
 * whose answer goes on (the paused answer's request message), for its stream.
 */
export async function decideChatApprovals(session: Session, answers: readonly ApprovalAnswer[], decidedBy: DecidedBy): Promise<{ requestMessageId: string | undefined }> {
  let requestMessageId: string | undefined;
  // Checked first, all of them: an unknown id refuses the request before anything is decided.
  for (const a of answers) {
    if (locate(session.state, a.approvalId) === undefined) await decideApproval(session, a, decidedBy);
  }
  for (const a of answers) requestMessageId = (await decideApproval(session, a, decidedBy)).requestMessageId ?? requestMessageId;
  return { requestMessageId };
}

const DecisionBody = z.strictObject({
  decision: z.enum(['granted', 'denied']),
  scope: z.enum(['once', 'session', 'always']).optional(),
  reason: z.string().max(10_000).optional(),
  expiresAt: z.int().positive().optional(),
});

function parseDecision(body: unknown): z.infer<typeof DecisionBody> {
  const r = DecisionBody.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.length > 0 ? issue.path.join('.') : issue.code === 'unrecognized_keys' ? (issue as { keys: string[] }).keys.join(', ') : 'body';
  throw invalid(field, issue.message);
}

/** The approval routes of /v1/sessions (the chat route's answers are in chat.ts). */
export function registerApprovalRoutes(app: Hono<any>, deps: ApprovalDeps): void {
  app.get('/v1/sessions/:id/approvals', async (c) => {
    const { state } = await deps.find(c, 'read');
    const pending = Object.values(state.pendingApprovals ?? {}).sort((a, b) => a.seq - b.seq);
    return c.json({
      approvals: pending.map((p) => ({ approvalId: p.approvalId, toolCallId: p.toolCallId, messageId: p.messageId, tool: p.tool, input: p.input ?? null, reason: p.reason ?? null, seq: p.seq })),
    });
  });

  app.post('/v1/sessions/:id/approvals/:approvalId', async (c) => {
    const { session } = await deps.find(c, 'read');
    const body = parseDecision(await deps.readJson(c));
    await deps.assertWritable();
    deps.watch(session);
    const approvalId = c.req.param('approvalId');
    const r = await decideApproval(
      session,
      { approvalId, approved: body.decision === 'granted', ...(body.reason === undefined ? {} : { reason: body.reason }), field: 'approvalId' },
      deps.decidedBy(c),
      { ...(body.scope === undefined ? {} : { scope: body.scope }), ...(body.expiresAt === undefined ? {} : { expiresAt: body.expiresAt }) },
    );
    return c.json({ approvalId, decision: body.decision, duplicate: r.duplicate, seq: r.seq ?? null });
  });
}
