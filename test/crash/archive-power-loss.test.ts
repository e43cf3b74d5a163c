import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openStore, type Store } from '../../src/index.ts';
import { ForwardingFileSystem, MemoryFileSystem, mulberry32 } from '../../src/testing.ts';
import type { FileSystem } from '../../src/storage/fs-port.ts';
import { hooks, type ChatState } from './power-loss-harness.ts';

// The journal archive (journalArchiveDir): a segment is copied into the archive and synced (file, then
// directory) before the journal unlinks it. A power cut after any filesystem call of "archive the sealed
// segments, snapshot, delete the released ones" must leave every segment of the log either in the journal
// or, whole, in the archive; the store then opens without damage and with every acknowledged event.

const DIR = '/data';
const ARCHIVE = '/archive';
const OUTCOMES = 3;

function open(fs: FileSystem, archive: boolean): Promise<Store<ChatState>> {
  return openStore<ChatState>({ dataDir: DIR, fs, journalMaxSizeMb: 0.004, ...(archive ? { journalArchiveDir: ARCHIVE } : {}) }, hooks);
}

/** The archive's directory entries skip their sync: a copy may vanish with the power although the journal deleted its segment. */
class ArchiveDirSyncSkipped extends ForwardingFileSystem {
  override syncDir(p: string): Promise<void> {
    return p.startsWith(ARCHIVE) ? Promise.resolve() : super.syncDir(p);
  }
}

async function names(fs: FileSystem, dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).filter((n) => n.endsWith('.wal')).sort();
  } catch {
    return [];
  }
}

/** Crashes the workload at every fs call; returns the violations found. */
async function crashEverywhere(wrap: (fs: MemoryFileSystem) => FileSystem, stopAfterViolation: boolean): Promise<{ violations: string[]; calls: number }> {
  // given a journal of several sealed segments written before the archive was turned on
  const base = new MemoryFileSystem();
  const writer = await open(base, false);
  const ns: number[] = [];
  for (let n = 1; n <= 50; n += 1) {
    await writer.append({ sid: 'a', type: 'user_message_sent', data: { n, text: 'a'.repeat(150) } });
    ns.push(n);
  }
  const segments = new Map<string, Buffer>();
  for (const name of await names(base, `${DIR}/journals`)) segments.set(name, Buffer.from(await base.readFile(`${DIR}/journals/${name}`)));
  await writer.close();
  assert.ok(segments.size >= 4, `several segments (${segments.size})`);
  const workload = async (s: Store<ChatState>): Promise<void> => {
    // the sealed segments found at open are archived in the background; the snapshot releases them and they are deleted
    const r = await s.loadSession('a');
    await s.snapshot('a', r!.state, r!.seq);
    await s.archive.settled();
  };
  // how many calls the workload makes, from a clean image
  const probeFs = base.crashImageWith(base.pendingCount(), 'none');
  const probe = await open(wrap(probeFs), true);
  const before = probeFs.callCount;
  await workload(probe);
  const calls = probeFs.callCount - before;
  assert.ok((await names(probeFs, `${DIR}/journals`)).length < segments.size, 'the workload deletes segments');
  await probe.close();
  const violations: string[] = [];
  const rng = mulberry32(0xa4c);
  for (let k = 0; k <= calls; k += 1) {
    for (let o = 0; o < OUTCOMES; o += 1) {
      const fs = base.crashImageWith(base.pendingCount(), 'none');
      const s = await open(wrap(fs), true);
      fs.freezeAfter(fs.callCount + k);
      let done = false;
      void workload(s).then(() => (done = true), () => undefined);
      for (let i = 0; i < 10_000 && !fs.frozen && !done; i += 1) await new Promise<void>((r) => setImmediate(r));
      const crashed = fs.crashImage(rng);
      // then every segment is in the journal or, byte for byte, in the archive
      const live = new Set(await names(crashed, `${DIR}/journals`));
      const archived = new Set(await names(crashed, ARCHIVE));
      for (const [name, bytes] of segments) {
        if (archived.has(name) && !Buffer.from(await crashed.readFile(`${ARCHIVE}/${name}`)).equals(bytes)) violations.push(`after call ${k}: the archived ${name} is not whole`);
        if (!live.has(name) && !archived.has(name)) violations.push(`after call ${k}: ${name} is neither in the journal nor in the archive`);
      }
      // and the store opens without damage, with every event
      try {
        const again = await open(crashed, true);
        if (again.recoveryReport().journal.damage.length > 0) violations.push(`after call ${k}: damage ${JSON.stringify(again.recoveryReport().journal.damage)}`);
        const got = (await again.loadSession('a'))?.state.ns;
        if (JSON.stringify(got) !== JSON.stringify(ns)) violations.push(`after call ${k}: session a is ${JSON.stringify(got)}`);
        await again.close();
      } catch (err) {
        violations.push(`after call ${k}: reopening failed: ${(err as Error).message}`);
      }
      if (stopAfterViolation && violations.length > 0) return { violations, calls };
    }
  }
  return { violations, calls };
}

test('power loss at every fs call of archiving and deleting segments: every segment survives, in the journal or whole in the archive', async () => {
  const { violations, calls } = await crashEverywhere((fs) => fs, false);
  assert.ok(calls > 20, `the workload made ${calls} fs calls`);
  assert.deepEqual(violations, []);
});

test('negative control: an archive whose directory sync is skipped loses segments under the same harness', async () => {
  const { violations } = await crashEverywhere((fs) => new ArchiveDirSyncSkipped(fs), true);
  assert.ok(violations.length > 0, 'the harness did not catch the missing directory sync');
});
