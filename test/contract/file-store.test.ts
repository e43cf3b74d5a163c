import { randomBytes } from 'node:crypto';
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

// The same contract with encryption at rest on (docs/encryption.md): journal data and snapshot states sealed per session.
backendContract('file store encrypted', async () => {
  const { dir, cleanup } = tempDir('arbor-contract-enc-');
  const encryptionKey = randomBytes(32).toString('base64');
  return {
    open: (o) => openStore({ dataDir: dir, journalFlushIntervalMs: 3_600_000, encryptionKey, ...o }, hooks),
    cleanup: async () => cleanup(),
  };
});
