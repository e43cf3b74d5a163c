import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createArbor, isArborError, MockProvider } from '../src/index.ts';
import { MemoryFileSystem } from '../src/testing.ts';

test('reopen(): after ENOSPC fails the journal, the same process resumes writing once the disk works, losing nothing acknowledged', async () => {
  // given a runtime whose disk drops unsynced data when an fsync fails, as Linux does
  const fs = new MemoryFileSystem({ fsyncErrorLosesData: true });
  const arbor = await createArbor({ dataDir: '/data', fs, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  const chat = arbor.session('r');
  const acked = [];
  for (let i = 0; i < 3; i += 1) {
    acked.push((await chat.sendMessage({ content: `before ${i}`, clientMessageId: `b${i}` })).messageId);
    await chat.idle();
  }
  // when the disk fills up under the journal
  fs.injectFault({ op: 'datasync', error: 'ENOSPC', persistent: true });
  await assert.rejects(chat.sendMessage({ content: 'refused', clientMessageId: 'refused' }), (err: unknown) => isArborError(err, 'ARBOR_IO_ERROR'));
  await chat.idle();
  // then the journal is failed, says why, and refuses every write
  const failed = arbor.health().journal;
  assert.equal(failed.state, 'failed');
  assert.equal(failed.failure?.errno, 'ENOSPC');
  await assert.rejects(chat.sendMessage({ content: 'still refused' }), (err: unknown) => isArborError(err, 'ARBOR_JOURNAL_FAILED'));
  // and reading goes on
  assert.equal(chat.state.messages.filter((m) => m.role === 'user').length, 3);
  // when space returns and the journal is reopened in place
  fs.clearFaults();
  await arbor.reopen();
  // then writing resumes, after everything acknowledged, and a retried refused request is written once
  assert.equal(arbor.health().journal.state, 'open');
  assert.equal(arbor.health().journal.reopens, 1);
  const state = await chat.load();
  assert.deepEqual(state.messages.filter((m) => m.role === 'user').map((m) => m.id).slice(0, 3), acked);
  const retried = await chat.sendMessage({ content: 'refused', clientMessageId: 'refused' });
  await chat.idle();
  const again = await chat.sendMessage({ content: 'refused', clientMessageId: 'refused' });
  assert.equal(again.duplicate, true);
  assert.equal(again.seq, retried.seq);
  assert.equal(chat.state.messages.filter((m) => m.content === 'refused').length, 1);
  await arbor.close();
  // and a later start sees the same history
  const next = await createArbor({ dataDir: '/data', fs, llm: new MockProvider({ chunks: 1, chunkDelayMs: 0 }) });
  assert.deepEqual((await next.session('r').load()).messages.map((m) => m.id), chat.state.messages.map((m) => m.id));
  await next.close();
});
