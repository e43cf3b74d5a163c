/**
 * PostgreSQL for tests: `ARBOR_TEST_DATABASE_URL` names a database (scripts/with-postgres.sh
 * starts a throwaway one and sets it; `.ci/run` always does). Each test gets its own schema,
 * dropped afterwards, so test files run concurrently against one server.
 *
 * Without the variable the PostgreSQL tests are skipped, loudly; with `ARBOR_REQUIRE_POSTGRES=1`
 * (set by CI) its absence is a failing test instead.
 */
import { after, test } from 'node:test';
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

/** Lock conflicts a DROP SCHEMA can lose against a backend still finishing its last statement. */
const RETRYABLE = new Set(['40P01', '55P03']); // deadlock_detected, lock_not_available

/**
 * Drops a test's schema and everything in it, now. Call it only after every node on the schema is
 * closed; a DROP racing a live node is refused with a deadlock, so those are retried a few times.
 */
export async function dropSchema(schema: string): Promise<void> {
  const pool = testPool(1);
  try {
    for (let attempt = 1; ; attempt += 1) {
      try {
        await pool.query(`SET lock_timeout = '5s'; DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
        return;
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (attempt >= 5 || code === undefined || !RETRYABLE.has(code)) throw err;
        await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
      }
    }
  } finally {
    await pool.end();
  }
}

const dropAtEnd = new Set<string>();
// Registered when this module loads, at the top level of the test file: the hook belongs to the
// file's root test and runs once all its tests are done.
after(async () => {
  for (const s of dropAtEnd) await dropSchema(s);
});

/**
 * Drops `schema` when the test file is done: after every test and every test's own `t.after`
 * hooks, which run in the order they were registered and stop at the first that throws. A
 * `t.after(() => dropSchema(schema))` registered before a node's close would drop the schema
 * under the live node (a deadlock in CI), and its failure would skip the close, leaving the
 * file's process alive.
 */
export function dropSchemaAtEnd(schema: string): void {
  dropAtEnd.add(schema);
}
