import type { FileHandle, FileSystem, OpenFlags } from '../../src/storage/fs-port.ts';

/** Wraps a filesystem, counting calls per op and optionally holding every datasync until released. */
export class GatedFileSystem implements FileSystem {
  readonly counts = new Map<string, number>();
  #gate: Promise<void> | undefined;
  #release: (() => void) | undefined;
  #onSyncStart: (() => void)[] = [];
  readonly inner: FileSystem;

  constructor(inner: FileSystem) {
    this.inner = inner;
  }

  count(op: string): number {
    return this.counts.get(op) ?? 0;
  }

  #bump(op: string): void {
    this.counts.set(op, this.count(op) + 1);
  }

  #holdOnlyNext = false;

  /** From now on, datasync waits until `release()`. */
  hold(): void {
    this.#gate = new Promise((r) => (this.#release = r));
  }

  /** Only the next datasync waits until `release()`; later ones run at once. */
  holdNext(): void {
    this.hold();
    this.#holdOnlyNext = true;
  }

  release(): void {
    this.#release?.();
    this.#gate = undefined;
  }

  /** Resolves when the next datasync starts. */
  nextSync(): Promise<void> {
    return new Promise((r) => this.#onSyncStart.push(r));
  }

  #wrap(h: FileHandle): FileHandle {
    return {
      write: (...a) => (this.#bump('write'), h.write(...a)),
      read: (...a) => h.read(...a),
      datasync: async () => {
        this.#bump('datasync');
        const waiting = this.#onSyncStart;
        this.#onSyncStart = [];
        for (const w of waiting) w();
        const gate = this.#gate;
        if (this.#holdOnlyNext) {
          this.#gate = undefined;
          this.#holdOnlyNext = false;
        }
        if (gate !== undefined) await gate;
        return h.datasync();
      },
      sync: () => (this.#bump('sync'), h.sync()),
      truncate: (n) => h.truncate(n),
      stat: () => h.stat(),
      close: () => h.close(),
    };
  }

  async open(path: string, flags: OpenFlags, mode?: number): Promise<FileHandle> {
    return this.#wrap(await this.inner.open(path, flags, mode));
  }
  readFile(p: string) {
    return this.inner.readFile(p);
  }
  readdir(p: string) {
    return this.inner.readdir(p);
  }
  mkdir(p: string, m: number) {
    return this.inner.mkdir(p, m);
  }
  rename(a: string, b: string) {
    return this.inner.rename(a, b);
  }
  unlink(p: string) {
    this.#bump('unlink');
    return this.inner.unlink(p);
  }
  syncDir(p: string) {
    this.#bump('syncDir');
    return this.inner.syncDir(p);
  }
  stat(p: string) {
    return this.inner.stat(p);
  }
  chmod(p: string, m: number) {
    return this.inner.chmod(p, m);
  }
}
