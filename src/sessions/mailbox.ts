import { ArborError, ErrorCodes } from '../core/errors.ts';

/**
 * A session's bounded mailbox: commands run one at a time, in arrival order,
 * so one session's commands never interleave. A full mailbox rejects at once
 * with ARBOR_MAILBOX_FULL and runs nothing (after emmett's task processor).
 */
export class Mailbox {
  readonly #capacity: number;
  readonly #label: string;
  #tail: Promise<unknown> = Promise.resolve();
  #queued = 0;

  constructor(capacity: number, label: string) {
    this.#capacity = capacity;
    this.#label = label;
  }

  /** Commands waiting or running. */
  get depth(): number {
    return this.#queued;
  }

  run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#queued >= this.#capacity) {
      return Promise.reject(new ArborError(ErrorCodes.MAILBOX_FULL, `${this.#label}: mailbox is full (${this.#capacity} commands waiting); retry later`, { capacity: this.#capacity }));
    }
    this.#queued += 1;
    const result = this.#tail.then(task);
    // The next command waits for this one to settle, whatever its outcome.
    this.#tail = result.then(
      () => (this.#queued -= 1),
      () => (this.#queued -= 1),
    );
    return result;
  }

  /** Resolves when every command queued so far has settled. */
  async drain(): Promise<void> {
    await this.#tail;
  }
}
