import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, type Store } from '../src/file/store.ts';
import { ArborError, isArborError } from '../src/core/errors.ts';
import { MemoryFileSystem, mulberry32 } from '../src/testing/memory-fs.ts';
import { hooks, Ledger, type ChatState } from './crash/power-loss-harness.ts';

// For each public operation (open, append, rotation, snapshot, segment deletion, close), fail the k-th
// fs call for every k, once and persistent. No failed operation may be acknowledged; once the fault
// clears and the store reopens, everything acknowledged is there — also after a power cut on a disk
// whose failed fsync dropped the data (the "retried fsync lies" case).

const OPTIONS = { dataDir: '/data', journalMaxSizeMb: 4096 / 1024 / 1024, maxSnapshotsPerSession: 1, journalFlushIntervalMs: 3_600_000 };

interface Outcome {
  ledger: Ledger;
  errors: unknown[];
}

/** Every public operation once, continuing past failures the way an application would. */
async function workload(fs: MemoryFileSystem): Promise<Outcome> {
  const ledger = new Ledger();
  const errors: unknown[] = [];
  let store: Store<ChatState> | undefined;
  try {
    store = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  } catch (err) {
    errors.push(err);
    return { ledger, errors };
  }
  for (let round = 0; round < 4; round += 1) {
    const all: Promise<void>[] = [];
    for (const sid of ['a', 'b']) for (let i = 0; i < 2; i += 1) all.push(ledger.append(store, sid, i === 0, 700).catch((err: unknown) => void errors.push(err)));
    await Promise.all(all);
    if (round === 2) {
      for (const [sid, ns] of ledger.issued) {
        const acked = ledger.acked.get(sid)?.length ?? 0;
        if (acked === ns.length) await store.snapshot(sid, { ns }, ns.length).catch((err: unknown) => void errors.push(err));
      }
    }
  }
  await store.close().catch((err: unknown) => void errors.push(err));
  return { ledger, errors };
}

async function countCalls(): Promise<number> {
  const fs = new MemoryFileSystem();
  const { errors } = await workload(fs);
  assert.deepEqual(errors, []);
  return fs.callCount;
}

async function assertAckedPresent(fs: MemoryFileSystem, ledger: Ledger, where: string): Promise<void> {
  const store = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  try {
    const report = store.recoveryReport();
    assert.equal(report.counts.damaged + report.counts.failed, 0, `${where}: ${JSON.stringify(report.sessions)}`);
    for (const [sid, issued] of ledger.issued) {
      const ns = store.recovered.get(sid)?.state.ns ?? [];
      assert.deepEqual(ns, issued.slice(0, ns.length), `${where}: session ${sid} recovered a wrong event`);
      const needed = Math.max(0, ...(ledger.acked.get(sid) ?? []).map((a) => a.seq));
      assert.ok(ns.length >= needed, `${where}: session ${sid} has ${ns.length} events, seq ${needed} was acknowledged`);
    }
  } finally {
    await store.close();
  }
}

for (const persistent of [false, true]) {
  for (const error of ['EIO', 'ENOSPC'] as const) {
    test(`I/O errors: the k-th fs call fails with ${error} (${persistent ? 'persistent' : 'once'}) for every k: nothing acknowledged is lost`, async () => {
      const total = await countCalls();
      const rng = mulberry32(persistent ? 11 : 17);
      let failedOps = 0;
      for (let k = 1; k <= total; k += 1) {
        // given a fault at call k, with failed fsyncs dropping the file's unsynced data as Linux does
        const fs = new MemoryFileSystem({ fsyncErrorLosesData: true });
        fs.injectFault({ at: k, error, persistent });
        // when the application runs every public operation
        const { ledger, errors } = await workload(fs);
        // then every failure is a coded error, never a silent acknowledgement
        for (const err of errors) {
          assert.ok(err instanceof ArborError || (err as { code?: string }).code === error, `k=${k}: unexpected ${String(err)}`);
          if (isArborError(err)) assert.match(err.code, /^ARBOR_/);
        }
        if (errors.length > 0) failedOps += 1;
        fs.clearFaults();
        // and after the fault clears and the store reopens, everything acknowledged is there
        await assertAckedPresent(fs, ledger, `k=${k}`);
        // and so it is after a power cut at that point
        for (let o = 0; o < 5; o += 1) await assertAckedPresent(fs.crashImage(rng), ledger, `k=${k} crash ${o}`);
      }
      assert.ok(failedOps > total / 2, `only ${failedOps} of ${total} fault points made an operation fail`);
    });
  }
}

test('after a failed fdatasync the journal refuses everything until reopened (no retry-and-trust)', async () => {
  // given a store whose next data sync fails once
  const fs = new MemoryFileSystem({ fsyncErrorLosesData: true });
  const store = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  await store.append({ sid: 'a', type: 't', data: { n: 1 } });
  fs.injectFault({ op: 'datasync', error: 'EIO' });
  // when an append's batch fails to sync
  await assert.rejects(store.append({ sid: 'a', type: 't', data: { n: 2 } }), (err: unknown) => isArborError(err, 'ARBOR_IO_ERROR'));
  // then later appends are refused although the disk is fine again
  await assert.rejects(store.append({ sid: 'a', type: 't', data: { n: 3 } }), (err: unknown) => isArborError(err, 'ARBOR_JOURNAL_FAILED'));
  assert.equal(store.journal.state, 'failed');
  await store.close();
  // and a reopened store has the acknowledged event and accepts appends again
  const reopened = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  assert.deepEqual(reopened.recovered.get('a')!.state.ns.slice(0, 1), [1]);
  const r = await reopened.append({ sid: 'a', type: 't', data: { n: 4 } });
  assert.equal(r.seq, reopened.recovered.get('a')!.seq + 1);
  await reopened.close();
});

test('short writes are completed by the write loop', async () => {
  // given a filesystem that writes at most 7 bytes per call, persistently
  const fs = new MemoryFileSystem();
  const store = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  fs.injectFault({ op: 'write', shortWrite: 7, persistent: true });
  // when events are appended
  for (let n = 1; n <= 5; n += 1) await store.append({ sid: 'a', type: 't', data: { n, text: 'y'.repeat(100) } });
  await store.close();
  fs.clearFaults();
  // then they are all there, intact
  const reopened = await openStore<ChatState>({ ...OPTIONS, fs }, hooks);
  assert.deepEqual(reopened.recovered.get('a')!.state.ns, [1, 2, 3, 4, 5]);
  assert.deepEqual(reopened.recoveryReport().journal.damage, []);
  await reopened.close();
});

const isRoot = process.getuid?.() === 0;

/**
 * Runs `body` on a fresh tmpfs of `size`, then closes every store it opened and
 * only then unmounts: a store still open holds files on the mount, so unmounting
 * first fails with EBUSY, hides the body's own failure and leaves the mount
 * behind. The first failure is the one reported: the body's, else the clean-up's.
 */
async function onTmpfs(size: string, body: (mountPoint: string, open: typeof openStore<ChatState>) => Promise<void>): Promise<void> {
  const mountPoint = mkdtempSync(join(tmpdir(), 'arbor-enospc-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0700`, 'tmpfs', mountPoint]);
  const stores: Store<ChatState>[] = [];
  const failures: unknown[] = [];
  try {
    await body(mountPoint, async (options, storeHooks) => {
      const store = await openStore<ChatState>(options, storeHooks);
      stores.push(store);
      return store;
    });
  } catch (err) {
    failures.push(err);
  }
  // Store.close is idempotent, so closing what the body closed already costs nothing.
  for (const store of stores) await store.close().catch((err: unknown) => failures.push(err));
  try {
    execFileSync('umount', [mountPoint], { stdio: 'pipe' });
    rmSync(mountPoint, { recursive: true, force: true });
  } catch (err) {
    failures.push(err);
    // Still busy (a file the body opened itself): detach it rather than leave it mounted.
    try {
      execFileSync('umount', ['--lazy', mountPoint], { stdio: 'pipe' });
      rmSync(mountPoint, { recursive: true, force: true });
    } catch {
      // The first failure below names the mount point's trouble already.
    }
  }
  if (failures.length > 0) throw failures[0];
}

test('real ENOSPC on a small tmpfs: appends fail with a coded error, acknowledged events survive, writing resumes after reopen', { skip: isRoot ? false : 'needs root to mount a tmpfs' }, async () => {
  // given a data dir on a 256 KiB tmpfs
  await onTmpfs('256k', async (mountPoint, open) => {
    const dataDir = join(mountPoint, 'data');
    const store = await open({ dataDir, journalMaxSizeMb: 1 }, hooks);
    const acked: number[] = [];
    let failure: unknown;
    // when appends fill the disk
    for (let n = 1; n <= 10_000 && failure === undefined; n += 1) {
      try {
        await store.append({ sid: 'a', type: 't', data: { n, text: 'z'.repeat(2000) } });
        acked.push(n);
      } catch (err) {
        failure = err;
      }
    }
    // then the append that hit ENOSPC was refused with a code and nothing after it is accepted
    assert.ok(isArborError(failure, 'ARBOR_IO_ERROR'), `expected ARBOR_IO_ERROR, got ${String(failure)}`);
    await assert.rejects(store.append({ sid: 'a', type: 't', data: { n: -1 } }), (err: unknown) => isArborError(err, 'ARBOR_JOURNAL_FAILED'));
    await store.close();
    // and once space is freed, a reopened store holds every acknowledged event and writes again
    writeFileSync(join(mountPoint, 'probe'), '');
    unlinkSync(join(mountPoint, 'probe'));
    const reopened = await open({ dataDir, journalMaxSizeMb: 1 }, hooks);
    const ns = reopened.recovered.get('a')!.state.ns;
    assert.deepEqual(ns.slice(0, acked.length), acked);
    // (the refused record may have left a torn tail, which open truncated to make room again)
    await reopened.append({ sid: 'a', type: 't', data: { n: 0, text: 'small' } });
    await reopened.close();
  });
});
