import { randomInt } from 'node:crypto';
import { posix as path } from 'node:path';
import { ArborError, ErrorCodes } from '../../core/errors.ts';
import { ensureDir, readFully, writeFully, type FileHandle, type FileSystem } from '../../storage/fs-port.ts';
import {
  FRAME_HEADER_BYTES,
  SEGMENT_FILE_PATTERN,
  SEGMENT_HEADER_BYTES,
  decodeHead,
  decodeSegmentHeader,
  decodePayload,
  FRAME_LENGTH_OFFSET,
  encodePayloadInto,
  encodeTypeAndVersion,
  PAYLOAD_FIXED_BYTES,
  frameCrc,
  encodeSegmentHeader,
  segmentFileName,
  type JournalRecord,
  type SegmentHeader,
} from './format.ts';
import { scanSegment, type DamagedRegion, type TornTail } from './segment-scanner.ts';
import { checkAppendAgainst, checkAppendInput, duplicateOf } from '../../backend/append-checks.ts';
import { errorChannel, journalWriteChannel, type ErrorMessage, type JournalWriteMessage } from '../../telemetry/channels.ts';
import type { AppendInput, AppendResult, DedupeEntry } from '../../backend/backend.ts';
import { Locs } from './locs.ts';

export type { AppendInput, AppendResult, DedupeEntry };

/** When an append is acknowledged. See the README's durability contract. */
export type Durability = 'fsync' | 'write' | 'buffered';

export interface JournalOptions {
  fs: FileSystem;
  dir: string;
  durability: Durability;
  /** `buffered`: write once this many events are queued. */
  batchSize: number;
  /** `write`: sync at this interval. `buffered`: write and sync at this interval. */
  flushIntervalMs: number;
  /** Rotate to a new segment before a batch would grow the current one past this size. */
  maxSegmentBytes: number;
  /** Caps of one group-commit batch (one write, one sync). */
  maxBatchRecords: number;
  maxBatchBytes: number;
  /** Bound of the queue waiting for the writer; a full queue rejects at once with ARBOR_QUEUE_FULL. */
  maxQueueRecords: number;
  maxQueueBytes: number;
  /** Largest payload accepted (and read back). */
  maxRecordBytes: number;
  /** How many recent clientMessageIds per session are remembered for deduplication. */
  dedupeWindow: number;
  /** False: appends are checked, numbered and acknowledged at once, and never written (enableJournal: false). */
  writes?: boolean;
  /** Wall clock for `ts`; injectable for tests. */
  now?: () => number;
  /** Records of deleted sessions (src/file/erasure.ts): skipped at open, as if never written. */
  erased?: (sid: string, lsn: number) => boolean;
  /** Encryption at rest (src/file/keystore.ts): what is written in place of `data`, and how it is read back. */
  sealDataJson?: ((sid: string, seq: number, json: string) => string) | undefined;
  openData?: ((sid: string, seq: number, data: unknown) => unknown) | undefined;
  /**
   * A persisted index of the journal's head (see file/journal-index.ts): when
   * it checks out against the files, open scans only what follows it.
   * Never trusted blindly: anything that does not match means a full scan.
   */
  index?: JournalIndexImage;
  /**
   * The journal archive (src/file/journal-archive.ts): told of each segment
   * sealed by a rotation, and awaited before a segment is deleted (the
   * deletion stops, keeping the segment, when it rejects).
   */
  onSegmentSealed?: ((name: string) => void) | undefined;
  beforeSegmentDelete?: ((name: string) => Promise<void>) | undefined;
}

/** What a journal index holds: everything open needs of the log up to `end`. */
export interface JournalIndexImage {
  /** the segments up to and including the one holding `end`, oldest first */
  segments: { id: number; salt: number; seed: number; size: number; records: number; indexed?: number }[];
  /** the last indexed frame: its LSN, the segment holding it, where it starts and where it ends */
  end: { lsn: number; segment: number; frame: number; offset: number };
  /** per session: last seq, highest seq a snapshot covers, dedupe entries, locations [seq, segmentId, offset, frameBytes]* of unreleased records */
  sessions: { sid: string; lastSeq: number; covered: number; dedupe: DedupeEntry[]; locs: Locs }[];
}

/** What open made of the index it was given. */
export interface JournalIndexUse {
  used: boolean;
  /** why it was not used */
  problem?: string;
  /** whether the segments it names that still exist are this journal's (same salt): 'unknown' when none exists */
  identity: 'same' | 'foreign' | 'unknown';
  /** records the index vouched for (not read at open) */
  indexedRecords: number;
}


export interface JournalOpenReport {
  segments: number;
  records: number;
  bytes: number;
  /** Torn tails truncated at open (at most one: the newest segment's). */
  tornTails: (TornTail & { segment: string })[];
  /** Regions that fail validation with valid data after them, by segment and offset. */
  damage: (DamagedRegion & { segment: string })[];
  /** Orphaned temporary files removed at open. */
  removedTempFiles: string[];
  durationMs: number;
  /** What open made of the persisted index (absent when none was given). */
  index?: JournalIndexUse;
  /** LSN of the last valid record after open (what survived on disk). */
  lastLsn?: number;
}

/**
 * A group-commit batch: its frames laid out back to back in one buffer as the
 * appends arrive (length field and payload written at append time, the
 * checksum filled in when the batch is written, with the seed of the segment it
 * lands in), and per record the result it resolves with. No per-append buffer,
 * closure or queue entry: the batch is the queue entry, and buffer and batch are
 * recycled once written and settled.
 */
class Batch {
  buf: Buffer;
  /** bytes of frames laid out so far */
  used = 0;
  /** per record: the result it settles with (sid, seq, lsn, ts) */
  readonly results: AppendResult[] = [];
  /** per record: its session's index (no map lookup when settling) */
  readonly idxs: SessionIndex[] = [];
  /** per record: the frame's offset in `buf` (frame bytes = next start − start) */
  readonly starts: number[] = [];
  /** per record, absent under `buffered` (acknowledged at append time) */
  readonly resolves: ((r: AppendResult) => void)[] = [];
  readonly rejects: ((e: unknown) => void)[] = [];

  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }

  get count(): number {
    return this.results.length;
  }

  frameBytes(i: number): number {
    return (i + 1 < this.starts.length ? this.starts[i + 1]! : this.used) - this.starts[i]!;
  }

  /** Room for `bytes` more at `used`, growing the buffer (copying what is laid out) when short. */
  reserve(bytes: number): void {
    if (this.used + bytes <= this.buf.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.used + bytes, this.buf.length * 2));
    this.buf.copy(bigger, 0, 0, this.used);
    this.buf = bigger;
  }

  reset(): void {
    this.used = 0;
    this.results.length = 0;
    this.idxs.length = 0;
    this.starts.length = 0;
    this.resolves.length = 0;
    this.rejects.length = 0;
  }

  rejectAll(err: unknown): void {
    for (const reject of this.rejects) reject(err);
  }
}

/** A fresh batch buffer's size; one grows (doubling) for big batches and keeps its size when recycled. */
const BATCH_INITIAL_BYTES = 64 * 1024;
/** Written batches kept for reuse (one being filled, one being written, one awaiting its sync). */
const BATCH_POOL = 3;
/** Batches bigger than this are not kept for reuse (a burst must not pin its memory). */
const BATCH_POOL_MAX_BYTES = 16 * 1024 * 1024;

/**
 * The payload bytes of an event type at version 1 (`,"type":…,"v":1,"data":`), which repeat: a
 * bounded cache saves a JSON.stringify and three small writes per append.
 */
const typeBytesCache = new Map<string, Buffer>();
function typeAndVersionBytes(type: string, v: number): Buffer {
  if (v !== 1) return encodeTypeAndVersion(type, v);
  let bytes = typeBytesCache.get(type);
  if (bytes === undefined) {
    bytes = encodeTypeAndVersion(type, 1);
    if (typeBytesCache.size < 1024) typeBytesCache.set(type, bytes);
  }
  return bytes;
}

/** A uint32 little-endian, as Buffer#writeUInt32LE without its range checks (the callers' values are uint32 by construction). */
function putUint32LE(buf: Buffer, at: number, value: number): void {
  buf[at] = value;
  buf[at + 1] = value >>> 8;
  buf[at + 2] = value >>> 16;
  buf[at + 3] = value >>> 24;
}

/** `new Promise(captureResolvers)` hands out the resolvers without allocating an executor closure per append. */
let capturedResolve: ((r: AppendResult) => void) | undefined;
let capturedReject: ((e: unknown) => void) | undefined;
function captureResolvers(resolve: (r: AppendResult) => void, reject: (e: unknown) => void): void {
  capturedResolve = resolve;
  capturedReject = reject;
}

interface SessionIndex {
  /** Highest seq assigned, pending appends included. */
  lastSeq: number;
  /** Flattened [seq, segmentId, offset, frameBytes] of every record not yet released. */
  locs: Locs;
  cids: Map<string, AppendResult | Promise<AppendResult>> | undefined;
  quarantined: string | undefined;
  /** Highest seq covered by a durable snapshot: such records no longer pin segments. */
  covered: number;
}

interface Segment {
  /** first LSN; also the file name */
  id: number;
  name: string;
  header: SegmentHeader;
  size: number;
  /** records in it not yet released by a snapshot */
  live: number;
}

function newSessionIndex(lastSeq = 0, locs = new Locs(), covered = 0): SessionIndex {
  return { lastSeq, locs, cids: undefined, quarantined: undefined, covered };
}

/** Frames of one session read at once by readSession. */
const READ_AHEAD = 16;

/** Syncs allowed in flight at once: one settling while the next batch is written and synced. */
const MAX_SYNCS_IN_FLIGHT = 2;

interface WrittenBatch {
  segment: Segment;
  /** offset of the batch's first frame in the segment */
  base: number;
  bytes: number;
  started: number;
}

type ResolvedJournalOptions = Required<Omit<JournalOptions, 'index' | 'onSegmentSealed' | 'beforeSegmentDelete'>> & Pick<JournalOptions, 'index' | 'onSegmentSealed' | 'beforeSegmentDelete'>;

/** A segment as it was when the journal was opened, for replaying it in log order. */
export interface SegmentFrames {
  name: string;
  /** the header's checksum seed (frames are re-checked on read) */
  seed: number;
  /** the end of its valid records at open: the replay rescans (checking every frame) up to here */
  end: number;
}

type State = 'open' | 'closing' | 'closed' | 'failed';

const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/**
 * The warm tier: one shared, segmented, append-only log for all sessions, with
 * a single group committer.
 *
 * Data flow: `append()` validates, assigns the session's next seq and the next
 * LSN, encodes the payload and queues it — synchronously, so the order of
 * `append()` calls is the order in the log. A single pump takes everything
 * queued (up to the batch caps), frames it with checksums into one buffer,
 * writes it with one write loop and, under `fsync`, one `fdatasync`, and only
 * then settles every promise of the batch. Appends arriving meanwhile form the
 * next batch.
 *
 * A failed write or sync is sticky (after leveldb's RecordBackgroundError): the
 * batch and everything queued are rejected and every later call fails with
 * ARBOR_JOURNAL_FAILED until the journal is reopened, because a retried fsync
 * may report success after the kernel dropped the data.
 */
export class Journal {
  readonly #o: ResolvedJournalOptions;
  readonly #sessions = new Map<string, SessionIndex>();
  readonly #segments: Segment[] = [];
  #active!: Segment;
  #handle!: FileHandle;
  #state: State = 'open';
  #failure: ArborError | undefined;
  #nextLsn = 1;
  /** Batches waiting for the writer, oldest first; the last one takes new appends. */
  #queue: Batch[] = [];
  #queueHead = 0;
  #queuedRecords = 0;
  #queuedBytes = 0;
  /** Batches written and settled, kept for reuse. */
  #pool: Batch[] = [];
  #deleting: Promise<unknown> = Promise.resolve();
  /** Acknowledgement promises of batches whose sync is in flight, oldest first. */
  #inflight: Promise<void>[] = [];
  /** Batches written (or being written) and not yet acknowledged, oldest first; rejected if the journal fails. */
  #inflightBatches: Batch[] = [];
  /** Wakes the pump when it waits on an in-flight sync and a new batch could start. */
  #wake: (() => void) | undefined;
  #pumping = false;
  #scheduled = false;
  /** LSN of the last record written to the file. */
  #writtenLsn = 0;
  /** LSN of the last record known durable (synced). */
  #syncedLsn = 0;
  #timer: NodeJS.Timeout | undefined;
  #syncDue = false;
  #lastFlushAt = Date.now();
  #idle: (() => void)[] = [];
  #closePromise: Promise<void> | undefined;
  /** Frames found at open, per segment, until recovery has replayed them (releaseFramesAtOpen). */
  #framesAtOpen: SegmentFrames[] | undefined = [];
  /** While set, no segment is deleted (recovery may still need any of them). */
  #deletionHeld = false;
  /** The last settled (indexed) frame: segment id, start, end, LSN. Where a journal index may end. */
  #settledSeg = 0;
  #settledFrame = 0;
  #settledEnd = 0;
  #settledLsn = 0;
  /** True when erasure dropped the settled frame: no index until the next record settles. */
  #settledStale = false;
  report!: JournalOpenReport;

  private constructor(options: JournalOptions) {
    this.#o = { now: Date.now, writes: true, erased: () => false, ...options } as ResolvedJournalOptions;
  }

  /**
   * Opens (or creates) the journal in `options.dir`: removes temp files, scans
   * every segment, truncates a torn tail. The scan checks every frame's
   * checksum but parses only each record's head (lsn, sid, seq, ts, cid): the
   * index needs no more, and recovery parses each record once, when it
   * replays it (`framesAtOpen`, `readSession`).
   */
  static async open(options: JournalOptions): Promise<Journal> {
    const journal = new Journal(options);
    await journal.#open();
    journal.#ensureTimer();
    return journal;
  }

  /** The valid frames found at open, per segment in log order; undefined once released. */
  framesAtOpen(): readonly SegmentFrames[] | undefined {
    return this.#framesAtOpen;
  }

  /** Frees the open-time frame lists (recovery has replayed them). */
  releaseFramesAtOpen(): void {
    this.#framesAtOpen = undefined;
  }

  /** Opens one segment for reading (the recovery pass replays the frames it held at open; segment deletion is held meanwhile). */
  openSegment(name: string): Promise<FileHandle> {
    return this.#o.fs.open(path.join(this.#o.dir, name), 'r');
  }

  /** Holds (or lets go of) segment deletion: recovery holds it until every session is rebuilt. */
  holdSegmentDeletion(held: boolean): void {
    this.#deletionHeld = held;
  }

  /** The directory holding the segments. */
  get dir(): string {
    return this.#o.dir;
  }

  get durability(): Durability {
    return this.#o.durability;
  }

  /** 'open' | 'closing' | 'closed' | 'failed' */
  get state(): State {
    return this.#state;
  }

  /** The error that failed the journal, when state is 'failed'. */
  get failure(): ArborError | undefined {
    return this.#failure;
  }

  /** Records queued and not yet written. */
  get queueDepth(): number {
    return this.#queuedRecords;
  }

  /** Whether appends are waiting to be written, synced or acknowledged (the recovery pass gives way to them). */
  get writesPending(): boolean {
    return this.#queuedRecords > 0 || this.#pumping || this.#inflight.length > 0;
  }

  /** Wall-clock ms of the last completed flush. */
  get lastFlushAt(): number {
    return this.#lastFlushAt;
  }

  get nextLsn(): number {
    return this.#nextLsn;
  }

  /** LSN up to which every record is durable on disk. */
  get syncedLsn(): number {
    return this.#syncedLsn;
  }

  /** Segment file names, oldest first. */
  segmentNames(): string[] {
    return this.#segments.map((s) => s.name);
  }

  /** Total bytes in all segments. */
  sizeBytes(): number {
    return this.#segments.reduce((sum, s) => sum + s.size, 0);
  }

  /** Every session the journal knows of (no copy: the journal's own keys). */
  sessionIds(): IterableIterator<string> {
    return this.#sessions.keys();
  }

  lastSeq(sid: string): number {
    return this.#sessions.get(sid)?.lastSeq ?? 0;
  }

  /**
   * Appends one event. Resolves once the event is as durable as the journal's
   * mode promises: after `fdatasync` under `fsync`, after `write(2)` under
   * `write`, at once under `buffered`. Rejects with ARBOR_QUEUE_FULL,
   * ARBOR_SEQ_CONFLICT, ARBOR_SESSION_QUARANTINED, ARBOR_TOO_LARGE (nothing
   * written), ARBOR_IO_ERROR (the batch failed; not acknowledged) or
   * ARBOR_JOURNAL_FAILED / ARBOR_CLOSED.
   */
  append(input: AppendInput): Promise<AppendResult> {
    try {
      return this.#append(input);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #append(input: AppendInput): Promise<AppendResult> {
    this.#assertWritable();
    const { sid, type, data, clientMessageId: cid } = input;
    const v = checkAppendInput(input);
    let idx = this.#sessions.get(sid);
    if (idx === undefined) {
      idx = newSessionIndex();
      this.#sessions.set(sid, idx);
    }
    const duplicate = duplicateOf(idx.cids, cid);
    if (duplicate !== undefined) return duplicate;
    checkAppendAgainst(input, idx);
    const ts = input.ts ?? this.#o.now();
    const seq = idx.lastSeq + 1;
    const lsn = this.#nextLsn;
    let dataJson: string | undefined;
    try {
      // Encryption at rest: the sealed form of `data` ({"$enc": …}) is what goes into the batch buffer;
      // without a key nothing more than the one stringify happens (no extra allocation on the plain path).
      dataJson = JSON.stringify(data);
      if (dataJson !== undefined && this.#o.sealDataJson !== undefined) dataJson = this.#o.sealDataJson(sid, seq, dataJson);
    } catch (err) {
      if (err instanceof ArborError) throw err;
      throw new ArborError(ErrorCodes.INVALID_INPUT, `data of session ${sid} is not JSON-serialisable: ${(err as Error).message}`, { field: 'data', sessionId: sid }, { cause: err });
    }
    if (dataJson === undefined) throw new ArborError(ErrorCodes.INVALID_INPUT, `data of session ${sid} has no JSON form`, { field: 'data', sessionId: sid });
    const typeAndV = typeAndVersionBytes(type, v);
    const cidJson = cid === undefined ? undefined : JSON.stringify(cid);
    // Encoded to UTF-8 once, straight into the batch's buffer after an 8-byte frame header (no string for
    // the whole payload, no buffer per append); nothing is committed (`used` unchanged) until every check
    // has passed.
    const room = FRAME_HEADER_BYTES + PAYLOAD_FIXED_BYTES + sid.length + typeAndV.length + 3 * (dataJson.length + (cidJson?.length ?? 0));
    const batch = this.#batchFor(room);
    const at = batch.used;
    batch.reserve(room);
    const buf = batch.buf;
    const payloadBytes = encodePayloadInto(buf, at + FRAME_HEADER_BYTES, lsn, sid, seq, ts, typeAndV, dataJson, cidJson);
    const bytes = FRAME_HEADER_BYTES + payloadBytes;
    if (payloadBytes > this.#o.maxRecordBytes) {
      throw new ArborError(ErrorCodes.TOO_LARGE, `event of session ${sid} is ${payloadBytes} bytes; the limit is ${this.#o.maxRecordBytes}`, { sessionId: sid, bytes: payloadBytes, limit: this.#o.maxRecordBytes });
    }
    if (this.#queuedRecords >= this.#o.maxQueueRecords || this.#queuedBytes + bytes > this.#o.maxQueueBytes) {
      throw new ArborError(ErrorCodes.QUEUE_FULL, `journal queue is full (${this.#queuedRecords} records, ${this.#queuedBytes} bytes); retry later`, { sessionId: sid, queueDepth: this.#queuedRecords, queuedBytes: this.#queuedBytes });
    }
    // Past every check: from here the append is committed to the queue.
    this.#nextLsn = lsn + 1;
    idx.lastSeq = seq;
    const result: AppendResult = { sid, seq, lsn, ts, duplicate: false };
    if (!this.#o.writes) {
      // The journal is off: numbered and acknowledged, nothing written (snapshots alone keep state).
      if (cid !== undefined) this.#rememberCid(idx, cid, result);
      this.#writtenLsn = lsn;
      this.#syncedLsn = lsn;
      return Promise.resolve(result);
    }
    putUint32LE(buf, at + FRAME_LENGTH_OFFSET, payloadBytes);
    batch.starts.push(at);
    batch.used = at + bytes;
    batch.results.push(result);
    batch.idxs.push(idx);
    let promise: Promise<AppendResult>;
    if (this.#o.durability === 'buffered') {
      // Acknowledged at once, by contract: the write happens later.
      promise = Promise.resolve({ sid, seq, lsn, ts, duplicate: false });
      if (cid !== undefined) this.#rememberCid(idx, cid, { sid, seq, lsn, ts, duplicate: false });
    } else {
      promise = new Promise<AppendResult>(captureResolvers);
      batch.resolves.push(capturedResolve!);
      batch.rejects.push(capturedReject!);
      capturedResolve = undefined;
      capturedReject = undefined;
      if (cid !== undefined) this.#rememberCid(idx, cid, promise);
    }
    this.#queuedRecords += 1;
    this.#queuedBytes += bytes;
    this.#schedule();
    return promise;
  }

  /**
   * The batch the next append goes into: the newest queued one, unless it is
   * full (its record cap, or its byte cap with up to `room` more bytes), when
   * a new one is queued. (`room` is a bound: a batch may end a little below
   * the byte cap.)
   */
  #batchFor(room: number): Batch {
    const last = this.#queueHead < this.#queue.length ? this.#queue[this.#queue.length - 1]! : undefined;
    if (last !== undefined && (last.count === 0 || (last.count < this.#o.maxBatchRecords && last.used + room <= this.#o.maxBatchBytes))) return last;
    const fresh = this.#pool.pop() ?? new Batch(BATCH_INITIAL_BYTES);
    this.#queue.push(fresh);
    return fresh;
  }

  #rememberCid(idx: SessionIndex, cid: string, result: AppendResult | Promise<AppendResult>): void {
    idx.cids ??= new Map();
    idx.cids.set(cid, result);
    if (result instanceof Promise) {
      // Once settled, keep the plain result (and forget a failed one: it was never acknowledged).
      result.then(
        (r) => {
          if (idx.cids?.get(cid) === result) idx.cids.set(cid, r);
        },
        () => {
          if (idx.cids?.get(cid) === result) idx.cids.delete(cid);
        },
      );
    }
    if (idx.cids.size > this.#o.dedupeWindow) {
      const oldest = idx.cids.keys().next().value as string;
      idx.cids.delete(oldest);
    }
  }

  #assertWritable(): void {
    if (this.#state === 'failed') {
      throw new ArborError(ErrorCodes.JOURNAL_FAILED, `journal failed earlier and refuses writes until reopened: ${this.#failure?.message}`, {}, { cause: this.#failure });
    }
    if (this.#state !== 'open') throw new ArborError(ErrorCodes.CLOSED, 'journal is closed');
  }

  // ---- the group committer -------------------------------------------------

  #schedule(): void {
    if (this.#pumping) {
      // The pump may be waiting on an in-flight sync: let it start this batch now (pipelining).
      if (this.#wake !== undefined && (this.#o.durability !== 'buffered' || this.#queuedRecords >= this.#o.batchSize)) {
        const wake = this.#wake;
        this.#wake = undefined;
        wake();
      }
      return;
    }
    if (this.#scheduled) return;
    if (this.#o.durability === 'buffered' && this.queueDepth < this.#o.batchSize && this.#state === 'open' && !this.#syncDue) return;
    this.#scheduled = true;
    // Fast path: an idle journal starts on a microtask, so appends made in the same tick share the batch.
    queueMicrotask(() => {
      this.#scheduled = false;
      void this.#pump();
    });
  }

  /** Whether the queue holds a batch to write now (`buffered` waits for a full batch, a due sync, or closing). */
  #batchReady(): boolean {
    if (this.queueDepth === 0) return false;
    return this.#o.durability !== 'buffered' || this.queueDepth >= this.#o.batchSize || this.#syncDue || this.#state !== 'open';
  }

  /**
   * The single writer. Writes are strictly sequential; syncs are pipelined: a
   * batch's fdatasync runs while the next batch is framed and written (at most
   * MAX_SYNCS_IN_FLIGHT at once). Acknowledgements stay in log order: a batch
   * settles only after its own sync and every earlier batch's.
   */
  async #pump(): Promise<void> {
    if (this.#pumping || this.#state === 'failed' || this.#state === 'closed') return;
    this.#pumping = true;
    try {
      for (;;) {
        if (this.state === 'failed') break;
        if (this.#batchReady() && this.#inflight.length < MAX_SYNCS_IN_FLIGHT) {
          const batch = this.#takeBatch();
          const written = await this.#writeBatch(batch);
          this.#commit(batch, written);
          // Let the callers woken by earlier batches queue their next appends before the next batch is cut.
          if (this.queueDepth > 0 && this.#o.durability !== 'buffered') await new Promise<void>((r) => setImmediate(r));
          continue;
        }
        if (this.#inflight.length > 0) {
          // Wait for the oldest sync, or for a new append that can start its batch meanwhile.
          const oldest = this.#inflight[0]!;
          await new Promise<void>((resolve) => {
            this.#wake = this.#inflight.length < MAX_SYNCS_IN_FLIGHT ? resolve : undefined;
            oldest.then(resolve, resolve);
          });
          this.#wake = undefined;
          continue;
        }
        if (this.#syncDue) {
          this.#syncDue = false;
          await this.#sync();
          continue;
        }
        break;
      }
    } catch (err) {
      this.#fail(err, []);
    } finally {
      this.#pumping = false;
      this.#wake = undefined;
      if (this.queueDepth === 0 || this.state === 'failed') {
        const waiters = this.#idle;
        this.#idle = [];
        for (const w of waiters) w();
      }
    }
  }

  /** The oldest queued batch, taken off the queue (the next append starts a new one). */
  #takeBatch(): Batch {
    let batch = this.#queue[this.#queueHead++]!;
    // A batch left empty by a refused append holds nothing to write.
    while (batch.count === 0 && this.#queueHead < this.#queue.length) {
      this.#recycle(batch);
      batch = this.#queue[this.#queueHead++]!;
    }
    this.#queuedRecords -= batch.count;
    this.#queuedBytes -= batch.used;
    if (this.#queueHead === this.#queue.length) {
      this.#queue.length = 0;
      this.#queueHead = 0;
    } else if (this.#queueHead > 64) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
    return batch;
  }

  #recycle(batch: Batch): void {
    if (this.#pool.length >= BATCH_POOL || batch.buf.length > BATCH_POOL_MAX_BYTES) return;
    batch.reset();
    this.#pool.push(batch);
  }

  /** Checksums the batch's frames and writes it (rotating first when it would overflow the segment). Not yet synced. */
  async #writeBatch(batch: Batch): Promise<WrittenBatch> {
    const started = performance.now();
    const total = batch.used;
    // From here until acknowledged, the batch fails with the journal (the pump's catch calls #fail).
    this.#inflightBatches.push(batch);
    const firstLsn = batch.results[0]!.lsn;
    if (this.#active.size > SEGMENT_HEADER_BYTES && this.#active.size + total > this.#o.maxSegmentBytes) {
      await this.#drainInflight();
      await this.#rotate(firstLsn);
    }
    const segment = this.#active;
    const seed = segment.header.seed;
    const buffer = batch.buf;
    const starts = batch.starts;
    // The frames' length fields and payloads are in place since append(): only the checksums are left,
    // each seeded with the segment this batch lands in.
    for (let i = 0, n = starts.length; i < n; i += 1) {
      const at = starts[i]!;
      const end = i + 1 < n ? starts[i + 1]! : total;
      putUint32LE(buffer, at, frameCrc(seed, buffer, at, end));
    }
    const base = segment.size;
    await writeFully(this.#handle, buffer.subarray(0, total), base);
    segment.size += total;
    this.#writtenLsn = batch.results[batch.count - 1]!.lsn;
    return { segment, base, bytes: total, started };
  }

  /**
   * Makes a written batch durable and acknowledges it: under `fsync` and
   * `buffered` its sync starts now and the batch settles after it and after
   * every earlier batch; under `write` it settles at once.
   */
  #commit(batch: Batch, written: WrittenBatch): void {
    if (this.#o.durability === 'write') {
      this.#ensureTimer();
      this.#inflightBatches.shift();
      this.#settle(batch, written);
      return;
    }
    const lastLsn = this.#writtenLsn;
    const sync = this.#handle.datasync();
    const previous = this.#inflight.at(-1);
    const done: Promise<void> = (previous === undefined ? sync : Promise.all([sync, previous])).then(
      () => {
        if (this.#state === 'failed') return;
        if (lastLsn > this.#syncedLsn) this.#syncedLsn = lastLsn;
        this.#inflight.shift();
        this.#inflightBatches.shift();
        this.#settle(batch, written);
      },
      (err: unknown) => this.#fail(err, []),
    );
    this.#inflight.push(done);
  }

  /** Indexes and acknowledges a batch that is as durable as the mode promises, then recycles it. */
  #settle(batch: Batch, written: WrittenBatch): void {
    const { segment, base } = written;
    const { results, idxs, starts, resolves } = batch;
    const n = results.length;
    const segId = segment.id;
    let live = 0;
    for (let i = 0; i < n; i += 1) {
      const r = results[i]!;
      const idx = idxs[i]!;
      // A snapshot may already cover a record written late (buffered mode): it pins nothing then.
      if (r.seq <= idx.covered) continue;
      const start = starts[i]!;
      idx.locs.push(r.seq, segId, base + start, (i + 1 < n ? starts[i + 1]! : batch.used) - start);
      live += 1;
    }
    segment.live += live;
    if (n > 0) {
      // Where the last settled frame sits: the journal index records it (and its LSN as the high-water mark).
      this.#settledSeg = segId;
      this.#settledStale = false;
      this.#settledFrame = base + starts[n - 1]!;
      this.#settledEnd = base + batch.used;
      this.#settledLsn = results[n - 1]!.lsn;
    }
    this.#lastFlushAt = Date.now();
    for (let i = 0; i < resolves.length; i += 1) resolves[i]!(results[i]!);
    if (journalWriteChannel.hasSubscribers) {
      const sessionIds = [...new Set(results.map((r) => r.sid))];
      journalWriteChannel.publish({ batchSize: n, sessionIds, bytes: written.bytes, durationMs: performance.now() - written.started, durability: this.#o.durability, queueDepth: this.queueDepth } satisfies JournalWriteMessage);
    }
    this.#recycle(batch);
  }

  /** Waits until every in-flight sync has settled (and its batch was acknowledged or failed). */
  async #drainInflight(): Promise<void> {
    while (this.#inflight.length > 0 && this.#state !== 'failed') await this.#inflight.at(-1);
    if (this.#state === 'failed') throw this.#failure;
  }

  async #sync(): Promise<void> {
    await this.#drainInflight();
    if (this.#syncedLsn >= this.#writtenLsn) return;
    const target = this.#writtenLsn;
    await this.#handle.datasync();
    this.#syncedLsn = target;
  }

  #ensureTimer(): void {
    if (this.#timer !== undefined || this.#o.durability === 'fsync') return;
    this.#timer = setInterval(() => {
      if (this.#state !== 'open') return;
      if (this.#o.durability === 'buffered' ? this.queueDepth > 0 || this.#syncedLsn < this.#writtenLsn : this.#syncedLsn < this.#writtenLsn) {
        this.#syncDue = true;
        if (!this.#pumping) void this.#pump();
      }
    }, this.#o.flushIntervalMs);
    this.#timer.unref();
  }

  /** Seals the active segment (synced) and starts a new one whose first LSN is `firstLsn`. */
  async #rotate(firstLsn: number): Promise<void> {
    await this.#handle.datasync();
    this.#syncedLsn = this.#writtenLsn;
    const next = await this.#createSegment(firstLsn);
    const old = this.#handle;
    this.#handle = next.handle;
    this.#active = next.segment;
    this.#segments.push(next.segment);
    await old.close();
    const sealed = this.#segments.at(-2);
    if (sealed !== undefined) this.#o.onSegmentSealed?.(sealed.name);
  }

  /** temp file → header → fdatasync → rename → directory sync: a segment never appears with a partial header. */
  async #createSegment(firstLsn: number): Promise<{ segment: Segment; handle: FileHandle }> {
    const { fs, dir } = this.#o;
    const name = segmentFileName(firstLsn);
    const temp = path.join(dir, `${name}.tmp`);
    const { bytes, header } = encodeSegmentHeader(firstLsn, randomInt(0, 2 ** 32 - 1));
    const handle = await fs.open(temp, 'w+', FILE_MODE);
    try {
      await writeFully(handle, bytes, 0);
      await handle.datasync();
      await fs.rename(temp, path.join(dir, name));
      await fs.syncDir(dir);
    } catch (err) {
      // The write or sync failure is what the caller must see; closing the abandoned temp file's handle can only add noise.
      await handle.close().catch(() => undefined);
      throw err;
    }
    return { segment: { id: firstLsn, name, header, size: SEGMENT_HEADER_BYTES, live: 0 }, handle };
  }

  #fail(err: unknown, batch: Batch[]): void {
    if (this.#state === 'failed') return;
    const cause = err instanceof ArborError ? err : new ArborError(ErrorCodes.IO_ERROR, `journal write failed: ${(err as Error)?.message ?? String(err)}`, { segment: this.#active?.name }, { cause: err });
    this.#state = 'failed';
    this.#failure = cause;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const b of batch) b.rejectAll(cause);
    // Every batch written but not yet acknowledged fails with it: a later sync cannot vouch for an earlier failed one.
    for (const b of this.#inflightBatches) b.rejectAll(cause);
    this.#inflightBatches = [];
    this.#inflight = [];
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
    const rest = this.#queue.slice(this.#queueHead);
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedRecords = 0;
    this.#queuedBytes = 0;
    const failed = new ArborError(ErrorCodes.JOURNAL_FAILED, `journal failed before this append was written: ${cause.message}`, {}, { cause });
    if (errorChannel.hasSubscribers) errorChannel.publish({ source: 'journal', code: cause.code, message: cause.message } satisfies ErrorMessage);
    for (const b of rest) b.rejectAll(failed);
  }

  /**
   * Resolves when everything queued so far is written and synced (whatever the
   * mode). Rejects if the journal fails meanwhile.
   */
  async flush(): Promise<void> {
    if (this.#state === 'closed') return;
    this.#assertNotFailed();
    if (this.queueDepth > 0 || this.#pumping) {
      await new Promise<void>((resolve) => {
        this.#idle.push(resolve);
        this.#syncDue = true;
        if (!this.#pumping && !this.#scheduled) void this.#pump();
      });
      // A pump that was already past its loop check may have missed the request.
      if (this.queueDepth > 0) return this.flush();
    }
    this.#assertNotFailed();
    if (this.#syncedLsn < this.#writtenLsn) {
      try {
        await this.#sync();
      } catch (err) {
        this.#fail(err, []);
      }
    }
    this.#assertNotFailed();
  }

  #assertNotFailed(): void {
    if (this.#state === 'failed') throw new ArborError(ErrorCodes.JOURNAL_FAILED, `journal failed: ${this.#failure?.message}`, {}, { cause: this.#failure });
  }

  /** Flushes, syncs and closes the files. Idempotent; a failed journal closes without flushing. */
  close(): Promise<void> {
    this.#closePromise ??= this.#close();
    return this.#closePromise;
  }

  async #close(): Promise<void> {
    const failedBefore = this.#state === 'failed';
    if (!failedBefore) {
      this.#state = 'closing';
      this.#syncDue = true;
      await new Promise<void>((resolve) => {
        this.#idle.push(resolve);
        if (!this.#pumping) void this.#pump();
      });
    }
    if (this.#timer !== undefined) clearInterval(this.#timer);
    let error: unknown = this.#failure;
    if (this.#failure === undefined) {
      try {
        await this.#sync();
      } catch (err) {
        error = new ArborError(ErrorCodes.IO_ERROR, 'final journal sync failed', { segment: this.#active.name }, { cause: err });
      }
    }
    this.#state = 'closed';
    // Everything acknowledged was synced above (or the sync's failure is `error`): a failing close(2) of the
    // synced segment loses nothing, and the error that matters is already the one thrown.
    await this.#handle.close().catch(() => undefined);
    // A journal that failed before close() was called reported it already; a failure while closing is news.
    if (!failedBefore && error !== undefined) throw error;
  }

  // ---- reading, snapshots, compaction --------------------------------------

  /**
   * The session's written records with seq ≥ `fromSeq`, in order, read back from
   * the segments. Only records not yet released by a snapshot are available.
   */
  async readSession(sid: string, fromSeq = 1, onDamaged?: (d: { seq: number; segment: string; offset: number; length: number; reason: string }) => void): Promise<JournalRecord[]> {
    const idx = this.#sessions.get(sid);
    if (idx === undefined) return [];
    const out: JournalRecord[] = [];
    const handles = new Map<number, FileHandle>();
    try {
      // [seq, segmentId, offset, frameBytes] of each record wanted, taken before any await.
      const wanted: number[][] = [];
      for (let i = 0; i < idx.locs.length; i += 4) if (idx.locs.at(i) >= fromSeq) wanted.push([idx.locs.at(i), idx.locs.at(i + 1), idx.locs.at(i + 2), idx.locs.at(i + 3)]);
      // The sealed segments holding them, opened at once (each handle is closed below, opened or not yet).
      const opening = new Map<number, Promise<FileHandle>>();
      for (const [, segId] of wanted) {
        if (segId !== this.#active.id && !opening.has(segId!)) opening.set(segId!, this.#o.fs.open(path.join(this.#o.dir, segmentFileName(segId!)), 'r'));
      }
      const opened = await Promise.allSettled(opening.values());
      let failed: unknown;
      [...opening.keys()].forEach((segId, i) => {
        const r = opened[i]!;
        if (r.status === 'fulfilled') handles.set(segId, r.value);
        else failed ??= r.reason;
      });
      if (failed !== undefined) throw failed;
      // The frames are read READ_AHEAD at a time (a session's records are spread over the log, one
      // read each), then checked and decoded in order: a first access after a restart waits for a few
      // rounds of reads instead of one per record, each behind a slice of the recovery pass.
      const frames: Uint8Array[] = new Array(wanted.length);
      let next = 0;
      const reader = async (): Promise<void> => {
        while (next < wanted.length) {
          const k = next++;
          const [, segId, offset, frameBytes] = wanted[k]!;
          frames[k] = await readFully(segId === this.#active.id ? this.#handle : handles.get(segId!)!, frameBytes!, offset!);
        }
      };
      await Promise.all(Array.from({ length: Math.min(READ_AHEAD, wanted.length) }, reader));
      for (let k = 0; k < wanted.length; k += 1) {
        const [seq, segId, offset, frameBytes] = wanted[k] as [number, number, number, number];
        const frame = frames[k]!;
        const segment = this.#segments.find((s) => s.id === segId);
        const payload = frame.subarray(FRAME_HEADER_BYTES);
        const ok = segment !== undefined && frame.length === frameBytes && frameCrc(segment.header.seed, frame) === Buffer.from(frame.buffer, frame.byteOffset).readUInt32LE(0);
        const record = ok ? decodePayload(payload) : 'checksum mismatch on read-back';
        if (typeof record === 'string' && onDamaged !== undefined) {
          // The caller takes the record as missing (a gap), as a scan that found it damaged would have.
          onDamaged({ seq, segment: segmentFileName(segId), offset, length: frameBytes, reason: record });
          continue;
        }
        if (typeof record === 'string') {
          throw new ArborError(ErrorCodes.CORRUPTION, `session ${sid} seq ${seq}: ${record} in ${segmentFileName(segId)} at offset ${offset}`, { sessionId: sid, seq, segment: segmentFileName(segId), offset });
        }
        out.push(this.openRecord(record));
      }
    } finally {
      // Read-only handles: a failed close loses nothing, and must not hide the read's own outcome.
      for (const h of handles.values()) await h.close().catch(() => undefined);
    }
    return out;
  }

  /** The record with its `data` opened (encryption at rest), as written by the caller of `append`. */
  openRecord(record: JournalRecord): JournalRecord {
    if (this.#o.openData !== undefined) record.data = this.#o.openData(record.sid, record.seq, record.data);
    return record;
  }

  /** Whether the record `lsn` of `sid` belongs to a deleted session awaiting erasure (open skipped it; replays must too). */
  isErased(sid: string, lsn: number): boolean {
    return this.#o.erased(sid, lsn);
  }

  /**
   * Registers what a durable snapshot of `sid` covers: the session's seq is at
   * least `floorSeq` (default `seq`) from now on, its dedupe entries are
   * restored, and records with seq ≤ `seq` no longer pin their segments.
   */
  noteSnapshot(sid: string, seq: number, dedupe: readonly DedupeEntry[] = [], floorSeq = seq): void {
    let idx = this.#sessions.get(sid);
    if (idx === undefined) {
      idx = newSessionIndex();
      this.#sessions.set(sid, idx);
    }
    if (floorSeq > idx.lastSeq) idx.lastSeq = floorSeq;
    if (seq > idx.covered) idx.covered = seq;
    if (dedupe.length > 0) {
      const merged = new Map<string, AppendResult | Promise<AppendResult>>();
      for (const [cid, s, lsn, ts] of dedupe) merged.set(cid, { sid, seq: s, lsn, ts, duplicate: false });
      for (const [cid, r] of idx.cids ?? []) merged.set(cid, r);
      idx.cids = merged;
      while (idx.cids.size > this.#o.dedupeWindow) idx.cids.delete(idx.cids.keys().next().value as string);
    }
    let cut = 0;
    while (cut < idx.locs.length && idx.locs.at(cut) <= seq) {
      const segId = idx.locs.at(cut + 1);
      const seg = this.#segments.find((s) => s.id === segId);
      if (seg !== undefined) seg.live -= 1;
      cut += 4;
    }
    if (cut > 0) idx.locs.dropFirst(cut);
  }

  /** The settled dedupe entries of a session with seq ≤ `uptoSeq`, oldest first: what a snapshot at that seq carries. */
  dedupeEntries(sid: string, uptoSeq: number): DedupeEntry[] {
    const out: DedupeEntry[] = [];
    for (const [cid, r] of this.#sessions.get(sid)?.cids ?? []) {
      if (!(r instanceof Promise) && r.seq <= uptoSeq) out.push([cid, r.seq, r.lsn, r.ts]);
    }
    return out;
  }

  /** Refuse appends to `sid` (its history is damaged) until `release` is called. */
  quarantine(sid: string, reason: string): void {
    let idx = this.#sessions.get(sid);
    if (idx === undefined) {
      idx = newSessionIndex();
      this.#sessions.set(sid, idx);
    }
    idx.quarantined = reason;
  }

  unquarantine(sid: string): void {
    const idx = this.#sessions.get(sid);
    if (idx !== undefined) idx.quarantined = undefined;
  }

  quarantineReason(sid: string): string | undefined {
    return this.#sessions.get(sid)?.quarantined;
  }

  /** Sessions with unreleased records in the oldest segment: the ones to snapshot so it can be deleted. */
  sessionsPinningOldest(): string[] {
    const oldest = this.#segments[0];
    if (oldest === undefined || oldest === this.#active) return [];
    const out: string[] = [];
    // Locations are in log order, so a session pins the oldest segment when its first one is there
    // (asked without decoding locations adopted from the index and not used since).
    for (const [sid, idx] of this.#sessions) if (idx.locs.firstSegment() === oldest.id) out.push(sid);
    return out;
  }

  /**
   * Deletes the oldest segments that no unreleased record pins, oldest first
   * (the remaining segments always form a suffix of the log), syncing the
   * directory after each unlink. Never deletes the active segment.
   */
  deleteReleasedSegments(): Promise<string[]> {
    // Serialised: two snapshots finishing together must not both unlink the same segment.
    const run = this.#deleting.then(() => this.#deleteReleased());
    // The caller gets the failure through `run`; the chain only has to go on for the next deletion.
    this.#deleting = run.catch(() => undefined);
    return run;
  }

  async #deleteReleased(): Promise<string[]> {
    const deleted: string[] = [];
    while (!this.#deletionHeld && this.#segments.length > 1 && this.#segments[0]!.live <= 0 && this.#state === 'open') {
      const seg = this.#segments[0]!;
      if (this.#o.beforeSegmentDelete !== undefined) {
        // Archived (copied and synced) first; a failed copy keeps the segment, and the next deletion tries again.
        try {
          await this.#o.beforeSegmentDelete(seg.name);
        } catch (err) {
          if (errorChannel.hasSubscribers) errorChannel.publish({ source: 'archive', code: (err as ArborError)?.code ?? ErrorCodes.IO_ERROR, message: `archiving ${seg.name} failed; it is kept in the journal: ${(err as Error)?.message ?? String(err)}` } satisfies ErrorMessage);
          break;
        }
      }
      await this.#o.fs.unlink(path.join(this.#o.dir, seg.name));
      this.#segments.shift();
      await this.#o.fs.syncDir(this.#o.dir);
      deleted.push(seg.name);
    }
    return deleted;
  }

  // ---- the persisted index (file/journal-index.ts) --------------------------

  /**
   * What a journal index needs, as of the last settled frame: every session's
   * unreleased record locations and dedupe entries up to it. A string says why
   * no index should be written now (writes off, failed, damage seen at open,
   * a quarantined session): the caller then removes any older one.
   */
  async indexImage(): Promise<JournalIndexImage | string> {
    if (!this.#o.writes) return 'journal writes are off';
    if (this.#state !== 'open') return `journal is ${this.#state}`;
    if (this.report.damage.length > 0) return 'the journal has damage';
    if (this.#settledLsn === 0) return 'the journal holds no record';
    if (this.#settledStale) return 'erasure removed the last settled record; the next one written makes an index possible again';
    const end = { lsn: this.#settledLsn, segment: this.#settledSeg, frame: this.#settledFrame, offset: this.#settledEnd };
    // Let the dedupe promises of batches settled so far turn into plain results.
    await new Promise<void>((r) => setImmediate(r));
    if (this.#state !== 'open') return `journal is ${this.#state}`;
    const segments: JournalIndexImage['segments'] = [];
    for (const seg of this.#segments) {
      if (seg.id > end.segment) break;
      if (seg.size > 0xffffffff) return `segment ${seg.name} is larger than 4 GiB`;
      segments.push({ id: seg.id, salt: seg.header.salt, seed: seg.header.seed, size: seg.id === end.segment ? end.offset : seg.size, records: seg.live });
    }
    if (segments.at(-1)?.id !== end.segment) return 'the last indexed segment is gone';
    const sessions: JournalIndexImage['sessions'] = [];
    for (const [sid, idx] of this.#sessions) {
      if (idx.quarantined !== undefined) return `session ${sid} is quarantined`;
      let n = idx.locs.length;
      // Records settled after `end` (their seg/offset is past it) are left to the tail scan.
      while (n > 0 && (idx.locs.at(n - 3) > end.segment || (idx.locs.at(n - 3) === end.segment && idx.locs.at(n - 2) >= end.offset))) n -= 4;
      const locs = idx.locs.head(n);
      const lastSeq = Math.max(n > 0 ? locs[n - 4]! : 0, idx.covered);
      const dedupe = this.dedupeEntries(sid, Number.MAX_SAFE_INTEGER).filter((d) => d[2] <= end.lsn);
      if (lastSeq === 0 && dedupe.length === 0) continue;
      sessions.push({ sid, lastSeq, covered: idx.covered, dedupe, locs: new Locs(locs) });
    }
    return { segments, end, sessions };
  }

  /**
   * Takes the log up to the index's end from the index instead of a scan,
   * after checking it against the files: every segment it names exists in
   * order, with its salt and (sealed) size, the newest one is at least as long
   * as the index says, and its last frame is there with the right checksum and
   * LSN. Returns the segments to scan from (and where), or why not.
   */
  async #adoptIndex(image: JournalIndexImage, names: string[]): Promise<{ from: number; at: number; lastLsn: number } | string> {
    const { fs, dir } = this.#o;
    const use = this.report.index!;
    // Every named segment that still exists is opened at once (its header, its size and, for the last
    // one, the last indexed frame): a dozen file calls in parallel instead of one after another.
    const lastId = image.segments.at(-1)?.id;
    const files = await Promise.all(
      image.segments.map(async (s) => {
        const name = segmentFileName(s.id);
        if (!names.includes(name)) return undefined;
        const handle = await fs.open(path.join(dir, name), 'r');
        try {
          const [head, stat] = await Promise.all([readFully(handle, SEGMENT_HEADER_BYTES, 0), handle.stat()]);
          // (only within the file: an index claiming more than the journal holds is refused below, without a read)
          const wantsFrame = s.id === lastId && image.end.frame > 0 && image.end.offset > image.end.frame && stat.size >= image.end.offset;
          const frame = wantsFrame ? await readFully(handle, image.end.offset - image.end.frame, image.end.frame) : undefined;
          return { head, size: stat.size, frame };
        } finally {
          await handle.close().catch(() => undefined);
        }
      }),
    );
    // Identity first: the salts of the named segments that still exist.
    const headers = new Map<number, SegmentHeader>();
    let matched = 0;
    for (const [i, s] of image.segments.entries()) {
      const file = files[i];
      if (file === undefined) continue;
      const name = segmentFileName(s.id);
      const header = decodeSegmentHeader(file.head);
      if (typeof header === 'string') return `segment ${name}: ${header}`;
      if (header.salt !== s.salt || header.seed !== s.seed) {
        use.identity = 'foreign';
        return `segment ${name} has salt ${header.salt}, the index was written for salt ${s.salt}: an index of another journal (another data directory?)`;
      }
      headers.set(s.id, header);
      matched += 1;
    }
    use.identity = matched > 0 ? 'same' : 'unknown';
    if (image.segments.length === 0) return 'the index names no segment';
    // Segments are deleted oldest first, once snapshots released every record in them
    // (deleteReleasedSegments), so the log is always a suffix of what it was. The oldest segments
    // the index names may be gone since it was written: their records are what a full scan would
    // not see either. Any other missing segment makes the index stale.
    let gone = 0;
    while (gone < image.segments.length && !names.includes(segmentFileName(image.segments[gone]!.id))) gone += 1;
    if (gone === image.segments.length) return `every segment the index names is gone, ${segmentFileName(image.segments.at(-1)!.id)} (where it ends) too (a stale index)`;
    for (let j = gone; j < image.segments.length; j += 1) {
      const s = image.segments[j]!;
      const name = segmentFileName(s.id);
      const at = names[j - gone];
      if (at !== name) return names.includes(name) ? `segment ${name} is not where the index puts it (${at ?? 'nothing'} is)` : `segment ${name}, named in the index, is gone while an older one is still there (a stale index)`;
      const size = files[j]!.size;
      const last = j === image.segments.length - 1;
      if (!last && size !== s.size) return `segment ${name} is ${size} bytes, the index says ${s.size} (a stale index)`;
      if (last && size < image.end.offset) return `segment ${name} is ${size} bytes, but the index claims records up to offset ${image.end.offset}: more than the journal holds`;
    }
    const deleted = new Set(image.segments.slice(0, gone).map((s) => s.id));
    const lastSeg = image.segments.at(-1)!;
    if (image.end.segment !== lastSeg.id) return 'the index ends outside its last segment';
    const header = headers.get(lastSeg.id)!;
    if (image.end.frame > 0) {
      const frame = files.at(-1)?.frame ?? new Uint8Array(0);
      const view = Buffer.from(frame.buffer, frame.byteOffset, frame.length);
      const head = view.length > FRAME_HEADER_BYTES && frameCrc(header.seed, view) === view.readUInt32LE(0) ? decodeHead(view.subarray(FRAME_HEADER_BYTES)) : 'checksum mismatch';
      if (typeof head === 'string' || head.lsn !== image.end.lsn) return `the last indexed record (LSN ${image.end.lsn}, ${segmentFileName(lastSeg.id)} offset ${image.end.frame}) is not there: ${typeof head === 'string' ? head : `LSN ${head.lsn} found`}`;
    } else if (image.end.offset !== SEGMENT_HEADER_BYTES || image.end.lsn !== lastSeg.id - 1) {
      return 'the index ends at no record but not at its segment start';
    }
    // It checks out: take it.
    // Live records per segment: counted by the index's decoder (which leaves each session's
    // locations encoded until used), or here for an image without the counts.
    const live = new Map<number, number>();
    const counted = image.segments.every((s) => s.indexed !== undefined);
    if (counted) for (const s of image.segments) live.set(s.id, s.indexed!);
    let indexed = 0;
    for (const e of image.sessions) {
      if (deleted.size > 0) e.locs.dropSegments(deleted);
      const idx = newSessionIndex(e.lastSeq, e.locs, e.covered);
      if (!counted) {
        for (let i = 1; i < e.locs.length; i += 4) live.set(e.locs.at(i), (live.get(e.locs.at(i)) ?? 0) + 1);
      }
      this.#sessions.set(e.sid, idx);
      // (most sessions have no dedupe entries: no iterator for them)
      if (e.dedupe.length > 0) for (const [cid, seq, lsn, ts] of e.dedupe) this.#rememberCid(idx, cid, { sid: e.sid, seq, lsn, ts, duplicate: false });
    }
    for (const s of image.segments.slice(gone)) indexed += live.get(s.id) ?? 0;
    for (const s of image.segments.slice(gone, -1)) {
      const h = headers.get(s.id)!;
      this.#segments.push({ id: s.id, name: segmentFileName(s.id), header: h, size: s.size, live: live.get(s.id) ?? 0 });
      this.#framesAtOpen!.push({ name: segmentFileName(s.id), seed: h.seed, end: s.size });
    }
    use.used = true;
    use.indexedRecords = indexed;
    this.#indexedLive = live.get(lastSeg.id) ?? 0;
    this.#settledSeg = image.end.segment;
    this.#settledFrame = image.end.frame;
    this.#settledEnd = image.end.offset;
    this.#settledLsn = image.end.lsn;
    return { from: image.segments.length - 1 - gone, at: image.end.offset, lastLsn: image.end.lsn };
  }

  /** The active segment's first LSN and salt: what ties a high-water mark to this journal. */
  segmentIdentity(): { id: number; salt: number } | undefined {
    return this.#active === undefined ? undefined : { id: this.#active.id, salt: this.#active.header.salt };
  }

  /** The salt of segment `id`, when it is one of this journal's segments. */
  segmentSalt(id: number): number | undefined {
    return this.#segments.find((s) => s.id === id)?.header.salt;
  }

  /** Unreleased records of the last indexed segment that the index vouched for (added to its live count). */
  #indexedLive = 0;

  // ---- erasure (src/file/erasure.ts drives it) -------------------------------

  /**
   * Forgets a deleted session: its index, dedupe window and the pins its
   * records held. Flushes first, so nothing of it is queued; returns the LSN
   * up to which its records are erased (every record it has on disk is at
   * or below it). Its bytes stay in the segments until erasure rewrites them.
   */
  async forget(sid: string): Promise<number> {
    await this.flush();
    const idx = this.#sessions.get(sid);
    if (idx !== undefined) {
      for (let i = 1; i < idx.locs.length; i += 4) {
        const segId = idx.locs.at(i);
        const seg = this.#segments.find((s) => s.id === segId);
        if (seg !== undefined) seg.live -= 1;
      }
      this.#sessions.delete(sid);
    }
    return this.#nextLsn - 1;
  }

  /** Runs `op` with segment deletion and rewrites serialised (never two at once, never while recovery holds them). */
  exclusiveSegments<T>(op: (held: boolean) => Promise<T>): Promise<T> {
    const run = this.#deleting.then(() => op(this.#deletionHeld || this.#state !== 'open'));
    this.#deleting = run.catch(() => undefined);
    return run;
  }

  /** Sealed segments (every one but the active), oldest first, with the checksum seed of each. */
  sealedSegments(): { name: string; id: number }[] {
    return this.#segments.filter((s) => s !== this.#active).map((s) => ({ name: s.name, id: s.id }));
  }

  /**
   * Seals the active segment when it holds any record, so that erasure can
   * rewrite it: the writer finishes its batch, syncs, and starts a new one.
   */
  async sealActive(): Promise<void> {
    if (this.#state !== 'open' || this.#active.size <= SEGMENT_HEADER_BYTES) return;
    await this.flush();
    // The writer is idle now; take its place for the rotation (appends meanwhile queue up).
    while (this.#pumping || this.#scheduled) await new Promise<void>((r) => setImmediate(r));
    if (this.#active.size <= SEGMENT_HEADER_BYTES) return;
    this.#pumping = true;
    try {
      await this.#drainInflight();
      await this.#rotate(this.#writtenLsn + 1);
    } catch (err) {
      this.#fail(err, []);
      throw err;
    } finally {
      this.#pumping = false;
      if (this.queueDepth > 0) this.#schedule();
    }
  }

  /**
   * A sealed segment was rewritten in place (temp, sync, rename, directory
   * sync) without erased records: its new header and size, and where each
   * kept record moved (old offset → new offset).
   */
  adoptRewrite(id: number, header: SegmentHeader, size: number, moved: ReadonlyMap<number, number>): void {
    const seg = this.#segments.find((s) => s.id === id);
    if (seg === undefined || seg === this.#active) throw new Error(`journal invariant: segment ${segmentFileName(id)} is not sealed`);
    seg.header = header;
    seg.size = size;
    // The settled position (what the next journal index ends at) moves with its frame; when that frame
    // itself was erased, no index is written until a later record settles (in a newer segment).
    if (this.#settledSeg === id && this.#settledFrame > 0) {
      const to = moved.get(this.#settledFrame);
      if (to === undefined) {
        this.#settledStale = true;
      } else {
        this.#settledEnd = to + (this.#settledEnd - this.#settledFrame);
        this.#settledFrame = to;
      }
    }
    for (const idx of this.#sessions.values()) {
      for (let i = 1; i < idx.locs.length; i += 4) {
        if (idx.locs.at(i) !== id) continue;
        const to = moved.get(idx.locs.at(i + 1));
        if (to === undefined) throw new Error(`journal invariant: a live record at ${segmentFileName(id)} offset ${idx.locs.at(i + 1)} was dropped by a rewrite`);
        idx.locs.set(i + 1, to);
      }
    }
  }

  // ---- opening ------------------------------------------------------------

  /** A segment's header and what follows offset `at` (the end of what a journal index vouches for), as one buffer (see ScanOptions.tail). */
  #readTail(file: string, at: number): Promise<Uint8Array> {
    const { fs } = this.#o;
    return fs.chmod(file, FILE_MODE).then(async () => {
      const handle = await fs.open(file, 'r');
      try {
        const size = (await handle.stat()).size;
        const out = Buffer.alloc(SEGMENT_HEADER_BYTES + Math.max(0, size - at));
        out.set(await readFully(handle, SEGMENT_HEADER_BYTES, 0), 0);
        if (size > at) out.set(await readFully(handle, size - at, at), SEGMENT_HEADER_BYTES);
        return out;
      } finally {
        await handle.close().catch(() => undefined);
      }
    });
  }

  async #open(): Promise<void> {
    const started = performance.now();
    const { fs, dir } = this.#o;
    await ensureDir(fs, dir, DIR_MODE);
    const names = await fs.readdir(dir);
    const removedTempFiles: string[] = [];
    for (const name of names) {
      if (name.endsWith('.tmp')) {
        await fs.unlink(path.join(dir, name));
        removedTempFiles.push(name);
      }
    }
    if (removedTempFiles.length > 0) await fs.syncDir(dir);
    const segmentNames = names.filter((n) => SEGMENT_FILE_PATTERN.test(n)).sort();
    const report: JournalOpenReport = { segments: 0, records: 0, bytes: 0, tornTails: [], damage: [], removedTempFiles, durationMs: 0, lastLsn: 0 };
    this.report = report;
    let prevLastLsn: number | undefined;
    let nextFirstLsn = 1;
    // With an index that checks out, the segments it covers are not read: the scan starts at its end.
    let start = 0;
    let tail: { at: number; lastLsn: number } | undefined;
    // The tail after the index's end is read while the index is checked against the files (and
    // dropped, unread or not, if the index is refused): a thread-pool read instead of a wait after.
    const indexEnd = this.#o.index?.end;
    const early = indexEnd !== undefined && segmentNames.includes(segmentFileName(indexEnd.segment)) ? { name: segmentFileName(indexEnd.segment), at: indexEnd.offset, bytes: this.#readTail(path.join(dir, segmentFileName(indexEnd.segment)), indexEnd.offset) } : undefined;
    early?.bytes.catch(() => undefined);
    if (this.#o.index !== undefined) {
      report.index = { used: false, identity: 'unknown', indexedRecords: 0 };
      const adopted = await this.#adoptIndex(this.#o.index, segmentNames);
      if (typeof adopted === 'string') {
        report.index.problem = adopted;
        // Nothing of it stays: a full scan as if there were none.
        this.#sessions.clear();
        this.#segments.length = 0;
        this.#framesAtOpen = [];
        this.#indexedLive = 0;
        this.#settledSeg = this.#settledFrame = this.#settledEnd = this.#settledLsn = 0;
      } else {
        start = adopted.from;
        tail = { at: adopted.at, lastLsn: adopted.lastLsn };
        nextFirstLsn = adopted.lastLsn + 1;
      }
    }
    // The next segment is read while this one is scanned: the disk and the CPU work at once.
    const read = (i: number): Promise<Uint8Array> | undefined => {
      const name = segmentNames[i];
      if (name === undefined) return undefined;
      const file = path.join(dir, name);
      if (i === start && tail !== undefined) return early !== undefined && early.name === name && early.at === tail.at ? early.bytes : this.#readTail(file, tail.at);
      return fs.chmod(file, FILE_MODE).then(() => fs.readFile(file));
    };
    let ahead = read(start);
    for (let i = start; i < segmentNames.length; i += 1) {
      const name = segmentNames[i]!;
      const file = path.join(dir, name);
      const id = Number(SEGMENT_FILE_PATTERN.exec(name)![1]);
      const bytes = await ahead!;
      ahead = read(i + 1);
      // A failed read-ahead surfaces when its turn comes, not as an unhandled rejection before.
      ahead?.catch(() => undefined);
      const isLast = i === segmentNames.length - 1;
      const segTail = i === start ? tail : undefined;
      if (isLast && segTail === undefined && bytes.length < SEGMENT_HEADER_BYTES) {
        // Our writer never leaves this (a segment appears by rename with a synced header), but a
        // truncated newest segment holds no record either way: drop it and start a fresh one below.
        report.tornTails.push({ segment: name, offset: 0, bytes: bytes.length });
        await fs.unlink(file);
        await fs.syncDir(dir);
        nextFirstLsn = Math.max(nextFirstLsn, id);
        continue;
      }
      let segmentLive = segTail === undefined ? 0 : this.#indexedLive;
      const scan = scanSegment(
        bytes,
        { isLast, maxRecordBytes: this.#o.maxRecordBytes, ...(segTail === undefined ? {} : { tail: segTail }) },
        (record, offset, frameBytes) => {
          // A deleted session's record waiting for erasure: its bytes are still here, but it is no one's.
          if (this.#o.erased(record.sid, record.lsn)) return;
          let idx = this.#sessions.get(record.sid);
          if (idx === undefined) {
            idx = newSessionIndex();
            this.#sessions.set(record.sid, idx);
          }
          if (record.seq > idx.lastSeq) idx.lastSeq = record.seq;
          idx.locs.push(record.seq, id, offset, frameBytes);
          if (record.cid !== undefined) this.#rememberCid(idx, record.cid, { sid: record.sid, seq: record.seq, lsn: record.lsn, ts: record.ts, duplicate: false });
          segmentLive += 1;
          this.#settledSeg = id;
          this.#settledFrame = offset;
          this.#settledEnd = offset + frameBytes;
          this.#settledLsn = record.lsn;
        },
        decodeHead,
      );
      if (scan.header !== undefined) this.#framesAtOpen!.push({ name, seed: scan.header.seed, end: scan.torn?.offset ?? (segTail === undefined ? bytes.length : bytes.length - SEGMENT_HEADER_BYTES + segTail.at) });
      for (const d of scan.damage) report.damage.push({ ...d, segment: name });
      if (scan.header !== undefined && scan.header.firstLsn !== id) {
        report.damage.push({ segment: name, offset: 16, length: 8, reason: `header first LSN ${scan.header.firstLsn} does not match the file name` });
      }
      if (prevLastLsn !== undefined && scan.header !== undefined && id !== prevLastLsn + 1) {
        report.damage.push({ segment: name, offset: 0, length: 0, reason: `segment starts at LSN ${id} but the previous one ends at ${prevLastLsn}`, lostLsns: [prevLastLsn + 1, id - 1] });
      }
      // A segment with a damaged header hides its LSNs: skip the continuity check after it, and
      // make sure a new segment starts above any LSN it could hold.
      prevLastLsn = scan.header === undefined ? undefined : scan.lastLsn;
      nextFirstLsn = Math.max(nextFirstLsn, scan.header === undefined ? id + Math.ceil(bytes.length / (FRAME_HEADER_BYTES + 40)) + 1 : scan.lastLsn + 1);
      report.records += scan.records;
      const fileSize = segTail === undefined ? bytes.length : bytes.length - SEGMENT_HEADER_BYTES + segTail.at;
      report.bytes += bytes.length;
      if (scan.header === undefined) continue;
      const segment: Segment = { id, name, header: scan.header, size: fileSize, live: segmentLive };
      if (isLast) {
        if (scan.torn !== undefined) {
          report.tornTails.push({ ...scan.torn, segment: name });
          const handle = await fs.open(file, 'r+', FILE_MODE);
          await handle.truncate(scan.torn.offset);
          await handle.datasync();
          segment.size = scan.torn.offset;
          this.#handle = handle;
        } else {
          this.#handle = await fs.open(file, 'r+', FILE_MODE);
        }
        this.#active = segment;
        this.#nextLsn = scan.lastLsn + 1;
      }
      this.#segments.push(segment);
    }
    if (this.#handle === undefined) {
      // No usable newest segment (a new journal, or its newest segment was unusable): start one after everything seen.
      const firstLsn = nextFirstLsn;
      const created = await this.#createSegment(firstLsn);
      this.#handle = created.handle;
      this.#active = created.segment;
      this.#segments.push(created.segment);
      this.#nextLsn = firstLsn;
    }
    this.#writtenLsn = this.#nextLsn - 1;
    this.#syncedLsn = this.#writtenLsn;
    report.segments = this.#segments.length;
    report.records += report.index?.indexedRecords ?? 0;
    report.lastLsn = this.#nextLsn - 1;
    if (this.#settledSeg === 0) {
      // No record at all: an index would end at the active segment's header.
      this.#settledSeg = this.#active.id;
      this.#settledEnd = SEGMENT_HEADER_BYTES;
      this.#settledLsn = this.#active.id - 1;
    }
    report.durationMs = performance.now() - started;
  }
}
