import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ledger, breakDurability, runHarness, scenarios } from './power-loss-harness.ts';
import { MemoryFileSystem } from '../../src/testing/memory-fs.ts';

// Every durable protocol crashed at every fs call, each crash point × OUTCOMES random power-loss images.
const OUTCOMES = Number(process.env.ARBOR_CRASH_OUTCOMES ?? 200);
let totalStates = 0;

for (const scenario of scenarios) {
  test(`power loss at every fs call × ${OUTCOMES} outcomes: ${scenario.name} (${scenario.durability}) loses no acknowledged event`, async () => {
    // given a deterministic workload; when it dies at each fs call and the disk keeps a random prefix of unsynced operations
    const result = await runHarness(scenario, { outcomes: OUTCOMES, seed: 0x5eed + scenario.name.length });
    totalStates += result.crashStates;
    // then recovery holds every acknowledged (and, in write/buffered, synced) event, in order, no gap, no damage
    assert.deepEqual(result.violations, []);
    assert.equal(result.crashStates, result.crashPoints * OUTCOMES);
    assert.ok(result.crashPoints > 20, `${scenario.name} made only ${result.crashPoints} fs calls`);
  });
}

test('power-loss suite covers at least 50,000 crash states per run', { skip: OUTCOMES < 200 ? 'ARBOR_CRASH_OUTCOMES lowered' : false }, () => {
  assert.ok(totalStates >= 50_000, `only ${totalStates} crash states`);
});

test('scenarios exercise what they are named after: rotation, snapshots and segment deletion happen', async () => {
  // given the rotation and snapshot scenarios run to completion
  const rotate = new MemoryFileSystem();
  await scenarios.find((s) => s.name === 'segment create and rotate')!.run({ fs: rotate, ledger: new Ledger(), durability: 'fsync' });
  const snap = new MemoryFileSystem();
  await scenarios.find((s) => s.name === 'snapshot write and segment deletion')!.run({ fs: snap, ledger: new Ledger(), durability: 'fsync' });
  // then several segments exist after rotation
  const walFiles = (fs: MemoryFileSystem) => Object.keys(fs.dump()).filter((p) => p.endsWith('.wal'));
  assert.ok(walFiles(rotate).length >= 3, `rotation made ${walFiles(rotate).length} segments`);
  // and the snapshot scenario wrote snapshots and deleted the first segment
  assert.ok(Object.keys(snap.dump()).some((p) => p.endsWith('.snap')));
  assert.ok(!walFiles(snap).some((p) => p.endsWith('00000000000000000001.wal')), 'first segment was not deleted');
});

for (const broken of ['skip-file-sync', 'skip-dir-sync'] as const) {
  test(`negative control: a build that does ${broken} is caught by the same harness`, async () => {
    // given the journal's fs with one durability step removed (acknowledging before data or entries are durable)
    let caught = 0;
    for (const scenario of scenarios.filter((s) => s.durability === 'fsync')) {
      const result = await runHarness(scenario, { outcomes: 20, seed: 7, broken, stopAfterViolations: 1 });
      caught += result.violations.length;
    }
    // then the harness reports lost acknowledged events
    assert.ok(caught > 0, `harness did not catch ${broken}`);
  });
}

for (const tamper of ['foreign', 'flip', 'cut'] as const) {
  test(`negative control: a journal index that is ${tamper === 'foreign' ? "another journal's (claiming more than this one holds)" : tamper === 'flip' ? 'corrupt (a flipped byte)' : 'cut short'} is refused at every crash point, no loss is reported, nothing acknowledged is lost`, async () => {
    // given the close/reopen workload (whose clean closes write the index), crashed at many fs calls
    const scenario = scenarios.find((s) => s.name === 'lock, close and reopen')!;
    // when each crash image's index is replaced by a bad one before recovery
    const result = await runHarness(scenario, { outcomes: 4, seed: 11, tamperIndex: tamper, maxCrashPoints: 60 });
    // then recovery refused it and still holds every acknowledged event
    assert.deepEqual(result.violations, []);
    assert.ok((result.tamperedImages ?? 0) > 20, `only ${result.tamperedImages} images had an index to tamper with`);
  });
}

test('breakDurability wrapper only removes the named sync', async () => {
  // given a wrapped fs that skips directory syncs
  const fs = new MemoryFileSystem();
  const wrapped = breakDurability(fs, 'skip-dir-sync');
  await wrapped.mkdir('/d', 0o700);
  const h = await wrapped.open('/d/f', 'w+');
  await h.write(Buffer.from('abc'), 0, 3, 0);
  await h.datasync();
  await wrapped.syncDir('/d');
  // then file data is durable but the directory entry is still pending
  assert.ok(fs.pendingCount() > 0);
});
