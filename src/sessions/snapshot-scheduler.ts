/**
 * Threshold snapshots, taken by one background worker, one session per
 * event-loop turn, never on the commit path: when many sessions cross the
 * threshold together, their encodings are spread out instead of stalling the
 * loop (and every ack behind it) in one burst.
 */
export class SnapshotScheduler {
  /** Sessions waiting for the worker, in insertion order. */
  readonly #queue = new Set<string>();
  #worker: Promise<void> | undefined;
  readonly #snapshot: (sid: string) => Promise<void>;
  readonly #failed: (sid: string, err: unknown) => void;
  readonly #stopped: () => boolean;

  /**
   * `snapshot` takes one session's snapshot; `failed` hears of each one that
   * failed (the worker goes on with the next); `stopped` says the runtime is
   * closing, when the worker stops taking new ones.
   */
  constructor(snapshot: (sid: string) => Promise<void>, failed: (sid: string, err: unknown) => void, stopped: () => boolean) {
    this.#snapshot = snapshot;
    this.#failed = failed;
    this.#stopped = stopped;
  }

  /** Queues the session (once) and starts the worker when it is not running. */
  enqueue(sid: string): void {
    this.#queue.add(sid);
    this.#drain();
  }

  /** Queues the session without starting the worker (the caller queues several, then calls `start`). */
  add(sid: string): void {
    this.#queue.add(sid);
  }

  has(sid: string): boolean {
    return this.#queue.has(sid);
  }

  start(): void {
    this.#drain();
  }

  /** Forgets every queued session (the runtime starts over from what the backend holds). */
  clear(): void {
    this.#queue.clear();
  }

  /** Resolves when the worker has nothing left to do (never rejects: failures go to `failed`). */
  idle(): Promise<void> {
    return this.#worker ?? Promise.resolve();
  }

  #drain(): void {
    if (this.#worker !== undefined) return;
    this.#worker = (async () => {
      for (const sid of this.#queue) {
        this.#queue.delete(sid);
        if (this.#stopped()) break;
        await new Promise<void>((r) => setImmediate(r));
        try {
          await this.#snapshot(sid);
        } catch (err) {
          this.#failed(sid, err);
        }
      }
    })().finally(() => {
      this.#worker = undefined;
      if (this.#queue.size > 0 && !this.#stopped()) this.#drain();
    });
  }
}
