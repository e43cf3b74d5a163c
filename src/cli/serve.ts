import { writeSync } from 'node:fs';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { DEFAULT_CONFIG, displayValue, envVarOf, OPTION_NAMES, OPTION_SPECS, optionsHelp, parseFlagValue, resolveConfig, startServer, type OptionName, type ResolvedConfig } from '../server.ts';

/**
 * The configuration flags of `arbor serve` and `arbor config print`, made
 * from the options table (OPTION_SPECS): every option with a `flag` gets one,
 * whose help names its config file key, environment variable and default.
 * Returns the attribute name commander stores each under → the option.
 */
export function addConfigFlags(cmd: Command): Map<string, OptionName> {
  const byAttribute = new Map<string, OptionName>();
  for (const name of OPTION_NAMES) {
    const spec = OPTION_SPECS[name] as { flag?: string; meaning: string; default: unknown };
    if (spec.flag === undefined) continue;
    const def = DEFAULT_CONFIG[name];
    const option = new Option(spec.flag, `${spec.meaning.replace(/`/g, '')} [config key ${name}, env ${envVarOf(name)}${def === undefined ? '' : `, default ${JSON.stringify(def)}`}]`).argParser((raw: string) => {
      try {
        return parseFlagValue(name, raw);
      } catch (err) {
        // A usage error (exit 2), printed by commander with the help hint.
        throw new InvalidArgumentError((err as Error).message);
      }
    });
    cmd.addOption(option);
    byAttribute.set(option.attributeName(), name);
  }
  cmd.option('--config <file>', 'JSON config file: one object whose keys are the option names below [env ARBOR_CONFIG]');
  cmd.addHelpText('after', `\n${optionsHelp()}`);
  return byAttribute;
}

/** The configuration the flags, the environment and the config file give, with each value's source. */
export function resolveFromFlags(flags: Record<string, unknown>, byAttribute: Map<string, OptionName>): ResolvedConfig {
  const given: Partial<Record<OptionName, unknown>> = {};
  for (const [attribute, option] of byAttribute) if (flags[attribute] !== undefined) given[option] = flags[attribute];
  return resolveConfig({ flags: given, configFile: flags.config as string | undefined });
}

/** Unknown ARBOR_* variables: one warning line each on stderr. */
function printWarnings(resolved: ResolvedConfig): void {
  for (const w of resolved.warnings) process.stderr.write(`arbor: warning: ${w}\n`);
}

/**
 * `arbor serve`: opens the data directory, serves the HTTP API and prints
 * `arbor listening on <url>` as its first line on stdout. SIGTERM and SIGINT
 * shut it down gracefully (exit 0).
 */
export function registerServeCommand(program: Command): void {
  const serve = program.command('serve').description('serve the HTTP API (sessions, messages, Server-Sent Events, /health, /metrics)');
  const byAttribute = addConfigFlags(serve);
  serve.action(async (flags: Record<string, unknown>) => {
    const resolved = resolveFromFlags(flags, byAttribute);
    printWarnings(resolved);
    const server = await startServer(resolved.config);
    // One synchronous write: the line is complete before anyone reads the URL from it.
    writeSync(1, `arbor listening on ${server.url}\n`);
    let signals = 0;
    const stop = (signal: NodeJS.Signals): void => {
      signals += 1;
      if (signals > 1) {
        server.logger.warn({ signal }, 'second signal: exiting without finishing the shutdown');
        process.exit(1);
      }
      server.logger.info({ signal }, 'signal received');
      server.close().then(
        () => process.exit(0),
        (err: unknown) => {
          server.logger.error({ err }, 'shutdown failed');
          process.exit(1);
        },
      );
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });

  const config = program.command('config').description('the configuration arbor serve would run with');
  const print = config
    .command('print')
    .description('print the resolved configuration: every option, its value and where it came from (default, file, env, flag); secrets masked')
    .option('--json', 'one JSON document: {options: {name: {value, source, env}}}');
  const printAttributes = addConfigFlags(print);
  print.action((flags: Record<string, unknown>) => {
    const resolved = resolveFromFlags(flags, printAttributes);
    printWarnings(resolved);
    if (flags.json === true) {
      const options = Object.fromEntries(
        OPTION_NAMES.map((k) => {
          const value = resolved.config[k];
          const secret = (OPTION_SPECS[k] as { secret?: boolean }).secret === true && value !== undefined;
          return [k, { value: secret ? displayValue(k, value) : (value ?? null), source: resolved.sources[k], env: envVarOf(k) }];
        }),
      );
      process.stdout.write(`${JSON.stringify({ options }, null, 2)}\n`);
      return;
    }
    const rows = OPTION_NAMES.map((k) => [k, displayValue(k, resolved.config[k]), resolved.sources[k]] as const);
    const w0 = Math.max(...rows.map((r) => r[0].length));
    const w1 = Math.min(60, Math.max(...rows.map((r) => r[1].length)));
    process.stdout.write(`${'option'.padEnd(w0)}  ${'value'.padEnd(w1)}  source\n`);
    for (const [k, v, src] of rows) process.stdout.write(`${k.padEnd(w0)}  ${v.padEnd(w1)}  ${src}\n`);
  });
}
