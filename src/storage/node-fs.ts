import { promises as fsp, constants as fsc } from 'node:fs';
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

class NodeFileHandle implements FileHandle {
  readonly #fh: fsp.FileHandle;
  constructor(fh: fsp.FileHandle) {
    this.#fh = fh;
  }
  async write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.#fh.write(buffer, offset, length, position)).bytesWritten;
  }
  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.#fh.read(buffer, offset, length, position)).bytesRead;
  }
  datasync(): Promise<void> {
    return this.#fh.datasync();
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
