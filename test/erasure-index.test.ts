import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { openStore, type Store } from '../src/index.ts';
import { verifyDataDir } from '../src/ops.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';
import { tempDir } from './helpers/tmp.ts';

// Erasure rewrites journal segments; the persisted journal index (journal.idx) names segments by size,
// salt and frame offsets. Neither may bring a deleted session back, lose the index for good, or read as
// LOSS of acknowledged events.

const BASE = { journalMaxSizeMb: 8 / 1024, maxSnapshotsPerSession: 2, erasureDeadlineMs: 60_000 };
const SESSIONS = ['a', 'b', 'c'];
const indexFile = (dir: string): string => join(dir, 'checkpoint', 'journal.idx');

async function write(store: Store<ChatState>, rounds: number): Promise<void> {
  for (let r = 0; r < rounds; r += 1) {
    await Promise.all(SESSIONS.map((sid, i) => store.append({ sid, type: 't', data: { n: r * 10 + i, pad: 'p'.repeat(100) }, ...(r % 3 === 0 ? { clientMessageId: `${sid}-${r}` } : {}) })));
  }
}

/** Opens a copy of `dir` (what a power cut at this moment leaves: everything here was synced). */
async function openCopy(dir: string, t: { after(fn: () => Promise<void>): void }): Promise<Store<ChatState>> {
  const { dir: copy, cleanup } = tempDir('arbor-erase-idx-');
  cpSync(dir, copy, { recursive: true });
  const store = await openStore<ChatState>({ ...BASE, dataDir: copy }, hooks);
  t.after(async () => {
    await store.close();
    cleanup();
  });
  return store;
}

test('a crash after a delete, before erasure: the index written before it is not taken, and the deleted session stays deleted', async (t) => {
  const { dir, cleanup } = tempDir('arbor-erase-idx-');
  const store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
  t.after(async () => {
    await store.close();
    cleanup();
  });
  await write(store, 20);
  await store.writeCheckpoint([]);
  assert.ok(existsSync(indexFile(dir)), 'the checkpoint wrote an index naming b');
  // when b is deleted (tombstone durable, erasure not run yet) and the power fails
  await store.deleteSession('b');
  const after = await openCopy(dir, t);
  // then b is gone, a and c are whole, and the index was refused (it holds b's records without their LSNs)
  assert.equal(after.journal.lastSeq('b'), 0);
  assert.equal(after.recovered.has('b'), false);
  assert.deepEqual([after.journal.lastSeq('a'), after.journal.lastSeq('c')], [20, 20]);
  assert.equal(after.recoveryReport().journal.index?.used, false);
  assert.match(after.recoveryReport().journal.index?.problem ?? '', /await erasure/);
});

test('after an erasure pass rewrote segments: the next checkpoint writes an index that the next open takes, with no LOSS', async (t) => {
  const { dir, cleanup } = tempDir('arbor-erase-idx-');
  const store = await openStore<ChatState>({ ...BASE, dataDir: dir }, hooks);
  t.after(async () => {
    await store.close();
    cleanup();
  });
  await write(store, 20);
  await store.writeCheckpoint([]);
  await store.deleteSession('b');
  await store.erasure.run();
  await store.erasure.whenErased('b');
  // the pass rewrote the segments (the active one too, sealed first) and removed the index naming them
  assert.equal(existsSync(indexFile(dir)), false, 'an index naming the old segments must not outlive the rewrite');
  // when a checkpoint is written right after (nothing appended since: the last settled record was moved by the rewrite)
  await store.writeCheckpoint([]);
  assert.ok(existsSync(indexFile(dir)), 'the checkpoint after the erasure writes a fresh index');
  // and the power fails
  const after = await openCopy(dir, t);
  // then the open takes that index, recovers a and c whole, b not at all, and reports no loss
  const report = after.recoveryReport();
  assert.equal(report.journal.index?.used, true, report.journal.index?.problem);
  assert.equal(report.loss, undefined);
  assert.equal(after.journal.lastSeq('b'), 0);
  assert.deepEqual([after.journal.lastSeq('a'), after.journal.lastSeq('c')], [20, 20]);
  const verified = await verifyDataDir({ dataDir: dir });
  assert.deepEqual(verified.damage.map((d) => d.kind), []);
});
