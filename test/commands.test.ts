/**
 * executeCommand, intent first: command_started is durable before the
 * handler runs, command_finished after; `commandId` is an idempotency key (a
 * retry is answered from the journal, the handler does not run again).
 * The SIGKILL case is in test/crash/command-sigkill.test.ts.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { ArborError, createArbor, ErrorCodes, MockProvider, type Arbor, type ArborOptions } from '../src/index.ts';
import { rejectsWith } from './helpers/assertions.ts';
import { tempDir } from './helpers/tmp.ts';

function fixture(t: TestContext): { open(options?: ArborOptions): Promise<Arbor> } {
  const { dir, cleanup } = tempDir('arbor-commands-');
  const opened: Arbor[] = [];
  t.after(async () => {
    for (const a of opened) await a.close().catch(() => undefined);
    cleanup();
  });
  return {
    async open(options = {}) {
      const a = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }), ...options });
      opened.push(a);
      return a;
    },
  };
}

test('the intent is durable before the handler runs: the handler sees the state before it, and the journal holds command_started while it runs', async (t) => {
  const fx = fixture(t);
  let journaledWhileRunning: string[] = [];
  let arbor!: Arbor;
  arbor = await fx.open({
    commands: {
      look: async ({ sessionId }) => {
        journaledWhileRunning = (await arbor.session(sessionId).events()).map((e) => e.type);
        return 'seen';
      },
    },
  });
  const out = await arbor.session('s').executeCommand('look', [1]);
  assert.deepEqual(journaledWhileRunning, ['command_started']);
  assert.deepEqual([out.seq, out.result, out.duplicate], [2, 'seen', false]);
});

test('a retry with the same commandId returns the recorded result and does not run the handler again, also after a restart', async (t) => {
  const fx = fixture(t);
  let calls = 0;
  const commands = { charge: ({ args }: { args: readonly unknown[] }) => ({ charged: args[0], call: (calls += 1) }) };
  const arbor = await fx.open({ commands });
  const s = arbor.session('pay');
  const first = await s.executeCommand('charge', [500], { commandId: 'order-1' });
  const again = await s.executeCommand('charge', [500], { commandId: 'order-1' });
  assert.deepEqual(first.result, { charged: 500, call: 1 });
  assert.deepEqual([again.commandId, again.seq, again.result, again.duplicate], ['order-1', first.seq, { charged: 500, call: 1 }, true]);
  assert.equal(calls, 1);
  assert.equal(s.state.seq, 2, 'a retry journals nothing');
  // the same key for another command or other arguments is refused
  await rejectsWith(s.executeCommand('charge', [900], { commandId: 'order-1' }), ErrorCodes.IDEMPOTENCY_MISMATCH, { field: 'commandId', commandId: 'order-1' });
  await arbor.close();
  const reopened = await fx.open({ commands });
  const later = await reopened.session('pay').executeCommand('charge', [500], { commandId: 'order-1' });
  assert.deepEqual([later.seq, later.result, later.duplicate], [first.seq, { charged: 500, call: 1 }, true]);
  assert.equal(calls, 1);
});

test('a handler that throws: command_finished records the failure (with its ArborError code); a retry with its commandId gets the same failure without running it', async (t) => {
  const fx = fixture(t);
  let calls = 0;
  const arbor = await fx.open({
    commands: {
      refuse: () => {
        calls += 1;
        throw new ArborError(ErrorCodes.INVALID_INPUT, 'amount too large', { field: 'amount' });
      },
      boom: () => {
        calls += 1;
        throw new Error('boom');
      },
    },
  });
  const s = arbor.session('fails');
  await rejectsWith(s.executeCommand('refuse', [], { commandId: 'r1' }), ErrorCodes.INVALID_INPUT, { field: 'amount' });
  await rejectsWith(s.executeCommand('boom', [], { commandId: 'b1' }), ErrorCodes.HANDLER_CRASHED);
  assert.deepEqual(s.state.commands.map((c) => [c.commandId, c.outcome, c.errorCode, c.error]), [['r1', 'error', 'ARBOR_INVALID_INPUT', 'amount too large'], ['b1', 'error', undefined, 'boom']]);
  assert.equal(calls, 2);
  await rejectsWith(s.executeCommand('refuse', [], { commandId: 'r1' }), ErrorCodes.INVALID_INPUT, { duplicate: true, commandId: 'r1' });
  await rejectsWith(s.executeCommand('boom', [], { commandId: 'b1' }), ErrorCodes.HANDLER_CRASHED, { duplicate: true, commandId: 'b1' });
  assert.equal(calls, 2);
  assert.equal(arbor.health().sessions.crashes, 1, 'a retry answered from the journal is not a crash');
});

test('a result that is not JSON: the handler ran, so the command ends as an error naming the field; an argument that is not JSON is refused before the handler runs', async (t) => {
  const fx = fixture(t);
  let calls = 0;
  const arbor = await fx.open({ commands: { dated: () => ((calls += 1), { at: new Date(0) }) } });
  const s = arbor.session('json');
  await rejectsWith(s.executeCommand('dated'), ErrorCodes.INVALID_INPUT, { field: 'result' });
  assert.deepEqual(s.state.commands.map((c) => c.outcome), ['error']);
  assert.equal(calls, 1);
  await rejectsWith(s.executeCommand('dated', [new Date(0)]), ErrorCodes.INVALID_INPUT, { field: 'args.0' });
  await rejectsWith(s.executeCommand('dated', [], { commandId: '__proto__' }), ErrorCodes.INVALID_INPUT, { field: 'commandId' });
  assert.equal(calls, 1);
  assert.deepEqual(s.state.commandsInFlight, {});
});
