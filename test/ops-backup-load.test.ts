/**
 * Backup while a server is under load: a child process runs Arbor on a data
 * directory with tiny segments and frequent snapshots, appending as fast as it
 * can and reporting each acknowledged message. Backups run while the load
 * continues (one through the library with copy steps interleaved with the
 * load, so segments rotate and are deleted mid-copy for sure; one through the
 * real CLI). Each backup is restored into a new directory with the CLI,
 * verified clean, and opened with createArbor: every message acknowledged
 * before the backup started must be there. verify and inspect also run on the
 * live directory meanwhile, and must find no damage.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { createArbor, MockProvider, NodeFileSystem } from '../src/index.ts';
import { backupDataDir } from '../src/ops/backup.ts';
import { readRestoreMarker, RESTORE_MARKER_FILE } from '../src/file/restore-marker.ts';
import { tempDir } from './helpers/tmp.ts';
import { json, repoRoot, runCli } from './ops/run-cli.ts';

interface Ack {
  sid: string;
  messageId: string;
}

function startLoad(dataDir: string) {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/ops/load-child.ts', '--data-dir', dataDir], { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] });
  const acks: Ack[] = [];
  let stderr = '';
  let exited: string | undefined;
  let waiters: { n: number; resolve: () => void; reject: (e: Error) => void }[] = [];
  const wake = (): void => {
    waiters = waiters.filter((w) => {
      if (exited !== undefined) w.reject(new Error(`load child exited (${exited}) before ${w.n} acks (had ${acks.length})\n${stderr}`));
      else if (acks.length >= w.n) w.resolve();
      else return true;
      return false;
    });
  };
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  createInterface({ input: child.stdout }).on('line', (l) => {
    const [kind, sid, messageId] = l.split(' ');
    if (kind === 'acked') {
      acks.push({ sid: sid!, messageId: messageId! });
      wake();
    }
  });
  child.on('exit', (code, signal) => {
    exited = `code ${code}, signal ${signal}`;
    wake();
  });
  return {
    acks,
    /** resolves once at least n messages were acknowledged */
    waitAcks: (n: number) => new Promise<void>((resolve, reject) => {
      waiters.push({ n, resolve, reject });
      wake();
    }),
    kill: () => new Promise<void>((resolve) => {
      if (exited !== undefined) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGKILL');
    }),
  };
}

const segments = (dataDir: string): string[] => readdirSync(join(dataDir, 'journals')).filter((n) => n.endsWith('.wal')).sort();

/** Restores `backup` with the CLI into a new directory, verifies it, and returns the ids of every user message in it by session. */
async function restoreAndRead(backup: string, target: string): Promise<Map<string, Set<string>>> {
  const restored = await runCli(['restore', backup, '--data-dir', target, '--json']);
  assert.equal(restored.code, 0, `restore failed:\n${restored.stderr}`);
  assert.equal(json(restored).verify.ok, true);
  const verify = await runCli(['verify', '--data-dir', target, '--json']);
  assert.equal(verify.code, 0, `verify of the restored copy found damage:\n${verify.stdout}`);
  assert.deepEqual(json(verify).damage, []);
  const marker = await readRestoreMarker(new NodeFileSystem(), target);
  assert.ok(marker !== undefined, `${RESTORE_MARKER_FILE} is written`);
  const arbor = await createArbor({ dataDir: target, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  const out = new Map<string, Set<string>>();
  try {
    for (const { id } of marker.sessions) {
      const state = await arbor.session(id).load();
      out.set(id, new Set(state.messages.filter((m) => m.role === 'user').map((m) => m.id)));
      // the user sees that anything after the backup was lost: one notice, the session's newest message
      const notices = state.messages.filter((m) => m.metadata?.restored === true);
      assert.equal(notices.length, 1, `session ${id}: ${notices.length} restore notices`);
      assert.equal(notices[0]!.metadata?.backupId, marker.backupId);
      assert.equal(state.messages.at(-1)?.id, notices[0]!.id);
    }
    assert.deepEqual(arbor.recoveryReport().counts.damaged, 0);
  } finally {
    await arbor.close();
  }
  // and once only: the next start shows no second notice
  const again = await createArbor({ dataDir: target, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  try {
    for (const { id } of marker.sessions.slice(0, 5)) {
      const state = await again.session(id).load();
      assert.equal(state.messages.filter((m) => m.metadata?.restored === true).length, 1, `session ${id}: the notice was shown again`);
    }
  } finally {
    await again.close();
  }
  return out;
}

function assertAllPresent(acked: Ack[], restored: Map<string, Set<string>>, what: string): void {
  const missing = acked.filter((a) => restored.get(a.sid)?.has(a.messageId) !== true);
  assert.deepEqual(missing.slice(0, 5), [], `${what}: ${missing.length} of ${acked.length} messages acknowledged before the backup started are missing from the restored copy`);
}

test('backup during load: every message acknowledged before the backup started is restored', { timeout: 480_000 }, async () => {
  const { dir, cleanup } = tempDir('arbor-ops-load-');
  const dataDir = join(dir, 'data');
  const load = startLoad(dataDir);
  try {
    // Enough history that old segments have been released and deleted already, and several segments to copy.
    await load.waitAcks(300);
    while (segments(dataDir).length < 3) await load.waitAcks(load.acks.length + 1);

    // 1. Through the library. After the first segment is copied, the copy waits until the server
    //    has deleted the second listed segment (the slow session's next snapshot releases it), so
    //    the copy meets a vanished segment for sure; every other file copy waits for
    //    40 more acknowledgements, so the journal rotates and snapshots are pruned mid-copy.
    const ackedBefore1 = load.acks.slice();
    const atStart = segments(dataDir);
    let waitedOnSnapshot = false;
    let copiedSegments = 0;
    // The first segment the copy took, and the one after it then (the oldest segment may be deleted
    // between listing atStart and the backup's own listing: the copy's first one is what counts).
    let first = '';
    let next = '';
    const r1 = await backupDataDir({
      dataDir,
      dest: join(dir, 'backup-lib'),
      afterCopy: async (file) => {
        if (file.startsWith('journals/')) {
          copiedSegments += 1;
          if (copiedSegments === 1) {
            first = file.slice('journals/'.length);
            next = segments(dataDir).find((s) => s > first) ?? '';
            while (segments(dataDir).includes(next)) await load.waitAcks(load.acks.length + 1);
          }
        } else {
          if (waitedOnSnapshot) return;
          waitedOnSnapshot = true;
        }
        await load.waitAcks(load.acks.length + 40);
      },
    });
    const atEnd = segments(dataDir);
    if (process.env.ARBOR_TEST_DEBUG) console.error({ acked: ackedBefore1.length, now: load.acks.length, atStart, atEnd, relists: r1.relists, dropped: r1.droppedSegments, vanished: r1.vanishedSnapshots, journal: r1.manifest.journal });
    assert.ok(first !== '' && next !== '', `the copy took a segment (${first}) with one after it (${next})`);
    assert.ok(r1.droppedSegments.includes(first), `the copy of ${first} was dropped when ${next} vanished (dropped: ${r1.droppedSegments})`);
    assert.ok(atEnd.some((s) => !atStart.includes(s)), 'the journal rotated during the copy');
    assert.ok(r1.manifest.journal.segments >= 1);

    // 2. Through the CLI, while the load goes on.
    const ackedBefore2 = load.acks.slice();
    const cli = await runCli(['backup', join(dir, 'backup-cli'), '--data-dir', dataDir, '--json']);
    assert.equal(cli.code, 0, `arbor backup failed:\n${cli.stderr}`);
    const doc = json(cli);
    for (const k of ['backupId', 'startedAt', 'files', 'bytes', 'durationMs', 'bytesPerSec']) assert.ok(k in doc, `backup --json has ${k}`);
    await load.waitAcks(load.acks.length + 20); // the load really was still running

    // verify and inspect read the live directory without the lock: no false damage while segments
    // rotate and vanish and snapshots are pruned under them.
    const v = await runCli(['verify', '--data-dir', dataDir, '--json']);
    assert.equal(v.code, 0, `verify of the live directory reported damage:\n${JSON.stringify(json(v).damage, null, 1)}`);
    const ins = await runCli(['inspect', 'load-1', '--data-dir', dataDir, '--json']);
    assert.equal(ins.code, 0, ins.stderr);
    assert.ok(json(ins).state.messages.user > 0);
    await load.waitAcks(load.acks.length + 20);
    await load.kill();

    assertAllPresent(ackedBefore1, await restoreAndRead(join(dir, 'backup-lib'), join(dir, 'restored-lib')), 'library backup');
    assertAllPresent(ackedBefore2, await restoreAndRead(join(dir, 'backup-cli'), join(dir, 'restored-cli')), 'CLI backup');
  } finally {
    await load.kill();
    cleanup();
  }
});
