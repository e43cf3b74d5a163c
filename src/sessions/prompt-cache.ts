import { findMessage, historyStamp, type HistoryStamp, type Message, type SessionState } from '../core/state.ts';
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
   * owns and updates in place. Without a stamp to go by (below), it is
   * compared with a copy of the new history made by spreading it, not with
   * the state's array itself: a frozen array's elements are several times
   * slower to read one by one in optimized code than a plain array's (V8 in
   * Node 20 and 24; `slice`, `filter`, `find`, `forEach` on one are 10-50x
   * slower), while spreading one is a block copy.
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
  /**
   * The history stamp of the array the mirror was last made equal to. A new
   * history of the same lineage starts with those messages, so only the ones
   * after them are looked at: the live path never compares the whole history.
   */
  #stamp: HistoryStamp | undefined;

  /** What `promptFor(state, requestMessageId)` returns: equal turns, in a new array. */
  promptFor(state: SessionState, requestMessageId: string): ChatTurn[] {
    const history = state.messages;
    const upto = findMessage(state, requestMessageId)?.seq ?? state.seq;
    const mirror = this.#mirror;
    const turns = this.#turns;
    const seqs = this.#seqs;
    const n = history.length;
    const stamp = historyStamp(history);
    const known = this.#stamp;
    this.#stamp = undefined; // until the mirror is that history
    if (stamp !== undefined && known !== undefined && stamp.lineage === known.lineage && known.length <= n) {
      for (let i = known.length; i < n; i += 1) this.#set(i, history[i]!);
    } else {
      const messages = [...history];
      // Only the array slots are compared: a message that changed is a new object.
      for (let i = 0; i < n; i += 1) if (i >= mirror.length || mirror[i] !== messages[i]) this.#set(i, messages[i]!);
      if (mirror.length > n) {
        mirror.length = n;
        turns.length = n;
        seqs.length = n;
      }
    }
    this.#stamp = stamp;
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

  /** Makes `m` the mirror's message `i` (at most one past its end), with its turn. */
  #set(i: number, m: Message): void {
    const turn = m.role === 'system' ? null : Object.freeze({ role: m.role, content: m.content });
    if (i < this.#mirror.length) {
      this.#mirror[i] = m;
      this.#turns[i] = turn;
      this.#seqs[i] = m.seq;
    } else {
      this.#mirror.push(m);
      this.#turns.push(turn);
      this.#seqs.push(m.seq);
    }
  }
}
