import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { NodeFileSystem } from '../../storage/node-fs.ts';
import { SegmentPieces } from './segment-pieces.ts';
import { tempDir } from '../../../test/helpers/tmp.ts';

// The recovery pass walks a segment frame by frame, asking for each frame's bytes only when the
// current piece does not hold them. Whatever the piece size, the headroom and the frame sizes
// (frames larger than a piece, frames straddling two pieces, an end short of the file's), every
// frame must read as the file's own bytes.
test('SegmentPieces: every frame a walk asks for reads as the file holds it, across every piece boundary', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const fs = new NodeFileSystem();
  let run = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: 6000 }),
      fc.integer(),
      fc.array(fc.integer({ min: 1, max: 900 }), { minLength: 1, maxLength: 30, size: 'max' }),
      fc.integer({ min: 1, max: 700 }),
      fc.integer({ min: 1, max: 300 }),
      fc.oneof(fc.constant(100), fc.integer({ min: 0, max: 100 })),
      async (length, seed, frames, pieceBytes, headroom, endPercent) => {
        const bytes = Buffer.alloc(length);
        let x = seed | 1;
        for (let i = 0; i < length; i += 1) bytes[i] = (x = (Math.imul(x, 1103515245) + 12345) | 0) >>> 24;
        const file = join(dir, `s${(run += 1)}`);
        writeFileSync(file, bytes);
        // the segment as it was at open may end before the file does
        const end = Math.floor((length * endPercent) / 100);
        const handle = await fs.open(file, 'r');
        try {
          const pieces = new SegmentPieces(handle, end, pieceBytes, headroom);
          let pos = 0;
          // the frame sizes over and over, to the end
          for (let k = 0; pos < end; k += 1) {
            const need = Math.min(frames[k % frames.length]!, end - pos);
            if (pos + need > pieces.base + pieces.view.length) assert.equal(await pieces.cover(pos, need), true);
            const at = pos - pieces.base;
            assert.ok(at >= 0 && at + need <= pieces.view.length, `frame at ${pos} of ${need} bytes is in the view`);
            assert.deepEqual(pieces.view.subarray(at, at + need), Buffer.from(bytes.subarray(pos, pos + need)));
            pos += need;
          }
          await pieces.close();
        } finally {
          await handle.close();
        }
      },
    ),
    { numRuns: 300 },
  );
});

test('SegmentPieces: a file shorter than the end asked for yields what it holds, and cover says so', async (t) => {
  const { dir, cleanup } = tempDir();
  t.after(cleanup);
  const fs = new NodeFileSystem();
  const file = join(dir, 'short');
  const bytes = Buffer.from('0123456789abcdef');
  writeFileSync(file, bytes);
  const handle = await fs.open(file, 'r');
  t.after(() => handle.close());
  // given a segment said to be 64 bytes long whose file holds 16
  const pieces = new SegmentPieces(handle, 64, 6, 4);
  assert.equal(await pieces.cover(0, 4), true);
  assert.deepEqual(pieces.view.subarray(0, 4), bytes.subarray(0, 4));
  // when a frame runs past what the file holds
  assert.equal(await pieces.cover(10, 20), false);
  // then the view holds the rest of the file from there
  assert.deepEqual(pieces.view.subarray(pieces.base === 10 ? 0 : 10 - pieces.base), bytes.subarray(10));
  await pieces.close();
});
