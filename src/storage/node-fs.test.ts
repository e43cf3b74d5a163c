import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { NodeFileSystem } from './node-fs.ts';
import { tempDir } from '../../test/helpers/tmp.ts';

test('NodeFileSystem: a call on a closed handle fails with EBADF and never reaches a file opened after it (descriptor numbers are reused)', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const fs = new NodeFileSystem();
  // given a closed handle, and a new file that may have been given its descriptor number
  const closed = await fs.open(join(dir, 'a'), 'w+');
  await closed.close();
  const other = await fs.open(join(dir, 'b'), 'w+');
  // when the closed handle is written to, synced and read
  const bytes = Buffer.from('late write');
  await assert.rejects(closed.write(bytes, 0, bytes.length, 0), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  await assert.rejects(closed.datasync(), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  await assert.rejects(closed.read(Buffer.alloc(4), 0, 4, 0), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  // then the other file got nothing
  await other.close();
  assert.equal(readFileSync(join(dir, 'b')).length, 0);
  await closed.close();
});

test('NodeFileSystem: close() waits for a call in flight, which completes', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const fs = new NodeFileSystem();
  const handle = await fs.open(join(dir, 'a'), 'w+');
  const data = Buffer.alloc(4 * 1024 * 1024, 0x61);
  // when close() is called while a write is in flight
  const written = handle.write(data, 0, data.length, 0);
  const events: string[] = [];
  void written.then(() => events.push('written'));
  await handle.close().then(() => events.push('closed'));
  // then the write completed before the descriptor was closed, whole
  assert.equal(events[0], 'written');
  assert.equal(await written, data.length);
  assert.equal(readFileSync(join(dir, 'a')).length, data.length);
});
