import { upcastJournalRecord } from './events.ts';
import { initialSessionState, reduceSession } from './state.ts';

/**
 * How a backend rebuilds Arbor's own session state: the initial state, the
 * reducer and the upcasters. One literal, used by the runtime, the backends it
 * opens and the operations tools, so they can never disagree.
 */
export const SESSION_HOOKS = Object.freeze({
  initialState: initialSessionState,
  reducer: reduceSession,
  upcastEvent: upcastJournalRecord,
});
