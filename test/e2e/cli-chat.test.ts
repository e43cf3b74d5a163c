import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { mockReplyChunks } from '../../src/llm/mock-provider.ts';
import { repoRoot, runCliWithInput } from '../ops/run-cli.ts';
import { startServe } from '../helpers/serve-process.ts';
import { tempDir } from '../helpers/tmp.ts';

// `arbor chat` and `arbor sessions` driven through stdin, on a data directory and against a real `arbor serve`.

const answer = (content: string) => mockReplyChunks([{ role: 'user', content }], 8).join('');
const post = (url: string, body: unknown) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

test('arbor chat on a data directory: streams the answer, /history, and the next run continues the conversation; arbor sessions lists it', async () => {
  const { dir, cleanup } = tempDir('arbor-chat-');
  try {
    const dataDir = join(dir, 'data');
    const env = { ARBOR_MOCK_CHUNK_DELAY_MS: '0' };
    const first = await runCliWithInput(['chat', 'notes', '--data-dir', dataDir], 'hello there\n/history\n', env);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /session notes on data directory .*, 0 message\(s\)/);
    assert.ok(first.stdout.includes(`assistant> ${answer('hello there')}\n`), first.stdout);
    assert.ok(first.stdout.includes(`you> hello there\nassistant> ${answer('hello there')}\n`), 'the history');
    const second = await runCliWithInput(['chat', 'notes', '--data-dir', dataDir], 'and again\n/nope\n', env);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /2 message\(s\)/);
    assert.ok(second.stdout.includes(`assistant> ${answer('and again')}\n`), second.stdout);
    assert.match(second.stdout, /unknown command \/nope/);

    const list = await runCliWithInput(['sessions', '--data-dir', dataDir, '--json'], '');
    assert.equal(list.code, 0, list.stderr);
    const page = JSON.parse(list.stdout) as { sessions: { id: string; messageCount: number; status: string }[]; nextCursor: string | null };
    assert.deepEqual(page.sessions.map((s) => [s.id, s.messageCount, s.status]), [['notes', 4, 'idle']]);
    assert.equal(page.nextCursor, null);
    const table = await runCliWithInput(['sessions', '--data-dir', dataDir], '');
    assert.match(table.stdout, /^id +updated +messages +status +title\nnotes +\S+ +4 +idle\n$/);
  } finally {
    cleanup();
  }
});

test('arbor chat --url against a real server: the answer streams, a turn cut by kill -9 comes back as a notice, /retry answers it; arbor sessions --url lists it; without --url the held data directory is refused with advice', async () => {
  const { dir, cleanup } = tempDir('arbor-chat-');
  const dataDir = join(dir, 'data');
  // given a server that answers slowly, killed with -9 in the middle of an answer
  let server = await startServe(['--data-dir', dataDir], { ARBOR_MOCK_CHUNKS: '50', ARBOR_MOCK_CHUNK_DELAY_MS: '100' });
  try {
    assert.equal((await post(`${server.url}/v1/sessions`, { id: 'desk' })).status, 201);
    assert.equal((await post(`${server.url}/v1/sessions/desk/messages`, { content: 'a long story please' })).status, 202);
    await server.stop('SIGKILL');
    // when it is restarted and the chat opens the session
    server = await startServe(['--data-dir', dataDir], { ARBOR_MOCK_CHUNK_DELAY_MS: '0' });
    const r = await runCliWithInput(['chat', 'desk', '--url', server.url], '/retry\nhi\n/history\n/stop\n');
    assert.equal(r.code, 0, r.stderr);
    // then the interrupted turn is shown as a notice, /retry answers it, and the next message is answered
    assert.match(r.stdout, /\[notice\] .*interrupted/i);
    assert.ok(r.stdout.includes(`assistant> ${answer('a long story please')}\n`), r.stdout);
    assert.ok(r.stdout.includes(`assistant> ${answer('hi')}\n`), r.stdout);
    // /stop is answered: the running answer is stopped, or it says nothing was streaming
    assert.match(r.stdout, /\[notice\] (stopped the running answer|nothing is streaming: nothing to stop)/);
    assert.ok(r.stdout.includes(`you> hi\nassistant> ${answer('hi')}\n`), 'the history');

    // arbor sessions against the server: GET /v1/sessions
    const listed = await runCliWithInput(['sessions', '--url', server.url, '--json'], '');
    assert.equal(listed.code, 0, listed.stderr);
    const page = JSON.parse(listed.stdout) as { sessions: { id: string; messageCount: number }[] };
    assert.deepEqual(page.sessions.map((s) => s.id), ['desk']);
    assert.ok(page.sessions[0]!.messageCount >= 5, listed.stdout);

    // the data directory is held by the server: the chat says to use --url
    const local = await runCliWithInput(['chat', 'desk', '--data-dir', dataDir], 'hi\n');
    assert.equal(local.code, 1);
    assert.match(local.stderr, /locked by another process/);
    assert.match(local.stderr, /--url/);
    assert.doesNotMatch(local.stderr, /\n\s+at /, 'no stack trace');
  } finally {
    await server.stop('SIGTERM');
    cleanup();
  }
});

// util-linux `script` gives the chat a pseudo-terminal (where it shows a prompt and reads typed lines).
const hasScript = spawnSync('script', ['--version'], { stdio: 'ignore' }).status === 0;

test('arbor chat in a pseudo-terminal: a prompt, the streamed answer, /history, /quit', { skip: hasScript ? false : 'no util-linux script(1) for a pseudo-terminal' }, async () => {
  const { dir, cleanup } = tempDir('arbor-chat-');
  try {
    const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ARBOR_')));
    const command = `${JSON.stringify(process.execPath)} --import tsx src/cli/main.ts chat tty --data-dir ${JSON.stringify(join(dir, 'data'))}`;
    const child = spawn('script', ['-qfec', command, '/dev/null'], { cwd: repoRoot, env: { ...clean, ARBOR_MOCK_CHUNK_DELAY_MS: '0' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    // Typed ahead: the terminal holds the lines until the chat reads them; stdin stays open (a closed one hangs up the terminal).
    child.stdin.write('hello\r/history\r/quit\r');
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    child.stdin.destroy();
    const text = out.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '');
    assert.equal(code, 0, text);
    assert.match(text, /you> /, 'a prompt');
    assert.ok(text.includes(`assistant> ${answer('hello')}\n`), text);
    assert.ok(text.includes(`you> hello\nassistant> ${answer('hello')}\n`), `the history:\n${text}`);
  } finally {
    cleanup();
  }
});
