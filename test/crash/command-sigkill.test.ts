/**
 * SIGKILL of a real child process while a command handler runs (intent
 * before effect for `executeCommand`): `command_started` was durable before
 * the handler was called, so after the restart the command shows outcome
 * `unknown`, and neither recovery nor a retry with the same commandId runs the
 * handler again: its own invocation counter (a file outside Arbor) stays 1.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createArbor, ErrorCodes } from '../../src/index.ts';
import { rejectsWith } from '../helpers/assertions.ts';
import { tempDir } from '../helpers/tmp.ts';

const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CHILD = fileURLToPath(new URL('./command-child.ts', import.meta.url));

/** Starts the child and resolves once it printed `running` (the handler is running); then SIGKILLs it. */
async function killWhileHandlerRuns(args: string[]): Promise<{ signal: NodeJS.Signals | null; lines: string[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const closed = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, signal) => resolve(signal)));
  await new Promise<void>((resolve, reject) => {
    let partial = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      const parts = (partial + text).split('\n');
      partial = parts.pop()!;
      lines.push(...parts.filter((l) => l.length > 0));
      if (lines.some((l) => l.startsWith('running '))) resolve();
    });
    void closed.then(() => reject(new Error(`the child exited before its handler ran: ${stderr || lines.join(' | ')}`)));
  });
  child.kill('SIGKILL');
  return { signal: await closed, lines };
}

const invocations = (log: string): unknown[] => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').filter((l) => l.length > 0).map((l) => JSON.parse(l)) : []);

test('SIGKILL while a command handler runs: after restart the command is outcome unknown, and the handler is not run again by recovery or by a retry with the same commandId', { timeout: 60_000 }, async () => {
  const { dir, cleanup } = tempDir('arbor-command-kill-');
  const dataDir = join(dir, 'data');
  const log = join(dir, 'invocations.log');
  try {
    // given: a child whose handler ran its side effect and hangs, SIGKILLed there
    const died = await killWhileHandlerRuns(['--data-dir', dataDir, '--session', 'pay', '--command-id', 'order-17', '--log', log]);
    assert.equal(died.signal, 'SIGKILL');
    assert.deepEqual(invocations(log).length, 1);

    // when: Arbor opens the directory again, with the same handler counting its calls
    let calls = 0;
    const arbor = await createArbor({ dataDir, commands: { charge: () => ((calls += 1), 'charged') } });
    try {
      const session = arbor.session('pay');
      const state = await session.load();

      // then: the intent was durable, its outcome is unknown, nothing is left in flight
      const events = await session.events();
      assert.deepEqual(events.map((e) => [e.type, (e.data as { outcome?: string }).outcome]), [['command_started', undefined], ['command_finished', 'unknown']]);
      assert.deepEqual(events[0]!.data, { commandId: 'order-17', command: 'charge', args: [{ cents: 500 }] });
      const cmd = state.commands.at(-1)!;
      assert.deepEqual([cmd.commandId, cmd.command, cmd.outcome, cmd.startedSeq], ['order-17', 'charge', 'unknown', 1]);
      assert.deepEqual(cmd.args, [{ cents: 500 }]);
      assert.match(cmd.error ?? '', /unknown/);
      assert.deepEqual(state.commandsInFlight, {});

      // and a retry under the same commandId is answered from the journal: the handler does not run
      const err = await rejectsWith(session.executeCommand('charge', [{ cents: 500 }], { commandId: 'order-17' }), ErrorCodes.COMMAND_OUTCOME_UNKNOWN, { commandId: 'order-17', field: 'commandId' });
      assert.equal(err.details.seq, 2);
      assert.equal(calls, 0);
      // a deliberate re-run is a new command id; it runs once
      assert.equal((await session.executeCommand('charge', [{ cents: 500 }], { commandId: 'order-17-again' })).result, 'charged');
      assert.equal(calls, 1);
    } finally {
      await arbor.close();
    }
    // after another restart nothing more is repaired or re-run
    const again = await createArbor({ dataDir, commands: { charge: () => assert.fail('the handler ran again') } });
    try {
      const state = await again.session('pay').load();
      assert.deepEqual(state.commands.map((c) => [c.commandId, c.outcome]), [['order-17', 'unknown'], ['order-17-again', 'ok']]);
      await rejectsWith(again.session('pay').executeCommand('charge', [{ cents: 500 }], { commandId: 'order-17' }), ErrorCodes.COMMAND_OUTCOME_UNKNOWN);
    } finally {
      await again.close();
    }
    assert.equal(invocations(log).length, 1, "the handler's own counter");
  } finally {
    cleanup();
  }
});
