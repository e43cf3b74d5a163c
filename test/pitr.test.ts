import { before, after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, cpSync, existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createArbor, MockProvider, type Arbor } from '../src/index.ts';
import { backupDataDir, restoreToPoint, readRestoreMarker } from '../src/ops.ts';
import { NodeFileSystem } from '../src/index.ts';
import { ErrorCodes } from '../src/core/errors.ts';
import { tempDir } from './helpers/tmp.ts';
import { rejectsWith } from './helpers/assertions.ts';
import { fileStore } from './helpers/file-store.ts';
import { filesContaining } from './helpers/files.ts';

// Point-in-time restore (docs/pitr.md): a backup plus the journal archive, replayed up to a time or an LSN.

const tmp = tempDir('arbor-pitr-');
after(() => tmp.cleanup());
const llm = (): MockProvider => new MockProvider({ chunks: 1, chunkDelayMs: 0 });
const dataDir = join(tmp.dir, 'data');
const archiveDir = join(tmp.dir, 'archive');
const backupDir = join(tmp.dir, 'backup');
let n = 0;
const target = (): string => join(tmp.dir, `restored-${(n += 1)}`);

/** The point between "before" and "after" writes: its LSN and a time strictly between their records. */
let pointLsn = 0;
let pointTime = '';
/** The backup's own point. */
let backupLsn = 0;
const ERASED_BEFORE = 'gnu-marker-before-31ad';
const ERASED_AFTER = 'ibis-marker-after-77e0';

async function say(arbor: Arbor, sid: string, content: string): Promise<void> {
  await arbor.session(sid).sendMessage({ content });
  await arbor.session(sid).idle();
}

async function userTexts(arbor: Arbor, sid: string): Promise<string[]> {
  const state = await arbor.session(sid).load();
  return state.messages.filter((m) => m.role === 'user').map((m) => String(m.content));
}

before(async () => {
  const arbor = await createArbor({ dataDir, journalArchiveDir: archiveDir, llm: llm(), journalMaxSizeMb: 0.004, snapshotEveryEvents: 6, erasureDeadlineMs: 2_000 });
  for (let i = 0; i < 4; i += 1) for (const sid of ['a', 'b', 'c']) await say(arbor, sid, `${sid} before-backup ${i}`);
  await say(arbor, 'gone-before', `${ERASED_BEFORE} 1`);
  await say(arbor, 'gone-after', `${ERASED_AFTER} 1`);
  const backup = await backupDataDir({ dataDir, dest: backupDir });
  backupLsn = backup.manifest.journal.lastLsn ?? 0;
  // after the backup, before the point: a writes, and gone-before is deleted
  for (let i = 0; i < 3; i += 1) await say(arbor, 'a', `a after-backup ${i}`);
  await say(arbor, 'gone-after', `${ERASED_AFTER} 2`);
  await arbor.session('gone-before').delete();
  const store = fileStore(arbor);
  await store.journal.flush();
  pointLsn = store.journal.nextLsn - 1;
  await sleep(5);
  pointTime = new Date().toISOString();
  await sleep(5);
  // after the point: b writes, d is created, gone-after is deleted; c is untouched throughout
  for (let i = 0; i < 3; i += 1) await say(arbor, 'b', `b after-point ${i} ${'p'.repeat(200)}`);
  await say(arbor, 'd', 'd after-point');
  await arbor.session('gone-after').delete();
  await arbor.whenErased();
  // enough writes for the point's segment to be sealed and archived
  for (let i = 0; i < 6; i += 1) await say(arbor, 'filler', `filler ${i} ${'f'.repeat(400)}`);
  await store.archive.settled();
  assert.ok(store.archive.segments().at(-1)!.lastLsn > pointLsn, 'the archive reaches past the point');
  await arbor.close();
});

test('restore --to an LSN with the live journal: exactly the events up to it; the loss notice for the sessions cut off, and only them', async () => {
  const dir = target();
  const r = await restoreToPoint({ src: backupDir, to: String(pointLsn), archiveDir, liveJournalDir: join(dataDir, 'journals'), dataDir: dir });
  assert.equal(r.point.lsn, pointLsn);
  assert.equal(r.verify.ok, true, JSON.stringify(r.verify.damage));
  assert.equal(r.exact, true);
  assert.deepEqual(r.cutOff, ['b', 'd', 'filler']);
  assert.deepEqual(r.noticed, ['b'], 'd did not exist at the point: it is not restored at all');
  assert.deepEqual(r.erased, ['gone-after', 'gone-before']);
  assert.ok(r.segments.some((s) => s.source === 'archive'));
  const arbor = await createArbor({ dataDir: dir, llm: llm() });
  try {
    assert.deepEqual(await userTexts(arbor, 'a'), [0, 1, 2, 3].map((i) => `a before-backup ${i}`).concat([0, 1, 2].map((i) => `a after-backup ${i}`)));
    assert.deepEqual(await userTexts(arbor, 'b'), [0, 1, 2, 3].map((i) => `b before-backup ${i}`));
    assert.deepEqual(await userTexts(arbor, 'c'), [0, 1, 2, 3].map((i) => `c before-backup ${i}`));
    assert.equal(await arbor.exists('d'), false);
    // erased sessions stay erased: deleted before the point, and deleted after it
    assert.equal(await arbor.exists('gone-before'), false);
    assert.equal(await arbor.exists('gone-after'), false);
    // the loss notice: b (its events after the point are not restored), not a or c
    const notices = async (sid: string): Promise<string[]> => (await arbor.session(sid).load()).messages.filter((m) => m.metadata?.restored === true).map((m) => String(m.content));
    const bNotices = await notices('b');
    assert.equal(bNotices.length, 1);
    assert.match(bNotices[0]!, new RegExp(`log position ${pointLsn}`));
    assert.deepEqual(await notices('a'), []);
    assert.deepEqual(await notices('c'), []);
  } finally {
    await arbor.close();
  }
  assert.deepEqual(filesContaining(dir, ERASED_BEFORE), []);
  assert.deepEqual(filesContaining(dir, ERASED_AFTER), []);
});

test('restore --to an ISO time resolves to the last event at or before it; with the archive alone every restored session gets the notice', async () => {
  const dir = target();
  const r = await restoreToPoint({ src: backupDir, to: pointTime, archiveDir, dataDir: dir });
  // the last record at or before the time (gone-after's records between it and pointLsn are erased: the same state)
  assert.ok(r.point.lsn <= pointLsn && r.point.lsn > backupLsn, `point ${r.point.lsn}`);
  assert.ok(Date.parse(r.point.at) <= Date.parse(pointTime));
  assert.equal(r.exact, false);
  assert.deepEqual(r.noticed, ['a', 'b', 'c']);
  const marker = await readRestoreMarker(new NodeFileSystem(), dir);
  assert.deepEqual(marker?.sessions.map((s) => s.id), ['a', 'b', 'c']);
  const arbor = await createArbor({ dataDir: dir, llm: llm() });
  try {
    assert.equal((await userTexts(arbor, 'a')).length, 7);
    assert.equal((await userTexts(arbor, 'b')).length, 4);
    assert.equal(await arbor.exists('d'), false);
  } finally {
    await arbor.close();
  }
});

test('restore --to the backup\'s own point gives the backup; a point before it, or beyond the archive, is refused naming the value and the range, and nothing is written', async () => {
  const same = await restoreToPoint({ src: backupDir, to: String(backupLsn), archiveDir, dataDir: target() });
  assert.equal(same.point.lsn, backupLsn);
  // from the backup's own segments alone (an archive holding only its deletion records): the deleted chats,
  // whose plaintext the backup still holds, are left out of the restored files
  const onlyDeletions = join(tmp.dir, 'archive-deletions-only');
  mkdirSync(onlyDeletions);
  cpSync(join(archiveDir, 'tombstones.json'), join(onlyDeletions, 'tombstones.json'));
  const fromBackup = target();
  const r = await restoreToPoint({ src: backupDir, to: String(backupLsn), archiveDir: onlyDeletions, dataDir: fromBackup });
  assert.ok(r.segments.every((s) => s.source === 'backup'));
  assert.deepEqual(r.erasedHere, ['gone-after', 'gone-before']);
  assert.equal(r.verify.ok, true, JSON.stringify(r.verify.damage));
  assert.ok(filesContaining(backupDir, ERASED_AFTER).length > 0, 'the backup itself still holds it');
  assert.deepEqual(filesContaining(fromBackup, ERASED_BEFORE), []);
  assert.deepEqual(filesContaining(fromBackup, ERASED_AFTER), []);
  const arbor = await createArbor({ dataDir: fromBackup, llm: llm() });
  try {
    assert.equal(await arbor.exists('gone-after'), false);
    assert.equal((await userTexts(arbor, 'c')).length, 4);
  } finally {
    await arbor.close();
  }
  for (const to of [String(backupLsn - 1), '1999-01-01T00:00:00Z', String(10_000_000), '2999-01-01T00:00:00Z']) {
    const dir = target();
    const err = await rejectsWith(restoreToPoint({ src: backupDir, to, archiveDir, dataDir: dir }), ErrorCodes.RESTORE_POINT, { option: 'to', to });
    const covered = err.details.covered as { from: { lsn: number }; to: { lsn: number } };
    assert.equal(covered.from.lsn, backupLsn);
    assert.ok(covered.to.lsn > pointLsn);
    assert.match(err.message, new RegExp(`cover LSN ${backupLsn}`));
    assert.equal(existsSync(dir), false, 'nothing written');
  }
  await rejectsWith(restoreToPoint({ src: backupDir, to: 'yesterday', archiveDir, dataDir: target() }), ErrorCodes.USAGE, { option: 'to' });
});

test('a gap in the archive (a missing segment) is refused naming the segment', async () => {
  const holey = join(tmp.dir, 'archive-holey');
  cpSync(archiveDir, holey, { recursive: true });
  const segs = readdirSync(holey).filter((f) => f.endsWith('.wal')).sort();
  // the first archived segment the restore needs after the backup's journal
  const needed = segs.filter((s) => Number(s.slice(0, 20)) > backupLsn);
  assert.ok(needed.length >= 2);
  const missing = needed[0]!;
  rmSync(join(holey, missing));
  rmSync(join(holey, missing.replace('.wal', '.meta.json')));
  const dir = target();
  const err = await rejectsWith(restoreToPoint({ src: backupDir, to: String(pointLsn), archiveDir: holey, dataDir: dir }), ErrorCodes.ARCHIVE_GAP, { option: 'to' });
  // either the missing segment itself, or the backup's partial copy of the one that was being written
  assert.ok(err.details.segment === missing || Number(String(err.details.segment).slice(0, 20)) <= backupLsn, `names ${String(err.details.segment)}`);
  assert.match(err.message, /missing segment/);
  assert.equal(existsSync(dir), false);
});

test('encrypted: the archive holds ciphertext; restore --to with the live key store brings back the chats, and a chat deleted after the point stays erased (its key is gone)', async (t) => {
  const { randomBytes } = await import('node:crypto');
  const key = randomBytes(32).toString('base64');
  const { dir, cleanup } = tempDir('arbor-pitr-enc-');
  t.after(cleanup);
  const data = join(dir, 'data');
  const arch = join(dir, 'archive');
  const SECRET = 'tapir-secret-5b0e';
  const arbor = await createArbor({ dataDir: data, journalArchiveDir: arch, encryptionKey: key, llm: llm(), journalMaxSizeMb: 0.004, snapshotEveryEvents: 6, erasureDeadlineMs: 2_000 });
  await say(arbor, 'keep', 'keep 0');
  await say(arbor, 'secret', `${SECRET} 0`);
  const backup = join(dir, 'backup');
  await backupDataDir({ dataDir: data, dest: backup });
  await say(arbor, 'keep', 'keep 1');
  await say(arbor, 'secret', `${SECRET} 1`);
  const store = fileStore(arbor);
  await store.journal.flush();
  const point = store.journal.nextLsn - 1;
  for (let i = 0; i < 6; i += 1) await say(arbor, 'filler', `filler ${i} ${'f'.repeat(400)}`);
  await arbor.session('secret').delete();
  await arbor.whenErased();
  await store.archive.settled();
  await arbor.close();
  assert.deepEqual(filesContaining(arch, SECRET), [], 'ciphertext only');
  const out = join(dir, 'restored');
  await rejectsWith(restoreToPoint({ src: backup, to: String(point), archiveDir: arch, dataDir: out }), ErrorCodes.USAGE, { option: 'keyStore' });
  const r = await restoreToPoint({ src: backup, to: String(point), archiveDir: arch, dataDir: out, keyStore: join(data, 'keys', 'keystore.json') });
  assert.equal(r.point.lsn, point);
  assert.ok(r.erased.includes('secret'));
  const again = await createArbor({ dataDir: out, encryptionKey: key, llm: llm() });
  try {
    assert.deepEqual(await userTexts(again, 'keep'), ['keep 0', 'keep 1']);
    assert.equal(await again.exists('secret'), false);
  } finally {
    await again.close();
  }
});
