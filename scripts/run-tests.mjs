#!/usr/bin/env node
// Runs every *.test.ts under src/ and test/ with node:test through tsx.
// Node 20's `--test` does not expand globs, so the file list is built here.
//
//   node scripts/run-tests.mjs [--node-24] [substring...]
//
// A substring keeps only the test files whose path contains it.
//
// --node-24 (what `npm test` passes) runs the suite a second time on Node 24
// LTS when the running node is another major: the binary comes from the
// registry package `node@24` through `npm exec` (which installs its platform
// binary package, also from the registry, into npm's cache; nothing else is
// downloaded). It is resolved before the first run, so a registry that cannot
// be reached fails the run at once rather than after the first suite.
//
// The PostgreSQL tests need a server. Unless ARBOR_TEST_DATABASE_URL names one,
// the run goes through scripts/with-postgres.sh, which starts a throwaway server
// (installing the Debian package when it is missing and this is root with
// apt-get) and stops it afterwards; both Node versions use that one server.
// Where PostgreSQL can be neither found nor installed, the PostgreSQL tests are
// skipped with a loud warning (ARBOR_REQUIRE_POSTGRES=1 turns that into a failure).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const SECOND_MAJOR = 24;
const args = process.argv.slice(2);
const alsoNode24 = args.includes(`--node-${SECOND_MAJOR}`);
const filter = args.filter((a) => a !== `--node-${SECOND_MAJOR}`);
const roots = ['src', 'test'];
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

const needsServer = process.env.ARBOR_TEST_DATABASE_URL === undefined && process.env.ARBOR_NO_POSTGRES !== '1' && postgresAvailable();
if (needsServer) {
  // Start the server once and run this script again inside it: it then sees
  // ARBOR_TEST_DATABASE_URL and runs every Node version against that server.
  const result = spawnSync('scripts/with-postgres.sh', [process.execPath, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(result.status ?? 1);
}

/** The path of a Node 24 binary from the registry package `node@24` (npm caches it after the first run). */
function node24Binary() {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  // Run from inside npm (npm test, npm exec -c), npm_config_* variables of the outer
  // command reach this one: an inherited `call` makes `npm exec -- node` a usage error.
  const env = { ...process.env };
  delete env.npm_config_call;
  delete env.npm_config_package;
  const r = spawnSync(npm, ['exec', '--yes', `--package=node@${SECOND_MAJOR}`, '--', 'node', '-p', 'process.execPath'], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const path = r.stdout?.trim() ?? '';
  if (r.status !== 0 || path === '' || !existsSync(path)) {
    console.error(`run-tests: could not get Node ${SECOND_MAJOR} from the registry package node@${SECOND_MAJOR} (npm exec exited ${r.status}${r.error ? `: ${r.error.message}` : ''})`);
    process.exit(1);
  }
  return path;
}

const runs = [{ label: process.version, node: process.execPath }];
if (alsoNode24 && Number(process.versions.node.split('.')[0]) !== SECOND_MAJOR) {
  const node = node24Binary();
  const version = spawnSync(node, ['--version'], { encoding: 'utf8' }).stdout.trim();
  runs.push({ label: version, node });
}

let status = 0;
for (const run of runs) {
  if (runs.length > 1) console.log(`\n# run-tests: ${files.length} test files on Node ${run.label} (${run.node})\n`);
  // --test-timeout bounds a file (node:test applies it to each file's process too) and a test
  // that sets no timeout of its own: a file left alive by something it opened (one CI run spent an
  // hour on a file whose after hook had failed before its node was closed) fails after 10 min
  // instead of holding the run. The longest file (power-loss) takes ~4 min alone on CI.
  // Not --test-force-exit: on Node 24 it ends a file before all its tests ran, silently
  // (src/core/state.test.ts: 43 of 58 reported, and no failure).
  const result = spawnSync(run.node, ['--import', 'tsx', '--test', '--test-concurrency=2', '--test-timeout=600000', '--test-reporter=spec', ...files], { stdio: 'inherit' });
  const code = result.status ?? 1;
  if (runs.length > 1) console.log(`\n# run-tests: Node ${run.label}: ${code === 0 ? 'passed' : `failed (exit ${code})`}\n`);
  // Run every version even after a failure: which versions fail is part of the answer.
  if (status === 0) status = code;
}
process.exit(status);
