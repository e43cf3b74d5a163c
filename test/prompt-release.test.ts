import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setImmediate as turn } from 'node:timers/promises';
import v8 from 'node:v8';
import vm from 'node:vm';
import { createArbor, MockProvider, type ChatTurn, type LlmProvider, type LlmStreamPart, type StreamRequest } from '../src/index.ts';
import { tempDir } from './helpers/tmp.ts';

// The prompt of an answer is the whole conversation: held until the answer ends, it lives through every
// young-generation collection meanwhile (bench/runtime (b), docs/performance.md). These tests show that
// neither the session actor nor the mock provider holds it once the provider has taken what it needs.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

/**
 * Whether `ref`'s target is collected within a few rounds of (a turn of the loop, a full collection). The turn
 * comes first: a target deref()ed in the current job is kept alive until that job ends.
 */
async function collected(ref: WeakRef<object>): Promise<boolean> {
  for (let i = 0; i < 5; i += 1) {
    await turn();
    gc();
    if (ref.deref() === undefined) return true;
  }
  return false;
}

/** A provider that keeps only a weak reference to each prompt, and holds its answer after the first chunk until released. */
class GatedProvider implements LlmProvider {
  readonly name = 'gated';
  readonly model = 'gated-1';
  prompt: WeakRef<readonly Readonly<ChatTurn>[]> | undefined;
  #release: (() => void) | undefined;
  #firstChunk: (() => void) | undefined;
  readonly firstChunk = new Promise<void>((resolve) => (this.#firstChunk = resolve));

  release(): void {
    this.#release?.();
  }

  async *stream(request: StreamRequest): AsyncGenerator<string> {
    for await (const part of this.streamParts(request)) if (part.type === 'text') yield part.text;
  }

  streamParts(request: StreamRequest): AsyncGenerator<LlmStreamPart> {
    this.prompt = new WeakRef(request.messages);
    const gate = new Promise<void>((resolve) => (this.#release = resolve));
    return this.#play(gate);
  }

  async *#play(gate: Promise<void>): AsyncGenerator<LlmStreamPart> {
    this.#firstChunk?.();
    yield { type: 'text', text: 'first ' };
    await gate;
    yield { type: 'text', text: 'rest' };
    yield { type: 'finish', finishReason: 'stop' };
  }
}

test('while an answer streams, the session no longer holds its prompt (the provider took it); the answer still completes', async (t) => {
  const { dir, cleanup } = tempDir('arbor-prompt-');
  const llm = new GatedProvider();
  const arbor = await createArbor({ dataDir: dir, llm });
  t.after(() => {
    llm.release();
    return arbor.close().finally(cleanup);
  });
  const session = arbor.session('s');
  // given: an answer streaming, past its first chunk, its provider holding nothing of the request
  await session.sendMessage({ content: 'hello there' });
  await llm.firstChunk;
  await turn();
  // then: the prompt can be collected while the answer is still open
  assert.ok(llm.prompt !== undefined, 'the provider was asked');
  assert.equal(await collected(llm.prompt), true, 'the prompt is still reachable while the answer streams');
  // and the answer completes as usual
  llm.release();
  await session.idle();
  assert.deepEqual(session.state.messages.map((m) => [m.role, m.content]), [['user', 'hello there'], ['assistant', 'first rest']]);
});

test('MockProvider: its stream does not hold the prompt after it started; usage still counts the prompt', async () => {
  // given: a stream started on a prompt nothing else references
  const mock = new MockProvider({ chunks: 2, chunkDelayMs: 0, env: {} });
  const start = (): { stream: AsyncGenerator<LlmStreamPart>; prompt: WeakRef<object> } => {
    const messages: ChatTurn[] = [{ role: 'user', content: 'one two three' }];
    return { stream: mock.streamParts({ sessionId: 's', messageId: 'm', messages, signal: new AbortController().signal }), prompt: new WeakRef(messages) };
  };
  const { stream, prompt } = start();
  const first = await stream.next();
  assert.equal(first.done, false);
  // then: the prompt can be collected mid-stream
  assert.equal(await collected(prompt), true, 'the mock stream still holds the prompt');
  // and the finish part still has the prompt's word count
  let usage: unknown;
  for await (const part of stream) if (part.type === 'finish') usage = part.usage;
  assert.deepEqual(usage, { inputTokens: 3, outputTokens: 2, totalTokens: 5 });
});
