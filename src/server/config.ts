import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ArborError, closestName, ErrorCodes, MCP_SERVERS_SCHEMA, SCHEMA_NAME_PATTERN, type McpServerConfig } from '../index.ts';

/**
 * The server's and CLI's configuration: every option of the persistence
 * design (§8.1), the storage engine's and runtime's options, and the server's
 * own. One table (`OPTION_SPECS`) says for each option its environment
 * variable, default, accepted values and meaning; the README's table is
 * written from the same facts.
 *
 * Sources, lowest precedence first: defaults < config file (JSON, `--config`
 * or `ARBOR_CONFIG`) < environment (`ARBOR_*`) < command-line flags / code.
 */

/** A bearer token, stored hashed: `sha256` is the lowercase hex SHA-256 of the token. */
export interface TokenEntry {
  tenant: string;
  sha256: string;
  /** false: this token's requests never create a session (POST /v1/chat to a new id is 404); default true */
  createSessions?: boolean;
}

/** The resolved configuration (frozen). */
export interface ArborConfig {
  // seed §8.1: storage paths
  dataDir: string;
  journalDir: string | undefined;
  snapshotDir: string | undefined;
  // seed §8.1: performance tuning
  journalBatchSize: number;
  journalFlushIntervalMs: number;
  snapshotIntervalMs: number;
  // seed §8.1: retention
  maxSnapshotsPerSession: number;
  journalMaxSizeMb: number;
  sessionIdleTimeoutMs: number;
  // seed §8.1: recovery
  recoveryTimeoutMs: number;
  enableHotStorage: boolean;
  enableJournal: boolean;
  enableSnapshots: boolean;
  // storage engine
  durability: 'fsync' | 'write' | 'buffered';
  journalMaxBatchRecords: number;
  journalMaxBatchBytes: number;
  journalMaxQueueRecords: number;
  journalMaxQueueBytes: number;
  maxEventBytes: number;
  dedupeWindow: number;
  salvage: boolean;
  // erasure and encryption at rest (docs/erasure.md, docs/encryption.md)
  erasureDeadlineMs: number;
  encryptionKey: string | undefined;
  encryptionKeyFile: string | undefined;
  // point-in-time restore (docs/pitr.md)
  journalArchiveDir: string | undefined;
  journalArchiveRetentionDays: number;
  // runtime
  snapshotEveryEvents: number;
  mailboxCapacity: number;
  maxRestarts: number;
  restartWindowMs: number;
  streamBufferChunks: number;
  maxConcurrentRecoveries: number;
  // server
  host: string;
  port: number;
  tokens: readonly TokenEntry[];
  tokensFile: string | undefined;
  /** SHA-256 hashes (lowercase hex) of the operators' bearer tokens: they see /health in full. */
  operatorTokens: readonly string[];
  maxBodyBytes: number;
  maxHeaderBytes: number;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  diskWarnPercent: number;
  diskFailPercent: number;
  retryAfterSeconds: number;
  // browser-safe HTTP (docs/http-safety.md)
  allowedHosts: readonly string[];
  corsOrigins: readonly string[];
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
  maxConnections: number;
  // LLM
  llm: 'mock' | 'openai-compatible';
  llmBaseUrl: string | undefined;
  llmModel: string | undefined;
  llmApiKey: string | undefined;
  llmMaxRetries: number;
  llmTelemetry: boolean;
  mockChunks: number | undefined;
  mockChunkDelayMs: number | undefined;
  // PostgreSQL and several nodes
  databaseUrl: string | undefined;
  pgSchema: string;
  nodeId: string | undefined;
  nodeAddress: string | undefined;
  leaseMs: number;
  // tools
  mcpServers: Readonly<Record<string, McpServerConfig>>;
  maxToolSteps: number;
  toolsNeedApproval: readonly string[];
}

type Kind = 'int' | 'number' | 'boolean' | 'path' | 'string' | 'enum' | 'tokens' | 'hashes' | 'mcpServers' | 'strings';

interface OptionSpec {
  kind: Kind;
  default: unknown;
  /** Shown in the README and in errors: what is accepted. */
  accepts: string;
  meaning: string;
  min?: number;
  max?: number;
  values?: readonly string[];
  /** Kept out of error messages and logs. */
  secret?: boolean;
  /** The `arbor serve` / `arbor config print` flag that sets it, e.g. `--port <port>` (the options people change). */
  flag?: string;
}

const MAX_INT = Number.MAX_SAFE_INTEGER;
const int = (def: number | undefined, min: number, max: number, meaning: string): OptionSpec => ({
  kind: 'int',
  default: def,
  min,
  max,
  accepts: max === MAX_INT ? `an integer ≥ ${min}` : `an integer from ${min} to ${max}`,
  meaning,
});
const bool = (def: boolean, meaning: string): OptionSpec => ({ kind: 'boolean', default: def, accepts: 'true or false (env: true/false/1/0)', meaning });
const path = (def: string | undefined, meaning: string): OptionSpec => ({ kind: 'path', default: def, accepts: 'a non-empty path', meaning });
const oneOf = (def: string, values: readonly string[], meaning: string): OptionSpec => ({ kind: 'enum', default: def, values, accepts: `one of ${values.join(', ')}`, meaning });

/** Every option: kind, default, what it accepts, what it means. Keys are the option names. */
export const OPTION_SPECS = {
  dataDir: { ...path('./data', 'root of everything on disk; holds the LOCK file'), flag: '--data-dir <dir>' },
  journalDir: path(undefined, 'journal segments (default `<dataDir>/journals`)'),
  snapshotDir: path(undefined, 'snapshots (default `<dataDir>/snapshots`)'),
  journalBatchSize: int(10, 1, MAX_INT, '`buffered` durability: write once this many events are queued'),
  journalFlushIntervalMs: int(1000, 1, 3_600_000, '`write`: sync interval; `buffered`: write+sync interval'),
  snapshotIntervalMs: int(300_000, 1, MAX_INT, 'snapshot sessions with new events this often'),
  maxSnapshotsPerSession: int(5, 1, 1000, 'snapshots kept per session'),
  journalMaxSizeMb: { kind: 'number', default: 100, min: Number.MIN_VALUE, max: 1024 * 1024, accepts: 'a number above 0 (MiB, fractions allowed)', meaning: 'rotate to a new journal segment before one grows past this' },
  sessionIdleTimeoutMs: int(3_600_000, 1, MAX_INT, 'a session idle this long is snapshotted and dropped from memory'),
  recoveryTimeoutMs: int(30_000, 1, MAX_INT, 'give up recovering one session after this long (passed to the runtime)'),
  enableHotStorage: bool(true, 'keep committed states in memory (off: every command loads the session from disk)'),
  enableJournal: bool(true, 'journal critical events (off: nothing is durable between snapshots)'),
  enableSnapshots: bool(true, 'take snapshots (off: restart replays the whole journal, which is never compacted)'),
  durability: { ...oneOf('fsync', ['fsync', 'write', 'buffered'], 'when an append is acknowledged: fsync (after it is on disk), write (in the OS, synced every journalFlushIntervalMs), buffered (batched in memory)'), flag: '--durability <mode>' },
  journalMaxBatchRecords: int(10_000, 1, MAX_INT, 'cap on events per group-commit batch'),
  journalMaxBatchBytes: int(8 * 1024 * 1024, 1, MAX_INT, 'cap on bytes per group-commit batch'),
  journalMaxQueueRecords: int(100_000, 1, MAX_INT, 'queued events before ARBOR_QUEUE_FULL (HTTP 503)'),
  journalMaxQueueBytes: int(64 * 1024 * 1024, 1, MAX_INT, 'queued bytes before ARBOR_QUEUE_FULL (HTTP 503)'),
  maxEventBytes: int(1024 * 1024, 1, 256 * 1024 * 1024, 'largest encoded event'),
  dedupeWindow: int(1000, 1, MAX_INT, 'clientMessageIds remembered per session'),
  salvage: bool(false, 'operator option: recover damaged sessions past their gaps'),
  erasureDeadlineMs: int(30_000, 1, 60_000, "a deleted session's bytes are erased from the data directory within this long"),
  encryptionKey: { kind: 'string', default: undefined, accepts: '32 bytes in base64 (openssl rand -base64 32)', meaning: 'encryption at rest: the master key; each session gets its own data key wrapped by it (docs/encryption.md)', secret: true },
  encryptionKeyFile: path(undefined, 'encryption at rest: a file holding the master key (instead of encryptionKey)'),
  journalArchiveDir: path(undefined, 'file store: copy every sealed journal segment here (synced) before it is deleted, for `arbor restore <backup> --to <time | lsn>` (docs/pitr.md); refused on PostgreSQL'),
  journalArchiveRetentionDays: int(7, 1, 36_500, 'archived segments whose newest record is older than this many days are removed'),
  snapshotEveryEvents: int(100, 1, MAX_INT, 'snapshot a session after this many events'),
  mailboxCapacity: int(1000, 1, MAX_INT, 'commands waiting per session before ARBOR_MAILBOX_FULL (HTTP 429)'),
  maxRestarts: int(5, 1, MAX_INT, 'handler crashes allowed within restartWindowMs before a session is stopped'),
  restartWindowMs: int(10_000, 1, MAX_INT, 'window of maxRestarts'),
  streamBufferChunks: int(10_000, 1, MAX_INT, 'chunks kept per session for clients that reconnect mid-stream'),
  maxConcurrentRecoveries: int(8, 1, MAX_INT, 'sessions loaded back from disk at once'),
  host: { kind: 'string', default: '127.0.0.1', accepts: 'a host name or IP address', meaning: 'address the server listens on', flag: '--host <host>' },
  port: { ...int(4000, 0, 65_535, 'TCP port (0: any free port)'), flag: '--port <port>' },
  tokens: {
    kind: 'tokens',
    default: [],
    accepts: 'env: `tenant:sha256hex,…`; file: `[{"tenant", "sha256"}]` (tenant: 1-128 of A-Z a-z 0-9 _ -; sha256: 64 lowercase hex digits)',
    meaning: 'bearer tokens by tenant, as SHA-256 hashes of the tokens; none: the server is open (one tenant)',
    secret: true,
  },
  tokensFile: { ...path(undefined, 'a file of bearer tokens, added to `tokens`: a JSON array `[{"tenant", "sha256"}]` or lines `tenant:sha256hex` (# comments)'), flag: '--tokens-file <file>' },
  operatorTokens: {
    kind: 'hashes',
    default: [],
    accepts: 'env: `sha256hex,…`; file: `["sha256hex", …]` (64 lowercase hex digits each)',
    meaning: "operators' bearer tokens, as SHA-256 hashes: with one, GET /health shows every detail (sessions included); without, only statuses",
    secret: true,
  },
  maxBodyBytes: int(1024 * 1024, 1, 256 * 1024 * 1024, 'largest request body (HTTP 413 beyond)'),
  maxHeaderBytes: int(16 * 1024, 1024, 1024 * 1024, 'largest request head (HTTP 431 beyond)'),
  logLevel: { ...oneOf('info', ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], 'log level (one line per request at debug)'), flag: '--log-level <level>' },
  diskWarnPercent: int(85, 1, 100, '/health warns when the disk of the data, journal or snapshot directory is fuller than this'),
  diskFailPercent: int(95, 1, 100, '/health fails (503) and writes are refused (507) while one of those disks is fuller than this'),
  retryAfterSeconds: int(5, 1, 3600, 'Retry-After sent with 429, 503 and 507'),
  allowedHosts: { kind: 'strings', default: [], accepts: 'a list of host names, `.example.com` for a domain and its subdomains, or `*` (env: comma-separated)', meaning: 'Host header names the server answers to beside loopback names and IP addresses (others: 403 ARBOR_HOST_NOT_ALLOWED); `*` turns the check off (docs/http-safety.md)' },
  corsOrigins: { kind: 'strings', default: [], accepts: 'a list of origins such as `https://app.example.com`, or `*` (env: comma-separated)', meaning: 'origins whose pages may call the API (CORS); none: same origin only' },
  headersTimeoutMs: int(10_000, 1, 3_600_000, 'a request whose head has not arrived in full within this long is answered 408 and closed'),
  requestTimeoutMs: int(30_000, 1, 3_600_000, 'a request (head and body) not received in full within this long is answered 408 and closed; at least headersTimeoutMs'),
  keepAliveTimeoutMs: int(5_000, 1, 3_600_000, 'an idle keep-alive connection is closed after this long'),
  maxConnections: int(4096, 1, 1_000_000, 'open connections at most (open streams included); a connection beyond is closed at once'),
  llm: { ...oneOf('mock', ['mock', 'openai-compatible'], 'the LLM provider'), flag: '--llm <provider>' },
  llmBaseUrl: { kind: 'string', default: undefined, accepts: 'an http(s) URL', meaning: '`openai-compatible`: endpoint, e.g. `http://127.0.0.1:11434/v1`', flag: '--llm-base-url <url>' },
  llmModel: { kind: 'string', default: undefined, accepts: 'a model name', meaning: '`openai-compatible`: model', flag: '--llm-model <model>' },
  llmApiKey: { kind: 'string', default: undefined, accepts: 'a string', meaning: '`openai-compatible`: API key (sent as a bearer token)', secret: true },
  llmMaxRetries: int(2, 0, 10, '`openai-compatible`: retries of a failed request before its first chunk (2 s, 4 s backoff)'),
  llmTelemetry: bool(false, "`openai-compatible`: the AI SDK's own OpenTelemetry spans (`experimental_telemetry`, prompts and answers recorded) through the global tracer provider"),
  mockChunks: int(undefined, 1, 100_000, '`mock`: chunks per answer (default 8)'),
  mockChunkDelayMs: int(undefined, 0, 2_147_483_647, '`mock`: pause before each chunk (default 20)'),
  databaseUrl: { kind: 'string', default: undefined, accepts: 'a postgres:// or postgresql:// URL', meaning: 'run on PostgreSQL instead of files under dataDir (several nodes share one database)', secret: true, flag: '--postgres <url>' },
  pgSchema: { kind: 'string', default: 'arbor', accepts: 'a schema name: 1-63 of a-z 0-9 _, starting with a letter or _', meaning: 'PostgreSQL schema of the tables (created when missing)' },
  nodeId: { kind: 'string', default: undefined, accepts: '1-200 characters', meaning: "this node's name in the lease table; unique per process (default `<host>-<pid>-<random>`)" },
  nodeAddress: { kind: 'string', default: undefined, accepts: 'an http(s) URL', meaning: 'where the other nodes reach this one to forward requests (default: the URL the server listens on; with host 0.0.0.0 or ::, `http://<hostname>:<port>`)' },
  leaseMs: int(5_000, 100, 24 * 3_600_000, 'PostgreSQL: how long a session stays owned by a node that stopped renewing it; a dead node\'s sessions move after at most this long'),
  mcpServers: {
    kind: 'mcpServers',
    default: {},
    accepts: 'an object of servers by name, as MCP clients write it: `{"<name>": {"command", "args"?, "env"?}}` (stdio) or `{"<name>": {"url", "headers"?}}` (Streamable HTTP); env: the same JSON',
    meaning: 'MCP servers whose tools the model may call (see docs/tools.md); one that fails to start or dies is reported in /health and its tools withdrawn',
    secret: true,
  },
  maxToolSteps: int(10, 1, 1000, 'model calls per turn at most (each step runs the tool calls of the one before)'),
  toolsNeedApproval: { kind: 'strings', default: [], accepts: 'a list of tool names (env: comma-separated)', meaning: 'tools whose every call waits for an approval, beside those an MCP server marks destructive' },
} satisfies Record<keyof ArborConfig, OptionSpec>;

export type OptionName = keyof ArborConfig;
export const OPTION_NAMES = Object.keys(OPTION_SPECS) as OptionName[];

/** The environment variable of an option: `ARBOR_` + its name in SCREAMING_SNAKE_CASE (`dataDir` → `ARBOR_DATA_DIR`). */
export function envVarOf(option: string): string {
  return `ARBOR_${option.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** Defaults of every option (frozen). */
export const DEFAULT_CONFIG: Readonly<ArborConfig> = Object.freeze(Object.fromEntries(OPTION_NAMES.map((k) => [k, OPTION_SPECS[k].default])) as unknown as ArborConfig);

/** Where a value came from, for error messages and `arbor config print`. */
export type ConfigSource = 'default' | `file ${string}` | `env ${string}` | `flag ${string}` | 'code';

/** The flag's name alone (`--port` of `--port <port>`). */
export function flagNameOf(option: OptionName): string | undefined {
  return (OPTION_SPECS[option] as OptionSpec).flag?.split(' ')[0];
}

/**
 * `ARBOR_*` variables that are not options but are read elsewhere: the config
 * file's path, the CLI client's token and server URL, and switches of the tests
 * and benchmarks. Anything else under `ARBOR_` is a warning (a typo, most likely).
 */
export const OTHER_ENV_VARS: Readonly<Record<string, string>> = Object.freeze({
  ARBOR_CONFIG: 'the JSON config file (--config)',
  ARBOR_TOKEN: 'the bearer token `arbor chat` and `arbor sessions` send to a server',
  ARBOR_URL: 'the server `arbor chat` and `arbor sessions` talk to (--url)',
  ARBOR_UNSAFE_DISABLE_FENCING: 'test-only switch (refused unless NODE_ENV=test)',
  ARBOR_TEST_DATABASE_URL: 'tests: the PostgreSQL server to use',
  ARBOR_REQUIRE_POSTGRES: 'tests: fail instead of skipping without PostgreSQL',
  ARBOR_NO_POSTGRES: 'tests: skip PostgreSQL',
  ARBOR_PROPERTY_SEED: 'tests: replay a property test',
  ARBOR_PROPERTY_PATH: 'tests: replay a property test',
  ARBOR_PROPERTY_RUNS: 'tests: property test runs',
  ARBOR_CRASH_SEED: 'tests: replay a crash test',
  ARBOR_CRASH_OUTCOMES: 'tests: crash test outcomes',
  ARBOR_BENCH_ROOT: 'arbor bench: where the benchmarks are',
  ARBOR_TEST_DEBUG: 'tests: debug output',
  ARBOR_DEBUG: 'debug output',
});

/**
 * One warning per `ARBOR_*` variable in `env` that is neither an option's nor
 * one of OTHER_ENV_VARS, naming the closest real variable: a misspelt
 * variable must not be ignored silently.
 */
export function unknownEnvWarnings(env: NodeJS.ProcessEnv = process.env): string[] {
  const known = [...OPTION_NAMES.map(envVarOf), ...Object.keys(OTHER_ENV_VARS)];
  const knownSet = new Set(known);
  const warnings: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('ARBOR_') || knownSet.has(name)) continue;
    const near = closestName(name, known);
    warnings.push(`environment variable ${name} is not an Arbor setting and is ignored${near === undefined ? '' : `; did you mean ${near}?`} (\`arbor serve --help\` lists every variable)`);
  }
  return warnings;
}

/**
 * Start-up stops with this: every invalid option, each named with its value,
 * source and what is accepted. An ArborError with code ARBOR_CONFIG_INVALID
 * (the CLI exits 2); `details.options` names the options, `details.problems`
 * holds the list as `problems` does.
 */
export class ConfigError extends ArborError {
  readonly problems: readonly { option: string; source: ConfigSource | undefined; message: string }[];

  constructor(problems: ConfigError['problems']) {
    super(ErrorCodes.CONFIG_INVALID, `invalid configuration:\n${problems.map((p) => `  - ${p.message}`).join('\n')}`, { options: problems.map((p) => p.option), problems });
    this.problems = problems;
  }
}

const TENANT = /^[A-Za-z0-9_-]{1,128}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;

function schemaOf(spec: OptionSpec): z.ZodType {
  switch (spec.kind) {
    case 'int':
      return z.number().int().min(spec.min!).max(spec.max!);
    case 'number':
      return z.number().gt(0).max(spec.max!);
    case 'boolean':
      return z.boolean();
    case 'path':
    case 'string':
      return z.string().min(1);
    case 'enum':
      return z.enum(spec.values as [string, ...string[]]);
    case 'tokens':
      return z.array(z.strictObject({ tenant: z.string().regex(TENANT), sha256: z.string().regex(SHA256_HEX), createSessions: z.boolean().optional() }));
    case 'hashes':
      return z.array(z.string().regex(SHA256_HEX));
    case 'mcpServers':
      return MCP_SERVERS_SCHEMA;
    case 'strings':
      return z.array(z.string().min(1));
  }
}

const SCHEMAS = Object.fromEntries(OPTION_NAMES.map((k) => [k, schemaOf(OPTION_SPECS[k])])) as Record<OptionName, z.ZodType>;

/** Parses an environment variable's text into the option's type; text that does not parse is kept, so validation names it. */
function fromEnvText(spec: OptionSpec, raw: string): unknown {
  switch (spec.kind) {
    case 'int':
      return /^-?[0-9]+$/.test(raw) ? Number(raw) : raw;
    case 'number':
      return /^-?[0-9]+(\.[0-9]+)?$/.test(raw) ? Number(raw) : raw;
    case 'boolean':
      if (raw === 'true' || raw === '1') return true;
      if (raw === 'false' || raw === '0') return false;
      return raw;
    case 'hashes':
      return raw.split(',').map((h) => h.trim()).filter((h) => h !== '');
    case 'tokens':
      return raw.split(',').filter((s) => s.trim() !== '').map((entry) => {
        const at = entry.lastIndexOf(':');
        return at < 0 ? entry : { tenant: entry.slice(0, at).trim(), sha256: entry.slice(at + 1).trim() };
      });
    case 'mcpServers':
      try {
        return JSON.parse(raw) as unknown;
      } catch {
        return raw;
      }
    case 'strings':
      return raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
    default:
      return raw;
  }
}

/** Inputs of {@link loadConfig}. */
export interface LoadConfigInput {
  /** Highest precedence: code. `undefined` values are ignored. */
  overrides?: Partial<Record<OptionName, unknown>>;
  /** Command-line flags (as high as overrides; their source reads `flag --port`). `undefined` values are ignored. */
  flags?: Partial<Record<OptionName, unknown>>;
  /** Default `process.env`. */
  env?: NodeJS.ProcessEnv;
  /** A JSON config file; default `env.ARBOR_CONFIG`. */
  configFile?: string | undefined;
}

function shown(option: OptionName, value: unknown): string {
  if (OPTION_SPECS[option].kind === 'tokens' && Array.isArray(value)) {
    // Hashes are not secrets, but a plain token pasted by mistake would be: show only its shape.
    return `[${value.map((t) => (typeof t === 'object' && t !== null ? `{tenant: ${JSON.stringify((t as TokenEntry).tenant)}, sha256: <${String((t as TokenEntry).sha256).length} chars>}` : `<${String(t).length} chars>`)).join(', ')}]`;
  }
  if (OPTION_SPECS[option].kind === 'hashes' && Array.isArray(value)) return `[${value.map((h) => `<${String(h).length} chars>`).join(', ')}]`;
  if ((OPTION_SPECS[option] as OptionSpec).secret) return '<hidden>';
  return JSON.stringify(value);
}

/**
 * Builds the configuration from defaults, the config file, the environment and
 * the overrides (in that order of precedence), validates every option and
 * freezes the result. Throws a {@link ConfigError} naming every invalid option,
 * its value, where it came from and what is accepted.
 */
export function loadConfig(input: LoadConfigInput = {}): Readonly<ArborConfig> {
  return resolveConfig(input).config;
}

/** What {@link resolveConfig} gives: the configuration, where each value came from, and warnings (unknown `ARBOR_*` variables). */
export interface ResolvedConfig {
  config: Readonly<ArborConfig>;
  sources: Readonly<Record<OptionName, ConfigSource>>;
  warnings: readonly string[];
}

/** {@link loadConfig} with each value's source, for `arbor config print`. */
export function resolveConfig(input: LoadConfigInput = {}): ResolvedConfig {
  const env = input.env ?? process.env;
  const problems: { option: string; source: ConfigSource | undefined; message: string }[] = [];
  const values: Record<string, unknown> = { ...DEFAULT_CONFIG };
  const sources: Record<string, ConfigSource> = Object.fromEntries(OPTION_NAMES.map((k) => [k, 'default' as const]));

  const file = input.configFile ?? (env.ARBOR_CONFIG === '' ? undefined : env.ARBOR_CONFIG);
  if (file !== undefined) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new ConfigError([{ option: 'config', source: `file ${file}`, message: `config file ${file} could not be read as JSON: ${(err as Error).message}` }]);
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
      throw new ConfigError([{ option: 'config', source: `file ${file}`, message: `config file ${file} must hold one JSON object of options` }]);
    }
    for (const [key, value] of Object.entries(parsed)) {
      if (!(key in OPTION_SPECS)) {
        problems.push({ option: key, source: `file ${file}`, message: `unknown option ${JSON.stringify(key)} in config file ${file}; known options: ${OPTION_NAMES.join(', ')}` });
        continue;
      }
      values[key] = value;
      sources[key] = `file ${file}`;
    }
  }
  for (const key of OPTION_NAMES) {
    const variable = envVarOf(key);
    const raw = env[variable];
    // An empty variable (`ARBOR_PORT=` in a compose file) means "not set".
    if (raw === undefined || raw === '') continue;
    values[key] = fromEnvText(OPTION_SPECS[key], raw);
    sources[key] = `env ${variable}`;
  }
  for (const [layer, given] of [['flag', input.flags], ['code', input.overrides]] as const) {
    for (const [key, value] of Object.entries(given ?? {})) {
      if (value === undefined) continue;
      if (!(key in OPTION_SPECS)) throw new TypeError(`unknown option ${key}; known options: ${OPTION_NAMES.join(', ')}`);
      values[key] = value;
      sources[key] = layer === 'flag' ? `flag ${flagNameOf(key as OptionName) ?? key}` : 'code';
    }
  }
  // A tokens file adds its tokens to the others.
  const tokensFile = values.tokensFile;
  if (typeof tokensFile === 'string' && tokensFile !== '') {
    const read = readTokensFile(tokensFile);
    if (typeof read === 'string') problems.push({ option: 'tokensFile', source: sources.tokensFile, message: `option tokensFile = ${JSON.stringify(tokensFile)} (from ${sources.tokensFile}): ${read}` });
    else if (read.length > 0) {
      values.tokens = [...(Array.isArray(values.tokens) ? values.tokens : []), ...read];
      if (sources.tokens === 'default') sources.tokens = `file ${tokensFile}`;
    }
  }

  for (const key of OPTION_NAMES) {
    const value = values[key];
    if (value === undefined) continue; // optional options without a default
    const checked = SCHEMAS[key].safeParse(value);
    if (!checked.success) {
      // A structured option names the field inside it that failed (mcpServers.<name>.command).
      const path = checked.error.issues[0]?.path ?? [];
      const at = path.length > 0 ? ` at ${[key, ...path.map(String)].join('.')}` : '';
      problems.push({ option: key, source: sources[key], message: `option ${key} = ${shown(key, value)} (from ${sources[key]}) is invalid${at}: expected ${OPTION_SPECS[key].accepts}` });
    }
  }
  if (problems.length === 0) {
    const v = values as unknown as ArborConfig;
    if (v.diskWarnPercent > v.diskFailPercent) {
      problems.push({ option: 'diskWarnPercent', source: sources.diskWarnPercent, message: `option diskWarnPercent = ${v.diskWarnPercent} (from ${sources.diskWarnPercent}) is invalid: expected at most diskFailPercent (${v.diskFailPercent})` });
    }
    if (v.llm === 'openai-compatible') {
      if (v.llmBaseUrl === undefined || !/^https?:\/\//.test(v.llmBaseUrl)) {
        problems.push({ option: 'llmBaseUrl', source: sources.llmBaseUrl, message: `option llmBaseUrl = ${JSON.stringify(v.llmBaseUrl)} (from ${sources.llmBaseUrl}) is invalid: expected an http(s) URL when llm is openai-compatible (env ${envVarOf('llmBaseUrl')})` });
      }
      if (v.llmModel === undefined) {
        problems.push({ option: 'llmModel', source: sources.llmModel, message: `option llmModel is missing: expected a model name when llm is openai-compatible (env ${envVarOf('llmModel')})` });
      }
    }
    if (v.databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(v.databaseUrl)) {
      problems.push({ option: 'databaseUrl', source: sources.databaseUrl, message: `option databaseUrl (from ${sources.databaseUrl}) is invalid: expected ${OPTION_SPECS.databaseUrl.accepts} (env ${envVarOf('databaseUrl')}, flag --postgres)` });
    }
    if (!SCHEMA_NAME_PATTERN.test(v.pgSchema)) {
      problems.push({ option: 'pgSchema', source: sources.pgSchema, message: `option pgSchema = ${JSON.stringify(v.pgSchema)} (from ${sources.pgSchema}) is invalid: expected ${OPTION_SPECS.pgSchema.accepts}` });
    }
    if (v.nodeId !== undefined && v.nodeId.length > 200) {
      problems.push({ option: 'nodeId', source: sources.nodeId, message: `option nodeId (from ${sources.nodeId}) is invalid: expected ${OPTION_SPECS.nodeId.accepts}, got ${v.nodeId.length}` });
    }
    if (v.nodeAddress !== undefined && !/^https?:\/\/[^/\s]+\/?$/.test(v.nodeAddress)) {
      problems.push({ option: 'nodeAddress', source: sources.nodeAddress, message: `option nodeAddress = ${JSON.stringify(v.nodeAddress)} (from ${sources.nodeAddress}) is invalid: expected an http(s) URL without a path, e.g. http://10.0.0.5:4000` });
    }
    if (v.headersTimeoutMs > v.requestTimeoutMs) {
      problems.push({ option: 'headersTimeoutMs', source: sources.headersTimeoutMs, message: `option headersTimeoutMs = ${v.headersTimeoutMs} (from ${sources.headersTimeoutMs}) is invalid: expected at most requestTimeoutMs (${v.requestTimeoutMs})` });
    }
    for (const origin of v.corsOrigins) {
      if (origin !== '*' && !/^https?:\/\/[^/\s]+$/.test(origin)) {
        problems.push({ option: 'corsOrigins', source: sources.corsOrigins, message: `option corsOrigins (from ${sources.corsOrigins}) is invalid: ${JSON.stringify(origin)} is not an origin; expected ${OPTION_SPECS.corsOrigins.accepts} (scheme and host, no path or trailing slash)` });
      }
    }
    for (const host of v.allowedHosts) {
      if (host !== '*' && !/^\.?[A-Za-z0-9_.-]+$|^\[[0-9A-Fa-f:.]+\]$/.test(host)) {
        problems.push({ option: 'allowedHosts', source: sources.allowedHosts, message: `option allowedHosts (from ${sources.allowedHosts}) is invalid: ${JSON.stringify(host)} is not a host name; expected ${OPTION_SPECS.allowedHosts.accepts} (no scheme, no port)` });
      }
    }
    const hashes = new Set<string>();
    for (const t of v.tokens) {
      if (hashes.has(t.sha256)) problems.push({ option: 'tokens', source: sources.tokens, message: `option tokens (from ${sources.tokens}) is invalid: one token hash is listed twice (tenant ${t.tenant})` });
      hashes.add(t.sha256);
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  const config = Object.freeze({ ...(values as unknown as ArborConfig), tokens: Object.freeze((values.tokens as TokenEntry[]).map((t) => Object.freeze({ ...t }))), operatorTokens: Object.freeze([...(values.operatorTokens as string[])]) });
  return { config, sources: Object.freeze(sources as Record<OptionName, ConfigSource>), warnings: unknownEnvWarnings(env) };
}

/** The tokens of a tokens file (a JSON array of `{tenant, sha256}`, or lines `tenant:sha256hex`), or why it cannot be read. */
function readTokensFile(file: string): unknown[] | string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    return `could not be read: ${(err as Error).message}`;
  }
  if (text.trimStart().startsWith('[')) {
    try {
      const parsed: unknown = JSON.parse(text);
      return Array.isArray(parsed) ? parsed : 'is not a JSON array of {"tenant", "sha256"}';
    } catch (err) {
      return `is not valid JSON: ${(err as Error).message}`;
    }
  }
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  return fromEnvText(OPTION_SPECS.tokens, lines.join(',')) as unknown[];
}

/** A value as `arbor config print` shows it: secrets masked (`<hidden>`), token hashes shortened. */
export function displayValue(option: OptionName, value: unknown): string {
  if (value === undefined) return '(unset)';
  if (OPTION_SPECS[option].kind === 'tokens' && Array.isArray(value)) {
    return value.length === 0 ? '[] (open server)' : value.map((t: TokenEntry) => `${t.tenant}:${t.sha256.slice(0, 8)}…`).join(', ');
  }
  if ((OPTION_SPECS[option] as OptionSpec).secret) return '<hidden>';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Parses a flag's text as its option (as the environment's is) and checks it; the message says what is accepted. */
export function parseFlagValue(option: OptionName, raw: string): unknown {
  const spec = OPTION_SPECS[option] as OptionSpec;
  const value = fromEnvText(spec, raw);
  if (!SCHEMAS[option].safeParse(value).success) throw new RangeError(`${flagNameOf(option) ?? option} must be ${spec.accepts}, got ${JSON.stringify(raw)}`);
  return value;
}

/**
 * Help text of every option, generated from OPTION_SPECS: the config file key
 * (the option's name), its environment variable, its flag if it has one, the
 * default and what it means.
 */
export function optionsHelp(): string {
  const rows = OPTION_NAMES.map((k) => {
    const spec = OPTION_SPECS[k] as OptionSpec;
    const def = spec.default === undefined ? '' : ` (default ${Array.isArray(spec.default) ? 'none' : JSON.stringify(spec.default)})`;
    return { left: `  ${k}`, mid: `${envVarOf(k)}${spec.flag === undefined ? '' : `, ${flagNameOf(k)}`}`, right: `${spec.meaning.replace(/`/g, '')}${def}` };
  });
  const w1 = Math.max(...rows.map((r) => r.left.length));
  const w2 = Math.max(...rows.map((r) => r.mid.length));
  return [
    'Every option: config file key, environment variable (and flag), meaning.',
    'Precedence: defaults < config file (--config / ARBOR_CONFIG) < environment < flags.',
    ...rows.map((r) => `${r.left.padEnd(w1)}  ${r.mid.padEnd(w2)}  ${r.right}`),
  ].join('\n');
}

/** The options that only the server and CLI use (never passed to createArbor). */
export const SERVER_ONLY_OPTIONS: ReadonlySet<OptionName> = new Set<OptionName>([
  'host', 'port', 'tokens', 'tokensFile', 'operatorTokens', 'maxBodyBytes', 'maxHeaderBytes', 'logLevel', 'diskWarnPercent', 'diskFailPercent', 'retryAfterSeconds',
  'allowedHosts', 'corsOrigins', 'headersTimeoutMs', 'requestTimeoutMs', 'keepAliveTimeoutMs', 'maxConnections',
  'llm', 'llmBaseUrl', 'llmModel', 'llmApiKey', 'llmMaxRetries', 'llmTelemetry', 'mockChunks', 'mockChunkDelayMs',
  // mapped to createArbor's `postgres` option by toArborOptions
  'databaseUrl', 'pgSchema', 'nodeId', 'nodeAddress', 'leaseMs',
]);
