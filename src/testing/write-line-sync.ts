import { writeSync } from 'node:fs';

/**
 * Writes `text` and a newline to stdout with synchronous write(2) calls,
 * retrying EAGAIN and short writes, before it returns.
 *
 * A crash-test child reports an acknowledgement only this way: the line is out
 * whole before anything after it runs, so a SIGKILL leaves the parent either
 * the whole line or none of it, never an ack for work not yet done.
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
