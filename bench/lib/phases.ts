/**
 * Measurements run in slices: figures that are compared run in the same group,
 * slice by slice in turn (A B A B …), so that a noisy neighbour slows both
 * sides of a ratio rather than one of them.
 */
import type { BaseConfig } from './cli.ts';

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
export const maybeGc = (): void => (globalThis as { gc?: () => void }).gc?.();

/** Progress goes to stderr, so stdout holds only the table or the JSON. */
export function progress(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

/** A measurement that can run in several slices, alternating with its baseline's. */
export interface Phase {
  readonly label: string;
  /** Warms up for `warmMs` (not measured), then measures for `measureMs`, adding to the totals. */
  slice(warmMs: number, measureMs: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Runs `phases` for `seconds` each (default `cfg.seconds`), in `cfg.rounds`
 * interleaved slices; warm-ups shrink with `seconds`. Closes every phase at the end.
 */
export async function runInterleaved(cfg: BaseConfig, phases: Phase[], seconds = cfg.seconds): Promise<void> {
  const sliceMs = (seconds * 1000) / cfg.rounds;
  const warmMs = Math.min(cfg.warmupSeconds, seconds / 5) * 1000;
  const rewarmMs = Math.min(cfg.rewarmSeconds, seconds / 25) * 1000;
  try {
    for (let round = 0; round < cfg.rounds; round += 1) {
      for (const phase of phases) {
        maybeGc();
        progress(`${phase.label} (slice ${round + 1}/${cfg.rounds})`);
        await phase.slice(round === 0 ? warmMs : rewarmMs, sliceMs);
      }
    }
  } finally {
    for (const phase of phases) await phase.close();
  }
}
