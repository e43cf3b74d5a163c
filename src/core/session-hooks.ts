import { upcastJournalRecord } from './events.ts';
import { initialSessionState, reduceSession, SESSION_STATE_VERSION, upcastSessionState } from './state.ts';

/**
 * How a backend rebuilds Arbor's own session state: the initial state, the
 * reducer, the upcasters and the state version snapshots are written with.
 * One literal, used by the runtime, the backends it opens and the operations
 * tools, so they can never disagree. A backend opened with these hooks and no
 * `stateSchemaVersion` option writes {@link SESSION_STATE_VERSION} and
 * upcasts older snapshots.
 */
export const SESSION_HOOKS = Object.freeze({
  initialState: initialSessionState,
  reducer: reduceSession,
  upcastEvent: upcastJournalRecord,
  upcastState: upcastSessionState,
  stateSchemaVersion: SESSION_STATE_VERSION,
});
