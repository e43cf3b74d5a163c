import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createArbor, isArborError, subscribeTelemetry, type ErrorMessage, type SessionState } from '../src/index.ts';
import { MemoryFileSystem } from '../src/testing.ts';
import { GatedFileSystem } from './helpers/gated-fs.ts';
import { fileStore } from './helpers/file-store.ts';
import { HangingProvider } from './helpers/hanging-provider.ts';

/** Waits, a tick at a time, until `ready()` holds; fails naming `what` after many ticks. */
async function until(what: string, ready: () => boolean): Promise<void> {
  for (let i = 0; i < 2000; i += 1) {
    if (ready()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  assert.fail(`gave up waiting for ${what}`);
}

function answerTo(state: SessionState, requestMessageId: string): string | undefined {
  return state.messages.find((m) => m.role === 'assistant' && m.metadata?.requestMessageId === requestMessageId)?.content;
}

function interruptedNoticeFor(state: SessionState, requestMessageId: string): boolean {
  return state.messages.some((m) => m.role === 'system' && m.metadata?.interrupted === true && (m.metadata.originalRequest as { messageId?: unknown } | undefined)?.messageId === requestMessageId);
}

test('after reopen(), an existing session answers its next message, and the answer the failure cut shows the interrupted notice', async () => {
  // given a session with one answered turn, and a second answer streaming when the disk fills up
  const fs = new MemoryFileSystem();
  const llm = new HangingProvider();
  const arbor = await createArbor({ dataDir: '/data', fs, llm });
  try {
    const chat = arbor.session('r');
    const first = await chat.sendMessage({ content: 'hello' });
    await chat.idle();
    const streaming = llm.nextHang();
    const cut = await chat.sendMessage({ content: 'hang on' });
    await streaming;
    fs.injectFault({ op: 'datasync', error: 'ENOSPC', persistent: true });
    await assert.rejects(arbor.session('other').changeConfig('k', 1), (err: unknown) => isArborError(err, 'ARBOR_IO_ERROR'));
    assert.equal(arbor.state, 'degraded');
    // when the disk works again and the runtime reopens the journal
    fs.clearFaults();
    await arbor.reopen();
    assert.equal(arbor.state, 'open');
    // then the existing session answers its next message
    const next = await chat.sendMessage({ content: 'after the reopen' });
    await chat.idle();
    const state = chat.state;
    assert.equal(answerTo(state, next.messageId), 'ok: after the reopen');
    // and the answer the failure cut ends with the interrupted notice; the one before it is intact
    assert.equal(interruptedNoticeFor(state, cut.messageId), true);
    assert.equal(answerTo(state, first.messageId), 'ok: hello');
  } finally {
    await arbor.close();
  }
});

test('recoveryTimeoutMs: a load that takes too long is abandoned with ARBOR_RECOVERY_TIMEOUT, nothing of it stays, and the next access loads the session again', async () => {
  // given a session that was passivated (snapshotted, dropped from memory)
  const fs = new GatedFileSystem(new MemoryFileSystem());
  const arbor = await createArbor({ dataDir: '/data', fs, llm: new HangingProvider(), recoveryTimeoutMs: 2000 });
  const errors: ErrorMessage[] = [];
  const unsubscribe = subscribeTelemetry({ error: (m) => errors.push(m) });
  try {
    const chat = arbor.session('slow');
    await chat.sendMessage({ content: 'remember me' });
    await chat.idle();
    assert.equal(await arbor.passivate('slow'), true);
    // when loading it back hangs on its snapshot
    fs.holdReads('snapshots');
    const refused = await chat.sendMessage({ content: 'are you there' }).then(
      () => undefined,
      (err: unknown) => err,
    );
    // then the command fails with the coded timeout naming the session, and the session is marked failed to load
    assert.ok(isArborError(refused, 'ARBOR_RECOVERY_TIMEOUT'), `expected ARBOR_RECOVERY_TIMEOUT, got ${String(refused)}`);
    assert.equal(refused.details.sessionId, 'slow');
    assert.equal(arbor.health().sessions.failedToLoad, 1);
    assert.ok(errors.some((m) => m.code === 'ARBOR_RECOVERY_TIMEOUT' && m.sessionId === 'slow'));
    // and when the abandoned read completes after all, its result is dropped
    fs.releaseReads();
    await new Promise((r) => setImmediate(r));
    assert.equal(arbor.health().hot.sessions, 0);
    // and the next access loads the session again, with its history
    const next = await chat.sendMessage({ content: 'are you there' });
    await chat.idle();
    assert.equal(arbor.health().sessions.failedToLoad, 0);
    assert.deepEqual(chat.state.messages.filter((m) => m.role === 'user').map((m) => m.content), ['remember me', 'are you there']);
    assert.equal(answerTo(chat.state, next.messageId), 'ok: are you there');
  } finally {
    unsubscribe();
    await arbor.close();
  }
});

test('sessionIdleTimeoutMs: a session idle past the timeout is snapshotted and leaves memory; the next command loads it back with its history', async () => {
  // given a session that answered once, with the idle timeout shorter than one background tick
  const fs = new MemoryFileSystem();
  const arbor = await createArbor({ dataDir: '/data', fs, llm: new HangingProvider(), sessionIdleTimeoutMs: 1, snapshotIntervalMs: 1000 });
  try {
    const chat = arbor.session('sleepy');
    await chat.sendMessage({ content: 'good night' });
    await chat.idle();
    const seq = chat.state.seq;
    // when the background tick finds it idle
    await until('the idle session to leave memory', () => arbor.health().hot.sessions === 0);
    // then it was snapshotted at its last event first
    assert.equal(fileStore(arbor).snapshots.seqs('sleepy').at(-1), seq);
    // and the next command loads it back with its history
    const next = await chat.sendMessage({ content: 'good morning' });
    await chat.idle();
    assert.deepEqual(chat.state.messages.filter((m) => m.role === 'user').map((m) => m.content), ['good night', 'good morning']);
    assert.equal(answerTo(chat.state, next.messageId), 'ok: good morning');
  } finally {
    await arbor.close();
  }
});

test('a background failure is not swallowed: a checkpoint that cannot be written reaches the telemetry error channel with its code', async () => {
  // given a runtime whose table checkpoint cannot be renamed into place
  const fs = new MemoryFileSystem();
  fs.injectFault({ op: 'rename', error: 'EIO', persistent: true, pathIncludes: 'checkpoint' });
  const errors: ErrorMessage[] = [];
  const unsubscribe = subscribeTelemetry({ error: (m) => errors.push(m) });
  const arbor = await createArbor({ dataDir: '/data', fs, llm: new HangingProvider(), checkpointIntervalMs: 1, snapshotIntervalMs: 1000 });
  try {
    await arbor.session('c').sendMessage({ content: 'something changed' });
    await arbor.session('c').idle();
    // when the background tick tries to write the checkpoint
    await until('the checkpoint failure to be published', () => errors.some((m) => m.source === 'checkpoint'));
    // then it was published with a code
    const failure = errors.find((m) => m.source === 'checkpoint')!;
    assert.equal(typeof failure.code, 'string');
    assert.ok(failure.code.length > 0);
    assert.equal(arbor.health().checkpoint, undefined);
  } finally {
    unsubscribe();
    await arbor.close();
  }
});


test('a background recovery pass that fails is reported on the telemetry error channel, and the runtime says it is degraded', async () => {
  // given a data directory with sessions to recover after a restart
  const fs = new MemoryFileSystem();
  const first = await createArbor({ dataDir: '/data', fs, llm: new HangingProvider() });
  for (const sid of ['a', 'b', 'c']) {
    await first.session(sid).sendMessage({ content: `hello ${sid}` });
    await first.session(sid).idle();
  }
  await first.close();
  const errors: ErrorMessage[] = [];
  const unsubscribe = subscribeTelemetry({ error: (m) => errors.push(m) });
  // when the journal's segments stop being readable once the runtime is open (the pass reads them after its first await)
  const arbor = await createArbor({ dataDir: '/data', fs, llm: new HangingProvider() });
  fs.injectFault({ op: ['readFile', 'read'], error: 'EIO', persistent: true, pathIncludes: '.wal' });
  try {
    await assert.rejects(arbor.whenRecovered());
    await new Promise((r) => setImmediate(r));
    // then the failure was published with a code, and the runtime is degraded
    assert.ok(errors.some((m) => m.source === 'recovery' && m.code.length > 0), JSON.stringify(errors));
    assert.equal(arbor.state, 'degraded');
    assert.equal(arbor.health().state, 'degraded');
  } finally {
    unsubscribe();
    fs.clearFaults();
    await arbor.close();
  }
});

test('close() during a reopen: the reopen finishing does not turn a closing runtime back to open', async () => {
  // given a failed journal, and a disk that works again
  const fs = new MemoryFileSystem();
  const arbor = await createArbor({ dataDir: '/data', fs });
  const chat = arbor.session('c');
  await chat.sendMessage({ content: 'hello' });
  await chat.idle();
  fs.injectFault({ op: 'datasync', error: 'ENOSPC', persistent: true });
  await assert.rejects(chat.changeConfig('k', 1), (err: unknown) => isArborError(err, 'ARBOR_IO_ERROR'));
  fs.clearFaults();
  // when close() begins while the reopen runs
  const reopened = arbor.reopen();
  const closed = arbor.close();
  await reopened;
  // then the runtime reads closing (or closed) from the moment close() began, never open again
  assert.ok(arbor.closing);
  assert.notEqual(arbor.state, 'open');
  assert.ok(arbor.state === 'closing' || arbor.state === 'closed', `state is ${arbor.state}`);
  await closed;
  assert.equal(arbor.state, 'closed');
});
