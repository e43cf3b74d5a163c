import { AiSdkProvider, DEFAULT_RUNTIME_OPTIONS, DEFAULT_STORE_OPTIONS, MockProvider, type ArborOptions, type LlmProvider } from '../index.ts';
import { ConfigError, DEFAULT_CONFIG, envVarOf, SERVER_ONLY_OPTIONS, type ArborConfig, type OptionName } from './config.ts';

/** The LLM provider the configuration selects. */
export function providerFor(config: Readonly<ArborConfig>): LlmProvider {
  if (config.llm === 'openai-compatible') {
    return new AiSdkProvider({ baseURL: config.llmBaseUrl!, model: config.llmModel!, maxRetries: config.llmMaxRetries, ...(config.llmApiKey === undefined ? {} : { apiKey: config.llmApiKey }) });
  }
  return new MockProvider({
    ...(config.mockChunks === undefined ? {} : { chunks: config.mockChunks }),
    ...(config.mockChunkDelayMs === undefined ? {} : { chunkDelayMs: config.mockChunkDelayMs }),
  });
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
export function toArborOptions(config: Readonly<ArborConfig>, llm: LlmProvider = providerFor(config)): { options: ArborOptions; ignored: OptionName[] } {
  const options: Record<string, unknown> = { llm };
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
  return { options: options as ArborOptions, ignored };
}
