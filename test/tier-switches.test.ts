import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createArbor, MockProvider } from '../src/index.ts';
import { MemoryFileSystem, mulberry32 } from '../src/testing.ts';
import { tempDir } from './helpers/tmp.ts';

// The seed's three switches really turn a tier off; each test shows what that costs.

const llm = () => new MockProvider({ chunks: 2, chunkDelayMs: 0 });

function bytesIn(dir: string): number {
  return readdirSync(dir).reduce((sum, name) => sum + statSync(join(dir, name)).size, 0);
}

test('enableJournal: false writes no event to the journal; a clean close keeps everything, a crash loses what no snapshot holds', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const arbor = await createArbor({ dataDir: dir, llm: llm(), enableJournal: false });
  const journalBytes = bytesIn(join(dir, 'journals'));
  const chat = arbor.session('j');
  await chat.sendMessage({ content: 'one', clientMessageId: 'one' });
  await chat.idle();
  assert.equal(chat.state.seq, 3);
  assert.equal(bytesIn(join(dir, 'journals')), journalBytes, 'the journal grew although it is off');
  await arbor.close();
  const again = await createArbor({ dataDir: dir, llm: llm(), enableJournal: false });
  assert.equal((await again.session('j').load()).seq, 3, 'the close-time snapshot keeps the session');
  assert.equal((await again.session('j').sendMessage({ content: 'one', clientMessageId: 'one' })).duplicate, true);
  await again.close();

  // the cost: a crash loses every event since the last snapshot
  const fs = new MemoryFileSystem();
  const crashed = await createArbor({ dataDir: '/data', fs, llm: llm(), enableJournal: false, snapshotEveryEvents: 1000 });
  await crashed.session('lost').sendMessage({ content: 'acknowledged, then lost' });
  await crashed.session('lost').idle();
  const image = fs.crashImage(mulberry32(1));
  const after = await createArbor({ dataDir: '/data', fs: image, llm: llm(), enableJournal: false });
  assert.equal((await after.session('lost').load()).seq, 0);
  await after.close();
  await crashed.close();
});

test('enableSnapshots: false writes no snapshot; recovery replays the whole journal', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const arbor = await createArbor({ dataDir: dir, llm: llm(), enableSnapshots: false, snapshotEveryEvents: 2 });
  for (let i = 0; i < 3; i += 1) await arbor.session('s').sendMessage({ content: `m${i}` });
  await arbor.session('s').idle();
  assert.equal(await arbor.passivate('s'), true);
  await arbor.close();
  assert.deepEqual(readdirSync(join(dir, 'snapshots')), []);
  const again = await createArbor({ dataDir: dir, llm: llm(), enableSnapshots: false });
  const state = await again.session('s').load();
  assert.equal(state.seq, 9);
  assert.equal(state.messages.length, 6);
  const report = await again.whenRecovered();
  assert.equal(report.sessions.find((r) => r.sid === 's')?.replayed, 9);
  await again.close();
});

test('enableHotStorage: false drops each session from memory once its work is done, and loads it back per command', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const arbor = await createArbor({ dataDir: dir, llm: llm(), enableHotStorage: false, snapshotEveryEvents: 4 });
  const chat = arbor.session('h');
  for (let i = 0; i < 3; i += 1) {
    await chat.sendMessage({ content: `m${i}` });
    await chat.idle();
    // eviction runs after the command (and a snapshot, at the threshold): wait for it, within reason
    for (let k = 0; k < 500 && arbor.health().hot.sessions > 0; k += 1) await new Promise((r) => setTimeout(r, 10));
    assert.equal(arbor.health().hot.sessions, 0, `turn ${i}: the session stayed in memory`);
  }
  // the handle still shows the state it was dropped with, and the next command continues from disk
  assert.equal(chat.state.seq, 9);
  assert.equal((await chat.changeConfig('k', 1)).seq, 10);
  await arbor.close();
  const again = await createArbor({ dataDir: dir, llm: llm() });
  assert.equal((await again.session('h').load()).seq, 10);
  await again.close();
  // and recovery after a restart does not fill memory either: the session is loaded when it is used
  const cold = await createArbor({ dataDir: dir, llm: llm(), enableHotStorage: false });
  await cold.whenRecovered();
  assert.equal(cold.health().hot.sessions, 0);
  assert.equal((await cold.session('h').load()).seq, 10);
  await cold.close();
});

test('turning both the journal and snapshots off is refused at start, naming both options', async () => {
  await assert.rejects(createArbor({ dataDir: '/data', fs: new MemoryFileSystem(), enableJournal: false, enableSnapshots: false }), /enableJournal and enableSnapshots cannot both be false/);
});
