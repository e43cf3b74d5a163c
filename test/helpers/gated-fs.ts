import type { FileHandle, FileSystem } from '../../src/storage/fs-port.ts';
import { ForwardingFileHandle, ForwardingFileSystem } from '../../src/testing/forwarding-fs.ts';

/** Wraps a filesystem, counting calls per op and optionally holding datasyncs until released. */
export class GatedFileSystem extends ForwardingFileSystem {
  readonly counts = new Map<string, number>();
  #gate: Promise<void> | undefined;
  #release: (() => void) | undefined;
  #holdOnlyNext = false;
  #onSyncStart: (() => void)[] = [];

  constructor(inner: FileSystem) {
    super(inner);
  }

  count(op: string): number {
    return this.counts.get(op) ?? 0;
  }

  bump(op: string): void {
    this.counts.set(op, this.count(op) + 1);
  }

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

  /** Called by handles when a datasync starts: wakes `nextSync()` waiters and returns the gate to wait on. */
  syncStarted(): Promise<void> | undefined {
    this.bump('datasync');
    const waiting = this.#onSyncStart;
    this.#onSyncStart = [];
    for (const w of waiting) w();
    const gate = this.#gate;
    if (this.#holdOnlyNext) {
      this.#gate = undefined;
      this.#holdOnlyNext = false;
    }
    return gate;
  }

  protected override wrapHandle(handle: FileHandle): FileHandle {
    return new GatedHandle(handle, this);
  }

  #readGate: { includes: string; open: Promise<void>; release: () => void } | undefined;

  /** From now on, `readFile` of a path containing `includes` waits until `releaseReads()` (a load that hangs). */
  holdReads(includes: string): void {
    let release!: () => void;
    const open = new Promise<void>((r) => (release = r));
    this.#readGate = { includes, open, release };
  }

  releaseReads(): void {
    this.#readGate?.release();
    this.#readGate = undefined;
  }

  override async readFile(p: string): Promise<Uint8Array> {
    this.bump('readFile');
    const gate = this.#readGate;
    if (gate !== undefined && p.includes(gate.includes)) await gate.open;
    return super.readFile(p);
  }

  override unlink(p: string): Promise<void> {
    this.bump('unlink');
    return super.unlink(p);
  }

  override syncDir(p: string): Promise<void> {
    this.bump('syncDir');
    return super.syncDir(p);
  }
}

class GatedHandle extends ForwardingFileHandle {
  readonly #fs: GatedFileSystem;

  constructor(inner: FileHandle, fs: GatedFileSystem) {
    super(inner);
    this.#fs = fs;
  }

  override write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    this.#fs.bump('write');
    return super.write(buffer, offset, length, position);
  }

  override async datasync(): Promise<void> {
    const gate = this.#fs.syncStarted();
    if (gate !== undefined) await gate;
    return super.datasync();
  }

  override sync(): Promise<void> {
    this.#fs.bump('sync');
    return super.sync();
  }
}
