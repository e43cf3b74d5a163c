import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ConfigError, DEFAULT_CONFIG, displayValue, envVarOf, loadConfig, OPTION_NAMES, OPTION_SPECS, optionsHelp, parseFlagValue, resolveConfig, unknownEnvWarnings } from './config.ts';
import { toArborOptions, unsafeDisableFencingFromEnv } from './arbor-options.ts';
import { tempDir } from '../../test/helpers/tmp.ts';

function problemsOf(fn: () => unknown): ConfigError['problems'] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    assert.equal(err.code, 'ARBOR_CONFIG_INVALID');
    assert.deepEqual(err.details.options, err.problems.map((p) => p.option));
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
  for (const key of OPTION_NAMES) assert.ok(key in options || ignored.includes(key) || config[key] === undefined || ['host', 'port', 'tokens', 'tokensFile', 'operatorTokens', 'maxBodyBytes', 'maxHeaderBytes', 'logLevel', 'diskWarnPercent', 'diskFailPercent', 'retryAfterSeconds', 'allowedHosts', 'corsOrigins', 'headersTimeoutMs', 'requestTimeoutMs', 'keepAliveTimeoutMs', 'maxConnections', 'llm', 'llmMaxRetries', 'llmTelemetry', 'pgSchema', 'leaseMs'].includes(key), key);
  // (pgSchema and leaseMs go into the postgres option, present once databaseUrl is set: tested below)
});

test('PostgreSQL options: env names, defaults, and the mapping to createArbor({ postgres })', () => {
  assert.deepEqual(['databaseUrl', 'pgSchema', 'nodeId', 'nodeAddress', 'leaseMs'].map(envVarOf), ['ARBOR_DATABASE_URL', 'ARBOR_PG_SCHEMA', 'ARBOR_NODE_ID', 'ARBOR_NODE_ADDRESS', 'ARBOR_LEASE_MS']);
  // the file backend stays the default: no postgres option at all
  const files = loadConfig({ env: {} });
  assert.deepEqual([files.databaseUrl, files.pgSchema, files.leaseMs], [undefined, 'arbor', 5000]);
  assert.equal(toArborOptions(files).options.postgres, undefined);
  // given the database URL (env) and the node's settings
  const config = loadConfig({ env: { ARBOR_DATABASE_URL: 'postgres://u:pw@db:5432/arbor', ARBOR_PG_SCHEMA: 'chat', ARBOR_NODE_ID: 'node-a', ARBOR_LEASE_MS: '2500' } });
  // then they become createArbor's postgres option; nodeAddress defaults to the server's own URL
  const { options } = toArborOptions(config, undefined, { defaultNodeAddress: 'http://10.0.0.5:4000' });
  assert.deepEqual(options.postgres, { connectionString: 'postgres://u:pw@db:5432/arbor', schema: 'chat', leaseMs: 2500, nodeId: 'node-a', nodeAddress: 'http://10.0.0.5:4000' });
  // and a configured nodeAddress wins over the listening URL
  const configured = loadConfig({ env: { ARBOR_DATABASE_URL: 'postgresql://db/arbor', ARBOR_NODE_ADDRESS: 'http://arbor-1.internal:4000/' } });
  assert.equal(toArborOptions(configured, undefined, { defaultNodeAddress: 'http://0.0.0.0:4000' }).options.postgres?.nodeAddress, 'http://arbor-1.internal:4000');
  assert.equal(toArborOptions(configured).options.postgres?.nodeId, undefined, 'default node id: host-pid-random, chosen by the backend');
});

test('PostgreSQL options: invalid values stop start-up naming the option, and the URL (it may hold a password) is not echoed', () => {
  const problems = problemsOf(() => loadConfig({ env: { ARBOR_DATABASE_URL: 'mysql://root:hunter2@db/x', ARBOR_PG_SCHEMA: 'Bad-Schema', ARBOR_NODE_ADDRESS: 'arbor-1:4000', ARBOR_LEASE_MS: '50' } }));
  // leaseMs is refused by its type check first; the others are cross-checked once every value has its type
  assert.deepEqual(problems.map((p) => p.option), ['leaseMs']);
  assert.match(problems[0]!.message, /option leaseMs = 50 \(from env ARBOR_LEASE_MS\)/);
  const rest = problemsOf(() => loadConfig({ env: { ARBOR_DATABASE_URL: 'mysql://root:hunter2@db/x', ARBOR_PG_SCHEMA: 'Bad-Schema', ARBOR_NODE_ADDRESS: 'arbor-1:4000' } }));
  assert.deepEqual(rest.map((p) => p.option), ['databaseUrl', 'pgSchema', 'nodeAddress']);
  for (const p of rest) assert.ok(p.message.includes(`(from env ${envVarOf(p.option)})`), p.message);
  assert.ok(!rest[0]!.message.includes('hunter2'), rest[0]!.message);
  assert.match(rest[0]!.message, /--postgres/);
});

test('ARBOR_UNSAFE_DISABLE_FENCING (test-only) is off by default and refused unless NODE_ENV=test', () => {
  assert.equal(unsafeDisableFencingFromEnv({}), false);
  assert.equal(unsafeDisableFencingFromEnv({ ARBOR_UNSAFE_DISABLE_FENCING: '0' }), false);
  assert.equal(unsafeDisableFencingFromEnv({ ARBOR_UNSAFE_DISABLE_FENCING: '1', NODE_ENV: 'test' }), true);
  assert.equal(problemsOf(() => unsafeDisableFencingFromEnv({ ARBOR_UNSAFE_DISABLE_FENCING: '1', NODE_ENV: 'production' }))[0]!.option, 'ARBOR_UNSAFE_DISABLE_FENCING');
  assert.equal(problemsOf(() => unsafeDisableFencingFromEnv({ ARBOR_UNSAFE_DISABLE_FENCING: '1' }))[0]!.option, 'ARBOR_UNSAFE_DISABLE_FENCING');
  assert.equal(problemsOf(() => unsafeDisableFencingFromEnv({ ARBOR_UNSAFE_DISABLE_FENCING: 'yes', NODE_ENV: 'test' }))[0]!.option, 'ARBOR_UNSAFE_DISABLE_FENCING');
  const config = loadConfig({ env: { ARBOR_DATABASE_URL: 'postgres://db/arbor' } });
  assert.equal((toArborOptions(config, undefined, { unsafeDisableFencing: true }).options.postgres as { unsafeDisableFencing?: boolean }).unsafeDisableFencing, true);
});

test('resolveConfig says where each value came from: default, file, env, flag (flags win)', () => {
  const { dir, cleanup } = tempDir('arbor-config-');
  try {
    const file = join(dir, 'arbor.json');
    writeFileSync(file, JSON.stringify({ port: 4100, mailboxCapacity: 7, durability: 'write' }));
    const r = resolveConfig({ env: { ARBOR_PORT: '4200', ARBOR_DURABILITY: 'buffered' }, configFile: file, flags: { durability: parseFlagValue('durability', 'fsync') } });
    assert.equal(r.config.mailboxCapacity, 7);
    assert.equal(r.sources.mailboxCapacity, `file ${file}`);
    assert.equal(r.config.port, 4200);
    assert.equal(r.sources.port, 'env ARBOR_PORT');
    assert.equal(r.config.durability, 'fsync');
    assert.equal(r.sources.durability, 'flag --durability');
    assert.equal(r.sources.maxRestarts, 'default');
  } finally {
    cleanup();
  }
});

test('a flag value is parsed as its option and refused naming the flag and what it accepts', () => {
  assert.equal(parseFlagValue('port', '8080'), 8080);
  assert.throws(() => parseFlagValue('port', '70000'), /--port must be an integer from 0 to 65535, got "70000"/);
  assert.throws(() => parseFlagValue('durability', 'sometimes'), /--durability must be one of fsync, write, buffered/);
});

test('unknown ARBOR_* variables are warnings naming the closest real variable; known ones and other prefixes are not', () => {
  const warnings = unknownEnvWarnings({ ARBOR_DATADIR: 'x', ARBOR_PORT: '1', ARBOR_TOKEN: 't', ARBOR_CONFIG: 'c', HOME: '/', ARBOR_MOCK_CHUNK: '3' });
  assert.equal(warnings.length, 2);
  assert.match(warnings[0]!, /ARBOR_DATADIR .*did you mean ARBOR_DATA_DIR\?/);
  assert.match(warnings[1]!, /ARBOR_MOCK_CHUNK .*did you mean ARBOR_MOCK_CHUNKS\?/);
  assert.deepEqual(resolveConfig({ env: { ARBOR_LOGLEVEL: 'debug' } }).warnings.length, 1);
});

test('tokensFile adds its tokens (lines or JSON) to the others; an unreadable one is a configuration error naming it', () => {
  const { dir, cleanup } = tempDir('arbor-config-');
  try {
    const a = 'a'.repeat(64);
    const b = 'b'.repeat(64);
    const lines = join(dir, 'tokens.txt');
    writeFileSync(lines, `# tenants\nacme:${a}\n`);
    const json = join(dir, 'tokens.json');
    writeFileSync(json, JSON.stringify([{ tenant: 'beta', sha256: b }]));
    assert.deepEqual(loadConfig({ env: { ARBOR_TOKENS: `beta:${b}` }, flags: { tokensFile: lines } }).tokens, [{ tenant: 'beta', sha256: b }, { tenant: 'acme', sha256: a }]);
    const r = resolveConfig({ env: {}, flags: { tokensFile: json } });
    assert.deepEqual(r.config.tokens, [{ tenant: 'beta', sha256: b }]);
    assert.equal(r.sources.tokens, `file ${json}`);
    const problems = problemsOf(() => loadConfig({ env: { ARBOR_TOKENS_FILE: join(dir, 'missing') } }));
    assert.equal(problems[0]!.option, 'tokensFile');
  } finally {
    cleanup();
  }
});

test('the options help is generated from the table: every option with its env variable; secrets are masked when shown', () => {
  const help = optionsHelp();
  for (const k of OPTION_NAMES) assert.match(help, new RegExp(`\\n  ${k} +${envVarOf(k)}`), k);
  assert.equal(displayValue('llmApiKey', 'sk-secret'), '<hidden>');
  assert.equal(displayValue('databaseUrl', 'postgres://u:pw@db/x'), '<hidden>');
  assert.equal(displayValue('port', 4000), '4000');
});

test('browser-safe HTTP options: env lists and defaults; a malformed origin or host, and a head timeout above the request timeout, stop start-up naming the option', () => {
  // defaults: same origin only, loopback names and IP addresses, Node's timeouts shortened
  const d = loadConfig({ env: {} });
  assert.deepEqual([d.corsOrigins, d.allowedHosts, d.headersTimeoutMs, d.requestTimeoutMs, d.keepAliveTimeoutMs, d.maxConnections], [[], [], 10_000, 30_000, 5_000, 4096]);
  // the environment takes comma-separated lists
  const c = loadConfig({ env: { ARBOR_CORS_ORIGINS: 'https://app.example, http://localhost:5173', ARBOR_ALLOWED_HOSTS: 'arbor.internal,.svc.cluster.local', ARBOR_MAX_CONNECTIONS: '10' } });
  assert.deepEqual([c.corsOrigins, c.allowedHosts, c.maxConnections], [['https://app.example', 'http://localhost:5173'], ['arbor.internal', '.svc.cluster.local'], 10]);
  // an origin with a path, a host with a scheme, and timeouts the wrong way round are refused, each named
  for (const [env, option] of [
    [{ ARBOR_CORS_ORIGINS: 'https://app.example/' }, 'corsOrigins'],
    [{ ARBOR_CORS_ORIGINS: 'app.example' }, 'corsOrigins'],
    [{ ARBOR_ALLOWED_HOSTS: 'https://arbor.internal' }, 'allowedHosts'],
    [{ ARBOR_ALLOWED_HOSTS: 'arbor.internal:4000' }, 'allowedHosts'],
    [{ ARBOR_HEADERS_TIMEOUT_MS: '5000', ARBOR_REQUEST_TIMEOUT_MS: '1000' }, 'headersTimeoutMs'],
    [{ ARBOR_MAX_CONNECTIONS: '0' }, 'maxConnections'],
  ] as const) {
    const problems = problemsOf(() => loadConfig({ env }));
    assert.deepEqual(problems.map((p) => p.option), [option], JSON.stringify(env));
  }
});
