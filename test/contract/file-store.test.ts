import { backendContract } from './backend-contract.ts';
import { openStore } from '../../src/file/store.ts';
import { hooks } from '../crash/power-loss-harness.ts';
import { tempDir } from '../helpers/tmp.ts';

// The file Store on the real filesystem, in a temp directory per test.
backendContract('file store', async () => {
  const { dir, cleanup } = tempDir('arbor-contract-');
  return {
    open: (o) => openStore({ dataDir: dir, journalFlushIntervalMs: 3_600_000, ...o }, hooks),
    cleanup: async () => cleanup(),
  };
});
