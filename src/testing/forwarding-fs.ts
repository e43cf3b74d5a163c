import type { FileHandle, FileStat, FileSystem, OpenFlags } from '../storage/fs-port.ts';

/** A file handle that forwards every call; subclass it to observe or change some of them. */
export class ForwardingFileHandle implements FileHandle {
  protected readonly inner: FileHandle;

  constructor(inner: FileHandle) {
    this.inner = inner;
  }
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.inner.write(buffer, offset, length, position);
  }
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return this.inner.read(buffer, offset, length, position);
  }
  datasync(): Promise<void> {
    return this.inner.datasync();
  }
  sync(): Promise<void> {
    return this.inner.sync();
  }
  truncate(length: number): Promise<void> {
    return this.inner.truncate(length);
  }
  stat(): Promise<FileStat> {
    return this.inner.stat();
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/**
 * A filesystem that forwards every call to another one; subclass it to
 * instrument the port (count, delay, fail, or kill at a point) without
 * restating the calls it leaves alone. Handles go through `wrapHandle`.
 */
export class ForwardingFileSystem implements FileSystem {
  protected readonly inner: FileSystem;

  constructor(inner: FileSystem) {
    this.inner = inner;
  }
  /** The inner filesystem's: a wrapper of the real disk still names real files. */
  get realPaths(): boolean | undefined {
    return this.inner.realPaths;
  }
  /** Wraps each opened handle; the default returns it as it is. */
  protected wrapHandle(handle: FileHandle, _path: string): FileHandle {
    return handle;
  }
  async open(path: string, flags: OpenFlags, mode?: number): Promise<FileHandle> {
    return this.wrapHandle(await this.inner.open(path, flags, mode), path);
  }
  readFile(path: string): Promise<Uint8Array> {
    return this.inner.readFile(path);
  }
  readdir(path: string): Promise<string[]> {
    return this.inner.readdir(path);
  }
  mkdir(path: string, mode: number): Promise<void> {
    return this.inner.mkdir(path, mode);
  }
  rename(from: string, to: string): Promise<void> {
    return this.inner.rename(from, to);
  }
  unlink(path: string): Promise<void> {
    return this.inner.unlink(path);
  }
  syncDir(path: string): Promise<void> {
    return this.inner.syncDir(path);
  }
  stat(path: string): Promise<FileStat> {
    return this.inner.stat(path);
  }
  chmod(path: string, mode: number): Promise<void> {
    return this.inner.chmod(path, mode);
  }
}
