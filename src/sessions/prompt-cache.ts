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
  /** the messages array the turns were last taken from */
  #source: readonly Message[] = [];
  /** `#turns[i]`: the turn of `#source[i]` (undefined for a system message) */
  readonly #turns: (ChatTurn | undefined)[] = [];
  /**
   * `#seqs[i]`: the seq of `#source[i]`. Kept beside the turns so that a
   * prompt is built from these two arrays alone: reading each message's `seq`
   * from the message object, at every answer, was a cache miss per message of
   * the history (the messages lie all over a large heap), ~9% of the main
   * thread under bench/runtime (b).
   */
  readonly #seqs: number[] = [];

  /** What `promptFor(state, requestMessageId)` returns: equal turns, in a new array. */
  promptFor(state: SessionState, requestMessageId: string): ChatTurn[] {
    const messages = state.messages;
    const upto = findMessage(state, requestMessageId)?.seq ?? state.seq;
    const source = this.#source;
    const turns = this.#turns;
    const seqs = this.#seqs;
    // Only the array slots are compared: a message that changed is a new object.
    for (let i = 0; i < messages.length; i += 1) {
      const m = messages[i]!;
      if (i < source.length && source[i] === m) continue;
      turns[i] = m.role === 'system' ? undefined : Object.freeze({ role: m.role, content: m.content });
      seqs[i] = m.seq;
    }
    turns.length = messages.length;
    seqs.length = messages.length;
    this.#source = messages;
    const out: ChatTurn[] = [];
    for (let i = 0; i < turns.length; i += 1) {
      const turn = turns[i];
      if (turn !== undefined && seqs[i]! <= upto) out.push(turn);
    }
    return out;
  }
}
