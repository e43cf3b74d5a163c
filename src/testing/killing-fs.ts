import type { FileHandle, FileSystem } from '../storage/fs-port.ts';
import { ForwardingFileHandle, ForwardingFileSystem } from './forwarding-fs.ts';
import type { KillPoint, KillSwitch } from './kill-switch.ts';

const isWal = (p: string): boolean => p.endsWith('.wal');
const isWalTmp = (p: string): boolean => p.endsWith('.wal.tmp');
const isSnapTmp = (p: string): boolean => p.endsWith('.snap.tmp');

/**
 * A file handle that knows its file's current path and fires the kill switch
 * at the write and sync points. The path follows renames: the journal opens a
 * new segment as `<lsn>.wal.tmp`, writes its header, renames it to
 * `<lsn>.wal`, then appends batches through the same handle.
 */
class KillingFileHandle extends ForwardingFileHandle {
  readonly #ks: KillSwitch;
  readonly #onClose: (h: KillingFileHandle) => void;
  path: string;

  constructor(inner: FileHandle, path: string, ks: KillSwitch, onClose: (h: KillingFileHandle) => void) {
    super(inner);
    this.path = path;
    this.#ks = ks;
    this.#onClose = onClose;
  }

  override async write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    const torn = (isWal(this.path) && this.#ks.hit('mid-batch-write', 'half-written')) || (isSnapTmp(this.path) && this.#ks.hit('mid-snapshot', 'tmp-half-written'));
    if (torn) {
      // Only the first half of the bytes reaches the file.
      await super.write(buffer, offset, Math.max(1, Math.floor(length / 2)), position);
      this.#ks.fire();
    }
    return super.write(buffer, offset, length, position);
  }

  override async datasync(): Promise<void> {
    if (isWal(this.path) && this.#ks.hit('after-write-before-sync', 'before-datasync')) this.#ks.fire();
    await super.datasync();
    if (isWal(this.path) && this.#ks.hit('after-sync-before-ack', 'after-datasync')) this.#ks.fire();
  }

  override close(): Promise<void> {
    this.#onClose(this);
    return super.close();
  }
}

/**
 * A filesystem that SIGKILLs this process at the kill switch's point in
 * Arbor's file storage (journal segment writes, syncs, rotation and deletion;
 * snapshot writes and renames), and otherwise forwards to `inner`, usually a
 * `NodeFileSystem`. Give it to `createArbor` or `openStore` as `fs` in a crash
 * child; see `KILL_POINTS` for the points.
 */
export class KillingFileSystem extends ForwardingFileSystem {
  readonly #ks: KillSwitch;
  /** open handles, so a rename can update their paths */
  readonly #handles = new Set<KillingFileHandle>();

  constructor(inner: FileSystem, killSwitch: KillSwitch) {
    super(inner);
    this.#ks = killSwitch;
  }

  protected override wrapHandle(handle: FileHandle, path: string): FileHandle {
    const wrapped = new KillingFileHandle(handle, path, this.#ks, (h) => this.#handles.delete(h));
    this.#handles.add(wrapped);
    return wrapped;
  }

  override async rename(from: string, to: string): Promise<void> {
    const point: KillPoint | undefined = isSnapTmp(from) ? 'mid-snapshot' : isWalTmp(from) ? 'mid-rotation' : undefined;
    if (point !== undefined && this.#ks.hit(point, 'before-rename')) this.#ks.fire();
    await super.rename(from, to);
    for (const h of this.#handles) if (h.path === from) h.path = to;
    if (point !== undefined && this.#ks.hit(point, 'after-rename')) this.#ks.fire();
  }

  override async unlink(path: string): Promise<void> {
    await super.unlink(path);
    if (isWal(path) && this.#ks.hit('mid-deletion', 'after-unlink')) this.#ks.fire();
  }
}
