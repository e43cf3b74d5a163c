/**
 * Arbor as a LangGraph.js checkpointer (`import { ArborSaver } from 'arbor-runtime/langgraph'`):
 * needs the optional peer dependencies `@langchain/langgraph-checkpoint` and
 * `@langchain/core`. See docs/langgraph.md.
 */
export { ArborSaver, type ArborSaverOptions } from './langgraph/arbor-saver.ts';
export { threadSessionId } from './langgraph/thread-state.ts';
