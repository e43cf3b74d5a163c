/**
 * The child of the "SIGKILL while a command handler runs" test
 * (test/crash/command-sigkill.test.ts): opens Arbor on a data directory
 * through the public API with one command, `charge`, whose handler appends a
 * line to an invocation log (its own counter, outside Arbor) and then never
 * returns, and runs it once under `--command-id`.
 *
 *   node --import tsx test/crash/command-child.ts --data-dir DIR --session ID --command-id ID --log FILE
 *
 * Protocol: lines on stdout, each one synchronous write(2):
 *   ready <pid>                   createArbor resolved
 *   running <commandId>           the handler was called (its line is in the log)
 * Any failure goes to stderr with exit code 3; nothing else exits.
 */
import { appendFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createArbor } from '../../src/index.ts';
import { writeLineSync as line } from '../helpers/child-io.ts';

function die(message: string): never {
  process.stderr.write(`command-child: ${message}\n`);
  process.exit(3);
}

const { values: args } = parseArgs({
  options: { 'data-dir': { type: 'string' }, session: { type: 'string' }, 'command-id': { type: 'string' }, log: { type: 'string' } },
  strict: true,
});
const dataDir = args['data-dir'] ?? die('--data-dir is required');
const sessionId = args.session ?? die('--session is required');
const commandId = args['command-id'] ?? die('--command-id is required');
const log = args.log ?? die('--log is required');

try {
  const arbor = await createArbor({
    dataDir,
    commands: {
      charge: ({ args: a }) => {
        appendFileSync(log, `${JSON.stringify({ pid: process.pid, args: a })}\n`);
        line(`running ${commandId}`);
        // The side effect happened; the handler never returns (the parent SIGKILLs the process now).
        return new Promise(() => undefined);
      },
    },
  });
  line(`ready ${process.pid}`);
  await arbor.session(sessionId).executeCommand('charge', [{ cents: 500 }], { commandId });
  die('the handler returned');
} catch (err) {
  die((err as Error).stack ?? String(err));
}
