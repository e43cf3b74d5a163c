import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryFileSystem, mulberry32 } from './memory-fs.ts';
import type { FileHandle } from '../storage/fs-port.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();

function bytes(s: string): Uint8Array {
  return enc.encode(s);
}

function text(b: Uint8Array | undefined): string | undefined {
  return b === undefined ? undefined : dec.decode(b);
}

function filled(length: number, byte: number): Uint8Array {
  return new Uint8Array(length).fill(byte);
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function hex(b: Uint8Array | undefined): string {
  return b === undefined ? '<missing>' : Buffer.from(b).toString('hex');
}

async function write(h: FileHandle, data: Uint8Array | string, position: number): Promise<void> {
  const b = typeof data === 'string' ? bytes(data) : data;
  assert.equal(await h.write(b, 0, b.length, position), b.length);
}

/** mkdir + syncDir of every ancestor, so `dir` itself is durably reachable. */
async function durableDir(fs: MemoryFileSystem, dir: string): Promise<void> {
  await fs.mkdir(dir, 0o700);
  const parts = dir.split('/').filter(Boolean);
  for (let i = parts.length - 1; i >= 0; i--) await fs.syncDir(`/${parts.slice(0, i).join('/')}`);
}

/** A file whose content and entry are durable. */
async function durableFile(fs: MemoryFileSystem, dir: string, name: string, data: Uint8Array | string): Promise<void> {
  const h = await fs.open(`${dir}/${name}`, 'wx+');
  await write(h, data, 0);
  await h.datasync();
  await h.close();
  await fs.syncDir(dir);
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return (err as { code?: string }).code;
  }
}

/** Whether `p` settles before a macrotask turn (the fs only ever uses microtasks). */
async function settles(p: Promise<unknown>): Promise<boolean> {
  const tick = new Promise<'pending'>((resolve) => setImmediate(() => resolve('pending')));
  const outcome = await Promise.race([p.then(() => 'settled', () => 'settled'), tick]);
  return outcome === 'settled';
}

function allTears(fs: MemoryFileSystem): MemoryFileSystem[] {
  const images: MemoryFileSystem[] = [];
  for (let keep = 0; keep <= fs.pendingCount(); keep++) {
    images.push(fs.crashImageWith(keep, 'none'));
    for (const tearBytes of [0, 1, 511, 512, 513, 4096]) {
      images.push(fs.crashImageWith(keep, 'prefix', tearBytes));
      images.push(fs.crashImageWith(keep, 'zeros', tearBytes));
    }
  }
  return images;
}

test('an unsynced write is lost when the crash keeps no pending op', async () => {
  // given a durable empty file
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  await durableFile(fs, '/data', 'a', '');
  // when a write is made without datasync
  const h = await fs.open('/data/a', 'r+');
  await write(h, 'hello', 0);
  // then the running process sees it, a crash keeping nothing pending does not
  assert.equal(text(fs.dump()['/data/a']), 'hello');
  assert.equal(fs.pendingCount(), 1);
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/data/a']), '');
  assert.equal(text(fs.crashImageWith(1, 'none').dump()['/data/a']), 'hello');
});

test('a datasynced write survives every crash image', async () => {
  // given a durable file with a synced write, followed by unrelated pending ops
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  await durableFile(fs, '/data', 'a', 'one');
  const h = await fs.open('/data/a', 'r+');
  await write(h, 'two', 3);
  await h.datasync();
  const other = await fs.open('/data/b', 'w+');
  await write(other, filled(2000, 7), 0);
  await fs.unlink('/data/a');
  // when every crash image is taken
  const images = allTears(fs);
  // then each one has the synced content
  assert.equal(fs.pendingCount(), 3);
  for (const image of images) {
    const content = image.dump()['/data/a'];
    assert.ok(content === undefined || text(content) === 'onetwo', `got ${text(content)}`);
  }
  // and only the image keeping the (unsynced) unlink lacks the file
  assert.equal(text(fs.crashImageWith(2, 'none').dump()['/data/a']), 'onetwo');
  assert.equal(fs.crashImageWith(3, 'none').dump()['/data/a'], undefined);
});

test('a created and synced file needs syncDir to survive a crash', async () => {
  // given a durable directory and a new file whose data is synced
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  const h = await fs.open('/data/new', 'wx+');
  await write(h, 'payload', 0);
  await h.sync();
  // when the machine crashes before syncDir
  const before = fs.crashImageWith(0, 'none');
  // then the file is gone
  assert.equal(before.exists('/data/new'), false);
  assert.deepEqual(await before.readdir('/data'), []);
  // when the directory is synced
  await fs.syncDir('/data');
  // then every crash image has it with its data
  assert.equal(fs.pendingCount(), 0);
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/data/new']), 'payload');
});

test('a durable entry whose data was never synced comes back empty', async () => {
  // given a file created, written and its directory synced, but the file never fsynced
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  const h = await fs.open('/data/f', 'wx+');
  await write(h, 'lost', 0);
  // when the directory is synced
  await fs.syncDir('/data');
  // then a crash keeping nothing pending has an empty file
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/data/f']), '');
});

test('a rename is durable only after syncDir', async () => {
  // given a durable tmp file
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  await durableFile(fs, '/data', 'tmp', 'v2');
  // when it is renamed onto a name without syncDir
  await fs.rename('/data/tmp', '/data/final');
  // then a crash may undo the rename
  assert.deepEqual(Object.keys(fs.crashImageWith(0, 'none').dump()), ['/data/tmp']);
  assert.deepEqual(Object.keys(fs.crashImageWith(1, 'none').dump()), ['/data/final']);
  // when the directory is synced
  await fs.syncDir('/data');
  // then the rename survives every crash
  assert.equal(fs.pendingCount(), 0);
  const after = fs.crashImageWith(0, 'none').dump();
  assert.deepEqual(Object.keys(after), ['/data/final']);
  assert.equal(text(after['/data/final']), 'v2');
});

test('a rename onto an existing file replaces it atomically in every crash image', async () => {
  // given durable old and tmp files
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  await durableFile(fs, '/data', 'current', 'old');
  await durableFile(fs, '/data', 'tmp', 'new');
  // when tmp replaces current
  await fs.rename('/data/tmp', '/data/current');
  // then the running view and each crash image hold exactly one version under current
  assert.equal(text(await fs.readFile('/data/current')), 'new');
  assert.equal(fs.exists('/data/tmp'), false);
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/data/current']), 'old');
  assert.equal(text(fs.crashImageWith(1, 'none').dump()['/data/current']), 'new');
  assert.equal(fs.crashImageWith(1, 'none').exists('/data/tmp'), false);
});

test('a cross-directory rename needs both directories synced', async () => {
  // given a durable file in /a and a durable empty /b
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/a');
  await durableDir(fs, '/b');
  await durableFile(fs, '/a', 'f', 'x');
  // when it moves to /b and only /b is synced
  await fs.rename('/a/f', '/b/f');
  await fs.syncDir('/b');
  // then the rename is still pending
  assert.equal(fs.pendingCount(), 1);
  assert.deepEqual(Object.keys(fs.crashImageWith(0, 'none').dump()), ['/a/f']);
  // when /a is synced too
  await fs.syncDir('/a');
  // then it is durable
  assert.equal(fs.pendingCount(), 0);
  assert.deepEqual(Object.keys(fs.crashImageWith(0, 'none').dump()), ['/b/f']);
});

test('ops on the same entry become durable in order, never resurrecting a name', async () => {
  // given durable /a/f = "moved" and /b/f = "old"
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/a');
  await durableDir(fs, '/b');
  await durableFile(fs, '/a', 'f', 'moved');
  await durableFile(fs, '/b', 'f', 'old');
  // when /a/f replaces /b/f, is unlinked, and /b is synced before /a
  await fs.rename('/a/f', '/b/f');
  await fs.unlink('/b/f');
  await fs.syncDir('/b');
  // then neither op is durable yet (the unlink waits for the rename)
  assert.equal(fs.pendingCount(), 2);
  for (let keep = 0; keep <= 2; keep++) {
    const names = Object.keys(fs.crashImageWith(keep, 'none').dump()).sort();
    assert.deepEqual(names, [['/a/f', '/b/f'], ['/b/f'], []][keep]);
  }
  // when /a is synced
  await fs.syncDir('/a');
  // then both are durable and /b/f never comes back
  assert.equal(fs.pendingCount(), 0);
  assert.deepEqual(fs.crashImageWith(0, 'none').dump(), {});
});

test('an unlink is durable only after syncDir', async () => {
  // given a durable file
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  await durableFile(fs, '/data', 'gone', 'bye');
  // when it is unlinked
  await fs.unlink('/data/gone');
  // then a crash can bring it back until the directory is synced
  assert.equal(fs.exists('/data/gone'), false);
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/data/gone']), 'bye');
  await fs.syncDir('/data');
  assert.equal(fs.crashImageWith(0, 'none').exists('/data/gone'), false);
});

test('mkdir creates missing parents, each entry durable only through its parent', async () => {
  // given a fresh fs
  const fs = new MemoryFileSystem();
  // when a nested directory is created and only it and its parent are synced
  await fs.mkdir('/x/y/z', 0o750);
  await fs.syncDir('/x/y/z');
  await fs.syncDir('/x/y');
  // then the running view has it, a crash does not (/x and /x/y entries are pending)
  assert.equal((await fs.stat('/x/y/z')).isDirectory, true);
  assert.equal((await fs.stat('/x/y')).mode, 0o750);
  assert.equal(fs.crashImageWith(0, 'none').exists('/x'), false);
  assert.equal(fs.crashImageWith(1, 'none').exists('/x/y'), false);
  // when the remaining parents are synced
  await fs.syncDir('/x');
  await fs.syncDir('/');
  // then the whole path survives
  const image = fs.crashImageWith(0, 'none');
  assert.equal((await image.stat('/x/y/z')).isDirectory, true);
  assert.equal((await image.stat('/x/y/z')).mode, 0o750);
  // and mkdir of an existing directory is fine, of an existing file is EEXIST
  await fs.mkdir('/x/y', 0o700);
  const h = await fs.open('/x/file', 'w+');
  await h.close();
  assert.equal(await codeOf(fs.mkdir('/x/file', 0o700)), 'EEXIST');
  assert.equal(await codeOf(fs.mkdir('/x/file/sub', 0o700)), 'ENOTDIR');
});

test('a crash image does not mutate the original, nor does writing to it', async () => {
  // given a durable file plus pending writes across chunk boundaries
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  await durableFile(fs, '/data', 'big', filled(10_000, 1));
  const h = await fs.open('/data/big', 'r+');
  await write(h, filled(5000, 2), 3000);
  const pendingBefore = fs.pendingCount();
  const currentBefore = hex(fs.dump()['/data/big']);
  // when images are taken and written to
  const full = fs.crashImageWith(1, 'none');
  const empty = fs.crashImageWith(0, 'none');
  const eh = await empty.open('/data/big', 'r+');
  await write(eh, filled(10_000, 9), 0);
  await eh.datasync();
  const fh = await full.open('/data/big', 'r+');
  await fh.truncate(100);
  await full.unlink('/data/big');
  await full.syncDir('/data');
  // then the original's current state, pending list and durable state are untouched
  assert.equal(fs.pendingCount(), pendingBefore);
  assert.equal(hex(fs.dump()['/data/big']), currentBefore);
  assert.equal(hex(fs.crashImageWith(0, 'none').dump()['/data/big']), hex(filled(10_000, 1)));
  const expected = concat(filled(3000, 1), filled(5000, 2), filled(2000, 1));
  assert.equal(hex(fs.crashImageWith(1, 'none').dump()['/data/big']), hex(expected));
  // and the images are independent of each other
  assert.equal(hex(empty.dump()['/data/big']), hex(filled(10_000, 9)));
  assert.equal(full.exists('/data/big'), false);
  // and a crash image starts with nothing pending
  assert.equal(fs.crashImageWith(1, 'none').pendingCount(), 0);
});

test('syncing the original after taking a crash image does not change the image', async () => {
  // given a durable file and a crash image of it
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/data');
  await durableFile(fs, '/data', 'f', filled(6000, 1));
  const image = fs.crashImageWith(0, 'none');
  // when the original overwrites part of it, shrinks and regrows it, and syncs
  const h = await fs.open('/data/f', 'r+');
  await write(h, filled(100, 2), 10);
  await write(h, filled(4096, 3), 4096);
  await h.truncate(5000);
  await h.truncate(6000);
  await h.datasync();
  // then the image still holds the old bytes
  assert.equal(hex(image.dump()['/data/f']), hex(filled(6000, 1)));
  assert.equal(hex(await image.readFile('/data/f')), hex(filled(6000, 1)));
});

test('files unreachable after a crash are gone and free their space', async () => {
  // given a 100-byte fs with an 80-byte file whose data is synced but whose entry is not
  const fs = new MemoryFileSystem({ capacityBytes: 100 });
  await durableDir(fs, '/d');
  const h = await fs.open('/d/orphan', 'wx+');
  await write(h, filled(80, 1), 0);
  await h.datasync();
  // when the machine crashes before syncDir
  const image = fs.crashImageWith(0, 'none');
  // then the file is gone and its space is free in the image
  assert.equal(image.exists('/d/orphan'), false);
  const n = await image.open('/d/new', 'wx+');
  await write(n, filled(80, 2), 0);
  assert.equal(await codeOf(n.write(filled(21, 2), 0, 21, 80)), 'ENOSPC');
});

test('a torn write keeps whole 512-byte sectors of the file offset', async () => {
  // given a durable 100-byte file and a pending 1000-byte write at offset 100 (file offsets 100..1100)
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/d');
  await durableFile(fs, '/d', 'f', filled(100, 0x41));
  const h = await fs.open('/d/f', 'r+');
  await write(h, filled(1000, 0x42), 100);
  // when it is torn after 950 bytes (file offset 1050), the prefix ends at file offset 1024
  const prefix = fs.crashImageWith(0, 'prefix', 950).dump()['/d/f'];
  // then exactly the sectors up to 1024 are kept and the file ends there
  assert.equal(hex(prefix), hex(concat(filled(100, 0x41), filled(924, 0x42))));
  // when the zero-fill variant is taken, the extended region is zeros up to the write's end
  const zeros = fs.crashImageWith(0, 'zeros', 950).dump()['/d/f'];
  assert.equal(hex(zeros), hex(concat(filled(100, 0x41), filled(924, 0x42), filled(76, 0))));
  // when torn inside the first sector nothing of the write is kept
  assert.equal(hex(fs.crashImageWith(0, 'prefix', 300).dump()['/d/f']), hex(filled(100, 0x41)));
  assert.equal(hex(fs.crashImageWith(0, 'zeros', 300).dump()['/d/f']), hex(concat(filled(100, 0x41), filled(1000, 0))));
});

test('a torn overwrite inside the file keeps the old bytes after the tear', async () => {
  // given a durable 2048-byte file and a pending overwrite of bytes 0..1536
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/d');
  await durableFile(fs, '/d', 'f', filled(2048, 1));
  const h = await fs.open('/d/f', 'r+');
  await write(h, filled(1536, 2), 0);
  // when it is torn after 1100 bytes (zeros requested, but the write did not extend the file)
  const torn = fs.crashImageWith(0, 'zeros', 1100).dump()['/d/f'];
  // then two sectors are new, the rest old, and the size is unchanged
  assert.equal(hex(torn), hex(concat(filled(1024, 2), filled(1024, 1))));
});

test('crashImage over 1000 seeds only yields the durable state plus a prefix of pending ops', async () => {
  // given 512 durable bytes, then pending writes of 1024 bytes at 512 and 512 bytes at 1536
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/d');
  await durableFile(fs, '/d', 'f', filled(512, 0x41));
  const h = await fs.open('/d/f', 'r+');
  await write(h, filled(1024, 0x42), 512);
  await write(h, filled(512, 0x43), 1536);
  const A = filled(512, 0x41);
  const expected = new Map<string, string>([
    [hex(A), 'nothing'],
    [hex(concat(A, filled(512, 0x42))), 'first torn, prefix'],
    [hex(concat(A, filled(1024, 0))), 'first torn at 0, zeros'],
    [hex(concat(A, filled(512, 0x42), filled(512, 0))), 'first torn at 512, zeros'],
    [hex(concat(A, filled(1024, 0x42))), 'first write'],
    [hex(concat(A, filled(1024, 0x42), filled(512, 0))), 'second torn at 0, zeros'],
    [hex(concat(A, filled(1024, 0x42), filled(512, 0x43))), 'both writes'],
  ]);
  // when 1000 seeded crash images are taken
  const seen = new Set<string>();
  for (let seed = 1; seed <= 1000; seed++) {
    const content = hex(fs.crashImage(mulberry32(seed)).dump()['/d/f']);
    // then each is one of the expected states
    assert.ok(expected.has(content), `seed ${seed} produced an impossible state ${content.slice(0, 80)}…`);
    seen.add(content);
  }
  // and every possible state shows up
  assert.deepEqual([...expected.keys()].filter((k) => !seen.has(k)).map((k) => expected.get(k)), []);
  assert.equal(fs.pendingCount(), 2);
});

test('mulberry32 is deterministic per seed and in [0, 1)', () => {
  // given two generators with the same seed and one with another
  const a = mulberry32(42);
  const b = mulberry32(42);
  const c = mulberry32(43);
  // when drawing
  const xs = Array.from({ length: 100 }, () => a());
  const ys = Array.from({ length: 100 }, () => b());
  const zs = Array.from({ length: 100 }, () => c());
  // then same seed, same sequence; values in range
  assert.deepEqual(xs, ys);
  assert.notDeepEqual(xs, zs);
  assert.ok(xs.every((x) => x >= 0 && x < 1));
});

test('freezeAfter(n) lets call n complete and call n+1 never settle', async () => {
  // given a fs frozen after its third call
  const fs = new MemoryFileSystem();
  fs.freezeAfter(3);
  await fs.mkdir('/d', 0o700); // call 1
  const h = await fs.open('/d/f', 'w+'); // call 2
  // when the third call (a write) and a fourth (datasync) are made
  const third = h.write(bytes('abc'), 0, 3, 0);
  assert.equal(await settles(third), true);
  assert.equal(await third, 3);
  assert.equal(fs.frozen, false);
  const fourth = h.datasync();
  // then the fourth never settles, and nor does anything after it
  assert.equal(await settles(fourth), false);
  assert.equal(await settles(fs.stat('/d/f')), false);
  assert.equal(await settles(h.write(bytes('zzz'), 0, 3, 0)), false);
  assert.equal(fs.frozen, true);
  assert.equal(fs.callCount, 6);
  // and the completed write is applied whole but still pending, the later ones had no effect
  assert.equal(text(fs.dump()['/d/f']), 'abc');
  assert.equal(fs.pendingCount(), 3);
  assert.equal(fs.crashImageWith(0, 'none').exists('/d'), false);
  assert.equal(text(fs.crashImageWith(3, 'none').dump()['/d/f']), 'abc');
});

test('freezeAfter(0) freezes the very first call', async () => {
  // given a fs frozen before any call
  const fs = new MemoryFileSystem();
  fs.freezeAfter(0);
  // when mkdir is called
  const p = fs.mkdir('/d', 0o700);
  // then it never settles and has no effect
  assert.equal(await settles(p), false);
  assert.equal(fs.exists('/d'), false);
  assert.equal(fs.callCount, 1);
});

test('an injected one-shot EIO fails only the at-th matching call, with no effect', async () => {
  // given a file and a fault on the second write
  const fs = new MemoryFileSystem();
  await fs.mkdir('/d', 0o700);
  const h = await fs.open('/d/f', 'w+');
  fs.injectFault({ op: 'write', at: 2 });
  // when three writes are made
  await write(h, 'a', 0);
  const code = await codeOf(h.write(bytes('b'), 0, 1, 1));
  await write(h, 'c', 1);
  // then only the second failed, and it wrote nothing
  assert.equal(code, 'EIO');
  assert.equal(fs.faultsFired, 1);
  assert.equal(text(await fs.readFile('/d/f')), 'ac');
});

test('a persistent fault fails every later matching call until cleared', async () => {
  // given a persistent datasync ENOSPC fault
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/d');
  await durableFile(fs, '/d', 'f', '');
  const h = await fs.open('/d/f', 'r+');
  await write(h, 'data', 0);
  fs.injectFault({ op: ['datasync', 'sync'], error: 'ENOSPC', persistent: true });
  // when fsync is retried
  assert.equal(await codeOf(h.datasync()), 'ENOSPC');
  assert.equal(await codeOf(h.sync()), 'ENOSPC');
  assert.equal(await codeOf(h.datasync()), 'ENOSPC');
  // then nothing became durable: the write is still pending, a crash may drop it
  assert.equal(fs.faultsFired, 3);
  assert.equal(fs.pendingCount(), 1);
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/d/f']), '');
  // when the faults are cleared the next fsync works
  fs.clearFaults();
  await h.datasync();
  assert.equal(fs.pendingCount(), 0);
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/d/f']), 'data');
});

test('with fsyncErrorLosesData a failed fsync loses the data even if a retry succeeds', async () => {
  // given a fs modelling Linux writeback-error semantics and one pending write
  const fs = new MemoryFileSystem({ fsyncErrorLosesData: true });
  await durableDir(fs, '/d');
  await durableFile(fs, '/d', 'f', '');
  const h = await fs.open('/d/f', 'r+');
  await write(h, 'first', 0);
  fs.injectFault({ op: 'datasync' });
  // when fsync fails once, and a later write is fsynced successfully
  assert.equal(await codeOf(h.datasync()), 'EIO');
  await write(h, '!', 5);
  await h.datasync();
  // then the process still reads everything, but a crash lost the first write
  assert.equal(text(await fs.readFile('/d/f')), 'first!');
  assert.equal(fs.pendingCount(), 0);
  assert.equal(hex(fs.crashImageWith(0, 'none').dump()['/d/f']), hex(concat(filled(5, 0), bytes('!'))));
});

test('pathIncludes restricts a fault to matching paths, either side of a rename', async () => {
  // given a fault on any op touching "journal"
  const fs = new MemoryFileSystem();
  await fs.mkdir('/d', 0o700);
  fs.injectFault({ pathIncludes: 'journal', persistent: true });
  // when ops touch other paths and then the journal
  const other = await fs.open('/d/snapshot', 'w+');
  await write(other, 'ok', 0);
  const codes = [await codeOf(fs.open('/d/journal.wal', 'w+')), await codeOf(fs.rename('/d/snapshot', '/d/journal'))];
  // then only the journal ops fail
  assert.deepEqual(codes, ['EIO', 'EIO']);
  assert.equal(fs.exists('/d/journal.wal'), false);
  assert.equal(fs.exists('/d/snapshot'), true);
});

test('shortWrite writes and returns only the short count', async () => {
  // given a short-write fault of 3 bytes
  const fs = new MemoryFileSystem();
  await fs.mkdir('/d', 0o700);
  const h = await fs.open('/d/f', 'w+');
  fs.injectFault({ op: 'write', shortWrite: 3 });
  // when 10 bytes are written, twice
  const first = await h.write(bytes('0123456789'), 0, 10, 0);
  const second = await h.write(bytes('abcdefghij'), 2, 8, 3);
  // then the first wrote 3, the second (fault used up) wrote all
  assert.equal(first, 3);
  assert.equal(second, 8);
  assert.equal(text(await fs.readFile('/d/f')), '012cdefghij');
  assert.equal(fs.faultsFired, 1);
});

test('capacityBytes fails a growing write with ENOSPC and writes nothing', async () => {
  // given a 100-byte filesystem holding 60 bytes
  const fs = new MemoryFileSystem({ capacityBytes: 100 });
  await fs.mkdir('/d', 0o700);
  const a = await fs.open('/d/a', 'w+');
  await write(a, filled(60, 1), 0);
  const b = await fs.open('/d/b', 'w+');
  // when writes would exceed it
  const tooBig = await codeOf(b.write(filled(41, 2), 0, 41, 0));
  const growTruncate = await codeOf(b.truncate(41));
  // then they fail and change nothing
  assert.equal(tooBig, 'ENOSPC');
  assert.equal(growTruncate, 'ENOSPC');
  assert.equal((await b.stat()).size, 0);
  // and writes that fit, including overwrites, succeed
  await write(b, filled(40, 2), 0);
  await write(a, filled(60, 3), 0);
  assert.equal(await codeOf(b.write(filled(1, 2), 0, 1, 40)), 'ENOSPC');
  // and freeing space (unlinking a closed file) makes room
  await a.close();
  await fs.unlink('/d/a');
  await write(b, filled(1, 2), 40);
  assert.equal((await b.stat()).size, 41);
});

test('a handle keeps working after its file is unlinked or renamed', async () => {
  // given an open file
  const fs = new MemoryFileSystem();
  await fs.mkdir('/d', 0o700);
  const h = await fs.open('/d/f', 'w+');
  await write(h, 'abc', 0);
  // when it is renamed, then unlinked
  await fs.rename('/d/f', '/d/g');
  await write(h, 'd', 3);
  assert.equal(text(await fs.readFile('/d/g')), 'abcd');
  await fs.unlink('/d/g');
  // then the handle still reads and writes the inode
  await write(h, 'e', 4);
  const buf = new Uint8Array(10);
  assert.equal(await h.read(buf, 0, 10, 0), 5);
  assert.equal(text(buf.subarray(0, 5)), 'abcde');
  assert.equal((await h.stat()).size, 5);
  await h.datasync();
  await h.close();
  assert.deepEqual(await fs.readdir('/d'), []);
});

test('a closed handle fails with EBADF, as does writing a read-only one', async () => {
  // given a file opened read-only and read-write
  const fs = new MemoryFileSystem();
  await fs.mkdir('/d', 0o700);
  const rw = await fs.open('/d/f', 'w+');
  await write(rw, 'x', 0);
  const ro = await fs.open('/d/f', 'r');
  // when writing the read-only one, and using the closed one
  const roWrite = await codeOf(ro.write(bytes('y'), 0, 1, 0));
  const roTruncate = await codeOf(ro.truncate(0));
  await rw.close();
  const codes = await Promise.all([
    codeOf(rw.write(bytes('y'), 0, 1, 0)),
    codeOf(rw.read(new Uint8Array(1), 0, 1, 0)),
    codeOf(rw.datasync()),
    codeOf(rw.sync()),
    codeOf(rw.truncate(0)),
    codeOf(rw.stat()),
    codeOf(rw.close()),
  ]);
  // then every call is EBADF and nothing changed
  assert.equal(roWrite, 'EBADF');
  assert.equal(roTruncate, 'EBADF');
  assert.deepEqual(codes, Array(7).fill('EBADF'));
  assert.equal(text(await fs.readFile('/d/f')), 'x');
});

test('mode defaults to 0o600, is kept, and a chmod is durable after sync but not datasync', async () => {
  // given files created with the default and an explicit mode
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/d');
  const a = await fs.open('/d/a', 'w+');
  const b = await fs.open('/d/b', 'wx+', 0o640);
  await fs.syncDir('/d');
  // then stat reports them, in the running view and after a crash
  assert.equal((await fs.stat('/d/a')).mode, 0o600);
  assert.equal((await b.stat()).mode, 0o640);
  assert.equal((await fs.crashImageWith(0, 'none').stat('/d/b')).mode, 0o640);
  assert.equal((await fs.stat('/d')).mode, 0o700);
  // when a is chmodded and only datasynced
  await fs.chmod('/d/a', 0o644);
  await a.datasync();
  assert.equal((await fs.stat('/d/a')).mode, 0o644);
  assert.equal((await fs.crashImageWith(0, 'none').stat('/d/a')).mode, 0o600);
  // when it is fully synced
  await a.sync();
  assert.equal((await fs.crashImageWith(0, 'none').stat('/d/a')).mode, 0o644);
});

test('open flags: existence, exclusivity, truncation and directories', async () => {
  // given a durable file with content
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/d');
  await durableFile(fs, '/d', 'f', 'content');
  // when opened in various ways, then
  assert.equal(await codeOf(fs.open('/d/missing', 'r')), 'ENOENT');
  assert.equal(await codeOf(fs.open('/d/missing', 'r+')), 'ENOENT');
  assert.equal(await codeOf(fs.open('/nope/f', 'w+')), 'ENOENT');
  assert.equal(await codeOf(fs.open('/d/f/x', 'w+')), 'ENOTDIR');
  assert.equal(await codeOf(fs.open('/d/f', 'wx+')), 'EEXIST');
  assert.equal(await codeOf(fs.open('/d', 'r')), 'EISDIR');
  assert.equal(await codeOf(fs.open('/d', 'w+')), 'EISDIR');
  const r = await fs.open('/d/f', 'r');
  assert.equal((await r.stat()).size, 7);
  // and w+ truncates the existing file as a pending op
  const w = await fs.open('/d/f', 'w+');
  assert.equal((await w.stat()).size, 0);
  assert.equal(fs.pendingCount(), 1);
  assert.equal(text(fs.crashImageWith(0, 'none').dump()['/d/f']), 'content');
  assert.equal(text(fs.crashImageWith(1, 'none').dump()['/d/f']), '');
  // and non-normalised paths resolve
  assert.equal(fs.exists('/d/../d/./f'), true);
});

test('reads, gaps, readFile copies, readdir and unlink errors', async () => {
  // given a file written beyond its end
  const fs = new MemoryFileSystem();
  await fs.mkdir('/d', 0o700);
  const h = await fs.open('/d/f', 'w+');
  await write(h, 'ab', 0);
  await write(h, 'z', 5000);
  // then the gap reads as zeros and reading past the end returns 0
  const content = await fs.readFile('/d/f');
  assert.equal(content.length, 5001);
  assert.equal(hex(content.subarray(0, 3)), hex(concat(bytes('ab'), filled(1, 0))));
  assert.ok(content.subarray(2, 5000).every((b) => b === 0));
  assert.equal(content[5000], 'z'.charCodeAt(0));
  assert.equal(await h.read(new Uint8Array(4), 0, 4, 5001), 0);
  assert.equal(await h.read(new Uint8Array(4), 0, 4, 4999), 2);
  // and readFile returns a copy
  content.fill(9);
  assert.equal((await fs.readFile('/d/f'))[0], 'a'.charCodeAt(0));
  // and the error cases
  assert.equal(await codeOf(fs.readdir('/missing')), 'ENOENT');
  assert.equal(await codeOf(fs.readdir('/d/f')), 'ENOTDIR');
  assert.equal(await codeOf(fs.readFile('/d')), 'EISDIR');
  assert.equal(await codeOf(fs.readFile('/d/missing')), 'ENOENT');
  assert.equal(await codeOf(fs.unlink('/d')), 'EISDIR');
  assert.equal(await codeOf(fs.unlink('/d/missing')), 'ENOENT');
  assert.equal(await codeOf(fs.rename('/d/missing', '/d/x')), 'ENOENT');
  assert.equal(await codeOf(fs.stat('/d/missing')), 'ENOENT');
  assert.equal(await codeOf(fs.chmod('/d/missing', 0o600)), 'ENOENT');
  assert.equal(await codeOf(fs.syncDir('/d/missing')), 'ENOENT');
  assert.deepEqual(await fs.readdir('/d'), ['f']);
});

test('a shrinking truncate followed by a crash replays exactly', async () => {
  // given a durable 9000-byte file truncated to 4100 then rewritten at its end
  const fs = new MemoryFileSystem();
  await durableDir(fs, '/d');
  await durableFile(fs, '/d', 'f', filled(9000, 5));
  const h = await fs.open('/d/f', 'r+');
  await h.truncate(4100);
  await h.truncate(4200);
  await write(h, 'x', 4300);
  const expected = concat(filled(4100, 5), filled(200, 0), bytes('x'));
  // then the running view and the full crash image agree, and keep=1 is just the truncate
  assert.equal(hex(await fs.readFile('/d/f')), hex(expected));
  assert.equal(hex(fs.crashImageWith(3, 'none').dump()['/d/f']), hex(expected));
  assert.equal(hex(fs.crashImageWith(1, 'none').dump()['/d/f']), hex(filled(4100, 5)));
});

test('calls settle on microtasks and count every method', async () => {
  // given a fresh fs
  const fs = new MemoryFileSystem();
  // when each FileSystem and FileHandle method is called once
  await fs.mkdir('/d', 0o700);
  const h = await fs.open('/d/f', 'w+');
  await Promise.all([fs.readFile('/d/f'), fs.readdir('/d'), fs.stat('/d'), fs.chmod('/d/f', 0o600)]);
  await h.write(bytes('a'), 0, 1, 0);
  await h.read(new Uint8Array(1), 0, 1, 0);
  await h.datasync();
  await h.sync();
  await h.truncate(0);
  await h.stat();
  await h.close();
  await fs.rename('/d/f', '/d/g');
  await fs.unlink('/d/g');
  await fs.syncDir('/d');
  // then each counted once, and the sync helpers did not count
  fs.exists('/d');
  fs.dump();
  fs.pendingCount();
  assert.equal(fs.callCount, 16);
});
