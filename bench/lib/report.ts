/** Report pieces shared by the benchmarks: number formats, the table printer, targets, run metadata and the output. */
import { arch, cpus, loadavg, platform, release, tmpdir } from 'node:os';
import { performance } from 'node:perf_hooks';

export const fmtInt = (n: number): string => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : 'n/a');
export const fmt = (n: number, digits = 2): string => (Number.isFinite(n) ? n.toFixed(digits) : 'n/a');
export const pct = (n: number): string => (Number.isFinite(n) ? `${(n * 100).toFixed(0)}%` : 'n/a');
export const kib = (n: number): string => (Number.isFinite(n) ? `${fmtInt(n / 1024)} KiB` : 'n/a');
export const mib = (n: number): string => (Number.isFinite(n) ? `${fmt(n / 1048576, 1)} MiB` : 'n/a');
export const bytesShort = (n: number): string => (n >= 10 * 1048576 ? mib(n) : kib(n));

/** A plain-text table: the first column left-aligned, the others right-aligned. */
export function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

/** A target line: reported, never enforced. */
export interface Target {
  name: string;
  status: 'PASS' | 'MISS' | 'SKIP' | 'INFO';
  actual: number | null;
  target: number | null;
  detail: string;
}

/** The closing section of a report: one line per target. */
export function targetLines(targets: Target[]): string[] {
  const out = ['Targets (reported, never enforced)'];
  for (const t of targets) out.push(`  ${t.status.padEnd(4)}  ${t.name}: ${t.detail}`);
  return out;
}

export interface BenchMeta<C> {
  node: string;
  platform: string;
  cpus: number;
  cpuModel: string;
  dataDir: string;
  /** 1-minute load average when the run started and when it ended: how shared the machine was */
  loadAverage: { start: number; end: number };
  config: C;
  startedAt: string;
  durationSec: number;
}

/** When a run started, and the load average then. */
export interface RunStart {
  started: number;
  load0: number;
}

export function startRun(): RunStart {
  return { started: performance.now(), load0: loadavg()[0] ?? 0 };
}

/** The machine, the configuration and the timing of a run that began at `start`. */
export function benchMeta<C>(config: C, start: RunStart): BenchMeta<C> {
  return {
    node: process.version,
    platform: `${platform()} ${release()} ${arch()}`,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    dataDir: tmpdir(),
    loadAverage: { start: start.load0, end: loadavg()[0] ?? 0 },
    config,
    startedAt: new Date(Date.now() - (performance.now() - start.started)).toISOString(),
    durationSec: (performance.now() - start.started) / 1000,
  };
}

/** The first line of a report: which benchmark, on what machine, how loaded. */
export function headline(title: string, meta: BenchMeta<unknown>): string {
  return `${title} — node ${meta.node}, ${meta.platform}, ${meta.cpus} CPUs (${meta.cpuModel}), load average ${fmt(meta.loadAverage.start, 2)} → ${fmt(meta.loadAverage.end, 2)}`;
}

/** Writes the results to stdout: JSON with --json, else the rendered tables. */
export function printResults<R>(cfg: { json: boolean }, results: R, render: (r: R) => string): void {
  process.stdout.write(cfg.json ? `${JSON.stringify(results, null, 2)}\n` : `${render(results)}\n`);
}
