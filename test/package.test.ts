/**
 * The package as a user installs it: every `exports` entry resolves by the
 * package's own name (a self-reference, which Node allows once `exports` is
 * set) to built files with their types, and the `arbor` command reports the
 * package's version, from source and through `bin/arbor.mjs` → `dist/`.
 *
 * It reads `dist/`, which `npm ci` (`prepare`) and `npm test` build.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { repoRoot, runCli, runNode } from './ops/run-cli.ts';

interface Manifest {
  name: string;
  version: string;
  bin: Record<string, string>;
  exports: Record<string, { types: string; default: string }>;
}
const manifest = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as Manifest;

/** A dynamic import by a computed name, so the typecheck does not need `dist/` to exist. */
const load = (specifier: string): Promise<Record<string, unknown>> => import(specifier);

const run = (args: string[]) => runNode(args);

test('the package is arbor-runtime with the entries ., ./testing, ./ops, ./server and ./langgraph, each with its types', () => {
  // given / when: the manifest
  // then
  assert.equal(manifest.name, 'arbor-runtime');
  assert.deepEqual(Object.keys(manifest.exports).sort(), ['.', './langgraph', './ops', './server', './testing']);
  for (const [entry, target] of Object.entries(manifest.exports)) {
    for (const file of [target.types, target.default]) assert.ok(existsSync(join(repoRoot, file)), `${entry}: ${file} is missing; run \`npm run build\``);
  }
});

test('every entry imports by the package name and exports what its users reach for', async () => {
  // given: one name each entry must have
  const expected: Record<string, string> = {
    '.': 'createArbor',
    './testing': 'MemoryFileSystem',
    './ops': 'verifyDataDir',
    './server': 'startServer',
    './langgraph': 'ArborSaver',
  };
  for (const entry of Object.keys(manifest.exports)) {
    // when
    const mod = await load(entry === '.' ? manifest.name : `${manifest.name}/${entry.slice(2)}`);
    // then
    assert.equal(typeof mod[expected[entry]!], 'function', `${entry} exports ${expected[entry]}`);
  }
});

test('the main entry carries no test doubles: they are in arbor-runtime/testing', async () => {
  // given / when
  const main = await load(manifest.name);
  const testing = await load(`${manifest.name}/testing`);
  // then
  for (const name of Object.keys(testing)) assert.equal(name in main, false, `${name} is exported by the main entry`);
});

test('arbor --version prints the package version, from source and through the installed bin', async () => {
  // given: the `arbor` bin of the manifest
  const bin = manifest.bin.arbor;
  assert.ok(bin !== undefined);
  // when
  const fromSource = await runCli(['--version']);
  const short = await runCli(['-V']);
  const installed = await run([join(repoRoot, bin), '--version']);
  // then
  for (const r of [fromSource, short, installed]) {
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), manifest.version);
  }
});
