/**
 * `arbor restore <backup> --to <time | lsn> --archive-dir <dir>` through the real CLI process: a server-like
 * writer with the journal archive on, `arbor backup` beside it, more writes, then restores to a point.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createArbor, MockProvider, type Arbor } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';
import { fileStore } from './helpers/file-store.ts';
import { json, runCli } from './ops/run-cli.ts';

const tmp = tempDir('arbor-pitr-cli-');
after(() => tmp.cleanup());
const dataDir = join(tmp.dir, 'data');
const archiveDir = join(tmp.dir, 'archive');
const backupDir = join(tmp.dir, 'backup');
let pointLsn = 0;
let backupLsn = 0;
let n = 0;
const target = (): string => join(tmp.dir, `restored-${(n += 1)}`);

async function say(arbor: Arbor, sid: string, content: string): Promise<void> {
  await arbor.session(sid).sendMessage({ content });
  await arbor.session(sid).idle();
}

before(async () => {
  const arbor = await createArbor({ dataDir, journalArchiveDir: archiveDir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }), journalMaxSizeMb: 0.004, snapshotEveryEvents: 6 });
  for (let i = 0; i < 3; i += 1) for (const sid of ['x', 'y']) await say(arbor, sid, `${sid} early ${i}`);
  // the backup runs in its own process while this one holds the data directory
  const backup = await runCli(['backup', backupDir, '--data-dir', dataDir, '--json']);
  assert.equal(backup.code, 0, backup.stderr);
  backupLsn = json(backup).journal.lastLsn;
  for (let i = 0; i < 3; i += 1) await say(arbor, 'x', `x middle ${i}`);
  const store = fileStore(arbor);
  await store.journal.flush();
  pointLsn = store.journal.nextLsn - 1;
  for (let i = 0; i < 3; i += 1) await say(arbor, 'y', `y late ${i} ${'l'.repeat(300)}`);
  for (let i = 0; i < 4; i += 1) await say(arbor, 'z', `z late ${i} ${'l'.repeat(400)}`);
  await store.archive.settled();
  await arbor.close();
});

test('arbor restore --to <lsn>: exit 0, the restored directory holds exactly the events up to the point, and the loss notice goes to the session cut off', async () => {
  const dir = target();
  const r = await runCli(['restore', backupDir, '--to', String(pointLsn), '--archive-dir', archiveDir, '--live-journal', join(dataDir, 'journals'), '--data-dir', dir, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const out = json(r);
  assert.equal(out.point.lsn, pointLsn);
  assert.equal(out.exact, true);
  assert.deepEqual(out.cutOff, ['y', 'z']);
  assert.deepEqual(out.noticed, ['y']);
  assert.equal(out.verify.ok, true);
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  try {
    const texts = async (sid: string): Promise<string[]> => (await arbor.session(sid).load()).messages.filter((m) => m.role === 'user').map((m) => String(m.content));
    assert.deepEqual(await texts('x'), ['x early 0', 'x early 1', 'x early 2', 'x middle 0', 'x middle 1', 'x middle 2']);
    assert.deepEqual(await texts('y'), ['y early 0', 'y early 1', 'y early 2']);
    assert.equal(await arbor.exists('z'), false);
    const notices = (await arbor.session('y').load()).messages.filter((m) => m.metadata?.restored === true);
    assert.equal(notices.length, 1);
    assert.equal((await arbor.session('x').load()).messages.filter((m) => m.metadata?.restored === true).length, 0);
  } finally {
    await arbor.close();
  }
  // the human output names the point and the notice
  const human = await runCli(['restore', backupDir, '--to', String(pointLsn), '--archive-dir', archiveDir, '--data-dir', target()]);
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, new RegExp(`up to LSN ${pointLsn}`));
  assert.match(human.stdout, /RESTORED\.json written: 2 sessions will show the loss notice \(all of them/);
});

test('arbor restore --to: a point outside the covered range exits 1 with ARBOR_RESTORE_POINT, a gap with ARBOR_ARCHIVE_GAP; bad usage exits 2; nothing is written', async () => {
  const dir = target();
  const early = await runCli(['restore', backupDir, '--to', String(backupLsn - 1), '--archive-dir', archiveDir, '--data-dir', dir, '--json']);
  assert.equal(early.code, 1, early.stderr);
  assert.equal(json(early).error.code, 'ARBOR_RESTORE_POINT');
  assert.equal(json(early).error.details.to, String(backupLsn - 1));
  assert.equal(json(early).error.details.covered.from.lsn, backupLsn);
  const late = await runCli(['restore', backupDir, '--to', '2999-01-01T00:00:00Z', '--archive-dir', archiveDir, '--data-dir', dir]);
  assert.equal(late.code, 1);
  assert.match(late.stderr, /\[ARBOR_RESTORE_POINT\].*2999-01-01T00:00:00Z.*cover LSN/);
  const holey = join(tmp.dir, 'archive-holey');
  cpSync(archiveDir, holey, { recursive: true });
  const missing = readdirSync(holey).filter((f) => f.endsWith('.wal') && Number(f.slice(0, 20)) > backupLsn).sort()[0]!;
  rmSync(join(holey, missing));
  // a point past the hole: the last LSN the (whole) archive holds
  const metas = readdirSync(archiveDir).filter((f) => f.endsWith('.meta.json')).sort();
  const end = (JSON.parse(readFileSync(join(archiveDir, metas.at(-1)!), 'utf8')) as { lastLsn: number }).lastLsn;
  const gap = await runCli(['restore', backupDir, '--to', String(end), '--archive-dir', holey, '--data-dir', dir, '--json']);
  assert.equal(gap.code, 1, gap.stderr);
  assert.equal(json(gap).error.code, 'ARBOR_ARCHIVE_GAP');
  assert.equal(typeof json(gap).error.details.segment, 'string');
  const noArchive = await runCli(['restore', backupDir, '--to', String(pointLsn), '--data-dir', dir]);
  assert.equal(noArchive.code, 2);
  assert.match(noArchive.stderr, /--to needs --archive-dir/);
  const badTo = await runCli(['restore', backupDir, '--to', 'yesterday', '--archive-dir', archiveDir, '--data-dir', dir]);
  assert.equal(badTo.code, 2);
  assert.equal(existsSync(dir), false, 'nothing written');
});
