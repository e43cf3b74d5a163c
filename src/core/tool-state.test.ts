import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { JournalRecord } from './record.ts';
import { parseEventData, type CriticalEventType, type EventData } from './events.ts';
import { findMessage, initialSessionState, pendingApprovals, reduceSession, toolCallsInFlight, UNKNOWN_OUTCOME_TEXT, type SessionState, type ToolPart } from './state.ts';

const SID = 's1';

function log() {
  let seq = 0;
  let state: SessionState = initialSessionState(SID);
  return {
    add<T extends CriticalEventType>(type: T, data: EventData<T>): SessionState {
      seq += 1;
      const parsed = parseEventData(type, data, { sessionId: SID });
      const r: JournalRecord = { lsn: seq, sid: SID, seq, ts: 1000 + seq, type, v: 1, data: parsed };
      state = reduceSession(state, r);
      return state;
    },
    get state() {
      return state;
    },
  };
}

function toolPart(state: SessionState, messageId: string, toolCallId: string): ToolPart | undefined {
  const parts = state.stream.status === 'streaming' && state.stream.messageId === messageId ? state.stream.parts : findMessage(state, messageId)?.parts ?? [];
  return parts.find((p): p is ToolPart => p.type === 'tool' && p.toolCallId === toolCallId);
}

function started() {
  const l = log();
  l.add('user_message_sent', { messageId: 'u1', content: 'hi' });
  l.add('assistant_stream_started', { messageId: 'a1', requestMessageId: 'u1', provider: 'mock' });
  return l;
}

test('tool_call_started: the call is in flight and its part (after the text before it) is in the answer; tool_call_finished gives it its output', () => {
  const l = started();
  l.add('tool_call_started', { messageId: 'a1', toolCallId: 't1', tool: 'record_note', input: { text: 'x' }, before: [{ type: 'step-start' }, { type: 'text', text: 'Let me note it.' }] });
  assert.deepEqual(toolCallsInFlight(l.state).map((c) => c.toolCallId), ['t1']);
  assert.equal(l.state.stream.status === 'streaming' && l.state.stream.parts.map((p) => p.type).join(','), 'step-start,text,tool');
  assert.equal(toolPart(l.state, 'a1', 't1')?.state, 'input-available');
  l.add('tool_call_finished', { messageId: 'a1', toolCallId: 't1', output: { ok: true } });
  assert.deepEqual(toolCallsInFlight(l.state), []);
  assert.deepEqual({ ...toolPart(l.state, 'a1', 't1') }, { type: 'tool', toolCallId: 't1', toolName: 'record_note', input: { text: 'x' }, state: 'output-available', output: { ok: true } });
  l.add('assistant_response_completed', { messageId: 'a1', requestMessageId: 'u1', content: 'Let me note it. Done.' });
  const m = findMessage(l.state, 'a1')!;
  assert.deepEqual(m.parts.map((p) => (p.type === 'text' ? p.text : p.type)), ['step-start', 'Let me note it.', 'tool', ' Done.']);
});

test('an unknown outcome: output-error with the unknown text, also after the turn was interrupted', () => {
  const l = started();
  l.add('tool_call_started', { messageId: 'a1', toolCallId: 't1', tool: 'slow_write', input: { text: 'x' } });
  l.add('tool_call_finished', { messageId: 'a1', toolCallId: 't1', outcome: 'unknown' });
  l.add('stream_interrupted', { messageId: 'a1', requestMessageId: 'u1', reason: 'the server stopped' });
  const part = toolPart(l.state, 'a1', 't1')!;
  assert.deepEqual([part.state, part.outcome, part.errorText], ['output-error', 'unknown', UNKNOWN_OUTCOME_TEXT]);
  assert.deepEqual(toolCallsInFlight(l.state), []);
});

test('approval: requested → pending (in the state) and the part asks; a decision answers it; a once grant is used up by the call it runs', () => {
  const l = started();
  l.add('tool_approval_requested', { messageId: 'a1', toolCallId: 't1', approvalId: 'ap1', tool: 'delete_item', input: { id: '7' }, reason: 'needs-approval' });
  assert.deepEqual(pendingApprovals(l.state).map((p) => [p.approvalId, p.toolCallId, p.tool]), [['ap1', 't1', 'delete_item']]);
  assert.deepEqual({ ...toolPart(l.state, 'a1', 't1')!.approval }, { id: 'ap1' });
  assert.equal(toolPart(l.state, 'a1', 't1')!.state, 'approval-requested');
  l.add('assistant_response_completed', { messageId: 'a1', requestMessageId: 'u1', content: '' });
  l.add('permission_decided', { permission: 'tool:delete_item', decision: 'granted', scope: 'once', toolCallId: 't1', approvalId: 'ap1', decidedBy: { tenant: 'acme', tokenId: 'tok1' }, expiresAt: 5000 });
  assert.deepEqual(pendingApprovals(l.state), []);
  assert.equal(toolPart(l.state, 'a1', 't1')!.state, 'approval-responded');
  assert.deepEqual({ ...toolPart(l.state, 'a1', 't1')!.approval }, { id: 'ap1', approved: true });
  const grant = l.state.permissions['tool:delete_item']!;
  assert.deepEqual([grant.decision, grant.scope, grant.toolCallId, grant.expiresAt, grant.decidedBy?.tenant, grant.decidedBy?.tokenId, grant.used], ['granted', 'once', 't1', 5000, 'acme', 'tok1', undefined]);
  // the continuation runs the call under the grant
  l.add('assistant_stream_started', { messageId: 'a2', requestMessageId: 'u1', provider: 'mock' });
  l.add('tool_call_started', { messageId: 'a1', toolCallId: 't1', tool: 'delete_item', input: { id: '7' }, grant: { permission: 'tool:delete_item', seq: grant.seq } });
  assert.equal(l.state.permissions['tool:delete_item']!.used, true);
  assert.equal(toolPart(l.state, 'a1', 't1')!.state, 'approval-responded', 'the part keeps its answer while the call runs');
  l.add('tool_call_finished', { messageId: 'a1', toolCallId: 't1', output: 'deleted 7' });
  assert.equal(toolPart(l.state, 'a1', 't1')!.state, 'output-available');
});

test('a denied approval shows output-denied; a refused call gets its part with the error', () => {
  const l = started();
  l.add('tool_approval_requested', { messageId: 'a1', toolCallId: 't1', approvalId: 'ap1', tool: 'delete_item', input: { id: '7' }, reason: 'repeat-of-unknown-outcome' });
  l.add('permission_decided', { permission: 'tool:delete_item', decision: 'denied', toolCallId: 't1', reason: 'no' });
  assert.equal(toolPart(l.state, 'a1', 't1')!.state, 'output-denied');
  l.add('tool_call_finished', { messageId: 'a1', toolCallId: 't2', tool: 'record_note', input: { text: 'x' }, error: 'refused: repeat', refused: 'repeat-refused' });
  const p = toolPart(l.state, 'a1', 't2')!;
  assert.deepEqual([p.state, p.errorText, p.toolName], ['output-error', 'refused: repeat', 'record_note']);
});
