/**
 * Quick start: a chat kept in Arbor's storage engine on the embedded file
 * store (./data, or ARBOR_DATA_DIR). Run it twice: the second run recovers the
 * conversation from the journal and snapshots, then continues it.
 */
import { openStore, type JournalRecord } from '../src/index.ts';

interface Chat {
  messages: { role: string; content: string }[];
}

const store = await openStore<Chat>(
  { dataDir: process.env.ARBOR_DATA_DIR ?? './data' },
  {
    initialState: () => ({ messages: [] }),
    // A pure reducer: the state after one journaled event.
    reducer: (chat: Chat, event: JournalRecord) => ({ messages: [...chat.messages, event.data as Chat['messages'][number]] }),
  },
);

const report = store.recoveryReport();
const chat = store.recovered.get('demo');
console.log(`recovered ${report.sessions.length} session(s) in ${report.durationMs.toFixed(1)} ms: ${JSON.stringify(report.counts)}`);
console.log(`session "demo" has ${chat?.state.messages.length ?? 0} message(s) at seq ${chat?.seq ?? 0}`);

// Each append resolves once the event is on disk (fdatasync): acknowledged = durable.
const turn = (chat?.seq ?? 0) / 2 + 1;
const user = await store.append({ sid: 'demo', type: 'user_message_sent', data: { role: 'user', content: `hello #${turn}` }, clientMessageId: `turn-${turn}` });
const answer = await store.append({ sid: 'demo', type: 'assistant_response_completed', data: { role: 'assistant', content: `hi! this is turn ${turn}` } });
console.log(`appended seq ${user.seq} (lsn ${user.lsn}) and seq ${answer.seq}, both durable`);

// A retried request with the same clientMessageId is answered with the original result.
const retry = await store.append({ sid: 'demo', type: 'user_message_sent', data: { role: 'user', content: `hello #${turn}` }, clientMessageId: `turn-${turn}` });
console.log(`retry of turn-${turn}: seq ${retry.seq}, duplicate=${retry.duplicate}`);

// Snapshot every 10 events so the journal stays short.
if (answer.seq % 10 === 0) {
  const messages = [...(chat?.state.messages ?? []), { role: 'user', content: `hello #${turn}` }, { role: 'assistant', content: `hi! this is turn ${turn}` }];
  const snap = await store.snapshot('demo', { messages }, answer.seq);
  console.log(`snapshot ${snap.file} (${snap.bytes} bytes); deleted segments: ${snap.deletedSegments.length}`);
}
await store.close();
console.log('closed; run again to see the chat recovered');
