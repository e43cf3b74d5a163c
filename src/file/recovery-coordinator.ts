import { ArborError, ErrorCodes } from '../core/errors.ts';
import { readTableCheckpoint, type CheckpointEntry } from './table-checkpoint.ts';
import { decodeHead, decodePayloadAt, decodeSegmentHeader, FRAME_HEADER_BYTES, FRAME_LENGTH_OFFSET, frameCrc, MIN_PAYLOAD_BYTES, SEGMENT_HEADER_BYTES, type JournalRecord } from './journal/format.ts';
import { scanSegment, type DamagedRegion } from './journal/segment-scanner.ts';
import { SegmentPieces } from './journal/segment-pieces.ts';
import type { FileSystem } from '../storage/fs-port.ts';
import type { Journal } from './journal/journal.ts';
import type { SnapshotStore } from './snapshot-store.ts';
import { errorChannel, recoveryChannel, type ErrorMessage, type RecoveryMessage } from '../telemetry/channels.ts';
import { RecoveryBuilder, SessionReplay, type RecoveryHooks, type RecoveryStatus, type SessionRecovery } from '../backend/replay.ts';
import type { RecoveredSession } from '../backend/backend.ts';

export type { RecoveredSession };


export interface CoordinatorOptions<S> {
  journal: Journal;
  snapshots: SnapshotStore;
  hooks: RecoveryHooks<S>;
  salvage: boolean;
  stateSchemaVersion: number;
  /** Writes a durable snapshot: seals a salvaged session's gap, or replaces a damaged newest snapshot. */
  seal: (sid: string, state: S, seq: number) => Promise<unknown>;
  /**
   * Records replayed between two yields to the event loop during the background pass, at most;
   * a slice also ends after PASS_SLICE_MS of replay, whichever comes first.
   */
  sliceRecords?: number;
  /** Bytes of a segment the background pass reads at once (PASS_PIECE_BYTES; tests make frames straddle pieces). */
  pieceBytes?: number;
  /** Where the whole-table checkpoint lives (the accelerator); undefined: not used. */
  checkpoint?: { fs: FileSystem; dir: string; openState?: ((sid: string, state: unknown) => unknown) | undefined };
}

/** What the background pass made of the whole-table checkpoint. */
export interface CheckpointUse {
  /** entries the pass started sessions from (each proven by the journal) */
  used: number;
  /** entries ignored: the session had a newer snapshot, or the journal does not hold its seq */
  skipped: number;
  /** entries the journal contradicted (their seq's record has another LSN, or is gone): rebuilt without */
  rejected: number;
  /** why the file as a whole was not used, when it was not */
  problem?: string;
}

type Trigger = RecoveryMessage['trigger'];

/**
 * Brings sessions back after the store opened, two ways that share one result
 * per session:
 *
 * - on first access (`recoverOne`): the newest valid snapshot, then the
 *   session's own journal records, found through the journal's index and read
 *   back one by one — a few hundred microseconds for a typical session, so a
 *   restarted server answers while the rest of the data is still cold;
 * - in the background (`runPass`): every snapshot, then one sequential read of
 *   every segment as it was at open, replaying records in log order and
 *   yielding to the event loop between slices.
 *
 * Each session is claimed once (removed from `pending`) by whichever gets there
 * first; the other skips it. The pass only reads what existed at open, and a
 * session receives no append before it is claimed (the runtime loads a
 * session before it writes to it), so both ways see the same history.
 *
 * While the pass runs, segment deletion is held: the snapshot coverage used at
 * open comes from file names, and a newest snapshot that turns out damaged
 * needs the records it claimed to cover.
 */
export class RecoveryCoordinator<S> {
  readonly #o: CoordinatorOptions<S>;
  readonly #pending: Set<string>;
  readonly #sessions: SessionRecovery[] = [];
  readonly #counts: Record<RecoveryStatus, number> = { recovered: 0, 'tail-truncated': 0, damaged: 0, salvaged: 0, failed: 0 };
  /** Lazy loads that need the pass's result (their newest snapshot was damaged). */
  readonly #waiters = new Map<string, ((r: RecoveredSession<S> | undefined) => void)[]>();
  #pass: Promise<void> | undefined;
  #onSession: ((sid: string, r: RecoveredSession<S>) => void) | undefined;
  #stopped = false;
  #completedAt: number | undefined;
  #checkpointUse: CheckpointUse | undefined;
  readonly #loading = new Map<string, Promise<RecoveredSession<S> | undefined>>();
  /** Results the pass settled while a first load of the same session was in flight. */
  readonly #handoff = new Map<string, RecoveredSession<S>>();
  readonly #torn: Set<string>;
  readonly #damageBySession = new Map<string, { seq: number | undefined; where: string }[]>();

  constructor(options: CoordinatorOptions<S>) {
    this.#o = options;
    const { journal, snapshots } = options;
    this.#pending = new Set(journal.sessionIds());
    for (const sid of snapshots.sessions()) this.#pending.add(sid);
    this.#torn = new Set(journal.report.tornTails.flatMap((t) => (t.sessionId === undefined ? [] : [t.sessionId])));
    for (const d of journal.report.damage) {
      for (const { sid, seq } of d.sessions ?? []) {
        const list = this.#damageBySession.get(sid) ?? [];
        list.push({ seq, where: `${d.segment} offset ${d.offset}` });
        this.#damageBySession.set(sid, list);
      }
    }
    journal.holdSegmentDeletion(this.#pending.size > 0);
    if (this.#pending.size === 0) this.#finish();
  }

  /** Sessions not recovered yet. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  isPending(sid: string): boolean {
    return this.#pending.has(sid);
  }

  /** Whether a first load of the session is in flight. */
  isLoading(sid: string): boolean {
    return this.#loading.has(sid);
  }

  /** Wall-clock ms when every session was recovered; undefined before. */
  get completedAt(): number | undefined {
    return this.#completedAt;
  }

  /** What the pass made of the whole-table checkpoint; undefined until it read it. */
  get checkpointUse(): CheckpointUse | undefined {
    return this.#checkpointUse;
  }

  get counts(): Readonly<Record<RecoveryStatus, number>> {
    return this.#counts;
  }

  /** Per-session reports, in the order sessions were recovered. */
  get sessions(): readonly SessionRecovery[] {
    return this.#sessions;
  }

  /**
   * The session rebuilt for the first time since open (undefined when the
   * store never saw it). Later loads (after passivation) use `rebuild`.
   */
  recoverOne(sid: string): Promise<RecoveredSession<S> | undefined> {
    // Concurrent first loads of one session share one recovery.
    let running = this.#loading.get(sid);
    if (running === undefined) {
      running = this.#recoverOne(sid).finally(() => {
        this.#loading.delete(sid);
        this.#handoff.delete(sid);
      });
      this.#loading.set(sid, running);
    }
    return running;
  }

  async #recoverOne(sid: string): Promise<RecoveredSession<S> | undefined> {
    if (!this.#pending.has(sid)) return undefined;
    // Counted while it works (the pass gives way to it), not while it waits for the pass.
    this.#accessing += 1;
    let counted = true;
    const uncount = (): void => {
      if (counted) this.#accessing -= 1;
      counted = false;
    };
    try {
      return await this.#recoverOneCounted(sid, () => {
        uncount();
        return this.#waitForPass(sid);
      });
    } finally {
      uncount();
    }
  }

  /** First accesses being recovered now (not those waiting for the pass): the pass gives way to them. */
  #accessing = 0;

  async #recoverOneCounted(sid: string, waitForPass: () => Promise<RecoveredSession<S> | undefined>): Promise<RecoveredSession<S> | undefined> {
    const started = performance.now();
    const { journal, snapshots, hooks } = this.#o;
    const newestOnDisk = snapshots.seqs(sid).at(-1) ?? 0;
    const { snapshot, damaged } = await snapshots.loadNewest(sid);
    if ((snapshot?.seq ?? 0) < newestOnDisk) {
      // The newest snapshot is damaged: the records it claimed to cover were released from the
      // index at open, and only the sequential pass still reads them.
      return waitForPass();
    }
    // The pass got there while the snapshot loaded: its result (handed over, or still to come).
    if (!this.#pending.has(sid)) return this.#handoff.get(sid) ?? waitForPass();
    this.#pending.delete(sid);
    const replay = new SessionReplay(hooks, sid, { snapshot, stateSchemaVersion: this.#o.stateSchemaVersion, damagedSnapshots: damaged });
    const report = replay.report;
    if (snapshot !== undefined) journal.noteSnapshot(sid, snapshot.seq, snapshot.dedupe, newestOnDisk);
    if (!replay.failed) {
      try {
        // A frame that fails its checksum on read-back (never scanned at open: a journal index vouched
        // for it, or it changed since) is a gap, as the open scan would have made it.
        const bad: { seq: number; where: string }[] = [];
        const records = await journal.readSession(sid, report.seq + 1, (d) => {
          this.#noteDamage({ segment: d.segment, offset: d.offset, length: d.length, reason: `${d.reason} (found on read-back)`, sessions: [{ sid, seq: d.seq }] });
          bad.push({ seq: d.seq, where: `${d.segment} offset ${d.offset}` });
        });
        for (const record of records) replay.apply(record);
        for (const { seq, where } of bad) replay.noteDamage(seq, where);
      } catch (err) {
        replay.fail(err, (err as Error)?.message ?? String(err));
      }
    }
    for (const { seq, where } of this.#damageBySession.get(sid) ?? []) replay.noteDamage(seq, where);
    if (this.#torn.has(sid)) replay.noteTornTail();
    const state = replay.state;
    const result = await this.#settle(sid, state, report);
    this.#publish(sid, report, snapshot === undefined ? 'journal' : 'snapshot', 'access', started);
    return result;
  }

  /**
   * Rebuilds a session that was recovered before (it was dropped from memory):
   * newest valid snapshot plus the records after it. Throws ARBOR_CORRUPTION
   * naming the session and seq when its history has a hole.
   */
  async rebuild(sid: string): Promise<RecoveredSession<S> | undefined> {
    const { journal, snapshots, hooks } = this.#o;
    const lastSeq = journal.lastSeq(sid);
    if (lastSeq === 0 && snapshots.seqs(sid).length === 0) return undefined;
    const { snapshot, damaged } = await snapshots.loadNewest(sid);
    const replay = new SessionReplay(hooks, sid, { snapshot, stateSchemaVersion: this.#o.stateSchemaVersion, damagedSnapshots: damaged });
    const report = replay.report;
    if (!replay.failed) for (const record of await journal.readSession(sid, report.seq + 1)) replay.apply(record);
    if (report.missing !== undefined) {
      throw new ArborError(ErrorCodes.CORRUPTION, `session ${sid}: event ${report.missing[0]} is missing (next is ${report.missing[1] + 1})`, { sessionId: sid, seq: report.missing[0] });
    }
    // The session recovered before, so a throw now is a bug or a change of code since: the caller gets it as thrown.
    if (replay.failed) throw replay.cause;
    const state = replay.state;
    report.status = journal.quarantineReason(sid) === undefined ? 'recovered' : 'damaged';
    return { state, seq: report.seq, status: report.status, report };
  }

  /**
   * The background pass: recovers every session still pending, calling
   * `onSession` for each as it is settled. Idempotent: a second call joins the
   * running pass.
   */
  runPass(onSession?: (sid: string, r: RecoveredSession<S>) => void): Promise<void> {
    if (onSession !== undefined) this.#onSession = onSession;
    this.#pass ??= this.#runPass();
    return this.#pass;
  }

  /** Stops the pass at its next slice (the store is closing); pending sessions stay pending. */
  stop(): void {
    this.#stopped = true;
  }

  async #runPass(): Promise<void> {
    const started = performance.now();
    const { journal, hooks } = this.#o;
    const builder = new RecoveryBuilder(hooks, this.#o.salvage);
    // 1. The whole-table checkpoint, when there is one: one sequential read instead of a snapshot per session.
    const { entries: fromCheckpoint, atSnapshot } = await this.#startFromCheckpoint(builder);
    if (this.#stopped) return;
    // 2. The newest valid snapshot of every other session.
    const fromSnapshot = await this.#startFromSnapshots(builder, (sid) => !fromCheckpoint.has(sid));
    if (fromSnapshot === undefined) return;
    // 3. The journal as it was at open, in log order.
    // A checkpoint entry at seq c stands in for the newest snapshot (seq s) plus records s+1..c: the
    // journal must still hold every one of those records, in order, and record c must have the entry's LSN.
    // An entry at the newest snapshot's own seq and LSN (atSnapshot) is that snapshot's history: nothing to prove.
    const verified = new Set<string>(atSnapshot);
    const nextCovered = new Map<string, number>();
    const skipUpTo = new Map<string, number>(fromSnapshot);
    for (const [sid, e] of fromCheckpoint) {
      skipUpTo.set(sid, e.seq);
      if (!atSnapshot.has(sid)) nextCovered.set(sid, (this.#o.snapshots.seqs(sid).at(-1) ?? 0) + 1);
    }
    const replayed = await this.#replay(builder, () => true, skipUpTo, (head) => {
      const e = fromCheckpoint.get(head.sid);
      const next = nextCovered.get(head.sid);
      if (e === undefined || next === undefined || head.seq < next) return;
      if (head.seq !== next) {
        nextCovered.delete(head.sid); // a hole: the journal does not vouch for the entry
        return;
      }
      nextCovered.set(head.sid, next + 1);
      if (head.seq === e.seq && head.lsn === e.lsn) verified.add(head.sid);
    });
    if (!replayed) return;
    // 4. A checkpoint entry the journal did not vouch for is dropped: those sessions are replayed again without it.
    const redo = new Set([...fromCheckpoint.keys()].filter((sid) => !verified.has(sid)));
    if (this.#checkpointUse !== undefined) {
      this.#checkpointUse.used = fromCheckpoint.size - redo.size;
      this.#checkpointUse.rejected = redo.size;
    }
    for (const sid of verified) {
      const e = fromCheckpoint.get(sid)!;
      // Its dedupe entries, now that the journal proved the entry is this session's history (and, for an
      // entry standing in for its newest snapshot, the records that snapshot covers, as a snapshot start does).
      if (atSnapshot.has(sid)) journal.noteSnapshot(sid, e.seq, e.dedupe, e.seq);
      else journal.noteSnapshot(sid, 0, e.dedupe, 0);
      builder.noteCheckpoint(sid, e.seq, e.lsn);
    }
    if (redo.size > 0) {
      const again = new RecoveryBuilder(hooks, this.#o.salvage);
      const snaps = await this.#startFromSnapshots(again, (sid) => redo.has(sid));
      if (snaps === undefined || !(await this.#replay(again, (sid) => redo.has(sid), snaps))) return;
      for (const sid of redo) {
        const entry = again.sessions().get(sid);
        if (entry !== undefined) builder.sessions().set(sid, entry);
        else builder.sessions().delete(sid);
      }
    }
    for (const sid of this.#torn) builder.noteTornTail(sid);
    for (const [sid, list] of this.#damageBySession) for (const { seq, where } of list) builder.noteDamage(sid, seq, where);
    let n = 0;
    for (const [sid, { state, report }] of builder.sessions()) {
      if (this.#stopped) return;
      if (!this.#pending.has(sid)) continue; // recovered on access meanwhile
      this.#pending.delete(sid);
      // Events the log or a snapshot file says existed but recovery could not apply (e.g. released
      // records behind a damaged newest snapshot) are a gap too.
      const expectedSeq = journal.lastSeq(sid);
      if (report.seq < expectedSeq && (report.status === 'recovered' || report.status === 'tail-truncated')) {
        report.missing = [report.seq + 1, expectedSeq];
        report.status = this.#o.salvage ? 'salvaged' : 'damaged';
      }
      const result = await this.#settle(sid, state, report);
      // For the pass, the duration is the pass's so far: its sessions are rebuilt together.
      const kind = report.checkpointSeq !== undefined ? 'checkpoint' : fromSnapshot.has(sid) ? 'snapshot' : 'journal';
      this.#publish(sid, report, kind, 'background', started);
      this.#onSession?.(sid, result);
      if (++n % 256 === 0) await yieldToLoop();
    }
    // Sessions the pass found nothing of (their records failed the re-read check): nothing to rebuild.
    for (const sid of [...this.#pending]) {
      this.#pending.delete(sid);
      const report: SessionRecovery = { sid, status: 'recovered', seq: 0, snapshotSeq: 0, replayed: 0, damagedSnapshots: [] };
      if (journal.lastSeq(sid) > 0) {
        report.missing = [1, journal.lastSeq(sid)];
        report.status = this.#o.salvage ? 'salvaged' : 'damaged';
      }
      const result = await this.#settle(sid, hooks.initialState(sid), report);
      this.#onSession?.(sid, result);
    }
    journal.releaseFramesAtOpen();
    // Segments are not deleted here: the snapshots found at open may not be durable in their
    // directory yet (a crash before their directory sync); the next snapshot write syncs it, then deletes.
    this.#finish();
  }

  /**
   * Starts pending sessions from the checkpoint's entries that could hold: at
   * or above the session's newest snapshot and not beyond what the journal has
   * of it. An entry above the snapshot still has to be proven by the replay
   * (seq and LSN); one at the snapshot's own seq stands in for it when the
   * entry is tied to that snapshot (`snapshotLsn`, `atSnapshot`): then no snapshot is
   * decompressed and decoded, which on a restart after snapshots is most of
   * the pass. The snapshot files are checked 16 at a time.
   */
  async #startFromCheckpoint(builder: RecoveryBuilder<S>): Promise<{ entries: Map<string, CheckpointEntry<S>>; atSnapshot: Set<string> }> {
    const out = new Map<string, CheckpointEntry<S>>();
    const atSnapshot = new Set<string>();
    const where = this.#o.checkpoint;
    if (where === undefined) return { entries: out, atSnapshot };
    const read = await readTableCheckpoint<S>(where.fs, where.dir, where.openState);
    if ('problem' in read) {
      this.#checkpointUse = { used: 0, skipped: 0, rejected: 0, problem: read.problem };
      return { entries: out, atSnapshot };
    }
    if (read.stateSchemaVersion !== this.#o.stateSchemaVersion) {
      this.#checkpointUse = { used: 0, skipped: read.entries.length, rejected: 0, problem: `state schema version ${read.stateSchemaVersion}, not ${this.#o.stateSchemaVersion}` };
      return { entries: out, atSnapshot };
    }
    const { journal, snapshots } = this.#o;
    const taken: (CheckpointEntry<S> | undefined)[] = new Array(read.entries.length);
    let next = 0;
    const check = async (): Promise<void> => {
      while (next < read.entries.length && !this.#stopped) {
        const i = next++;
        const e = read.entries[i]!;
        const snapSeq = snapshots.seqs(e.sid).at(-1) ?? 0;
        if (!this.#pending.has(e.sid) || e.seq < snapSeq || e.seq > Math.max(journal.lastSeq(e.sid), snapSeq)) continue;
        // The entry stands in for the newest snapshot (plus what follows it), so that snapshot must be intact
        // (checksum only, no decoding): where it is not, plain recovery decides, as without a checkpoint.
        const meta = await snapshots.newestMeta(e.sid);
        if (meta === 'damaged') continue;
        if (e.seq === snapSeq) {
          // The same seq is the same history when the entry was written tied to this very snapshot: its header
          // names the LSN the entry recorded (the journal's position when the snapshot was written, after the
          // entry's event), and that event's session was not deleted since (a session deleted and started
          // again under its id reaches the seq with other events).
          if (meta === undefined || e.snapshotLsn === undefined || meta.lsn !== e.snapshotLsn || meta.lsn < e.lsn || journal.isErased(e.sid, e.lsn)) continue;
          atSnapshot.add(e.sid);
        }
        taken[i] = e;
      }
    };
    await Promise.all(Array.from({ length: 16 }, check));
    // In the file's order, whatever order the checks finished in.
    for (const e of taken) {
      if (e === undefined) continue;
      builder.startFrom(e.sid, e.state, e.seq, []);
      out.set(e.sid, e);
    }
    this.#checkpointUse = { used: out.size, skipped: read.entries.length - out.size, rejected: 0 };
    return { entries: out, atSnapshot };
  }

  /** Starts the selected pending sessions from their newest valid snapshot; returns sid → snapshot seq (undefined when stopped). */
  async #startFromSnapshots(builder: RecoveryBuilder<S>, select: (sid: string) => boolean): Promise<Map<string, number> | undefined> {
    const { journal, snapshots, hooks } = this.#o;
    const out = new Map<string, number>();
    let n = 0;
    for (const sid of snapshots.sessions()) {
      if (this.#stopped) return undefined;
      if (!this.#pending.has(sid) || !select(sid)) continue;
      const { snapshot, damaged } = await snapshots.loadNewest(sid);
      if (snapshot === undefined) {
        builder.noteDamagedSnapshots(sid, damaged);
        continue;
      }
      out.set(sid, snapshot.seq);
      journal.noteSnapshot(sid, snapshot.seq, snapshot.dedupe, snapshots.seqs(sid).at(-1) ?? 0);
      builder.startFromSnapshot(sid, { snapshot, stateSchemaVersion: this.#o.stateSchemaVersion, damagedSnapshots: damaged });
      if (++n % 64 === 0) await yieldToLoop();
    }
    return out;
  }

  /**
   * Replays the segments as they were at open, in log order, into `builder`
   * for the selected pending sessions. Every frame's checksum is checked again
   * here (the bytes are read again, and a byte that changed since the open
   * scan, or was never scanned because a journal index vouched for it, must
   * not come back as data): a frame that fails is skipped, and its session
   * shows the gap. A record at or below `skipUpTo` of its session is only
   * looked at by its head (`onCovered`), not parsed. False when stopped.
   */
  async #replay(builder: RecoveryBuilder<S>, select: (sid: string) => boolean, skipUpTo: ReadonlyMap<string, number>, onCovered?: (head: { sid: string; seq: number; lsn: number }) => void): Promise<boolean> {
    const { journal } = this.#o;
    const slice = this.#o.sliceRecords ?? 4096;
    const heads = skipUpTo.size > 0;
    let n = 0;
    let sliceStarted = performance.now();
    const segments = journal.framesAtOpen() ?? [];
    // One record's payload, [start, end) of `buf`, its checksum already checked: its LSN, or why it does not decode.
    const take = (buf: Buffer, start: number, end: number): number | string => {
      if (heads) {
        // Most records of a session with a snapshot or checkpoint entry are covered by it: skip them unparsed.
        const head = decodeHead(buf.subarray(start, end));
        if (typeof head === 'string') return head;
        if (!this.#pending.has(head.sid) || !select(head.sid) || journal.isErased(head.sid, head.lsn)) return head.lsn;
        if (head.seq <= (skipUpTo.get(head.sid) ?? 0)) {
          onCovered?.(head);
          return head.lsn;
        }
      }
      const record = decodePayloadAt(buf, start, end);
      if (typeof record === 'string') return record;
      // A deleted session's record (the id may have started over since): skipped as the open scan skipped it.
      if (this.#pending.has(record.sid) && select(record.sid) && !journal.isErased(record.sid, record.lsn)) builder.apply(journal.openRecord(record as JournalRecord));
      return record.lsn;
    };
    const pieceBytes = this.#o.pieceBytes ?? PASS_PIECE_BYTES;
    for (const segment of segments) {
      if (this.#stopped) return false;
      // Read in pieces (journal/segment-pieces.ts), one ahead of the replay, not as one buffer per segment.
      const handle = await journal.openSegment(segment.name);
      const pieces = new SegmentPieces(handle, segment.end, pieceBytes);
      try {
        const end = Math.min(segment.end, (await handle.stat()).size);
        await pieces.cover(0, SEGMENT_HEADER_BYTES);
        // (a copy: the scanner's fallback below needs the header when the piece holding it is gone)
        const headerBytes = Buffer.from(pieces.view.subarray(0, SEGMENT_HEADER_BYTES));
        const header = decodeSegmentHeader(headerBytes);
        if (typeof header === 'string' || header.seed !== segment.seed) continue; // the whole segment changed since open: its sessions show the gap
        let pos = SEGMENT_HEADER_BYTES;
        let lastLsn = header.firstLsn - 1;
        while (pos < end) {
          // A request that arrives meanwhile (a first access, its append and fdatasync) waits at most one slice per step.
          if (++n % slice === 0 || ((n & 63) === 0 && performance.now() - sliceStarted >= PASS_SLICE_MS)) {
            await this.#giveWay();
            sliceStarted = performance.now();
            if (this.#stopped) return false;
          }
          // The frame's header, then the whole frame, in the view (a frame straddling two pieces is joined once).
          if (pos + FRAME_HEADER_BYTES > pieces.base + pieces.view.length) await pieces.cover(pos, Math.min(FRAME_HEADER_BYTES, end - pos));
          let view = pieces.view;
          let at = pos - pieces.base;
          const length = pos + FRAME_HEADER_BYTES <= end && at + FRAME_HEADER_BYTES <= view.length ? view.readUInt32LE(at + FRAME_LENGTH_OFFSET) : -1;
          const frameEnd = pos + FRAME_HEADER_BYTES + length;
          const plausible = length >= MIN_PAYLOAD_BYTES && frameEnd <= end;
          if (plausible && frameEnd > pieces.base + view.length) {
            await pieces.cover(pos, frameEnd - pos);
            view = pieces.view;
            at = pos - pieces.base;
          }
          const whole = plausible && at + FRAME_HEADER_BYTES + length <= view.length;
          const lsn = whole && frameCrc(segment.seed, view, at, at + FRAME_HEADER_BYTES + length) === view.readUInt32LE(at) ? take(view, at + FRAME_HEADER_BYTES, at + FRAME_HEADER_BYTES + length) : 'checksum mismatch';
          if (typeof lsn === 'number' && lsn > lastLsn) {
            lastLsn = lsn;
            pos = frameEnd;
            continue;
          }
          // A frame that fails now: the scanner resyncs past it (the rest of the segment, at once; a rare path).
          await pieces.cover(pos, end - pos);
          const restView = pieces.view.subarray(pos - pieces.base, pos - pieces.base + (end - pos));
          const rest = Buffer.concat([headerBytes, restView]);
          const damage = scanSegment(
            rest,
            { isLast: false, maxRecordBytes: end - pos, tail: { at: pos, lastLsn } },
            (r: { lsn: number; payload: Uint8Array }) => void take(Buffer.from(r.payload.buffer, r.payload.byteOffset, r.payload.length), 0, r.payload.length),
            (payload) => {
              const h = decodeHead(payload);
              return typeof h === 'string' ? h : { lsn: h.lsn, payload };
            },
          ).damage;
          if (errorChannel.hasSubscribers) {
            for (const d of damage) errorChannel.publish({ source: 'recovery', code: ErrorCodes.CORRUPTION, message: `${segment.name} offset ${d.offset}: ${d.reason} (found by the recovery pass's re-check; the frame is not replayed)` } satisfies ErrorMessage);
          }
          for (const d of damage) this.#noteDamage({ ...d, segment: segment.name });
          break;
        }
      } finally {
        await pieces.close();
        await handle.close().catch(() => undefined);
      }
      await yieldToLoop();
    }
    return true;
  }

  /**
   * Between two replay slices: lets the event loop run, then waits while the foreground is busy —
   * a first access being recovered (not one waiting for the pass itself, behind a damaged
   * snapshot), or appends waiting to be written, synced and acknowledged —
   * for at most PASS_GIVE_WAY_MS, so that a server that is never idle still gets its pass done.
   * A restarted server's first request otherwise waited behind a slice at each of its steps (its
   * reads, the append's write, its fdatasync's callback).
   */
  async #giveWay(): Promise<void> {
    await yieldToLoop();
    const { journal } = this.#o;
    const started = performance.now();
    while ((this.#accessing > 0 || journal.writesPending) && !this.#stopped && performance.now() - started < PASS_GIVE_WAY_MS) await pause(1);
  }

  /** Damage the pass's re-check found that the open scan had not (bytes changed since, or vouched for by an index). */
  readonly #passDamage: (DamagedRegion & { segment: string })[] = [];

  /** Damage found after open joins the journal's report (once per place): the index is not written while there is any. */
  #noteDamage(d: DamagedRegion & { segment: string }): void {
    this.#passDamage.push(d);
    const known = this.#o.journal.report.damage;
    if (!known.some((k) => k.segment === d.segment && k.offset === d.offset)) known.push(d);
  }

  /** Damage the background pass found on its own re-check of every frame. */
  get passDamage(): readonly (DamagedRegion & { segment: string })[] {
    return this.#passDamage;
  }

  #finish(): void {
    this.#completedAt = Date.now();
    this.#o.journal.holdSegmentDeletion(false);
  }

  /** Quarantines, seals salvage, counts, and hands the result to anyone waiting for it. */
  async #settle(sid: string, state: S, report: SessionRecovery): Promise<RecoveredSession<S>> {
    const { journal } = this.#o;
    if (report.status === 'damaged') {
      const what = report.missing === undefined ? (report.error ?? 'its history is damaged') : `events ${report.missing[0]}..${report.missing[1]} are missing or damaged`;
      journal.quarantine(sid, `${what}; reopen with salvage to accept the loss`);
    }
    if (report.status === 'failed') journal.quarantine(sid, report.error ?? 'recovery failed');
    if ((report.status === 'damaged' || report.status === 'failed') && errorChannel.hasSubscribers) {
      errorChannel.publish({ source: 'recovery', code: report.status === 'failed' ? 'ARBOR_CORRUPTION' : 'ARBOR_SESSION_QUARANTINED', message: report.error ?? `session ${sid} is ${report.status}`, sessionId: sid } satisfies ErrorMessage);
    }
    if (report.status === 'salvaged') await this.#o.seal(sid, state, journal.lastSeq(sid));
    else if (report.status !== 'damaged' && report.status !== 'failed' && report.damagedSnapshots.length > 0 && report.seq > 0) {
      // Coverage at open came from file names, so the records behind a damaged newest snapshot stopped
      // pinning their segments: a fresh snapshot makes that coverage true before any segment is deleted.
      await this.#o.seal(sid, state, report.seq);
    }
    this.#sessions.push(report);
    this.#counts[report.status] += 1;
    const result: RecoveredSession<S> = { state, seq: report.seq, status: report.status, report };
    if (this.#loading.has(sid)) this.#handoff.set(sid, result);
    const waiting = this.#waiters.get(sid);
    if (waiting !== undefined) {
      this.#waiters.delete(sid);
      for (const w of waiting) w(result);
    }
    return result;
  }

  #waitForPass(sid: string): Promise<RecoveredSession<S> | undefined> {
    return new Promise((resolve, reject) => {
      const list = this.#waiters.get(sid) ?? [];
      list.push(resolve);
      this.#waiters.set(sid, list);
      this.runPass().catch(reject);
    });
  }

  #publish(sid: string, report: SessionRecovery, kind: RecoveryMessage['kind'], trigger: Trigger, started: number): void {
    if (!recoveryChannel.hasSubscribers) return;
    recoveryChannel.publish({ sessionId: sid, kind, trigger, replayed: report.replayed, durationMs: performance.now() - started, status: report.status } satisfies RecoveryMessage);
  }
}

/**
 * The longest stretch of journal replay the background pass runs between two
 * yields to the event loop. 4,096 records took ~33 ms on the 2-core VM, and
 * a first request waited behind a slice at each of its steps.
 */
const PASS_SLICE_MS = 5;

/**
 * The background pass reads a segment 4 MiB at a time, one piece ahead of the replay. A whole
 * 100 MB segment in one buffer started a garbage collection when it was allocated (external memory
 * above V8's limit), while a restarted server was answering its first request.
 */
const PASS_PIECE_BYTES = 4 * 1024 * 1024;

/** The longest the background pass waits for a busy foreground between two slices (see #giveWay). */
const PASS_GIVE_WAY_MS = 20;

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function yieldToLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
