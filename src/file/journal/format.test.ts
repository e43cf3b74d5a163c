import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeHead, decodePayload, encodePayload, encodePayloadInto, encodeTypeAndVersion, PAYLOAD_FIXED_BYTES } from './format.ts';

const sid = fc.stringMatching(/^[A-Za-z0-9_-]{1,128}$/);

test('decodeHead reads exactly what decodePayload reads of lsn, sid, seq, ts and cid, whatever the data', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      sid,
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      fc.oneof(fc.nat(), fc.double({ min: 0, max: 1e22, noNaN: true })),
      fc.string({ minLength: 1, maxLength: 20 }),
      fc.jsonValue(),
      fc.option(fc.oneof(fc.string({ minLength: 1, maxLength: 200 }), fc.constantFrom(',"cid":"x', '"}', 'a"}}', '\\"'))),
      (lsn, s, seq, ts, type, data, cid) => {
        const text = encodePayload(lsn, s, seq, ts, type, 1, data, cid ?? undefined);
        if (text === undefined) return;
        const bytes = Buffer.from(text, 'utf8');
        const full = decodePayload(bytes);
        assert.ok(typeof full !== 'string', full as string);
        const head = decodeHead(bytes);
        const expected = full.cid === undefined ? { lsn: full.lsn, sid: full.sid, seq: full.seq, ts: full.ts } : { lsn: full.lsn, sid: full.sid, seq: full.seq, ts: full.ts, cid: full.cid };
        assert.deepEqual(head, expected);
        // a plain Uint8Array view (not a Buffer), inside a bigger buffer, reads the same
        const outer = new Uint8Array(bytes.length + 5);
        outer.set(bytes, 3);
        assert.deepEqual(decodeHead(outer.subarray(3, 3 + bytes.length)), expected);
      },
    ),
    { numRuns: 2000, seed: 7 },
  );
});

test('decodeHead names what is wrong with a payload that is not a record', () => {
  assert.equal(decodeHead(Buffer.from('{"lsn":1,"sid":"a","seq":1,"ts":0,"type":"t","v":1,"data":0')), 'payload is not an object');
  assert.equal(decodeHead(Buffer.from('not json at all, but long enough to be a frame')), 'payload is not JSON');
  assert.equal(decodeHead(Buffer.from('{"lsn":0,"sid":"a","seq":1,"ts":0,"type":"t","v":1,"data":0}')), 'lsn is not a positive integer');
  assert.equal(decodeHead(Buffer.from('{"lsn":1,"sid":"a/b","seq":1,"ts":0,"type":"t","v":1,"data":0}')), 'sid is not a valid session id');
});

test('encodePayloadInto writes exactly the bytes of encodePayload, whatever the numbers, type, data and cid', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      sid,
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }),
      fc.oneof(fc.nat(), fc.maxSafeNat(), fc.double({ min: 0, max: 1e22, noNaN: true })),
      fc.string({ minLength: 1, maxLength: 20, unit: 'grapheme' }),
      fc.integer({ min: 1, max: 1000 }),
      fc.jsonValue(),
      fc.option(fc.string({ minLength: 1, maxLength: 200, unit: 'grapheme' })),
      (lsn, s, seq, ts, type, v, data, cid) => {
        const text = encodePayload(lsn, s, seq, ts, type, v, data, cid ?? undefined);
        if (text === undefined) return;
        const typeAndV = encodeTypeAndVersion(type, v);
        const dataJson = JSON.stringify(data);
        const cidJson = cid === null ? undefined : JSON.stringify(cid);
        const room = PAYLOAD_FIXED_BYTES + s.length + typeAndV.length + 3 * (dataJson.length + (cidJson?.length ?? 0));
        const buf = Buffer.alloc(room + 16, 0xee);
        const n = encodePayloadInto(buf, 7, lsn, s, seq, ts, typeAndV, dataJson, cidJson);
        assert.equal(buf.toString('utf8', 7, 7 + n), text);
        assert.equal(n, Buffer.byteLength(text));
        assert.equal(buf[6], 0xee);
        assert.equal(buf[7 + n], 0xee);
      },
    ),
    { numRuns: 2000, seed: 11 },
  );
});
