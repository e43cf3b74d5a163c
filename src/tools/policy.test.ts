import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalJson, decideCall, mayRerunAutomatically, needsApprovalFor, repeatOf, safetyOf, usableGrant, type GrantEntry, type PriorCall } from './policy.ts';

const NOW = 1_000_000;
const plain = safetyOf({});
const idem = safetyOf({ idempotent: true });

function decide(over: Partial<Parameters<typeof decideCall>[0]> = {}) {
  return decideCall({ toolName: 'write', toolCallId: 'c2', callInput: { a: 1 }, safety: plain, needsApproval: false, prior: [], grant: undefined, now: NOW, ...over });
}

test('safetyOf: MCP readOnlyHint / idempotentHint and our idempotent: true are safe to repeat; destructiveHint needs approval', () => {
  assert.deepEqual({ ...safetyOf({ metadata: { annotations: { readOnlyHint: true } } }) }, { idempotent: true, destructive: false, alwaysNeedsApproval: false });
  assert.equal(safetyOf({ metadata: { annotations: { idempotentHint: true } } }).idempotent, true);
  assert.equal(safetyOf({ idempotent: true }).idempotent, true);
  assert.equal(safetyOf({ idempotent: 'yes' }).idempotent, false, 'only true counts');
  assert.equal(safetyOf({ metadata: { annotations: { readOnlyHint: false } } }).idempotent, false);
  const destructive = safetyOf({ metadata: { annotations: { destructiveHint: true } } });
  assert.deepEqual([destructive.destructive, destructive.alwaysNeedsApproval, destructive.idempotent], [true, true, false]);
  assert.equal(safetyOf({ needsApproval: true }).alwaysNeedsApproval, true);
  assert.equal(safetyOf({}, true).alwaysNeedsApproval, true, 'configured');
  assert.equal(safetyOf({ needsApproval: () => true }).alwaysNeedsApproval, false, 'a function is asked per call');
});

test('needsApprovalFor asks a needsApproval function with the input', async () => {
  const t = { needsApproval: (input: unknown) => (input as { amount: number }).amount > 100 };
  const s = safetyOf(t);
  assert.equal(await needsApprovalFor(t, s, { amount: 5 }, { toolCallId: 'x' }), false);
  assert.equal(await needsApprovalFor(t, s, { amount: 500 }, { toolCallId: 'x' }), true);
  assert.equal(await needsApprovalFor({}, safetyOf({}, true), {}, { toolCallId: 'x' }), true);
});

test('mayRerunAutomatically: only a safe-to-repeat tool that needs no approval', () => {
  assert.equal(mayRerunAutomatically(idem), true);
  assert.equal(mayRerunAutomatically(plain), false);
  assert.equal(mayRerunAutomatically(safetyOf({ idempotent: true, needsApproval: true })), false);
});

test('canonicalJson ignores key order and undefined properties', () => {
  assert.equal(canonicalJson({ b: 1, a: [1, { d: 2, c: 3 }], u: undefined }), canonicalJson({ a: [1, { c: 3, d: 2 }], b: 1 }));
  assert.notEqual(canonicalJson({ a: 1 }), canonicalJson({ a: '1' }));
});

test('repeatOf: same tool and same input, a denied call is no repeat', () => {
  const prior: PriorCall[] = [{ toolName: 'write', input: { a: 1 }, outcome: 'denied' }, { toolName: 'write', input: { a: 2 }, outcome: 'unknown' }];
  assert.equal(repeatOf({ toolName: 'write', input: { a: 1 } }, prior), undefined);
  assert.equal(repeatOf({ toolName: 'write', input: { a: 2 } }, prior)?.outcome, 'unknown');
  assert.equal(repeatOf({ toolName: 'other', input: { a: 2 } }, prior), undefined);
});

test('decideCall: a plain call runs; one that needs approval asks', () => {
  assert.deepEqual(decide(), { action: 'run' });
  assert.deepEqual(decide({ needsApproval: true }), { action: 'ask', reason: 'needs-approval' });
});

test('decideCall: a repeat of a call with unknown outcome asks, or is refused with a coded reason; an idempotent tool runs', () => {
  const prior: PriorCall[] = [{ toolName: 'write', input: { a: 1 }, outcome: 'unknown' }];
  assert.deepEqual(decide({ prior }), { action: 'ask', reason: 'repeat-of-unknown-outcome' });
  const refused = decide({ prior, refuseRepeats: true });
  assert.equal(refused.action, 'refuse');
  assert.equal(refused.action === 'refuse' && refused.reason, 'repeat-refused');
  assert.deepEqual(decide({ prior, safety: idem }), { action: 'run' });
  assert.deepEqual(decide({ prior: [{ toolName: 'write', input: { a: 1 }, outcome: 'ok' }] }), { action: 'ask', reason: 'repeat-in-retried-turn' });
});

test('decideCall: a once grant answers its own call only and is used up; an expired grant is not reused', () => {
  const once: GrantEntry = { decision: 'granted', scope: 'once', toolCallId: 'c2', seq: 7 };
  assert.deepEqual(decide({ needsApproval: true, grant: once }), { action: 'run', grant: { permission: 'tool:write', seq: 7 } });
  assert.deepEqual(decide({ needsApproval: true, grant: once, toolCallId: 'c3' }), { action: 'ask', reason: 'needs-approval' }, 'another call');
  assert.deepEqual(decide({ needsApproval: true, grant: { ...once, used: true } }), { action: 'ask', reason: 'needs-approval' }, 'used up');
  const session: GrantEntry = { decision: 'granted', scope: 'session', seq: 8, expiresAt: NOW + 1 };
  assert.equal(decide({ needsApproval: true, grant: session, toolCallId: 'c9' }).action, 'run');
  assert.deepEqual(decide({ needsApproval: true, grant: { ...session, expiresAt: NOW } }), { action: 'ask', reason: 'needs-approval' }, 'expired');
  assert.equal(usableGrant({ ...session, expiresAt: NOW - 1 }, 'c2', NOW), undefined);
});

test('decideCall: a once grant for the repeat itself lets it run; a session denial refuses every call', () => {
  const prior: PriorCall[] = [{ toolName: 'write', input: { a: 1 }, outcome: 'unknown' }];
  assert.deepEqual(decide({ prior, grant: { decision: 'granted', scope: 'once', toolCallId: 'c2', seq: 3 } }), { action: 'run', grant: { permission: 'tool:write', seq: 3 } });
  assert.deepEqual(decide({ prior, grant: { decision: 'granted', scope: 'once', toolCallId: 'c1', seq: 3 } }), { action: 'ask', reason: 'repeat-of-unknown-outcome' });
  const denied = decide({ grant: { decision: 'denied', scope: 'session', seq: 4 } });
  assert.equal(denied.action === 'refuse' && denied.reason, 'denied');
  assert.deepEqual(decide({ grant: { decision: 'denied', scope: 'once', seq: 4 } }), { action: 'run' }, 'a once denial answered one call only');
});
