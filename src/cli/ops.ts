import { resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { Argument, Command, InvalidArgumentError, Option, type CommanderError } from 'commander';
import { ArborError, ErrorCodes, isArborError, isSessionId, NodeFileSystem } from '../index.ts';
import { rotateEncryptionKey, backupDataDir, restoreBackup, restoreToPoint, BENCHMARKS, PEERS_HINT, runBenchmarks, sourceRoot, type BenchmarkName, compactDataDir, inspectSession, type InspectReport, pathExists as exists, verifyDataDir, type VerifyReport } from '../ops.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * The operations commands of the `arbor` CLI: verify, inspect, compact,
 * backup, restore, bench. Exit codes: 0 success (or clean), 1 damage found or
 * the operation failed, 2 a usage error (unknown option, missing argument,
 * bad value). The README's "CLI" section documents each command.
 */

/** Exit code for usage errors (commander's own default is 1). */
export const EXIT_USAGE = 2;
export const EXIT_FAILED = 1;

/**
 * The exit code for a failure, from its code: 2 for a usage or configuration
 * error (ARBOR_USAGE, ARBOR_CONFIG_INVALID), 1 for everything else.
 */
export function exitCodeOf(err: unknown): number {
  return isArborError(err, ErrorCodes.USAGE) || isArborError(err, ErrorCodes.CONFIG_INVALID) ? EXIT_USAGE : EXIT_FAILED;
}

/**
 * commander calls this instead of exiting: help and version exit 0, every
 * usage error exits 2 (commander has already printed its message).
 */
export function usageExit(err: CommanderError): never {
  process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE);
}

interface CommonOptions {
  dataDir: string;
  journalDir?: string;
  snapshotDir?: string;
  json?: boolean;
}

function addDirOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--data-dir <dir>', 'data directory').env('ARBOR_DATA_DIR').default('./data'))
    .addOption(new Option('--journal-dir <dir>', 'journal segments (default <data-dir>/journals)').env('ARBOR_JOURNAL_DIR'))
    .addOption(new Option('--snapshot-dir <dir>', 'snapshots (default <data-dir>/snapshots)').env('ARBOR_SNAPSHOT_DIR'));
}

interface KeyFlags {
  encryptionKey?: string;
  encryptionKeyFile?: string;
}

/** --encryption-key / --encryption-key-file (env ARBOR_ENCRYPTION_KEY / ARBOR_ENCRYPTION_KEY_FILE): the master key of an encrypted data directory. */
function addKeyOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--encryption-key <base64>', 'master key of an encrypted data directory (32 bytes, base64)').env('ARBOR_ENCRYPTION_KEY'))
    .addOption(new Option('--encryption-key-file <file>', 'a file holding the master key').env('ARBOR_ENCRYPTION_KEY_FILE'));
}

function keysOf(o: KeyFlags): { encryptionKey?: string; encryptionKeyFile?: string; encryptionKeySource?: string } {
  return {
    ...(o.encryptionKey === undefined ? {} : { encryptionKey: o.encryptionKey, encryptionKeySource: '--encryption-key (or env ARBOR_ENCRYPTION_KEY)' }),
    ...(o.encryptionKeyFile === undefined ? {} : { encryptionKeyFile: o.encryptionKeyFile }),
  };
}

function layoutOf(o: CommonOptions): { dataDir: string; journalDir?: string; snapshotDir?: string } {
  return { dataDir: o.dataDir, ...(o.journalDir === undefined ? {} : { journalDir: o.journalDir }), ...(o.snapshotDir === undefined ? {} : { snapshotDir: o.snapshotDir }) };
}

function parseSessionId(value: string): string {
  if (!isSessionId(value)) throw new InvalidArgumentError(`invalid session id ${JSON.stringify(value)}: use 1-128 characters of A-Z, a-z, 0-9, '_' or '-'`);
  return value;
}

function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError(`expected a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 600) throw new InvalidArgumentError(`expected seconds in (0, 600], got ${JSON.stringify(value)}`);
  return n;
}

/** A progress bar on stderr, only for a terminal and never with --json. */
function progressBar(label: string, enabled: boolean, unit: 'bytes' | 'segments'): { update: (done: number, total: number) => void; stop: () => void } {
  if (!enabled || process.stderr.isTTY !== true) return { update: () => undefined, stop: () => undefined };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {shown}`,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  const shown = (done: number, total: number): string => (unit === 'bytes' ? `${mib(done)} / ${mib(total)}` : `${done} / ${total} segments`);
  return {
    update: (done, total) => {
      if (!started) {
        bar.start(total, done, { shown: shown(done, total) });
        started = true;
      }
      bar.setTotal(total);
      bar.update(done, { shown: shown(done, total) });
    },
    stop: () => {
      if (started) bar.stop();
    },
  };
}

function mib(bytes: number): string {
  return bytes < 1024 * 1024 ? `${(bytes / 1024).toFixed(1)} KiB` : `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

function out(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/**
 * Runs a command's body; maps failures onto exit codes with a message that
 * names the command. With --json a failure is also one JSON document on stdout:
 * `{"error": {"message", "kind", "code"?, "details"}}` (`kind` is `usage` when the exit code is 2).
 */
async function run(name: string, json: boolean | undefined, body: () => Promise<number>): Promise<void> {
  try {
    process.exitCode = await body();
  } catch (err) {
    const message = (err as Error)?.message ?? String(err);
    const usage = exitCodeOf(err) === EXIT_USAGE;
    const code = isArborError(err) ? err.code : undefined;
    if (json === true) {
      const details = isArborError(err) ? err.details : {};
      printJson({ error: { message, kind: usage ? 'usage' : 'failed', ...(code === undefined ? {} : { code }), details } });
    }
    if (usage) {
      process.stderr.write(`arbor ${name}: error: ${message}\n`);
      process.exitCode = EXIT_USAGE;
      return;
    }
    process.stderr.write(`arbor ${name}: failed${code === undefined ? '' : ` [${code}]`}: ${message}\n`);
    if (!isArborError(err) && process.env.ARBOR_DEBUG) process.stderr.write(`${(err as Error)?.stack}\n`);
    process.exitCode = EXIT_FAILED;
  }
}

/** Refuses a --data-dir that does not exist (read-only commands must not create it). */
async function assertDataDir(dataDir: string): Promise<void> {
  if (!(await exists(new NodeFileSystem(), dataDir))) throw new ArborError(ErrorCodes.USAGE, `--data-dir ${dataDir}: no such directory`, { option: 'dataDir', dataDir });
}

function where(d: { file?: string; offset?: number; length?: number; session?: string; seq?: number | [number, number] }): string {
  const parts: string[] = [];
  if (d.file !== undefined) parts.push(d.file);
  if (d.offset !== undefined) parts.push(`offset ${d.offset}${d.length ? ` (${d.length} bytes)` : ''}`);
  if (d.session !== undefined) parts.push(`session ${d.session}`);
  if (d.seq !== undefined) parts.push(Array.isArray(d.seq) ? `seq ${d.seq[0]}..${d.seq[1]}` : `seq ${d.seq}`);
  return parts.join(', ');
}

function printVerify(r: VerifyReport): void {
  const segBytes = r.segments.reduce((s, x) => s + x.bytes, 0);
  const snapBytes = r.snapshots.reduce((s, x) => s + x.bytes, 0);
  out(`journal:   ${r.totals.segments} segments, ${r.totals.records} records, ${mib(segBytes)}`);
  out(`snapshots: ${r.totals.snapshots} files, ${mib(snapBytes)}`);
  out(`sessions:  ${r.totals.sessions}`);
  for (const n of r.notes) out(`note: ${n}`);
  for (const d of r.damage) {
    const legible = d.sessions === undefined ? '' : `; sessions legible there: ${d.sessions.map((s) => (s.seq === undefined ? s.sid : `${s.sid} seq ${s.seq}`)).join(', ')}`;
    const lost = d.lostLsns === undefined ? '' : `; LSNs ${d.lostLsns[0]}..${d.lostLsns[1]} lost`;
    out(`DAMAGE ${where(d)}: ${d.reason}${lost}${legible}`);
  }
  out(r.ok ? 'clean' : `${r.damage.length} problem${r.damage.length === 1 ? '' : 's'} found`);
}

function printInspect(r: InspectReport): void {
  const s = r.state;
  out(`session ${r.session}: seq ${s.seq}, ${s.messages.total} messages (${s.messages.user} user, ${s.messages.assistant} assistant, ${s.messages.system} system), stream ${s.stream.status === 'streaming' ? `streaming ${s.stream.messageId}` : 'idle'}`);
  out(`state: rebuilt from ${s.fromSnapshotSeq === 0 ? 'the first event' : `the snapshot at seq ${s.fromSnapshotSeq}`} + ${s.replayed} journal events`);
  if (s.problem !== undefined) out(`PROBLEM: ${s.problem}`);
  out(`config: ${JSON.stringify(s.config)}`);
  out(`permissions: ${s.permissions}, MCP servers: ${s.mcpServers.length === 0 ? 'none' : s.mcpServers.join(', ')}, tool executions: ${s.toolExecutions}, commands: ${s.commands}`);
  if (s.lastMessage !== undefined) out(`last message: ${s.lastMessage.role} ${s.lastMessage.id} (seq ${s.lastMessage.seq}): "${s.lastMessage.preview}"`);
  out('snapshots:');
  if (r.snapshots.length === 0) out('  (none)');
  for (const x of r.snapshots) out(`  seq ${String(x.seq).padStart(6)}  ${x.time ?? '?'.padEnd(24)}  ${mib(x.bytes).padStart(10)}  ${x.file}${x.status === 'damaged' ? `  DAMAGED: ${x.reason}` : ''}`);
  out(`journal events${r.eventsOmitted > 0 ? ` (newest ${r.events.length}; ${r.eventsOmitted} older omitted)` : ''}:`);
  if (r.events.length === 0) out('  (none: every event is covered by a snapshot)');
  for (const e of r.events) out(`  seq ${String(e.seq).padStart(6)}  ${e.time}  ${e.type.padEnd(28)}  ${e.summary}`);
  for (const n of r.notes) out(`note: ${n}`);
}

/** Registers verify, inspect, compact, backup, restore and bench on `program`. */
export function registerOpsCommands(program: Command): void {
  const add = (name: string): Command => program.command(name).exitOverride(usageExit).showSuggestionAfterError(true);

  addKeyOptions(addDirOptions(add('verify')))
    .description('check every journal segment and snapshot, read-only (safe beside a running server); exit 1 when damage is found')
    .option('--json', 'print one JSON document on stdout')
    .action(async (o: CommonOptions & KeyFlags) =>
      run('verify', o.json, async () => {
        await assertDataDir(o.dataDir);
        const bar = progressBar('verify', o.json !== true, 'bytes');
        const report = await verifyDataDir({ ...layoutOf(o), ...keysOf(o), onProgress: bar.update }).finally(bar.stop);
        if (o.json === true) printJson({ dataDir: o.dataDir, ...report });
        else printVerify(report);
        return report.ok ? 0 : EXIT_FAILED;
      }),
    );

  addKeyOptions(addDirOptions(add('inspect')))
    .description("a session's timeline: its snapshots, its journal events and its recovered state (read-only)")
    .argument('<session>', 'session id', parseSessionId)
    .option('--json', 'print one JSON document on stdout')
    .option('--limit <n>', 'show only the newest n events', parsePositiveInt)
    .action(async (session: string, o: CommonOptions & KeyFlags & { limit?: number }) =>
      run('inspect', o.json, async () => {
        await assertDataDir(o.dataDir);
        const report = await inspectSession(session, { ...layoutOf(o), ...keysOf(o), ...(o.limit === undefined ? {} : { limit: o.limit }) });
        if (o.json === true) printJson(report);
        else printInspect(report);
        return report.state.problem === undefined ? 0 : EXIT_FAILED;
      }),
    );

  addDirOptions(add('compact'))
    .description('snapshot every session that pins journal segments and delete the released segments (takes the lock: stop the server first)')
    .option('--json', 'print one JSON document on stdout')
    .action(async (o: CommonOptions) =>
      run('compact', o.json, async () => {
        await assertDataDir(o.dataDir);
        const bar = progressBar('compact', o.json !== true, 'segments');
        const r = await compactDataDir({ ...layoutOf(o), onProgress: bar.update }).finally(bar.stop);
        if (o.json === true) printJson(r);
        else {
          out(`journal:   ${mib(r.before.journalBytes)} in ${r.before.segments} segments -> ${mib(r.after.journalBytes)} in ${r.after.segments} (${r.deletedSegments.length} deleted)`);
          out(`snapshots: ${mib(r.before.snapshotBytes)} -> ${mib(r.after.snapshotBytes)} (${r.snapshotted} sessions snapshotted)`);
          out(`total:     ${mib(r.before.journalBytes + r.before.snapshotBytes)} -> ${mib(r.after.journalBytes + r.after.snapshotBytes)}`);
          for (const s of r.skipped) out(`skipped session ${s.session}: ${s.status} (its loss must be accepted with salvage before it can be snapshotted)`);
          if (r.blockedBy !== undefined) out(`${r.blockedBy.segment} and the segments after it stay: pinned by ${r.blockedBy.sessions.join(', ')}`);
        }
        // Damaged sessions were found and left alone: the directory is only partly compacted.
        return r.skipped.length === 0 && r.blockedBy === undefined ? 0 : EXIT_FAILED;
      }),
    );

  addDirOptions(add('backup'))
    .description('a consistent copy of the data directory, also while a server runs on it: every event acknowledged before the backup started is in it')
    .argument('<dest>', 'destination directory (must be empty or not exist)')
    .option('--json', 'print one JSON document on stdout')
    .action(async (dest: string, o: CommonOptions) =>
      run('backup', o.json, async () => {
        await assertDataDir(o.dataDir);
        const bar = progressBar('backup', o.json !== true, 'bytes');
        const r = await backupDataDir({ ...layoutOf(o), dest, onProgress: bar.update }).finally(bar.stop);
        if (o.json === true) printJson({ dest: r.dest, backupId: r.manifest.backupId, startedAt: r.manifest.startedAt, finishedAt: r.manifest.finishedAt, files: r.manifest.totals.files, bytes: r.manifest.totals.bytes, journal: r.manifest.journal, relists: r.relists, droppedSegments: r.droppedSegments, vanishedSnapshots: r.vanishedSnapshots, warnings: r.warnings, durationMs: r.durationMs, bytesPerSec: r.bytesPerSec });
        else {
          out(`backup ${r.manifest.backupId} of ${o.dataDir} written to ${dest}`);
          out(`${r.manifest.totals.files} files (${r.manifest.journal.segments} journal segments), ${mib(r.manifest.totals.bytes)} in ${(r.durationMs / 1000).toFixed(2)} s (${mib(r.bytesPerSec)}/s)`);
          out(`every event acknowledged before ${r.manifest.startedAt} is in it`);
          for (const w of r.warnings) out(`warning: ${w}`);
        }
        return 0;
      }),
    );

  addDirOptions(add('restore'))
    .description('restore a backup into an empty (or new) data directory, checking every file against the manifest; with --to, also the journal archive up to a point in time (docs/pitr.md)')
    .argument('<src>', 'backup directory (written by arbor backup)')
    .option('--json', 'print one JSON document on stdout')
    .option('--key-store <file>', 'an encrypted backup: the live key store (<data-dir>/keys/keystore.json); sessions deleted since stay erased')
    .option('--to <time|lsn>', 'point-in-time restore: an ISO 8601 time (2026-12-04T10:15:00Z) or an LSN; needs --archive-dir')
    .addOption(new Option('--archive-dir <dir>', 'with --to: the journal archive (the server\'s journalArchiveDir)').env('ARBOR_JOURNAL_ARCHIVE_DIR'))
    .option('--live-journal <dir>', 'with --to: the live journal directory (read-only), for the segments not archived yet; with it, only the sessions cut off by the point get the loss notice')
    .action(async (src: string, o: CommonOptions & { keyStore?: string; to?: string; archiveDir?: string; liveJournal?: string }) =>
      run('restore', o.json, async () => {
        if (!(await exists(new NodeFileSystem(), src))) throw new ArborError(ErrorCodes.USAGE, `<src> ${src}: no such directory`, { option: 'src', src });
        if (o.to !== undefined) {
          if (o.archiveDir === undefined) throw new ArborError(ErrorCodes.USAGE, '--to needs --archive-dir <dir> (or ARBOR_JOURNAL_ARCHIVE_DIR): the journal archive to replay', { option: 'archiveDir' });
          const r = await restoreToPoint({ ...layoutOf(o), src, to: o.to, archiveDir: o.archiveDir, ...(o.liveJournal === undefined ? {} : { liveJournalDir: o.liveJournal }), ...(o.keyStore === undefined ? {} : { keyStore: o.keyStore }) });
          if (o.json === true) {
            const { verify, ...rest } = r;
            printJson({ ...rest, verify: { ok: verify.ok, totals: verify.totals, damage: verify.damage, notes: verify.notes } });
          } else {
            out(`restored backup ${r.backupId} (taken at ${r.backupStartedAt}) up to LSN ${r.point.lsn} (${r.point.at}) into ${r.dataDir}: ${r.segments.length} journal segments, ${r.sessions} sessions; ${r.verify.ok ? 'verified clean' : 'VERIFY FOUND DAMAGE:'}`);
            for (const d of r.verify.damage) out(`DAMAGE ${where(d)}: ${d.reason}`);
            out(`${r.cutOff.length} sessions had events after the point (not restored)${r.cutOff.length === 0 ? '' : `: ${r.cutOff.slice(0, 10).join(', ')}${r.cutOff.length > 10 ? ', …' : ''}`}`);
            if (r.erased.length > 0) out(`${r.erased.length} deleted sessions stay erased: ${r.erased.slice(0, 10).join(', ')}${r.erased.length > 10 ? ', …' : ''}`);
            out(`${r.marker} written: ${r.noticed.length} sessions will show the loss notice${r.exact ? '' : ' (all of them: without --live-journal, events after the last archived segment cannot be ruled out)'}`);
          }
          return r.verify.ok ? 0 : EXIT_FAILED;
        }
        if (o.archiveDir !== undefined && process.env.ARBOR_JOURNAL_ARCHIVE_DIR !== o.archiveDir) throw new ArborError(ErrorCodes.USAGE, '--archive-dir is for a point-in-time restore: give --to <time|lsn> too', { option: 'to' });
        if (o.liveJournal !== undefined) throw new ArborError(ErrorCodes.USAGE, '--live-journal is for a point-in-time restore: give --to <time|lsn> too', { option: 'to' });
        const bar = progressBar('restore', o.json !== true, 'bytes');
        const r = await restoreBackup({ ...layoutOf(o), src, ...(o.keyStore === undefined ? {} : { keyStore: o.keyStore }), onProgress: bar.update }).finally(bar.stop);
        if (o.json === true) {
          const { verify, ...rest } = r;
          printJson({ ...rest, verify: { ok: verify.ok, totals: verify.totals, damage: verify.damage, notes: verify.notes } });
        } else {
          out(`restored backup ${r.backupId} (taken at ${r.backupStartedAt}) into ${r.dataDir}: ${r.files} files, ${mib(r.bytes)}, ${r.sessions} sessions; ${r.verify.ok ? 'verified clean' : 'VERIFY FOUND DAMAGE (it was in the source when it was backed up):'}`);
          for (const d of r.verify.damage) out(`DAMAGE ${where(d)}: ${d.reason}`);
          if (r.erased.length > 0) out(`${r.erased.length} sessions of the backup were deleted since (their keys are destroyed): erased, not restored: ${r.erased.slice(0, 10).join(', ')}${r.erased.length > 10 ? ', …' : ''}`);
          out(`${r.marker} written: each restored session will tell its user that anything after ${r.backupStartedAt} may be lost`);
        }
        return r.verify.ok ? 0 : EXIT_FAILED;
      }),
    );

  addKeyOptions(addDirOptions(add('keys').command('rotate').exitOverride(usageExit)))
    .description('encryption at rest: rewrap every data key with a new master key (no data is rewritten; takes the lock: stop the server first)')
    .requiredOption('--new-key <base64>', 'the new master key (32 bytes, base64)')
    .option('--json', 'print one JSON document on stdout')
    .action(async (o: CommonOptions & KeyFlags & { newKey: string }) =>
      run('keys rotate', o.json, async () => {
        await assertDataDir(o.dataDir);
        const r = await rotateEncryptionKey({ dataDir: o.dataDir, ...keysOf(o), newEncryptionKey: o.newKey });
        if (o.json === true) printJson(r);
        else out(`rewrapped ${r.keys} data keys of ${r.dataDir} with the new master key; from now on only the new key opens it`);
        return 0;
      }),
    );

  program
    .command('bench')
    .exitOverride(usageExit)
    .description("run the project's benchmarks (bench/journal, bench/runtime) from a source checkout")
    .addArgument(new Argument('[which]', 'which benchmark').choices([...BENCHMARKS, 'all']).default('all'))
    .option('--tiny', 'a configuration that finishes in seconds')
    .option('--json', 'print one JSON document on stdout ({journal, runtime})')
    .option('--peers', 'also the peer baselines (SQLite, LangGraph); needs `npm install --prefix bench`')
    .option('--seconds <s>', 'seconds per measurement', parseSeconds)
    .option('--data-dir <dir>', 'measure on the disk of this directory (temp files under it, removed after); default: the OS temp directory')
    .action(async (which: BenchmarkName | 'all', o: { tiny?: boolean; json?: boolean; peers?: boolean; seconds?: number; dataDir?: string }) =>
      run('bench', o.json, async () => {
        if (o.dataDir !== undefined) {
          await assertDataDir(o.dataDir);
          process.env.TMPDIR = resolve(o.dataDir);
        }
        if (o.peers !== true && !existsSync(join(sourceRoot(), 'bench', 'node_modules'))) process.stderr.write(`arbor bench: note: ${PEERS_HINT} (and pass --peers)\n`);
        const r = await runBenchmarks({
          which: which === 'all' ? [...BENCHMARKS] : [which],
          tiny: o.tiny === true,
          json: o.json === true,
          peers: o.peers === true,
          ...(o.seconds === undefined ? {} : { seconds: o.seconds }),
          ...(o.json === true ? {} : { onOutput: (chunk: string) => process.stdout.write(chunk) }),
        });
        const failed = r.runs.find((x) => x.exitCode !== 0);
        if (o.json === true) {
          const doc: Record<string, unknown> = { peersSkipped: r.peersSkipped };
          for (const x of r.runs) {
            try {
              doc[x.name] = JSON.parse(x.stdout);
            } catch {
              doc[x.name] = { error: `bench/${x.name} exited with ${x.exitCode} and printed no JSON` };
            }
          }
          printJson(doc);
        }
        if (failed !== undefined) throw new ArborError(ErrorCodes.OPS_FAILED, `bench/${failed.name} exited with ${failed.exitCode}`, { benchmark: failed.name, exitCode: failed.exitCode });
        return 0;
      }),
    );
}
