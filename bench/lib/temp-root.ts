import { rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Runs `body` with a fresh directory under the OS temp dir, and removes it
 * afterwards — also on Ctrl-C / SIGTERM (exit 130 / 143). `beforeRemove` runs
 * first each time (e.g. to kill child processes still writing there).
 */
export async function withTempRoot<T>(prefix: string, body: (root: string) => Promise<T>, beforeRemove?: () => void): Promise<T> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  const cleanup = (): void => {
    beforeRemove?.();
    rmSync(root, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    cleanup();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await body(root);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    cleanup();
  }
}
