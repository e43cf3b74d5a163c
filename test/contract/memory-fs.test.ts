import { backendContract } from './backend-contract.ts';
import { openStore } from '../../src/file/store.ts';
import { hooks } from '../crash/power-loss-harness.ts';
import { MemoryFileSystem } from '../../src/testing/memory-fs.ts';

// The file Store on the in-memory filesystem; a reopen sees the same (synced) files.
backendContract('file store on MemoryFileSystem', async () => {
  const fs = new MemoryFileSystem();
  return {
    open: (o) => openStore({ dataDir: '/data', fs, journalFlushIntervalMs: 3_600_000, ...o }, hooks),
    cleanup: async () => undefined,
  };
});
