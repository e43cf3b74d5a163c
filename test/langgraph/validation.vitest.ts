/**
 * LangGraph's own conformance suite against ArborSaver, on the backend
 * ARBOR_LG_BACKEND names: `file` (a fresh data directory per checkpointer) or
 * `postgres` (the schema ARBOR_LG_SCHEMA on ARBOR_TEST_DATABASE_URL, emptied
 * through the saver's own API between checkpointers; the node:test file that
 * starts this run created the schema name and drops it at its end).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { validate } from '@langchain/langgraph-checkpoint-validation';
import { ArborSaver } from '../../src/langgraph.ts';

const backend = process.env.ARBOR_LG_BACKEND ?? 'file';
const dirs = new Map<ArborSaver, string>();

async function clear(saver: ArborSaver): Promise<void> {
  const threads = new Set<string>();
  for await (const tuple of saver.list({})) threads.add(String(tuple.config.configurable?.thread_id));
  for (const tid of threads) await saver.deleteThread(tid);
}

validate({
  checkpointerName: `ArborSaver (${backend})`,
  async createCheckpointer() {
    if (backend === 'postgres') {
      const saver = await ArborSaver.open({ postgres: { connectionString: process.env.ARBOR_TEST_DATABASE_URL!, schema: process.env.ARBOR_LG_SCHEMA! } });
      await clear(saver);
      return saver;
    }
    const dir = mkdtempSync(join(tmpdir(), 'arbor-lg-validate-'));
    const saver = await ArborSaver.open({ dataDir: dir });
    dirs.set(saver, dir);
    return saver;
  },
  async destroyCheckpointer(saver: ArborSaver) {
    if (backend === 'postgres') await clear(saver);
    await saver.close();
    const dir = dirs.get(saver);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
    dirs.delete(saver);
  },
});
