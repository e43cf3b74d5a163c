/**
 * The child of the "SIGKILL mid-stream" end-to-end test (test/runtime.test.ts):
 * opens Arbor on a data directory through the public API, with a slow mock
 * provider, sends one message and streams its answer until the parent
 * SIGKILLs it.
 *
 *   node --import tsx test/crash/stream-child.ts --data-dir DIR --session ID --content TEXT
 *        [--chunks 50] [--chunk-delay-ms 20] [--second TEXT]
 *
 * Protocol: lines on stdout, each written with one synchronous write(2) so a
 * line is out before anything that follows it happens:
 *   ready <pid> <recovered sessions>    createArbor resolved
 *   acked <messageId> <seq>             sendMessage resolved (the user message is durable)
 *   streaming <assistantMessageId>      the first chunk of the answer arrived
 *   acked2 <messageId> <seq>            with --second: a second message, sent at the first chunk
 *                                       (its answer queues behind the first), resolved
 *   chunk <index>                       every later chunk
 *   completed <assistantMessageId>      the answer was journaled (the parent killed too late)
 * Any failure goes to stderr with exit code 3; nothing else exits.
 */
import { parseArgs } from 'node:util';
import { createArbor, MockProvider } from '../../src/index.ts';
import { writeLineSync as line } from '../helpers/child-io.ts';


function die(message: string): never {
  process.stderr.write(`stream-child: ${message}\n`);
  process.exit(3);
}

const { values: args } = parseArgs({
  options: {
    'data-dir': { type: 'string' },
    session: { type: 'string' },
    content: { type: 'string' },
    chunks: { type: 'string', default: '50' },
    'chunk-delay-ms': { type: 'string', default: '20' },
    second: { type: 'string' },
  },
  strict: true,
});

const dataDir = args['data-dir'] ?? die('--data-dir is required');
const sessionId = args.session ?? die('--session is required');
const content = args.content ?? die('--content is required');

try {
  const arbor = await createArbor({
    dataDir,
    llm: new MockProvider({ chunks: Number(args.chunks), chunkDelayMs: Number(args['chunk-delay-ms']) }),
  });
  line(`ready ${process.pid} ${arbor.recoveryReport().sessions.length}`);
  const session = arbor.session(sessionId);
  let first = true;
  session.subscribe((update) => {
    if (update.kind === 'chunk') {
      if (first) {
        line(`streaming ${update.chunk.messageId}`);
        if (args.second !== undefined) {
          session.sendMessage({ content: args.second }).then(
            (r) => line(`acked2 ${r.messageId} ${r.seq}`),
            (err: unknown) => die((err as Error).stack ?? String(err)),
          );
        }
      } else line(`chunk ${update.chunk.index}`);
      first = false;
    } else if (update.kind === 'event' && update.event.type === 'assistant_response_completed') {
      line(`completed ${(update.event.data as { messageId: string }).messageId}`);
    }
  });
  const { messageId, seq } = await session.sendMessage({ content });
  line(`acked ${messageId} ${seq}`);
  // Keep the process alive until the parent's SIGKILL (the stream's timers do too, until it ends).
  setInterval(() => undefined, 1_000);
} catch (err) {
  die((err as Error).stack ?? String(err));
}
