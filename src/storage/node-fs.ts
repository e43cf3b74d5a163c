import { promises as fsp, constants as fsc, fdatasync as fdatasyncCb, read as readCb, write as writeCb } from 'node:fs';
import type { FileHandle, FileStat, FileSystem, OpenFlags } from './fs-port.ts';

const FLAGS: Record<OpenFlags, number> = {
  r: fsc.O_RDONLY,
  'r+': fsc.O_RDWR,
  'w+': fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC,
  'wx+': fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL,
};

function toStat(s: import('node:fs').Stats): FileStat {
  return { size: s.size, mode: s.mode & 0o777, isFile: s.isFile(), isDirectory: s.isDirectory() };
}

/**
 * One file. The journal's hot calls (`write`, `read`, `datasync`) go to the
 * callback API on the descriptor: the same syscall on the same thread pool,
 * without what `fs.promises.FileHandle` adds per call (an async wrapper, a
 * request promise, a result object, reference counting) — about 2 KB of
 * garbage per write+sync, which came back as scavenges on the ack path. The
 * handle still owns the descriptor: `close()` goes through it, and the
 * journal never closes a file with a call in flight.
 */
class NodeFileHandle implements FileHandle {
  readonly #fh: fsp.FileHandle;
  readonly #fd: number;
  constructor(fh: fsp.FileHandle) {
    this.#fh = fh;
    this.#fd = fh.fd;
  }
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) => writeCb(this.#fd, buffer, offset, length, position, (err, n) => (err === null ? resolve(n) : reject(err))));
  }
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return new Promise((resolve, reject) => readCb(this.#fd, buffer, offset, length, position, (err, n) => (err === null ? resolve(n) : reject(err))));
  }
  datasync(): Promise<void> {
    return new Promise((resolve, reject) => fdatasyncCb(this.#fd, (err) => (err === null ? resolve() : reject(err))));
  }
  sync(): Promise<void> {
    return this.#fh.sync();
  }
  truncate(length: number): Promise<void> {
    return this.#fh.truncate(length);
  }
  async stat(): Promise<FileStat> {
    return toStat(await this.#fh.stat());
  }
  close(): Promise<void> {
    return this.#fh.close();
  }
}

/** The real filesystem, through `fs.promises` (off the event loop). */
export class NodeFileSystem implements FileSystem {
  readonly realPaths = true;
  async open(path: string, flags: OpenFlags, mode = 0o600): Promise<FileHandle> {
    return new NodeFileHandle(await fsp.open(path, FLAGS[flags], mode));
  }
  async readFile(path: string): Promise<Uint8Array> {
    return fsp.readFile(path);
  }
  readdir(path: string): Promise<string[]> {
    return fsp.readdir(path);
  }
  async mkdir(path: string, mode: number): Promise<void> {
    await fsp.mkdir(path, { recursive: true, mode });
  }
  rename(from: string, to: string): Promise<void> {
    return fsp.rename(from, to);
  }
  unlink(path: string): Promise<void> {
    return fsp.unlink(path);
  }
  async syncDir(path: string): Promise<void> {
    const fh = await fsp.open(path, fsc.O_RDONLY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  async stat(path: string): Promise<FileStat> {
    return toStat(await fsp.stat(path));
  }
  chmod(path: string, mode: number): Promise<void> {
    return fsp.chmod(path, mode);
  }
}
