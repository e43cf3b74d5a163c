/**
 * Listing, paging and forking sessions through the library (`arbor.sessions()`,
 * `session.fork()`), on the file store and on PostgreSQL: the same tests on both.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { createArbor, MockProvider, type Arbor, type ArborOptions } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';
import { rejectsWith } from './helpers/assertions.ts';
import { announcePostgres, dropSchema, freshSchemaName, PG_URL, pgSkip } from './helpers/postgres.ts';

announcePostgres('test/sessions-lifecycle.test.ts');

const mock = (): MockProvider => new MockProvider({ chunks: 2, chunkDelayMs: 0 });
const tick = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 2));

interface Backend {
  name: string;
  skip: string | false;
  /** Opens Arbor on this test's storage; a second call opens it again (after the first was closed), as a restart. */
  storage(t: TestContext): (extra?: ArborOptions) => Promise<Arbor>;
}

const BACKENDS: Backend[] = [
  {
    name: 'file store',
    skip: false,
    storage(t) {
      const { dir, cleanup } = tempDir('arbor-lifecycle-');
      const opened: Arbor[] = [];
      t.after(async () => {
        for (const a of opened) await a.close().catch(() => undefined);
        cleanup();
      });
      return async (extra = {}) => {
        const a = await createArbor({ dataDir: dir, llm: mock(), ...extra });
        opened.push(a);
        return a;
      };
    },
  },
  {
    name: 'postgres',
    skip: pgSkip,
    storage(t) {
      const schema = freshSchemaName('life');
      const opened: Arbor[] = [];
      let node = 0;
      t.after(async () => {
        for (const a of opened) await a.close().catch(() => undefined);
        await dropSchema(schema);
      });
      return async (extra = {}) => {
        const { maxSnapshotsPerSession, ...rest } = extra;
        node += 1;
        const a = await createArbor({ llm: mock(), postgres: { connectionString: PG_URL!, schema, nodeId: `life-${node}`, leaseMs: 5000, ...(maxSnapshotsPerSession === undefined ? {} : { maxSnapshotsPerSession }) }, ...rest });
        opened.push(a);
        return a;
      };
    },
  },
];

for (const b of BACKENDS) {
  test(`${b.name}: arbor.sessions() lists the tenant's sessions, most recently active first, in pages`, { skip: b.skip }, async (t) => {
    const arbor = await b.storage(t)();
    // given three sessions of tenant A, one of tenant B with the same id as one of A's, and one without a tenant
    for (const id of ['a1', 'a2', 'a3']) {
      await arbor.session(id, { tenant: 'A' }).changeConfig('title', `chat ${id}`);
      await tick();
    }
    await arbor.session('a1', { tenant: 'B' }).sendMessage({ content: 'b says hi' });
    await arbor.session('a1', { tenant: 'B' }).idle();
    await arbor.session('plain').sendMessage({ content: 'no tenant' });
    await arbor.session('plain').idle();
    await tick();
    // and a2 becomes the most recently active
    await arbor.session('a2', { tenant: 'A' }).sendMessage({ content: 'hello' });
    await arbor.session('a2', { tenant: 'A' }).idle();
    // when tenant A lists two per page
    const first = await arbor.sessions({ tenant: 'A', limit: 2 });
    const second = await arbor.sessions({ tenant: 'A', limit: 2, cursor: first.nextCursor! });
    // then A sees its own three, most recent first, with their summaries, and nothing of B's or the default space
    assert.deepEqual([...first.sessions, ...second.sessions].map((s) => s.id), ['a2', 'a3', 'a1']);
    assert.equal(second.nextCursor, null);
    const a2 = first.sessions[0]!;
    assert.deepEqual({ title: a2.title, messageCount: a2.messageCount, status: a2.status }, { title: 'chat a2', messageCount: 2, status: 'idle' });
    assert.ok(a2.createdAt > 0 && a2.updatedAt >= a2.createdAt && a2.seq > 0);
    // and B sees its a1 (a different session from A's a1), the default space only its own
    const bList = await arbor.sessions({ tenant: 'B' });
    assert.deepEqual(bList.sessions.map((s) => [s.id, s.messageCount]), [['a1', 2]]);
    assert.deepEqual((await arbor.sessions()).sessions.map((s) => s.id), ['plain']);
    assert.equal(arbor.session('a1', { tenant: 'A' }).state.messages.length, 0);
    // and a cursor of A's is refused for B, a made-up one and a bad limit too, each naming its field
    await rejectsWith(arbor.sessions({ tenant: 'B', cursor: first.nextCursor! }), 'ARBOR_INVALID_INPUT', { field: 'cursor' });
    await rejectsWith(arbor.sessions({ tenant: 'A', cursor: 'bm9wZQ' }), 'ARBOR_INVALID_INPUT', { field: 'cursor' });
    for (const limit of [0, 201, 1.5]) await rejectsWith(arbor.sessions({ limit }), 'ARBOR_INVALID_INPUT', { field: 'limit' });
  });

  test(`${b.name}: session.fork() copies the state at atSeq, links both sessions, leaves the source as it was`, { skip: b.skip }, async (t) => {
    const open = b.storage(t);
    let arbor = await open();
    const source = arbor.session('src', { tenant: 'A' });
    // given a session with a turn, a config change and a permission decision, then a second turn and a changed decision
    await source.changeConfig('model', 'small');
    await source.decidePermission({ permission: 'fs.read', decision: 'granted' });
    await source.sendMessage({ content: 'first question' });
    await source.idle();
    const atSeq = source.state.seq;
    const before = source.state;
    await source.changeConfig('model', 'large');
    await source.decidePermission({ permission: 'fs.read', decision: 'denied' });
    await source.sendMessage({ content: 'second question' });
    await source.idle();
    const sourceBefore = source.state;
    // when it is forked at the end of the first turn
    const fork = await source.fork({ id: 'branch', atSeq });
    // then the fork holds exactly the messages up to atSeq, the config and decision of then, and the link
    assert.deepEqual(fork.state.messages, before.messages);
    assert.equal(fork.state.config.model, 'small');
    assert.equal(fork.state.permissions['fs.read']?.decision, 'granted');
    assert.deepEqual(fork.state.forkedFrom, { sessionId: source.id, atSeq, seq: atSeq + 1 });
    assert.equal(fork.state.seq, atSeq + 1);
    assert.equal(fork, arbor.session('branch', { tenant: 'A' }));
    // and the source is untouched but for its fork_created
    assert.deepEqual(source.state.messages, sourceBefore.messages);
    assert.equal(source.state.config.model, 'large');
    assert.deepEqual(source.state.forks, [{ sessionId: fork.id, atSeq, seq: sourceBefore.seq + 1 }]);
    assert.equal((await source.events({ fromSeq: sourceBefore.seq + 1 }))[0]?.type, 'fork_created');
    // and the fork goes on by itself
    await fork.sendMessage({ content: 'another way' });
    await fork.idle();
    assert.equal(source.state.messages.length, sourceBefore.messages.length);
    // and a default fork copies everything; bad atSeq and a taken id are refused
    const whole = await source.fork();
    assert.deepEqual(whole.state.messages, source.state.messages);
    await rejectsWith(source.fork({ atSeq: source.state.seq + 1 }), 'ARBOR_INVALID_INPUT', { field: 'atSeq' });
    await rejectsWith(source.fork({ atSeq: 0 }), 'ARBOR_INVALID_INPUT', { field: 'atSeq' });
    await rejectsWith(source.fork({ id: 'branch' }), 'ARBOR_SESSION_EXISTS');
    // and after a restart both are there as they were
    const forkState = fork.state;
    await arbor.close();
    arbor = await open();
    assert.deepEqual((await arbor.session('branch', { tenant: 'A' }).load()).messages, forkState.messages);
    assert.deepEqual((await arbor.session('src', { tenant: 'A' }).load()).forks?.map((f) => f.atSeq), [atSeq, sourceBefore.seq + 1]);
    // and the fork lists in its tenant
    assert.ok((await arbor.sessions({ tenant: 'A' })).sessions.some((s) => s.id === 'branch'));
  });

  test(`${b.name}: fork after the source's older events were compacted: from a kept snapshot, else refused naming atSeq`, { skip: b.skip }, async (t) => {
    const arbor = await b.storage(t)({ snapshotEveryEvents: 3, maxSnapshotsPerSession: 2 });
    const s = arbor.session('long');
    const seqAfter: number[] = [];
    for (let i = 0; i < 8; i += 1) {
      await s.changeConfig('step', i);
      seqAfter.push(s.state.seq);
      // every snapshot in turn: the events they cover are released
      await arbor.passivate(s.id);
    }
    const held = await s.events();
    const oldestHeld = held[0]?.seq ?? s.state.seq + 1;
    assert.ok(oldestHeld > 2, `events were compacted (oldest held ${oldestHeld})`);
    // when forking at the newest point (a snapshot), then at a point only an early snapshot covered
    const atLast = await s.fork({ atSeq: seqAfter[7] });
    assert.equal(atLast.state.config.step, 7);
    const fromSnapshot = await s.fork({ atSeq: seqAfter[6] });
    assert.equal(fromSnapshot.state.config.step, 6);
    // then a point no snapshot and no held event can rebuild is refused with the oldest reachable seq
    const err = await rejectsWith(s.fork({ atSeq: 1 }), 'ARBOR_INVALID_INPUT', { field: 'atSeq' });
    assert.equal(typeof err.details.oldestSeq, 'number');
  });
}

test('file store: paging is stable under concurrent writes: no session that existed at the start is repeated or skipped', async (t) => {
  const { dir, cleanup } = tempDir('arbor-paging-');
  const arbor = await createArbor({ dataDir: dir, llm: mock() });
  t.after(async () => {
    await arbor.close();
    cleanup();
  });
  let round = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 8 }),
      fc.integer({ min: 1, max: 4 }),
      // between pages: write to an existing session (by index), or create a new one
      fc.array(fc.array(fc.oneof(fc.nat({ max: 20 }).map((i) => ({ write: i })), fc.constant({ create: true })), { maxLength: 3 }), { maxLength: 6 }),
      async (count, limit, writes) => {
        round += 1;
        const tenant = `p${round}`;
        const ids = Array.from({ length: count }, (_, i) => `s${i}`);
        for (const id of ids) {
          await arbor.session(id, { tenant }).changeConfig('title', id);
          await tick();
        }
        let created = 0;
        const seen: string[] = [];
        let cursor: string | undefined;
        let page = 0;
        do {
          const r = await arbor.sessions({ tenant, limit, ...(cursor === undefined ? {} : { cursor }) });
          seen.push(...r.sessions.map((s) => s.id));
          cursor = r.nextCursor ?? undefined;
          for (const w of writes[page] ?? []) {
            if ('write' in w) {
              const target = arbor.session(ids[w.write % ids.length]!, { tenant });
              await target.sendMessage({ content: `write ${page}` });
              await target.idle();
            } else {
              await arbor.session(`new${(created += 1)}`, { tenant }).changeConfig('title', 'new');
            }
          }
          page += 1;
        } while (cursor !== undefined);
        // every session that existed at the start exactly once; none repeated
        assert.equal(new Set(seen).size, seen.length, `repeated: ${seen}`);
        for (const id of ids) assert.ok(seen.includes(id), `${id} skipped: ${seen}`);
      },
    ),
    { numRuns: 25 },
  );
});
