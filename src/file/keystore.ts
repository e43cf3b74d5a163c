import { createCipheriv, createDecipheriv, createHash, createSecretKey, randomBytes, type KeyObject } from 'node:crypto';
import { posix as path } from 'node:path';
import { Packr } from 'msgpackr';
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
const CHECK_TEXT = 'arbor-keystore-check';
const IV_BYTES = 12;
const TAG_BYTES = 16;
const packr = new Packr({ useRecords: false, moreTypes: false });

/** A master key and where it came from (named in every error about it). */
export interface MasterKey {
  key: Buffer;
  /** e.g. `option encryptionKey`, `env ARBOR_ENCRYPTION_KEY`, `key file /etc/arbor/key` */
  source: string;
}

/** Parses a base64 master key of exactly 32 bytes; ARBOR_ENCRYPTION_KEY naming `source` otherwise. */
export function parseMasterKey(value: string, source: string): MasterKey {
  const text = value.trim();
  const key = Buffer.from(text, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || key.length !== 32) {
    throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `the encryption key from ${source} is not 32 bytes of base64 (got ${key.length} bytes); make one with: openssl rand -base64 32`, { source });
  }
  return { key, source };
}

/** The master key from the options: `encryptionKey` (base64) or `encryptionKeyFile` (a file holding it); undefined when neither. */
export async function resolveMasterKey(fs: FileSystem, o: { encryptionKey?: string | undefined; encryptionKeyFile?: string | undefined; encryptionKeySource?: string | undefined }): Promise<MasterKey | undefined> {
  if (o.encryptionKey !== undefined) return parseMasterKey(o.encryptionKey, o.encryptionKeySource ?? 'option encryptionKey');
  if (o.encryptionKeyFile !== undefined) {
    const source = `key file ${o.encryptionKeyFile}`;
    let text: string;
    try {
      text = Buffer.from(await fs.readFile(o.encryptionKeyFile)).toString('utf8');
    } catch (err) {
      throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `cannot read the ${source}: ${(err as Error).message}`, { source }, { cause: err });
    }
    return parseMasterKey(text, source);
  }
  return undefined;
}

export function masterKeyId(key: Buffer): string {
  return createHash('sha256').update('arbor-master-key-id').update(key).digest('hex').slice(0, 16);
}

/** Random IVs drawn in bulk: one randomBytes call per 4,096 seals instead of one each (it dominated the cost). */
let ivPool = Buffer.alloc(0);
let ivAt = 0;
function nextIv(): Buffer {
  if (ivAt + IV_BYTES > ivPool.length) {
    ivPool = randomBytes(IV_BYTES * 4096);
    ivAt = 0;
  }
  const iv = ivPool.subarray(ivAt, ivAt + IV_BYTES);
  ivAt += IV_BYTES;
  return iv;
}

export function seal(key: Buffer | KeyObject, plaintext: Uint8Array, aad: string): Buffer {
  const iv = nextIv();
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = Buffer.concat([c.update(plaintext), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), body]);
}

/** Opens a sealed blob; throws (a plain Error) when the key or the bytes are wrong. */
export function unseal(key: Buffer | KeyObject, blob: Uint8Array, aad: string): Buffer {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.length);
  if (b.length < IV_BYTES + TAG_BYTES) throw new Error('sealed blob is too short');
  const d = createDecipheriv('aes-256-gcm', key, b.subarray(0, IV_BYTES));
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(b.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
  return Buffer.concat([d.update(b.subarray(IV_BYTES + TAG_BYTES)), d.final()]);
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

/** Whether a value is a sealed envelope (`{"$enc": …}`, nothing else). */
export function isSealed(value: unknown): value is { $enc: string | Uint8Array } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  return keys.length === 1 && keys[0] === '$enc';
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
  try {
    if (unseal(master.key, Buffer.from(file.check, 'base64'), 'check').toString('utf8') !== CHECK_TEXT) throw new Error('check text differs');
  } catch {
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
  /** raw bytes (for rewrapping) and the KeyObject the ciphers use (made once: a raw key costs a key import per call) */
  readonly #keys = new Map<string, Buffer>();
  readonly #keyObjects = new Map<string, KeyObject>();
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
          ks.#keys.set(sid, unseal(master.key, Buffer.from(entry.wrapped, 'base64'), `key:${sid}`));
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
    const key = randomBytes(32);
    const upTo = erasedUpTo(this.#entries.get(sid));
    this.#keys.set(sid, key);
    this.#entries.set(sid, { wrapped: seal(this.#master.key, key, `key:${sid}`).toString('base64'), ...(upTo === undefined ? {} : { erasedUpTo: upTo }) });
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
              this.#keyObjects.delete(s);
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
    this.#keyObjects.delete(sid);
    this.#entries.set(sid, { shredded: Date.now(), lsn });
    return this.#persist();
  }

  /** Rewraps every data key with `next` and writes the file durably; the data itself is untouched. */
  async rotate(next: MasterKey): Promise<number> {
    this.#master = next;
    for (const [sid, key] of this.#keys) {
      const upTo = erasedUpTo(this.#entries.get(sid));
      this.#entries.set(sid, { wrapped: seal(next.key, key, `key:${sid}`).toString('base64'), ...(upTo === undefined ? {} : { erasedUpTo: upTo }) });
    }
    await this.#persist();
    return this.#keys.size;
  }

  #key(sid: string): KeyObject {
    const cached = this.#keyObjects.get(sid);
    if (cached !== undefined && this.#keys.has(sid)) return cached;
    const key = this.#keys.get(sid);
    if (key !== undefined) {
      const ko = createSecretKey(key);
      this.#keyObjects.set(sid, ko);
      return ko;
    }
    if (key === undefined) throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `session ${sid} has no data key in ${this.#file} (deleted, or not this data directory's key store)`, { sessionId: sid, source: this.#file });
    return key;
  }

  /** The journal's hook: `data` sealed with the session's key, bound to its seq. */
  sealData(sid: string, seq: number, data: unknown): unknown {
    const json = JSON.stringify(data);
    if (json === undefined) return data;
    return { $enc: seal(this.#key(sid), Buffer.from(json, 'utf8'), `${sid}:${seq}`).toString('base64') };
  }

  openData(sid: string, seq: number, data: unknown): unknown {
    if (!isSealed(data) || typeof data.$enc !== 'string') return data;
    return JSON.parse(this.#unseal(sid, Buffer.from(data.$enc, 'base64'), `${sid}:${seq}`).toString('utf8')) as unknown;
  }

  /** A snapshot's or checkpoint entry's state, sealed (bytes inside msgpack). */
  sealState(sid: string, state: unknown): unknown {
    return { $enc: seal(this.#key(sid), packr.pack(state), `${sid}:state`) };
  }

  openState(sid: string, state: unknown): unknown {
    if (!isSealed(state) || typeof state.$enc === 'string') return state;
    return packr.unpack(this.#unseal(sid, state.$enc, `${sid}:state`));
  }

  #unseal(sid: string, blob: Uint8Array, aad: string): Buffer {
    try {
      return unseal(this.#key(sid), blob, aad);
    } catch (err) {
      if (err instanceof ArborError) throw err;
      throw new ArborError(ErrorCodes.CORRUPTION, `session ${sid}: a sealed value does not open (${aad}): damaged or not this session's`, { sessionId: sid }, { cause: err });
    }
  }

  #persist(): Promise<void> {
    const run = this.#writing.then(async () => {
      const file: KeyStoreFile = {
        format: KEYSTORE_FORMAT,
        version: 1,
        masterKeyId: masterKeyId(this.#master.key),
        check: seal(this.#master.key, Buffer.from(CHECK_TEXT, 'utf8'), 'check').toString('base64'),
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
