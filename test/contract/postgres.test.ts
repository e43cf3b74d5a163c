import { backendContract } from './backend-contract.ts';
import { hooks } from '../crash/power-loss-harness.ts';
import { PgBackend } from '../../src/postgres/pg-backend.ts';
import { randomBytes } from 'node:crypto';
import { PG_URL, announcePostgres, dropSchema, freshSchemaName, pgSkip } from '../helpers/postgres.ts';

announcePostgres('test/contract/postgres.test.ts');

// PostgreSQL, a schema per test; each reopen is a new node (new nodeId) after the old one released its leases.
backendContract(
  'postgres',
  async () => {
    const schema = freshSchemaName('c');
    let node = 0;
    return {
      open: (o) => PgBackend.open({ connectionString: PG_URL!, schema, hooks, nodeId: `contract-node-${(node += 1)}`, poolSize: 4, ...o }),
      cleanup: () => dropSchema(schema),
    };
  },
  { skip: pgSkip },
);

// The same contract with encryption at rest on (docs/encryption.md): event data and snapshot states sealed per session.
backendContract(
  'postgres encrypted',
  async () => {
    const schema = freshSchemaName('ce');
    const encryptionKey = randomBytes(32).toString('base64');
    let node = 0;
    return {
      open: (o) => PgBackend.open({ connectionString: PG_URL!, schema, hooks, nodeId: `contract-enc-node-${(node += 1)}`, poolSize: 4, encryptionKey, ...o }),
      cleanup: () => dropSchema(schema),
    };
  },
  { skip: pgSkip },
);
