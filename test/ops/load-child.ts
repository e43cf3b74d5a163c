/**
 * The child of the "backup during load" test (test/ops-backup-load.test.ts):
 * runs Arbor through the public API on a data directory with tiny journal
 * segments and frequent snapshots (so segments rotate and are deleted all the
 * time), and sends messages in every session as fast as they are acknowledged.
 *
 *   node --import tsx test/ops/load-child.ts --data-dir DIR [--sessions 4]
 *
 * Protocol: lines on stdout, each one synchronous write(2), in this order per message:
 *   ready <pid>                    createArbor resolved
 *   acked <session> <messageId>    sendMessage resolved: the user message is durable
 * The parent kills the child when it is done. Failures go to stderr, exit 3.
 */
import { parseArgs } from 'node:util';
import { createArbor, MockProvider } from '../../src/index.ts';
import { writeLineSync as line } from '../helpers/child-io.ts';

const { values: args } = parseArgs({
  options: { 'data-dir': { type: 'string' }, sessions: { type: 'string', default: '4' } },
  strict: true,
});
const dataDir = args['data-dir'];
if (dataDir === undefined) {
  process.stderr.write('load-child: --data-dir is required\n');
  process.exit(3);
}

try {
  const arbor = await createArbor({
    dataDir,
    // ~64 KiB segments: a few hundred records each, so the journal rotates every second or so.
    journalMaxSizeMb: 1 / 16,
    // Snapshots by count only (the interval is longer than any test), so what the journal holds
    // depends on how many messages were sent, not on how fast this machine is.
    snapshotEveryEvents: 30,
    maxSnapshotsPerSession: 2,
    snapshotIntervalMs: 600_000,
    llm: new MockProvider({ chunks: 2, chunkDelayMs: 0 }),
  });
  line(`ready ${process.pid}`);
  const sessions = Number(args.sessions);
  let n = 0;
  await Promise.all(
    Array.from({ length: sessions }, async (_, i) => {
      const session = arbor.session(`load-${i}`);
      for (;;) {
        n += 1;
        const { messageId } = await session.sendMessage({ content: `message ${n} of session ${i}: ${'x'.repeat(100)}` });
        line(`acked ${session.id} ${messageId}`);
        // A slow session: one message per 40, so its records pin segments until its own snapshot
        // (every 10 of its messages), and the journal holds several segments at a time.
        if (i === 0 && n % 40 === 0) {
          const lazy = arbor.session('lazy');
          const r = await lazy.sendMessage({ content: `lazy message ${n}` });
          line(`acked lazy ${r.messageId}`);
        }
        await session.idle();
      }
    }),
  );
} catch (err) {
  process.stderr.write(`load-child: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(3);
}
