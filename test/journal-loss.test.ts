import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { createArbor, MockProvider, openStore, type SessionState, type Store } from '../src/index.ts';
import { hooks, type ChatState } from './crash/power-loss-harness.ts';
import { tempDir } from './helpers/tmp.ts';
import { json, runCli } from './ops/run-cli.ts';

// Defence in depth around the journal index: a journal cut short below what
// was once synced is LOSS (verify exits 1, the sessions get the loss notice),
// not a harmless torn tail; and the background pass re-checks every frame it
// decodes, so a byte that changed after the open scan is not recovered as data.

const SESSIONS = ['alpha', 'beta', 'gamma'];

/** A data directory written by the runtime and closed cleanly (which leaves the index and its high-water mark). */
async function fixture(dir: string, perSession = 20): Promise<void> {
  const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  const store = arbor.backend as Store<SessionState>;
  for (let i = 0; i < perSession; i += 1) {
    for (const sid of SESSIONS) await store.append({ sid, type: 'user_message_sent', data: { messageId: randomUUID(), content: `${sid} message ${i} ${'x'.repeat(40)}` } });
  }
  await arbor.close();
}

function newestSegment(dir: string): string {
  const segs = readdirSync(join(dir, 'journals')).filter((n) => n.endsWith('.wal')).sort();
  return join(dir, 'journals', segs.at(-1)!);
}

test('arbor verify: a journal cut below its high-water mark is LOSS (exit 1, with the count), a torn write is not', async () => {
  const { dir, cleanup } = tempDir();
  try {
    await fixture(dir);
    const clean = await runCli(['verify', '--data-dir', dir, '--json']);
    assert.equal(clean.code, 0, clean.stdout + clean.stderr);
    // a torn write (garbage after the last record) is still a note, exit 0
    const torn = join(tempDir().dir, 'torn');
    cpSync(dir, torn, { recursive: true });
    appendFileSync(newestSegment(torn), Buffer.from([1, 2, 3, 4, 5, 6, 7]));
    const tornRun = await runCli(['verify', '--data-dir', torn, '--json']);
    assert.equal(tornRun.code, 0, tornRun.stdout);
    // the newest segment cut short by 1,500 bytes: acknowledged, synced events gone
    const seg = newestSegment(dir);
    truncateSync(seg, statSync(seg).size - 1500);
    const cut = await runCli(['verify', '--data-dir', dir, '--json']);
    assert.equal(cut.code, 1, cut.stdout + cut.stderr);
    const doc = json(cut);
    const loss = doc.damage.find((d: { kind: string }) => d.kind === 'loss');
    assert.ok(loss !== undefined, JSON.stringify(doc.damage));
    assert.equal(loss.lostLsns[1], 20 * SESSIONS.length);
    assert.ok(loss.lostLsns[1] - loss.lostLsns[0] + 1 >= 5, `lost ${JSON.stringify(loss.lostLsns)}`);
    assert.ok(loss.sessions.length >= 1);
    const human = await runCli(['verify', '--data-dir', dir]);
    assert.equal(human.code, 1);
    assert.match(human.stdout, /LOSS/);
  } finally {
    cleanup();
  }
});

test('the runtime opens a cut journal with the loss in its report, and the affected sessions get the loss notice', async () => {
  const { dir, cleanup } = tempDir();
  try {
    await fixture(dir);
    const seg = newestSegment(dir);
    truncateSync(seg, statSync(seg).size - 1500);
    const arbor = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
    try {
      const loss = arbor.recoveryReport().loss;
      assert.ok(loss !== undefined);
      assert.equal(loss.lostLsns[1], 20 * SESSIONS.length);
      assert.ok(loss.noticed);
      const affected = new Set(loss.sessions.map((s) => s.id));
      assert.ok(affected.size >= 1);
      for (const sid of SESSIONS) {
        const state = await arbor.session(sid).load();
        const notices = state.messages.filter((m) => m.role === 'system' && typeof m.metadata?.backupId === 'string' && String(m.metadata.backupId).startsWith('journal-loss-'));
        assert.equal(notices.length, affected.has(sid) ? 1 : 0, `session ${sid}`);
      }
    } finally {
      await arbor.close();
    }
    // the loss is recorded once: the next open does not count it again, and the notice is not repeated
    const again = await createArbor({ dataDir: dir, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
    try {
      assert.equal(again.recoveryReport().loss, undefined);
      for (const sid of SESSIONS) {
        const state = await again.session(sid).load();
        assert.ok(state.messages.filter((m) => String(m.metadata?.backupId ?? '').startsWith('journal-loss-')).length <= 1);
      }
    } finally {
      await again.close();
    }
  } finally {
    cleanup();
  }
});

test('the background pass re-checks every frame: a byte changed after the open scan is a gap, not data', async () => {
  const { dir, cleanup } = tempDir();
  try {
    let store = await openStore<ChatState>({ dataDir: dir }, hooks);
    for (let n = 1; n <= 30; n += 1) await store.append({ sid: SESSIONS[n % 3]!, type: 't', data: { n: 100 + n } });
    await store.close();
    // opened lazily: the open scan (or the index) has vouched for every frame; then a digit changes on disk
    store = await openStore<ChatState>({ dataDir: dir, recovery: 'lazy' }, hooks);
    const seg = newestSegment(dir);
    const bytes = readFileSync(seg);
    const at = bytes.indexOf(Buffer.from('"n":115'));
    assert.ok(at > 0);
    bytes[at + 6] = '7'.charCodeAt(0); // still valid JSON: {"n":117}, a value session alpha (n = 15) never had
    writeFileSync(seg, bytes);
    await store.recoverAll();
    const report = store.recoveryReport();
    const alpha = report.sessions.find((s) => s.sid === 'alpha')!;
    assert.equal(alpha.status, 'damaged');
    assert.deepEqual(alpha.missing, [5, 5]);
    assert.ok(report.journal.damage.some((d) => d.segment === seg.split('/').at(-1) && /checksum/.test(d.reason)), JSON.stringify(report.journal.damage));
    const r = await store.loadSession('alpha').catch((err: { code?: string }) => err);
    assert.ok(!('state' in (r as object)) || !(r as { state: ChatState }).state.ns.includes(117), 'the changed byte came back as data');
    await assert.rejects(store.append({ sid: 'alpha', type: 't', data: { n: 1 } }), (err: { code?: string }) => err.code === 'ARBOR_SESSION_QUARANTINED');
    await store.close();
  } finally {
    cleanup();
  }
});
