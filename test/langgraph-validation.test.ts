/**
 * LangGraph's checkpointer conformance suite (@langchain/langgraph-checkpoint-validation)
 * against ArborSaver on the file store and on PostgreSQL. The suite is written for vitest's
 * globals, so it runs under vitest (test/langgraph/validation.vitest.ts) in a child process;
 * this file starts it and fails when any of its tests fail.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, pgSkip } from './helpers/postgres.ts';

announcePostgres('test/langgraph-validation.test.ts');

const require = createRequire(import.meta.url);
const vitestBin = join(dirname(require.resolve('vitest/package.json')), 'vitest.mjs');

function runSuite(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [vitestBin, 'run', '--config', 'test/langgraph/vitest.config.mjs'], {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (output += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

function check(result: { code: number | null; output: string }): void {
  const summary = result.output.split('\n').filter((l) => /Tests\s|Test Files|FAIL|✗|×|AssertionError|Error:/.test(l));
  assert.equal(result.code, 0, `the conformance suite failed:\n${result.output.slice(-6000)}`);
  const passed = /Tests\s+(\d+) passed/.exec(result.output);
  assert.ok(passed !== null && Number(passed[1]) > 500, `expected the whole suite to run, got: ${summary.join('\n')}`);
  assert.doesNotMatch(result.output, /\d+ failed/);
}

test('LangGraph conformance suite: ArborSaver on the file store', { timeout: 240_000 }, async () => {
  check(await runSuite({ ARBOR_LG_BACKEND: 'file' }));
});

test('LangGraph conformance suite: ArborSaver on PostgreSQL', { skip: pgSkip, timeout: 240_000 }, async () => {
  const schema = freshSchemaName('lgval');
  dropSchemaAtEnd(schema);
  check(await runSuite({ ARBOR_LG_BACKEND: 'postgres', ARBOR_LG_SCHEMA: schema }));
});
