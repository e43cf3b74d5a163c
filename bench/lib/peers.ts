import { createRequire } from 'node:module';
import { isPeersMissing, peersMissingError } from './cli.ts';

/** `require` anchored at bench/package.json: peer packages come from bench/node_modules only (they are not dependencies of Arbor). */
export const benchRequire = createRequire(new URL('../package.json', import.meta.url));

/**
 * Opens and closes an in-memory better-sqlite3 database: its native addon is
 * loaded only then. One built under another Node.js (bench/node_modules
 * installed under Node 20, the suite run again on Node 24) is an error that
 * says so and how to rebuild it, instead of the loader's stack.
 */
export function checkBetterSqlite3(): void {
  try {
    const Database = benchRequire('better-sqlite3') as new (file: string) => { close(): void };
    new Database(':memory:').close();
  } catch (err) {
    const message = (err as Error).message;
    const built = /NODE_MODULE_VERSION (\d+)/.exec(message)?.[1];
    if ((err as NodeJS.ErrnoException).code === 'ERR_DLOPEN_FAILED' || built !== undefined) {
      throw new Error(
        `better-sqlite3 in bench/node_modules was built for another Node.js${built === undefined ? '' : ` (NODE_MODULE_VERSION ${built}; this is Node ${process.version}, ${process.versions.modules})`}: run \`npm rebuild --prefix bench\` under this Node`,
        { cause: err },
      );
    }
    throw err;
  }
}

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
  const sqlite = await load('@langchain/langgraph-checkpoint-sqlite')
    .then((mod) => {
      checkBetterSqlite3();
      return mod;
    })
    .catch((err: unknown) => {
      if (options.sqliteOptional !== true) throw err;
      // Installed but unusable: said on stderr, and the run goes on without it.
      if (!isPeersMissing(err)) process.stderr.write(`SqliteSaver skipped: ${(err as Error).message}\n`);
      return undefined;
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
