import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { exitCodeOf, registerOpsCommands } from './ops.ts';
import { registerServeCommand } from './serve.ts';
import { registerClientCommands } from './chat.ts';

/**
 * The installed package's version, read at run time from its package.json.
 * The path is relative to this module, which sits two levels below the package
 * root both as `src/cli/main.ts` and as the built `dist/cli/main.js`.
 */
export function packageVersion(): string {
  const manifest = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  if (typeof manifest.version !== 'string') throw new Error('package.json has no version');
  return manifest.version;
}

/** The `arbor` command line: `serve` and the operations commands. */
export function buildProgram(): Command {
  const program = new Command('arbor')
    .description('Arbor: a durable session runtime for LLM chat agents')
    .version(packageVersion(), '-V, --version', 'print the version of arbor-runtime')
    .showHelpAfterError()
    // A usage error exits 2 (commander's default is 1), so scripts can tell it from a failure.
    .exitOverride((err) => {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') process.exit(0);
      process.exit(2);
    });
  registerServeCommand(program);
  registerClientCommands(program);
  registerOpsCommands(program);
  return program;
}

/** Runs the CLI with `argv`; a failure prints its message and exits with the code its error code maps to (2 for usage and configuration, else 1). */
export async function main(argv: readonly string[] = process.argv): Promise<void> {
  const program = buildProgram();
  if (argv.length <= 2) {
    // No command is a usage error (exit 2), not a request for help.
    process.stderr.write(`arbor: a command is required\n${program.helpInformation()}`);
    process.exit(2);
  }
  try {
    await program.parseAsync([...argv]);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode === 0 ? 0 : 2);
    // The exit code comes from the error's code (2 for ARBOR_USAGE / ARBOR_CONFIG_INVALID), as for every command.
    process.stderr.write(`arbor: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(exitCodeOf(err));
  }
}

function isEntryPoint(): boolean {
  const entry = process.argv[1];
  if (entry === undefined) return false;
  try {
    return realpathSync(entry) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

if (isEntryPoint()) await main();
