import { Store, type Arbor, type SessionState } from '../../src/index.ts';

/** The file store under a runtime (tests read its journal and snapshot figures); throws on another backend. */
export function fileStore(arbor: Arbor): Store<SessionState> {
  const backend = arbor.backend;
  if (!(backend instanceof Store)) throw new Error(`arbor runs on ${backend.kind}, not the file store`);
  return backend as Store<SessionState>;
}
