import { promises as fsp, constants as fsc, fdatasync as fdatasyncCb, read as readCb, write as writeCb } from 'node:fs';
import { errnoError, type FileHandle, type FileStat, type FileSystem, type OpenFlags } from './fs-port.ts';

const FLAGS: Record<OpenFlags, number> = {
  r: fsc.O_RDONLY,
  'r+': fsc.O_RDWR,
  'w+': fsc.O_RDWR | fsc.O_CREAT | fsc.O_TRUNC,
  'wx+': fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL,
};

function toStat(s: import('node:fs').Stats): FileStat {
  return { size: s.size, mode: s.mode & 0o777, isFile: s.isFile(), isDirectory: s.isDirectory() };
}

/** A syscall's completion: the error, or the result. */
type Done<T> = (err: NodeJS.ErrnoException | null, result: T) => void;
/** One of the handle's hot syscalls on a descriptor (the arguments a call does not use are ignored). */
type Syscall<T> = (fd: number, buffer: Uint8Array | undefined, offset: number, length: number, position: number, done: Done<T>) => void;

const writeAt: Syscall<number> = (fd, buffer, offset, length, position, done) => writeCb(fd, buffer!, offset, length, position, done);
const readAt: Syscall<number> = (fd, buffer, offset, length, position, done) => readCb(fd, buffer!, offset, length, position, done);
const fdatasyncAt: Syscall<void> = (fd, _buffer, _offset, _length, _position, done) => fdatasyncCb(fd, done);

/**
 * One file. The journal's hot calls (`write`, `read`, `datasync`) go to the
 * callback API on the descriptor: the same syscall on the same thread pool,
 * without what `fs.promises.FileHandle` adds per call (an async wrapper, a
 * request promise, a result object) — about 2 KB of garbage per write+sync,
 * which came back as scavenges on the ack path. What that wrapper guaranteed
 * is kept here: `close()` waits for the calls in flight (a descriptor number
 * is reused by the next open: a late write must never land in another file),
 * and a call after `close()` fails with EBADF instead of reaching the number.
 */
class NodeFileHandle implements FileHandle {
  readonly #fh: fsp.FileHandle;
  readonly #fd: number;
  #closed = false;
  #calls = 0;
  #drained: (() => void) | undefined;
  #closing: Promise<void> | undefined;
  readonly #settled = (): void => {
    this.#calls -= 1;
    if (this.#calls === 0 && this.#drained !== undefined) {
      const drained = this.#drained;
      this.#drained = undefined;
      drained();
    }
  };

  constructor(fh: fsp.FileHandle) {
    this.#fh = fh;
    this.#fd = fh.fd;
  }

  /**
   * The shape every hot call shares: refuse a call after `close()` (EBADF),
   * count it in flight until its callback comes (close waits for it), settle
   * the promise with the syscall's result or error. `syscall` is a module-level
   * function (no closure of its own): per call, the promise's executor and the
   * one completion callback are the only closures, as before this helper.
   */
  #call<T>(op: string, syscall: Syscall<T>, buffer: Uint8Array | undefined, offset: number, length: number, position: number): Promise<T> {
    return new Promise((resolve, reject) => {
      if (this.#closed) throw errnoError('EBADF', `${op} (file closed)`);
      this.#calls += 1;
      syscall(this.#fd, buffer, offset, length, position, (err, result) => {
        this.#settled();
        if (err === null) resolve(result);
        else reject(err);
      });
    });
  }

  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.#call('write', writeAt, buffer, offset, length, position);
  }
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.#call('read', readAt, buffer, offset, length, position);
  }
  datasync(): Promise<void> {
    return this.#call('fdatasync', fdatasyncAt, undefined, 0, 0, 0);
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
    this.#closed = true;
    this.#closing ??= (this.#calls === 0 ? Promise.resolve() : new Promise<void>((resolve) => (this.#drained = resolve))).then(() => this.#fh.close());
    return this.#closing;
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
