/**
 * PostgreSQL for tests: `ARBOR_TEST_DATABASE_URL` names a database (scripts/with-postgres.sh
 * starts a throwaway one and sets it; `.ci/run` always does). Each test gets its own schema,
 * dropped afterwards, so test files run concurrently against one server.
 *
 * Without the variable the PostgreSQL tests are skipped, loudly; with `ARBOR_REQUIRE_POSTGRES=1`
 * (set by CI) its absence is a failing test instead.
 */
import { test } from 'node:test';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const PG_URL = process.env.ARBOR_TEST_DATABASE_URL || undefined;
const required = process.env.ARBOR_REQUIRE_POSTGRES === '1';

/** `false` when PostgreSQL is available, else the reason the PostgreSQL tests are skipped. */
export const pgSkip: string | false = PG_URL === undefined ? 'ARBOR_TEST_DATABASE_URL is not set (run under scripts/with-postgres.sh)' : false;

let warned = false;
/** Call once per test file that needs PostgreSQL: warns loudly, or fails when CI requires it. */
export function announcePostgres(file: string): void {
  if (PG_URL !== undefined || warned) return;
  warned = true;
  if (required) {
    test(`${file}: PostgreSQL is required (ARBOR_REQUIRE_POSTGRES=1) but ARBOR_TEST_DATABASE_URL is not set`, () => {
      throw new Error('ARBOR_TEST_DATABASE_URL is not set; run the tests under scripts/with-postgres.sh');
    });
    return;
  }
  const bar = '!'.repeat(78);
  process.stderr.write(`\n${bar}\n!! ${file}: POSTGRESQL TESTS SKIPPED: ARBOR_TEST_DATABASE_URL is not set.\n!! Run them with: scripts/with-postgres.sh npm test\n${bar}\n\n`);
}

/** A unique schema name for one test. */
export function freshSchemaName(prefix = 't'): string {
  return `arbor_${prefix}_${process.pid}_${randomBytes(4).toString('hex')}`;
}

/** A pool on the test database (end it after). */
export function testPool(max = 4): pg.Pool {
  if (PG_URL === undefined) throw new Error('ARBOR_TEST_DATABASE_URL is not set');
  const pool = new pg.Pool({ connectionString: PG_URL, max });
  pool.on('error', () => undefined);
  return pool;
}

/** Drops a test's schema and everything in it. */
export async function dropSchema(schema: string): Promise<void> {
  const pool = testPool(1);
  try {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  } finally {
    await pool.end();
  }
}
