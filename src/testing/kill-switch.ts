import { writeLineSync } from './write-line-sync.ts';

/**
 * Named points in Arbor's file storage where a crash child can SIGKILL
 * itself (see `KillingFileSystem` for where each fires):
 * - `mid-batch-write`: half of a journal batch write reached the `.wal`;
 * - `after-write-before-sync`: on entering `datasync()` of a `.wal`;
 * - `after-sync-before-ack`: right after `datasync()` of a `.wal` resolved, before any append is acknowledged;
 * - `mid-snapshot`: halfway through writing a `.snap.tmp`, or just before / after its rename;
 * - `mid-deletion`: a `.wal` unlinked, before the directory sync;
 * - `mid-rotation`: just before / after a `.wal.tmp` is renamed to `.wal`.
 */
export const KILL_POINTS = ['mid-batch-write', 'after-write-before-sync', 'after-sync-before-ack', 'mid-snapshot', 'mid-deletion', 'mid-rotation'] as const;

/** One of `KILL_POINTS`. */
export type KillPoint = (typeof KILL_POINTS)[number];

/** Whether `s` names a kill point. */
export function isKillPoint(s: string): s is KillPoint {
  return (KILL_POINTS as readonly string[]).includes(s);
}

/** The variants of each kill point; a `KillSwitch` picks one from its seed. */
export const KILL_VARIANTS: Readonly<Record<KillPoint, readonly string[]>> = Object.freeze({
  'mid-batch-write': ['half-written'],
  'after-write-before-sync': ['before-datasync'],
  'after-sync-before-ack': ['after-datasync'],
  'mid-snapshot': ['tmp-half-written', 'before-rename', 'after-rename'],
  'mid-deletion': ['after-unlink'],
  'mid-rotation': ['before-rename', 'after-rename'],
});

/** An integer in [lo, hi], from `rand` (a function returning floats in [0, 1)). */
export function randInt(rand: () => number, lo: number, hi: number): number {
  return lo + Math.floor(rand() * (hi - lo + 1));
}

/**
 * Where a crash child dies: the `at`-th occurrence of one kill point's
 * variant (picked from `rand` at construction). Without a point it never fires.
 */
export class KillSwitch {
  readonly point: KillPoint | undefined;
  readonly variant: string | undefined;
  readonly at: number;
  #count = 0;

  constructor(point: KillPoint | undefined, at: number, rand: () => number) {
    this.point = point;
    this.at = at;
    if (point !== undefined) {
      const variants = KILL_VARIANTS[point];
      this.variant = variants[randInt(rand, 0, variants.length - 1)];
    }
  }

  /** Counts an occurrence of (point, variant); true at the one to die at. */
  hit(point: KillPoint, variant: string): boolean {
    if (point !== this.point || variant !== this.variant) return false;
    this.#count += 1;
    return this.#count === this.at;
  }

  /**
   * Prints `kill <point> <variant> <occurrence>` on stdout (whole, synchronously),
   * then SIGKILLs this process. Never returns.
   */
  fire(): never {
    writeLineSync(`kill ${this.point} ${this.variant} ${this.#count}`);
    process.kill(process.pid, 'SIGKILL');
    // SIGKILL to oneself is delivered before kill(2) returns; never let anything run after it anyway.
    for (;;);
  }
}
