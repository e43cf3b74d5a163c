import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { initialSessionState, reduceSession, type Message, type SessionState } from '../core/state.ts';
import { promptFor } from './session-actor.ts';
import { PromptCache } from './prompt-cache.ts';

type Op = { kind: 'add'; role: Message['role']; content: string } | { kind: 'replace'; at: number; content: string } | { kind: 'truncate'; at: number } | { kind: 'prompt'; at: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('add' as const), role: fc.constantFrom('user' as const, 'assistant' as const, 'system' as const), content: fc.string({ maxLength: 8 }) }),
  fc.record({ kind: fc.constant('replace' as const), at: fc.nat(), content: fc.string({ maxLength: 8 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('prompt' as const), at: fc.nat() }),
);

test('PromptCache gives the prompt promptFor gives, for histories that grow, change and shrink, and makes each turn once', () => {
  fc.assert(
    fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
      const cache = new PromptCache();
      let state: SessionState = initialSessionState('s');
      let seq = 0;
      let previous: ReadonlyMap<Message, unknown> = new Map();
      for (const o of ops) {
        if (o.kind === 'add') {
          seq += 1;
          const m: Message = Object.freeze({ id: `m${seq}`, role: o.role, content: o.content, parts: [], seq, ts: seq });
          state = { ...state, seq, messages: Object.freeze([...state.messages, m]) };
        } else if (o.kind === 'replace' && state.messages.length > 0) {
          // A message that changes is a new object (as the reducer makes it), at the same place.
          seq += 1;
          const i = o.at % state.messages.length;
          const messages = [...state.messages];
          messages[i] = Object.freeze({ ...messages[i]!, content: o.content });
          state = { ...state, seq, messages: Object.freeze(messages) };
        } else if (o.kind === 'truncate') {
          // Another history in its place (a state restored from a backup): a prefix of this one.
          state = { ...state, messages: Object.freeze(state.messages.slice(0, o.at % (state.messages.length + 1))) };
        } else if (o.kind === 'prompt') {
          // A request among the messages, or one the state does not hold.
          const target = state.messages.length === 0 || o.at % 4 === 3 ? 'unknown' : state.messages[o.at % state.messages.length]!.id;
          const got = cache.promptFor(state, target);
          assert.deepEqual(got, promptFor(state, target));
          // A message unchanged since the last prompt keeps its turn object.
          const byMessage = new Map<Message, unknown>();
          let k = 0;
          for (const m of state.messages) {
            if (m.role === 'system' || m.seq > (state.messages.find((x) => x.id === target)?.seq ?? state.seq)) continue;
            byMessage.set(m, got[k]);
            k += 1;
          }
          for (const [m, turn] of byMessage) if (previous.has(m)) assert.equal(turn, previous.get(m), `turn of ${m.id} rebuilt`);
          previous = byMessage;
          // The prompt is the caller's: changing it changes nothing the cache gives next.
          got.length = 0;
        }
      }
    }),
    { numRuns: 500 },
  );
});

type LiveOp = { kind: 'user' | 'answer' | 'notice' | 'prompt' | 'restore' } | { kind: 'branch'; back: number };

const liveOp: fc.Arbitrary<LiveOp> = fc.oneof(
  fc.record({ kind: fc.constantFrom('user' as const, 'answer' as const, 'notice' as const, 'prompt' as const, 'prompt' as const, 'restore' as const) }),
  fc.record({ kind: fc.constant('branch' as const), back: fc.integer({ min: 1, max: 4 }) }),
);

test('PromptCache over states the live reducer makes: appended histories it looks at only past what it saw, a state reduced twice (two successors), a restored state without history stamps', () => {
  fc.assert(
    fc.property(fc.array(liveOp, { maxLength: 60 }), (ops) => {
      const cache = new PromptCache();
      const states: SessionState[] = [initialSessionState('s')];
      let seq = 0;
      const apply = (type: string, data: Record<string, unknown>): void => {
        seq += 1;
        const state = states.at(-1)!;
        // seq only has to follow the state's: after a branch, the numbers of the abandoned successors are skipped
        states.push(reduceSession(state, { lsn: seq, sid: 's', seq, ts: seq, type, v: 1, data }));
      };
      for (const o of ops) {
        const state = states.at(-1)!;
        if (o.kind === 'user') apply('user_message_sent', { messageId: `u${seq + 1}`, content: `question ${seq + 1}` });
        else if (o.kind === 'answer') apply('assistant_response_completed', { messageId: `a${seq + 1}`, requestMessageId: state.messages.findLast((m) => m.role === 'user')?.id ?? 'none', content: `answer ${seq + 1}` });
        else if (o.kind === 'notice') apply('system_notice_added', { noticeId: `n${seq + 1}`, content: 'restored' });
        else if (o.kind === 'branch') {
          // An earlier state becomes the newest again: its next successor is a second one (a commit reduced but not adopted).
          states.splice(Math.max(1, states.length - o.back));
        } else if (o.kind === 'restore') {
          // The same history in new arrays and objects (a snapshot decoded): no stamp, nothing shared with the cache's mirror.
          states.push(JSON.parse(JSON.stringify(state)) as SessionState);
        } else {
          for (const target of [state.messages.findLast((m) => m.role === 'user')?.id ?? 'none', state.messages[0]?.id ?? 'none']) {
            assert.deepEqual(cache.promptFor(state, target), promptFor(state, target));
          }
        }
      }
      const last = states.at(-1)!;
      assert.deepEqual(cache.promptFor(last, 'none'), promptFor(last, 'none'));
    }),
    { numRuns: 500 },
  );
});
