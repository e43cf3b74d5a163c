import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openStore } from '../src/file/store.ts';
import { tempDir } from './helpers/tmp.ts';

const storeModule = fileURLToPath(new URL('../src/file/store.ts', import.meta.url));

/** Opens the store in another process; prints the error code or "opened". */
function openInChild(dataDir: string): { status: number | null; out: string } {
  const script = `
    const { openStore } = await import(${JSON.stringify(storeModule)});
    try {
      const s = await openStore({ dataDir: ${JSON.stringify(dataDir)} }, { initialState: () => 0, reducer: (x) => x + 1 });
      console.log('opened', s.recovered.get('a')?.seq ?? 0);
      await s.close();
    } catch (err) {
      console.log(err.code, err.message);
      process.exitCode = 3;
    }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout + r.stderr };
}

test('a second process cannot open a locked data directory, and can once the owner closes', async () => {
  const { dir, cleanup } = tempDir();
  try {
    // given this process holds the store
    const store = await openStore({ dataDir: dir }, { initialState: () => 0, reducer: (x: number) => x + 1 });
    await store.append({ sid: 'a', type: 't', data: 1 });
    // when another process opens the same directory
    const refused = openInChild(dir);
    // then it is refused with ARBOR_LOCKED naming this process
    assert.equal(refused.status, 3, refused.out);
    assert.match(refused.out, new RegExp(`ARBOR_LOCKED .*pid ${process.pid}`));
    // and once this process closes, the other one opens and sees the event
    await store.close();
    const opened = openInChild(dir);
    assert.equal(opened.status, 0, opened.out);
    assert.match(opened.out, /opened 1/);
  } finally {
    cleanup();
  }
});
