import { statfs as nodeStatfs } from 'node:fs/promises';
import type { Arbor } from '../index.ts';

/** One check's outcome: `warn` keeps /health at 200, `fail` makes it 503. */
export interface CheckResult {
  status: 'ok' | 'warn' | 'fail';
  message: string;
  [detail: string]: unknown;
}

export interface HealthReport {
  status: 'ok' | 'warn' | 'fail';
  /** the checks every backend has, `tools`, and those only its backend makes (PostgreSQL: `database`, `leases`) */
  checks: { hotStorage: CheckResult; journalWriter: CheckResult; diskSpace: CheckResult; recovery: CheckResult; tools: CheckResult; [backendCheck: string]: CheckResult };
}

/** The few fields of `fs.statfs` the disk check reads (injectable in tests). */
export type StatFs = (path: string) => Promise<{ blocks: number; bavail: number; bsize: number }>;

export interface HealthOptions {
  dataDir: string;
  /** Other directories whose filesystems are checked too (journalDir, snapshotDir when elsewhere). */
  extraDirs?: readonly string[];
  /** Disk fuller than this (percent used, as `df` counts it): warn. */
  diskWarnPercent: number;
  /** Disk fuller than this: fail (503). */
  diskFailPercent: number;
  /** A queue that has not been flushed for this long while non-empty means a stuck writer. */
  stuckFlushMs?: number;
  /** The recovery probe runs at most this often; /health reuses its last result in between. */
  probeEveryMs?: number;
  statfs?: StatFs;
  /** The write gate reuses a disk reading younger than this. */
  writeGateMaxAgeMs?: number;
  /** Who can reach the server (`checks.exposure`): warn when it listens beyond loopback with no tokens. */
  exposure?: CheckResult;
}

const SEVERITY = { ok: 0, warn: 1, fail: 2 } as const;

/** Disk usage as `df` shows it: blocks in use over blocks usable by unprivileged users. */
export function diskUsagePercent(s: { blocks: number; bavail: number; bfree?: number }): number {
  const bfree = s.bfree ?? s.bavail;
  const used = s.blocks - bfree;
  const usable = used + s.bavail;
  return usable === 0 ? 100 : (used / usable) * 100;
}

/** The disk rule of seed §8.3: above `failPct` fail, above `warnPct` warn. Pure. */
export function diskStatus(usedPct: number, warnPct: number, failPct: number): 'ok' | 'warn' | 'fail' {
  if (usedPct > failPct) return 'fail';
  if (usedPct > warnPct) return 'warn';
  return 'ok';
}

/**
 * The health checks of seed §8.3: the hot tier (sessions, memory), the
 * journal writer (state, queue depth, age of the last flush), disk space, and
 * recovery: how many sessions are still waiting for it (`pending`, and
 * `completedAt` once none is), and a real probe: one session (a different one
 * each time) is rebuilt from its newest snapshot and its journal tail, read
 * and decoded exactly as a restart would, and its state compared with the
 * live one (`arbor.probeRecovery`). A node still recovering is up: sessions
 * not reached yet are recovered on first access, so `pending` alone never
 * fails the check.
 */
export class HealthChecker {
  readonly #arbor: Arbor;
  readonly #o: Required<Omit<HealthOptions, 'exposure'>> & Pick<HealthOptions, 'exposure'>;
  #probe: { at: number; result: Promise<CheckResult> } | undefined;
  #probeCursor = 0;
  /** The newest disk reading (by the time it started), what the write gate reuses. */
  #diskReading: { at: number; result: CheckResult } | undefined;
  /** A reading the write gate started and other writes wait for, rather than each starting its own. */
  #diskRead: Promise<CheckResult> | undefined;

  constructor(arbor: Arbor, options: HealthOptions) {
    this.#arbor = arbor;
    this.#o = { extraDirs: [], stuckFlushMs: 10_000, probeEveryMs: 5_000, writeGateMaxAgeMs: 1_000, statfs: nodeStatfs as unknown as StatFs, ...options };
  }

  async check(): Promise<HealthReport> {
    const health = this.#arbor.health();
    const memory = process.memoryUsage();
    const hotStorage: CheckResult = { status: 'ok', message: `${health.hot.sessions} sessions in memory`, sessions: health.hot.sessions, approxBytes: health.hot.approxBytes, approxEstimated: health.hot.estimated, rssBytes: memory.rss, heapUsedBytes: memory.heapUsed };
    const j = health.journal;
    let journalWriter: CheckResult;
    if (j.state !== 'open') {
      journalWriter = { status: 'fail', message: `journal is ${j.state}: writes are refused`, ...j };
    } else if (j.queueDepth > 0 && j.lastFlushAgeMs > this.#o.stuckFlushMs) {
      journalWriter = { status: 'fail', message: `${j.queueDepth} records queued and no flush for ${j.lastFlushAgeMs} ms`, ...j };
    } else {
      journalWriter = { status: 'ok', message: `journal open, ${j.queueDepth} records queued`, ...j };
    }
    const [diskSpace, recovery, backendChecks] = await Promise.all([this.disk(), this.#recovery(), this.#backendChecks()]);
    // A failed or dead MCP server warns: its tools are withdrawn, every other tool and the chat keep working.
    const servers = health.tools.mcpServers;
    const down = Object.entries(servers).filter(([, v]) => v.state !== 'connected');
    const tools: CheckResult =
      down.length === 0
        ? { status: 'ok', message: `${health.tools.registered} tools, ${Object.keys(servers).length} MCP servers connected`, registered: health.tools.registered, mcpServers: servers }
        : { status: 'warn', message: `MCP server ${down.map(([name, v]) => `${name} ${v.state}${v.error === undefined ? '' : ` (${v.error})`}`).join(', ')}: its tools are withdrawn`, registered: health.tools.registered, mcpServers: servers };
    const checks = { ...backendChecks, hotStorage, journalWriter, diskSpace, recovery, tools, ...(this.#o.exposure === undefined ? {} : { exposure: this.#o.exposure }) };
    const statuses = Object.values(checks).map((c) => c.status);
    const status = statuses.includes('fail') ? 'fail' : statuses.includes('warn') ? 'warn' : 'ok';
    return { status, checks };
  }

  /**
   * The disk check. `cached`: reuse a reading younger than writeGateMaxAgeMs
   * (what the write gate asks; concurrent writes share one new reading).
   * Without it the disk is read now, and that reading feeds the gate too.
   */
  disk(cached = false): Promise<CheckResult> {
    if (!cached) return this.#readDisk();
    const fresh = this.cachedDisk();
    if (fresh !== undefined) return Promise.resolve(fresh);
    this.#diskRead ??= this.#readDisk().finally(() => {
      this.#diskRead = undefined;
    });
    return this.#diskRead;
  }

  /**
   * The last disk reading while it is younger than writeGateMaxAgeMs, with
   * no I/O and no wait (the write gate's fast path); undefined when it is
   * older, and `disk(true)` must read again.
   */
  cachedDisk(): CheckResult | undefined {
    const r = this.#diskReading;
    return r !== undefined && Date.now() - r.at < this.#o.writeGateMaxAgeMs ? r.result : undefined;
  }

  #readDisk(): Promise<CheckResult> {
    const at = Date.now();
    return this.#disk().then((result) => {
      // Readings may finish out of order: the one that started last wins.
      if (this.#diskReading === undefined || at >= this.#diskReading.at) this.#diskReading = { at, result };
      return result;
    });
  }

  /** The fullest of the filesystems holding the data, journal and snapshot directories. */
  async #disk(): Promise<CheckResult> {
    // On PostgreSQL nothing is written under dataDir: the database watches its own disk.
    if (this.#arbor.backend.kind !== 'file') return { status: 'ok', message: `sessions live in ${this.#arbor.backend.kind}: no local data directory to watch` };
    const dirs = [...new Set([this.#o.dataDir, ...this.#o.extraDirs])];
    let worst: CheckResult | undefined;
    for (const dir of dirs) {
      let result: CheckResult;
      try {
        const s = await this.#o.statfs(dir);
        const usedPercent = Math.round(diskUsagePercent(s) * 10) / 10;
        const status = diskStatus(usedPercent, this.#o.diskWarnPercent, this.#o.diskFailPercent);
        const word = status === 'fail' ? 'critically full' : status === 'warn' ? 'low on space' : 'normal';
        result = { status, message: `disk of ${dir} ${word}: ${usedPercent}% used (warn > ${this.#o.diskWarnPercent}%, fail > ${this.#o.diskFailPercent}%)`, dir, usedPercent, availableBytes: s.bavail * s.bsize };
      } catch (err) {
        result = { status: 'fail', message: `cannot read the disk usage of ${dir}: ${(err as Error).message}`, dir };
      }
      if (worst === undefined || SEVERITY[result.status] > SEVERITY[worst.status] || (result.status === worst.status && Number(result.usedPercent) > Number(worst.usedPercent))) worst = result;
    }
    return worst!;
  }

  /** The backend's own checks (PostgreSQL: the pool, lease renewal); a check that throws is a failed one. */
  async #backendChecks(): Promise<Record<string, CheckResult>> {
    const backend = this.#arbor.backend;
    if (backend.checkHealth === undefined) return {};
    try {
      return await backend.checkHealth();
    } catch (err) {
      return { [backend.kind]: { status: 'fail', message: `the ${backend.kind} health checks failed: ${(err as Error)?.message ?? String(err)}` } };
    }
  }

  /** Recovery progress, and the probe's last result (run at most every probeEveryMs). */
  async #recovery(): Promise<CheckResult> {
    const now = Date.now();
    if (this.#probe === undefined || now - this.#probe.at >= this.#o.probeEveryMs) this.#probe = { at: now, result: this.#runProbe() };
    const probe = await this.#probe.result;
    // Read after the probe, which may have recovered the session it picked.
    const report = this.#arbor.recoveryReport();
    const progress = { pending: report.pending, completedAt: report.completedAt ?? null };
    if (report.pending === 0) return { ...probe, ...progress };
    return { ...probe, ...progress, message: `${probe.message}; recovering: ${report.pending} sessions not recovered yet (each is recovered on first access)` };
  }

  async #runProbe(): Promise<CheckResult> {
    const backend = this.#arbor.backend;
    let sid: string | undefined;
    try {
      // Shared with other nodes: only the sessions this node holds are probed (rebuilt read-only, no lease taken).
      const shared = backend.ownership !== undefined;
      const sessions = shared ? this.#arbor.sessionsInMemory() : await backend.sessionIds();
      if (sessions.length === 0) return { status: 'ok', message: shared ? `this node holds no session of ${backend.kind} yet: nothing to probe` : 'no session stored yet: nothing to recover' };
      sid = sessions[this.#probeCursor++ % sessions.length]!;
      const p = await this.#arbor.probeRecovery(sid);
      const from = backend.kind === 'file' ? 'disk' : backend.kind;
      switch (p.outcome) {
        case 'match':
        case 'moved':
          return { status: 'ok', message: `session ${sid} rebuilt from ${from} at seq ${p.seq} in ${p.durationMs} ms, ${p.outcome === 'match' ? 'equal to the state in memory' : 'while it took new events (seq compared only)'}`, sessionId: sid, seq: p.seq, durationMs: p.durationMs };
        case 'damaged':
          return { status: 'warn', message: `session ${sid} is damaged on ${from} (readable, writes refused)`, sessionId: sid, seq: p.seq, durationMs: p.durationMs };
        default:
          return {
            status: 'fail',
            message: p.message,
            sessionId: sid,
            ...(p.seq === undefined ? {} : { diskSeq: p.seq }),
            ...(p.liveSeq === undefined ? {} : { liveSeq: p.liveSeq }),
            ...(p.path === undefined ? {} : { differsAt: p.path }),
            ...(p.code === undefined ? {} : { code: p.code }),
          };
      }
    } catch (err) {
      return { status: 'fail', message: `the recovery probe failed${sid === undefined ? '' : ` on session ${sid}`}: ${(err as Error).message}`, ...(sid === undefined ? {} : { sessionId: sid }), code: (err as { code?: unknown }).code };
    }
  }
}
