import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, DEFAULT_CONFIG, envVarOf, loadConfig, OPTION_NAMES, OPTION_SPECS } from './config.ts';
import { toArborOptions } from './arbor-options.ts';
import { tempDir } from '../../test/helpers/tmp.ts';

function problemsOf(fn: () => unknown): ConfigError['problems'] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

test('defaults: every seed §8.1 option is there with the seed default', () => {
  // given / when
  const config = loadConfig({ env: {} });
  // then
  assert.equal(config.dataDir, './data');
  assert.equal(config.journalBatchSize, 10);
  assert.equal(config.journalFlushIntervalMs, 1000);
  assert.equal(config.snapshotIntervalMs, 300_000);
  assert.equal(config.maxSnapshotsPerSession, 5);
  assert.equal(config.journalMaxSizeMb, 100);
  assert.equal(config.sessionIdleTimeoutMs, 3_600_000);
  assert.equal(config.recoveryTimeoutMs, 30_000);
  assert.equal(config.enableHotStorage, true);
  assert.equal(config.enableJournal, true);
  assert.equal(config.enableSnapshots, true);
  assert.equal(config.host, '127.0.0.1');
  assert.equal(config.port, 4000);
  assert.ok(Object.isFrozen(config));
});

test('env names: ARBOR_DATA_DIR, ARBOR_JOURNAL_DIR, ARBOR_SNAPSHOT_DIR, ARBOR_JOURNAL_MAX_SIZE_MB', () => {
  assert.equal(envVarOf('dataDir'), 'ARBOR_DATA_DIR');
  assert.equal(envVarOf('journalDir'), 'ARBOR_JOURNAL_DIR');
  assert.equal(envVarOf('snapshotDir'), 'ARBOR_SNAPSHOT_DIR');
  assert.equal(envVarOf('journalMaxSizeMb'), 'ARBOR_JOURNAL_MAX_SIZE_MB');
  const config = loadConfig({ env: { ARBOR_DATA_DIR: 'd', ARBOR_JOURNAL_DIR: 'j', ARBOR_SNAPSHOT_DIR: 's', ARBOR_ENABLE_SNAPSHOTS: '0', ARBOR_JOURNAL_MAX_SIZE_MB: '0.5' } });
  assert.deepEqual([config.dataDir, config.journalDir, config.snapshotDir, config.enableSnapshots, config.journalMaxSizeMb], ['d', 'j', 's', false, 0.5]);
});

test('precedence: defaults < file < env < code, option by option', () => {
  const { dir, cleanup } = tempDir();
  try {
    // given a file setting three options, env two of them, code one
    const file = join(dir, 'arbor.json');
    writeFileSync(file, JSON.stringify({ port: 1111, journalBatchSize: 20, snapshotIntervalMs: 5000 }));
    // when
    const config = loadConfig({ configFile: file, env: { ARBOR_PORT: '2222', ARBOR_JOURNAL_BATCH_SIZE: '30' }, overrides: { port: 3333, host: undefined } });
    // then
    assert.equal(config.snapshotIntervalMs, 5000, 'file over default');
    assert.equal(config.journalBatchSize, 30, 'env over file');
    assert.equal(config.port, 3333, 'code over env');
    assert.equal(config.host, DEFAULT_CONFIG.host, 'an undefined override leaves the lower layers');
    // and ARBOR_CONFIG names the file when no path is given
    assert.equal(loadConfig({ env: { ARBOR_CONFIG: file } }).port, 1111);
  } finally {
    cleanup();
  }
});

test('an empty environment variable means unset', () => {
  assert.equal(loadConfig({ env: { ARBOR_PORT: '' } }).port, 4000);
});

// One invalid value per option kind, from env, file and code: each error names the option, the value and the source.
for (const [option, raw, shownValue] of [
  ['port', '70000', '70000'],
  ['port', 'eighty', '"eighty"'],
  ['journalBatchSize', '0', '0'],
  ['journalMaxSizeMb', '-1', '-1'],
  ['enableJournal', 'yes', '"yes"'],
  ['durability', 'sometimes', '"sometimes"'],
  ['logLevel', 'loud', '"loud"'],
  ['diskFailPercent', '101', '101'],
] as const) {
  test(`env ${envVarOf(option)}=${raw} stops start-up naming ${option}, the value and what is accepted`, () => {
    const problems = problemsOf(() => loadConfig({ env: { [envVarOf(option)]: raw } }));
    assert.equal(problems.length, 1);
    assert.equal(problems[0]!.option, option);
    assert.match(problems[0]!.message, new RegExp(`option ${option} = ${shownValue.replace(/[.*+?^${}()|[\]\\"]/g, '\\$&')} \\(from env ${envVarOf(option)}\\)`));
    assert.ok(problems[0]!.message.includes(`expected ${OPTION_SPECS[option].accepts}`));
  });
}

test('a config file: unknown options and wrong types are all reported at once, with the file named', () => {
  const { dir, cleanup } = tempDir();
  try {
    const file = join(dir, 'bad.json');
    writeFileSync(file, JSON.stringify({ prot: 1, snapshotIntervalMs: '5000', dataDir: '' }));
    const problems = problemsOf(() => loadConfig({ configFile: file, env: {} }));
    assert.deepEqual(problems.map((p) => p.option).sort(), ['dataDir', 'prot', 'snapshotIntervalMs']);
    for (const p of problems) assert.ok(p.message.includes(file), p.message);
    writeFileSync(file, '{not json');
    assert.equal(problemsOf(() => loadConfig({ configFile: file, env: {} }))[0]!.option, 'config');
  } finally {
    cleanup();
  }
});

test('tokens: env `tenant:sha256,…` is parsed; a malformed hash is refused without echoing it', () => {
  const hash = 'a'.repeat(64);
  const config = loadConfig({ env: { ARBOR_TOKENS: `acme:${hash}, globex:${'b'.repeat(64)}` } });
  assert.deepEqual(config.tokens, [{ tenant: 'acme', sha256: hash }, { tenant: 'globex', sha256: 'b'.repeat(64) }]);
  const problems = problemsOf(() => loadConfig({ env: { ARBOR_TOKENS: 'acme:my-plain-secret-token' } }));
  assert.equal(problems[0]!.option, 'tokens');
  assert.ok(!problems[0]!.message.includes('my-plain-secret-token'), problems[0]!.message);
});

test('openai-compatible needs llmBaseUrl and llmModel', () => {
  const problems = problemsOf(() => loadConfig({ env: { ARBOR_LLM: 'openai-compatible' } }));
  assert.deepEqual(problems.map((p) => p.option).sort(), ['llmBaseUrl', 'llmModel']);
  const ok = loadConfig({ env: { ARBOR_LLM: 'openai-compatible', ARBOR_LLM_BASE_URL: 'http://127.0.0.1:1/v1', ARBOR_LLM_MODEL: 'm' } });
  assert.equal(toArborOptions(ok).options.llm?.name, 'openai-compatible');
});

test('code overrides with an unknown name are a programmer error (TypeError)', () => {
  assert.throws(() => loadConfig({ env: {}, overrides: { prot: 1 } as never }), TypeError);
});

test('toArborOptions passes storage and runtime options and keeps server options out', () => {
  const config = loadConfig({ env: { ARBOR_DATA_DIR: 'x', ARBOR_MAILBOX_CAPACITY: '7', ARBOR_PORT: '1', ARBOR_MOCK_CHUNKS: '3' } });
  const { options } = toArborOptions(config);
  assert.equal(options.dataDir, 'x');
  assert.equal(options.mailboxCapacity, 7);
  assert.equal((options as Record<string, unknown>).port, undefined);
  assert.equal((options.llm as { chunks?: number }).chunks, 3);
});

test('toArborOptions: a switch the runtime does not accept is never silently dropped when changed', () => {
  const config = loadConfig({ env: {} });
  const { options, ignored } = toArborOptions(config);
  for (const key of ignored) {
    // given the runtime does not know `key`: at its default it is left out, …
    assert.equal((options as Record<string, unknown>)[key], undefined);
    // … set to anything else it stops start-up, naming it
    const spec = OPTION_SPECS[key];
    const changed = spec.kind === 'boolean' ? !spec.default : (spec.default as number) + 1;
    const problems = problemsOf(() => toArborOptions(loadConfig({ env: {}, overrides: { [key]: changed } })));
    assert.equal(problems[0]!.option, key);
  }
  // every option is either passed, server-only or reported as ignored
  for (const key of OPTION_NAMES) assert.ok(key in options || ignored.includes(key) || config[key] === undefined || ['host', 'port', 'tokens', 'maxBodyBytes', 'maxHeaderBytes', 'logLevel', 'diskWarnPercent', 'diskFailPercent', 'retryAfterSeconds', 'llm', 'llmMaxRetries'].includes(key), key);
});
