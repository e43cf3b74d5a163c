import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createArbor, initialSessionState, INTERRUPTED_NOTICE_CONTENT, MockProvider, openPgBackend, reduceSession, type SessionState } from '../src/index.ts';
import { inspectSession } from '../src/ops.ts';
import { announcePostgres, dropSchemaAtEnd, freshSchemaName, PG_URL, pgSkip } from './helpers/postgres.ts';
import { tempDir } from './helpers/tmp.ts';

// A data directory written while Arbor's session state was version 1 (test/fixtures/state-v1,
// made by its make-fixture.ts): today's runtime must open it, snapshots included.
const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'state-v1', 'arbor-data');
const BASE_TS = 1_700_000_000_000;
announcePostgres('test/state-migration.test.ts');
const at = (tick: number): number => BASE_TS + 1000 * tick;

function texts(state: SessionState): [string, string, string][] {
  // every message has its text as parts too (state version 3), whatever version it was written under
  for (const m of state.messages) assert.deepEqual(m.parts, m.content === '' ? [] : [{ type: 'text', text: m.content }], `parts of ${m.id}`);
  return state.messages.map((m) => [m.id, m.role, m.content]);
}

test('a data dir of state version 1 opens with createArbor: every message intact, createdAt/updatedAt filled in', async (t) => {
  // given a copy of the v1 fixture (opening writes to it)
  const { dir, cleanup } = tempDir();
  cpSync(FIXTURE, dir, { recursive: true });
  // when today's runtime opens it
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }) });
  t.after(async () => {
    await arbor.close();
    cleanup();
  });

  // then the snapshotted session (v1 snapshot at seq 7 + one turn from the journal) is whole
  const snapshotted = await arbor.session('snapshotted').load();
  assert.deepEqual(texts(snapshotted), [
    ['snapshotted-u1', 'user', 'What is a journal?'],
    ['snapshotted-a1', 'assistant', 'An append-only log.'],
    ['snapshotted-u2', 'user', 'And a snapshot?'],
    ['snapshotted-a2', 'assistant', 'The whole state at one seq.'],
    ['snapshotted-u3', 'user', 'Which one wins?'],
    ['snapshotted-a3', 'assistant', 'The snapshot, then the journal after it.'],
  ]);
  assert.equal(snapshotted.seq, 10);
  assert.deepEqual(snapshotted.config, { temperature: 0.2 });
  // createdAt comes from the v1 snapshot's first message; updatedAt from the last replayed event
  assert.equal(snapshotted.createdAt, at(0));
  assert.equal(snapshotted.updatedAt, at(9));

  // and the journal-only session is rebuilt by the current reducer alone
  const journalOnly = await arbor.session('journal-only').load();
  assert.deepEqual(texts(journalOnly), [
    ['journal-only-u1', 'user', 'Hello?'],
    ['journal-only-a1', 'assistant', 'Hello.'],
  ]);
  assert.deepEqual([journalOnly.createdAt, journalOnly.updatedAt], [at(10), at(12)]);

  // and the session snapshotted mid-stream gets its interrupted notice (written now, so updatedAt moves on)
  const interrupted = await arbor.session('interrupted').load();
  assert.deepEqual(texts(interrupted), [
    ['interrupted-u1', 'user', 'Tell me a long story.'],
    ['interrupted-a1:interrupted', 'system', INTERRUPTED_NOTICE_CONTENT],
  ]);
  assert.equal(interrupted.stream.status, 'idle');
  assert.equal(interrupted.createdAt, at(13));
  assert.ok(interrupted.updatedAt >= interrupted.messages[1]!.ts && interrupted.messages[1]!.ts > at(14));

  // and no session failed: the v1 snapshots went through the upcaster
  for (const r of arbor.recoveryReport().sessions) assert.equal(r.status, 'recovered', `${r.sid}: ${r.error}`);
});

test('arbor inspect rebuilds a session of the v1 fixture through the same upcaster (read-only)', async () => {
  // when
  const r = await inspectSession('snapshotted', { dataDir: FIXTURE });
  // then
  assert.equal(r.state.problem, undefined);
  assert.deepEqual([r.state.fromSnapshotSeq, r.state.replayed, r.state.seq, r.state.messages.total], [7, 3, 10, 6]);
  assert.deepEqual([r.state.createdAt, r.state.updatedAt], [at(0), at(9)]);
});

test('a state-version-1 session goes on after the upgrade, and its next snapshot is read back as the current version', async (t) => {
  // given the v1 fixture, opened once and written to
  const { dir, cleanup } = tempDir();
  cpSync(FIXTURE, dir, { recursive: true });
  const llm = new MockProvider({ chunks: 2, chunkDelayMs: 0 });
  let arbor = await createArbor({ dataDir: dir, llm });
  const session = arbor.session('snapshotted');
  const ack = await session.sendMessage({ content: 'One more?' });
  await session.idle();
  const before = session.state;
  // when it closes (final snapshots, now of the current version) and opens again
  await arbor.close();
  // (the header's stateSchemaVersion, a u32 at offset 12: docs/ on the snapshot format)
  const newest = readdirSync(join(dir, 'snapshots')).filter((f) => f.startsWith('snapshotted.') && f.endsWith('.snap')).sort().at(-1)!;
  assert.equal(readFileSync(join(dir, 'snapshots', newest)).readUInt32LE(12), 3);
  arbor = await createArbor({ dataDir: dir, llm });
  t.after(async () => {
    await arbor.close();
    cleanup();
  });
  const after = await arbor.session('snapshotted').load();
  // then the state is the same, and updatedAt is the time of the last event
  assert.deepEqual(after, before);
  assert.equal(after.createdAt, at(0));
  assert.ok(after.updatedAt >= after.messages.find((m) => m.id === ack.messageId)!.ts);
  assert.equal(after.updatedAt, after.messages.at(-1)!.ts);
});

test('on PostgreSQL a snapshot of state version 1 goes through the same upcaster when createArbor loads the session', { skip: pgSkip }, async (t) => {
  const schema = freshSchemaName('sv');
  dropSchemaAtEnd(schema);
  // given a session written and snapshotted as state version 1 (the hooks of that version: no upcaster, version 1)
  const sid = 'pg-v1';
  const v1 = await openPgBackend<unknown>({ connectionString: PG_URL!, schema, nodeId: 'writer', hooks: { initialState: initialSessionState, reducer: reduceSession as never } });
  assert.equal(await v1.loadSession(sid), undefined);
  let state = initialSessionState(sid);
  for (const [i, data] of [
    { messageId: 'u1', content: 'first' },
    { messageId: 'u2', content: 'second' },
  ].entries()) {
    const r = await v1.append({ sid, type: 'user_message_sent', data, ts: at(i) });
    state = reduceSession(state, { lsn: 0, sid, seq: r.seq, ts: at(i), type: 'user_message_sent', v: 1, data });
  }
  const { createdAt: _c, updatedAt: _u, ...asStoredByV1 } = state;
  await v1.snapshot(sid, asStoredByV1, 2);
  await v1.append({ sid, type: 'user_message_sent', data: { messageId: 'u3', content: 'third' }, ts: at(5) });
  await v1.close();
  // when today's runtime loads it
  const arbor = await createArbor({ llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }), postgres: { connectionString: PG_URL!, schema, nodeId: 'reader' } });
  t.after(() => arbor.close());
  const loaded = await arbor.session(sid).load();
  // then the messages are intact and the v2 fields come from the upcast snapshot plus the replayed event
  assert.deepEqual(loaded.messages.filter((m) => m.role === 'user').map((m) => m.content), ['first', 'second', 'third']);
  assert.deepEqual([loaded.createdAt, loaded.updatedAt >= at(5)], [at(0), true]);
  assert.equal(arbor.recoveryReport().sessions.find((r) => r.sid === sid)?.status ?? 'recovered', 'recovered');
});

// A data directory written while the session state was version 2 (test/fixtures/state-v2, made by its make-fixture.ts).
const FIXTURE_V2 = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'state-v2', 'arbor-data');

test('a data dir of state version 2 opens with createArbor: every message intact, with parts; history as UIMessages', async (t) => {
  // given a copy of the v2 fixture
  const { dir, cleanup } = tempDir();
  cpSync(FIXTURE_V2, dir, { recursive: true });
  // when today's runtime opens it
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }) });
  t.after(async () => {
    await arbor.close();
    cleanup();
  });
  // then the snapshotted session (v2 snapshot at seq 8 + an interrupted turn from the journal) is whole
  const s = await arbor.session('snapshotted').load();
  assert.deepEqual(texts(s), [
    ['v2-u1', 'user', 'What is a part?'],
    ['v2-a1', 'assistant', 'A piece of a message.'],
    ['v2-u2', 'user', 'Say nothing.'],
    ['v2-a2', 'assistant', ''],
    ['v2-n1', 'system', 'Restored from a backup.'],
    ['v2-u3', 'user', 'And then?'],
    ['v2-a3:interrupted', 'system', INTERRUPTED_NOTICE_CONTENT],
  ]);
  assert.deepEqual([s.seq, s.createdAt, s.updatedAt], [11, at(0), at(10)]);
  assert.deepEqual(s.messages[2]!.metadata, { lang: 'en', clientMessageId: 'client-2' });
  assert.deepEqual(s.config, { system: 'Be brief.' });
  // and the history as UIMessages: the user message keeps its client id, the empty answer has no parts
  const ui = arbor.session('snapshotted').uiMessages();
  assert.deepEqual(ui.map((m) => [m.id, m.role, m.parts.map((p) => p.text)]), [
    ['v2-u1', 'user', ['What is a part?']],
    ['v2-a1', 'assistant', ['A piece of a message.']],
    ['client-2', 'user', ['Say nothing.']],
    ['v2-a2', 'assistant', []],
    ['v2-n1', 'system', ['Restored from a backup.']],
    ['v2-u3', 'user', ['And then?']],
    ['v2-a3:interrupted', 'system', [INTERRUPTED_NOTICE_CONTENT]],
  ]);
  // and the session snapshotted mid-stream (a v2 stream in flight) gets its notice, and answers again
  const streaming = await arbor.session('streaming').load();
  assert.deepEqual(texts(streaming), [
    ['streaming-u1', 'user', 'Tell me a long story.'],
    ['streaming-a1:interrupted', 'system', INTERRUPTED_NOTICE_CONTENT],
  ]);
  await arbor.session('streaming').retry();
  await arbor.session('streaming').idle();
  const answered = arbor.session('streaming').state;
  assert.equal(answered.messages.at(-1)!.role, 'assistant');
  assert.ok(answered.messages.at(-1)!.parts.length > 0);
  for (const r of arbor.recoveryReport().sessions) assert.equal(r.status, 'recovered', `${r.sid}: ${r.error}`);
});
