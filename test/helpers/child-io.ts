import { writeSync } from 'node:fs';

/**
 * One synchronous write of a whole line to stdout (retrying EAGAIN and short
 * writes): a crash-test child reports an acknowledgement only this way, so a
 * SIGKILL leaves either the whole line or none of it.
 */
export function writeLineSync(text: string): void {
  const buf = Buffer.from(`${text}\n`);
  let off = 0;
  while (off < buf.length) {
    try {
      off += writeSync(1, buf, off, buf.length - off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
    }
  }
}
