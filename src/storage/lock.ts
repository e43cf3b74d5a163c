import { hostname } from 'node:os';
import { posix as path } from 'node:path';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { resolve } from 'node:path';
import { ensureDir, hasCode, writeFully, type FileSystem } from './fs-port.ts';

export const LOCK_FILE = 'LOCK';

export interface LockOwner {
  pid: number;
  host: string;
  startedAt: string;
  /** The owner's command line (`process.argv`, shortened), so a refused process can say who holds the directory. Absent in locks of older versions. */
  command?: string;
}

/** The longest command line kept in the lock file. */
const MAX_COMMAND_CHARS = 300;

/** This process's command line as the lock records it: node's path left out, long lines cut. */
export function commandLine(argv: readonly string[] = process.argv): string {
  const text = argv.slice(1).join(' ');
  return text.length > MAX_COMMAND_CHARS ? `${text.slice(0, MAX_COMMAND_CHARS - 1)}…` : text;
}

export interface LockOptions {
  fs: FileSystem;
  dir: string;
  /** Identity written into the lock; injectable for tests. */
  pid?: number;
  host?: string;
  command?: string;
  /** Whether a process with this pid is alive on this host; injectable for tests. */
  isAlive?: (pid: number) => boolean;
}

/**
 * Locks held by stores open in this process, per filesystem. A lock file naming
 * this process that is not in here was left by a store whose close failed: stale.
 */
const heldInProcess = new WeakMap<object, Set<string>>();
/** Every filesystem with real paths is the same disk, however many instances (and wrappers) name it. */
const REAL_DISK = {};

function heldSet(fs: FileSystem): Set<string> {
  const key = fs.realPaths === true ? REAL_DISK : fs;
  let set = heldInProcess.get(key);
  if (set === undefined) {
    set = new Set();
    heldInProcess.set(key, set);
  }
  return set;
}

/** `process.kill(pid, 0)`: ESRCH means no such process; EPERM means it exists under another user. */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return hasCode(err, 'EPERM');
  }
}

/**
 * What a process refused the lock is told: who holds the directory (pid, host,
 * since when, its command line) and what to do about it.
 */
function lockedMessage(dir: string, owner: LockOwner, sameHost: boolean): string {
  const who = `pid ${owner.pid} on ${owner.host}${typeof owner.startedAt === 'string' ? `, since ${owner.startedAt}` : ''}${typeof owner.command === 'string' && owner.command !== '' ? `, running \`${owner.command}\`` : ''}`;
  const todo = sameHost
    ? `stop it first (kill ${owner.pid}; an \`arbor serve\` shuts down cleanly on SIGTERM), or use another data directory (--data-dir / ARBOR_DATA_DIR); while an \`arbor serve\` holds it, talk to that server over HTTP instead (\`arbor chat <session> --url http://127.0.0.1:4000\`)`
    : `stop it on ${owner.host} first, or use another data directory (--data-dir / ARBOR_DATA_DIR); remove ${LOCK_FILE} only if that host is gone for good`;
  return `data directory ${dir} is locked by another process (${who}): one process at a time opens a data directory. To go on: ${todo}`;
}

/**
 * One process per data directory. The lock is a file `LOCK` holding the
 * owner's pid, host and start time, created exclusively and made durable
 * (file and directory synced). A lock left by a dead process on this host, or
 * an unreadable (torn) lock, is stale: it is removed and taken over. A live
 * owner, or an owner on another host (which cannot be checked), refuses with
 * ARBOR_LOCKED naming the owner.
 */
export class DirectoryLock {
  readonly #fs: FileSystem;
  readonly #file: string;
  readonly #dir: string;
  #held = false;
  /** Set when a stale lock was taken over. */
  staleOwner: LockOwner | 'unreadable' | undefined;

  private constructor(fs: FileSystem, dir: string) {
    this.#fs = fs;
    this.#dir = dir;
    // On the real disk the same directory may be named relatively or absolutely.
    this.#file = fs.realPaths === true ? resolve(dir, LOCK_FILE) : path.join(dir, LOCK_FILE);
  }

  static async acquire(options: LockOptions): Promise<DirectoryLock> {
    const lock = new DirectoryLock(options.fs, options.dir);
    const me: LockOwner = { pid: options.pid ?? process.pid, host: options.host ?? hostname(), startedAt: new Date().toISOString(), command: options.command ?? commandLine() };
    const isAlive = options.isAlive ?? processIsAlive;
    await ensureDir(options.fs, options.dir, 0o700);
    for (let attempt = 0; attempt < 2; attempt += 1) {
      try {
        await lock.#create(me);
        lock.#held = true;
        heldSet(options.fs).add(lock.#file);
        return lock;
      } catch (err) {
        if (!hasCode(err, 'EEXIST')) throw err;
      }
      const owner = await lock.#readOwner();
      if (owner !== 'unreadable' && owner !== 'missing') {
        const sameHost = owner.host === me.host;
        const leftByThisProcess = sameHost && owner.pid === me.pid && !heldSet(options.fs).has(lock.#file);
        if (!leftByThisProcess && (!sameHost || isAlive(owner.pid))) {
          throw new ArborError(ErrorCodes.LOCKED, lockedMessage(options.dir, owner, sameHost), { dir: options.dir, owner });
        }
      }
      if (owner !== 'missing') {
        // Stale: its owner is dead (or the lock is torn, which only a crash while taking it leaves).
        lock.staleOwner = owner;
        try {
          await options.fs.unlink(lock.#file);
        } catch (err) {
          if (!hasCode(err, 'ENOENT')) throw err;
        }
        await options.fs.syncDir(options.dir);
      }
    }
    throw new ArborError(ErrorCodes.LOCKED, `data directory ${options.dir}: another process took the lock while a stale one was removed`, { dir: options.dir });
  }

  async #create(me: LockOwner): Promise<void> {
    const handle = await this.#fs.open(this.#file, 'wx+', 0o600);
    try {
      await writeFully(handle, Buffer.from(`${JSON.stringify(me)}\n`), 0);
      await handle.datasync();
    } finally {
      await handle.close();
    }
    await this.#fs.syncDir(this.#dir);
  }

  async #readOwner(): Promise<LockOwner | 'unreadable' | 'missing'> {
    let text: string;
    try {
      text = Buffer.from(await this.#fs.readFile(this.#file)).toString('utf8');
    } catch (err) {
      if (hasCode(err, 'ENOENT')) return 'missing';
      throw err;
    }
    try {
      const owner = JSON.parse(text) as LockOwner;
      if (Number.isSafeInteger(owner.pid) && typeof owner.host === 'string') return owner;
    } catch {
      // fall through: torn or foreign content
    }
    return 'unreadable';
  }

  get held(): boolean {
    return this.#held;
  }

  /** Removes the lock (durably). Idempotent. */
  async release(): Promise<void> {
    if (!this.#held) return;
    this.#held = false;
    // Forget it first: if the unlink below fails, the file left behind is recognisably stale.
    heldSet(this.#fs).delete(this.#file);
    await this.#fs.unlink(this.#file);
    await this.#fs.syncDir(this.#dir);
  }
}
