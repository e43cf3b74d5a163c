/**
 * An in-memory `FileSystem` that models POSIX durability strictly, for
 * deterministic crash tests and fault injection.
 *
 * It keeps two views of the world:
 * - the CURRENT state, what a running process sees (every completed call applied);
 * - the DURABLE state, what survives a power cut;
 * and an ordered list of PENDING operations, each mutating call appending one.
 *
 * - `datasync()` makes the file's pending writes and truncates durable; `sync()`
 *   also its pending chmods. Neither makes the file's directory entry durable.
 * - `syncDir(dir)` marks the pending entry operations (create, mkdir, rename,
 *   unlink) touching `dir`, and chmods of `dir` itself, as synced. An entry op
 *   becomes durable once every directory it touches has been synced after it
 *   (both sides for a cross-directory rename) and no earlier op on the same
 *   directory entry is still pending (so entries never apply out of order).
 * - An inode with no durable directory entry is gone after a crash.
 *
 * `crashImage(rng)` / `crashImageWith(keep, tear)` build a new filesystem from
 * the durable state plus a prefix of the pending operations, optionally tearing
 * the next write at a 512-byte sector boundary. `freezeAfter(n)` simulates the
 * process dying after its n-th filesystem call; `injectFault` fails chosen calls.
 *
 * File contents live in 4 KiB chunks shared copy-on-write between states, so a
 * crash image costs O(inodes) plus the chunks its replayed operations touch.
 * Every method settles on microtasks only (no timers, no real I/O).
 */
import { posix } from 'node:path';
import { errnoError } from '../storage/fs-port.ts';
import type { FileHandle, FileStat, FileSystem, OpenFlags } from '../storage/fs-port.ts';

/** The calls faults can target: every `FileSystem` method, and the `FileHandle` ones (`fstat` is `handle.stat`). */
export type FsOp =
  | 'open'
  | 'readFile'
  | 'readdir'
  | 'mkdir'
  | 'rename'
  | 'unlink'
  | 'syncDir'
  | 'stat'
  | 'chmod'
  | 'write'
  | 'read'
  | 'datasync'
  | 'sync'
  | 'truncate'
  | 'fstat'
  | 'close';

export interface FaultSpec {
  /** Which calls match; every call when omitted. */
  op?: FsOp | FsOp[];
  /** The k-th matching call (1-based, counted from injection) fires; default 1. */
  at?: number;
  /** Error code to fail with; default 'EIO'. */
  error?: 'EIO' | 'ENOSPC';
  /** Fail the `at`-th matching call and every later one; default false (once). */
  persistent?: boolean;
  /**
   * Instead of failing, a matching `write` writes only min(shortWrite, length)
   * bytes and returns that count. A fault with `shortWrite` matches `write` calls only.
   */
  shortWrite?: number;
  /** Only calls whose path (the handle's open path for handle calls; either side of a rename) contains this. */
  pathIncludes?: string;
}

export interface MemoryFileSystemOptions {
  /** A write or growing truncate that would push the sum of all file sizes past this fails with ENOSPC. */
  capacityBytes?: number;
  /**
   * When true, a failed (injected) `datasync`/`sync` drops the file's pending
   * data operations from the pending list without making them durable, as Linux
   * does when it marks dirty pages clean after a writeback error: the running
   * process still reads the bytes, a later successful fsync "succeeds", and a
   * crash loses them. Default false: a failed fsync leaves them pending.
   */
  fsyncErrorLosesData?: boolean;
}

export type TearMode = 'none' | 'prefix' | 'zeros';

// ---------------------------------------------------------------------------
// Inodes and states

const CHUNK = 4096;
const SECTOR = 512;
const ROOT_INO = 1;

interface FileNode {
  kind: 'file';
  mode: number;
  /** Mode at creation; what a durable copy starts with when an op materialises it. */
  initMode: number;
  size: number;
  /** ceil(size / CHUNK) entries; `undefined` is an all-zero chunk. Bytes past `size` are always zero. */
  chunks: (Uint8Array | undefined)[];
  /** Per-chunk ownership (may mutate in place); `null` = the chunk array itself is shared too. */
  own: boolean[] | null;
  /** Current state only: directory entries naming it (0 or 1) and open handles. */
  nlink: number;
  open: number;
}

interface DirNode {
  kind: 'dir';
  mode: number;
  initMode: number;
  entries: Map<string, number>;
  /** The entries map is shared with another state: copy before mutating. */
  shared: boolean;
  nlink: number;
  open: number;
}

type Node = FileNode | DirNode;

function newFile(mode: number): FileNode {
  return { kind: 'file', mode, initMode: mode, size: 0, chunks: [], own: [], nlink: 0, open: 0 };
}

function newDir(mode: number): DirNode {
  return { kind: 'dir', mode, initMode: mode, entries: new Map(), shared: false, nlink: 0, open: 0 };
}

/** Shares everything with `n` copy-on-write; both sides lose in-place ownership. */
function cloneNode(n: Node): Node {
  if (n.kind === 'file') {
    n.own = null;
    return { ...n, own: null };
  }
  n.shared = true;
  return { ...n, shared: true };
}

function mutEntries(d: DirNode): Map<string, number> {
  if (d.shared) {
    d.entries = new Map(d.entries);
    d.shared = false;
  }
  return d.entries;
}

function ownChunks(f: FileNode): boolean[] {
  if (f.own === null) {
    f.chunks = f.chunks.slice();
    f.own = [];
  }
  return f.own;
}

function writableChunk(f: FileNode, ci: number): Uint8Array {
  const own = ownChunks(f);
  const existing = f.chunks[ci];
  if (own[ci] === true && existing !== undefined) return existing;
  const c = new Uint8Array(CHUNK);
  if (existing !== undefined) c.set(existing);
  f.chunks[ci] = c;
  own[ci] = true;
  return c;
}

/** Writes `src` at `pos`; `src` must never be mutated afterwards (whole chunks may alias it). */
function fileWrite(f: FileNode, pos: number, src: Uint8Array): void {
  if (src.length === 0) return;
  const own = ownChunks(f);
  const end = pos + src.length;
  const newSize = Math.max(f.size, end);
  const need = Math.ceil(newSize / CHUNK);
  while (f.chunks.length < need) f.chunks.push(undefined);
  let p = pos;
  let s = 0;
  while (s < src.length) {
    const ci = Math.floor(p / CHUNK);
    const co = p % CHUNK;
    const n = Math.min(CHUNK - co, src.length - s);
    if (n === CHUNK) {
      // A whole chunk: alias the immutable source bytes, copy only if later mutated.
      f.chunks[ci] = src.subarray(s, s + n);
      own[ci] = false;
    } else {
      writableChunk(f, ci).set(src.subarray(s, s + n), co);
    }
    p += n;
    s += n;
  }
  f.size = newSize;
}

function fileTruncate(f: FileNode, len: number): void {
  if (len === f.size) return;
  const own = ownChunks(f);
  const need = Math.ceil(len / CHUNK);
  if (len < f.size) {
    f.chunks.length = need;
    if (own.length > need) own.length = need;
    const tail = len % CHUNK;
    if (tail !== 0 && f.chunks[need - 1] !== undefined) writableChunk(f, need - 1).fill(0, tail);
  } else {
    while (f.chunks.length < need) f.chunks.push(undefined);
  }
  f.size = len;
}

function fileRead(f: FileNode, pos: number, dst: Uint8Array, dstOff: number, length: number): number {
  const n = Math.max(0, Math.min(length, f.size - pos));
  let p = pos;
  let d = dstOff;
  const end = pos + n;
  while (p < end) {
    const ci = Math.floor(p / CHUNK);
    const co = p % CHUNK;
    const m = Math.min(CHUNK - co, end - p);
    const c = f.chunks[ci];
    if (c === undefined) dst.fill(0, d, d + m);
    else dst.set(c.subarray(co, co + m), d);
    p += m;
    d += m;
  }
  return n;
}

function fileContent(f: FileNode): Uint8Array {
  const out = new Uint8Array(f.size);
  fileRead(f, 0, out, 0, f.size);
  return out;
}

class State {
  nodes: Map<number, Node>;
  constructor(nodes?: Map<number, Node>) {
    this.nodes = nodes ?? new Map<number, Node>([[ROOT_INO, newDir(0o755)]]);
  }
  clone(): State {
    const nodes = new Map<number, Node>();
    for (const [ino, n] of this.nodes) nodes.set(ino, cloneNode(n));
    return new State(nodes);
  }
  /** The file `ino`, created empty with `mode` when this state does not have it yet. */
  file(ino: number, mode: number): FileNode {
    const n = this.nodes.get(ino);
    if (n !== undefined) {
      if (n.kind !== 'file') throw new Error(`memory-fs invariant: inode ${ino} is not a file`);
      return n;
    }
    const f = newFile(mode);
    this.nodes.set(ino, f);
    return f;
  }
  dir(ino: number, mode: number): DirNode {
    const n = this.nodes.get(ino);
    if (n !== undefined) {
      if (n.kind !== 'dir') throw new Error(`memory-fs invariant: inode ${ino} is not a directory`);
      return n;
    }
    const d = newDir(mode);
    this.nodes.set(ino, d);
    return d;
  }
}

// ---------------------------------------------------------------------------
// Pending operations

interface WriteOp {
  kind: 'write';
  ino: number;
  pos: number;
  /** A private copy, never mutated. */
  bytes: Uint8Array;
  initMode: number;
}
interface TruncateOp {
  kind: 'truncate';
  ino: number;
  len: number;
  initMode: number;
}
interface ChmodOp {
  kind: 'chmod';
  ino: number;
  mode: number;
  isDir: boolean;
  initMode: number;
}
interface EntryBase {
  /** Directories that must still be synced (after this op) before it can become durable. */
  unsynced: Set<number>;
  /** `dirIno/name` keys of the entries it changes, to keep same-entry ops in order. */
  keys: string[];
}
interface CreateOp extends EntryBase {
  kind: 'create';
  dir: number;
  dirInit: number;
  name: string;
  ino: number;
  mode: number;
}
interface MkdirOp extends EntryBase {
  kind: 'mkdir';
  dir: number;
  dirInit: number;
  name: string;
  ino: number;
  mode: number;
}
interface RenameOp extends EntryBase {
  kind: 'rename';
  fromDir: number;
  fromInit: number;
  fromName: string;
  toDir: number;
  toInit: number;
  toName: string;
  ino: number;
  isDir: boolean;
  initMode: number;
}
interface UnlinkOp extends EntryBase {
  kind: 'unlink';
  dir: number;
  dirInit: number;
  name: string;
  ino: number;
}
type EntryOp = CreateOp | MkdirOp | RenameOp | UnlinkOp;
type PendingOp = WriteOp | TruncateOp | ChmodOp | EntryOp;

function isEntryOp(op: PendingOp): op is EntryOp {
  return op.kind === 'create' || op.kind === 'mkdir' || op.kind === 'rename' || op.kind === 'unlink';
}

function entryKey(dir: number, name: string): string {
  return `${dir}/${name}`;
}

/** Applies `op` to `state`; returns inodes whose directory entry it removed. */
function applyOp(state: State, op: PendingOp): number[] {
  switch (op.kind) {
    case 'write':
      fileWrite(state.file(op.ino, op.initMode), op.pos, op.bytes);
      return [];
    case 'truncate':
      fileTruncate(state.file(op.ino, op.initMode), op.len);
      return [];
    case 'chmod': {
      const n = op.isDir ? state.dir(op.ino, op.initMode) : state.file(op.ino, op.initMode);
      n.mode = op.mode;
      return [];
    }
    case 'create':
    case 'mkdir': {
      const parent = state.dir(op.dir, op.dirInit);
      if (op.kind === 'create') state.file(op.ino, op.mode);
      else state.dir(op.ino, op.mode);
      const entries = mutEntries(parent);
      const old = entries.get(op.name);
      entries.set(op.name, op.ino);
      return old !== undefined && old !== op.ino ? [old] : [];
    }
    case 'rename': {
      const from = state.dir(op.fromDir, op.fromInit);
      const to = state.dir(op.toDir, op.toInit);
      if (op.isDir) state.dir(op.ino, op.initMode);
      else state.file(op.ino, op.initMode);
      const fromEntries = mutEntries(from);
      if (fromEntries.get(op.fromName) === op.ino) fromEntries.delete(op.fromName);
      const toEntries = mutEntries(to);
      const old = toEntries.get(op.toName);
      toEntries.set(op.toName, op.ino);
      return old !== undefined && old !== op.ino ? [old] : [];
    }
    case 'unlink': {
      const entries = mutEntries(state.dir(op.dir, op.dirInit));
      const old = entries.get(op.name);
      entries.delete(op.name);
      return old !== undefined ? [old] : [];
    }
  }
}

function opReferences(op: PendingOp, ino: number): boolean {
  if (op.ino === ino) return true;
  if (op.kind === 'rename') return op.fromDir === ino || op.toDir === ino;
  if (op.kind === 'create' || op.kind === 'mkdir' || op.kind === 'unlink') return op.dir === ino;
  return false;
}

/** Drops every inode not reachable from the root; resets link counts as a fresh mount sees them. */
function collectGarbage(state: State): void {
  const reachable = new Set<number>([ROOT_INO]);
  const stack = [ROOT_INO];
  while (stack.length > 0) {
    const n = state.nodes.get(stack.pop() as number);
    if (n === undefined || n.kind !== 'dir') continue;
    for (const child of n.entries.values()) {
      if (reachable.has(child)) continue;
      reachable.add(child);
      stack.push(child);
    }
  }
  for (const [ino, n] of state.nodes) {
    if (!reachable.has(ino)) {
      state.nodes.delete(ino);
      continue;
    }
    n.nlink = ino === ROOT_INO ? 0 : 1;
    n.open = 0;
    n.initMode = n.mode;
  }
}

// ---------------------------------------------------------------------------
// Paths

function normalise(path: string): string {
  return posix.resolve('/', path);
}

function splitPath(path: string): string[] {
  const p = normalise(path);
  return p === '/' ? [] : p.slice(1).split('/');
}

// ---------------------------------------------------------------------------
// Faults

interface ActiveFault {
  ops: ReadonlySet<FsOp> | null;
  at: number;
  error: 'EIO' | 'ENOSPC';
  persistent: boolean;
  shortWrite: number | undefined;
  pathIncludes: string | undefined;
  seen: number;
}

type Fired = { error: 'EIO' | 'ENOSPC' } | { shortWrite: number };

const NEVER_SETTLES = (): Promise<never> => new Promise<never>(() => {});

// ---------------------------------------------------------------------------

/** Seeded PRNG (mulberry32): deterministic floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface HandleState {
  ino: number;
  path: string;
  writable: boolean;
  closed: boolean;
}

export class MemoryFileSystem implements FileSystem {
  readonly #options: MemoryFileSystemOptions;
  #current: State;
  #durable: State;
  #pending: PendingOp[] = [];
  #nextIno: number;
  #usedBytes = 0;
  #calls = 0;
  #freezeAt = Number.POSITIVE_INFINITY;
  #frozen = false;
  #faults: ActiveFault[] = [];
  #faultsFired = 0;

  constructor(options: MemoryFileSystemOptions = {}) {
    this.#options = { ...options };
    this.#current = new State();
    this.#durable = this.#current.clone();
    this.#nextIno = ROOT_INO + 1;
  }

  /** A filesystem whose current and durable states are both `image` (already garbage-collected). */
  static #fromImage(image: State, options: MemoryFileSystemOptions, nextIno: number): MemoryFileSystem {
    const fs = new MemoryFileSystem(options);
    fs.#current = image;
    fs.#durable = image.clone();
    fs.#nextIno = nextIno;
    let used = 0;
    for (const n of image.nodes.values()) if (n.kind === 'file') used += n.size;
    fs.#usedBytes = used;
    return fs;
  }

  // ---- test controls (none of these count as calls) ----

  /** Calls made so far, including ones swallowed by a freeze. */
  get callCount(): number {
    return this.#calls;
  }

  /** True once a call has been swallowed by `freezeAfter`. */
  get frozen(): boolean {
    return this.#frozen;
  }

  /** Injected faults that fired (failed calls and short writes). */
  get faultsFired(): number {
    return this.#faultsFired;
  }

  /**
   * Calls number 1..n (counted since construction, see `callCount`) run normally;
   * every later call returns a promise that never settles and has no effect.
   */
  freezeAfter(n: number): void {
    if (!(n >= 0)) throw new RangeError(`freezeAfter: n must be >= 0, got ${n}`);
    this.#freezeAt = n;
  }

  injectFault(fault: FaultSpec): void {
    const at = fault.at ?? 1;
    if (!Number.isInteger(at) || at < 1) throw new RangeError(`injectFault: at must be an integer >= 1, got ${at}`);
    if (fault.shortWrite !== undefined && !(fault.shortWrite >= 0)) {
      throw new RangeError(`injectFault: shortWrite must be >= 0, got ${fault.shortWrite}`);
    }
    let ops: Set<FsOp> | null = null;
    if (fault.op !== undefined) ops = new Set(Array.isArray(fault.op) ? fault.op : [fault.op]);
    if (fault.shortWrite !== undefined) ops = new Set<FsOp>(ops === null || ops.has('write') ? ['write'] : []);
    this.#faults.push({
      ops,
      at,
      error: fault.error ?? 'EIO',
      persistent: fault.persistent ?? false,
      shortWrite: fault.shortWrite,
      pathIncludes: fault.pathIncludes,
      seen: 0,
    });
  }

  clearFaults(): void {
    this.#faults = [];
  }

  /** Operations applied to the current state but not yet durable. */
  pendingCount(): number {
    return this.#pending.length;
  }

  /** Whether `path` exists (file or directory) in the current state. Not a call. */
  exists(path: string): boolean {
    try {
      this.#resolve(path, 'exists');
      return true;
    } catch {
      return false;
    }
  }

  /** Path → a copy of the current content of every reachable file. Not a call. */
  dump(): Record<string, Uint8Array> {
    const out: Record<string, Uint8Array> = {};
    const walk = (ino: number, path: string): void => {
      const n = this.#current.nodes.get(ino);
      if (n === undefined) return;
      if (n.kind === 'file') {
        out[path] = fileContent(n);
        return;
      }
      for (const [name, child] of n.entries) walk(child, path === '/' ? `/${name}` : `${path}/${name}`);
    };
    walk(ROOT_INO, '/');
    return out;
  }

  /**
   * A simulated power cut: a new filesystem holding the durable state plus a
   * random prefix of the pending operations (k uniform in 0..pendingCount());
   * if the next op is a write, with probability 1/2 it is torn at a sector
   * boundary (and, if it extended the file, zero-filled to its end with
   * probability 1/2). `this` is not modified.
   */
  crashImage(rng: () => number): MemoryFileSystem {
    const n = this.#pending.length;
    const keep = Math.min(n, Math.floor(rng() * (n + 1)));
    const next = this.#pending[keep];
    if (next !== undefined && next.kind === 'write' && rng() < 0.5) {
      const tearBytes = Math.floor(rng() * next.bytes.length);
      const tear: TearMode = rng() < 0.5 ? 'zeros' : 'prefix';
      return this.crashImageWith(keep, tear, tearBytes);
    }
    return this.crashImageWith(keep, 'none');
  }

  /**
   * Deterministic crash image: durable state + the first `keep` pending ops.
   * If `tear` is not 'none' and pending op `keep` (0-based) is a write, it is
   * torn: its first `tearBytes` bytes (default: all but the last), rounded down
   * so the kept part ends on a 512-byte boundary of the file offset, are
   * applied; with 'zeros', if the write extended the file, the file is then
   * extended with zeros up to the write's end. Otherwise `tear` is ignored.
   */
  crashImageWith(keep: number, tear: TearMode, tearBytes?: number): MemoryFileSystem {
    if (!Number.isInteger(keep) || keep < 0 || keep > this.#pending.length) {
      throw new RangeError(`crashImageWith: keep must be an integer in 0..${this.#pending.length}, got ${keep}`);
    }
    const image = this.#durable.clone();
    for (let i = 0; i < keep; i++) applyOp(image, this.#pending[i] as PendingOp);
    const next = this.#pending[keep];
    if (tear !== 'none' && next !== undefined && next.kind === 'write') {
      const len = next.bytes.length;
      const t = Math.max(0, Math.min(len, Math.floor(tearBytes ?? len - 1)));
      const kept = Math.max(0, Math.floor((next.pos + t) / SECTOR) * SECTOR - next.pos);
      const f = image.file(next.ino, next.initMode);
      const oldSize = f.size;
      if (kept > 0) fileWrite(f, next.pos, next.bytes.subarray(0, kept));
      const end = next.pos + len;
      if (tear === 'zeros' && end > oldSize && end > f.size) fileTruncate(f, end);
    }
    collectGarbage(image);
    return MemoryFileSystem.#fromImage(image, this.#options, this.#nextIno);
  }

  // ---- FileSystem ----

  open(path: string, flags: OpenFlags, mode = 0o600): Promise<FileHandle> {
    return this.#call('open', [path], () => {
      const { dirIno, dir, name } = this.#parent(path, 'open');
      const existing = dir.entries.get(name);
      let ino: number;
      if (existing !== undefined) {
        const node = this.#node(existing);
        if (flags === 'wx+') throw errnoError('EEXIST', 'open', path);
        if (node.kind === 'dir') throw errnoError('EISDIR', 'open', path);
        if (flags === 'w+' && node.size > 0) {
          this.#usedBytes -= node.size;
          fileTruncate(node, 0);
          this.#pending.push({ kind: 'truncate', ino: existing, len: 0, initMode: node.initMode });
        }
        ino = existing;
      } else {
        if (flags === 'r' || flags === 'r+') throw errnoError('ENOENT', 'open', path);
        ino = this.#addEntry('create', dir, dirIno, name, mode);
      }
      this.#node(ino).open++;
      return this.#makeHandle({ ino, path: normalise(path), writable: flags !== 'r', closed: false });
    });
  }

  /** A new file or directory named `name` in `dir`: current at once, durable after a sync of `dir`. */
  #addEntry(kind: 'create' | 'mkdir', dir: DirNode, dirIno: number, name: string, mode: number): number {
    const ino = this.#nextIno++;
    const perm = mode & 0o777;
    const node = kind === 'create' ? newFile(perm) : newDir(perm);
    node.nlink = 1;
    this.#current.nodes.set(ino, node);
    mutEntries(dir).set(name, ino);
    this.#pending.push({ kind, dir: dirIno, dirInit: dir.initMode, name, ino, mode: perm, unsynced: new Set([dirIno]), keys: [entryKey(dirIno, name)] });
    return ino;
  }

  readFile(path: string): Promise<Uint8Array> {
    return this.#call('readFile', [path], () => {
      const { node } = this.#resolve(path, 'readFile');
      if (node.kind === 'dir') throw errnoError('EISDIR', 'readFile', path);
      return fileContent(node);
    });
  }

  readdir(path: string): Promise<string[]> {
    return this.#call('readdir', [path], () => {
      const { node } = this.#resolve(path, 'readdir');
      if (node.kind !== 'dir') throw errnoError('ENOTDIR', 'readdir', path);
      return [...node.entries.keys()];
    });
  }

  mkdir(path: string, mode: number): Promise<void> {
    return this.#call('mkdir', [path], () => {
      const parts = splitPath(path);
      let dirIno = ROOT_INO;
      for (let i = 0; i < parts.length; i++) {
        const name = parts[i] as string;
        const dir = this.#node(dirIno) as DirNode;
        const child = dir.entries.get(name);
        if (child !== undefined) {
          if (this.#node(child).kind !== 'dir') {
            throw errnoError(i === parts.length - 1 ? 'EEXIST' : 'ENOTDIR', 'mkdir', path);
          }
          dirIno = child;
          continue;
        }
        dirIno = this.#addEntry('mkdir', dir, dirIno, name, mode);
      }
    });
  }

  rename(from: string, to: string): Promise<void> {
    return this.#call('rename', [from, to], () => {
      const src = this.#parent(from, 'rename');
      const dst = this.#parent(to, 'rename');
      const ino = src.dir.entries.get(src.name);
      if (ino === undefined) throw errnoError('ENOENT', 'rename', from);
      const fromPath = normalise(from);
      const toPath = normalise(to);
      if (fromPath === toPath) return;
      const node = this.#node(ino);
      const target = dst.dir.entries.get(dst.name);
      const targetNode = target === undefined ? undefined : this.#node(target);
      if (node.kind === 'dir') {
        if (toPath.startsWith(`${fromPath}/`)) throw errnoError('EINVAL', 'rename', to);
        if (targetNode?.kind === 'file') throw errnoError('ENOTDIR', 'rename', to);
        if (targetNode?.kind === 'dir' && targetNode.entries.size > 0) throw errnoError('ENOTEMPTY', 'rename', to);
      } else if (targetNode?.kind === 'dir') {
        throw errnoError('EISDIR', 'rename', to);
      }
      mutEntries(src.dir).delete(src.name);
      mutEntries(dst.dir).set(dst.name, ino);
      this.#pending.push({
        kind: 'rename',
        fromDir: src.dirIno,
        fromInit: src.dir.initMode,
        fromName: src.name,
        toDir: dst.dirIno,
        toInit: dst.dir.initMode,
        toName: dst.name,
        ino,
        isDir: node.kind === 'dir',
        initMode: node.initMode,
        unsynced: new Set([src.dirIno, dst.dirIno]),
        keys: [entryKey(src.dirIno, src.name), entryKey(dst.dirIno, dst.name)],
      });
      if (target !== undefined && targetNode !== undefined) {
        targetNode.nlink--;
        this.#maybeFree(target);
      }
    });
  }

  unlink(path: string): Promise<void> {
    return this.#call('unlink', [path], () => {
      const { dirIno, dir, name } = this.#parent(path, 'unlink');
      const ino = dir.entries.get(name);
      if (ino === undefined) throw errnoError('ENOENT', 'unlink', path);
      const node = this.#node(ino);
      if (node.kind === 'dir') throw errnoError('EISDIR', 'unlink', path);
      mutEntries(dir).delete(name);
      this.#pending.push({
        kind: 'unlink',
        dir: dirIno,
        dirInit: dir.initMode,
        name,
        ino,
        unsynced: new Set([dirIno]),
        keys: [entryKey(dirIno, name)],
      });
      node.nlink--;
      this.#maybeFree(ino);
    });
  }

  syncDir(path: string): Promise<void> {
    return this.#call('syncDir', [path], () => {
      const { ino, node } = this.#resolve(path, 'syncDir');
      if (node.kind !== 'dir') throw errnoError('ENOTDIR', 'syncDir', path);
      this.#flushDir(ino);
    });
  }

  stat(path: string): Promise<FileStat> {
    return this.#call('stat', [path], () => statOf(this.#resolve(path, 'stat').node));
  }

  chmod(path: string, mode: number): Promise<void> {
    return this.#call('chmod', [path], () => {
      const { ino, node } = this.#resolve(path, 'chmod');
      node.mode = mode & 0o777;
      this.#pending.push({ kind: 'chmod', ino, mode: node.mode, isDir: node.kind === 'dir', initMode: node.initMode });
    });
  }

  // ---- internals ----

  /** Counts the call, honours the freeze and injected faults, then runs `body` synchronously. */
  #call<T>(
    op: FsOp,
    paths: readonly string[],
    body: (shortWrite: number | undefined) => T,
    onInjectedError?: () => void,
  ): Promise<T> {
    this.#calls++;
    if (this.#calls > this.#freezeAt) {
      this.#frozen = true;
      return NEVER_SETTLES();
    }
    try {
      const fired = this.#matchFaults(op, paths);
      if (fired !== undefined && 'error' in fired) {
        onInjectedError?.();
        throw errnoError(fired.error, op, paths[0]);
      }
      return Promise.resolve(body(fired?.shortWrite));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #matchFaults(op: FsOp, paths: readonly string[]): Fired | undefined {
    let fired: Fired | undefined;
    const remaining: ActiveFault[] = [];
    for (const f of this.#faults) {
      const matches =
        (f.ops === null || f.ops.has(op)) &&
        (f.pathIncludes === undefined || paths.some((p) => p.includes(f.pathIncludes as string)));
      if (matches) {
        f.seen++;
        const hit = f.seen === f.at || (f.persistent && f.seen > f.at);
        if (hit) {
          if (fired === undefined) {
            fired = f.shortWrite !== undefined ? { shortWrite: f.shortWrite } : { error: f.error };
            this.#faultsFired++;
          }
          if (!f.persistent) continue; // a one-shot fault is used up
        }
      }
      remaining.push(f);
    }
    this.#faults = remaining;
    return fired;
  }

  #node(ino: number): Node {
    const n = this.#current.nodes.get(ino);
    if (n === undefined) throw new Error(`memory-fs invariant: inode ${ino} missing`);
    return n;
  }

  #resolve(path: string, syscall: string): { ino: number; node: Node } {
    let ino = ROOT_INO;
    for (const name of splitPath(path)) {
      const dir = this.#node(ino);
      if (dir.kind !== 'dir') throw errnoError('ENOTDIR', syscall, path);
      const child = dir.entries.get(name);
      if (child === undefined) throw errnoError('ENOENT', syscall, path);
      ino = child;
    }
    return { ino, node: this.#node(ino) };
  }

  /** The directory that holds `path`'s last component (which need not exist). */
  #parent(path: string, syscall: string): { dirIno: number; dir: DirNode; name: string } {
    const parts = splitPath(path);
    const name = parts.pop();
    if (name === undefined) throw errnoError(syscall === 'open' ? 'EISDIR' : 'EBUSY', syscall, path);
    let ino = ROOT_INO;
    for (const part of parts) {
      const dir = this.#node(ino);
      if (dir.kind !== 'dir') throw errnoError('ENOTDIR', syscall, path);
      const child = dir.entries.get(part);
      if (child === undefined) throw errnoError('ENOENT', syscall, path);
      ino = child;
    }
    const dir = this.#node(ino);
    if (dir.kind !== 'dir') throw errnoError('ENOTDIR', syscall, path);
    return { dirIno: ino, dir, name };
  }

  /** Frees an inode of the current state once nothing names it and no handle has it open. */
  #maybeFree(ino: number): void {
    const n = this.#current.nodes.get(ino);
    if (n === undefined || n.nlink > 0 || n.open > 0 || ino === ROOT_INO) return;
    this.#current.nodes.delete(ino);
    if (n.kind === 'file') this.#usedBytes -= n.size;
  }

  #checkCapacity(growth: number, syscall: string, path: string): void {
    const cap = this.#options.capacityBytes;
    if (cap !== undefined && growth > 0 && this.#usedBytes + growth > cap) throw errnoError('ENOSPC', syscall, path);
  }

  /** fsync/fdatasync of `ino`: its pending data ops (and chmods when `metadata`) become durable, in order. */
  #syncInode(ino: number, metadata: boolean): void {
    const keep: PendingOp[] = [];
    for (const op of this.#pending) {
      const mine =
        op.ino === ino && (op.kind === 'write' || op.kind === 'truncate' || (metadata && op.kind === 'chmod'));
      if (mine) applyOp(this.#durable, op);
      else keep.push(op);
    }
    this.#pending = keep;
  }

  /** A failed fsync under `fsyncErrorLosesData`: the inode's pending data ops are lost to a crash. */
  #dropInodeData(ino: number): void {
    this.#pending = this.#pending.filter((op) => !(op.ino === ino && (op.kind === 'write' || op.kind === 'truncate')));
  }

  /** syncDir: marks ops touching `dirIno` synced, then applies every fully synced op not blocked by an earlier one. */
  #flushDir(dirIno: number): void {
    const blocked = new Set<string>();
    const keep: PendingOp[] = [];
    const removed: number[] = [];
    for (const op of this.#pending) {
      if (op.kind === 'chmod' && op.isDir && op.ino === dirIno) {
        applyOp(this.#durable, op);
        continue;
      }
      if (!isEntryOp(op)) {
        keep.push(op);
        continue;
      }
      op.unsynced.delete(dirIno);
      if (op.unsynced.size === 0 && !op.keys.some((k) => blocked.has(k))) {
        removed.push(...applyOp(this.#durable, op));
      } else {
        for (const k of op.keys) blocked.add(k);
        keep.push(op);
      }
    }
    this.#pending = keep;
    // Durable inodes that lost their only entry, and no pending op can bring back, are gone for good.
    for (const ino of removed) {
      if (!keep.some((op) => opReferences(op, ino))) this.#durable.nodes.delete(ino);
    }
  }

  #makeHandle(h: HandleState): FileHandle {
    const live = (syscall: string): FileNode => {
      if (h.closed) throw errnoError('EBADF', syscall, h.path);
      return this.#node(h.ino) as FileNode;
    };
    return {
      write: (buffer, offset, length, position) =>
        this.#call('write', [h.path], (shortWrite) => {
          const node = live('write');
          if (!h.writable) throw errnoError('EBADF', 'write', h.path);
          checkRange(buffer, offset, length, position, 'write');
          const n = shortWrite === undefined ? length : Math.min(shortWrite, length);
          if (n === 0) return 0;
          const growth = Math.max(0, position + n - node.size);
          this.#checkCapacity(growth, 'write', h.path);
          // A copy, as write(2) takes one: the caller may reuse its buffer before the data is durable.
          const bytes = Uint8Array.prototype.slice.call(buffer, offset, offset + n);
          fileWrite(node, position, bytes);
          this.#usedBytes += growth;
          this.#pending.push({ kind: 'write', ino: h.ino, pos: position, bytes, initMode: node.initMode });
          return n;
        }),
      read: (buffer, offset, length, position) =>
        this.#call('read', [h.path], () => {
          const node = live('read');
          checkRange(buffer, offset, length, position, 'read');
          return fileRead(node, position, buffer, offset, length);
        }),
      datasync: () => this.#fsync(h, 'datasync', false),
      sync: () => this.#fsync(h, 'sync', true),
      truncate: (length) =>
        this.#call('truncate', [h.path], () => {
          const node = live('truncate');
          if (!h.writable) throw errnoError('EBADF', 'truncate', h.path);
          if (!Number.isInteger(length) || length < 0) throw errnoError('EINVAL', 'truncate', h.path);
          this.#checkCapacity(length - node.size, 'truncate', h.path);
          this.#usedBytes += length - node.size;
          fileTruncate(node, length);
          this.#pending.push({ kind: 'truncate', ino: h.ino, len: length, initMode: node.initMode });
        }),
      stat: () => this.#call('fstat', [h.path], () => statOf(live('fstat'))),
      close: () =>
        this.#call('close', [h.path], () => {
          const node = live('close');
          h.closed = true;
          node.open--;
          this.#maybeFree(h.ino);
        }),
    };
  }

  #fsync(h: HandleState, op: 'datasync' | 'sync', metadata: boolean): Promise<void> {
    const onInjectedError =
      this.#options.fsyncErrorLosesData === true && !h.closed ? () => this.#dropInodeData(h.ino) : undefined;
    return this.#call(
      op,
      [h.path],
      () => {
        if (h.closed) throw errnoError('EBADF', op, h.path);
        this.#syncInode(h.ino, metadata);
      },
      onInjectedError,
    );
  }
}

function statOf(n: Node): FileStat {
  return {
    size: n.kind === 'file' ? n.size : 0,
    mode: n.mode,
    isFile: n.kind === 'file',
    isDirectory: n.kind === 'dir',
  };
}

function checkRange(buffer: Uint8Array, offset: number, length: number, position: number, syscall: string): void {
  const ok =
    Number.isInteger(offset) &&
    Number.isInteger(length) &&
    Number.isInteger(position) &&
    offset >= 0 &&
    length >= 0 &&
    position >= 0 &&
    offset + length <= buffer.length;
  if (!ok) throw errnoError('EINVAL', syscall, `offset=${offset} length=${length} position=${position}`);
}
