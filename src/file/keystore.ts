import { posix as path } from 'node:path';
import { ContentSealer, isSealed, keyCheck, keyCheckOpens, masterKeyId, newDataKey, parseMasterKey, resolveMasterKey as resolveKey, unwrapDataKey, wrapDataKey, type MasterKey, type MasterKeyOptions } from '../backend/encryption.ts';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { isSessionId } from '../core/ids.ts';
import { hasCode, type FileSystem } from '../storage/fs-port.ts';
import { ensureDir } from '../storage/fs-port.ts';
import { writeFileDurably } from './erasure.ts';

/**
 * Encryption at rest (docs/encryption.md). Every session has its own data key
 * (AES-256-GCM, 32 random bytes), wrapped with the master key and kept in
 * `<dataDir>/keys/keystore.json`; the session's journal payloads (`data`),
 * snapshot states and checkpoint states are sealed with it. Deleting a session
 * destroys its data key first (the entry becomes a shredded marker), so every
 * copy of its ciphertext, in backups and archives too, is unreadable from then
 * on (crypto-shredding). Rotating the master key rewraps the data keys only.
 *
 *   keystore.json = { format: "arbor-keystore", version: 1,
 *                     masterKeyId,            sha256(master key) truncated: names the key, reveals nothing
 *                     check,                  seal(master, "arbor-keystore-check"): proves the key is the right one
 *                     since,                  LSN from which every record of a session is sealed
 *                     keys: { <sid>: { wrapped } | { shredded: <ms>, lsn } } }
 *   sealed blob   = iv:12 bytes ‖ tag:16 bytes ‖ ciphertext   (AES-256-GCM)
 *   journal data  = {"$enc": base64(seal(dataKey, JSON of data, aad = "<sid>:<seq>"))}
 *   snapshot / checkpoint state = {"$enc": seal(dataKey, msgpack(state), aad = "<sid>:state")} (bytes in msgpack)
 */
export const KEYS_DIR = 'keys';
export const KEYSTORE_FILE = 'keystore.json';
export const KEYSTORE_FORMAT = 'arbor-keystore';
export { isSealed, masterKeyId, parseMasterKey, type MasterKey };

/** The master key from the options: `encryptionKey` (base64) or `encryptionKeyFile` (a file holding it); undefined when neither. */
export function resolveMasterKey(fs: FileSystem, o: MasterKeyOptions): Promise<MasterKey | undefined> {
  return resolveKey((file) => fs.readFile(file), o);
}

/** A live data key (`erasedUpTo`: an earlier session with this id was deleted, its records up to that LSN unreadable), or a destroyed one. */
type KeyEntry = { wrapped: string; erasedUpTo?: number } | { shredded: number; lsn: number };

/** The LSN up to which the entry's session is erased (its key destroyed), if any. */
export function erasedUpTo(e: KeyEntry | undefined): number | undefined {
  if (e === undefined) return undefined;
  return 'shredded' in e ? e.lsn : e.erasedUpTo;
}

export interface KeyStoreFile {
  format: typeof KEYSTORE_FORMAT;
  version: 1;
  masterKeyId: string;
  check: string;
  since: number;
  keys: Record<string, KeyEntry>;
}

/** Reads `<dataDir>/keys/keystore.json` without checking any key; undefined when there is none. */
export async function readKeyStoreFile(fs: FileSystem, dataDir: string): Promise<KeyStoreFile | undefined> {
  const file = path.join(dataDir, KEYS_DIR, KEYSTORE_FILE);
  let text: string;
  try {
    text = Buffer.from(await fs.readFile(file)).toString('utf8');
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
  let v: Partial<KeyStoreFile>;
  try {
    v = JSON.parse(text) as Partial<KeyStoreFile>;
  } catch {
    throw new ArborError(ErrorCodes.CORRUPTION, `${file} is not JSON`, { file });
  }
  if (v.format !== KEYSTORE_FORMAT || v.version !== 1 || typeof v.check !== 'string' || typeof v.masterKeyId !== 'string' || typeof v.keys !== 'object' || v.keys === null || !Number.isSafeInteger(v.since)) {
    throw new ArborError(ErrorCodes.CORRUPTION, `${file} is not an Arbor key store (format ${KEYSTORE_FORMAT}, version 1)`, { file });
  }
  return v as KeyStoreFile;
}

/**
 * Checks `master` against the key store of `dataDir` before anything is
 * written: a data directory with a key store refuses to open without its
 * key, or with another one (ARBOR_ENCRYPTION_KEY naming the key's source).
 */
export async function checkMasterKey(fs: FileSystem, dataDir: string, master: MasterKey | undefined): Promise<KeyStoreFile | undefined> {
  const file = await readKeyStoreFile(fs, dataDir);
  if (file === undefined) return undefined;
  if (master === undefined) {
    throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `data directory ${dataDir} is encrypted (it has ${KEYS_DIR}/${KEYSTORE_FILE}) and no encryption key was given: set encryptionKey, encryptionKeyFile or ARBOR_ENCRYPTION_KEY`, { source: 'none', dataDir });
  }
  if (!keyCheckOpens(master, Buffer.from(file.check, 'base64'))) {
    throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `the encryption key from ${master.source} is not the key data directory ${dataDir} was encrypted with (key id ${file.masterKeyId}, given ${masterKeyId(master.key)}); nothing was written`, { source: master.source, dataDir, expectedKeyId: file.masterKeyId });
  }
  return file;
}

/** The data keys of one data directory, unwrapped in memory; see the module comment. */
export class KeyStore {
  readonly #fs: FileSystem;
  readonly #file: string;
  #master: MasterKey;
  #since: number;
  readonly #entries = new Map<string, KeyEntry>();
  /** the unwrapped data keys (raw bytes: on Node 20 a cipher from a KeyObject costs twice as much as one from raw bytes) */
  readonly #keys = new Map<string, Buffer>();
  readonly #sealer = new ContentSealer((sid) => this.#key(sid));
  #writing: Promise<unknown> = Promise.resolve();
  /** Sessions whose new key is not durable yet, with the write that makes it so (appends wait for it). */
  readonly #creating = new Map<string, Promise<void>>();
  /** The next write of the file, and the sessions whose keys it carries. */
  #batch: { sids: Set<string>; done: Promise<void> } | undefined;

  private constructor(fs: FileSystem, dataDir: string, master: MasterKey, since: number) {
    this.#fs = fs;
    this.#file = path.join(dataDir, KEYS_DIR, KEYSTORE_FILE);
    this.#master = master;
    this.#since = since;
  }

  /** Opens the key store that `checkMasterKey` read (or creates one, durably, starting at LSN `since`). */
  static async open(fs: FileSystem, dataDir: string, master: MasterKey, file: KeyStoreFile | undefined, since: number): Promise<KeyStore> {
    const ks = new KeyStore(fs, dataDir, master, file?.since ?? since);
    if (file === undefined) {
      await ks.#persist();
      return ks;
    }
    for (const [sid, entry] of Object.entries(file.keys)) {
      if (!isSessionId(sid)) throw new ArborError(ErrorCodes.CORRUPTION, `${ks.#file}: ${JSON.stringify(sid)} is not a session id`, { file: ks.#file });
      ks.#entries.set(sid, entry);
      if ('wrapped' in entry) {
        try {
          ks.#keys.set(sid, unwrapDataKey(master, sid, Buffer.from(entry.wrapped, 'base64')));
        } catch (err) {
          throw new ArborError(ErrorCodes.CORRUPTION, `${ks.#file}: the data key of session ${sid} does not unwrap with the key from ${master.source}`, { file: ks.#file, sessionId: sid, source: master.source }, { cause: err });
        }
      }
    }
    return ks;
  }

  /** LSN from which every record is sealed (older ones were written before encryption was turned on). */
  get since(): number {
    return this.#since;
  }

  has(sid: string): boolean {
    return this.#keys.has(sid);
  }

  /** Sessions whose key was destroyed (deleted), with the LSN up to which their records are unreadable. */
  shredded(): [string, number][] {
    const out: [string, number][] = [];
    for (const [sid, e] of this.#entries) {
      const upTo = erasedUpTo(e);
      if (upTo !== undefined) out.push([sid, upTo]);
    }
    return out;
  }

  /**
   * Whether the record (`sid`, `lsn`) can never be read: its session's key
   * was destroyed (deleted at or after `lsn`), or it was sealed (written since
   * encryption was on) with a key this store does not have.
   */
  isUnreadable(sid: string, lsn: number): boolean {
    const e = this.#entries.get(sid);
    if (e === undefined) return lsn >= this.#since;
    return lsn <= (erasedUpTo(e) ?? 0);
  }

  /** Makes sure `sid` has a data key, durably (concurrent first appends share one write of the file). */
  ensure(sid: string): Promise<void> | undefined {
    // A key still being written is not usable yet: appends wait for it, in call order.
    const pending = this.#creating.get(sid);
    if (pending !== undefined) return pending;
    if (this.#keys.has(sid)) return undefined;
    const key = newDataKey();
    const upTo = erasedUpTo(this.#entries.get(sid));
    this.#keys.set(sid, key);
    this.#entries.set(sid, { wrapped: wrapDataKey(this.#master, sid, key).toString('base64'), ...(upTo === undefined ? {} : { erasedUpTo: upTo }) });
    let batch = this.#batch;
    if (batch === undefined) {
      const sids = new Set<string>();
      const done = Promise.resolve()
        .then(() => {
          // Keys made from here on go into the next write.
          this.#batch = undefined;
          return this.#persist();
        })
        .then(
          () => {
            for (const s of sids) this.#creating.delete(s);
          },
          (err: unknown) => {
            // Not durable: the keys are forgotten, and every append that waited for them fails.
            for (const s of sids) {
              this.#creating.delete(s);
              this.#keys.delete(s);
              this.#entries.delete(s);
            }
            throw err;
          },
        );
      batch = { sids, done };
      this.#batch = batch;
    }
    batch.sids.add(sid);
    this.#creating.set(sid, batch.done);
    return batch.done;
  }

  /** Destroys the session's data key (a shredded marker up to `lsn` stays), durably. */
  destroy(sid: string, lsn: number): Promise<void> {
    this.#keys.delete(sid);
    this.#entries.set(sid, { shredded: Date.now(), lsn });
    return this.#persist();
  }

  /** Rewraps every data key with `next` and writes the file durably; the data itself is untouched. */
  async rotate(next: MasterKey): Promise<number> {
    this.#master = next;
    for (const [sid, key] of this.#keys) {
      const upTo = erasedUpTo(this.#entries.get(sid));
      this.#entries.set(sid, { wrapped: wrapDataKey(next, sid, key).toString('base64'), ...(upTo === undefined ? {} : { erasedUpTo: upTo }) });
    }
    await this.#persist();
    return this.#keys.size;
  }

  #key(sid: string): Buffer {
    const key = this.#keys.get(sid);
    if (key === undefined) throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `session ${sid} has no data key in ${this.#file} (deleted, or not this data directory's key store)`, { sessionId: sid, source: this.#file });
    return key;
  }

  /** The journal's hook: `data` sealed with the session's key, bound to its seq. */
  sealData(sid: string, seq: number, data: unknown): unknown {
    return this.#sealer.sealData(sid, seq, data);
  }

  /** The journal's write path: the JSON text of `data` sealed, as the JSON text to write in its place. */
  sealDataJson(sid: string, seq: number, json: string): string {
    return this.#sealer.sealDataJson(sid, seq, json);
  }

  openData(sid: string, seq: number, data: unknown): unknown {
    return this.#sealer.openData(sid, seq, data);
  }

  /** A snapshot's or checkpoint entry's state, sealed (bytes inside msgpack). */
  sealState(sid: string, state: unknown): unknown {
    return this.#sealer.sealState(sid, state);
  }

  openState(sid: string, state: unknown): unknown {
    return this.#sealer.openState(sid, state);
  }

  #persist(): Promise<void> {
    const run = this.#writing.then(async () => {
      const file: KeyStoreFile = {
        format: KEYSTORE_FORMAT,
        version: 1,
        masterKeyId: masterKeyId(this.#master.key),
        check: keyCheck(this.#master).toString('base64'),
        since: this.#since,
        keys: Object.fromEntries(this.#entries),
      };
      await ensureDir(this.#fs, path.dirname(this.#file), 0o700);
      await writeFileDurably(this.#fs, this.#file, Buffer.from(JSON.stringify(file), 'utf8'));
    });
    this.#writing = run.catch(() => undefined);
    return run;
  }
}
