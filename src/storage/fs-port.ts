/**
 * The few filesystem calls Arbor's storage uses, as a port. The Node adapter
 * (`node-fs.ts`) maps them onto `fs.promises`; the in-memory adapter
 * (`memory-fs.ts`) models POSIX durability strictly and can crash and inject
 * faults, which is what the crash tests drive.
 *
 * Durability rules every caller must follow (and the memory adapter enforces):
 * - bytes written to a file are durable only after `datasync()`/`sync()` on it;
 * - a created, renamed or unlinked directory entry is durable only after
 *   `syncDir()` of the directory that holds it.
 *
 * Errors are Node-style: an `Error` with a string `code` (`ENOENT`, `EEXIST`,
 * `EIO`, `ENOSPC`, …).
 */

/** How a file is opened. */
export type OpenFlags =
  /** read only; the file must exist */
  | 'r'
  /** read and write; the file must exist */
  | 'r+'
  /** create or truncate, read and write */
  | 'w+'
  /** create exclusively (EEXIST when it exists), read and write */
  | 'wx+';

export interface FileStat {
  size: number;
  /** permission bits, e.g. 0o600 */
  mode: number;
  isFile: boolean;
  isDirectory: boolean;
}

export interface FileHandle {
  /**
   * Writes up to `length` bytes of `buffer` from `offset` at file `position`.
   * May write fewer bytes than asked (a short write): callers loop.
   */
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Reads up to `length` bytes at `position` into `buffer` at `offset`; returns bytes read (0 at end of file). */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Makes this file's data (and size) durable. */
  datasync(): Promise<void>;
  /** Makes this file's data and metadata durable. */
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  stat(): Promise<FileStat>;
  close(): Promise<void>;
}

export interface FileSystem {
  /**
   * True when paths name files on this machine's disk: every such filesystem
   * sees the same files, a directory may be named relatively or absolutely,
   * and `node:fs` reaches them too. Unset for an in-memory filesystem, whose
   * files only it holds. A wrapper forwards its inner filesystem's answer.
   */
  readonly realPaths?: boolean;
  open(path: string, flags: OpenFlags, mode?: number): Promise<FileHandle>;
  /** Whole-file read; ENOENT when missing. */
  readFile(path: string): Promise<Uint8Array>;
  /** Entry names (not paths), in no particular order; ENOENT when missing. */
  readdir(path: string): Promise<string[]>;
  /** Creates the directory and any missing parents; no error when it exists. */
  mkdir(path: string, mode: number): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Makes the directory's entries (creates, renames, unlinks) durable. */
  syncDir(path: string): Promise<void>;
  stat(path: string): Promise<FileStat>;
  chmod(path: string, mode: number): Promise<void>;
}

/** Node-style error with a `code`, as both adapters throw. */
export interface ErrnoError extends Error {
  code: string;
}

export function errnoError(code: string, syscall: string, path?: string): ErrnoError {
  const err = new Error(`${code}: ${syscall}${path === undefined ? '' : ` '${path}'`}`) as ErrnoError;
  err.code = code;
  return err;
}

export function hasCode(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}

/** Writes all of `data` at `position`, looping over short writes. */
export async function writeFully(handle: FileHandle, data: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const n = await handle.write(data, done, data.length - done, position + done);
    // A zero-byte write would loop forever; the kernel reports ENOSPC as an error, so 0 means something is wrong.
    if (n <= 0) throw errnoError('EIO', 'write (wrote 0 bytes)');
    done += n;
  }
}

/** Reads exactly `length` bytes at `position`, or fewer only at end of file. */
export async function readFully(handle: FileHandle, length: number, position: number): Promise<Uint8Array> {
  const buffer = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = await handle.read(buffer, done, length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done === length ? buffer : buffer.subarray(0, done);
}

/**
 * Creates `dir` and any missing ancestors with `mode`, making each new entry
 * durable by syncing its parent directory (a new directory is an entry in its
 * parent, as a new file is). Existing directories get `mode` applied.
 */
export async function ensureDir(fs: FileSystem, dir: string, mode: number): Promise<void> {
  const parts = dir.split('/');
  const missing: string[] = [];
  for (let i = parts.length; i > 0; i -= 1) {
    const p = parts.slice(0, i).join('/');
    if (p === '' || p === '.') break;
    try {
      await fs.stat(p);
      break;
    } catch (err) {
      if (!hasCode(err, 'ENOENT')) throw err;
      missing.unshift(p);
    }
  }
  if (missing.length > 0) {
    await fs.mkdir(dir, mode);
    for (const p of missing) {
      const parent = p.slice(0, p.lastIndexOf('/'));
      await fs.syncDir(parent === '' ? (p.startsWith('/') ? '/' : '.') : parent);
    }
  }
  await fs.chmod(dir, mode);
}
