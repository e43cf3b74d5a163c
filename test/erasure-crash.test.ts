import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../src/index.ts';
import { MemoryFileSystem, mulberry32 } from '../src/testing.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';

// Erasure rewrites journal segments in place (temp, fdatasync, rename, directory sync) and the
// tombstone goes last. A power cut after any filesystem call of an erasure pass must leave a store
// that opens without damage, keeps every record of the other sessions, shows nothing of the deleted
// one, and finishes the erasure on the next start.

const MARK = 'DEADBEEF-erasure-mark';
const DIR = '/data';

async function open(fs: MemoryFileSystem): Promise<Store<ChatState>> {
  // erasureDeadlineMs is long: the test runs each pass itself (run()), not the timer
  return openStore<ChatState>({ dataDir: DIR, fs, journalMaxSizeMb: 0.004, erasureDeadlineMs: 60_000 }, hooks);
}

/** The bytes of every file under the data directory that contain `needle`. */
async function filesWith(fs: MemoryFileSystem, needle: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string): Promise<void> => {
    for (const name of await fs.readdir(d)) {
      const p = `${d}/${name}`;
      if ((await fs.stat(p)).isDirectory) await walk(p);
      else if (Buffer.from(await fs.readFile(p)).includes(Buffer.from(needle))) out.push(p);
    }
  };
  await walk(DIR);
  return out;
}

test('a power cut after every filesystem call of an erasure pass: no damage, nothing lost, nothing of the deleted session, and the next start finishes the erasure', async () => {
  // given a store with a deleted session interleaved with a live one over several segments
  const base = new MemoryFileSystem();
  const store = await open(base);
  const liveNs: number[] = [];
  for (let n = 1; n <= 40; n += 1) {
    await store.append({ sid: 'dead', type: 'user_message_sent', data: { n, text: `${MARK} ${'d'.repeat(120)}` } });
    await store.append({ sid: 'live', type: 'user_message_sent', data: { n: n * 10, text: 'l'.repeat(120) } });
    liveNs.push(n * 10);
  }
  assert.ok(store.journal.segmentNames().length >= 3, 'several segments');
  await store.deleteSession('dead');
  await store.close();
  assert.ok((await filesWith(base, MARK)).length > 0, 'the bytes are still there before erasure');
  // how many calls a whole pass makes, from a clean start
  const probe = base.crashImageWith(base.pendingCount(), 'none');
  const probeStore = await open(probe);
  const before = probe.callCount;
  await probeStore.erasure.run();
  const passCalls = probe.callCount - before;
  await probeStore.close();
  assert.ok(passCalls > 10, `a pass makes calls (${passCalls})`);
  const rng = mulberry32(12);
  for (let k = 0; k <= passCalls; k += 1) {
    // when the process dies after call k of the pass, and the power goes (a random prefix of what was not synced)
    const fs = base.crashImageWith(base.pendingCount(), 'none');
    const s = await open(fs);
    fs.freezeAfter(fs.callCount + k);
    void s.erasure.run().catch(() => undefined);
    for (let i = 0; i < 10_000 && !fs.frozen && s.erasure.pending().length > 0; i += 1) await new Promise<void>((r) => setImmediate(r));
    const crashed = fs.crashImage(rng);
    // then the next start opens without damage, with every record of the live session and nothing of the dead one
    const again = await open(crashed);
    assert.deepEqual(again.recoveryReport().journal.damage, [], `after call ${k}: no damage`);
    assert.deepEqual((await again.loadSession('live'))?.state.ns, liveNs, `after call ${k}: the live session is whole`);
    assert.equal(await again.exists('dead'), false, `after call ${k}: the deleted session stays deleted`);
    // and its erasure completes
    await again.erasure.run();
    assert.deepEqual(again.erasure.pending(), []);
    assert.deepEqual(await filesWith(crashed, MARK), [], `after call ${k}: erased`);
    await again.close();
    const last = await open(crashed);
    assert.deepEqual((await last.loadSession('live'))?.state.ns, liveNs);
    assert.deepEqual(last.recoveryReport().journal.damage, []);
    await last.close();
  }
});
