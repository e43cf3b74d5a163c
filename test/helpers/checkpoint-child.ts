/**
 * Child process of the checkpoint test: opens Arbor on --data-dir, gives 12
 * sessions answered turns, writes the whole-table checkpoint, adds one more
 * turn to half of them, prints `ready <json of every state>` and waits for
 * the parent's SIGKILL (a crash: no close, no final snapshots).
 */
import { parseArgs } from 'node:util';
import { createArbor, MockProvider } from '../../src/index.ts';
import { writeLineSync as line } from './child-io.ts';

const { values } = parseArgs({ options: { 'data-dir': { type: 'string' } } });
const arbor = await createArbor({ dataDir: values['data-dir']!, llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }), snapshotEveryEvents: 4 });
for (let i = 0; i < 12; i += 1) {
  const s = arbor.session(`c${i}`);
  for (let m = 0; m <= i % 3; m += 1) await s.sendMessage({ content: `hello ${m}`, clientMessageId: `c${i}-${m}` });
  await s.idle();
}
await arbor.checkpoint();
for (let i = 0; i < 12; i += 2) {
  await arbor.session(`c${i}`).sendMessage({ content: 'after the checkpoint', clientMessageId: `c${i}-late` });
  await arbor.session(`c${i}`).idle();
}
const states = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`c${i}`, arbor.session(`c${i}`).state]));
line(`ready ${JSON.stringify({ checkpoint: arbor.health().checkpoint, states })}`);
setInterval(() => undefined, 60_000);
