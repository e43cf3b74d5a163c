/**
 * arbor.health().hot: the hot tier's byte estimate is refreshed a bounded
 * piece per call and follows the sessions as they grow (see README "Metrics").
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { createArbor, type Arbor, type ArborHealth } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';

/** Calls health() until no session's share is a stand-in; returns the figures. */
function settled(arbor: Arbor): ArborHealth['hot'] {
  for (let call = 0; call < 1_000; call += 1) {
    const hot = arbor.health().hot;
    if (hot.estimated === 0) return hot;
  }
  assert.fail('hot.estimated never reached 0 in 1,000 health() calls');
}

test('health(): hot.approxBytes follows a session that grows, and hot.estimated reaches 0 once every session is sized', async () => {
  const { dir, cleanup } = tempDir('arbor-hot-bytes-');
  const arbor = await createArbor({ dataDir: join(dir, 'data') });
  try {
    // given: two sessions, each with one turn, sized
    for (const id of ['a', 'b']) {
      await arbor.session(id).sendMessage({ content: 'hello' });
      await arbor.session(id).idle();
    }
    const before = settled(arbor);
    assert.equal(before.sessions, 2);
    assert.ok(before.approxBytes > 0);
    // when: one session takes a long message
    const content = 'x'.repeat(50_000);
    await arbor.session('a').sendMessage({ content });
    await arbor.session('a').idle();
    // then: once sized, the figure has grown by at least the message's characters
    const after = settled(arbor);
    assert.equal(after.sessions, 2);
    assert.ok(after.approxBytes - before.approxBytes >= 2 * content.length, `grew by ${after.approxBytes - before.approxBytes} bytes`);
  } finally {
    await arbor.close();
    cleanup();
  }
});
