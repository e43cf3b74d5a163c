import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import { Packr } from 'msgpackr';
import { ArborError, ErrorCodes } from '../core/errors.ts';

/**
 * Encryption at rest, the part every backend shares (docs/encryption.md):
 * the master key and where it came from, AES-256-GCM sealing, data keys
 * wrapped by the master key, and the sealed forms of a session's event data
 * and state. Where the wrapped keys live is the backend's business (the file
 * store: `<dataDir>/keys/keystore.json`, src/file/keystore.ts; PostgreSQL: the
 * `key_ring` and `data_keys` tables, src/postgres/pg-backend.ts).
 *
 *   sealed blob   = iv:12 bytes ‖ tag:16 bytes ‖ ciphertext   (AES-256-GCM)
 *   wrapped key   = seal(master, dataKey, aad = "key:<sid>")
 *   key check     = seal(master, "arbor-keystore-check", aad = "check")
 *   event data    = {"$enc": base64(seal(dataKey, JSON of data, aad = "<sid>:<seq>"))}
 *   state         = {"$enc": seal(dataKey, msgpack(state), aad = "<sid>:state")} (bytes inside msgpack)
 */
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** Bytes a sealed blob adds to its plaintext. */
export const SEAL_OVERHEAD = IV_BYTES + TAG_BYTES;
const CHECK_TEXT = 'arbor-keystore-check';
const packr = new Packr({ useRecords: false, moreTypes: false });

/** A master key and where it came from (named in every error about it). */
export interface MasterKey {
  key: Buffer;
  /** e.g. `option encryptionKey`, `env ARBOR_ENCRYPTION_KEY`, `key file /etc/arbor/key` */
  source: string;
}

/** Where a backend's master key comes from: the options `encryptionKey` (base64) or `encryptionKeyFile`. */
export interface MasterKeyOptions {
  encryptionKey?: string | undefined;
  encryptionKeyFile?: string | undefined;
  /** How errors name where `encryptionKey` came from (default `option encryptionKey`). */
  encryptionKeySource?: string | undefined;
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

/** The master key from the options (a key file read with `readFile`); undefined when neither option is set. */
export async function resolveMasterKey(readFile: (file: string) => Promise<Uint8Array>, o: MasterKeyOptions): Promise<MasterKey | undefined> {
  if (o.encryptionKey !== undefined) return parseMasterKey(o.encryptionKey, o.encryptionKeySource ?? 'option encryptionKey');
  if (o.encryptionKeyFile !== undefined) {
    const source = `key file ${o.encryptionKeyFile}`;
    let text: string;
    try {
      text = Buffer.from(await readFile(o.encryptionKeyFile)).toString('utf8');
    } catch (err) {
      throw new ArborError(ErrorCodes.ENCRYPTION_KEY, `cannot read the ${source}: ${(err as Error).message}`, { source }, { cause: err });
    }
    return parseMasterKey(text, source);
  }
  return undefined;
}

/** Names a master key without revealing it: sha256 truncated to 16 hex digits. */
export function masterKeyId(key: Buffer): string {
  return createHash('sha256').update('arbor-master-key-id').update(key).digest('hex').slice(0, 16);
}

/** Scratch space of sealDataJson: the plaintext's UTF-8 bytes and the additional data (a session id is at most 128 characters). */
let scratch = Buffer.allocUnsafe(64 * 1024);
const aadScratch = Buffer.allocUnsafe(256);

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

/**
 * Seals `plaintext` with a 32-byte key (a raw Buffer: on Node 20 a cipher
 * made from a KeyObject costs about twice as much as one from raw bytes).
 */
export function seal(key: Buffer, plaintext: Uint8Array, aad: string): Buffer {
  const iv = nextIv();
  const c = createCipheriv('aes-256-gcm', key, iv);
  c.setAAD(Buffer.from(aad, 'utf8'));
  const body = c.update(plaintext);
  const rest = c.final();
  // One buffer for iv ‖ tag ‖ ciphertext (GCM's final() yields nothing more: it is a stream mode).
  const out = Buffer.allocUnsafe(SEAL_OVERHEAD + body.length + rest.length);
  iv.copy(out, 0);
  c.getAuthTag().copy(out, IV_BYTES);
  body.copy(out, SEAL_OVERHEAD);
  if (rest.length > 0) rest.copy(out, SEAL_OVERHEAD + body.length);
  return out;
}

/** Opens a sealed blob; throws (a plain Error) when the key or the bytes are wrong. */
export function unseal(key: Buffer, blob: Uint8Array, aad: string): Buffer {
  const b = Buffer.from(blob.buffer, blob.byteOffset, blob.length);
  if (b.length < SEAL_OVERHEAD) throw new Error('sealed blob is too short');
  const d = createDecipheriv('aes-256-gcm', key, b.subarray(0, IV_BYTES));
  d.setAAD(Buffer.from(aad, 'utf8'));
  d.setAuthTag(b.subarray(IV_BYTES, SEAL_OVERHEAD));
  return Buffer.concat([d.update(b.subarray(SEAL_OVERHEAD)), d.final()]);
}

/** A known text sealed with the master key: stored beside the wrapped keys, it proves a key is the right one. */
export function keyCheck(master: MasterKey): Buffer {
  return seal(master.key, Buffer.from(CHECK_TEXT, 'utf8'), 'check');
}

/** Whether `check` (made by `keyCheck`) opens with `master`. */
export function keyCheckOpens(master: MasterKey, check: Uint8Array): boolean {
  try {
    return unseal(master.key, check, 'check').toString('utf8') === CHECK_TEXT;
  } catch {
    return false;
  }
}

/** A new random data key. */
export function newDataKey(): Buffer {
  return randomBytes(32);
}

/** A session's data key sealed with the master key (bound to the session id). */
export function wrapDataKey(master: MasterKey, sid: string, key: Buffer): Buffer {
  return seal(master.key, key, `key:${sid}`);
}

/** The data key `wrapDataKey` sealed; throws (a plain Error) when `master` is not the key that wrapped it. */
export function unwrapDataKey(master: MasterKey, sid: string, wrapped: Uint8Array): Buffer {
  return unseal(master.key, wrapped, `key:${sid}`);
}

/** Whether a value is a sealed envelope (`{"$enc": …}`, nothing else). */
export function isSealed(value: unknown): value is { $enc: string | Uint8Array } {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const keys = Object.keys(value);
  return keys.length === 1 && keys[0] === '$enc';
}

/**
 * The sealed forms of a session's content, given the way to its data key
 * (`keyOf` throws ARBOR_ENCRYPTION_KEY, naming where it looked, when the
 * session has none). A sealed value that does not open is ARBOR_CORRUPTION.
 */
export class ContentSealer {
  readonly #keyOf: (sid: string) => Buffer;

  constructor(keyOf: (sid: string) => Buffer) {
    this.#keyOf = keyOf;
  }

  /**
   * The JSON text stored in place of the event's data (JSON text `json`),
   * bound to its session and seq: the journal's and the PostgreSQL flush's
   * write path, so it allocates as little as it can (the plaintext and the
   * additional data are encoded into reused scratch buffers; the envelope is
   * built as text, base64 needing no escaping).
   */
  sealDataJson(sid: string, seq: number, json: string): string {
    const key = this.#keyOf(sid);
    const room = json.length * 3;
    if (room > scratch.length) scratch = Buffer.allocUnsafe(Math.max(room, scratch.length * 2));
    const n = scratch.write(json, 0, 'utf8');
    // Session ids are [A-Za-z0-9_-]: their latin1 bytes are their UTF-8 bytes.
    const aadLength = aadScratch.write(sid, 0, 'latin1');
    aadScratch[aadLength] = 0x3a; // ':'
    const aad = aadScratch.subarray(0, aadLength + 1 + aadScratch.write(String(seq), aadLength + 1, 'latin1'));
    const iv = nextIv();
    const c = createCipheriv('aes-256-gcm', key, iv);
    c.setAAD(aad);
    const body = c.update(scratch.subarray(0, n));
    c.final();
    const out = Buffer.allocUnsafe(SEAL_OVERHEAD + body.length);
    iv.copy(out, 0);
    c.getAuthTag().copy(out, IV_BYTES);
    body.copy(out, SEAL_OVERHEAD);
    return `{"$enc":"${out.toString('base64')}"}`;
  }

  /** `data` sealed, as a value (`{"$enc": base64}`); a value without a JSON form is returned as it is. */
  sealData(sid: string, seq: number, data: unknown): unknown {
    const json = JSON.stringify(data);
    if (json === undefined) return data;
    return { $enc: seal(this.#keyOf(sid), Buffer.from(json, 'utf8'), `${sid}:${seq}`).toString('base64') };
  }

  /** The event's data as it was before sealing; a value that is not sealed (written before encryption was on) as it is. */
  openData(sid: string, seq: number, data: unknown): unknown {
    if (!isSealed(data) || typeof data.$enc !== 'string') return data;
    return JSON.parse(this.#open(sid, Buffer.from(data.$enc, 'base64'), `${sid}:${seq}`).toString('utf8')) as unknown;
  }

  /** A snapshot's or checkpoint entry's state, sealed (bytes inside msgpack). */
  sealState(sid: string, state: unknown): unknown {
    return { $enc: seal(this.#keyOf(sid), packr.pack(state), `${sid}:state`) };
  }

  openState(sid: string, state: unknown): unknown {
    if (!isSealed(state) || typeof state.$enc === 'string') return state;
    return packr.unpack(this.#open(sid, state.$enc, `${sid}:state`));
  }

  #open(sid: string, blob: Uint8Array, aad: string): Buffer {
    const key = this.#keyOf(sid);
    try {
      return unseal(key, blob, aad);
    } catch (err) {
      throw new ArborError(ErrorCodes.CORRUPTION, `session ${sid}: a sealed value does not open (${aad}): damaged or not this session's`, { sessionId: sid }, { cause: err });
    }
  }
}
