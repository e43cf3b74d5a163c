/**
 * End-to-end tests of the session runtime through the public API only
 * (`createArbor` and what it returns): handler crashes and supervision, node
 * restarts, client retries, streaming and its interruption (by close() and by
 * a real SIGKILL of a child process), validation, mailboxes, passivation and
 * the AI SDK provider against a local OpenAI-compatible server.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AiSdkProvider, createArbor, INTERRUPTED_NOTICE_CONTENT, isArborError, MockProvider, type Arbor, type ArborError, type ArborOptions, type Chunk, type ErrorCode, type JournalRecord, type Message, type Session, type SessionUpdate } from '../src/index.ts';
import { startOpenAiCompatibleServer } from './helpers/openai-compatible-server.ts';
import { tempDir } from './helpers/tmp.ts';
import { rejectsWith } from './helpers/assertions.ts';
import { fileStore } from './helpers/file-store.ts';

// ---- helpers -------------------------------------------------------------------------

const fastMock = (): MockProvider => new MockProvider({ chunks: 5, chunkDelayMs: 2 });
const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A unique data directory for one test; every Arbor opened on it is closed, then the directory removed. */
function fixture(t: TestContext): { dir: string; open(options?: ArborOptions): Promise<Arbor> } {
  const { dir, cleanup } = tempDir('arbor-runtime-');
  const opened: Arbor[] = [];
  t.after(async () => {
    for (const arbor of opened) await arbor.close().catch(() => undefined);
    cleanup();
  });
  return {
    dir,
    async open(options: ArborOptions = {}): Promise<Arbor> {
      const arbor = await createArbor({ dataDir: dir, llm: fastMock(), ...options });
      opened.push(arbor);
      return arbor;
    },
  };
}


/** `fn` must throw an ArborError of `code` synchronously. */
function throwsWith(fn: () => unknown, code: ErrorCode, label: string): void {
  assert.throws(fn, (err: unknown) => isArborError(err) && err.code === code, `${label}: expected ${code}`);
}

type DataOf = Record<string, unknown> & { messageId?: string; requestMessageId?: string; content?: string; retryOf?: string; reason?: string };
const dataOf = (event: JournalRecord): DataOf => event.data as DataOf;

/** Everything a session publishes, from the moment of the call. */
function record(session: Session): {
  updates: SessionUpdate[];
  events(): JournalRecord[];
  chunks(messageId: string): Chunk[];
  waitFor(predicate: (u: SessionUpdate) => boolean, timeoutMs?: number): Promise<SessionUpdate>;
  stop(): void;
} {
  const updates: SessionUpdate[] = [];
  const waiters = new Set<{ predicate: (u: SessionUpdate) => boolean; resolve: (u: SessionUpdate) => void }>();
  const stop = session.subscribe((u) => {
    updates.push(u);
    for (const w of waiters) {
      if (w.predicate(u)) {
        waiters.delete(w);
        w.resolve(u);
      }
    }
  });
  return {
    updates,
    events: () => updates.flatMap((u) => (u.kind === 'event' ? [u.event] : [])),
    chunks: (messageId) => updates.flatMap((u) => (u.kind === 'chunk' && u.chunk.messageId === messageId ? [u.chunk] : [])),
    waitFor(predicate, timeoutMs = 5_000) {
      const seen = updates.find(predicate);
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const w = { predicate, resolve: (u: SessionUpdate) => (clearTimeout(timer), resolve(u)) };
        const timer = setTimeout(() => {
          waiters.delete(w);
          reject(new Error(`no matching update within ${timeoutMs} ms (saw ${updates.length})`));
        }, timeoutMs);
        waiters.add(w);
      });
    },
    stop,
  };
}

const isChunk =
  (minIndex = 0) =>
  (u: SessionUpdate): boolean =>
    u.kind === 'chunk' && u.chunk.index >= minIndex;

const TERMINAL = new Set(['assistant_response_completed', 'stream_interrupted']);

/** Sends a message and waits until its answer has ended. */
async function converse(session: Session, content: string): Promise<{ messageId: string; seq: number }> {
  const r = await session.sendMessage({ content });
  await session.idle();
  return r;
}

/** role + content of every message, for compact comparisons. */
const transcript = (messages: readonly Message[]): string[] => messages.map((m) => `${m.role}: ${m.content}`);

// ---- 1, 2: handler crashes and supervision ---------------------------------------------------

describe('a command handler that throws (the seed\'s "session survives process crash")', () => {
  const commands = {
    boom: (): never => {
      throw new Error('boom');
    },
    asyncBoom: async (): Promise<never> => {
      await delay(1);
      throw new Error('async boom');
    },
    mutate: ({ state }: { state: { messages: readonly unknown[] } }): void => {
      // A handler that tries to change the committed state in place: it is frozen.
      (state.messages as unknown[]).push('injected');
    },
    echo: ({ args, state }: { args: readonly unknown[]; state: { seq: number } }) => ({ got: args, sawSeq: state.seq }),
  };

  test('rejects ARBOR_HANDLER_CRASHED, leaves the state exactly as it was, and the session goes on', async (t) => {
    // given: two sessions with a conversation and a config each
    const fx = fixture(t);
    const arbor = await fx.open({ commands });
    const a = arbor.session('crash-a');
    const b = arbor.session('crash-b');
    await converse(a, 'hello a');
    await a.changeConfig('model', 'big');
    await converse(b, 'hello b');
    const stateA = a.state;
    const snapshotA = structuredClone(stateA);
    const eventsA = await a.events();
    const stateB = b.state;

    // when: handlers throw, synchronously, asynchronously, or by mutating the state they were given
    await rejectsWith(a.executeCommand('boom'), 'ARBOR_HANDLER_CRASHED', { sessionId: 'crash-a', stopped: false });
    await rejectsWith(a.executeCommand('asyncBoom', [1]), 'ARBOR_HANDLER_CRASHED', { sessionId: 'crash-a', stopped: false });
    await rejectsWith(a.executeCommand('mutate'), 'ARBOR_HANDLER_CRASHED', { sessionId: 'crash-a', stopped: false });

    // then: the committed state is untouched but for the commands' own records (intent first: each
    // command_started was durable before its handler ran, and command_finished says it failed)
    const { commands: failed, seq: _seq, updatedAt: _u, commandsInFlight, ...rest } = a.state;
    const { commands: _c, seq: _s2, updatedAt: _u2, ...restBefore } = snapshotA;
    assert.deepEqual(rest, restBefore);
    assert.deepEqual(commandsInFlight, {});
    assert.deepEqual(failed.map((c) => [c.command, c.outcome, c.errorCode]), [['boom', 'error', undefined], ['asyncBoom', 'error', undefined], ['mutate', 'error', undefined]]);
    assert.equal(failed[0]!.error, 'boom');
    const events = await a.events();
    assert.deepEqual(events.slice(0, eventsA.length), eventsA);
    assert.deepEqual(events.slice(eventsA.length).map((e) => e.type), ['command_started', 'command_finished', 'command_started', 'command_finished', 'command_started', 'command_finished']);
    assert.equal(arbor.health().sessions.crashes, 3);
    assert.deepEqual(arbor.health().sessions.stopped, []);
    // other sessions untouched and still working
    assert.equal(b.state, stateB);
    await converse(b, 'still there?');
    assert.deepEqual(transcript(b.state.messages).slice(-2), ['user: still there?', 'assistant: Echo: still there?']);
    // the next command on the crashed session succeeds, on top of the old state
    const { seq } = await a.changeConfig('model', 'small');
    assert.equal(seq, stateA.seq + 7);
    assert.deepEqual(a.state.config, { model: 'small' });
    await converse(a, 'after the crash');
    assert.deepEqual(transcript(a.state.messages), ['user: hello a', 'assistant: Echo: hello a', 'user: after the crash', 'assistant: Echo: after the crash']);
  });

  test('a crash while an answer streams does not disturb the answer', async (t) => {
    // given: an answer streaming
    const fx = fixture(t);
    const arbor = await fx.open({ commands, llm: new MockProvider({ chunks: 10, chunkDelayMs: 5 }) });
    const s = arbor.session('crash-mid-stream');
    const rec = record(s);
    await s.sendMessage({ content: 'tell me' });
    await rec.waitFor(isChunk(0));

    // when: a handler crashes meanwhile
    await rejectsWith(s.executeCommand('boom'), 'ARBOR_HANDLER_CRASHED');

    // then: the answer completes all the same
    await s.idle();
    assert.deepEqual(transcript(s.state.messages), ['user: tell me', 'assistant: Echo: tell me']);
    assert.equal(rec.events().filter((e) => TERMINAL.has(e.type)).length, 1);
    assert.equal(s.state.stream.status, 'idle');
  });

  test('a handler returning a value: command_started is journaled before it runs, command_finished with the result after', async (t) => {
    // given
    const fx = fixture(t);
    const arbor = await fx.open({ commands });
    const s = arbor.session('cmd-result');
    await s.changeConfig('x', 1);

    // when
    const out = await s.executeCommand('echo', ['a', 2, { deep: [true, null] }]);

    // then: the result is returned, journaled and in the state
    const expected = { got: ['a', 2, { deep: [true, null] }], sawSeq: 1 };
    assert.deepEqual(out.result, expected);
    assert.equal(out.seq, 3);
    assert.equal(out.duplicate, false);
    const [started, finished] = (await s.events()).slice(-2);
    assert.equal(started!.type, 'command_started');
    assert.equal(started!.seq, 2);
    assert.deepEqual(started!.data, { commandId: out.commandId, command: 'echo', args: ['a', 2, { deep: [true, null] }] });
    assert.equal(finished!.type, 'command_finished');
    assert.equal(finished!.seq, 3);
    const { durationMs, ...finishedData } = finished!.data as { durationMs: number };
    assert.equal(typeof durationMs, 'number');
    assert.deepEqual(finishedData, { commandId: out.commandId, command: 'echo', outcome: 'ok', result: expected });
    const cmd = s.state.commands.at(-1)!;
    assert.equal(cmd.commandId, out.commandId);
    assert.deepEqual(cmd.result, expected);
    assert.deepEqual([cmd.outcome, cmd.startedSeq, cmd.seq], ['ok', 2, 3]);
    assert.deepEqual(cmd.args, ['a', 2, { deep: [true, null] }]);
    // and it survives a restart
    await arbor.close();
    const again = await fx.open({ commands });
    assert.deepEqual((await again.session('cmd-result').load()).commands.at(-1)?.result, expected);
    // an unknown command is a refusal, not a crash
    await rejectsWith(again.session('cmd-result').executeCommand('nope'), 'ARBOR_UNKNOWN_COMMAND');
    assert.equal(again.health().sessions.crashes, 0);
  });
});

describe('restart intensity', () => {
  test('the crash beyond maxRestarts within the window stops the session; other sessions are fine', async (t) => {
    // given: maxRestarts 2 in a 60 s window
    const fx = fixture(t);
    const arbor = await fx.open({
      maxRestarts: 2,
      restartWindowMs: 60_000,
      commands: {
        boom: () => {
          throw new Error('boom');
        },
        ok: () => 'ok',
      },
    });
    const s = arbor.session('fragile');
    const other = arbor.session('sturdy');
    await converse(s, 'before');
    const before = s.state;

    // when: it crashes three times
    await rejectsWith(s.executeCommand('boom'), 'ARBOR_HANDLER_CRASHED', { stopped: false });
    await rejectsWith(s.executeCommand('boom'), 'ARBOR_HANDLER_CRASHED', { stopped: false });
    await rejectsWith(s.executeCommand('boom'), 'ARBOR_HANDLER_CRASHED', { stopped: true, sessionId: 'fragile' });

    // then: every later command is refused, the state stays readable, the health check lists it
    const afterCrashes = s.state;
    assert.equal(afterCrashes.seq, before.seq + 6, 'each crashed command journaled its start and its failure');
    assert.deepEqual(afterCrashes.messages, before.messages);
    await rejectsWith(s.executeCommand('ok'), 'ARBOR_SESSION_STOPPED', { sessionId: 'fragile' });
    await rejectsWith(s.sendMessage({ content: 'anyone?' }), 'ARBOR_SESSION_STOPPED');
    await rejectsWith(s.changeConfig('k', 1), 'ARBOR_SESSION_STOPPED');
    await rejectsWith(s.retry(), 'ARBOR_SESSION_STOPPED');
    assert.equal(s.state, afterCrashes);
    assert.deepEqual(await s.events().then((e) => e.length), afterCrashes.seq);
    const health = arbor.health();
    assert.deepEqual(health.sessions.stopped, ['fragile']);
    assert.equal(health.sessions.crashes, 3);
    // other sessions are fine
    await converse(other, 'hi');
    assert.equal(await other.executeCommand('ok').then((r) => r.result), 'ok');
    assert.deepEqual(arbor.health().sessions.stopped, ['fragile']);
  });

  test('crashes spread over more than the window do not stop the session', async (t) => {
    // given: at most 1 restart within 40 ms
    const fx = fixture(t);
    const arbor = await fx.open({
      maxRestarts: 1,
      restartWindowMs: 40,
      commands: {
        boom: () => {
          throw new Error('boom');
        },
      },
    });
    const s = arbor.session('spaced');

    // when: it crashes three times, 80 ms apart
    for (let i = 0; i < 3; i += 1) {
      await rejectsWith(s.executeCommand('boom'), 'ARBOR_HANDLER_CRASHED', { stopped: false });
      await delay(80);
    }

    // then: it still works (each crash journaled its command's start and failure)
    assert.equal((await s.changeConfig('k', 'v')).seq, 7);
    assert.deepEqual(arbor.health().sessions.stopped, []);
  });
});

// ---- 3, 4: node restart and client retries ------------------------------------------------------

describe('a node restart (the seed\'s "session survives node restart")', () => {
  test('10 answered messages come back whole and in order after close and createArbor', async (t) => {
    // given: 10 messages, each answered
    const fx = fixture(t);
    const first = await fx.open();
    const s = first.session('ten');
    for (let i = 0; i < 10; i += 1) await converse(s, `message number ${i}`);
    const before = s.state;
    assert.equal(before.messages.length, 20);

    // when: the process closes and a new Arbor opens the same directory
    await first.close();
    const second = await fx.open();
    const recovered = await second.session('ten').load();

    // then: 10 user messages and 10 answers, in order, the whole state equal
    const expected = Array.from({ length: 10 }, (_, i) => [`user: message number ${i}`, `assistant: Echo: message number ${i}`]).flat();
    assert.deepEqual(transcript(recovered.messages), expected);
    for (let i = 0; i < 10; i += 1) assert.equal(recovered.messages[2 * i + 1]!.metadata?.requestMessageId, recovered.messages[2 * i]!.id);
    assert.deepEqual(recovered, before);
    assert.equal(recovered.stream.status, 'idle');
    const report = second.recoveryReport();
    assert.deepEqual(report.counts, { recovered: 1, 'tail-truncated': 0, damaged: 0, salvaged: 0, failed: 0 });
    assert.deepEqual(
      report.sessions.map((r) => [r.sid, r.status, r.seq]),
      [['ten', 'recovered', before.seq]],
    );
    // and it carries on from there
    const next = await converse(second.session('ten'), 'eleven');
    assert.equal(next.seq, before.seq + 1);
  });
});

describe('clientMessageId', () => {
  test('a request retried before and after a restart yields one message and one answer', async (t) => {
    // given: a message sent with a clientMessageId and answered; small journal segments, so that
    // later traffic rotates past it and the snapshot at close lets its segment be deleted
    const fx = fixture(t);
    const options = { journalMaxSizeMb: 0.004 };
    const first = await fx.open(options);
    const s = first.session('dedupe');
    const original = await s.sendMessage({ content: 'only once', clientMessageId: 'client-1' });
    assert.equal(original.duplicate, false);
    await s.idle();
    const answered = s.state;
    const originalLsn = (await s.events())[0]!.lsn;

    // when: the client retries it (twice concurrently), the conversation goes on, then it retries after a restart
    const retries = await Promise.all([s.sendMessage({ content: 'only once', clientMessageId: 'client-1' }), s.sendMessage({ content: 'only once', clientMessageId: 'client-1' })]);
    await s.idle();
    assert.equal(s.state, answered, 'the first process journaled nothing for the retries');
    for (let i = 0; i < 12; i += 1) await converse(s, `filler ${i} ${'z'.repeat(200)}`);
    const before = s.state;
    await first.close();
    const second = await fx.open(options);
    const segments = fileStore(second).journal.segmentNames();
    assert.ok(
      segments.every((name) => Number.parseInt(name, 10) > originalLsn),
      `the segment holding the original request was not deleted (${segments.join(', ')}; lsn ${originalLsn}): the test would not exercise dedupe from snapshots`,
    );
    const s2 = second.session('dedupe');
    const afterRestart = await s2.sendMessage({ content: 'only once', clientMessageId: 'client-1' });
    await s2.idle();
    await delay(30); // an answer wrongly started would have journaled its start by now

    // then: the original result every time, and nothing new
    for (const r of [...retries, afterRestart]) assert.deepEqual(r, { messageId: original.messageId, seq: original.seq, duplicate: true });
    assert.deepEqual(s2.state, before);
    assert.deepEqual(transcript(s2.state.messages).slice(0, 2), ['user: only once', 'assistant: Echo: only once']);
    assert.equal(s2.state.messages.filter((m) => m.content === 'only once').length, 1);
    // a new clientMessageId is a new message
    const fresh = await s2.sendMessage({ content: 'only once', clientMessageId: 'client-2' });
    assert.equal(fresh.duplicate, false);
    assert.equal(fresh.seq, before.seq + 1);
  });

  test('the first send and its retry in flight at once yield one message and one answer', async (t) => {
    // given
    const fx = fixture(t);
    const arbor = await fx.open();
    const s = arbor.session('dedupe-race');

    // when: the same request twice, concurrently
    const [r1, r2] = await Promise.all([s.sendMessage({ content: 'race', clientMessageId: 'c' }), s.sendMessage({ content: 'race', clientMessageId: 'c' })]);
    await s.idle();

    // then
    assert.equal(r1.messageId, r2.messageId);
    assert.equal(r1.seq, r2.seq);
    assert.deepEqual([r1.duplicate, r2.duplicate].sort(), [false, true]);
    assert.deepEqual(transcript(s.state.messages), ['user: race', 'assistant: Echo: race']);
  });
});

// ---- 5, 6: streaming and its interruption -----------------------------------------------------------

describe('streaming', () => {
  test('a subscriber sees the message, the start, every chunk in order and the completed answer', async (t) => {
    // given
    const fx = fixture(t);
    const arbor = await fx.open();
    const s = arbor.session('stream');
    const rec = record(s);

    // when
    const { messageId, seq } = await s.sendMessage({ content: 'stream me please' });
    await s.idle();

    // then: user_message_sent, assistant_stream_started, chunks 0..4, assistant_response_completed
    const kinds = rec.updates.map((u) => (u.kind === 'event' ? u.event.type : u.kind === 'chunk' ? `chunk ${u.chunk.index}` : u.type));
    assert.deepEqual(kinds, ['user_message_sent', 'assistant_stream_started', 'chunk 0', 'chunk 1', 'chunk 2', 'chunk 3', 'chunk 4', 'assistant_response_completed']);
    const [sent, started, completed] = rec.events();
    assert.equal(sent!.seq, seq);
    assert.equal(dataOf(sent!).messageId, messageId);
    assert.equal(started!.seq, seq + 1);
    assert.equal(dataOf(started!).requestMessageId, messageId);
    const answerId = dataOf(started!).messageId!;
    assert.equal(completed!.seq, seq + 2);
    assert.equal(dataOf(completed!).messageId, answerId);
    const chunks = rec.chunks(answerId);
    assert.deepEqual(
      chunks.map((c) => c.index),
      [0, 1, 2, 3, 4],
    );
    assert.ok(chunks.every((c) => c.text.length > 0));
    const joined = chunks.map((c) => c.text).join('');
    assert.equal(joined, 'Echo: stream me please');
    assert.equal(dataOf(completed!).content, joined);
    const answer = s.state.messages.at(-1)!;
    assert.deepEqual([answer.id, answer.role, answer.content, answer.seq], [answerId, 'assistant', joined, seq + 2]);
    // the journal holds the same three critical events (chunks are never journaled)
    assert.deepEqual(
      (await s.events()).map((e) => [e.type, e.seq]),
      rec.events().map((e) => [e.type, e.seq]),
    );
  });

  test('chunks(messageId, k) gives a reconnecting client the buffered chunks from k while streaming', async (t) => {
    // given: a slow answer, half streamed
    const fx = fixture(t);
    const arbor = await fx.open({ llm: new MockProvider({ chunks: 20, chunkDelayMs: 15 }) });
    const s = arbor.session('resume');
    const rec = record(s);
    await s.sendMessage({ content: 'a long answer' });
    const sixth = await rec.waitFor(isChunk(5));
    assert.ok(sixth.kind === 'chunk');
    const answerId = sixth.chunk.messageId;

    // when: a client that saw up to chunk 2 asks for the rest (in the same tick as what the subscriber has)
    const resumed = s.chunks(answerId, 3);
    const all = s.chunks(answerId);
    const seen = rec.chunks(answerId);

    // then: exactly the buffered chunks from index 3, equal to what the subscriber received
    assert.equal(s.state.stream.status, 'streaming');
    assert.ok(seen.length >= 6 && seen.length < 20, `caught mid-stream (${seen.length} chunks seen)`);
    assert.deepEqual(resumed, seen.slice(3));
    assert.deepEqual(all, seen);
    assert.deepEqual(s.chunks(answerId, seen.length), []);
    assert.deepEqual(s.chunks('another-message', 0), []);
    // and the client's view, old chunks + resumed chunks + the rest, is the final answer
    await s.idle();
    const rest = rec.chunks(answerId).slice(seen.length);
    assert.equal([...seen.slice(0, 3), ...resumed, ...rest].map((c) => c.text).join(''), s.state.messages.at(-1)!.content);
  });
});

describe('close() during a stream', () => {
  test('the turn ends with exactly one stream_interrupted; after reopening, the notice is shown and retry() regenerates', async (t) => {
    // given: an answer streaming (100 × 20 ms)
    const fx = fixture(t);
    const first = await fx.open({ llm: new MockProvider({ chunks: 100, chunkDelayMs: 20 }) });
    const s = first.session('closing');
    const rec = record(s);
    const { messageId } = await s.sendMessage({ content: 'interrupt me' });
    const firstChunk = await rec.waitFor(isChunk(2));
    assert.ok(firstChunk.kind === 'chunk');
    const answerId = firstChunk.chunk.messageId;

    // when: the runtime closes
    await first.close();

    // then: the stream was cut, not waited for (its terminal is an interruption, not a
    // completion), and ended with exactly one terminal event
    const terminals = rec.events().filter((e) => TERMINAL.has(e.type));
    assert.deepEqual(
      terminals.map((e) => [e.type, dataOf(e).messageId, dataOf(e).requestMessageId]),
      [['stream_interrupted', answerId, messageId]],
    );
    assert.ok(typeof dataOf(terminals[0]!).reason === 'string' && dataOf(terminals[0]!).reason!.length > 0);
    const chunksAtClose = rec.chunks(answerId).length;
    assert.ok(chunksAtClose < 100);
    await delay(60);
    assert.equal(rec.chunks(answerId).length, chunksAtClose, 'no chunk is published after close() resolved');

    // when: reopened
    const second = await fx.open();
    const s2 = second.session('closing');
    await s2.load();

    // then: the notice, carrying the original request; no partial answer; idle
    assert.equal(s2.state.stream.status, 'idle');
    assert.deepEqual(transcript(s2.state.messages), ['user: interrupt me', `system: ${INTERRUPTED_NOTICE_CONTENT}`]);
    const notice = s2.state.messages.at(-1)!;
    assert.equal(notice.metadata?.interrupted, true);
    assert.equal(notice.metadata?.interruptedMessageId, answerId);
    assert.deepEqual(notice.metadata?.originalRequest, { messageId, content: 'interrupt me' });
    assert.equal(s2.state.messages.filter((m) => m.id === answerId).length, 0);

    // when: the user retries
    const rec2 = record(s2);
    const retried = await s2.retry();
    await s2.idle();

    // then: a new answer to the original request, marked as the retry of the interrupted one
    assert.deepEqual(retried, { requestMessageId: messageId, retryOf: answerId });
    const [start, done] = rec2.events();
    assert.equal(start!.type, 'assistant_stream_started');
    assert.equal(dataOf(start!).retryOf, answerId);
    assert.equal(dataOf(start!).requestMessageId, messageId);
    assert.notEqual(dataOf(start!).messageId, answerId);
    assert.equal(done!.type, 'assistant_response_completed');
    assert.equal(dataOf(done!).content, 'Echo: interrupt me');
    const answer = s2.state.messages.at(-1)!;
    assert.deepEqual([answer.role, answer.content, answer.metadata?.retryOf, answer.metadata?.requestMessageId], ['assistant', 'Echo: interrupt me', answerId, messageId]);
  });

  test('close() right after sendMessage resolved interrupts the answer instead of waiting for it', async (t) => {
    // given: a slow answer (20 × 50 ms = 1 s) that has just been requested
    const fx = fixture(t);
    const first = await fx.open({ llm: new MockProvider({ chunks: 20, chunkDelayMs: 50 }) });
    const s = first.session('close-early');
    const rec = record(s);
    const { messageId } = await s.sendMessage({ content: 'too late' });

    // when: the runtime closes at once
    await first.close();

    // then: close() did not wait for the answer (nothing completed it), and the turn is interrupted (notice after reopening)
    assert.ok(!rec.events().some((e) => e.type === 'assistant_response_completed'), 'the answer was completed during close()');
    const second = await fx.open();
    const last = (await second.session('close-early').load()).messages.at(-1)!;
    assert.equal(last.role, 'system');
    assert.equal((last.metadata?.originalRequest as { messageId?: string } | undefined)?.messageId, messageId);
  });

  test('sendMessage while close() is in progress is refused, or its turn is answered or interrupted', async (t) => {
    // given: an answer streaming
    const fx = fixture(t);
    const first = await fx.open({ llm: new MockProvider({ chunks: 20, chunkDelayMs: 25 }) });
    const s = first.session('close-intake');
    const rec = record(s);
    await s.sendMessage({ content: 'first' });
    await rec.waitFor(isChunk(1));

    // when: a message is sent on the held handle just after close() was called
    const closing = first.close();
    const during = s.sendMessage({ content: 'during close' }).then(
      (r) => ({ ok: true as const, r }),
      (err: unknown) => ({ ok: false as const, err }),
    );
    await closing;
    const outcome = await during;
    const publishedAtClose = rec.updates.length;
    await delay(150);

    // then: nothing is published after close() resolved, and the message was refused with ARBOR_CLOSED
    // or, if acknowledged, it is not silently dropped: after reopening it has an answer or a notice
    assert.equal(rec.updates.length, publishedAtClose, `${rec.updates.length - publishedAtClose} updates were published after close() resolved`);
    if (!outcome.ok) {
      assert.ok(isArborError(outcome.err, 'ARBOR_CLOSED'), `expected ARBOR_CLOSED, got ${String(outcome.err)}`);
      return;
    }
    const second = await fx.open();
    const state = second.session('close-intake').state;
    const handled = state.messages.some(
      (m) =>
        (m.role === 'assistant' && m.metadata?.requestMessageId === outcome.r.messageId) ||
        (m.role === 'system' && (m.metadata?.originalRequest as { messageId?: string } | undefined)?.messageId === outcome.r.messageId),
    );
    assert.ok(handled, `the message acknowledged during close() has neither an answer nor a notice: ${JSON.stringify(transcript(state.messages))}`);
  });
});

// ---- 7: SIGKILL mid-stream, with a real child process ---------------------------------------------------

const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const STREAM_CHILD = fileURLToPath(new URL('./crash/stream-child.ts', import.meta.url));

interface ChildHandle {
  lines: string[];
  /** Resolves with the first line starting with `prefix` (already seen or to come). */
  waitLine(prefix: string, timeoutMs?: number): Promise<string>;
  /** SIGKILLs the child and resolves once it is gone and its output drained. */
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

function startStreamChild(args: string[]): ChildHandle {
  const child = spawn(process.execPath, ['--import', 'tsx', STREAM_CHILD, ...args], { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let partial = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (text: string) => {
    const parts = (partial + text).split('\n');
    partial = parts.pop()!;
    lines.push(...parts.filter((l) => l.length > 0));
    for (const l of listeners) l();
  });
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (text: string) => (stderr += text));
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  void closed.then(() => {
    for (const l of listeners) l();
  });
  let exited = false;
  void closed.then(() => (exited = true));
  return {
    lines,
    waitLine(prefix, timeoutMs = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          const found = lines.find((l) => l.startsWith(`${prefix} `));
          if (found !== undefined) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(found);
          } else if (exited) {
            listeners.delete(check);
            clearTimeout(timer);
            reject(new Error(`child exited before printing "${prefix}": ${stderr || lines.join(' | ')}`));
          }
        };
        const timer = setTimeout(() => {
          listeners.delete(check);
          child.kill('SIGKILL');
          reject(new Error(`child printed no "${prefix}" within ${timeoutMs} ms: ${stderr || lines.join(' | ')}`));
        }, timeoutMs);
        listeners.add(check);
        check();
      });
    },
    async kill() {
      child.kill('SIGKILL');
      const { code, signal } = await closed;
      return { code, signal, stderr };
    },
  };
}

describe('SIGKILL mid-stream (real child process)', () => {
  const KILLS = 5;
  const CHUNKS = 50;
  const CHUNK_DELAY_MS = 20;

  test(`${KILLS} kills at random points of the stream, on one data directory: the acknowledged message, the notice, retry`, { timeout: 60_000 }, async (t) => {
    const fx = fixture(t);
    const history: string[] = [];
    for (let cycle = 0; cycle < KILLS; cycle += 1) {
      // given: a child streaming a slow answer (50 × 20 ms)
      const content = `question ${cycle} of the killed child`;
      const child = startStreamChild(['--data-dir', fx.dir, '--session', 'killed', '--content', content, '--chunks', String(CHUNKS), '--chunk-delay-ms', String(CHUNK_DELAY_MS)]);
      const acked = (await child.waitLine('acked')).split(' ');
      const ackedId = acked[1]!;
      const ackedSeq = Number(acked[2]);
      const answerId = (await child.waitLine('streaming')).split(' ')[1]!;

      // when: SIGKILLed somewhere in its stream
      const killAfterMs = Math.floor(Math.random() * 0.5 * CHUNKS * CHUNK_DELAY_MS);
      await delay(killAfterMs);
      const died = await child.kill();
      const chunksSeen = child.lines.filter((l) => l.startsWith('chunk ')).length + 1;
      t.diagnostic(`cycle ${cycle}: killed ${killAfterMs} ms after the first chunk, ${chunksSeen} chunks streamed`);
      assert.equal(died.signal, 'SIGKILL', `the child died on its own: ${died.stderr}`);
      assert.ok(!child.lines.some((l) => l.startsWith('completed ')), 'the kill came after the answer completed');

      // then: a new Arbor on the directory has the acknowledged message and the interrupted notice
      const arbor = await fx.open();
      const s = arbor.session('killed');
      const state = await s.load();
      const report = arbor.recoveryReport();
      assert.equal(report.counts.damaged + report.counts.failed + report.counts.salvaged, 0, JSON.stringify(report.counts));
      assert.equal(report.counts.recovered + report.counts['tail-truncated'], 1);
      const request = state.messages.find((m) => m.id === ackedId);
      assert.ok(request !== undefined, 'the acknowledged message was lost');
      assert.deepEqual([request.role, request.content, request.seq], ['user', content, ackedSeq]);
      const notice = state.messages.at(-1)!;
      assert.equal(notice.role, 'system');
      assert.equal(notice.content, INTERRUPTED_NOTICE_CONTENT);
      assert.equal(notice.metadata?.interrupted, true);
      assert.equal(notice.metadata?.interruptedMessageId, answerId);
      assert.deepEqual(notice.metadata?.originalRequest, { messageId: ackedId, content });
      assert.equal(state.stream.status, 'idle');
      assert.ok(!state.messages.some((m) => m.id === answerId), 'a partial answer was recovered');
      const journaled = await s.events();
      assert.equal(journaled.filter((e) => e.type === 'stream_interrupted').length, 1);
      assert.equal(journaled.filter((e) => e.type === 'stream_interrupted' && dataOf(e).messageId === answerId).length, 1);
      assert.deepEqual(transcript(state.messages), [...history, `user: ${content}`, `system: ${INTERRUPTED_NOTICE_CONTENT}`]);

      // when: the user retries
      const retried = await s.retry();
      await s.idle();

      // then: the answer completes
      assert.deepEqual(retried, { requestMessageId: ackedId, retryOf: answerId });
      const answer = s.state.messages.at(-1)!;
      assert.deepEqual([answer.role, answer.content, answer.metadata?.retryOf], ['assistant', `Echo: ${content}`, answerId]);
      history.push(`user: ${content}`, `system: ${INTERRUPTED_NOTICE_CONTENT}`, `assistant: Echo: ${content}`);
      assert.deepEqual(transcript(s.state.messages), history);
      await arbor.close();
    }
  });

  test('an acknowledged message whose answer was still queued when the process died is not left silently unanswered', async (t) => {
    // given: a child streaming the answer to a first message, with a second message acknowledged behind it
    const fx = fixture(t);
    const child = startStreamChild(['--data-dir', fx.dir, '--session', 'queued', '--content', 'first question', '--second', 'second question', '--chunks', '50', '--chunk-delay-ms', '20']);
    const firstId = (await child.waitLine('acked')).split(' ')[1]!;
    const secondId = (await child.waitLine('acked2')).split(' ')[1]!;

    // when: SIGKILLed while the first answer streams
    const died = await child.kill();
    assert.equal(died.signal, 'SIGKILL', died.stderr);

    // then: after recovery, each acknowledged message has an answer or an interruption notice that retries it
    const arbor = await fx.open();
    const state = await arbor.session('queued').load();
    const handled = (requestId: string): boolean =>
      state.messages.some(
        (m) =>
          (m.role === 'assistant' && m.metadata?.requestMessageId === requestId) ||
          (m.role === 'system' && (m.metadata?.originalRequest as { messageId?: string } | undefined)?.messageId === requestId),
      );
    assert.ok(handled(firstId), 'the interrupted first message has no notice');
    assert.ok(handled(secondId), `the acknowledged second message has neither an answer nor a notice: ${JSON.stringify(transcript(state.messages))}`);
  });
});

// ---- 8: validation -------------------------------------------------------------------------------------

describe('validation', () => {
  test('bad input is refused with ARBOR_INVALID_INPUT naming the field, and nothing is journaled', async (t) => {
    // given: a session with some history
    const fx = fixture(t);
    const arbor = await fx.open({ maxRestarts: 1 });
    const s = arbor.session('strict');
    await converse(s, 'fine');
    const before = s.state;
    const eventsBefore = (await s.events()).length;

    // when / then: message content empty, too long, not a string
    await rejectsWith(s.sendMessage({ content: '' }), 'ARBOR_INVALID_INPUT', { field: 'content' });
    await rejectsWith(s.sendMessage({ content: 'x'.repeat(100_001) }), 'ARBOR_INVALID_INPUT', { field: 'content' });
    await rejectsWith(s.sendMessage({ content: 42 as unknown as string }), 'ARBOR_INVALID_INPUT', { field: 'content' });
    await rejectsWith(s.sendMessage({ content: 'ok', metadata: { f: () => 1 } as unknown as Record<string, unknown> }), 'ARBOR_INVALID_INPUT');
    // config values that are not JSON
    for (const value of [() => 1, undefined, Number.NaN, Number.POSITIVE_INFINITY, new Date(0), new Map(), { nested: undefined }, [1, undefined], 10n]) {
      await rejectsWith(s.changeConfig('k', value), 'ARBOR_INVALID_INPUT', { field: 'data.newValue' });
    }
    await rejectsWith(s.changeConfig('__proto__', 1), 'ARBOR_INVALID_INPUT', { field: 'data.key' });
    await rejectsWith(s.changeConfig('', 1), 'ARBOR_INVALID_INPUT', { field: 'data.key' });
    await rejectsWith(s.decidePermission({ permission: 'fs', decision: 'maybe' as 'granted' }), 'ARBOR_INVALID_INPUT', { field: 'data.decision' });
    await delay(20);

    // then: nothing journaled, the state untouched, and refusals are not crashes (maxRestarts 1 would have stopped it)
    assert.equal(s.state, before);
    assert.equal((await s.events()).length, eventsBefore);
    assert.equal(arbor.health().sessions.crashes, 0);
    assert.deepEqual(arbor.health().sessions.stopped, []);
    // the bounds are inclusive: 100,000 characters is accepted
    const big = await s.sendMessage({ content: 'y'.repeat(100_000) });
    assert.equal(big.seq, before.seq + 1);
    await s.idle();
  });

  test('invalid session ids are refused with ARBOR_INVALID_SESSION_ID', async (t) => {
    // given
    const fx = fixture(t);
    const arbor = await fx.open();

    // when / then
    for (const id of ['', '../etc', 'a/b', 'a\\b', '.', '..', 'a.b', 'a b', 'a\0b', 'é', 'x'.repeat(129), 42, undefined, null]) {
      throwsWith(() => arbor.session(id as string), 'ARBOR_INVALID_SESSION_ID', `session(${JSON.stringify(id)})`);
    }
    // and the longest allowed id works end to end
    const s = arbor.session('x'.repeat(128));
    await converse(s, 'long id');
    assert.equal(s.state.messages.length, 2);
    assert.equal(arbor.health().hot.sessions, 1);
  });

  test('a config value JSON would change (-0) is refused, or the recovered state equals the live one', async (t) => {
    // given
    const fx = fixture(t);
    const first = await fx.open();
    const s = first.session('neg-zero');

    // when
    const accepted = await s.changeConfig('offset', -0).then(
      () => true,
      (err: unknown) => {
        assert.ok(isArborError(err, 'ARBOR_INVALID_INPUT'));
        return false;
      },
    );

    // then
    if (accepted) {
      const live = s.state.config.offset;
      await first.close();
      const second = await fx.open();
      assert.ok(Object.is(second.session('neg-zero').state.config.offset, live), `live ${Object.is(live, -0) ? '-0' : String(live)}, recovered ${String(second.session('neg-zero').state.config.offset)}`);
    }
  });
});

// ---- 9: mailboxes ------------------------------------------------------------------------------------------

describe('mailbox', () => {
  test('mailboxCapacity 3: the 4th concurrent command is refused at once with ARBOR_MAILBOX_FULL', async (t) => {
    // given: a command holding the mailbox, two more waiting
    const fx = fixture(t);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const arbor = await fx.open({
      mailboxCapacity: 3,
      commands: {
        hold: async () => {
          await gate;
          return 'held';
        },
      },
    });
    const s = arbor.session('busy');
    const settled: string[] = [];
    const track = <T>(name: string, p: Promise<T>): Promise<T> => {
      p.then(
        () => settled.push(`${name} ok`),
        (err: unknown) => settled.push(`${name} ${(err as ArborError).code}`),
      );
      return p;
    };
    const p1 = track('hold', s.executeCommand('hold'));
    const p2 = track('c1', s.changeConfig('k', 1));
    const p3 = track('c2', s.changeConfig('k', 2));

    // when: a 4th arrives
    const p4 = track('c3', s.changeConfig('k', 3));
    await delay(20);

    // then: it was refused while the others still wait; they then run in order
    assert.deepEqual(settled, ['c3 ARBOR_MAILBOX_FULL']);
    await rejectsWith(p4, 'ARBOR_MAILBOX_FULL');
    release();
    const [r1, r2, r3] = await Promise.all([p1, p2, p3]);
    assert.equal(r1.result, 'held');
    assert.deepEqual([r1.seq, r2.seq, r3.seq], [2, 3, 4]);
    assert.deepEqual(s.state.config, { k: 2 });
    assert.equal((await s.events()).length, 4);
    // and with room again, commands are accepted
    assert.equal((await s.changeConfig('k', 4)).seq, 5);
  });

  test("one session's commands never interleave: concurrent calls commit in call order, each on top of the previous", async (t) => {
    // given: a slow handler that reports the seq it saw
    const fx = fixture(t);
    const arbor = await fx.open({
      commands: {
        slowRead: async ({ state }) => {
          const seen = state.seq;
          await delay(30);
          return seen;
        },
      },
    });
    const s = arbor.session('ordered');
    const other = arbor.session('ordered-other');
    await s.changeConfig('n', -1);

    // when: a slow command, then 10 config changes, all at once (and another session busy meanwhile)
    const slow = s.executeCommand('slowRead');
    const changes = Array.from({ length: 10 }, (_, i) => s.changeConfig('n', i));
    const elsewhere = other.changeConfig('x', 'y');
    const results = await Promise.all([slow, ...changes]);

    // then: seqs n+1, n+2, … in call order; the slow command saw nothing of the later ones
    assert.deepEqual(
      results.map((r) => r.seq),
      [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13],
    );
    assert.equal((await slow).result, 1);
    const events = (await s.events()).filter((e) => e.type === 'session_config_changed').slice(1);
    assert.deepEqual(
      events.map((e) => [e.data as { oldValue: unknown; newValue: unknown }].map((d) => [d.oldValue, d.newValue])[0]),
      Array.from({ length: 10 }, (_, i) => [i - 1, i]),
    );
    assert.equal(s.state.config.n, 9);
    assert.equal((await elsewhere).seq, 1, 'another session is not queued behind this one');
  });

  test("another session's commands are not held up by a busy mailbox", async (t) => {
    // given: one session's mailbox held by a slow command
    const fx = fixture(t);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const arbor = await fx.open({ commands: { hold: () => gate } });
    const held = arbor.session('held').executeCommand('hold');

    // when: another session works meanwhile
    const r = await Promise.race([arbor.session('free').changeConfig('a', 1), delay(2_000).then(() => 'still waiting' as const)]).finally(release);

    // then
    assert.notEqual(r, 'still waiting', "the other session's command waited for the busy mailbox");
    assert.equal(r !== 'still waiting' && r.seq, 1);
    assert.equal((await held).seq, 2);
  });
});

// ---- 10: passivation ----------------------------------------------------------------------------------------

describe('passivation', () => {
  test('passivate() snapshots and drops a session; the next command loads it back with its full history', async (t) => {
    // given: two sessions with history
    const fx = fixture(t);
    const arbor = await fx.open();
    const s = arbor.session('sleepy');
    const other = arbor.session('awake');
    for (let i = 0; i < 3; i += 1) await converse(s, `turn ${i}`);
    await s.changeConfig('theme', 'dark');
    await converse(other, 'hi');
    const before = s.state;
    assert.equal(arbor.health().hot.sessions, 2);

    // when: it is passivated
    assert.equal(await arbor.passivate('sleepy'), true);

    // then: dropped from memory, with a snapshot at its last seq; its last state still readable
    assert.equal(arbor.health().hot.sessions, 1);
    assert.equal(fileStore(arbor).snapshots.seqs('sleepy').at(-1), before.seq);
    assert.deepEqual(s.state, before);

    // when: the next message arrives
    const next = await converse(s, 'wake up');

    // then: loaded back with its full history, and the seq goes on
    assert.equal(arbor.health().hot.sessions, 2);
    assert.equal(next.seq, before.seq + 1);
    assert.deepEqual(s.state.messages.slice(0, before.messages.length), before.messages);
    assert.deepEqual(transcript(s.state.messages).slice(-2), ['user: wake up', 'assistant: Echo: wake up']);
    assert.deepEqual(s.state.config, { theme: 'dark' });
    // and a passivated session survives a restart like any other
    await arbor.passivate('sleepy');
    const final = s.state;
    await arbor.close();
    const again = await fx.open();
    assert.deepEqual(await again.session('sleepy').load(), final);
  });

  test('a session is not passivated while its answer streams', async (t) => {
    // given: an answer streaming
    const fx = fixture(t);
    const arbor = await fx.open({ llm: new MockProvider({ chunks: 10, chunkDelayMs: 15 }) });
    const s = arbor.session('streaming-sleepy');
    const rec = record(s);
    await s.sendMessage({ content: 'keep me' });
    await rec.waitFor(isChunk(0));

    // when
    const dropped = await arbor.passivate('streaming-sleepy');

    // then: kept, and the answer completes
    assert.equal(dropped, false);
    assert.equal(arbor.health().hot.sessions, 1);
    await s.idle();
    assert.deepEqual(transcript(s.state.messages), ['user: keep me', 'assistant: Echo: keep me']);
  });
});

// ---- 11: the AI SDK provider through the runtime -----------------------------------------------------------

describe('AiSdkProvider through the runtime (local OpenAI-compatible server)', () => {
  test('answers complete with the server text; an HTTP 500 ends the turn interrupted; retry works once the server is back', async (t) => {
    // given: the local server and an Arbor using it
    const server = await startOpenAiCompatibleServer({ chunks: ['Hello', ', ', 'world', '!'] });
    t.after(() => server.close());
    const fx = fixture(t);
    const arbor = await fx.open({ llm: new AiSdkProvider({ baseURL: server.baseURL, model: 'test-model', maxRetries: 0 }) });
    const s = arbor.session('real-llm');
    const rec = record(s);

    // when: a message is sent
    const first = await s.sendMessage({ content: 'hi there' });
    await s.idle();

    // then: the server's text, chunk by chunk, completes the answer
    const answer = s.state.messages.at(-1)!;
    assert.deepEqual([answer.role, answer.content, answer.metadata?.provider, answer.metadata?.model], ['assistant', 'Hello, world!', 'openai-compatible', 'test-model']);
    assert.deepEqual(
      rec.chunks(answer.id).map((c) => c.text),
      ['Hello', ', ', 'world', '!'],
    );
    const firstBody = server.requests.at(-1)!.body as { model: string; messages: { role: string; content: unknown }[] };
    assert.equal(firstBody.model, 'test-model');
    assert.deepEqual(
      firstBody.messages.map((m) => m.role),
      ['user'],
    );

    // when: the server fails with HTTP 500
    server.setBehavior({ mode: 'http-500' });
    const second = await s.sendMessage({ content: 'and now?' });
    await s.idle();

    // then: the turn ends with stream_interrupted whose reason is the provider error; the notice is shown
    const interrupted = rec.events().filter((e) => e.type === 'stream_interrupted');
    assert.equal(interrupted.length, 1);
    assert.equal(dataOf(interrupted[0]!).requestMessageId, second.messageId);
    assert.match(dataOf(interrupted[0]!).reason!, /provider error/);
    assert.match(dataOf(interrupted[0]!).reason!, /500|scripted internal error/i);
    const notice = s.state.messages.at(-1)!;
    assert.equal(notice.role, 'system');
    assert.deepEqual(notice.metadata?.originalRequest, { messageId: second.messageId, content: 'and now?' });
    assert.equal(s.state.stream.status, 'idle');

    // when: the server is back and the user retries
    server.setBehavior({ mode: 'ok', chunks: ['Back', ' again'] });
    const retried = await s.retry();
    await s.idle();

    // then: the retry answers the original request, and the provider saw the conversation without the notice
    assert.equal(retried.requestMessageId, second.messageId);
    const last = s.state.messages.at(-1)!;
    assert.deepEqual([last.role, last.content, last.metadata?.requestMessageId, last.metadata?.retryOf], ['assistant', 'Back again', second.messageId, retried.retryOf]);
    const retryBody = server.requests.at(-1)!.body as { messages: { role: string; content: unknown }[] };
    assert.deepEqual(
      retryBody.messages.map((m) => m.role),
      ['user', 'assistant', 'user'],
    );
    assert.equal(s.state.messages.filter((m) => m.role === 'user').length, 2);
    assert.equal(first.seq, 1);
  });

  test('a connection cut mid-stream ends the turn with stream_interrupted, never a short answer', async (t) => {
    // given
    const server = await startOpenAiCompatibleServer({ chunks: ['one ', 'two ', 'three'], mode: 'cut', cutAfterChunks: 2, chunkDelayMs: 5 });
    t.after(() => server.close());
    const fx = fixture(t);
    const arbor = await fx.open({ llm: new AiSdkProvider({ baseURL: server.baseURL, model: 'test-model', maxRetries: 0 }) });
    const s = arbor.session('cut-llm');
    const rec = record(s);

    // when
    await s.sendMessage({ content: 'go' });
    await s.idle();

    // then: what arrived before the cut was relayed (the SDK may drop what came with the reset), then the turn was interrupted
    const started = rec.events().find((e) => e.type === 'assistant_stream_started')!;
    const relayed = rec.chunks(dataOf(started).messageId!);
    assert.ok(relayed.length <= 2, `${relayed.length} chunks relayed`);
    assert.deepEqual(
      relayed.map((c) => [c.index, c.text]),
      [[0, 'one '], [1, 'two ']].slice(0, relayed.length),
    );
    assert.equal(server.requests[0]?.outcome, 'server-cut');
    assert.match(dataOf(rec.events().at(-1)!).reason!, /provider error/);
    assert.deepEqual(
      rec.events().map((e) => e.type),
      ['user_message_sent', 'assistant_stream_started', 'stream_interrupted'],
    );
    assert.ok(!s.state.messages.some((m) => m.role === 'assistant'));
    assert.equal(s.state.messages.at(-1)!.role, 'system');
  });
});

// ---- concurrency of turns -------------------------------------------------------------------------------------

describe('turns sent concurrently', () => {
  test('each answer is generated for its own request', async (t) => {
    // given
    const fx = fixture(t);
    const arbor = await fx.open();
    const s = arbor.session('two-at-once');

    // when: two messages sent at once
    const [r1, r2] = await Promise.all([s.sendMessage({ content: 'first question' }), s.sendMessage({ content: 'second question' })]);
    await s.idle();

    // then: the mock echoes the last user message it was given: each answer echoes its own request
    const answerTo = (id: string): string | undefined => s.state.messages.find((m) => m.role === 'assistant' && m.metadata?.requestMessageId === id)?.content;
    assert.equal(answerTo(r1.messageId), 'Echo: first question');
    assert.equal(answerTo(r2.messageId), 'Echo: second question');
  });
});

describe('activation', () => {
  test('at most maxConcurrentRecoveries passivated sessions are loaded back at once', async (t) => {
    const { dir, cleanup } = tempDir();
    // given 6 sessions dropped from memory, on a store whose snapshot reads we can count in flight
    const { NodeFileSystem } = await import('../src/index.ts');
    const { ForwardingFileSystem } = await import('../src/testing.ts');
    let inFlight = 0;
    let peak = 0;
    const fs = new (class extends ForwardingFileSystem {
      override async readFile(p: string): Promise<Uint8Array> {
        if (!p.endsWith('.snap')) return super.readFile(p);
        inFlight += 1;
        peak = Math.max(peak, inFlight);
        await new Promise((r) => setTimeout(r, 10));
        try {
          return await super.readFile(p);
        } finally {
          inFlight -= 1;
        }
      }
    })(new NodeFileSystem());
    const arbor = await createArbor({ dataDir: dir, fs, maxConcurrentRecoveries: 2, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
    t.after(async () => {
      await arbor.close();
      cleanup();
    });
    const ids = ['a', 'b', 'c', 'd', 'e', 'f'];
    for (const id of ids) await arbor.session(id).changeConfig('k', id);
    for (const id of ids) assert.equal(await arbor.passivate(id), true);
    // when all of them get a command at once
    await Promise.all(ids.map((id) => arbor.session(id).changeConfig('k2', 1)));
    // then no more than 2 were loaded concurrently, and each came back whole
    assert.equal(peak, 2);
    for (const id of ids) assert.deepEqual(arbor.session(id).state.config, { k: id, k2: 1 });
  });
});

describe('recoverable events and the journal bound', () => {
  test('recoverable events reach subscribers, are validated, and are never journaled', async (t) => {
    const { dir, cleanup } = tempDir();
    const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
    t.after(async () => {
      await arbor.close();
      cleanup();
    });
    const s = arbor.session('r');
    const seen: unknown[] = [];
    s.subscribe((u) => u.kind === 'recoverable' && seen.push([u.type, u.data]));
    // when the application publishes a typing indicator and a UI state change
    s.publish('typing_indicator', { userId: 'u1', typing: true });
    s.publish('ui_state_changed', { component: 'sidebar', state: { open: true } });
    // then subscribers got them, and nothing reached the journal or the state
    assert.deepEqual(seen, [['typing_indicator', { userId: 'u1', typing: true }], ['ui_state_changed', { component: 'sidebar', state: { open: true } }]]);
    assert.equal(s.state.seq, 0);
    assert.equal(fileStore(arbor).journal.lastSeq('r'), 0);
    // and bad input names the field
    assert.throws(() => s.publish('typing_indicator', { userId: 'u1', typing: 'yes' } as never), (e: unknown) => isArborError(e, 'ARBOR_INVALID_INPUT') && e.details.field === 'data.typing');
    assert.throws(() => s.publish('user_message_sent' as never, { messageId: 'm', content: 'x' } as never), (e: unknown) => isArborError(e, 'ARBOR_INVALID_INPUT') && e.details.field === 'type');
  });

  for (const intervalMs of [20, 3_600_000]) {
    test(`the background checkpointer keeps the journal bounded (snapshotIntervalMs ${intervalMs})`, async (t) => {
      const { dir, cleanup } = tempDir();
      // given tiny segments and no threshold snapshots
      const arbor = await createArbor({ dataDir: dir, journalMaxSizeMb: 8192 / 1024 / 1024, snapshotEveryEvents: 1_000_000, snapshotIntervalMs: intervalMs, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
      t.after(async () => {
        await arbor.close();
        cleanup();
      });
      // when a few sessions write far more than one segment holds (about 10 segments' worth)
      for (let i = 0; i < 120; i += 1) await arbor.session(`j${i % 3}`).changeConfig('k', 'v'.repeat(600) + i);
      for (let i = 0; i < 100 && fileStore(arbor).journal.segmentNames().length > 2; i += 1) await new Promise((r) => setTimeout(r, 10));
      const segments = fileStore(arbor).journal.segmentNames();
      if (intervalMs === 20) {
        // then the sessions pinning the oldest segment were snapshotted and the sealed segments deleted
        assert.ok(segments.length <= 2, `${segments.length} segments left`);
        assert.ok(fileStore(arbor).snapshots.count() >= 3);
      } else {
        // (control: without the checkpointer in time, they pile up)
        assert.ok(segments.length > 5, `${segments.length} segments`);
      }
    });
  }
});
