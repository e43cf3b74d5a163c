/**
 * The directory lock asks the filesystem port what it is (`realPaths`), not
 * which class it is: a wrapper of the real disk (an instrumented or killing
 * filesystem from `arbor-runtime/testing`) names the same files as the plain
 * Node filesystem, so a store opened through one and a store opened through
 * the other on one directory in one process must still exclude each other.
 */
import assert from 'node:assert/strict';
import { relative } from 'node:path';
import { test } from 'node:test';
import { isArborError, NodeFileSystem, openStore, type FileSystem, type RecoveryHooks } from '../src/index.ts';
import { ForwardingFileSystem, MemoryFileSystem } from '../src/testing.ts';
import { tempDir } from './helpers/tmp.ts';

const hooks: RecoveryHooks<number> = { initialState: () => 0, reducer: (n) => n + 1 };
const lockedByThisProcess = (e: unknown): boolean => isArborError(e, 'ARBOR_LOCKED') && (e.details.owner as { pid: number }).pid === process.pid;

test('a store opened through a wrapper of the real disk keeps a plain store off its directory, and the other way round', async () => {
  const { dir, cleanup } = tempDir('arbor-lock-real-paths-');
  try {
    // given: a store holding the directory through a forwarding filesystem
    const wrapped = await openStore({ dataDir: dir, fs: new ForwardingFileSystem(new NodeFileSystem()) }, hooks);
    // when / then: the plain filesystem sees a live lock of this process, not a stale one
    await assert.rejects(openStore({ dataDir: dir }, hooks), lockedByThisProcess);
    await wrapped.close();

    // given: the plain store holds it, named by an absolute path
    const plain = await openStore({ dataDir: dir }, hooks);
    // when / then: a wrapper naming it relatively is refused too
    await assert.rejects(openStore({ dataDir: relative(process.cwd(), dir), fs: new ForwardingFileSystem(new NodeFileSystem()) }, hooks), lockedByThisProcess);
    await plain.close();
  } finally {
    cleanup();
  }
});

test('filesystems say whether their paths are real: the Node one and its wrappers do, the memory one does not', () => {
  // given
  const memory: FileSystem = new MemoryFileSystem();
  // when / then
  assert.equal(new NodeFileSystem().realPaths, true);
  assert.equal(new ForwardingFileSystem(new NodeFileSystem()).realPaths, true);
  assert.notEqual(memory.realPaths, true);
  assert.notEqual(new ForwardingFileSystem(new MemoryFileSystem()).realPaths, true);
});
