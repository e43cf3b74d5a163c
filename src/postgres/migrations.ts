import { crc32 } from 'node:zlib';
import type { Pool } from 'pg';

/**
 * The PostgreSQL schema, as versioned migrations (docs/postgres.md explains
 * each table). A migration is applied once, in order, recorded in
 * `schema_migrations`; never edit one that has shipped — add the next.
 *
 * Portability: plain tables, a partial unique index and `timestamptz`; no
 * extensions, no triggers. The advisory lock that serialises migrations is
 * PostgreSQL's (Citus and YugabyteDB have it; CockroachDB does not, and there
 * migrations must be run from one process).
 */
export interface Migration {
  version: number;
  name: string;
  /** SQL with `$schema` standing for the quoted schema name. */
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'events, snapshots, leases',
    sql: `
      CREATE TABLE $schema.events (
        sid   text NOT NULL,
        seq   bigint NOT NULL,
        ts    double precision NOT NULL,
        type  text NOT NULL,
        v     integer NOT NULL,
        data  text NOT NULL,
        cid   text,
        PRIMARY KEY (sid, seq)
      );
      CREATE UNIQUE INDEX events_sid_cid ON $schema.events (sid, cid) WHERE cid IS NOT NULL;
      CREATE TABLE $schema.snapshots (
        sid   text NOT NULL,
        seq   bigint NOT NULL,
        ts    double precision NOT NULL,
        state_schema_version integer NOT NULL,
        bytes integer NOT NULL,
        body  bytea NOT NULL,
        PRIMARY KEY (sid, seq)
      );
      CREATE TABLE $schema.leases (
        sid           text PRIMARY KEY,
        owner         text NOT NULL,
        owner_address text,
        epoch         bigint NOT NULL,
        expires_at    timestamptz NOT NULL
      );
      CREATE INDEX leases_owner ON $schema.leases (owner);
    `,
  },
  {
    version: 2,
    name: 'encryption at rest: key_ring, data_keys',
    // key_ring: one row once a node opened the schema with a master key (which key: its id and a check
    // sealed with it). data_keys: each session's data key wrapped by the master key; deleting the row
    // is the crypto-shredding of a delete.
    sql: `
      CREATE TABLE $schema.key_ring (
        id            smallint PRIMARY KEY CHECK (id = 1),
        master_key_id text NOT NULL,
        key_check     bytea NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        rotated_at    timestamptz
      );
      CREATE TABLE $schema.data_keys (
        sid        text PRIMARY KEY,
        wrapped    bytea NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
      );
    `,
  },
];

/** The newest schema version this build knows. */
export const SCHEMA_VERSION = MIGRATIONS.at(-1)!.version;

/** Schema names are spliced into SQL, so they are held to lower-case identifiers. */
export const SCHEMA_NAME_PATTERN = /^[a-z_][a-z0-9_]{0,62}$/;

export function quoteSchema(schema: string): string {
  if (!SCHEMA_NAME_PATTERN.test(schema)) throw new RangeError(`schema ${JSON.stringify(schema)} must match ${SCHEMA_NAME_PATTERN}`);
  return `"${schema}"`;
}

/** The advisory-lock key of a schema's migrations: every process derives the same one. */
export function migrationLockKey(schema: string): number {
  // crc32 is unsigned 32-bit; the lock takes a bigint, any value works as long as all agree.
  return crc32(`arbor:migrations:${schema}`);
}

export interface MigrationResult {
  /** versions this call applied (empty when another process had done it) */
  applied: number[];
  version: number;
}

/**
 * Brings `schema` up to SCHEMA_VERSION in one transaction, under a
 * transaction-scoped advisory lock, so that several processes starting at once
 * apply each migration exactly once (the others wait on the lock, then find
 * nothing to do). Refuses a schema that a newer build has migrated further.
 */
export async function migrate(pool: Pool, schema: string): Promise<MigrationResult> {
  const q = quoteSchema(schema);
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    try {
      // Taken before anything else, CREATE SCHEMA included: concurrent `IF NOT EXISTS` creations race otherwise.
      await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [migrationLockKey(schema)]);
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${q}`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${q}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
      const { rows } = await client.query<{ version: number }>(`SELECT version FROM ${q}.schema_migrations ORDER BY version`);
      const have = new Set(rows.map((r) => Number(r.version)));
      const newest = Math.max(0, ...have);
      if (newest > SCHEMA_VERSION) {
        throw new Error(`schema ${schema} is at version ${newest}, newer than this build's ${SCHEMA_VERSION}; upgrade Arbor`);
      }
      const applied: number[] = [];
      for (const m of MIGRATIONS) {
        if (have.has(m.version)) continue;
        await client.query(m.sql.replaceAll('$schema', q));
        await client.query(`INSERT INTO ${q}.schema_migrations (version, name) VALUES ($1, $2)`, [m.version, m.name]);
        applied.push(m.version);
      }
      await client.query('COMMIT');
      return { applied, version: SCHEMA_VERSION };
    } catch (err) {
      // The migration's own error is the one to report; a ROLLBACK on a broken connection fails too, and the
      // server rolls the transaction back when the connection goes.
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  } finally {
    client.release();
  }
}
