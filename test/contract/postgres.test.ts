import { backendContract } from './backend-contract.ts';
import { hooks } from '../crash/power-loss-harness.ts';
import { PgBackend } from '../../src/postgres/pg-backend.ts';
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
