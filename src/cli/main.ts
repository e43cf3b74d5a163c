#!/usr/bin/env node
import { readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Command } from 'commander';
import { registerOpsCommands, usageExit } from './ops.ts';

/**
 * The `arbor` command line. `serve` lives beside the operations commands
 * (verify, inspect, compact, backup, restore, bench: ./ops.ts).
 */
export function buildProgram(): Command {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  const program = new Command('arbor')
    .description('Arbor: a durable session runtime for LLM chat agents')
    .version(pkg.version)
    .exitOverride(usageExit)
    .showSuggestionAfterError(true);
  registerOpsCommands(program);
  return program;
}

// Run when executed directly (also through a symlink), not when imported (bin/arbor.mjs, tests).
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  await buildProgram().parseAsync(process.argv);
}
