import { findMessage, type Message, type SessionState } from '../core/state.ts';
import type { ChatTurn } from '../llm/provider.ts';

/**
 * One session's prompts (`promptFor`), built incrementally. The history only
 * grows between answers (and a message that changes is a new frozen object),
 * so each message's `{role, content}` is made once and reused by every later
 * prompt instead of being rebuilt for each answer: under load, a prompt of the
 * whole conversation was, per answer, a new object per message that lived as
 * long as the stream (and so was copied by every young-generation collection
 * meanwhile). The turns are frozen because they are shared between requests.
 */
export class PromptCache {
  /**
   * The messages the turns were last taken from, in a plain array this cache
   * owns and updates in place. It is compared with a copy of the new history
   * made by spreading it, not with the state's array itself: a frozen array's
   * elements are several times slower to read one by one in optimized code
   * than a plain array's (V8 in Node 20 and 24; `slice`, `filter`, `find`,
   * `forEach` on one are 10-50x slower), while spreading one is a block copy.
   */
  readonly #mirror: Message[] = [];
  /** `#turns[i]`: the turn of `#mirror[i]` (null for a system message) */
  readonly #turns: (ChatTurn | null)[] = [];
  /**
   * `#seqs[i]`: the seq of `#mirror[i]`. Kept beside the turns so that a
   * prompt is built from these arrays alone: reading each message's `seq`
   * from the message object, at every answer, was a cache miss per message of
   * the history (the messages lie all over a large heap).
   */
  readonly #seqs: number[] = [];

  /** What `promptFor(state, requestMessageId)` returns: equal turns, in a new array. */
  promptFor(state: SessionState, requestMessageId: string): ChatTurn[] {
    const messages = [...state.messages];
    const upto = findMessage(state, requestMessageId)?.seq ?? state.seq;
    const mirror = this.#mirror;
    const turns = this.#turns;
    const seqs = this.#seqs;
    const n = messages.length;
    // Only the array slots are compared: a message that changed is a new object.
    for (let i = 0; i < n; i += 1) {
      const m = messages[i]!;
      if (i < mirror.length && mirror[i] === m) continue;
      const turn = m.role === 'system' ? null : Object.freeze({ role: m.role, content: m.content });
      if (i < mirror.length) {
        mirror[i] = m;
        turns[i] = turn;
        seqs[i] = m.seq;
      } else {
        mirror.push(m);
        turns.push(turn);
        seqs.push(m.seq);
      }
    }
    if (mirror.length > n) {
      mirror.length = n;
      turns.length = n;
      seqs.length = n;
    }
    let count = 0;
    for (let i = 0; i < n; i += 1) if (turns[i] !== null && seqs[i]! <= upto) count += 1;
    // Nearly always: every message is a turn of this prompt (no system notice, the request is the newest message).
    if (count === n) return turns.slice() as ChatTurn[];
    const out = new Array<ChatTurn>(count);
    let at = 0;
    for (let i = 0; i < n; i += 1) {
      const turn = turns[i]!;
      if (turn !== null && seqs[i]! <= upto) out[at++] = turn;
    }
    return out;
  }
}
