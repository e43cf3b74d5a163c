import { writeSync } from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { loadConfig, startServer, type OptionName } from '../server.ts';

/** Flags of `arbor serve`; each overrides its config-file and environment value. */
interface ServeFlags {
  host?: string;
  port?: number;
  dataDir?: string;
  config?: string;
  postgres?: string;
}

function parsePort(raw: string): number {
  if (!/^[0-9]{1,5}$/.test(raw) || Number(raw) > 65_535) throw new InvalidArgumentError(`--port must be an integer from 0 to 65535, got ${JSON.stringify(raw)}`);
  return Number(raw);
}

/**
 * `arbor serve`: opens the data directory, serves the HTTP API and prints
 * `arbor listening on <url>` as its first line on stdout. SIGTERM and SIGINT
 * shut it down gracefully (exit 0).
 */
export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('serve the HTTP API (sessions, messages, Server-Sent Events, /health, /metrics)')
    .option('--host <host>', 'address to listen on (default 127.0.0.1, or ARBOR_HOST)')
    .option('--port <port>', 'port to listen on; 0 picks a free one (default 4000, or ARBOR_PORT)', parsePort)
    .option('--data-dir <dir>', 'data directory (default ./data, or ARBOR_DATA_DIR)')
    .option('--config <file>', 'JSON config file (or ARBOR_CONFIG)')
    .option('--postgres <url>', 'run on PostgreSQL at this URL instead of files, so several nodes can serve the same sessions (or ARBOR_DATABASE_URL)')
    .action(async (flags: ServeFlags) => {
      const overrides: Partial<Record<OptionName, unknown>> = { host: flags.host, port: flags.port, dataDir: flags.dataDir, databaseUrl: flags.postgres };
      const config = loadConfig({ overrides, configFile: flags.config });
      const server = await startServer(config);
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
}
