/**
 * The operations commands through the real CLI process (`node --import tsx
 * src/cli/main.ts ...`): output shapes with --json, human output, and exit
 * codes 0 (clean / done), 1 (damage / failed) and 2 (usage error).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync, appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { createArbor, MockProvider, NodeFileSystem, openStore, initialSessionState, reduceSession, type SessionState } from '../src/index.ts';
import { readRestoreMarker, RESTORE_MARKER_FILE } from '../src/file/restore-marker.ts';
import { tempDir } from './helpers/tmp.ts';
import { json, runCli } from './ops/run-cli.ts';

const tmp = tempDir('arbor-cli-ops-');
after(() => tmp.cleanup());
let n = 0;
/** A fresh copy of the fixture data directory. */
function copyOf(src: string): string {
  n += 1;
  const dir = join(tmp.dir, `copy-${n}`);
  cpSync(src, dir, { recursive: true });
  return dir;
}
const wal = (dir: string): string[] => readdirSync(join(dir, 'journals')).filter((f) => f.endsWith('.wal')).sort();
const snaps = (dir: string): string[] => readdirSync(join(dir, 'snapshots')).filter((f) => f.endsWith('.snap')).sort();
function flip(file: string, offset: number): void {
  const b = readFileSync(file);
  b[offset] = b[offset]! ^ 0x40;
  writeFileSync(file, b);
}

/** Written by the runtime: three sessions, several segments, snapshots, a config change. */
let fixture = '';
/** Written by the storage engine alone: many segments and no snapshot at all (what compact is for). */
let unsnapshotted = '';

before(async () => {
  fixture = join(tmp.dir, 'fixture');
  const arbor = await createArbor({ dataDir: fixture, journalMaxSizeMb: 4096 / (1024 * 1024), snapshotEveryEvents: 10, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  for (const sid of ['alpha', 'beta', 'gamma']) {
    const s = arbor.session(sid);
    for (let i = 0; i < 8; i += 1) {
      await s.sendMessage({ content: `hello ${sid} number ${i}` });
      await s.idle();
    }
  }
  await arbor.session('alpha').changeConfig('model', 'mock-2');
  await arbor.close();

  unsnapshotted = join(tmp.dir, 'unsnapshotted');
  const store = await openStore<SessionState>({ dataDir: unsnapshotted, journalMaxSizeMb: 4096 / (1024 * 1024) }, { initialState: initialSessionState, reducer: reduceSession });
  for (let i = 0; i < 60; i += 1) {
    for (const sid of ['one', 'two']) await store.append({ sid, type: 'user_message_sent', data: { messageId: `${sid}-m${i}`, content: `message ${i} in ${sid} ${'.'.repeat(40)}` } });
  }
  await store.close();
});

// ---- usage ----

test('usage errors exit 2 with a message; help exits 0', async () => {
  const unknown = await runCli(['verify', '--no-such-option']);
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /unknown option '--no-such-option'/);
  const missing = await runCli(['backup']);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /missing required argument 'dest'/);
  const noCommand = await runCli([]);
  assert.equal(noCommand.code, 2);
  const unknownCommand = await runCli(['verfy']);
  assert.equal(unknownCommand.code, 2);
  assert.match(unknownCommand.stderr, /unknown command 'verfy'/);
  const help = await runCli(['inspect', '--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Usage: arbor inspect \[options\] <session>/);
  const noDir = await runCli(['verify', '--data-dir', join(tmp.dir, 'does-not-exist')]);
  assert.equal(noDir.code, 2);
  assert.match(noDir.stderr, /--data-dir .*does-not-exist: no such directory/);
  const noDirJson = await runCli(['verify', '--data-dir', join(tmp.dir, 'does-not-exist'), '--json']);
  assert.equal(noDirJson.code, 2);
  assert.deepEqual([json(noDirJson).error.code, json(noDirJson).error.kind, json(noDirJson).error.details.option], ['ARBOR_USAGE', 'usage', 'dataDir']);
  const badLimit = await runCli(['inspect', 'alpha', '--data-dir', fixture, '--limit', 'many']);
  assert.equal(badLimit.code, 2);
  assert.match(badLimit.stderr, /--limit/);
});

// ---- verify ----

test('verify: a clean directory exits 0; --json has the documented shape; ARBOR_DATA_DIR is honoured', async () => {
  const r = await runCli(['verify', '--json'], { ARBOR_DATA_DIR: fixture });
  assert.equal(r.code, 0, r.stderr);
  const doc = json(r);
  assert.equal(doc.ok, true);
  assert.deepEqual(doc.damage, []);
  for (const k of ['segments', 'snapshots', 'sessions', 'notes', 'totals', 'durationMs']) assert.ok(k in doc, `verify --json has ${k}`);
  assert.ok(doc.segments.length >= 1 && doc.snapshots.length >= 3);
  assert.deepEqual(doc.sessions.map((s: { id: string }) => s.id), ['alpha', 'beta', 'gamma']);
  const alpha = doc.sessions.find((s: { id: string }) => s.id === 'alpha');
  assert.equal(alpha.lastSeq, 25, 'alpha: 8 turns of 3 events and a config change');
  const human = await runCli(['verify', '--data-dir', fixture]);
  assert.equal(human.code, 0);
  assert.match(human.stdout, /^clean$/m);
  const many = await runCli(['verify', '--data-dir', unsnapshotted, '--json']);
  assert.equal(many.code, 0);
  assert.ok(json(many).segments.length > 3, 'the unsnapshotted fixture has many segments');
});

test('verify: a flipped byte in a sealed segment exits 1 naming the file, the offset and the session', async () => {
  const dir = copyOf(unsnapshotted);
  const segment = wal(dir)[1]!;
  const at = 32 + 8 + 30; // inside the first record's payload
  flip(join(dir, 'journals', segment), at);
  const r = await runCli(['verify', '--data-dir', dir, '--json']);
  assert.equal(r.code, 1);
  const doc = json(r);
  assert.equal(doc.ok, false);
  const d = doc.damage.find((x: { kind: string }) => x.kind === 'segment');
  assert.equal(d.file, `journals/${segment}`);
  assert.ok(d.offset <= at && at < d.offset + d.length, `damage at ${d.offset}+${d.length} covers the flipped byte ${at}`);
  assert.ok(d.lostLsns !== undefined, 'names the LSNs lost');
  // The lost record belonged to a session whose seqs now jump: reported as such too.
  assert.ok(doc.damage.some((x: { kind: string; session?: string }) => x.kind === 'session' && (x.session === 'one' || x.session === 'two')));
  const human = await runCli(['verify', '--data-dir', dir]);
  assert.equal(human.code, 1);
  assert.match(human.stdout, new RegExp(`DAMAGE journals/${segment}, offset ${d.offset}`));
  assert.match(human.stdout, /problems? found/);
});

test('verify: a flipped byte in a snapshot exits 1 naming the file, the offset and the session', async () => {
  const dir = copyOf(fixture);
  const snap = snaps(dir).find((f) => f.startsWith('beta.'))!;
  const file = join(dir, 'snapshots', snap);
  const size = statSync(file).size;
  flip(file, size - 20); // in the compressed body
  const r = await runCli(['verify', '--data-dir', dir, '--json']);
  assert.equal(r.code, 1);
  const d = json(r).damage.find((x: { kind: string }) => x.kind === 'snapshot');
  assert.equal(d.file, `snapshots/${snap}`);
  assert.equal(d.session, 'beta');
  assert.equal(typeof d.offset, 'number');
  assert.ok(d.offset <= size - 20 && size - 20 < d.offset + d.length, `damage at ${d.offset}+${d.length} covers the flipped byte`);
  assert.match(d.reason, /checksum mismatch/);

  // A flipped byte in the header's seq field is located exactly.
  const dir2 = copyOf(fixture);
  const snap2 = snaps(dir2).find((f) => f.startsWith('gamma.'))!;
  flip(join(dir2, 'snapshots', snap2), 17);
  const r2 = await runCli(['verify', '--data-dir', dir2]);
  assert.equal(r2.code, 1);
  assert.match(r2.stdout, new RegExp(`DAMAGE snapshots/${snap2.replace(/\./g, '\\.')}, offset 16 \\(8 bytes\\), session gamma`));
});

test('verify: a torn tail at the end of the newest segment is a note, not damage, and is left as it is', async () => {
  const dir = copyOf(fixture);
  const newest = join(dir, 'journals', wal(dir).at(-1)!);
  // Half a frame: the length field says 200 bytes, 30 follow.
  const frame = Buffer.alloc(38);
  frame.writeUInt32LE(200, 4);
  frame.write('{"lsn":999,"sid":"alpha","seq', 8, 'latin1');
  appendFileSync(newest, frame);
  const size = statSync(newest).size;
  // A snapshot being written by a live server (or left by a crash): reported, not removed.
  const temp = join(dir, 'snapshots', 'alpha.00000000000000000099.snap.tmp');
  writeFileSync(temp, 'partial');
  const r = await runCli(['verify', '--data-dir', dir, '--json']);
  assert.equal(r.code, 0, r.stdout);
  const doc = json(r);
  assert.equal(doc.ok, true);
  const seg = doc.segments.at(-1);
  assert.equal(seg.status, 'torn-tail');
  assert.equal(seg.tornTail.bytes, 38);
  assert.ok(doc.notes.some((x: string) => /torn tail of 38 bytes/.test(x)));
  assert.equal(statSync(newest).size, size, 'verify is read-only: the torn tail is still there');
  assert.ok(doc.notes.some((x: string) => x.startsWith('snapshots/alpha.00000000000000000099.snap.tmp: a temporary file')));
  assert.ok(existsSync(temp), 'and so is the temp file');
});

test('verify and inspect work while a server holds the lock; compact refuses with exit 1', async () => {
  const dir = copyOf(fixture);
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  try {
    await arbor.session('delta').sendMessage({ content: 'written by the live server' });
    await arbor.session('delta').idle();
    const v = await runCli(['verify', '--data-dir', dir]);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    const i = await runCli(['inspect', 'delta', '--data-dir', dir, '--json']);
    assert.equal(i.code, 0, i.stderr);
    assert.ok(json(i).events.some((e: { summary: string }) => e.summary.includes('written by the live server')));
    assert.ok(existsSync(join(dir, 'LOCK')), 'the server still holds its lock');
    const c = await runCli(['compact', '--data-dir', dir]);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /ARBOR_LOCKED/);
    assert.match(c.stderr, new RegExp(`locked by another process \\(pid ${process.pid} `));
    const cj = await runCli(['compact', '--data-dir', dir, '--json']);
    assert.equal(cj.code, 1);
    assert.equal(json(cj).error.code, 'ARBOR_LOCKED', 'with --json a failure is one JSON document too');
  } finally {
    await arbor.close();
  }
});

// ---- inspect ----

test('inspect: the timeline and recovered state, human and --json; bad ids exit 2, unknown sessions 1', async () => {
  const r = await runCli(['inspect', 'alpha', '--data-dir', fixture, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const doc = json(r);
  assert.equal(doc.session, 'alpha');
  assert.equal(doc.state.seq, 25);
  assert.deepEqual(doc.state.messages, { total: 16, user: 8, assistant: 8, system: 0 });
  assert.deepEqual(doc.state.config, { model: 'mock-2' });
  assert.equal(doc.state.stream.status, 'idle');
  assert.ok(doc.snapshots.length >= 1);
  for (const s of doc.snapshots) for (const k of ['file', 'seq', 'bytes', 'time', 'status']) assert.ok(k in s, `snapshot entry has ${k}`);
  for (const e of doc.events) for (const k of ['seq', 'lsn', 'time', 'type', 'summary', 'file', 'offset']) assert.ok(k in e, `event entry has ${k}`);
  const last = doc.events.at(-1);
  assert.equal(last.type, 'session_config_changed');
  assert.equal(last.summary, 'config model = "mock-2"');
  // Every event after the newest snapshot is in the journal, in order.
  const newestSnap = Math.max(...doc.snapshots.map((s: { seq: number }) => s.seq));
  const after = doc.events.filter((e: { seq: number }) => e.seq > newestSnap).map((e: { seq: number }) => e.seq);
  assert.deepEqual(after, Array.from({ length: 25 - newestSnap }, (_, i) => newestSnap + 1 + i));

  const human = await runCli(['inspect', 'alpha', '--data-dir', fixture, '--limit', '2']);
  assert.equal(human.code, 0);
  assert.match(human.stdout, /^session alpha: seq 25, 16 messages \(8 user, 8 assistant, 0 system\), stream idle$/m);
  assert.match(human.stdout, /config: \{"model":"mock-2"\}/);
  assert.match(human.stdout, /session_config_changed\s+config model = "mock-2"/);

  const fromJournal = await runCli(['inspect', 'one', '--data-dir', unsnapshotted, '--json']);
  const one = json(fromJournal);
  assert.equal(one.events.length, 60);
  assert.equal(one.state.fromSnapshotSeq, 0);
  assert.equal(one.state.replayed, 60);
  assert.match(one.events[0].summary, /^user one-m0: "message 0 in one/);

  const bad = await runCli(['inspect', '../etc', '--data-dir', fixture]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /invalid session id "\.\.\/etc"/);
  const unknown = await runCli(['inspect', 'nobody', '--data-dir', fixture]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /session nobody has no snapshot and no journal records/);
});

test('inspect: a session whose history has a gap exits 1 and says which event is missing, where', async () => {
  const dir = copyOf(unsnapshotted);
  const segment = wal(dir)[1]!;
  flip(join(dir, 'journals', segment), 32 + 8 + 30);
  const gap = json(await runCli(['verify', '--data-dir', dir, '--json'])).damage.find((d: { kind: string }) => d.kind === 'session');
  const r = await runCli(['inspect', gap.session, '--data-dir', dir, '--json']);
  assert.equal(r.code, 1);
  const doc = json(r);
  assert.equal(doc.state.seq, gap.seq[0] - 1, 'the state stops before the missing event');
  assert.match(doc.state.problem, new RegExp(`event ${gap.seq[0]} is missing .*journals/${segment} offset \\d+`));
  assert.ok(doc.notes.some((x: string) => x.startsWith(`journals/${segment} offset`)), 'the damaged bytes that name the session are pointed at');
});

// ---- compact ----

test('compact: snapshots every session that pins segments, deletes the released segments, reports bytes; the data is intact', async () => {
  const dir = copyOf(unsnapshotted);
  const before = wal(dir).length;
  assert.ok(before > 3);
  const r = await runCli(['compact', '--data-dir', dir, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const doc = json(r);
  assert.equal(doc.snapshotted, 2);
  assert.equal(doc.before.segments, before);
  assert.equal(doc.after.segments, 1, 'only the newest segment stays');
  assert.equal(doc.deletedSegments.length, before - 1);
  assert.ok(doc.after.journalBytes < doc.before.journalBytes);
  assert.deepEqual(doc.skipped, []);
  assert.equal(wal(dir).length, 1);
  assert.equal((await runCli(['verify', '--data-dir', dir])).code, 0);
  // The same states, now rebuilt from the new snapshots alone.
  for (const sid of ['one', 'two']) {
    const after = json(await runCli(['inspect', sid, '--data-dir', dir, '--json'])).state;
    const before = json(await runCli(['inspect', sid, '--data-dir', unsnapshotted, '--json'])).state;
    assert.equal(after.fromSnapshotSeq, 60);
    assert.equal(after.replayed, 0);
    assert.deepEqual({ ...after, fromSnapshotSeq: 0, replayed: 0 }, { ...before, fromSnapshotSeq: 0, replayed: 0 });
  }
  const human = await runCli(['compact', '--data-dir', dir]);
  assert.equal(human.code, 0);
  assert.match(human.stdout, /^journal: .* -> .* \(0 deleted\)$/m);
});

test('compact leaves damaged sessions alone (no snapshot seals their gap), keeps the segments they pin, and exits 1', async () => {
  const dir = copyOf(unsnapshotted);
  const before = wal(dir);
  flip(join(dir, 'journals', before[1]!), 32 + 8 + 30);
  const r = await runCli(['compact', '--data-dir', dir, '--json']);
  assert.equal(r.code, 1, r.stderr);
  const doc = json(r);
  assert.ok(doc.skipped.length >= 1 && doc.skipped.every((s: { status: string }) => s.status === 'damaged'));
  assert.equal(doc.blockedBy.segment, before[0]);
  assert.deepEqual(wal(dir), before, 'no segment deleted');
  for (const { session } of doc.skipped) assert.ok(!snaps(dir).some((f) => f.startsWith(`${session}.`)), `no snapshot of damaged session ${session}`);
});

// ---- backup / restore ----

test('backup and restore: manifest, marker, refusals; a tampered backup is refused and leaves the target empty', async () => {
  const backup = join(tmp.dir, 'backup-1');
  const b = await runCli(['backup', backup, '--data-dir', fixture, '--json']);
  assert.equal(b.code, 0, b.stderr);
  const doc = json(b);
  for (const k of ['backupId', 'startedAt', 'finishedAt', 'files', 'bytes', 'journal', 'durationMs', 'bytesPerSec', 'warnings']) assert.ok(k in doc, `backup --json has ${k}`);
  const manifest = JSON.parse(readFileSync(join(backup, 'MANIFEST.json'), 'utf8'));
  assert.equal(manifest.format, 'arbor-backup');
  assert.equal(manifest.files.length, doc.files);
  assert.equal(manifest.files.length, wal(fixture).length + snaps(fixture).length);
  for (const f of manifest.files) assert.match(f.sha256, /^[0-9a-f]{64}$/);

  // A destination that is not empty is refused.
  const full = join(tmp.dir, 'not-empty');
  mkdirSync(full);
  writeFileSync(join(full, 'keep.txt'), 'mine');
  const refused = await runCli(['backup', full, '--data-dir', fixture]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /is not empty/);

  // Restore into a new directory.
  const target = join(tmp.dir, 'restored-1');
  const r = await runCli(['restore', backup, '--data-dir', target, '--json']);
  assert.equal(r.code, 0, r.stderr);
  const rd = json(r);
  assert.equal(rd.backupId, doc.backupId);
  assert.equal(rd.sessions, 3);
  assert.equal(rd.verify.ok, true);
  const marker = await readRestoreMarker(new NodeFileSystem(), target);
  assert.ok(marker);
  assert.equal(marker.backupId, doc.backupId);
  assert.equal(marker.backupStartedAt, doc.startedAt);
  assert.deepEqual(marker.sessions, [{ id: 'alpha', lastSeq: 25 }, { id: 'beta', lastSeq: 24 }, { id: 'gamma', lastSeq: 24 }]);
  assert.match(marker.notice, new RegExp(`backup taken at ${doc.startedAt.replace(/\./g, '\\.')}`));
  assert.deepEqual(readdirSync(join(target, 'journals')), wal(fixture));

  // Restore refuses a directory that is not empty (exit 1), and a src that is not a directory (exit 2).
  const again = await runCli(['restore', backup, '--data-dir', target]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /is not empty/);
  const noSrc = await runCli(['restore', join(tmp.dir, 'nope'), '--data-dir', join(tmp.dir, 'x'), '--json']);
  assert.equal(noSrc.code, 2);
  assert.deepEqual([json(noSrc).error.code, json(noSrc).error.details.option], ['ARBOR_USAGE', 'src']);

  // A changed byte in a backed-up file: refused, naming the file; the target is left as it was.
  const tampered = join(tmp.dir, 'backup-tampered');
  cpSync(backup, tampered, { recursive: true });
  const victim = manifest.files.at(-1).path as string;
  flip(join(tampered, victim), 10);
  const t = await runCli(['restore', tampered, '--data-dir', join(tmp.dir, 'restored-tampered')]);
  assert.equal(t.code, 1);
  assert.match(t.stderr, new RegExp(`backup file ${victim.replace(/\./g, '\\.')}: sha256 .* does not match`));
  const tJson = await runCli(['restore', tampered, '--data-dir', join(tmp.dir, 'restored-tampered'), '--json']);
  assert.deepEqual([tJson.code, json(tJson).error.code, json(tJson).error.details.file], [1, 'ARBOR_CORRUPTION', victim]);
  assert.equal(existsSync(join(tmp.dir, 'restored-tampered')), false, 'nothing is left behind');

  // No manifest: not a backup.
  const partial = join(tmp.dir, 'backup-partial');
  cpSync(backup, partial, { recursive: true });
  writeFileSync(join(partial, 'MANIFEST.json'), '{"format":"arbor-backup","version":1,"files":[{"path":"../../etc/passwd","bytes":1,"sha256":"00"}]}');
  const p = await runCli(['restore', partial, '--data-dir', join(tmp.dir, 'restored-partial')]);
  assert.equal(p.code, 1);
  assert.match(p.stderr, /MANIFEST\.json: /);

  // The restored directory opens, and the human output says what happened.
  const human = await runCli(['restore', backup, '--data-dir', join(tmp.dir, 'restored-2')]);
  assert.equal(human.code, 0);
  assert.match(human.stdout, new RegExp(`${RESTORE_MARKER_FILE} written`));
  const arbor = await createArbor({ dataDir: target, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  try {
    assert.equal((await arbor.session('alpha').load()).messages.filter((m) => m.role === 'user').length, 8);
  } finally {
    await arbor.close();
  }
});

test('backup refuses a destination inside the journal or snapshot directory (exit 2); a backup of a damaged source restores with exit 1 and lists the damage', async () => {
  const overlap = await runCli(['backup', join(fixture, 'journals', 'bk'), '--data-dir', fixture]);
  assert.equal(overlap.code, 2);
  assert.match(overlap.stderr, /overlaps/);

  const dir = copyOf(unsnapshotted);
  const segment = wal(dir)[2]!;
  flip(join(dir, 'journals', segment), 32 + 8 + 30);
  const backup = join(tmp.dir, 'backup-of-damaged');
  const b = await runCli(['backup', backup, '--data-dir', dir]);
  assert.equal(b.code, 0, b.stderr);
  const target = join(tmp.dir, 'restored-damaged');
  const r = await runCli(['restore', backup, '--data-dir', target, '--json']);
  assert.equal(r.code, 1, 'restored, but the damage the source had is reported');
  const doc = json(r);
  assert.equal(doc.verify.ok, false);
  assert.ok(doc.verify.damage.some((d: { file?: string }) => d.file === `journals/${segment}`));
  assert.ok(existsSync(join(target, RESTORE_MARKER_FILE)), 'the restore is kept, marker included');
  assert.equal(wal(target).length, wal(dir).length);
});

test('--journal-dir and --snapshot-dir (or ARBOR_JOURNAL_DIR / ARBOR_SNAPSHOT_DIR) for directories outside the data directory', async () => {
  const root = join(tmp.dir, 'split');
  const dirs = { dataDir: join(root, 'data'), journalDir: join(root, 'wal'), snapshotDir: join(root, 'snap') };
  const store = await openStore<SessionState>({ ...dirs }, { initialState: initialSessionState, reducer: reduceSession });
  for (let i = 0; i < 5; i += 1) await store.append({ sid: 'split', type: 'user_message_sent', data: { messageId: `m${i}`, content: `split ${i}` } });
  await store.close();

  const flags = ['--data-dir', dirs.dataDir, '--journal-dir', dirs.journalDir, '--snapshot-dir', dirs.snapshotDir];
  const v = await runCli(['verify', ...flags, '--json']);
  assert.equal(v.code, 0, v.stderr);
  assert.equal(json(v).totals.records, 5);
  const byEnv = await runCli(['inspect', 'split', '--json'], { ARBOR_DATA_DIR: dirs.dataDir, ARBOR_JOURNAL_DIR: dirs.journalDir, ARBOR_SNAPSHOT_DIR: dirs.snapshotDir });
  assert.equal(byEnv.code, 0, byEnv.stderr);
  assert.equal(json(byEnv).state.messages.user, 5);

  const backup = join(root, 'backup');
  assert.equal((await runCli(['backup', backup, ...flags])).code, 0);
  const target = { dataDir: join(root, 'data2'), journalDir: join(root, 'wal2'), snapshotDir: join(root, 'snap2') };
  const restored = await runCli(['restore', backup, '--data-dir', target.dataDir, '--journal-dir', target.journalDir, '--snapshot-dir', target.snapshotDir]);
  assert.equal(restored.code, 0, restored.stderr);
  assert.deepEqual(readdirSync(target.journalDir), readdirSync(dirs.journalDir).filter((f) => f.endsWith('.wal')));
  assert.ok(existsSync(join(target.dataDir, RESTORE_MARKER_FILE)));
  assert.equal(existsSync(join(target.dataDir, 'journals')), false, 'nothing under the data directory but the marker');
});

// ---- bench ----

test('bench: runs the chosen benchmarks with the flags passed through; without bench/node_modules --peers is dropped with the install hint; a failing benchmark exits 1', async () => {
  // A bench root whose "benchmarks" print the arguments they were given (the real ones run in bench-smoke.test.ts).
  const root = join(tmp.dir, 'bench-root');
  for (const name of ['journal', 'runtime']) {
    mkdirSync(join(root, 'bench', name), { recursive: true });
    writeFileSync(
      join(root, 'bench', name, 'run.ts'),
      `const args: string[] = process.argv.slice(2);\n` +
        `if (process.env.FAIL_BENCH === '${name}') process.exit(3);\n` +
        `process.stdout.write(args.includes('--json') ? JSON.stringify({ bench: '${name}', args, cwd: process.cwd(), tmpdir: process.env.TMPDIR ?? null }) : 'table of ${name}\\n');\n`,
    );
  }
  const env = { ARBOR_BENCH_ROOT: root };
  const r = await runCli(['bench', 'journal', '--tiny', '--json', '--peers', '--seconds', '2'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(json(r), { peersSkipped: true, journal: { bench: 'journal', args: ['--tiny', '--json', '--seconds', '2'], cwd: root, tmpdir: process.env.TMPDIR ?? null } });
  assert.match(r.stderr, /--peers: .*npm install --prefix bench.*; running without them/);

  mkdirSync(join(root, 'bench', 'node_modules'));
  const all = await runCli(['bench', '--json', '--peers', '--data-dir', tmp.dir], env);
  assert.equal(all.code, 0, all.stderr);
  const doc = json(all);
  assert.equal(doc.peersSkipped, false);
  assert.deepEqual(doc.journal.args, ['--json', '--peers']);
  assert.deepEqual(doc.runtime.args, ['--json', '--peers']);
  assert.equal(doc.runtime.tmpdir, tmp.dir, '--data-dir: the benchmarks write their temp files on that disk');

  const table = await runCli(['bench', 'runtime'], env);
  assert.equal(table.code, 0);
  assert.equal(table.stdout, 'table of runtime\n');
  const failed = await runCli(['bench'], { ...env, FAIL_BENCH: 'runtime' });
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /bench\/runtime exited with 3/);
  assert.equal((await runCli(['bench', 'nosuch'], env)).code, 2);
  assert.equal((await runCli(['bench', '--seconds', '0'], env)).code, 2);
  const missing = await runCli(['bench'], { ARBOR_BENCH_ROOT: join(tmp.dir, 'nowhere') });
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /benchmarks ship with Arbor's source checkout/);
});
