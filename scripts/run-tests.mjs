#!/usr/bin/env node
// Runs every *.test.ts under src/ and test/ with node:test through tsx.
// Node 20's `--test` does not expand globs, so the file list is built here.
//
// The PostgreSQL tests need a server. Unless ARBOR_TEST_DATABASE_URL names one,
// the run goes through scripts/with-postgres.sh, which starts a throwaway server
// (installing the Debian package when it is missing and this is root with
// apt-get) and stops it afterwards. Where PostgreSQL can be neither found nor
// installed, the PostgreSQL tests are skipped with a loud warning
// (ARBOR_REQUIRE_POSTGRES=1 turns that into a failure).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const roots = ['src', 'test'];
const filter = process.argv.slice(2);
const files = roots
  .flatMap((root) => readdirSync(root, { recursive: true }).map((f) => join(root, String(f))))
  .filter((f) => f.endsWith('.test.ts'))
  .filter((f) => filter.length === 0 || filter.some((needle) => f.includes(needle)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filter.join(' ')}`);
  process.exit(2);
}

function onPath(cmd) {
  return (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(join(dir, cmd)));
}

/** Whether scripts/with-postgres.sh can provide a server here. */
function postgresAvailable() {
  if (onPath('initdb') && onPath('pg_ctl')) return true;
  const lib = '/usr/lib/postgresql';
  if (existsSync(lib) && readdirSync(lib).some((v) => existsSync(join(lib, v, 'bin', 'initdb')))) return true;
  return process.getuid?.() === 0 && onPath('apt-get');
}

const nodeTest = [process.execPath, '--import', 'tsx', '--test', '--test-concurrency=2', '--test-reporter=spec', ...files];
const needsServer = process.env.ARBOR_TEST_DATABASE_URL === undefined && process.env.ARBOR_NO_POSTGRES !== '1' && postgresAvailable();
const [cmd, ...args] = needsServer ? ['scripts/with-postgres.sh', ...nodeTest] : nodeTest;
const result = spawnSync(cmd, args, { stdio: 'inherit' });
process.exit(result.status ?? 1);
