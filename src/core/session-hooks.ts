import { upcastJournalRecord } from './events.ts';
import { beginSessionDraft, initialSessionState, reduceSession, SESSION_STATE_VERSION, upcastSessionState } from './state.ts';

/**
 * How a backend rebuilds Arbor's own session state: the initial state, the
 * reducer, the upcasters and the state version snapshots are written with.
 * One literal, used by the runtime, the backends it opens and the operations
 * tools, so they can never disagree. A backend opened with these hooks and no
 * `stateSchemaVersion` option writes {@link SESSION_STATE_VERSION} and
 * upcasts older snapshots. Replay runs the reducer as a draft (in place,
 * linear in the events; see beginSessionDraft in state.ts).
 */
export const SESSION_HOOKS = Object.freeze({
  initialState: initialSessionState,
  reducer: reduceSession,
  draft: Object.freeze({ reducer: reduceSession, begin: beginSessionDraft }),
  upcastEvent: upcastJournalRecord,
  upcastState: upcastSessionState,
  stateSchemaVersion: SESSION_STATE_VERSION,
});
