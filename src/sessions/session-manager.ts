import type { SessionActor } from './session-actor.ts';
import type { Session } from './session.ts';

/**
 * Where a session is in this process:
 * - `pending`: not in memory (never loaded here, passivated, or its last load failed);
 * - `loading`: being loaded from the backend;
 * - `hot`: in the hot tier, taking commands;
 * - `repairing`: in the hot tier, with interrupted turns to journal before its next command;
 * - `passivating`: being snapshotted and dropped from memory;
 * - `lost`: another process took it over; the next command loads it as a fresh recovery;
 * - `stopped`: crashed too often; reads work, commands are refused.
 */
export type SessionPhase = 'pending' | 'loading' | 'hot' | 'repairing' | 'passivating' | 'lost' | 'stopped';

/** Everything the runtime keeps about one session, in one place. */
export interface SessionRecord {
  readonly id: string;
  phase: SessionPhase;
  actor: SessionActor | undefined;
  handle: Session | undefined;
  /** Wall-clock ms of the last command or commit (idle passivation). */
  lastActivityAt: number;
  /** Committed events since the last snapshot (threshold snapshots). */
  eventsSinceSnapshot: number;
  /** seq and LSN of the session's last event, when known: what a checkpoint entry must carry. */
  lastEvent: { seq: number; lsn: number } | undefined;
  /** The snapshot being written, one at a time per session. */
  snapshotting: Promise<void> | undefined;
  /** This process has had the session in memory: a later load is not a recovery. */
  seen: boolean;
  /** enableHotStorage: false — the session leaves memory once its command is done. */
  evicting: boolean;
  /** Why the last load failed (e.g. ARBOR_RECOVERY_TIMEOUT); the next access tries again. */
  loadFailure: unknown;
}

/**
 * One record per session (see SessionRecord), and the transitions that touch
 * several of its fields at once, so that dropping a session (passivation, a
 * lost lease, a reopen) cannot forget one of them.
 */
export class SessionManager {
  readonly #records = new Map<string, SessionRecord>();

  /** The session's record, created (`pending`) on first use. */
  record(sid: string): SessionRecord {
    let r = this.#records.get(sid);
    if (r === undefined) {
      r = { id: sid, phase: 'pending', actor: undefined, handle: undefined, lastActivityAt: Date.now(), eventsSinceSnapshot: 0, lastEvent: undefined, snapshotting: undefined, seen: false, evicting: false, loadFailure: undefined };
      this.#records.set(sid, r);
    }
    return r;
  }

  get(sid: string): SessionRecord | undefined {
    return this.#records.get(sid);
  }

  values(): IterableIterator<SessionRecord> {
    return this.#records.values();
  }

  /** Every actor this process holds. */
  *actors(): Generator<SessionActor> {
    for (const r of this.#records.values()) if (r.actor !== undefined) yield r.actor;
  }

  /** Commands queued or running in the live actors' mailboxes: in all, and in the fullest one. */
  mailboxDepth(): { total: number; max: number } {
    let total = 0;
    let max = 0;
    for (const r of this.#records.values()) {
      const depth = r.actor?.mailboxDepth ?? 0;
      total += depth;
      if (depth > max) max = depth;
    }
    return { total, max };
  }

  get activeActors(): number {
    let n = 0;
    for (const r of this.#records.values()) if (r.actor !== undefined) n += 1;
    return n;
  }

  /** Sessions stopped after too many crashes. */
  stopped(): string[] {
    const out: string[] = [];
    for (const r of this.#records.values()) if (r.phase === 'stopped') out.push(r.id);
    return out;
  }

  /** Sessions whose last load failed and that no access has tried again yet. */
  failedToLoad(): number {
    let n = 0;
    for (const r of this.#records.values()) if (r.loadFailure !== undefined) n += 1;
    return n;
  }

  /** In memory again, after a load (or from the background pass when `repair`). */
  loaded(r: SessionRecord, repair: boolean): void {
    r.seen = true;
    r.loadFailure = undefined;
    if (r.phase !== 'stopped') r.phase = repair ? 'repairing' : 'hot';
  }

  /** Taken out of the hot tier for the next command: true when a repair was owed (it runs now). */
  takeRepair(r: SessionRecord): boolean {
    if (r.phase !== 'repairing') return false;
    r.phase = 'hot';
    return true;
  }

  /**
   * Dropped from memory (passivation): the actor stays while it has
   * subscribers (they keep receiving once the session is loaded back).
   * `snapshotted`: the count starts over, else it goes on, so the threshold
   * still triggers one.
   */
  passivated(r: SessionRecord, snapshotted: boolean): void {
    if (r.actor !== undefined && !r.actor.hasSubscribers) r.actor = undefined;
    r.lastEvent = undefined;
    if (snapshotted) r.eventsSinceSnapshot = 0;
    if (r.phase !== 'stopped') r.phase = 'pending';
  }

  /**
   * Another process took the session over: everything known of it is
   * stale; its next command loads it again as a fresh recovery. The actor
   * stays: the answer the loss aborted is still ending on it, and a second
   * actor would load the session beside it (each load takes the lease anew
   * and fences the other's writes).
   */
  lost(r: SessionRecord): void {
    r.seen = false;
    r.lastEvent = undefined;
    r.eventsSinceSnapshot = 0;
    if (r.phase !== 'stopped') r.phase = 'lost';
  }

  /** The backend was reopened: every session starts over from what it holds (actors and handles stay). */
  reopened(): void {
    for (const r of this.#records.values()) {
      r.seen = false;
      r.lastEvent = undefined;
      r.eventsSinceSnapshot = 0;
      r.loadFailure = undefined;
      if (r.phase !== 'stopped') r.phase = 'pending';
    }
  }
}
