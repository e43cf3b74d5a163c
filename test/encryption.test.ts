import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { createArbor, MockProvider, openStore, type ArborOptions } from '../src/index.ts';
import { backupDataDir, restoreBackup, rotateEncryptionKey } from '../src/ops.ts';
import { loadConfig } from '../src/server/config.ts';
import { startServer } from '../src/server/server.ts';
import { ErrorCodes } from '../src/core/errors.ts';
import { tempDir } from './helpers/tmp.ts';
import { rejectsWith } from './helpers/assertions.ts';
import { hooks } from './crash/power-loss-harness.ts';
import { json, runCli } from './ops/run-cli.ts';
import { filesContaining } from './helpers/files.ts';

// Encryption at rest: per-session data keys wrapped by the master key. Nothing readable on disk,
// a wrong or missing key refuses to open and writes nothing, a delete shreds every earlier copy
// (a restored backup included), and rotation rewraps keys without rewriting data.

const newKey = (): string => randomBytes(32).toString('base64');

/** Every file under `dir` with its bytes, to show that nothing was written. */
function snapshotTree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else out.set(p, readFileSync(p).toString('base64'));
    }
  };
  walk(dir);
  return out;
}

const opts = (dataDir: string, encryptionKey: string | undefined, extra: ArborOptions = {}): ArborOptions => ({
  dataDir,
  llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }),
  snapshotEveryEvents: 3,
  erasureDeadlineMs: 2_000,
  ...(encryptionKey === undefined ? {} : { encryptionKey }),
  ...extra,
});

test('encrypted at rest: no plaintext in the journal, snapshots or checkpoint; a restart with the key reads everything back', async (t) => {
  const { dir, cleanup } = tempDir('arbor-enc-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  const key = newKey();
  const MARK = 'plaintext-marker-91ab';
  const arbor = await createArbor(opts(dataDir, key));
  const s = arbor.session('secret');
  for (let i = 0; i < 5; i += 1) {
    await s.sendMessage({ content: `${MARK} ${i}` });
    await s.idle();
  }
  await arbor.checkpoint();
  const messages = s.state.messages.map((m) => m.content);
  await arbor.close();
  assert.ok(existsSync(join(dataDir, 'keys', 'keystore.json')));
  assert.ok(readdirSync(join(dataDir, 'snapshots')).length > 0 && existsSync(join(dataDir, 'checkpoint', 'table.ckpt')));
  assert.deepEqual(filesContaining(dataDir, MARK), []);
  const again = await createArbor(opts(dataDir, key));
  assert.deepEqual((await again.session('secret').load()).messages.map((m) => m.content), messages);
  await again.close();
});

test('a missing or wrong key refuses to open with ARBOR_ENCRYPTION_KEY naming the key source, and writes nothing', async (t) => {
  const { dir, cleanup } = tempDir('arbor-enc-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  const arbor = await createArbor(opts(dataDir, newKey()));
  await arbor.session('s').sendMessage({ content: 'hello' });
  await arbor.session('s').idle();
  await arbor.close();
  const before = snapshotTree(dataDir);
  await rejectsWith(createArbor(opts(dataDir, undefined)), ErrorCodes.ENCRYPTION_KEY, { source: 'none' });
  await rejectsWith(createArbor(opts(dataDir, newKey())), ErrorCodes.ENCRYPTION_KEY, { source: 'option encryptionKey' });
  const keyFile = join(dir, 'master.key');
  writeFileSync(keyFile, `${newKey()}\n`);
  await rejectsWith(createArbor(opts(dataDir, undefined, { encryptionKeyFile: keyFile })), ErrorCodes.ENCRYPTION_KEY, { source: `key file ${keyFile}` });
  await rejectsWith(createArbor(opts(dataDir, 'too-short')), ErrorCodes.ENCRYPTION_KEY, { source: 'option encryptionKey' });
  assert.deepEqual(snapshotTree(dataDir), before, 'not a byte written, no lock file left');
});

test('a backup taken before a delete, restored with the live key store: the deleted chat is neither in its files nor reachable over HTTP; the others are', async (t) => {
  const { dir, cleanup } = tempDir('arbor-enc-');
  const closers: (() => Promise<void>)[] = [];
  t.after(async () => {
    for (const close of closers) await close();
    cleanup();
  });
  const dataDir = join(dir, 'data');
  const key = newKey();
  const MARK = 'shredded-chat-marker-5d2';
  // given an encrypted data directory with two chats, backed up
  const arbor = await createArbor(opts(dataDir, key));
  for (const sid of ['gone', 'stays']) {
    await arbor.session(sid).sendMessage({ content: `${sid === 'gone' ? MARK : 'keep me'} hello` });
    await arbor.session(sid).idle();
  }
  await arbor.close();
  const backup = join(dir, 'backup');
  const made = await backupDataDir({ dataDir, dest: backup });
  assert.ok(made.manifest.encrypted !== undefined);
  assert.ok(!existsSync(join(backup, 'keys')), 'the backup holds no keys');
  // when the chat is deleted afterwards (its data key destroyed)
  const live = await createArbor(opts(dataDir, key));
  await live.session('gone').delete();
  await live.close();
  // then a restore of the earlier backup with the live key store reports it erased
  await rejectsWith(restoreBackup({ src: backup, dataDir: join(dir, 'no-keys') }), ErrorCodes.USAGE, { option: 'keyStore' });
  const restoredDir = join(dir, 'restored');
  const restored = await restoreBackup({ src: backup, dataDir: restoredDir, keyStore: join(dataDir, 'keys', 'keystore.json') });
  assert.deepEqual(restored.erased, ['gone']);
  assert.deepEqual(filesContaining(restoredDir, MARK), []);
  // and over HTTP it does not exist, while the other chat does
  const server = await startServer(loadConfig({ env: { ARBOR_ENCRYPTION_KEY: key, ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, overrides: { dataDir: restoredDir, port: 0, logLevel: 'silent' } }));
  closers.push(() => server.close());
  assert.equal((await fetch(`${server.url}/v1/sessions/gone`)).status, 404);
  const stays = await fetch(`${server.url}/v1/sessions/stays`);
  assert.equal(stays.status, 200);
  assert.match(JSON.stringify(await stays.json()), /keep me hello/);
  await server.arbor.whenErased();
  assert.deepEqual(filesContaining(restoredDir, MARK), []);
});

test('rotating the master key rewraps the data keys only: the old key is refused, the new one reads everything', async (t) => {
  const { dir, cleanup } = tempDir('arbor-enc-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  const oldKey = newKey();
  const store = await openStore({ dataDir, encryptionKey: oldKey }, hooks);
  for (let n = 1; n <= 4; n += 1) await store.append({ sid: 'r', type: 'user_message_sent', data: { n } });
  await store.close();
  const segments = snapshotTree(join(dataDir, 'journals'));
  const next = newKey();
  const rotated = await rotateEncryptionKey({ dataDir, encryptionKey: oldKey, newEncryptionKey: next });
  assert.equal(rotated.keys, 1);
  assert.deepEqual(snapshotTree(join(dataDir, 'journals')), segments, 'no journal byte rewritten');
  await rejectsWith(openStore({ dataDir, encryptionKey: oldKey }, hooks), ErrorCodes.ENCRYPTION_KEY);
  const reopened = await openStore({ dataDir, encryptionKey: next }, hooks);
  assert.deepEqual((await reopened.loadSession('r'))?.state.ns, [1, 2, 3, 4]);
  await reopened.close();
});

test('arbor verify / inspect / keys rotate on an encrypted data directory: clear about a missing or wrong key, full checks with the right one', async (t) => {
  const { dir, cleanup } = tempDir('arbor-enc-');
  t.after(cleanup);
  const dataDir = join(dir, 'data');
  const key = newKey();
  const arbor = await createArbor(opts(dataDir, key));
  await arbor.session('cli').sendMessage({ content: 'cli secret' });
  await arbor.session('cli').idle();
  await arbor.close();
  // verify without the key: the frames are checked, and it says the payloads were not opened
  const noKey = await runCli(['verify', '--data-dir', dataDir, '--json']);
  assert.equal(noKey.code, 0, noKey.stderr);
  const noKeyReport = json(noKey);
  assert.equal(noKeyReport.encryption, 'no-key');
  assert.ok(noKeyReport.notes.some((n: string) => n.includes('ARBOR_ENCRYPTION_KEY')));
  // with the key (from the environment): every payload opened
  const withKey = json(await runCli(['verify', '--data-dir', dataDir, '--json'], { ARBOR_ENCRYPTION_KEY: key }));
  assert.deepEqual([withKey.ok, withKey.encryption], [true, 'checked']);
  // a wrong key: refused, coded, naming where it came from
  const wrong = await runCli(['verify', '--data-dir', dataDir, '--json', '--encryption-key', newKey()]);
  assert.equal(wrong.code, 1);
  assert.equal(json(wrong).error.code, 'ARBOR_ENCRYPTION_KEY');
  assert.match(json(wrong).error.details.source, /--encryption-key/);
  // inspect needs the key, and shows the content with it
  const inspectNoKey = await runCli(['inspect', 'cli', '--data-dir', dataDir, '--json']);
  assert.equal(json(inspectNoKey).error.code, 'ARBOR_ENCRYPTION_KEY');
  const inspected = await runCli(['inspect', 'cli', '--data-dir', dataDir, '--json', '--encryption-key', key]);
  assert.equal(inspected.code, 0, inspected.stderr);
  assert.match(inspected.stdout, /cli secret/);
  // keys rotate: the new key opens it, the old one no longer does
  const next = newKey();
  const rotated = await runCli(['keys', 'rotate', '--data-dir', dataDir, '--encryption-key', key, '--new-key', next, '--json']);
  assert.equal(rotated.code, 0, rotated.stderr);
  assert.equal(json(rotated).keys, 1);
  assert.equal(json(await runCli(['verify', '--data-dir', dataDir, '--json', '--encryption-key', key])).error.code, 'ARBOR_ENCRYPTION_KEY');
  assert.equal(json(await runCli(['verify', '--data-dir', dataDir, '--json', '--encryption-key', next])).encryption, 'checked');
});
