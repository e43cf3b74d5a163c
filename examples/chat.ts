/**
 * Quick start: a chat with the deterministic mock provider, kept in Arbor on
 * the embedded file store (./data, or ARBOR_DATA_DIR). Run it twice: the second
 * run recovers the conversation and continues it. Kill it mid-answer (Ctrl-C
 * is a clean shutdown; `kill -9` is a crash) and the next run shows the
 * interrupted turn and retries it.
 */
import { createArbor, INTERRUPTED_NOTICE_CONTENT, isArborError, type Arbor } from '../src/index.ts';

let arbor: Arbor;
try {
  arbor = await createArbor({ dataDir: process.env.ARBOR_DATA_DIR ?? './data' });
} catch (err) {
  // Another process (often `arbor serve`) holds the data directory: say who and what to do, without a stack trace.
  if (!isArborError(err, 'ARBOR_LOCKED')) throw err;
  console.error(`demo: ${err.message}`);
  process.exit(1);
}
const chat = arbor.session('demo');
await chat.load(); // recovered on first access; every other session is recovered in the background
console.log(`"demo" has ${chat.state.messages.length} message(s)`);
for (const m of chat.state.messages.slice(-4)) console.log(`  ${m.role}: ${m.content}`);

// a stream cut by a crash came back as an interrupted turn (load() journaled it)
if (chat.state.messages.at(-1)?.content === INTERRUPTED_NOTICE_CONTENT) {
  console.log('the last answer was interrupted: retrying');
  await chat.retry();
  await chat.idle();
}

chat.subscribe((u) => {
  if (u.kind === 'chunk') process.stdout.write(u.chunk.text);
});
const turn = chat.state.messages.filter((m) => m.role === 'user').length + 1;
const { seq } = await chat.sendMessage({ content: `hello, this is turn ${turn}`, clientMessageId: `turn-${turn}` });
process.stdout.write(`you (seq ${seq}, durable): hello, this is turn ${turn}\nassistant: `);
await chat.idle();
console.log(`\n${chat.state.messages.length} messages; run again to continue the chat`);
await arbor.close();
