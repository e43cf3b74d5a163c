import type { Command } from 'commander';

/**
 * Registers the operations commands (verify, inspect, compact, backup,
 * restore, bench). They are built on another branch; this build has none, so
 * `arbor` offers `serve` only.
 */
export function registerOpsCommands(_program: Command): void {}
