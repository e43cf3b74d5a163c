import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { countWords, MockProvider, mockReplyChunks } from './mock-provider.ts';
import { isAbortError, type ChatTurn, type StreamRequest } from './provider.ts';

function request(messages: readonly ChatTurn[], signal: AbortSignal = new AbortController().signal): StreamRequest {
  return { sessionId: 's1', messageId: 'm1', messages, signal };
}

async function collect(stream: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const chunk of stream) out.push(chunk);
  return out;
}

function activeTimeouts(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

const conversation: readonly ChatTurn[] = [
  { role: 'system', content: 'be brief' },
  { role: 'user', content: 'first question' },
  { role: 'assistant', content: 'first answer' },
  { role: 'user', content: 'what is a write-ahead log?' },
];

test('same conversation, same chunks: two providers agree, and the text echoes the last user message', async () => {
  // given
  const a = new MockProvider({ chunks: 5, chunkDelayMs: 0, env: {} });
  const b = new MockProvider({ chunks: 5, chunkDelayMs: 0, env: {} });
  // when
  const first = await collect(a.stream(request(conversation)));
  const second = await collect(b.stream(request(conversation)));
  // then
  assert.deepEqual(first, second);
  assert.deepEqual(first, mockReplyChunks(conversation, 5));
  assert.equal(first.join(''), 'Echo: what is a write-ahead log?');
});

test('a different last user message gives a different answer', async () => {
  const p = new MockProvider({ chunks: 3, chunkDelayMs: 0, env: {} });
  const one = (await collect(p.stream(request([{ role: 'user', content: 'one' }])))).join('');
  const two = (await collect(p.stream(request([{ role: 'user', content: 'two' }])))).join('');
  assert.notEqual(one, two);
});

for (const chunks of [1, 3, 8, 50]) {
  test(`mockReplyChunks(chunks=${chunks}): exactly ${chunks} non-empty pieces whose sizes differ by at most one`, () => {
    for (const content of ['', 'hi', 'a considerably longer message that needs many characters to echo back']) {
      const parts = mockReplyChunks([{ role: 'user', content }], chunks);
      assert.equal(parts.length, chunks, `content ${JSON.stringify(content)}`);
      assert.ok(parts.every((p) => p.length > 0));
      const sizes = parts.map((p) => Array.from(p).length);
      assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `sizes ${sizes.join(',')}`);
      const text = parts.join('');
      assert.ok(text.startsWith(`Echo: ${content}`), text);
      assert.match(text.slice(`Echo: ${content}`.length), /^\.*$/);
    }
  });
}

test('mockReplyChunks never splits a surrogate pair', () => {
  const parts = mockReplyChunks([{ role: 'user', content: '😀😀😀😀😀😀' }], 12);
  assert.equal(parts.length, 12);
  const loneSurrogate = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
  for (const p of parts) assert.doesNotMatch(p, loneSurrogate, JSON.stringify(p));
});

test('a trailing assistant or system turn does not change the answer: the last *user* message is echoed', () => {
  const more: readonly ChatTurn[] = [...conversation, { role: 'assistant', content: 'partial answer' }, { role: 'system', content: 'notice' }];
  assert.equal(mockReplyChunks(more, 4).join(''), 'Echo: what is a write-ahead log?');
});

test('without a user message the answer is still well defined', () => {
  assert.equal(mockReplyChunks([], 2).join(''), 'Echo: ');
  assert.equal(mockReplyChunks([{ role: 'system', content: 'x' }], 1).join(''), 'Echo: ');
});

test('the stream yields provider.chunks chunks (from ARBOR_MOCK_CHUNKS)', async () => {
  const p = new MockProvider({ env: { ARBOR_MOCK_CHUNKS: '13', ARBOR_MOCK_CHUNK_DELAY_MS: '0' } });
  assert.equal((await collect(p.stream(request(conversation)))).length, 13);
});

test('env: defaults are 8 chunks and 20 ms when the variables are unset or empty', () => {
  for (const env of [{}, { ARBOR_MOCK_CHUNKS: '', ARBOR_MOCK_CHUNK_DELAY_MS: '' }]) {
    const p = new MockProvider({ env });
    assert.equal(p.chunks, 8);
    assert.equal(p.chunkDelayMs, 20);
  }
});

test('env: values are read from the given env, and explicit options win over it', () => {
  const env = { ARBOR_MOCK_CHUNKS: '3', ARBOR_MOCK_CHUNK_DELAY_MS: '0' };
  const fromEnv = new MockProvider({ env });
  assert.equal(fromEnv.chunks, 3);
  assert.equal(fromEnv.chunkDelayMs, 0);
  const explicit = new MockProvider({ env, chunks: 4, chunkDelayMs: 7 });
  assert.equal(explicit.chunks, 4);
  assert.equal(explicit.chunkDelayMs, 7);
});

test('env: process.env is the default source', () => {
  const saved = process.env.ARBOR_MOCK_CHUNKS;
  process.env.ARBOR_MOCK_CHUNKS = '21';
  try {
    assert.equal(new MockProvider().chunks, 21);
  } finally {
    if (saved === undefined) delete process.env.ARBOR_MOCK_CHUNKS;
    else process.env.ARBOR_MOCK_CHUNKS = saved;
  }
});

for (const [variable, value] of [
  ['ARBOR_MOCK_CHUNKS', 'abc'],
  ['ARBOR_MOCK_CHUNKS', '-1'],
  ['ARBOR_MOCK_CHUNKS', '0'],
  ['ARBOR_MOCK_CHUNKS', '2.5'],
  ['ARBOR_MOCK_CHUNKS', ' 3'],
  ['ARBOR_MOCK_CHUNKS', '1e3'],
  ['ARBOR_MOCK_CHUNK_DELAY_MS', '-5'],
  ['ARBOR_MOCK_CHUNK_DELAY_MS', '10ms'],
  ['ARBOR_MOCK_CHUNK_DELAY_MS', '99999999999'],
] as const) {
  test(`env: ${variable}=${JSON.stringify(value)} is a RangeError naming the variable and the value`, () => {
    assert.throws(
      () => new MockProvider({ env: { [variable]: value } }),
      (err: unknown) => {
        assert.ok(err instanceof RangeError);
        assert.ok(err.message.includes(variable), err.message);
        assert.ok(err.message.includes(JSON.stringify(value)), err.message);
        return true;
      },
    );
  });
}

test('options: chunks below 1 or non-integer, and a negative delay, are RangeErrors', () => {
  for (const chunks of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => new MockProvider({ env: {}, chunks }), RangeError, `chunks=${chunks}`);
  }
  assert.throws(() => new MockProvider({ env: {}, chunkDelayMs: -1 }), RangeError);
  assert.doesNotThrow(() => new MockProvider({ env: {}, chunkDelayMs: 0 }));
});

test('chunkDelayMs=0 still yields to the event loop between chunks', async () => {
  // given: a macrotask that can only run if the stream gives the event loop a turn
  const p = new MockProvider({ chunks: 20, chunkDelayMs: 0, env: {} });
  let turns = 0;
  let running = true;
  const tick = (): void => {
    turns++;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  // when
  const chunks = await collect(p.stream(request(conversation)));
  running = false;
  // then
  assert.equal(chunks.length, 20);
  assert.ok(turns >= 10, `only ${turns} event-loop turns ran during a 20-chunk stream`);
});

test('chunkDelayMs=30: four chunks take at least 4 × 30 ms', async () => {
  const p = new MockProvider({ chunks: 4, chunkDelayMs: 30, env: {} });
  const started = performance.now();
  await collect(p.stream(request(conversation)));
  const elapsed = performance.now() - started;
  assert.ok(elapsed >= 4 * 30 - 2, `elapsed ${elapsed.toFixed(1)} ms`);
});

test('abort mid-stream (10 chunks × 200 ms): the iteration throws AbortError at once and leaves no timer behind', async () => {
  // given
  const p = new MockProvider({ chunks: 10, chunkDelayMs: 200, env: {} });
  const controller = new AbortController();
  const baseline = activeTimeouts();
  const received: string[] = [];
  // when: abort 50 ms into the wait for the second chunk
  const iteration = (async () => {
    for await (const chunk of p.stream(request(conversation, controller.signal))) {
      received.push(chunk);
      setTimeout(() => controller.abort(), 50);
    }
  })();
  // then
  await assert.rejects(iteration, (err: unknown) => {
    assert.ok(isAbortError(err), `expected an AbortError, got ${String(err)}`);
    assert.match((err as Error).message, /chunk 2 of 10/);
    return true;
  });
  // "Promptly" without a clock: the error names chunk 2 (the abort cut the wait for it), and the
  // chunk timer is gone rather than left to fire.
  assert.equal(received.length, 1);
  assert.equal(activeTimeouts(), baseline, 'the chunk timer was not cleared on abort');
});

test('an already-aborted signal throws AbortError before the first chunk', async () => {
  const p = new MockProvider({ chunks: 3, chunkDelayMs: 0, env: {} });
  const controller = new AbortController();
  controller.abort();
  const received: string[] = [];
  await assert.rejects(
    (async () => {
      for await (const chunk of p.stream(request(conversation, controller.signal))) received.push(chunk);
    })(),
    (err: unknown) => isAbortError(err),
  );
  assert.deepEqual(received, []);
});

test('countWords counts what /\\S+/g matches, without building the words (every whitespace JavaScript knows)', () => {
  const spaces = ['\t', '\n', '\v', '\f', '\r', ' ', '\u00a0', '\u1680', '\u2000', '\u2005', '\u200a', '\u2028', '\u2029', '\u202f', '\u205f', '\u3000', '\ufeff'];
  const pieces = fc.oneof(fc.constantFrom(...spaces), fc.string(), fc.constantFrom('a', 'é', '\u200b', '😀', '\u180e'));
  fc.assert(
    fc.property(fc.array(pieces), (parts) => {
      const text = parts.join('');
      assert.equal(countWords(text), text.match(/\S+/g)?.length ?? 0, JSON.stringify(text));
    }),
    { numRuns: 2000 },
  );
  // Every UTF-16 code unit, alone between two letters: one word or two, as the regex says.
  for (let c = 0; c <= 0xffff; c++) {
    const text = `a${String.fromCharCode(c)}b`;
    assert.equal(countWords(text), text.match(/\S+/g)?.length ?? 0, `U+${c.toString(16)}`);
  }
});

test('usage counts the prompt words of every request: frozen turns shared between requests, and a plain turn changed between two of them (the word cache takes frozen turns only)', async () => {
  // given: frozen turns reused by a second, longer request (as the runtime's prompt cache does), and a plain turn edited in between
  const mock = new MockProvider({ chunks: 2, chunkDelayMs: 0, env: {} });
  const usageOf = async (messages: readonly ChatTurn[]): Promise<number | undefined> => {
    let inputTokens: number | undefined;
    for await (const part of mock.streamParts(request(messages))) if (part.type === 'finish') inputTokens = part.usage?.inputTokens;
    return inputTokens;
  };
  const first = Object.freeze({ role: 'user' as const, content: 'one two three' });
  const answer = Object.freeze({ role: 'assistant' as const, content: 'four five' });
  const plain: ChatTurn = { role: 'user', content: 'six' };
  // when
  const a = await usageOf([first]);
  const b = await usageOf([first, answer, plain]);
  plain.content = 'six seven eight';
  const c = await usageOf([first, answer, plain]);
  // then
  assert.deepEqual([a, b, c], [3, 6, 8]);
});

test('usage equals the words of the whole prompt whatever the previous prompts of the session were: longer, shorter, a frozen turn replaced mid-history, another session between (property)', async () => {
  // given: prompts drawn at random over 3 sessions from a pool of frozen and plain turns, some plain ones edited between requests
  const mock = new MockProvider({ chunks: 1, chunkDelayMs: 0, env: {} });
  let seed = 7;
  const rnd = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const words = ['a', 'bb', 'c c', ' d  e ', 'f\tg h', ''];
  const frozen = words.map((w, i) => Object.freeze({ role: i % 2 === 0 ? ('user' as const) : ('assistant' as const), content: w }));
  const plain: ChatTurn[] = words.map((w) => ({ role: 'user', content: w }));
  const history = new Map<string, Readonly<ChatTurn>[]>();
  for (let round = 0; round < 400; round++) {
    const sessionId = `s${rnd(3)}`;
    const turns = history.get(sessionId) ?? [];
    const op = rnd(5);
    if (op <= 1) turns.push(rnd(3) === 0 ? plain[rnd(plain.length)]! : frozen[rnd(frozen.length)]!);
    else if (op === 2 && turns.length > 0) turns[rnd(turns.length)] = frozen[rnd(frozen.length)]!;
    else if (op === 3) turns.length = rnd(turns.length + 1);
    else plain[rnd(plain.length)]!.content = words[rnd(words.length)]!;
    history.set(sessionId, turns);
    // when
    let inputTokens: number | undefined;
    for await (const part of mock.streamParts({ sessionId, messageId: `m${round}`, messages: turns.slice(), signal: new AbortController().signal })) {
      if (part.type === 'finish') inputTokens = part.usage?.inputTokens;
    }
    // then
    assert.equal(inputTokens, turns.reduce((n, t) => n + countWords(t.content), 0), `round ${round}, ${sessionId}`);
  }
});
