/**
 * The tool-call safety policy: which calls may run at once, which wait for an
 * approval, which may be re-run automatically. Pure functions over plain
 * values, so the rules can be read and tested apart from the turn that applies
 * them (sessions/) and from the state that records them (core/).
 *
 * The rules (docs/tools.md states them per failure):
 * - A tool is **safe to repeat** when its MCP annotations say `readOnlyHint`
 *   or `idempotentHint`, or our own definition says `idempotent: true`.
 *   Only such a tool may be re-run by `retry()` without asking.
 * - A tool **needs approval** when its MCP annotations say `destructiveHint:
 *   true`, its definition says `needsApproval` (true, or a function of the
 *   input that answers true), or the configuration lists it.
 * - A call whose outcome is unknown (the process stopped between its start
 *   and its finish) is never re-run blindly: the same tool with the same input
 *   in a retried or regenerated turn is a **repeat**, and a repeat of a tool
 *   that is not safe to repeat needs an explicit approval (or is refused).
 * - A grant answers for later calls: `once` for the one call it was given
 *   for (used up when that call starts), `session` and `always` for every
 *   call of the tool in the session until it expires.
 */

/** What Arbor knows about a tool's effects. */
export interface ToolSafety {
  /** May run again with the same input without a second effect (readOnly/idempotent). */
  readonly idempotent: boolean;
  /** MCP `destructiveHint: true`. */
  readonly destructive: boolean;
  /** Every call waits for an approval (destructive, `needsApproval: true`, or configured). */
  readonly alwaysNeedsApproval: boolean;
}

/** MCP tool annotations, as `@ai-sdk/mcp` puts them into `tool.metadata.annotations`. */
export interface McpAnnotations {
  readonly readOnlyHint?: boolean;
  readonly destructiveHint?: boolean;
  readonly idempotentHint?: boolean;
  readonly openWorldHint?: boolean;
}

/** The fields of a tool definition the policy reads (AI SDK `tool()` plus our `idempotent`). */
export interface ToolSafetyInput {
  readonly idempotent?: unknown;
  readonly needsApproval?: unknown;
  readonly metadata?: unknown;
}

function annotationsOf(metadata: unknown): McpAnnotations {
  if (typeof metadata !== 'object' || metadata === null) return {};
  const a = (metadata as { annotations?: unknown }).annotations;
  return typeof a === 'object' && a !== null ? (a as McpAnnotations) : {};
}

/**
 * The safety of a tool definition. `configuredApproval`: the configuration
 * lists the tool as needing approval. A `needsApproval` function is asked per
 * call (see {@link needsApprovalFor}); here it does not count as "always".
 */
export function safetyOf(tool: ToolSafetyInput, configuredApproval = false): ToolSafety {
  const a = annotationsOf(tool.metadata);
  const destructive = a.destructiveHint === true;
  // readOnlyHint implies no effect at all; an explicit destructiveHint still wins for approval, not for repeating.
  const idempotent = tool.idempotent === true || a.readOnlyHint === true || a.idempotentHint === true;
  const alwaysNeedsApproval = configuredApproval || destructive || tool.needsApproval === true;
  return Object.freeze({ idempotent, destructive, alwaysNeedsApproval });
}

/** Whether this call of the tool needs approval: always-approval tools, or a `needsApproval` function that says so. */
export async function needsApprovalFor(tool: ToolSafetyInput, safety: ToolSafety, input: unknown, options: { toolCallId: string }): Promise<boolean> {
  if (safety.alwaysNeedsApproval) return true;
  if (typeof tool.needsApproval === 'function') {
    return (await (tool.needsApproval as (input: unknown, o: { toolCallId: string; messages: [] }) => boolean | PromiseLike<boolean>)(input, { toolCallId: options.toolCallId, messages: [] })) === true;
  }
  return false;
}

/** JSON text of `value` with object keys sorted: the same input gives the same key whatever its key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v === undefined ? null : v)).join(',')}]`;
  if (typeof value === 'object' && value !== null) {
    const keys = Object.keys(value).filter((k) => (value as Record<string, unknown>)[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson((value as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

/** The permission a tool's grants are recorded under. */
export function toolPermission(toolName: string): string {
  return `tool:${toolName}`;
}

/** One decision on a tool permission, as the state keeps it. */
export interface GrantEntry {
  readonly decision: 'granted' | 'denied';
  readonly scope?: 'once' | 'session' | 'always';
  /** Wall-clock ms after which it no longer answers; absent: no expiry. */
  readonly expiresAt?: number;
  /** A `once` grant answers for this call only. */
  readonly toolCallId?: string;
  /** A `once` grant that a call started under. */
  readonly used?: boolean;
  /** seq of the decision */
  readonly seq: number;
}

/** A call made earlier that a new call may repeat. */
export interface PriorCall {
  readonly toolName: string;
  readonly input: unknown;
  /** `unknown`: it started and never finished (the process stopped). */
  readonly outcome: 'ok' | 'error' | 'unknown' | 'pending' | 'denied';
}

/** What to do with one call the model made. */
export type CallDecision =
  | { readonly action: 'run'; readonly grant?: { readonly permission: string; readonly seq: number } }
  | { readonly action: 'ask'; readonly reason: ApprovalReason }
  | { readonly action: 'refuse'; readonly reason: RefusalReason; readonly message: string };

/** Why a call waits for an approval. */
export type ApprovalReason = 'needs-approval' | 'repeat-of-unknown-outcome' | 'repeat-in-retried-turn';
/** Why a call is refused without running (the code the model and the client see). */
export type RefusalReason = 'denied' | 'repeat-refused';

/** A grant that answers for `toolCallId` now, or undefined (none, denied, expired, used up, for another call). */
export function usableGrant(entry: GrantEntry | undefined, toolCallId: string, now: number): GrantEntry | undefined {
  if (entry === undefined || entry.decision !== 'granted') return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= now) return undefined;
  if ((entry.scope ?? 'once') === 'once') {
    if (entry.used === true) return undefined;
    if (entry.toolCallId !== undefined && entry.toolCallId !== toolCallId) return undefined;
  }
  return entry;
}

/** A standing denial (session/always scope, not expired) for the tool. */
function standingDenial(entry: GrantEntry | undefined, now: number): boolean {
  if (entry === undefined || entry.decision !== 'denied') return false;
  if (entry.expiresAt !== undefined && entry.expiresAt <= now) return false;
  return entry.scope === 'session' || entry.scope === 'always';
}

/** The earlier call this one repeats (same tool, same input), if any. */
export function repeatOf(call: { toolName: string; input: unknown }, prior: readonly PriorCall[]): PriorCall | undefined {
  const key = canonicalJson(call.input);
  for (const p of prior) if (p.toolName === call.toolName && p.outcome !== 'denied' && canonicalJson(p.input) === key) return p;
  return undefined;
}

/**
 * What to do with a call: run it, ask for an approval, or refuse it.
 *
 * `prior` are the calls a re-run could repeat: those of the turn being retried
 * or regenerated, and every call of the session whose outcome is unknown.
 * `grant` is the tool's latest decision (see {@link toolPermission}).
 * `refuseRepeats`: a repeat that would need approval is refused outright
 * (`repeat-refused`) instead of waiting, for sessions nobody can approve in.
 */
export function decideCall(input: {
  toolName: string;
  toolCallId: string;
  callInput: unknown;
  safety: ToolSafety;
  needsApproval: boolean;
  prior: readonly PriorCall[];
  grant: GrantEntry | undefined;
  now: number;
  refuseRepeats?: boolean;
}): CallDecision {
  const { toolName, toolCallId, safety, grant, now } = input;
  const permission = toolPermission(toolName);
  if (standingDenial(grant, now)) return Object.freeze({ action: 'refuse', reason: 'denied', message: `tool ${toolName} is denied in this session` });
  const repeated = safety.idempotent ? undefined : repeatOf({ toolName, input: input.callInput }, input.prior);
  const usable = usableGrant(grant, toolCallId, now);
  // A `once` grant given for another call never answers for a repeat: the repeat needs its own.
  const answers = usable !== undefined && (repeated === undefined || usable.scope === 'session' || usable.scope === 'always' || usable.toolCallId === toolCallId);
  if (repeated !== undefined && !answers) {
    const reason: ApprovalReason = repeated.outcome === 'unknown' || repeated.outcome === 'pending' ? 'repeat-of-unknown-outcome' : 'repeat-in-retried-turn';
    if (input.refuseRepeats === true) {
      return Object.freeze({ action: 'refuse', reason: 'repeat-refused', message: `tool ${toolName} was already called with this input (${reason}); it is not safe to repeat and was not run again` });
    }
    return Object.freeze({ action: 'ask', reason });
  }
  if (input.needsApproval && !answers) return Object.freeze({ action: 'ask', reason: 'needs-approval' });
  if (answers && usable !== undefined && (input.needsApproval || repeated !== undefined)) return Object.freeze({ action: 'run', grant: Object.freeze({ permission, seq: usable.seq }) });
  return Object.freeze({ action: 'run' });
}

/** Whether `retry()` may run this call again by itself after its outcome was lost. */
export function mayRerunAutomatically(safety: ToolSafety): boolean {
  return safety.idempotent && !safety.alwaysNeedsApproval;
}
