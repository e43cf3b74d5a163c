import { posix as path } from 'node:path';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { assertSessionId } from '../core/ids.ts';
import { ensureDir, hasCode, writeFully, type FileSystem } from '../storage/fs-port.ts';
import { decodeSnapshot, decodeSnapshotHeader, encodeSnapshot, type SnapshotContent } from '../backend/snapshot-codec.ts';

const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
/** `<sid>.<seq, 20 digits>.snap`; session ids contain no dots, so the split is unambiguous. */
const SNAPSHOT_FILE_PATTERN = /^([A-Za-z0-9_-]{1,128})\.(\d{20})\.snap$/;

export function snapshotFileName(sid: string, seq: number): string {
  return `${sid}.${String(seq).padStart(20, '0')}.snap`;
}

export interface SnapshotStoreOptions {
  fs: FileSystem;
  dir: string;
  maxSnapshotsPerSession: number;
  /** Encryption at rest (src/file/keystore.ts): the state as written, and as read back. */
  sealState?: ((sid: string, state: unknown) => unknown) | undefined;
  openState?: ((sid: string, state: unknown) => unknown) | undefined;
}

/** A snapshot that failed its checks, by file. */
export type { DamagedSnapshot } from '../backend/replay.ts';
import type { DamagedSnapshot } from '../backend/replay.ts';

export interface LoadedSnapshot extends SnapshotContent {
  file: string;
}

/**
 * The cold tier: one file per snapshot, `<dir>/<sid>.<seq>.snap`. A snapshot is
 * written to a temp file, synced, renamed into place and the directory synced
 * before `write` resolves; only then may the journal records it covers be
 * released. The newest `maxSnapshotsPerSession` are kept.
 */
export class SnapshotStore {
  readonly #o: SnapshotStoreOptions;
  /** sid → snapshot seqs on disk, ascending */
  readonly #index = new Map<string, number[]>();
  /** sid → seq and header LSN of a snapshot of it this process wrote or checked: what a checkpoint entry is tied to */
  readonly #headers = new Map<string, { seq: number; lsn: number }>();
  removedTempFiles: string[] = [];

  private constructor(options: SnapshotStoreOptions) {
    this.#o = options;
  }

  /** Lists the snapshot directory (creating it), removing orphaned temp files. */
  static async open(options: SnapshotStoreOptions): Promise<SnapshotStore> {
    const store = new SnapshotStore(options);
    const { fs, dir } = options;
    await ensureDir(fs, dir, DIR_MODE);
    let removed = false;
    for (const name of await fs.readdir(dir)) {
      if (name.endsWith('.tmp')) {
        await fs.unlink(path.join(dir, name));
        store.removedTempFiles.push(name);
        removed = true;
        continue;
      }
      const m = SNAPSHOT_FILE_PATTERN.exec(name);
      if (m === null) continue;
      const seqs = store.#index.get(m[1]!) ?? [];
      seqs.push(Number(m[2]));
      store.#index.set(m[1]!, seqs);
    }
    if (removed) await fs.syncDir(dir);
    for (const seqs of store.#index.values()) seqs.sort((a, b) => a - b);
    return store;
  }

  /** Sessions with at least one snapshot file. */
  sessions(): string[] {
    return [...this.#index.keys()];
  }

  /** Seqs of the session's snapshot files, ascending. */
  seqs(sid: string): readonly number[] {
    return this.#index.get(sid) ?? [];
  }

  /** Total number of snapshot files. */
  count(): number {
    let n = 0;
    for (const seqs of this.#index.values()) n += seqs.length;
    return n;
  }

  /**
   * Writes a snapshot durably: temp file → write loop → fdatasync → rename →
   * directory sync. Resolves only when the snapshot would survive a power cut.
   * Then prunes the session's older snapshots beyond `maxSnapshotsPerSession`.
   */
  async write(content: SnapshotContent): Promise<{ file: string; bytes: number }> {
    assertSessionId(content.sid);
    const { fs, dir } = this.#o;
    const bytes = await encodeSnapshot(this.#o.sealState === undefined ? content : { ...content, state: this.#o.sealState(content.sid, content.state) });
    const name = snapshotFileName(content.sid, content.seq);
    const temp = path.join(dir, `${name}.tmp`);
    const handle = await fs.open(temp, 'w+', FILE_MODE);
    try {
      await writeFully(handle, bytes, 0);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await fs.rename(temp, path.join(dir, name));
    await fs.syncDir(dir);
    const seqs = this.#index.get(content.sid) ?? [];
    if (!seqs.includes(content.seq)) {
      seqs.push(content.seq);
      seqs.sort((a, b) => a - b);
    }
    this.#index.set(content.sid, seqs);
    this.#headers.set(content.sid, { seq: content.seq, lsn: content.lsn });
    await this.#prune(content.sid);
    return { file: name, bytes: bytes.length };
  }

  async #prune(sid: string): Promise<void> {
    const seqs = this.#index.get(sid)!;
    while (seqs.length > this.#o.maxSnapshotsPerSession) {
      const seq = seqs[0]!;
      try {
        await this.#o.fs.unlink(path.join(this.#o.dir, snapshotFileName(sid, seq)));
      } catch (err) {
        if (!hasCode(err, 'ENOENT')) throw err;
      }
      seqs.shift();
    }
    await this.#o.fs.syncDir(this.#o.dir);
  }

  /**
   * The newest snapshot of `sid` that passes its checks, and every newer one
   * that did not (each is skipped in favour of the previous one plus a longer
   * replay). `upToSeq` ignores snapshots beyond it.
   */
  async loadNewest(sid: string, upToSeq = Number.MAX_SAFE_INTEGER): Promise<{ snapshot: LoadedSnapshot | undefined; damaged: DamagedSnapshot[] }> {
    const damaged: DamagedSnapshot[] = [];
    const seqs = this.#index.get(sid) ?? [];
    for (let i = seqs.length - 1; i >= 0; i -= 1) {
      const seq = seqs[i]!;
      if (seq > upToSeq) continue;
      const file = snapshotFileName(sid, seq);
      let bytes: Uint8Array;
      try {
        bytes = await this.#o.fs.readFile(path.join(this.#o.dir, file));
      } catch (err) {
        if (hasCode(err, 'ENOENT')) continue;
        throw new ArborError(ErrorCodes.IO_ERROR, `cannot read snapshot ${file}: ${(err as Error).message}`, { sessionId: sid, file }, { cause: err });
      }
      const content = await decodeSnapshot(bytes);
      if (typeof content === 'string') {
        damaged.push({ file, reason: content });
        continue;
      }
      if (content.sid !== sid || content.seq !== seq) {
        damaged.push({ file, reason: `header names session ${content.sid} seq ${content.seq}, not the file name's` });
        continue;
      }
      if (this.#o.openState !== undefined) {
        try {
          content.state = this.#o.openState(sid, content.state);
        } catch (err) {
          damaged.push({ file, reason: `the state does not open: ${(err as Error).message}` });
          continue;
        }
      }
      if (seq === seqs.at(-1)) this.#headers.set(sid, { seq, lsn: content.lsn });
      return { snapshot: { ...content, file }, damaged };
    }
    return { snapshot: undefined, damaged };
  }

  /**
   * The session's newest snapshot file, checked without decompressing it: its
   * seq and the LSN its header names (the journal's synced LSN when it was
   * written) when it passes its checksum and names the right session and seq,
   * 'damaged' when it does not (or cannot be read),
   * undefined when the session has no snapshot. What the whole-table checkpoint
   * relies on when one of its entries stands in for that snapshot.
   */
  async newestMeta(sid: string): Promise<{ seq: number; lsn: number } | 'damaged' | undefined> {
    const seq = this.#index.get(sid)?.at(-1);
    if (seq === undefined) return undefined;
    let bytes: Uint8Array;
    try {
      bytes = await this.#o.fs.readFile(path.join(this.#o.dir, snapshotFileName(sid, seq)));
    } catch {
      // Unreadable is not intact; the caller falls back to plain recovery, which reports the file itself.
      return 'damaged';
    }
    const meta = decodeSnapshotHeader(bytes);
    if (typeof meta === 'string' || meta.sid !== sid || meta.seq !== seq) return 'damaged';
    this.#headers.set(sid, { seq, lsn: meta.lsn });
    return { seq, lsn: meta.lsn };
  }

  /**
   * The header LSN of the session's newest snapshot when it is at `seq` and
   * this process wrote or checked it (no I/O): a whole-table checkpoint entry
   * at that seq records it, so that the next start can take the entry in place
   * of that snapshot once its header names the same LSN.
   */
  newestLsnAt(sid: string, seq: number): number | undefined {
    const known = this.#headers.get(sid);
    return known !== undefined && known.seq === seq && this.#index.get(sid)?.at(-1) === seq ? known.lsn : undefined;
  }

  /**
   * Unlinks the session's snapshot files (a deleted session), then syncs the
   * directory. With `upToLsn`, only those whose header says they were written
   * at or below that LSN (a new session with the same id keeps its own).
   */
  async removeSession(sid: string, upToLsn?: number): Promise<void> {
    assertSessionId(sid);
    const seqs = this.#index.get(sid);
    if (seqs === undefined) return;
    const { fs, dir } = this.#o;
    for (const seq of [...seqs]) {
      const file = path.join(dir, snapshotFileName(sid, seq));
      if (upToLsn !== undefined) {
        let meta: ReturnType<typeof decodeSnapshotHeader> | undefined;
        try {
          meta = decodeSnapshotHeader(await fs.readFile(file));
        } catch (err) {
          if (!hasCode(err, 'ENOENT')) throw err;
        }
        // A header that does not decode cannot prove it is newer: it goes too.
        if (meta !== undefined && typeof meta !== 'string' && meta.lsn > upToLsn) continue;
      }
      try {
        await fs.unlink(file);
      } catch (err) {
        if (!hasCode(err, 'ENOENT')) throw err;
      }
      seqs.splice(seqs.indexOf(seq), 1);
    }
    if (seqs.length === 0) this.#index.delete(sid);
    await fs.syncDir(dir);
  }

  /** Verifies every snapshot file; for `verify`-style checks. */
  async verifyAll(): Promise<DamagedSnapshot[]> {
    const damaged: DamagedSnapshot[] = [];
    for (const [sid, seqs] of this.#index) {
      for (const seq of seqs) {
        const file = snapshotFileName(sid, seq);
        const content = await decodeSnapshot(await this.#o.fs.readFile(path.join(this.#o.dir, file)));
        if (typeof content === 'string') damaged.push({ file, reason: content });
      }
    }
    return damaged;
  }
}
