import { randomInt } from 'node:crypto';
import { posix as path } from 'node:path';
import { ArborError, ErrorCodes } from '../../core/errors.ts';
import { ensureDir, readFully, writeFully, type FileHandle, type FileSystem } from '../../storage/fs-port.ts';
import {
  FRAME_HEADER_BYTES,
  SEGMENT_FILE_PATTERN,
  SEGMENT_HEADER_BYTES,
  decodeHead,
  decodePayload,
  FRAME_LENGTH_OFFSET,
  encodePayload,
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
  sealData?: ((sid: string, seq: number, data: unknown) => unknown) | undefined;
  openData?: ((sid: string, seq: number, data: unknown) => unknown) | undefined;
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
}

interface Pending {
  sid: string;
  seq: number;
  lsn: number;
  ts: number;
  /** the encoded JSON payload */
  payload: Buffer;
  /** frame bytes: header + payload */
  bytes: number;
  cid: string | undefined;
  resolve: ((r: AppendResult) => void) | undefined;
  reject: ((e: unknown) => void) | undefined;
}

interface SessionIndex {
  /** Highest seq assigned, pending appends included. */
  lastSeq: number;
  /** Flattened [seq, segmentId, offset, frameBytes] of every record not yet released. */
  locs: number[];
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

function newSessionIndex(): SessionIndex {
  return { lastSeq: 0, locs: [], cids: undefined, quarantined: undefined, covered: 0 };
}

/** Syncs allowed in flight at once: one settling while the next batch is written and synced. */
const MAX_SYNCS_IN_FLIGHT = 2;

interface WrittenBatch {
  segment: Segment;
  offsets: number[];
  bytes: number;
  started: number;
}

type ResolvedJournalOptions = Required<JournalOptions>;

/** The valid frames a segment held when the journal was opened, for replaying it in log order. */
export interface SegmentFrames {
  name: string;
  /** the header's checksum seed (frames are re-checked on read) */
  seed: number;
  /** flattened [offset, frameBytes] pairs, in log order */
  frames: number[];
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
  #queue: Pending[] = [];
  #queueHead = 0;
  #queuedBytes = 0;
  #scratch = Buffer.alloc(0);
  #deleting: Promise<unknown> = Promise.resolve();
  /** Acknowledgement promises of batches whose sync is in flight, oldest first. */
  #inflight: Promise<void>[] = [];
  /** Batches written (or being written) and not yet acknowledged, oldest first; rejected if the journal fails. */
  #inflightBatches: Pending[][] = [];
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

  /** Reads one segment's bytes (for replaying the frames it held at open). */
  readSegment(name: string): Promise<Uint8Array> {
    return this.#o.fs.readFile(path.join(this.#o.dir, name));
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
    return this.#queue.length - this.#queueHead;
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

  /** Every session the journal knows of, with its last seq. */
  sessions(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [sid, idx] of this.#sessions) out.set(sid, idx.lastSeq);
    return out;
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
    let text: string | undefined;
    try {
      text = encodePayload(lsn, sid, seq, ts, type, v, this.#o.sealData === undefined ? data : this.#o.sealData(sid, seq, data), cid);
    } catch (err) {
      if (err instanceof ArborError) throw err;
      throw new ArborError(ErrorCodes.INVALID_INPUT, `data of session ${sid} is not JSON-serialisable: ${(err as Error).message}`, { field: 'data', sessionId: sid }, { cause: err });
    }
    if (text === undefined) throw new ArborError(ErrorCodes.INVALID_INPUT, `data of session ${sid} has no JSON form`, { field: 'data', sessionId: sid });
    // Encoded to UTF-8 once, here; the flush only copies bytes.
    const payload = Buffer.from(text, 'utf8');
    const bytes = FRAME_HEADER_BYTES + payload.length;
    if (bytes - FRAME_HEADER_BYTES > this.#o.maxRecordBytes) {
      throw new ArborError(ErrorCodes.TOO_LARGE, `event of session ${sid} is ${bytes - FRAME_HEADER_BYTES} bytes; the limit is ${this.#o.maxRecordBytes}`, { sessionId: sid, bytes: bytes - FRAME_HEADER_BYTES, limit: this.#o.maxRecordBytes });
    }
    if (this.queueDepth >= this.#o.maxQueueRecords || this.#queuedBytes + bytes > this.#o.maxQueueBytes) {
      throw new ArborError(ErrorCodes.QUEUE_FULL, `journal queue is full (${this.queueDepth} records, ${this.#queuedBytes} bytes); retry later`, { sessionId: sid, queueDepth: this.queueDepth, queuedBytes: this.#queuedBytes });
    }
    // Past every check: from here the append is committed to the queue.
    this.#nextLsn = lsn + 1;
    idx.lastSeq = seq;
    if (!this.#o.writes) {
      // The journal is off: numbered and acknowledged, nothing written (snapshots alone keep state).
      const result = { sid, seq, lsn, ts, duplicate: false };
      if (cid !== undefined) this.#rememberCid(idx, cid, result);
      this.#writtenLsn = lsn;
      this.#syncedLsn = lsn;
      return Promise.resolve(result);
    }
    const pending: Pending = { sid, seq, lsn, ts, payload, bytes, cid, resolve: undefined, reject: undefined };
    let promise: Promise<AppendResult>;
    if (this.#o.durability === 'buffered') {
      // Acknowledged at once, by contract: the write happens later.
      promise = Promise.resolve({ sid, seq, lsn, ts, duplicate: false });
      if (cid !== undefined) this.#rememberCid(idx, cid, { sid, seq, lsn, ts, duplicate: false });
    } else {
      promise = new Promise<AppendResult>((resolve, reject) => {
        pending.resolve = resolve;
        pending.reject = reject;
      });
      if (cid !== undefined) this.#rememberCid(idx, cid, promise);
    }
    this.#queue.push(pending);
    this.#queuedBytes += bytes;
    this.#schedule();
    return promise;
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
      if (this.#o.durability !== 'buffered' || this.queueDepth >= this.#o.batchSize) this.#wake?.();
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

  #takeBatch(): Pending[] {
    const batch: Pending[] = [];
    let bytes = 0;
    while (this.#queueHead < this.#queue.length && batch.length < this.#o.maxBatchRecords) {
      const p = this.#queue[this.#queueHead]!;
      if (batch.length > 0 && bytes + p.bytes > this.#o.maxBatchBytes) break;
      batch.push(p);
      bytes += p.bytes;
      this.#queueHead += 1;
    }
    this.#queuedBytes -= bytes;
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (this.#queueHead > 4096 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
    return batch;
  }

  /** Frames the batch and writes it (rotating first when it would overflow the segment). Not yet synced. */
  async #writeBatch(batch: Pending[]): Promise<WrittenBatch> {
    const started = performance.now();
    let total = 0;
    for (const p of batch) total += p.bytes;
    // From here until acknowledged, the batch fails with the journal (the pump's catch calls #fail).
    this.#inflightBatches.push(batch);
    if (this.#active.size > SEGMENT_HEADER_BYTES && this.#active.size + total > this.#o.maxSegmentBytes) {
      await this.#drainInflight();
      await this.#rotate(batch[0]!.lsn);
    }
    const segment = this.#active;
    // One scratch buffer, reused: the previous write has completed before the next batch is framed.
    if (this.#scratch.length < total) this.#scratch = Buffer.allocUnsafe(Math.max(total, this.#scratch.length * 2));
    const buffer = this.#scratch.subarray(0, total);
    const offsets = new Array<number>(batch.length);
    let at = 0;
    for (let i = 0; i < batch.length; i += 1) {
      const p = batch[i]!;
      const end = at + p.bytes;
      buffer.writeUInt32LE(p.payload.length, at + FRAME_LENGTH_OFFSET);
      p.payload.copy(buffer, at + FRAME_HEADER_BYTES);
      buffer.writeUInt32LE(frameCrc(segment.header.seed, buffer.subarray(at, end)), at);
      offsets[i] = segment.size + at;
      at = end;
    }
    // Invariant: byte counts taken at append time match the framing.
    if (at !== total) throw new Error(`journal invariant: batch framed to ${at} bytes, expected ${total}`);
    await writeFully(this.#handle, buffer, segment.size);
    segment.size += total;
    this.#writtenLsn = batch[batch.length - 1]!.lsn;
    return { segment, offsets, bytes: total, started };
  }

  /**
   * Makes a written batch durable and acknowledges it: under `fsync` and
   * `buffered` its sync starts now and the batch settles after it and after
   * every earlier batch; under `write` it settles at once.
   */
  #commit(batch: Pending[], written: WrittenBatch): void {
    if (this.#o.durability === 'write') {
      this.#ensureTimer();
      this.#inflightBatches.shift();
      this.#settle(batch, written);
      return;
    }
    const lastLsn = this.#writtenLsn;
    const sync = this.#handle.datasync();
    const previous = this.#inflight.at(-1);
    const done: Promise<void> = Promise.all([sync, previous]).then(
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

  /** Indexes and acknowledges a batch that is as durable as the mode promises. */
  #settle(batch: Pending[], written: WrittenBatch): void {
    const { segment, offsets } = written;
    for (let i = 0; i < batch.length; i += 1) {
      const p = batch[i]!;
      const idx = this.#sessions.get(p.sid)!;
      // A snapshot may already cover a record written late (buffered mode): it pins nothing then.
      if (p.seq <= idx.covered) continue;
      idx.locs.push(p.seq, segment.id, offsets[i]!, p.bytes);
      segment.live += 1;
    }
    this.#lastFlushAt = Date.now();
    for (const p of batch) p.resolve?.({ sid: p.sid, seq: p.seq, lsn: p.lsn, ts: p.ts, duplicate: false });
    if (journalWriteChannel.hasSubscribers) {
      journalWriteChannel.publish({ batchSize: batch.length, bytes: written.bytes, durationMs: performance.now() - written.started, durability: this.#o.durability, queueDepth: this.queueDepth } satisfies JournalWriteMessage);
    }
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

  #fail(err: unknown, batch: Pending[]): void {
    if (this.#state === 'failed') return;
    const cause = err instanceof ArborError ? err : new ArborError(ErrorCodes.IO_ERROR, `journal write failed: ${(err as Error)?.message ?? String(err)}`, { segment: this.#active?.name }, { cause: err });
    this.#state = 'failed';
    this.#failure = cause;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const p of batch) p.reject?.(cause);
    // Every batch written but not yet acknowledged fails with it: a later sync cannot vouch for an earlier failed one.
    for (const b of this.#inflightBatches) for (const p of b) p.reject?.(cause);
    this.#inflightBatches = [];
    this.#inflight = [];
    this.#wake?.();
    const rest = this.#queue.slice(this.#queueHead);
    this.#queue = [];
    this.#queueHead = 0;
    this.#queuedBytes = 0;
    const failed = new ArborError(ErrorCodes.JOURNAL_FAILED, `journal failed before this append was written: ${cause.message}`, {}, { cause });
    if (errorChannel.hasSubscribers) errorChannel.publish({ source: 'journal', code: cause.code, message: cause.message } satisfies ErrorMessage);
    for (const p of rest) p.reject?.(failed);
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
  async readSession(sid: string, fromSeq = 1): Promise<JournalRecord[]> {
    const idx = this.#sessions.get(sid);
    if (idx === undefined) return [];
    const out: JournalRecord[] = [];
    const handles = new Map<number, FileHandle>();
    try {
      for (let i = 0; i < idx.locs.length; i += 4) {
        const seq = idx.locs[i]!;
        if (seq < fromSeq) continue;
        const segId = idx.locs[i + 1]!;
        const offset = idx.locs[i + 2]!;
        const frameBytes = idx.locs[i + 3]!;
        let handle = segId === this.#active.id ? this.#handle : handles.get(segId);
        if (handle === undefined) {
          handle = await this.#o.fs.open(path.join(this.#o.dir, segmentFileName(segId)), 'r');
          handles.set(segId, handle);
        }
        const frame = await readFully(handle, frameBytes, offset);
        const segment = this.#segments.find((s) => s.id === segId);
        const payload = frame.subarray(FRAME_HEADER_BYTES);
        const ok = segment !== undefined && frame.length === frameBytes && frameCrc(segment.header.seed, frame) === Buffer.from(frame.buffer, frame.byteOffset).readUInt32LE(0);
        const record = ok ? decodePayload(payload) : 'checksum mismatch on read-back';
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
    while (cut < idx.locs.length && idx.locs[cut]! <= seq) {
      const seg = this.#segments.find((s) => s.id === idx!.locs[cut + 1]);
      if (seg !== undefined) seg.live -= 1;
      cut += 4;
    }
    if (cut > 0) idx.locs.splice(0, cut);
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
    for (const [sid, idx] of this.#sessions) {
      for (let i = 1; i < idx.locs.length; i += 4) {
        if (idx.locs[i] === oldest.id) {
          out.push(sid);
          break;
        }
      }
    }
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
      await this.#o.fs.unlink(path.join(this.#o.dir, seg.name));
      this.#segments.shift();
      await this.#o.fs.syncDir(this.#o.dir);
      deleted.push(seg.name);
    }
    return deleted;
  }

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
        const seg = this.#segments.find((s) => s.id === idx.locs[i]);
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
    for (const idx of this.#sessions.values()) {
      for (let i = 1; i < idx.locs.length; i += 4) {
        if (idx.locs[i] !== id) continue;
        const to = moved.get(idx.locs[i + 1]!);
        if (to === undefined) throw new Error(`journal invariant: a live record at ${segmentFileName(id)} offset ${idx.locs[i + 1]} was dropped by a rewrite`);
        idx.locs[i + 1] = to;
      }
    }
  }

  // ---- opening ------------------------------------------------------------

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
    const report: JournalOpenReport = { segments: 0, records: 0, bytes: 0, tornTails: [], damage: [], removedTempFiles, durationMs: 0 };
    let prevLastLsn: number | undefined;
    let nextFirstLsn = 1;
    // The next segment is read while this one is scanned: the disk and the CPU work at once.
    const read = (i: number): Promise<Uint8Array> | undefined => {
      const name = segmentNames[i];
      if (name === undefined) return undefined;
      const file = path.join(dir, name);
      return fs.chmod(file, FILE_MODE).then(() => fs.readFile(file));
    };
    let ahead = read(0);
    for (let i = 0; i < segmentNames.length; i += 1) {
      const name = segmentNames[i]!;
      const file = path.join(dir, name);
      const id = Number(SEGMENT_FILE_PATTERN.exec(name)![1]);
      const bytes = await ahead!;
      ahead = read(i + 1);
      // A failed read-ahead surfaces when its turn comes, not as an unhandled rejection before.
      ahead?.catch(() => undefined);
      const isLast = i === segmentNames.length - 1;
      if (isLast && bytes.length < SEGMENT_HEADER_BYTES) {
        // Our writer never leaves this (a segment appears by rename with a synced header), but a
        // truncated newest segment holds no record either way: drop it and start a fresh one below.
        report.tornTails.push({ segment: name, offset: 0, bytes: bytes.length });
        await fs.unlink(file);
        await fs.syncDir(dir);
        nextFirstLsn = Math.max(nextFirstLsn, id);
        continue;
      }
      let segmentLive = 0;
      const frames: number[] = [];
      const scan = scanSegment(
        bytes,
        { isLast, maxRecordBytes: this.#o.maxRecordBytes },
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
          frames.push(offset, frameBytes);
        },
        decodeHead,
      );
      if (scan.header !== undefined) this.#framesAtOpen!.push({ name, seed: scan.header.seed, frames });
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
      report.bytes += bytes.length;
      if (scan.header === undefined) continue;
      const segment: Segment = { id, name, header: scan.header, size: bytes.length, live: segmentLive };
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
    report.durationMs = performance.now() - started;
    this.report = report;
  }
}
