import { createRequire } from 'node:module';
import { peersMissingError } from './cli.ts';

/** `require` anchored at bench/package.json: peer packages come from bench/node_modules only (they are not dependencies of Arbor). */
export const benchRequire = createRequire(new URL('../package.json', import.meta.url));

/** The LangGraph.js modules the benchmarks compare against, and their versions (from bench/node_modules only). */
export interface LangGraphModules {
  versions: Record<string, string>;
  lg: Record<string, any>;
  messages: Record<string, any>;
  /** undefined only when `sqliteOptional` was asked for and the package is not installed */
  sqlite: Record<string, any> | undefined;
  checkpoint: Record<string, any>;
}

/**
 * Loads LangGraph.js, its messages, its SQLite checkpointer and the checkpoint interface; a missing
 * one is the "install the peers" error. LangGraph.js itself is also a dev dependency of Arbor (the
 * tests of ArborSaver use it), so without bench/node_modules only the SQLite checkpointer is
 * missing: with `sqliteOptional` that gives `sqlite: undefined` instead of the error.
 */
export async function loadLangGraphModules(options: { sqliteOptional?: boolean } = {}): Promise<LangGraphModules> {
  const load = async (spec: string): Promise<Record<string, any>> => {
    try {
      return (await import(spec)) as Record<string, any>;
    } catch (err) {
      throw peersMissingError(`${spec}: ${(err as Error).message.split('\n')[0]}`);
    }
  };
  const lg = await load('@langchain/langgraph');
  const messages = await load('@langchain/core/messages');
  const sqlite = await load('@langchain/langgraph-checkpoint-sqlite').catch((err: unknown) => {
    if (options.sqliteOptional === true) return undefined;
    throw err;
  });
  const checkpoint = await load('@langchain/langgraph-checkpoint');
  const versions: Record<string, string> = {};
  for (const name of ['@langchain/langgraph', '@langchain/langgraph-checkpoint-sqlite', '@langchain/langgraph-checkpoint', '@langchain/core', 'better-sqlite3']) {
    try {
      versions[name] = (benchRequire(`${name}/package.json`) as { version: string }).version;
    } catch {
      versions[name] = '?';
    }
  }
  return { versions, lg, messages, sqlite, checkpoint };
}
