import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { initialSessionState, type Message, type SessionState } from '../core/state.ts';
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
