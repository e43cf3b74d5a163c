/**
 * The file `Store` in the shape of `SessionBackend`, for the contract suite on this
 * branch. Once `Store` implements `SessionBackend` itself, this adapter goes and the
 * suite runs on `Store` directly.
 */
import type { SessionBackend, RecoveredSession } from '../../src/backend.ts';
import { openStore, type Store } from '../../src/store.ts';
import type { StoreOptions } from '../../src/options.ts';
import type { RecoveryHooks } from '../../src/recovery/recovery.ts';

export async function fileBackend<S>(options: Partial<StoreOptions>, hooks: RecoveryHooks<S>): Promise<SessionBackend<S> & { store: Store<S> }> {
  const store = await openStore<S>(options, hooks);
  return {
    kind: 'file',
    store,
    async sessionIds() {
      return [...new Set([...store.journal.sessions().keys(), ...store.snapshots.sessions()])];
    },
    async loadSession(sid): Promise<RecoveredSession<S> | undefined> {
      const r = await store.loadSession(sid);
      if (r === undefined) return undefined;
      const snapshotSeq = store.snapshots.seqs(sid).filter((s) => s <= r.seq).at(-1) ?? 0;
      return { ...r, report: { sid, status: r.status, seq: r.seq, snapshotSeq, replayed: r.seq - snapshotSeq, damagedSnapshots: [] } };
    },
    append: (input) => store.append(input),
    read: (sid, fromSeq) => store.read(sid, fromSeq),
    snapshot: (sid, state, seq) => store.snapshot(sid, state, seq),
    async snapshotSeq(sid) {
      return store.snapshots.seqs(sid).at(-1) ?? 0;
    },
    sessionsToSnapshot: () => store.journal.sessionsPinningOldest(),
    async release() {},
    onSessionLost() {},
    stats: () => ({ state: store.journal.state, queueDepth: store.journal.queueDepth, lastFlushAt: store.journal.lastFlushAt, journalBytes: store.journal.sizeBytes() }),
    close: () => store.close(),
  };
}
