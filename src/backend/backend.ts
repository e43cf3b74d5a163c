import type { JournalRecord } from '../core/record.ts';
import type { RecoveryStatus, SessionRecovery } from './replay.ts';
import type { RestoreMarker } from '../core/restore-notice.ts';

/** A session as recovery rebuilt it. */
export interface RecoveredSession<S> {
  state: S;
  seq: number;
  status: RecoveryStatus;
  /** how it was rebuilt (snapshot seq, events replayed, damage) */
  report: SessionRecovery;
}

/** What an append resolves with. `duplicate` is true when a clientMessageId was seen before and nothing was written. */
export interface AppendResult {
  sid: string;
  seq: number;
  lsn: number;
  ts: number;
  duplicate: boolean;
}

export interface AppendInput {
  sid: string;
  type: string;
  /** the event's schema version (default 1) */
  v?: number;
  /** any JSON value */
  data: unknown;
  /** Rejects with ARBOR_SEQ_CONFLICT unless the session's last seq (including pending appends) equals this. */
  expectedSeq?: number;
  /** Idempotency key: an append with a key seen before (within `dedupeWindow`) resolves with the original result. */
  clientMessageId?: string;
  /** Wall-clock ms to record (default: now); lets a caller reduce the exact record before it is written. */
  ts?: number;
}

/** A clientMessageId remembered with the result of its append; carried in snapshots so dedupe survives segment deletion. */
export type DedupeEntry = [cid: string, seq: number, lsn: number, ts: number];

/** One stored session as `listSessions` names it. */
export interface StoredSession {
  sid: string;
  /** seq of its newest durable event (or snapshot) */
  seq: number;
}

/** Figures for health checks and metrics. */
export interface BackendStats {
  /** 'open' | 'closing' | 'closed' | 'failed' */
  state: string;
  /** appends queued and not yet durable */
  queueDepth: number;
  /** wall-clock ms of the last completed flush */
  lastFlushAt: number;
  /** bytes the backend holds for the journal (0 when unknown) */
  journalBytes: number;
}

/**
 * The storage a runtime runs on: a journal of critical events plus snapshots,
 * per session. The embedded default is `Store` (files under `dataDir`, or an
 * in-memory filesystem); `PgBackend` keeps them in PostgreSQL and adds
 * ownership, so that several processes can share one database.
 *
 * Contract (the suite in test/contract/ checks every implementation):
 * - `append` resolves once the event is durable, with the session's next seq
 *   (gapless, from 1); `expectedSeq` mismatches reject with ARBOR_SEQ_CONFLICT
 *   and write nothing; a `clientMessageId` seen before resolves with the
 *   original result (`duplicate: true`) and writes nothing, also after a
 *   restart and after the original's records were released by a snapshot.
 * - `loadSession` takes the session for this process (a multi-node backend
 *   acquires its lease, or rejects with ARBOR_NOT_OWNER) and rebuilds it from
 *   the newest valid snapshot and every event after it, through the hooks'
 *   reducer; undefined when nothing was ever written for it.
 * - `snapshot(sid, state, seq)` stores `state` as the session's state after
 *   event `seq`, durably, then may release the events it covers.
 * - A multi-node backend fences every append: it commits only while this
 *   process holds the session's lease at the epoch it loaded it with;
 *   otherwise it rejects with ARBOR_FENCED and tells `onSessionLost` listeners.
 */
export interface SessionBackend<S, R extends RecoveryReportBase = RecoveryReportBase> {
  /** 'file' or 'postgres' */
  readonly kind: string;
  /** Ids of every session with durable data (for the background recovery pass). */
  sessionIds(): Promise<string[]>;
  loadSession(sid: string): Promise<RecoveredSession<S> | undefined>;
  append(input: AppendInput): Promise<AppendResult>;
  /** The session's stored events with seq ≥ fromSeq that no snapshot has released, in order. */
  read(sid: string, fromSeq?: number): Promise<JournalRecord[]>;
  snapshot(sid: string, state: S, seq: number): Promise<{ bytes: number }>;
  /** Seq of the session's newest durable snapshot, 0 when none. */
  snapshotSeq(sid: string): Promise<number>;
  /** Sessions whose snapshot would let the backend reclaim space (files: those pinning the oldest segment). */
  sessionsToSnapshot(): string[];
  /** The runtime dropped the session from memory (passivation): a multi-node backend gives up its lease. */
  release(sid: string): Promise<void>;
  /** Listens for sessions this process lost to another (lease taken over, append fenced). */
  onSessionLost(listener: (sid: string, reason: string) => void): void;
  stats(): BackendStats;
  close(): Promise<void>;
  /** Whether the session has any durable event or snapshot; loads nothing and takes no lease. */
  exists(sid: string): Promise<boolean>;
  /**
   * Deletes the session (a multi-node backend: one this process holds):
   * resolves once the deletion is durable; from then on the backend holds
   * nothing of it (`exists` false, `loadSession` undefined, `read` empty), and
   * appends under the same id start a new session at seq 1. Erasing the bytes
   * may finish later: see `erasure`.
   */
  deleteSession(sid: string): Promise<void>;

  // Listing and forking (docs/sessions-api.md): read-only looks that take no lease, and seeding a new session.

  /** Every stored session with the seq of its newest durable event or snapshot; loads nothing and takes no lease. */
  listSessions(): Promise<StoredSession[]>;
  /**
   * The session rebuilt read-only from what is stored (newest valid snapshot
   * at or below `atSeq`, then the held events up to `atSeq`); takes no lease
   * and changes nothing, so it may lag a live owner's unflushed appends.
   * Undefined when nothing is stored. With `atSeq`: rejects with
   * ARBOR_INVALID_INPUT (`details.field` = 'atSeq', `details.oldestSeq`) when
   * that point is no longer reachable (its events were released by a
   * snapshot and no kept snapshot lies at or below it).
   */
  peekSession(sid: string, atSeq?: number): Promise<RecoveredSession<S> | undefined>;
  /**
   * Starts a new session whose history begins with `state` as its state after
   * event `seq` (stored as a snapshot: the next append gets `seq + 1`).
   * Rejects with ARBOR_SESSION_EXISTS when anything is stored for `sid`.
   * On a multi-node backend this takes the session's lease.
   */
  seedSession(sid: string, state: S, seq: number): Promise<void>;

  // Optional capabilities: what only some backends can do. The runtime asks `if (backend.recovery)`, never which backend it is.

  /** Lazy recovery after a restart (files): sessions come back on first access and in one background pass. */
  readonly recovery?: RecoveryCapability<S, R>;
  /** The whole-table checkpoint (files): an accelerator for the next start's background pass. */
  readonly checkpoint?: CheckpointCapability<S>;
  /** Which halves of the storage are on; absent means both (a backend that cannot turn them off). */
  readonly persistence?: { journal: boolean; snapshots: boolean };
  /**
   * After the backend refused writes for good (a failed journal), opens it
   * again from what is durable and returns the new instance; this one is
   * closed. Rejects, leaving this one as it was, when the storage still fails.
   */
  reopen?(): Promise<SessionBackend<S, R>>;
  /** The marker a restore from a backup left in the storage, when there is one (see core/restore-notice). */
  restoreMarker?(): Promise<RestoreMarker | undefined>;
  /** Erasure of deleted sessions' bytes that finishes after `deleteSession` resolves (files: journal segments rewritten, checkpoint). */
  readonly erasure?: ErasureCapability;
  /** Journal figures for health checks (files: segments, synced LSN, why it failed). */
  journalFigures?(): JournalFigures;
  /**
   * Present on a backend that several processes share, each session owned by
   * one of them at a time (PostgreSQL): who this process is to the others.
   * On such a backend `loadSession` takes the session's lease, so it is never
   * a read-only look at a session this process serves.
   */
  readonly ownership?: BackendOwnership;
  /** Health checks only this backend can make (PostgreSQL: its connection pool, lease renewal), by name; /health shows each. */
  checkHealth?(): Promise<Record<string, BackendCheck>>;
}

/** One backend health check: `warn` keeps /health at 200, `fail` makes it 503; details beside. */
export interface BackendCheck {
  status: 'ok' | 'warn' | 'fail';
  message: string;
  [detail: string]: unknown;
}

/** A backend that erases deleted sessions' bytes in the background, within a bounded time. */
export interface ErasureCapability {
  /** Deleted sessions whose bytes are not erased yet. */
  pending(): string[];
  /** Resolves once `sid` (without it: every deleted session) is erased. */
  whenErased(sid?: string): Promise<void>;
}

/** This process as the other processes sharing a backend see it: what the server routes requests by. */
export interface BackendOwnership {
  /** Unique among the processes sharing the backend; owners are named by it. */
  readonly nodeId: string;
  /** Where other nodes forward requests for sessions this process owns; undefined when none was configured. */
  readonly nodeAddress: string | undefined;
  /** How long a lease outlives its last renewal: how long a dead owner keeps its sessions. */
  readonly leaseMs: number;
}

/** A failure that made the backend refuse writes: its code, the errno underneath (ENOSPC, EIO…) and message. */
export interface BackendFailure {
  code: string;
  errno: string | undefined;
  message: string;
}

/** Journal figures of a backend that keeps a segmented log. */
export interface JournalFigures {
  segments: number;
  syncedLsn: number;
  failure?: BackendFailure;
}

/** What every recovery report holds, whatever the backend adds to it. */
export interface RecoveryReportBase {
  counts: Record<RecoveryStatus, number>;
  sessions: SessionRecovery[];
  pending: number;
  completedAt?: number;
}

/**
 * Lazy recovery: a backend that answers before every session is rebuilt.
 * `recoverAll` is the background pass (it joins a running one); each session
 * is rebuilt once, either by it or by `loadSession` on first access.
 */
export interface RecoveryCapability<S, R extends RecoveryReportBase = RecoveryReportBase> {
  /** Sessions rebuilt while opening (an eager open); handed over once, then forgotten. */
  takeRecovered(): [string, RecoveredSession<S>][];
  recoverAll(onSession: (sid: string, r: RecoveredSession<S>) => void): Promise<void>;
  /** Stops the background pass at its next slice; sessions not reached stay pending. */
  stop(): void;
  isPending(sid: string): boolean;
  pendingCount(): number;
  counts(): Record<RecoveryStatus, number>;
  report(): R;
}

/** One session in the whole-table checkpoint: a committed state and the LSN of its last event. */
export interface CheckpointInput<S> {
  sid: string;
  seq: number;
  lsn: number;
  state: S;
}

/** Writing the whole-table checkpoint; the backend adds what else an entry needs (its dedupe window). */
export interface CheckpointCapability<S> {
  write(entries: Iterable<CheckpointInput<S>>): Promise<{ bytes: number; entries: number }>;
}
