import { AiSdkProvider, DEFAULT_RUNTIME_OPTIONS, DEFAULT_STORE_OPTIONS, MockProvider, type ArborOptions, type LlmProvider } from '../index.ts';
import { ConfigError, DEFAULT_CONFIG, envVarOf, SERVER_ONLY_OPTIONS, type ArborConfig, type OptionName } from './config.ts';

/** The LLM provider the configuration selects. */
export function providerFor(config: Readonly<ArborConfig>): LlmProvider {
  if (config.llm === 'openai-compatible') {
    return new AiSdkProvider({ baseURL: config.llmBaseUrl!, model: config.llmModel!, maxRetries: config.llmMaxRetries, ...(config.llmTelemetry ? { telemetry: true } : {}), ...(config.llmApiKey === undefined ? {} : { apiKey: config.llmApiKey }) });
  }
  return new MockProvider({
    ...(config.mockChunks === undefined ? {} : { chunks: config.mockChunks }),
    ...(config.mockChunkDelayMs === undefined ? {} : { chunkDelayMs: config.mockChunkDelayMs }),
  });
}

/** What only the running server knows: its own address, and the test-only fencing switch. */
export interface NodeOptions {
  /** nodeAddress when the configuration sets none: the URL the server listens on. */
  defaultNodeAddress?: string;
  /** Test-only, see {@link unsafeDisableFencingFromEnv}. */
  unsafeDisableFencing?: boolean;
}

/** The environment variable of the test-only switch that turns PostgreSQL fencing off. */
export const UNSAFE_DISABLE_FENCING_ENV = 'ARBOR_UNSAFE_DISABLE_FENCING';

/**
 * `ARBOR_UNSAFE_DISABLE_FENCING=1`: TEST ONLY. The node writes to PostgreSQL
 * without checking that it still holds the session's lease, so a paused node
 * that wakes up can overwrite the new owner's history. It exists only so the
 * multi-node test can show that it detects exactly that (its negative
 * control), and is refused unless `NODE_ENV=test`.
 */
export function unsafeDisableFencingFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  const raw = env[UNSAFE_DISABLE_FENCING_ENV];
  if (raw === undefined || raw === '' || raw === '0') return false;
  const source = `env ${UNSAFE_DISABLE_FENCING_ENV}` as const;
  if (raw !== '1') throw new ConfigError([{ option: UNSAFE_DISABLE_FENCING_ENV, source, message: `${UNSAFE_DISABLE_FENCING_ENV} = ${JSON.stringify(raw)} is invalid: expected 1 or 0 (test-only switch)` }]);
  if (env.NODE_ENV !== 'test') {
    throw new ConfigError([{ option: UNSAFE_DISABLE_FENCING_ENV, source, message: `${UNSAFE_DISABLE_FENCING_ENV}=1 turns off PostgreSQL fencing and can corrupt sessions; it is refused unless NODE_ENV=test (it exists for the tests' negative control only)` }]);
  }
  return true;
}

/** Options createArbor accepts in this build (the runtime refuses unknown ones). */
function runtimeAccepts(option: string): boolean {
  return option in DEFAULT_STORE_OPTIONS || option in DEFAULT_RUNTIME_OPTIONS;
}

/**
 * The `createArbor` options of a configuration, plus the options this
 * runtime build does not know yet (`ignored`): an option the runtime does not
 * accept is left out when it has its default value, so the server still
 * starts, and stops start-up with a ConfigError when it was set to anything
 * else: a switch such as `enableJournal=false` must never be silently ignored.
 */
export function toArborOptions(config: Readonly<ArborConfig>, llm: LlmProvider = providerFor(config), node: NodeOptions = {}): { options: ArborOptions; ignored: OptionName[] } {
  const options: Record<string, unknown> = { llm };
  if (config.databaseUrl !== undefined) {
    const nodeAddress = config.nodeAddress ?? node.defaultNodeAddress;
    options.postgres = {
      connectionString: config.databaseUrl,
      schema: config.pgSchema,
      leaseMs: config.leaseMs,
      ...(config.nodeId === undefined ? {} : { nodeId: config.nodeId }),
      ...(nodeAddress === undefined ? {} : { nodeAddress: nodeAddress.replace(/\/$/, '') }),
      ...(node.unsafeDisableFencing === true ? { unsafeDisableFencing: true } : {}),
    };
  }
  const ignored: OptionName[] = [];
  const problems: ConfigError['problems'][number][] = [];
  for (const [key, value] of Object.entries(config) as [OptionName, unknown][]) {
    if (SERVER_ONLY_OPTIONS.has(key) || value === undefined) continue;
    if (runtimeAccepts(key)) {
      options[key] = value;
    } else if (value === DEFAULT_CONFIG[key]) {
      ignored.push(key);
    } else {
      problems.push({ option: key, source: undefined, message: `option ${key} = ${JSON.stringify(value)} (env ${envVarOf(key)}) is not supported by this runtime yet; leave it at ${JSON.stringify(DEFAULT_CONFIG[key])}` });
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  if (config.encryptionKey !== undefined) options.encryptionKeySource = `option encryptionKey (env ${envVarOf('encryptionKey')} or --encryption-key)`;
  return { options: options as ArborOptions, ignored };
}
