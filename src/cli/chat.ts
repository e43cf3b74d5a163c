import { createInterface } from 'node:readline';
import { Option, type Command } from 'commander';
import { ArborError, ErrorCodes, isSessionId } from '../index.ts';
import { resolveConfig, type ArborConfig } from '../server.ts';
import { HttpClient, HttpTarget, isLocked, listSessions, LocalTarget, openLocal, type ChatMessage, type ChatTarget, type ChatUpdate } from './client.ts';
import { usageExit } from './ops.ts';

/**
 * `arbor chat <session>` and `arbor sessions`: a terminal client. With
 * `--url` (or ARBOR_URL) it talks to a running `arbor serve` over HTTP
 * (bearer token from ARBOR_TOKEN); without, it opens the data directory
 * itself (refused while a server holds it: use --url then).
 */

interface TargetFlags {
  url?: string;
  dataDir?: string;
  config?: string;
}

const HELP = 'commands: /history (the whole conversation), /retry (answer the last message again), /stop (end the running answer), /quit; anything else is sent as a message';

function addTargetOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--url <url>', 'a running arbor serve, e.g. http://127.0.0.1:4000 (the bearer token comes from ARBOR_TOKEN)').env('ARBOR_URL'))
    .option('--data-dir <dir>', 'without --url: the data directory to open (no server may hold it) [env ARBOR_DATA_DIR, default ./data]')
    .option('--config <file>', 'without --url: the JSON config file arbor serve uses [env ARBOR_CONFIG]');
}

function localConfig(flags: TargetFlags): Readonly<ArborConfig> {
  return resolveConfig({ flags: { dataDir: flags.dataDir }, configFile: flags.config }).config;
}

/** Opens the data directory, turning "a server holds it" into advice to use --url. */
async function openDataDir(flags: TargetFlags): Promise<{ arbor: Awaited<ReturnType<typeof openLocal>>; where: string }> {
  const config = localConfig(flags);
  try {
    return { arbor: await openLocal(config), where: config.databaseUrl === undefined ? `data directory ${config.dataDir}` : 'PostgreSQL' };
  } catch (err) {
    if (isLocked(err)) throw new ArborError(ErrorCodes.LOCKED, `${(err as Error).message}\nA running arbor serve holds it: talk to it with --url (e.g. --url http://127.0.0.1:4000).`, (err as ArborError).details);
    throw err;
  }
}

function line(text: string): void {
  process.stdout.write(`${text}\n`);
}

function printMessage(m: ChatMessage): void {
  if (m.role === 'user') line(`you> ${m.content}`);
  else if (m.role === 'assistant') line(`assistant> ${m.content}`);
  else line(`[notice] ${m.content}`);
}

/**
 * The chat loop: lines from stdin are messages or commands, taken in order;
 * a message (or /retry) waits for the answer before it, `/stop` acts at once.
 * The answer streams to stdout as it comes. End of input waits for the
 * running answer, then closes.
 */
export async function runChat(target: ChatTarget, sessionId: string, input: NodeJS.ReadableStream, interactive: boolean): Promise<void> {
  let printing = false;
  let turnEnd: (() => void) | undefined;
  let turn: Promise<void> = Promise.resolve();
  const onUpdate = (u: ChatUpdate): void => {
    if (u.kind === 'started' || (u.kind === 'chunk' && !printing)) {
      if (!printing) process.stdout.write('assistant> ');
      printing = true;
    }
    if (u.kind === 'chunk') process.stdout.write(u.text);
    else if (u.kind === 'completed' || u.kind === 'interrupted') {
      if (printing) process.stdout.write('\n');
      printing = false;
      if (u.kind === 'interrupted') line(`[notice] the answer was interrupted (${u.reason}); /retry answers again`);
      turnEnd?.();
      turnEnd = undefined;
    } else if (u.kind === 'notice') {
      if (printing) process.stdout.write('\n');
      printing = false;
      line(`[notice] ${u.content}`);
    }
  };
  const messages = await target.open(onUpdate);
  line(`arbor chat: session ${sessionId} on ${target.where}, ${messages.length} message(s). ${HELP}`);
  // What the last run left: its last exchange, and a notice (an interrupted answer, a restore) in full.
  for (const m of messages.slice(-2)) printMessage(m);

  /** Arms the wait for the next answer's end before the command that starts it. */
  const expectAnswer = (): void => {
    turn = new Promise<void>((resolve) => (turnEnd = resolve));
  };
  const failed = (err: unknown): void => {
    turnEnd?.();
    turnEnd = undefined;
    line(`error: ${(err as Error).message}`);
  };
  const handle = async (text: string): Promise<boolean> => {
    const command = text.trim();
    if (command === '') return true;
    if (command === '/stop') {
      const r = await target.stop().catch((err: unknown) => (failed(err), undefined));
      if (r === 'stopped') line('[notice] stopped the running answer (kept as it stood)');
      else if (r === 'idle') line('[notice] nothing is streaming: nothing to stop');
      else if (r === 'unsupported') line('[notice] this server cannot stop an answer (no POST /v1/chat/:id/stop); the answer goes on');
      return true;
    }
    await turn;
    if (command === '/quit' || command === '/exit') return false;
    if (command === '/history') (await target.history().catch((err: unknown) => (failed(err), []))).forEach(printMessage);
    else if (command === '/retry') {
      expectAnswer();
      await target.retry().catch(failed);
    } else if (command.startsWith('/')) line(`unknown command ${command}; ${HELP}`);
    else {
      expectAnswer();
      await target.send(text).catch(failed);
    }
    return true;
  };

  const rl = createInterface({ input, ...(interactive ? { output: process.stdout, terminal: true, prompt: 'you> ' } : { terminal: false }) });
  const queue: string[] = [];
  let inputEnded = false;
  let quit = false;
  let busy = false;
  let done: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  const pump = async (): Promise<void> => {
    if (busy) return;
    busy = true;
    while (queue.length > 0 && !quit) {
      if (!(await handle(queue.shift()!))) quit = true;
      if (interactive && queue.length === 0 && !quit) {
        await turn;
        rl.prompt();
      }
    }
    busy = false;
    // End of input (or /quit): the running answer is shown to its end first.
    if ((inputEnded && queue.length === 0) || quit) {
      await turn;
      done();
    }
  };
  rl.on('line', (l) => {
    queue.push(l);
    void pump();
  });
  rl.on('close', () => {
    inputEnded = true;
    void pump();
  });
  if (interactive) rl.prompt();
  await finished;
  rl.close();
}

function parseSession(value: string): string {
  if (!isSessionId(value)) throw new ArborError(ErrorCodes.USAGE, `invalid session id ${JSON.stringify(value)}: use 1-128 characters of A-Z, a-z, 0-9, '_' or '-'`, { argument: 'session' });
  return value;
}

function parseLimit(value: string): number {
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || n < 1 || n > 200) throw new ArborError(ErrorCodes.USAGE, `--limit must be an integer from 1 to 200, got ${JSON.stringify(value)}`, { option: 'limit' });
  return n;
}

export function registerClientCommands(program: Command): void {
  addTargetOptions(
    program
      .command('chat')
      .description(`chat with a session from the terminal: the answer streams as it comes; ${HELP}`)
      .argument('<session>', 'session id (created when missing)')
      .exitOverride(usageExit),
  ).action(async (session: string, flags: TargetFlags) => {
    const id = parseSession(session);
    let target: ChatTarget;
    if (flags.url !== undefined) target = new HttpTarget(new HttpClient(flags.url.replace(/\/$/, ''), process.env.ARBOR_TOKEN), id);
    else {
      const { arbor, where } = await openDataDir(flags);
      target = new LocalTarget(arbor, id, where);
    }
    try {
      await runChat(target, id, process.stdin, process.stdin.isTTY === true && process.stdout.isTTY === true);
    } finally {
      await target.close();
    }
  });

  addTargetOptions(
    program
      .command('sessions')
      .description('list sessions, most recently active first')
      .option('--limit <n>', 'sessions per page, 1-200 (default 50)')
      .option('--cursor <cursor>', 'the next page: the cursor the previous page printed')
      .option('--json', 'one JSON document: {sessions, nextCursor}')
      .exitOverride(usageExit),
  ).action(async (flags: TargetFlags & { limit?: string; cursor?: string; json?: boolean }) => {
    const options = { ...(flags.limit === undefined ? {} : { limit: parseLimit(flags.limit) }), ...(flags.cursor === undefined ? {} : { cursor: flags.cursor }) };
    let page;
    if (flags.url !== undefined) page = await listSessions({ client: new HttpClient(flags.url.replace(/\/$/, ''), process.env.ARBOR_TOKEN) }, options);
    else {
      const { arbor } = await openDataDir(flags);
      try {
        page = await listSessions({ arbor }, options);
      } finally {
        await arbor.close();
      }
    }
    if (flags.json === true) {
      line(JSON.stringify(page, null, 2));
      return;
    }
    if (page.sessions.length === 0) line('no sessions');
    else {
      const rows = page.sessions.map((s) => [s.id, new Date(s.updatedAt).toISOString(), String(s.messageCount), s.status, s.title ?? ''] as const);
      const widths = [0, 1, 2, 3].map((i) => Math.max(['id', 'updated', 'messages', 'status'][i]!.length, ...rows.map((r) => r[i]!.length)));
      const fmt = (r: readonly string[]): string => r.map((c, i) => (i < 4 ? c.padEnd(widths[i]!) : c)).join('  ').trimEnd();
      line(fmt(['id', 'updated', 'messages', 'status', 'title']));
      for (const r of rows) line(fmt(r));
    }
    if (page.nextCursor !== null) line(`more: arbor sessions --cursor ${page.nextCursor}`);
  });
}
