/**
 * ArborSaver through its package entry, beyond LangGraph's conformance suite:
 * every checkpoint of a long thread comes back after a restart (rebuilt from a
 * snapshot plus deltas), bytes grow linearly, retention keeps the newest N,
 * thread ids that are not session ids round-trip, and bad input is refused
 * with ARBOR_INVALID_INPUT.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { emptyCheckpoint, uuid6, type Checkpoint } from '@langchain/langgraph-checkpoint';
import { AIMessage, HumanMessage, type BaseMessage } from '@langchain/core/messages';
import { ArborSaver } from '../src/langgraph.ts';
import { tempDir } from './helpers/tmp.ts';

function dirBytes(dir: string): number {
  let total = 0;
  for (const e of readdirSync(dir, { recursive: true, withFileTypes: true })) if (e.isFile()) total += statSync(join(e.parentPath, e.name)).size;
  return total;
}

/** Puts `steps` checkpoints of one thread, each with the messages so far (two more per step), as a message graph does. */
async function grow(saver: ArborSaver, threadId: string, steps: number): Promise<{ ids: string[]; messagesAt: BaseMessage[][] }> {
  let config = { configurable: { thread_id: threadId, checkpoint_ns: '' } } as { configurable: Record<string, unknown> };
  const messages: BaseMessage[] = [];
  const ids: string[] = [];
  const messagesAt: BaseMessage[][] = [];
  for (let s = 1; s <= steps; s += 1) {
    messages.push(new HumanMessage({ id: `h${s}`, content: `question ${s} ${'x'.repeat(200)}` }), new AIMessage({ id: `a${s}`, content: `answer ${s} ${'y'.repeat(400)}` }));
    const cp: Checkpoint = { ...emptyCheckpoint(), id: uuid6(-1), channel_values: { messages: [...messages], step: s }, channel_versions: { messages: s, step: s } };
    config = (await saver.put(config, cp, { source: 'loop', step: s, parents: {} }, { messages: s, step: s })) as typeof config;
    await saver.putWrites(config, [['messages', [new AIMessage({ id: `w${s}`, content: 'pending' })]]], `task-${s}`);
    ids.push(cp.id);
    messagesAt.push([...messages]);
  }
  return { ids, messagesAt };
}

const plain = (ms: unknown[]) => (ms as BaseMessage[]).map((m) => [m.getType(), m.id, m.content]);

test('every checkpoint of a long thread comes back after a restart, rebuilt from a snapshot and deltas', async (t) => {
  const { dir, cleanup } = tempDir('arbor-lg-saver-');
  const threadId = 'user 42 / conversation #7 (ünïcode)';
  let saver = await ArborSaver.open({ dataDir: dir, snapshotEvery: 25 });
  const { ids, messagesAt } = await grow(saver, threadId, 120);
  await saver.close();
  assert.ok(readdirSync(join(dir, 'snapshots'), { recursive: true }).some((f) => String(f).endsWith('.snap')), 'a snapshot was written');

  saver = await ArborSaver.open({ dataDir: dir });
  t.after(async () => {
    await saver.close();
    cleanup();
  });
  const latest = await saver.getTuple({ configurable: { thread_id: threadId } });
  assert.equal(latest?.checkpoint.id, ids.at(-1));
  assert.equal(latest?.config.configurable?.thread_id, threadId);
  for (const at of [0, 1, 57, 118, 119]) {
    const tuple = await saver.getTuple({ configurable: { thread_id: threadId, checkpoint_ns: '', checkpoint_id: ids[at] } });
    assert.deepEqual(plain(tuple!.checkpoint.channel_values.messages as unknown[]), plain(messagesAt[at]!), `checkpoint ${at}`);
    assert.equal(tuple!.checkpoint.channel_values.step, at + 1);
    assert.deepEqual(tuple!.pendingWrites?.map(([task, ch]) => [task, ch]), [[`task-${at + 1}`, 'messages']]);
    if (at > 0) assert.equal(tuple!.parentConfig?.configurable?.checkpoint_id, ids[at - 1]);
  }
  const listed = [];
  for await (const tuple of saver.list({ configurable: { thread_id: threadId } }, { limit: 3 })) listed.push(tuple.checkpoint.id);
  assert.deepEqual(listed, ids.slice(-3).reverse());
});

test('bytes on disk grow linearly with the thread: 4x the steps is about 4x the bytes, not 16x', async (t) => {
  const small = tempDir('arbor-lg-bytes-');
  const large = tempDir('arbor-lg-bytes-');
  t.after(() => {
    small.cleanup();
    large.cleanup();
  });
  for (const [where, steps] of [[small.dir, 50], [large.dir, 200]] as const) {
    const saver = await ArborSaver.open({ dataDir: where });
    await grow(saver, 'linear', steps);
    await saver.close();
  }
  const ratio = dirBytes(large.dir) / dirBytes(small.dir);
  assert.ok(ratio < 6, `200 steps take ${ratio.toFixed(2)}x the bytes of 50 steps (quadratic storage would be ~16x)`);
});

test('retention: N keeps the newest N checkpoints of a thread, also after a snapshot and a restart', async (t) => {
  const { dir, cleanup } = tempDir('arbor-lg-retention-');
  let saver = await ArborSaver.open({ dataDir: dir, retention: 3, snapshotEvery: 5 });
  const { ids, messagesAt } = await grow(saver, 'kept', 30);
  await saver.close();
  saver = await ArborSaver.open({ dataDir: dir, retention: 3 });
  t.after(async () => {
    await saver.close();
    cleanup();
  });
  const listed = [];
  for await (const tuple of saver.list({ configurable: { thread_id: 'kept' } })) listed.push(tuple);
  assert.deepEqual(listed.map((x) => x.checkpoint.id), ids.slice(-3).reverse());
  assert.deepEqual(plain(listed.at(-1)!.checkpoint.channel_values.messages as unknown[]), plain(messagesAt[27]!));
  assert.equal(await saver.getTuple({ configurable: { thread_id: 'kept', checkpoint_ns: '', checkpoint_id: ids[0] } }), undefined);
});

test('deleteThread removes the thread; other threads stay', async (t) => {
  const { dir, cleanup } = tempDir('arbor-lg-delete-');
  const saver = await ArborSaver.open({ dataDir: dir });
  t.after(async () => {
    await saver.close();
    cleanup();
  });
  await grow(saver, 'a thread', 3);
  await grow(saver, 'b', 2);
  await saver.deleteThread('a thread');
  assert.equal(await saver.getTuple({ configurable: { thread_id: 'a thread' } }), undefined);
  const threads = new Set<string>();
  for await (const tuple of saver.list({})) threads.add(String(tuple.config.configurable?.thread_id));
  assert.deepEqual([...threads], ['b']);
});

test('bad input is refused with ARBOR_INVALID_INPUT, naming the field', async (t) => {
  const { dir, cleanup } = tempDir('arbor-lg-invalid-');
  await assert.rejects(ArborSaver.open({ dataDir: dir, retention: 0 }), (err: { code?: string; details?: { field?: string } }) => err.code === 'ARBOR_INVALID_INPUT' && err.details?.field === 'retention');
  await assert.rejects(ArborSaver.open({}), (err: { code?: string; details?: { field?: string } }) => err.code === 'ARBOR_INVALID_INPUT' && err.details?.field === 'dataDir');
  const saver = await ArborSaver.open({ dataDir: dir });
  t.after(async () => {
    await saver.close();
    cleanup();
  });
  const cp = { ...emptyCheckpoint(), id: uuid6(-1) };
  await assert.rejects(saver.put({ configurable: {} }, cp, { source: 'input', step: -1, parents: {} }, {}), (err: { code?: string; details?: { field?: string } }) => err.code === 'ARBOR_INVALID_INPUT' && err.details?.field === 'configurable.thread_id');
  await assert.rejects(saver.putWrites({ configurable: { thread_id: 'x' } }, [], 't'), (err: { code?: string; details?: { field?: string } }) => err.code === 'ARBOR_INVALID_INPUT' && err.details?.field === 'configurable.checkpoint_id');
});

test('maxThreadsInMemory: threads beyond it are dropped from memory when idle and load again, with nothing lost', async (t) => {
  const { dir, cleanup } = tempDir('arbor-lg-evict-');
  const saver = await ArborSaver.open({ dataDir: dir, maxThreadsInMemory: 2 });
  t.after(async () => {
    await saver.close();
    cleanup();
  });
  const runs = await Promise.all(['t1', 't2', 't3', 't4', 't5'].map((id) => grow(saver, id, 4)));
  // a second round on every thread, after the others pushed it out of memory
  for (const id of ['t1', 't2', 't3', 't4', 't5']) {
    const latest = await saver.getTuple({ configurable: { thread_id: id } });
    assert.equal(latest?.checkpoint.id, runs[Number(id.slice(1)) - 1]!.ids.at(-1), id);
    assert.equal((latest?.checkpoint.channel_values.messages as unknown[]).length, 8);
  }
  const more = await grow(saver, 't1', 2);
  const latest = await saver.getTuple({ configurable: { thread_id: 't1' } });
  assert.equal(latest?.checkpoint.id, more.ids.at(-1));
  let count = 0;
  for await (const _ of saver.list({ configurable: { thread_id: 't1' } })) count += 1;
  assert.equal(count, 6);
  await assert.rejects(ArborSaver.open({ dataDir: dir, maxThreadsInMemory: 0 }), (err: { code?: string; details?: { field?: string } }) => err.code === 'ARBOR_INVALID_INPUT' && err.details?.field === 'maxThreadsInMemory');
});
