/**
 * Arbor journal benchmark: durable append throughput and latency, each figure
 * measured in the same run beside its baseline. See bench/README.md.
 *
 *   node --import tsx bench/journal/run.ts [--tiny] [--peers] [--json] [--seconds S] [--encrypt]
 *
 * --encrypt: also measures encryption at rest (docs/encryption.md) at the
 * largest level, interleaved with the plain store, and reports the ratio.
 *
 * Targets are reported as PASS/MISS lines and never fail the run: the exit
 * code is non-zero only when the benchmark itself breaks.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance, PerformanceObserver } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { ForwardingFileHandle, ForwardingFileSystem } from '../../src/testing.ts';
import { NodeFileSystem, openStore, type FileHandle, type FileStat, type FileSystem, type RecoveryHooks, type Store } from '../../src/index.ts';
import { benchUsage, parseBenchArgs, peersMissingError, readConfig, runMain, type BaseConfig } from '../lib/cli.ts';
import { benchRequire, checkBetterSqlite3 } from '../lib/peers.ts';
import { maybeGc, progress, runInterleaved, sleep, type Phase } from '../lib/phases.ts';
import { benchMeta, fmt, fmtInt, headline, pct, printResults, startRun, table, targetLines, type BenchMeta, type Target } from '../lib/report.ts';
import { Samples } from '../lib/stats.ts';
import { FRAME_HEADER_BYTES, FRAME_LENGTH_OFFSET, SEGMENT_FILE_PATTERN } from '../../src/file/journal/format.ts';
import { withTempRoot } from '../lib/temp-root.ts';

// ---- configuration -----------------------------------------------------------

const USAGE = benchUsage('bench/journal/run.ts', 'also measure peer databases (needs: npm install --prefix bench)', 'measured seconds per closed-/open-loop measurement (default 5; 0.5 with --tiny)');

interface Config extends BaseConfig {
  levels: number[];
  moderateSessions: number;
  moderateRate: number;
  cpuAppends: number;
  cpuWarmupAppends: number;
  /** --encrypt: an encrypted store beside the plain one at the largest level */
  encrypt: boolean;
}

function parseConfig(argv: string[]): Config {
  const base = parseBenchArgs(argv.filter((a) => a !== '--encrypt'), USAGE);
  const { tiny } = base;
  return {
    ...base,
    levels: [1, 100, 1000],
    moderateSessions: 100,
    moderateRate: 2000,
    cpuAppends: tiny ? 10_000 : 200_000,
    cpuWarmupAppends: tiny ? 2_000 : 50_000,
    encrypt: argv.includes('--encrypt'),
  };
}

// ---- the workload ------------------------------------------------------------

const EVENT_TYPE = 'user_message_sent';
/** A realistic chat message, 200 characters. */
const CONTENT = (
  'Hi! I ordered the blue running shoes last Tuesday (order #48213) but the tracking page still says "label created". ' +
  'Could you check whether they shipped, and if not, switch me to express delivery please?'
)
  .padEnd(200, '.')
  .slice(0, 200);
const EVENT_DATA = { content: CONTENT };
const HOOKS: RecoveryHooks<null> = { reducer: (s) => s, initialState: () => null };

function sessionId(i: number): string {
  return `sess-${String(i).padStart(6, '0')}`;
}

// ---- measurement helpers -----------------------------------------------------

interface IoCounters {
  writes: number;
  bytes: number;
  datasyncs: number;
  syncs: number;
  syncDirs: number;
}

/** Delegates to a FileSystem and counts what the journal asks of the disk. Bench-only instrumentation. */
class CountingFileSystem extends ForwardingFileSystem {
  readonly counters: IoCounters = { writes: 0, bytes: 0, datasyncs: 0, syncs: 0, syncDirs: 0 };
  /** durations of `datasync()` calls made while `recording` is on */
  readonly datasyncLatency = new Samples();
  recording = false;
  /** Section 3's per-ack breakdown: every segment write and datasync, timed (whether recording or not). */
  timeline: AckTimeline | undefined;

  snapshot(): IoCounters {
    return { ...this.counters };
  }

  protected override wrapHandle(handle: FileHandle, path: string): FileHandle {
    const fs = this;
    const c = this.counters;
    // A segment is created as `<name>.tmp`, written and synced, then renamed: its handle keeps the temp name.
    const segment = SEGMENT_FILE_PATTERN.test(path.slice(path.lastIndexOf('/') + 1).replace(/\.tmp$/, ''));
    return new (class extends ForwardingFileHandle {
      override async write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
        const tl = segment && position > 0 ? fs.timeline : undefined;
        const t0 = tl === undefined ? 0 : performance.now();
        const n = await super.write(buffer, offset, length, position);
        tl?.write(t0, performance.now(), buffer, offset, n);
        c.writes += 1;
        c.bytes += n;
        return n;
      }
      override async datasync(): Promise<void> {
        c.datasyncs += 1;
        const tl = segment ? fs.timeline : undefined;
        if (!fs.recording && tl === undefined) return super.datasync();
        const t0 = performance.now();
        const sync = tl?.syncStarted(t0);
        try {
          await super.datasync();
        } finally {
          tl?.syncEnded(sync!);
        }
        const t1 = performance.now();
        tl?.syncDone(sync!, t1);
        if (fs.recording) fs.datasyncLatency.push(t1 - t0);
      }
      override sync(): Promise<void> {
        c.syncs += 1;
        return super.sync();
      }
    })(handle);
  }

  override syncDir(path: string): Promise<void> {
    this.counters.syncDirs += 1;
    return super.syncDir(path);
  }
}

/** A FileSystem that stores nothing and settles every call at once: what is left is Arbor's own CPU. */
class NullFileSystem implements FileSystem {
  async open(): Promise<FileHandle> {
    return {
      write: async (_buffer, _offset, length) => length,
      read: async () => 0,
      datasync: async () => undefined,
      sync: async () => undefined,
      truncate: async () => undefined,
      stat: async () => ({ size: 0, mode: 0o600, isFile: true, isDirectory: false }),
      close: async () => undefined,
    };
  }
  async readFile(path: string): Promise<Uint8Array> {
    throw Object.assign(new Error(`ENOENT: null filesystem '${path}'`), { code: 'ENOENT' });
  }
  async readdir(): Promise<string[]> {
    return [];
  }
  async mkdir(): Promise<void> {}
  async rename(): Promise<void> {}
  async unlink(): Promise<void> {}
  async syncDir(): Promise<void> {}
  async stat(): Promise<FileStat> {
    return { size: 0, mode: 0o700, isFile: false, isDirectory: true };
  }
  async chmod(): Promise<void> {}
}

/**
 * The in-memory filesystem of src/storage (another engineer's module): loaded
 * by URL so that this file neither typechecks against nor breaks on its
 * current shape. Falls back to NullFileSystem when it is missing or changed.
 */
async function loadMemoryFileSystem(): Promise<{ name: string; make: () => FileSystem } | undefined> {
  try {
    const mod = (await import(new URL('../../src/testing/memory-fs.ts', import.meta.url).href)) as { MemoryFileSystem?: new () => FileSystem };
    const Ctor = mod.MemoryFileSystem;
    if (typeof Ctor !== 'function') return undefined;
    return { name: 'MemoryFileSystem', make: () => new Ctor() };
  } catch {
    return undefined;
  }
}

/**
 * CPU time of this process's main thread alone (user + system, ms), from
 * /proc/self/task/<pid>/stat on Linux (clock ticks, 10 ms each: read over
 * windows of seconds); undefined elsewhere. Unlike process.cpuUsage() it
 * leaves out V8's GC helpers and the libuv pool, and unlike the event loop's
 * active time it does not count the time the thread waited for a core on a
 * busy machine.
 */
function mainThreadCpuMs(): number | undefined {
  try {
    const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'latin1');
    // Fields after the command name (which may hold spaces), from field 3 on: utime and stime are fields 14 and 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}
const CLOCK_TICKS = 100;

// ---- 1. Arbor, closed loop ----------------------------------------------------

interface ArborClosedResult {
  sessions: number;
  appends: number;
  windowMs: number;
  appendsPerSec: number;
  ackP50Ms: number;
  ackP99Ms: number;
  ackMaxMs: number;
  datasyncs: number;
  syncsPerSec: number;
  avgBatchRecords: number;
  avgBatchBytes: number;
  recordBytes: number;
  /** process CPU (user + system, all threads) per append */
  cpuUsPerAppend: number;
  /** process CPU time / wall time (2.0 = both cores busy) */
  cpuCores: number;
  /** main-thread event loop utilisation (1.0 = saturated) */
  eventLoopUtilization: number;
  /** main-thread busy time (event-loop utilisation's active time, GC pauses included) per append */
  mainThreadUsPerAppend: number;
  /** the main thread's own CPU time per append (Linux /proc; NaN elsewhere) */
  mainThreadCpuUsPerAppend: number;
  /** Arbor's own fdatasync calls, as the journal waited for them */
  datasyncP50Ms: number;
  datasyncP99Ms: number;
}

/** `sessions` sessions, each a closed loop of `await store.append(...)`, on the real disk. */
class ArborClosedPhase implements Phase {
  readonly label: string;
  readonly sessions: number;
  readonly #lat = new Samples();
  #completed = 0;
  #windowMs = 0;
  #datasyncs = 0;
  #bytes = 0;
  #cpuUs = 0;
  #eluActive = 0;
  #eluIdle = 0;
  #mainCpuMs = 0;
  readonly #dir: string;
  readonly #fs: CountingFileSystem;
  readonly #store: Store<null>;

  private constructor(sessions: number, dir: string, fs: CountingFileSystem, store: Store<null>) {
    this.sessions = sessions;
    this.label = `Arbor, ${sessions} session(s), closed loop`;
    this.#dir = dir;
    this.#fs = fs;
    this.#store = store;
  }

  static async open(root: string, sessions: number, encryptionKey?: string): Promise<ArborClosedPhase> {
    const dir = await mkdtemp(join(root, `arbor-closed-${sessions}-`));
    const fs = new CountingFileSystem(new NodeFileSystem());
    const store = await openStore<null>({ dataDir: dir, fs, durability: 'fsync', ...(encryptionKey === undefined ? {} : { encryptionKey }) }, HOOKS);
    const phase = new ArborClosedPhase(sessions, dir, fs, store);
    if (encryptionKey !== undefined) (phase as { label: string }).label = `Arbor encrypted at rest, ${sessions} session(s), closed loop`;
    return phase;
  }

  /** Records and bytes per fdatasync so far (what the raw baseline replays). */
  batch(): { records: number; bytes: number } {
    return { records: this.#completed / Math.max(1, this.#datasyncs), bytes: this.#bytes / Math.max(1, this.#datasyncs) };
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    const store = this.#store;
    let measuring = false;
    let stopping = false;
    let mStart = Number.POSITIVE_INFINITY;
    let failure: unknown;
    const loop = async (sid: string): Promise<void> => {
      // One clock read per append: the instant an ack is seen is also the next append's call (the
      // figures judge the main thread's CPU per append, so the harness keeps its own share small).
      let t0 = performance.now();
      while (!stopping) {
        try {
          await store.append({ sid, type: EVENT_TYPE, data: EVENT_DATA });
        } catch (err) {
          failure ??= err;
          stopping = true;
          return;
        }
        const t1 = performance.now();
        if (measuring) {
          this.#completed += 1;
          if (t0 >= mStart) this.#lat.push(t1 - t0);
        }
        t0 = t1;
      }
    };
    const loops = Array.from({ length: this.sessions }, (_, i) => loop(sessionId(i)));
    await sleep(warmMs);
    const io0 = this.#fs.snapshot();
    const elu0 = performance.eventLoopUtilization();
    const cpu0 = process.cpuUsage();
    const main0 = mainThreadCpuMs();
    mStart = performance.now();
    measuring = true;
    this.#fs.recording = true;
    await sleep(measureMs);
    measuring = false;
    this.#fs.recording = false;
    this.#windowMs += performance.now() - mStart;
    const main1 = mainThreadCpuMs();
    this.#mainCpuMs += main0 === undefined || main1 === undefined ? Number.NaN : main1 - main0;
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0);
    const io1 = this.#fs.snapshot();
    stopping = true;
    await Promise.all(loops);
    if (failure !== undefined) throw failure;
    this.#datasyncs += io1.datasyncs - io0.datasyncs;
    this.#bytes += io1.bytes - io0.bytes;
    this.#cpuUs += cpu.user + cpu.system;
    this.#eluActive += elu.active;
    this.#eluIdle += elu.idle;
  }

  result(): ArborClosedResult {
    const s = this.#lat.summary();
    const n = this.#completed;
    return {
      sessions: this.sessions,
      appends: n,
      windowMs: this.#windowMs,
      appendsPerSec: (n * 1000) / this.#windowMs,
      ackP50Ms: s.p50,
      ackP99Ms: s.p99,
      ackMaxMs: s.max,
      datasyncs: this.#datasyncs,
      syncsPerSec: (this.#datasyncs * 1000) / this.#windowMs,
      avgBatchRecords: n / Math.max(1, this.#datasyncs),
      avgBatchBytes: this.#bytes / Math.max(1, this.#datasyncs),
      recordBytes: this.#bytes / Math.max(1, n),
      cpuUsPerAppend: this.#cpuUs / Math.max(1, n),
      cpuCores: this.#cpuUs / 1000 / this.#windowMs,
      eventLoopUtilization: this.#eluActive / Math.max(1e-9, this.#eluActive + this.#eluIdle),
      mainThreadUsPerAppend: (this.#eluActive * 1000) / Math.max(1, n),
      mainThreadCpuUsPerAppend: (this.#mainCpuMs * 1000) / Math.max(1, n),
      datasyncP50Ms: this.#fs.datasyncLatency.summary().p50,
      datasyncP99Ms: this.#fs.datasyncLatency.summary().p99,
    };
  }

  async close(): Promise<void> {
    try {
      await this.#store.close();
    } finally {
      await rm(this.#dir, { recursive: true, force: true });
    }
  }
}

// ---- 2. the raw ceiling: write + fdatasync in a plain loop ----------------------

interface RawResult {
  batchRecords: number;
  batchBytes: number;
  syncs: number;
  windowMs: number;
  syncsPerSec: number;
  recordsPerSec: number;
  syncP50Ms: number;
  syncP99Ms: number;
  syncMaxMs: number;
}

/**
 * One file, appended to: `fh.write(buffer)` of one batch, then `fh.datasync()`,
 * in a loop. The batch (records and bytes) is read at each slice, so it can
 * follow what Arbor achieved in the slices before.
 */
class RawSyncPhase implements Phase {
  readonly label: string;
  readonly #root: string;
  readonly #batch: () => { records: number; bytes: number };
  readonly #lat = new Samples();
  #records = 0;
  #windowMs = 0;
  #lastBatch = { records: 1, bytes: 1 };
  #dir: string | undefined;
  #fh: Awaited<ReturnType<typeof open>> | undefined;
  #position = 0;

  constructor(root: string, label: string, batch: () => { records: number; bytes: number }) {
    this.#root = root;
    this.label = label;
    this.#batch = batch;
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    if (this.#fh === undefined) {
      this.#dir = await mkdtemp(join(this.#root, 'raw-'));
      this.#fh = await open(join(this.#dir, 'raw.log'), 'w+', 0o600);
    }
    const fh = this.#fh;
    const batch = this.#batch();
    this.#lastBatch = batch;
    const buffer = Buffer.alloc(Math.max(1, Math.round(batch.bytes)), 0x61);
    const warmEnd = performance.now() + warmMs;
    while (performance.now() < warmEnd) {
      await fh.write(buffer, 0, buffer.length, this.#position);
      this.#position += buffer.length;
      await fh.datasync();
    }
    const start = performance.now();
    const end = start + measureMs;
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) break;
      await fh.write(buffer, 0, buffer.length, this.#position);
      this.#position += buffer.length;
      await fh.datasync();
      this.#lat.push(performance.now() - t0);
      this.#records += batch.records;
    }
    this.#windowMs += performance.now() - start;
  }

  result(): RawResult {
    const s = this.#lat.summary();
    return {
      batchRecords: this.#lastBatch.records,
      batchBytes: Math.max(1, Math.round(this.#lastBatch.bytes)),
      syncs: this.#lat.count,
      windowMs: this.#windowMs,
      syncsPerSec: (this.#lat.count * 1000) / this.#windowMs,
      recordsPerSec: (this.#records * 1000) / this.#windowMs,
      syncP50Ms: s.p50,
      syncP99Ms: s.p99,
      syncMaxMs: s.max,
    };
  }

  async close(): Promise<void> {
    await this.#fh?.close();
    if (this.#dir !== undefined) await rm(this.#dir, { recursive: true, force: true });
  }
}

// ---- 3. Arbor at a moderate open-loop rate --------------------------------------

/** A growable series of numbers (no per-sample allocation while measuring). */
class Series {
  #buf = new Float64Array(16384);
  length = 0;
  push(v: number): number {
    if (this.length === this.#buf.length) {
      const bigger = new Float64Array(this.#buf.length * 2);
      bigger.set(this.#buf);
      this.#buf = bigger;
    }
    this.#buf[this.length] = v;
    return this.length++;
  }
  at(i: number): number {
    return this.#buf[i]!;
  }
  set(i: number, v: number): void {
    this.#buf[i] = v;
  }
}

/** Where the p99 acks of section 3 spent their time (means over the acks at or above the p99), and the GC pauses. */
interface AckBreakdown {
  /** acks at or above the p99 */
  p99Acks: number;
  /** from append() to the start of the write carrying the record: waiting for the batch to be cut (a sync slot, the pump's hops) */
  queueMs: number;
  /** the write(2) of its batch, as the event loop saw it (thread-pool round trip, loop delay included) */
  writeMs: number;
  /** from the end of that write to the start of the fdatasync that covers it */
  syncWaitMs: number;
  /** that fdatasync, as the event loop saw it */
  syncMs: number;
  /** from the end of that fdatasync to the caller resuming (an earlier batch's sync, settling, microtasks) */
  settleMs: number;
  /** share of the p99 acks (and of all acks) whose append found a journal fdatasync in flight */
  withSyncInFlight: number;
  allWithSyncInFlight: number;
  /** the same means over all acks */
  all: { queueMs: number; writeMs: number; syncWaitMs: number; syncMs: number; settleMs: number };
  /** V8 GC pauses (perf_hooks 'gc' entries) in the measured windows, and how many p99 acks overlapped one */
  gc: { count: number; totalMs: number; maxMs: number; p99AcksOverlapping: number };
}

/**
 * Section 3's per-ack timeline: each append's call and ack (in call order, which is the journal's order),
 * each segment write (with the frames it carried: the records of one batch) and each fdatasync (with the
 * last write finished when it was called), all timed on the main thread. Bench-only instrumentation.
 */
class AckTimeline {
  readonly #callAt = new Series();
  readonly #ackAt = new Series();
  readonly #counted = new Series();
  readonly #syncsAtCall = new Series();
  readonly #writeStart = new Series();
  readonly #writeEnd = new Series();
  readonly #writeFrames = new Series();
  readonly #syncStart = new Series();
  readonly #syncEnd = new Series();
  readonly #syncAfterWrite = new Series();
  readonly #gcStart = new Series();
  readonly #gcDuration = new Series();
  /** bytes of a frame cut by a short write, still to come in the next write */
  #carry = 0;
  #syncsInFlight = 0;
  recording = false;
  readonly #gcObserver = new PerformanceObserver((list) => {
    if (!this.recording) return;
    for (const e of list.getEntries()) {
      this.#gcStart.push(e.startTime);
      this.#gcDuration.push(e.duration);
    }
  });

  constructor() {
    this.#gcObserver.observe({ entryTypes: ['gc'] });
  }

  stop(): void {
    this.#gcObserver.disconnect();
  }

  /** An append was called (journal order); returns its index for `acked`. */
  called(t: number, counted: boolean): number {
    this.#counted.push(counted ? 1 : 0);
    this.#syncsAtCall.push(this.#syncsInFlight);
    this.#ackAt.push(Number.NaN);
    return this.#callAt.push(t);
  }

  acked(i: number, t: number): void {
    this.#ackAt.set(i, t);
  }

  write(t0: number, t1: number, buffer: Uint8Array, offset: number, length: number): void {
    // Count the complete frames (length field at FRAME_LENGTH_OFFSET of each 8-byte header).
    const view = Buffer.from(buffer.buffer, buffer.byteOffset + offset, length);
    let at = this.#carry;
    let frames = 0;
    while (at + FRAME_HEADER_BYTES <= length) {
      at += FRAME_HEADER_BYTES + view.readUInt32LE(at + FRAME_LENGTH_OFFSET);
      frames += 1;
    }
    this.#carry = at - length;
    if (this.#carry < 0) throw new Error('bench: a write ended inside a frame header; the breakdown cannot follow it');
    this.#writeStart.push(t0);
    this.#writeEnd.push(t1);
    this.#writeFrames.push(frames);
  }

  syncStarted(t0: number): number {
    this.#syncsInFlight += 1;
    this.#syncEnd.push(Number.NaN);
    this.#syncAfterWrite.push(this.#writeEnd.length - 1);
    return this.#syncStart.push(t0);
  }

  syncEnded(_i: number): void {
    this.#syncsInFlight -= 1;
  }

  syncDone(i: number, t1: number): void {
    this.#syncEnd.set(i, t1);
  }

  breakdown(): AckBreakdown {
    // The write carrying each append (frames are written in call order), then the first sync called after that write.
    const n = this.#callAt.length;
    const writeOf = new Int32Array(n).fill(-1);
    for (let w = 0, j = 0; w < this.#writeFrames.length; w += 1) for (let k = 0; k < this.#writeFrames.at(w) && j < n; k += 1) writeOf[j++] = w;
    const syncOfWrite = new Int32Array(this.#writeEnd.length).fill(-1);
    for (let w = 0, x = 0; w < syncOfWrite.length; w += 1) {
      while (x < this.#syncStart.length && this.#syncAfterWrite.at(x) < w) x += 1;
      if (x < this.#syncStart.length) syncOfWrite[w] = x;
    }
    const rows: { lat: number; parts: number[]; inflight: boolean; t0: number; t1: number }[] = [];
    for (let j = 0; j < n; j += 1) {
      const w = writeOf[j]!;
      const x = w < 0 ? -1 : syncOfWrite[w]!;
      const t0 = this.#callAt.at(j);
      const t1 = this.#ackAt.at(j);
      if (this.#counted.at(j) !== 1 || x < 0 || Number.isNaN(t1) || Number.isNaN(this.#syncEnd.at(x))) continue;
      const ws = this.#writeStart.at(w);
      const we = this.#writeEnd.at(w);
      const ss = this.#syncStart.at(x);
      const se = this.#syncEnd.at(x);
      rows.push({ lat: t1 - t0, parts: [ws - t0, we - ws, ss - we, se - ss, t1 - se], inflight: this.#syncsAtCall.at(j) > 0, t0, t1 });
    }
    rows.sort((a, b) => a.lat - b.lat);
    const p99 = rows.length === 0 ? Number.NaN : rows[Math.min(rows.length - 1, Math.max(0, Math.ceil(0.99 * rows.length) - 1))]!.lat;
    const tail = rows.filter((r) => r.lat >= p99);
    const mean = (rs: typeof rows, k: number): number => rs.reduce((sum, r) => sum + r.parts[k]!, 0) / Math.max(1, rs.length);
    const means = (rs: typeof rows) => ({ queueMs: mean(rs, 0), writeMs: mean(rs, 1), syncWaitMs: mean(rs, 2), syncMs: mean(rs, 3), settleMs: mean(rs, 4) });
    let gcTotal = 0;
    let gcMax = 0;
    for (let g = 0; g < this.#gcStart.length; g += 1) {
      gcTotal += this.#gcDuration.at(g);
      gcMax = Math.max(gcMax, this.#gcDuration.at(g));
    }
    const overlapsGc = (r: (typeof rows)[number]): boolean => {
      for (let g = 0; g < this.#gcStart.length; g += 1) if (this.#gcStart.at(g) < r.t1 && this.#gcStart.at(g) + this.#gcDuration.at(g) > r.t0) return true;
      return false;
    };
    return {
      p99Acks: tail.length,
      ...means(tail),
      withSyncInFlight: tail.filter((r) => r.inflight).length / Math.max(1, tail.length),
      allWithSyncInFlight: rows.filter((r) => r.inflight).length / Math.max(1, rows.length),
      all: means(rows),
      gc: { count: this.#gcStart.length, totalMs: gcTotal, maxMs: gcMax, p99AcksOverlapping: tail.filter(overlapsGc).length },
    };
  }
}

interface OpenLoopResult {
  sessions: number;
  targetRate: number;
  achievedRate: number;
  appends: number;
  ackP50Ms: number;
  ackP99Ms: number;
  ackMaxMs: number;
  /** how late the timers fired (a noisy machine shows here) */
  scheduleLagP99Ms: number;
}

/**
 * `sessions` sessions, each calling `append` every sessions/rate seconds
 * (staggered evenly, on an absolute schedule), whether or not its previous
 * append has been acknowledged. Latency is from the call to the resolution.
 */
class OpenLoopPhase implements Phase {
  readonly label: string;
  readonly #cfg: Config;
  readonly #append: (sid: string) => Promise<unknown>;
  readonly #closeTarget: () => Promise<void>;
  readonly #lat = new Samples();
  readonly #lag = new Samples();
  #completed = 0;
  #windowMs = 0;
  onWindow: { start?: () => void; end?: () => void } = {};
  /** Arbor's phase: each append's call and ack also go to the per-ack breakdown. */
  timeline: AckTimeline | undefined;

  constructor(label: string, cfg: Config, append: (sid: string) => Promise<unknown>, close: () => Promise<void>) {
    this.label = label;
    this.#cfg = cfg;
    this.#append = append;
    this.#closeTarget = close;
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    const { moderateSessions: sessions, moderateRate: rate } = this.#cfg;
    const intervalMs = (sessions / rate) * 1000;
    const inFlight = new Set<Promise<unknown>>();
    const timers = new Set<NodeJS.Timeout>();
    let measuring = false;
    let stopping = false;
    let mStart = Number.POSITIVE_INFINITY;
    let failure: unknown;
    const origin = performance.now() + 1;
    const session = (i: number): void => {
      const sid = sessionId(i);
      let k = 0;
      const due = (): number => origin + (i * intervalMs) / sessions + k * intervalMs;
      const arm = (): void => {
        const t = setTimeout(() => {
          timers.delete(t);
          fire();
        }, Math.max(0, due() - performance.now()));
        timers.add(t);
      };
      const fire = (): void => {
        if (stopping) return;
        const t0 = performance.now();
        // An append issued inside the window counts, however late its ack comes (on a loaded machine the
        // slow ones arrive after the window closes: dropping them would bias p99 low, or leave no sample).
        const counted = measuring && t0 >= mStart;
        if (counted) this.#lag.push(t0 - due());
        const j = this.timeline?.called(t0, counted);
        const p = this.#append(sid).then(
          () => {
            const t1 = performance.now();
            if (j !== undefined) this.timeline!.acked(j, t1);
            if (counted) {
              this.#completed += 1;
              this.#lat.push(t1 - t0);
            }
          },
          (err: unknown) => {
            failure ??= err;
            stopping = true;
          },
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
        // A late timer does not shift the later slots; a slot missed by more than a whole interval is skipped.
        k += 1;
        while (due() < performance.now() - intervalMs) k += 1;
        arm();
      };
      arm();
    };
    for (let i = 0; i < sessions; i += 1) session(i);
    await sleep(warmMs);
    this.onWindow.start?.();
    mStart = performance.now();
    measuring = true;
    await sleep(measureMs);
    measuring = false;
    this.#windowMs += performance.now() - mStart;
    this.onWindow.end?.();
    stopping = true;
    for (const t of timers) clearTimeout(t);
    await Promise.all([...inFlight]);
    if (failure !== undefined) throw failure;
  }

  result(): OpenLoopResult {
    const s = this.#lat.summary();
    return {
      sessions: this.#cfg.moderateSessions,
      targetRate: this.#cfg.moderateRate,
      achievedRate: (this.#completed * 1000) / this.#windowMs,
      appends: this.#completed,
      ackP50Ms: s.p50,
      ackP99Ms: s.p99,
      ackMaxMs: s.max,
      scheduleLagP99Ms: this.#lag.summary().p99,
    };
  }

  close(): Promise<void> {
    return this.#closeTarget();
  }
}

async function arborOpenLoopPhase(
  root: string,
  cfg: Config,
): Promise<{ phase: OpenLoopPhase; avgBatchRecords: () => number; datasync: () => { p50: number; p99: number }; breakdown: () => AckBreakdown }> {
  const dir = await mkdtemp(join(root, 'arbor-moderate-'));
  const fs = new CountingFileSystem(new NodeFileSystem());
  const timeline = new AckTimeline();
  fs.timeline = timeline;
  const store = await openStore<null>({ dataDir: dir, fs, durability: 'fsync' }, HOOKS);
  const phase = new OpenLoopPhase(
    `Arbor, moderate open-loop load (${cfg.moderateSessions} sessions, ${cfg.moderateRate}/s)`,
    cfg,
    (sid) => store.append({ sid, type: EVENT_TYPE, data: EVENT_DATA }),
    async () => {
      timeline.stop();
      try {
        await store.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
  phase.timeline = timeline;
  let syncs = 0;
  let io0 = fs.snapshot();
  phase.onWindow = {
    start: () => {
      io0 = fs.snapshot();
      fs.recording = true;
      timeline.recording = true;
    },
    end: () => {
      fs.recording = false;
      timeline.recording = false;
      syncs += fs.snapshot().datasyncs - io0.datasyncs;
    },
  };
  return { phase, avgBatchRecords: () => phase.result().appends / Math.max(1, syncs), datasync: () => fs.datasyncLatency.summary(), breakdown: () => timeline.breakdown() };
}

/**
 * The same open-loop arrivals into the simplest durable writer: one write + fdatasync per append, one at a time,
 * no batching. Besides each append's latency (queueing included), it times each write+fdatasync on its own: the
 * raw single-sync p99 under the same arrivals, idle gaps and timers as Arbor's run.
 */
async function rawOpenLoopPhase(root: string, recordBytes: () => number, cfg: Config): Promise<{ phase: OpenLoopPhase; service: Samples }> {
  const dir = await mkdtemp(join(root, 'raw-moderate-'));
  const fh = await open(join(dir, 'raw.log'), 'w+', 0o600);
  let buffer: Buffer | undefined;
  let position = 0;
  let chain: Promise<unknown> = Promise.resolve();
  const service = new Samples();
  let recording = false;
  const phase = new OpenLoopPhase(
    'raw write+fdatasync per append, same open-loop arrivals',
    cfg,
    () => {
      chain = chain.then(async () => {
        buffer ??= Buffer.alloc(Math.max(1, Math.round(recordBytes())), 0x61);
        const t0 = performance.now();
        await fh.write(buffer, 0, buffer.length, position);
        position += buffer.length;
        await fh.datasync();
        if (recording) service.push(performance.now() - t0);
      });
      return chain;
    },
    async () => {
      try {
        await fh.close();
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    },
  );
  phase.onWindow = { start: () => (recording = true), end: () => (recording = false) };
  return { phase, service };
}

// ---- 4. CPU per append, no disk ------------------------------------------------

interface CpuResult {
  fs: string;
  sessions: number;
  appends: number;
  /** main-thread CPU per append: the smaller of wall time and process CPU time per append (see README) */
  usPerAppend: number;
  wallUsPerAppend: number;
  /** process CPU (user + system, all threads, GC helpers included) per append */
  cpuUsPerAppend: number;
  /** the main thread's own CPU time per append (Linux /proc; NaN elsewhere) */
  mainCpuUsPerAppend: number;
  maxAppendsPerSecPerCore: number;
}

async function cpuCost(fsName: string, makeFs: () => FileSystem, sessions: number, cfg: Config): Promise<CpuResult> {
  maybeGc();
  progress(`CPU per append without a disk: ${fsName}, ${sessions} session(s)`);
  const store = await openStore<null>({ dataDir: '/arbor-bench-cpu', fs: makeFs(), durability: 'fsync' }, HOOKS);
  try {
    const run = async (total: number): Promise<number> => {
      const per = Math.max(1, Math.ceil(total / sessions));
      const loop = async (sid: string): Promise<void> => {
        for (let k = 0; k < per; k += 1) await store.append({ sid, type: EVENT_TYPE, data: EVENT_DATA });
      };
      await Promise.all(Array.from({ length: sessions }, (_, i) => loop(sessionId(i))));
      return per * sessions;
    };
    await run(cfg.cpuWarmupAppends);
    const cpu0 = process.cpuUsage();
    const main0 = mainThreadCpuMs();
    const t0 = performance.now();
    const appends = await run(cfg.cpuAppends);
    const wallUs = (performance.now() - t0) * 1000;
    const cpu = process.cpuUsage(cpu0);
    const main1 = mainThreadCpuMs();
    const mainCpuUsPerAppend = main0 === undefined || main1 === undefined ? Number.NaN : ((main1 - main0) * 1000) / appends;
    const wallUsPerAppend = wallUs / appends;
    const cpuUsPerAppend = (cpu.user + cpu.system) / appends;
    // Wall time over-counts when the process is descheduled (a busy machine); process CPU over-counts
    // V8's helper threads. Both bound the main thread's CPU from above: take the tighter one.
    const usPerAppend = Math.min(wallUsPerAppend, cpuUsPerAppend);
    return { fs: fsName, sessions, appends, usPerAppend, wallUsPerAppend, cpuUsPerAppend, mainCpuUsPerAppend, maxAppendsPerSecPerCore: 1e6 / usPerAppend };
  } finally {
    await store.close();
  }
}

// ---- 5. peers ----------------------------------------------------------------

interface SqliteStatement {
  run(...params: unknown[]): unknown;
  get(...params: unknown[]): unknown;
}
interface SqliteDatabase {
  pragma(source: string, options?: { simple?: boolean }): unknown;
  exec(sql: string): unknown;
  prepare(sql: string): SqliteStatement;
  close(): unknown;
}
type SqliteConstructor = new (file: string) => SqliteDatabase;
type SqliteModule = { Database: SqliteConstructor; version: string };

interface SqliteResult {
  engine: string;
  journalMode: string;
  synchronous: string;
  appends: number;
  appendsPerSec: number;
  ackP50Ms: number;
  ackP99Ms: number;
  ackMaxMs: number;
}

/** better-sqlite3 from bench/node_modules only (it is not a dependency of Arbor). */
async function loadBetterSqlite3(): Promise<SqliteModule> {
  let resolved: string;
  try {
    resolved = benchRequire.resolve('better-sqlite3');
  } catch {
    throw peersMissingError('compiles better-sqlite3, about a minute');
  }
  checkBetterSqlite3();
  const mod = (await import(pathToFileURL(resolved).href)) as { default: SqliteConstructor };
  const pkg = benchRequire('better-sqlite3/package.json') as { version: string };
  return { Database: mod.default, version: pkg.version };
}

/** One transaction per append (autocommit INSERT), WAL, synchronous=FULL, a closed loop over 1,000 session ids. */
class SqlitePhase implements Phase {
  readonly label = 'SQLite (better-sqlite3), WAL, synchronous=FULL, one transaction per append';
  readonly #dir: string;
  readonly #db: SqliteDatabase;
  readonly #insert: SqliteStatement;
  readonly #info: Pick<SqliteResult, 'engine' | 'journalMode' | 'synchronous'>;
  readonly #lat = new Samples();
  readonly #seqs = new Uint32Array(1000);
  #next = 0;
  #windowMs = 0;

  private constructor(dir: string, db: SqliteDatabase, insert: SqliteStatement, info: SqlitePhase['info']) {
    this.#dir = dir;
    this.#db = db;
    this.#insert = insert;
    this.#info = info;
  }

  get info(): Pick<SqliteResult, 'engine' | 'journalMode' | 'synchronous'> {
    return this.#info;
  }

  static async open(root: string, { Database, version }: SqliteModule): Promise<SqlitePhase> {
    const dir = await mkdtemp(join(root, 'sqlite-'));
    const db = new Database(join(dir, 'events.db'));
    const journalMode = String(db.pragma('journal_mode = WAL', { simple: true }));
    db.pragma('synchronous = FULL');
    const synchronous = ['OFF', 'NORMAL', 'FULL', 'EXTRA'][Number(db.pragma('synchronous', { simple: true }))] ?? '?';
    const sqliteVersion = (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
    db.exec('CREATE TABLE events (sid TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (sid, seq))');
    const insert = db.prepare('INSERT INTO events (sid, seq, data) VALUES (?, ?, ?)');
    return new SqlitePhase(dir, db, insert, { engine: `SQLite ${sqliteVersion} (better-sqlite3 ${version})`, journalMode, synchronous });
  }

  #appendOne(): void {
    const i = this.#next;
    this.#next = (i + 1) % this.#seqs.length;
    const seq = (this.#seqs[i] ?? 0) + 1;
    this.#seqs[i] = seq;
    this.#insert.run(sessionId(i), seq, JSON.stringify({ type: EVENT_TYPE, v: 1, ts: Date.now(), data: EVENT_DATA }));
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    const warmEnd = performance.now() + warmMs;
    while (performance.now() < warmEnd) this.#appendOne();
    const start = performance.now();
    const end = start + measureMs;
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) break;
      this.#appendOne();
      this.#lat.push(performance.now() - t0);
    }
    this.#windowMs += performance.now() - start;
  }

  result(): SqliteResult {
    const s = this.#lat.summary();
    return {
      ...this.#info,
      appends: this.#lat.count,
      appendsPerSec: (this.#lat.count * 1000) / this.#windowMs,
      ackP50Ms: s.p50,
      ackP99Ms: s.p99,
      ackMaxMs: s.max,
    };
  }

  async close(): Promise<void> {
    this.#db.close();
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/**
 * The same SQLite baseline through the `sqlite3` shell, for machines without
 * better-sqlite3 in bench/node_modules: one long-lived `sqlite3` process, WAL,
 * synchronous=FULL, autocommit INSERTs (one transaction, one fsync'ed WAL
 * commit each) of the same event over 1,000 session ids. The statements go
 * down its stdin in chunks of `CHUNK`, each followed by a marker SELECT whose
 * answer times the chunk; per-append latencies are the chunk's average (the
 * shell answers per chunk, not per statement).
 */
class SqliteShellPhase implements Phase {
  static readonly CHUNK = 50;
  readonly label = 'SQLite (sqlite3 shell), WAL, synchronous=FULL, one transaction per append';
  readonly #dir: string;
  readonly #child: ChildProcess;
  readonly #lat = new Samples();
  readonly #seqs = new Uint32Array(1000);
  readonly #info: Pick<SqliteResult, 'engine' | 'journalMode' | 'synchronous'>;
  #next = 0;
  #mark = 0;
  #appends = 0;
  #windowMs = 0;
  #out = '';
  #waiting: { mark: string; resolve: () => void } | undefined;

  private constructor(dir: string, child: ChildProcess, info: SqliteShellPhase['info']) {
    this.#dir = dir;
    this.#child = child;
    this.#info = info;
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.#out += d;
      const w = this.#waiting;
      if (w !== undefined && this.#out.includes(w.mark)) {
        this.#out = '';
        this.#waiting = undefined;
        w.resolve();
      }
    });
  }

  get info(): Pick<SqliteResult, 'engine' | 'journalMode' | 'synchronous'> {
    return this.#info;
  }

  /** undefined when no `sqlite3` shell is on the PATH. */
  static async open(root: string): Promise<SqliteShellPhase | undefined> {
    const version = spawnSync('sqlite3', ['-version'], { encoding: 'utf8' });
    if (version.status !== 0 || typeof version.stdout !== 'string') return undefined;
    const dir = await mkdtemp(join(root, 'sqlite-shell-'));
    const child = spawn('sqlite3', ['-batch', join(dir, 'events.db')], { stdio: ['pipe', 'pipe', 'inherit'] });
    const phase = new SqliteShellPhase(dir, child, { engine: `SQLite ${version.stdout.trim().split(' ')[0]} (sqlite3 shell)`, journalMode: 'wal', synchronous: 'FULL' });
    await phase.#run('PRAGMA journal_mode=WAL;\nPRAGMA synchronous=FULL;\nCREATE TABLE events (sid TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT NOT NULL, PRIMARY KEY (sid, seq));\n');
    return phase;
  }

  #run(sql: string): Promise<void> {
    const mark = `mark-${++this.#mark}`;
    return new Promise<void>((resolve, reject) => {
      this.#waiting = { mark, resolve };
      this.#child.once('exit', (code) => reject(new Error(`sqlite3 exited with ${code}`)));
      this.#child.stdin!.write(`${sql}SELECT '${mark}';\n`);
    });
  }

  #chunk(): string {
    let sql = '';
    for (let k = 0; k < SqliteShellPhase.CHUNK; k += 1) {
      const i = this.#next;
      this.#next = (i + 1) % this.#seqs.length;
      const seq = (this.#seqs[i] ?? 0) + 1;
      this.#seqs[i] = seq;
      const json = JSON.stringify({ type: EVENT_TYPE, v: 1, ts: Date.now(), data: EVENT_DATA }).replaceAll("'", "''");
      sql += `INSERT INTO events (sid, seq, data) VALUES ('${sessionId(i)}', ${seq}, '${json}');\n`;
    }
    return sql;
  }

  async slice(warmMs: number, measureMs: number): Promise<void> {
    const warmEnd = performance.now() + warmMs;
    while (performance.now() < warmEnd) await this.#run(this.#chunk());
    const start = performance.now();
    const end = start + measureMs;
    for (;;) {
      const t0 = performance.now();
      if (t0 >= end) break;
      await this.#run(this.#chunk());
      const per = (performance.now() - t0) / SqliteShellPhase.CHUNK;
      for (let k = 0; k < SqliteShellPhase.CHUNK; k += 1) this.#lat.push(per);
      this.#appends += SqliteShellPhase.CHUNK;
    }
    this.#windowMs += performance.now() - start;
  }

  result(): SqliteResult {
    const s = this.#lat.summary();
    return { ...this.#info, appends: this.#appends, appendsPerSec: (this.#appends * 1000) / this.#windowMs, ackP50Ms: s.p50, ackP99Ms: s.p99, ackMaxMs: s.max };
  }

  async close(): Promise<void> {
    this.#child.stdin!.end();
    await new Promise<void>((resolve) => (this.#child.exitCode !== null ? resolve() : this.#child.once('exit', () => resolve())));
    await rm(this.#dir, { recursive: true, force: true });
  }
}

// ---- report ------------------------------------------------------------------

interface Results {
  /** the machine, the configuration and the timing of the run */
  meta: BenchMeta<Config>;
  payload: { type: string; contentChars: number; recordBytes: number };
  arbor: ArborClosedResult[];
  raw: (RawResult & { sessions: number; arborFraction: number })[];
  rawSingle: RawResult;
  moderate: OpenLoopResult & { avgBatchRecords: number; datasyncP50Ms: number; datasyncP99Ms: number; rawSingleP99Ms: number; ratioToRawSingleP99: number; rawOpenLoop: OpenLoopResult; ratioToRawOpenLoopP99: number; rawOpenLoopSyncP50Ms: number; rawOpenLoopSyncP99Ms: number; ratioToRawOpenLoopSyncP99: number; breakdown: AckBreakdown };
  cpu: { primary: CpuResult; batch1: CpuResult; nullFs: CpuResult };
  peers: { skipped: true; reason: string } | { skipped: false; sqlite: SqliteResult; ratioArbor1000ToSqlite: number };
  targets: Target[];
  /** --encrypt: the encrypted store at the largest level, and its appends/s over the plain store's */
  encrypted?: ArborClosedResult & { ratioToPlain: number };
  /** issue 10's goals 2 and 4: figure, baseline from this run, ratio, PASS/FAIL, and the load average when judged */
  goals: Goal[];
}

interface Goal {
  goal: string;
  status: 'PASS' | 'FAIL' | 'SKIP';
  figure: string;
  baseline: string;
  ratio: string;
  /** /proc/loadavg (1, 5, 15 min) when the goals were judged */
  loadAverage: number[];
}

function issueGoals(at1000: ArborClosedResult, raw1000: RawResult, moderate: Results['moderate'], nullFs: CpuResult, peers: Results['peers']): Goal[] {
  const load = loadavg().map((x) => Math.round(x * 100) / 100);
  const goal = (name: string, ok: boolean | undefined, figure: string, baseline: string, ratio: string): Goal => ({ goal: name, status: ok === undefined ? 'SKIP' : ok ? 'PASS' : 'FAIL', figure, baseline, ratio, loadAverage: load });
  const m = moderate;
  return [
    goal(
      '2: moderate-load ack p99 ≤ 2× raw write+fdatasync p99 under the same arrivals',
      m.ratioToRawOpenLoopSyncP99 <= 2,
      `ack p99 ${fmt(m.ackP99Ms, 3)} ms (p50 ${fmt(m.ackP50Ms, 3)}, max ${fmt(m.ackMaxMs, 2)}) at ${fmtInt(m.achievedRate)}/s`,
      `raw write+fdatasync p99 ${fmt(m.rawOpenLoopSyncP99Ms, 3)} ms under the same arrivals`,
      `${fmt(m.ratioToRawOpenLoopSyncP99, 2)}× (limit 2×)`,
    ),
    goal(
      `4a: ≥ 400,000 durable appends/s at ${at1000.sessions} sessions`,
      at1000.appendsPerSec >= 400_000,
      `${fmtInt(at1000.appendsPerSec)} appends/s (${fmt(at1000.avgBatchRecords, 0)} per fdatasync)`,
      `raw write+fdatasync ceiling at that batch ${fmtInt(raw1000.recordsPerSec)} records/s`,
      `${fmt(at1000.appendsPerSec / 400_000, 2)} of the target; ${pct(at1000.appendsPerSec / raw1000.recordsPerSec)} of the ceiling`,
    ),
    ((main) =>
      goal(
        `4b: ≤ 2 µs main-thread CPU per append at ${at1000.sessions} sessions`,
        main <= 2,
        `${fmt(main, 2)} µs ${Number.isFinite(at1000.mainThreadCpuUsPerAppend) ? "of the main thread's own CPU time" : 'main-thread busy time'} per append on the disk (main-thread busy time, waits for a core included: ${fmt(at1000.mainThreadUsPerAppend, 2)} µs; process CPU, all threads: ${fmt(at1000.cpuUsPerAppend, 2)} µs)`,
        `no disk (NullFileSystem): ${fmt(nullFs.usPerAppend, 2)} µs per append (min of wall and process CPU)`,
        `${fmt(main / 2, 2)} of the 2 µs budget`,
      ))(Number.isFinite(at1000.mainThreadCpuUsPerAppend) ? at1000.mainThreadCpuUsPerAppend : at1000.mainThreadUsPerAppend),
    peers.skipped
      ? goal('4c: ≥ 40× SQLite synchronous=FULL', undefined, 'SQLite not measured', peers.reason, '-')
      : goal(
          '4c: ≥ 40× SQLite synchronous=FULL',
          peers.ratioArbor1000ToSqlite >= 40,
          `${fmtInt(at1000.appendsPerSec)} appends/s`,
          `${peers.sqlite.engine}: ${fmtInt(peers.sqlite.appendsPerSec)} appends/s`,
          `${fmt(peers.ratioArbor1000ToSqlite, 1)}× (at least 40×)`,
        ),
  ];
}

function goalLines(goals: Goal[]): string[] {
  const out = [`Goals of issue 10 (load average ${goals[0]?.loadAverage.map((x) => fmt(x, 2)).join(' / ') ?? '?'} over 1 / 5 / 15 min when judged)`];
  for (const g of goals) out.push(`  ${g.status.padEnd(4)}  goal ${g.goal}`, `        figure ${g.figure}; baseline ${g.baseline}; ratio ${g.ratio}`);
  return out;
}

function render(r: Results): string {
  const c = r.meta.config;
  const out: string[] = [];
  out.push(headline('Arbor journal benchmark', r.meta));
  out.push(
    `data in ${r.meta.dataDir}; ${c.seconds} s measured per figure, in ${c.rounds} slice(s) alternating with its baseline's (warm-up ${c.warmupSeconds} s, then ${c.rewarmSeconds} s per slice)${c.tiny ? ' (--tiny)' : ''}; total ${fmt(r.meta.durationSec, 1)} s`,
  );
  out.push(`event: type '${r.payload.type}', data {content: ${r.payload.contentChars} chars} = ${fmtInt(r.payload.recordBytes)} bytes per journal record (frame included)`);
  out.push('');
  out.push(`1+2. Durable appends (durability 'fsync', Store.append, each session a closed loop) beside raw write+fdatasync of the same batch`);
  out.push(
    table(
      ['sessions', 'Arbor appends/s', 'ack p50 ms', 'ack p99 ms', 'its sync p50', 'its sync p99', 'recs/sync', 'KiB/sync', 'CPU µs/append', 'main CPU µs', 'main busy µs', 'cores busy', 'loop busy', 'raw recs/s', 'raw p50 ms', 'raw p99 ms', 'of ceiling'],
      r.arbor.map((a, i) => {
        const raw = r.raw[i]!;
        return [
          String(a.sessions),
          fmtInt(a.appendsPerSec),
          fmt(a.ackP50Ms, 3),
          fmt(a.ackP99Ms, 3),
          fmt(a.datasyncP50Ms, 3),
          fmt(a.datasyncP99Ms, 3),
          fmt(a.avgBatchRecords, 1),
          fmt(a.avgBatchBytes / 1024, 1),
          fmt(a.cpuUsPerAppend, 1),
          fmt(a.mainThreadCpuUsPerAppend, 2),
          fmt(a.mainThreadUsPerAppend, 2),
          fmt(a.cpuCores, 2),
          pct(a.eventLoopUtilization),
          fmtInt(raw.recordsPerSec),
          fmt(raw.syncP50Ms, 3),
          fmt(raw.syncP99Ms, 3),
          pct(raw.arborFraction),
        ];
      }),
    ),
  );
  out.push(`   raw single-record write+fdatasync (${r.rawSingle.batchBytes} B): ${fmtInt(r.rawSingle.syncsPerSec)} syncs/s, p50 ${fmt(r.rawSingle.syncP50Ms, 3)} ms, p99 ${fmt(r.rawSingle.syncP99Ms, 3)} ms`);
  out.push(`   (its sync: Arbor's own fdatasync calls; CPU: process CPU time, all threads; main CPU: the main thread's own CPU time (/proc); main busy: its event-loop active time, waits for a core included; cores busy: process CPU time / wall time; loop busy: main-thread event-loop utilisation)`);
  out.push('');
  const m = r.moderate;
  out.push(`3. Moderate load: open loop, ${m.sessions} sessions × ${fmt(m.targetRate / m.sessions, 0)}/s = ${fmtInt(m.targetRate)} appends/s target`);
  out.push(
    `   achieved ${fmtInt(m.achievedRate)}/s, ack p50 ${fmt(m.ackP50Ms, 3)} ms, p99 ${fmt(m.ackP99Ms, 3)} ms, max ${fmt(m.ackMaxMs, 2)} ms, ${fmt(m.avgBatchRecords, 2)} recs/sync, its fdatasync p50 ${fmt(m.datasyncP50Ms, 3)} ms p99 ${fmt(m.datasyncP99Ms, 3)} ms, timer lag p99 ${fmt(m.scheduleLagP99Ms, 2)} ms`,
  );
  const b = m.breakdown;
  const parts = (x: AckBreakdown['all']): string =>
    `queued ${fmt(x.queueMs, 3)} + write ${fmt(x.writeMs, 3)} + wait for a sync ${fmt(x.syncWaitMs, 3)} + fdatasync ${fmt(x.syncMs, 3)} + settle ${fmt(x.settleMs, 3)} ms`;
  out.push(`   where the time went, mean of the ${fmtInt(b.p99Acks)} acks at or above p99: ${parts(b)}; ${pct(b.withSyncInFlight)} of them arrived with a fdatasync in flight`);
  out.push(`   the same over all acks: ${parts(b.all)}; ${pct(b.allWithSyncInFlight)} arrived with a fdatasync in flight`);
  out.push(`   GC pauses in the measured windows: ${fmtInt(b.gc.count)}, total ${fmt(b.gc.totalMs, 1)} ms, longest ${fmt(b.gc.maxMs, 2)} ms; ${fmtInt(b.gc.p99AcksOverlapping)} of the p99 acks overlapped one`);
  out.push(`   ack p99 / raw single-sync p99 (${fmt(m.rawSingleP99Ms, 3)} ms, closed loop) = ${fmt(m.ratioToRawSingleP99, 2)}×`);
  out.push(`   ack p99 / raw single write+fdatasync p99 timed under the same arrivals (${fmt(m.rawOpenLoopSyncP99Ms, 3)} ms, p50 ${fmt(m.rawOpenLoopSyncP50Ms, 3)} ms) = ${fmt(m.ratioToRawOpenLoopSyncP99, 2)}×`);
  const ro = m.rawOpenLoop;
  out.push(
    `   same arrivals, plain writer without group commit (one write+fdatasync per append, serialized): ${fmtInt(ro.achievedRate)}/s, p50 ${fmt(ro.ackP50Ms, 3)} ms, p99 ${fmt(ro.ackP99Ms, 3)} ms, max ${fmt(ro.ackMaxMs, 2)} ms, timer lag p99 ${fmt(ro.scheduleLagP99Ms, 2)} ms`,
  );
  out.push(`   ack p99 / that baseline's p99 = ${fmt(m.ratioToRawOpenLoopP99, 2)}×`);
  out.push('');
  out.push(`4. CPU per append without a disk (encode + frame + checksum + settle, all on the main thread)`);
  out.push(`   µs/append = min(wall, process CPU) per append: both bound the main thread's CPU from above`);
  out.push(
    table(
      ['filesystem', 'sessions', 'appends', 'µs/append', 'wall µs', 'process CPU µs', 'main-thread CPU µs', 'max appends/s per core'],
      [r.cpu.primary, r.cpu.batch1, r.cpu.nullFs].map((x) => [
        x.fs,
        String(x.sessions),
        fmtInt(x.appends),
        fmt(x.usPerAppend, 2),
        fmt(x.wallUsPerAppend, 2),
        fmt(x.cpuUsPerAppend, 2),
        fmt(x.mainCpuUsPerAppend, 2),
        fmtInt(x.maxAppendsPerSecPerCore),
      ]),
    ),
  );
  out.push('');
  if (r.peers.skipped) {
    out.push(`5. Peers: skipped (${r.peers.reason})`);
  } else {
    const s = r.peers.sqlite;
    out.push(`5. Peers: ${s.engine}, journal_mode=${s.journalMode}, synchronous=${s.synchronous}, one transaction per append, closed loop`);
    out.push(`   ${fmtInt(s.appendsPerSec)} appends/s, p50 ${fmt(s.ackP50Ms, 3)} ms, p99 ${fmt(s.ackP99Ms, 3)} ms; Arbor@1000 sessions / SQLite = ${fmt(r.peers.ratioArbor1000ToSqlite, 1)}×`);
  }
  out.push('');
  out.push(...targetLines(r.targets));
  out.push('');
  out.push(...goalLines(r.goals));
  return out.join('\n');
}

// ---- main --------------------------------------------------------------------

async function main(): Promise<void> {
  const cfg = readConfig(parseConfig, USAGE);
  if (cfg === undefined) return;
  // Fail before the long measurements, not after them, when the peers are not installed.
  const sqlite = cfg.peers ? await loadBetterSqlite3() : undefined;
  const start = startRun();
  await withTempRoot('arbor-bench-', async (root) => {
    const arbor: ArborClosedResult[] = [];
    const raw: Results['raw'] = [];
    let sqliteResult: SqliteResult | undefined;
    let encrypted: Results['encrypted'];
    const top = Math.max(...cfg.levels);
    for (const sessions of cfg.levels) {
      // Arbor and the raw loop at Arbor's batch, slice by slice (and SQLite beside the largest level).
      const a = await ArborClosedPhase.open(root, sessions);
      const w = new RawSyncPhase(root, `raw write+fdatasync at Arbor's ${sessions}-session batch`, () => a.batch());
      // SQLite beside the largest level: better-sqlite3 with --peers, else the sqlite3 shell when there is one (not with --tiny).
      const s: (Phase & { result(): SqliteResult }) | undefined =
        sessions !== top ? undefined : sqlite !== undefined ? await SqlitePhase.open(root, sqlite) : cfg.tiny ? undefined : await SqliteShellPhase.open(root);
      const e = cfg.encrypt && sessions === top ? await ArborClosedPhase.open(root, sessions, randomBytes(32).toString('base64')) : undefined;
      await runInterleaved(cfg, [a, w, ...(s === undefined ? [] : [s]), ...(e === undefined ? [] : [e])]);
      const ar = a.result();
      if (e !== undefined) encrypted = { ...e.result(), ratioToPlain: e.result().appendsPerSec / ar.appendsPerSec };
      const wr = w.result();
      arbor.push(ar);
      raw.push({ ...wr, sessions, arborFraction: ar.appendsPerSec / wr.recordsPerSec });
      if (s !== undefined) sqliteResult = s.result();
    }
    const recordBytes = Math.round(arbor.at(-1)!.recordBytes);

    // Moderate load, beside the raw single-record sync and the same arrivals into a writer without group commit.
    const single = new RawSyncPhase(root, `raw single-record write+fdatasync (${recordBytes} B)`, () => ({ records: 1, bytes: recordBytes }));
    const mod = await arborOpenLoopPhase(root, cfg);
    const rawOpen = await rawOpenLoopPhase(root, () => recordBytes, cfg);
    await runInterleaved(cfg, [single, mod.phase, rawOpen.phase]);
    const rawSingle = single.result();
    const modResult = mod.phase.result();
    const rawOpenResult = rawOpen.phase.result();
    const rawOpenService = rawOpen.service.summary();
    const moderate: Results['moderate'] = {
      ...modResult,
      avgBatchRecords: mod.avgBatchRecords(),
      datasyncP50Ms: mod.datasync().p50,
      datasyncP99Ms: mod.datasync().p99,
      rawSingleP99Ms: rawSingle.syncP99Ms,
      ratioToRawSingleP99: modResult.ackP99Ms / rawSingle.syncP99Ms,
      rawOpenLoop: rawOpenResult,
      ratioToRawOpenLoopP99: modResult.ackP99Ms / rawOpenResult.ackP99Ms,
      rawOpenLoopSyncP50Ms: rawOpenService.p50,
      rawOpenLoopSyncP99Ms: rawOpenService.p99,
      ratioToRawOpenLoopSyncP99: modResult.ackP99Ms / rawOpenService.p99,
      breakdown: mod.breakdown(),
    };

    let primaryFs = (await loadMemoryFileSystem()) ?? { name: 'NullFileSystem', make: () => new NullFileSystem() };
    let primary: CpuResult;
    try {
      primary = await cpuCost(primaryFs.name, primaryFs.make, 1000, cfg);
    } catch (err) {
      // Another engineer's module in flux must not break the benchmark: measure without it, and say so.
      progress(`${primaryFs.name} failed (${(err as Error).message}); using NullFileSystem`);
      primaryFs = { name: `NullFileSystem (${primaryFs.name} failed)`, make: () => new NullFileSystem() };
      primary = await cpuCost(primaryFs.name, primaryFs.make, 1000, cfg);
    }
    const batch1 = await cpuCost(primaryFs.name, primaryFs.make, 1, cfg);
    const nullFs = await cpuCost('NullFileSystem', () => new NullFileSystem(), 1000, cfg);

    const peers: Results['peers'] =
      sqliteResult === undefined
        ? { skipped: true, reason: cfg.tiny ? 'not with --tiny' : 'no sqlite3 shell on the PATH; run with --peers after `npm install --prefix bench` to compare with SQLite through better-sqlite3' }
        : { skipped: false, sqlite: sqliteResult, ratioArbor1000ToSqlite: arbor.at(-1)!.appendsPerSec / sqliteResult.appendsPerSec };

    const at1000 = arbor.find((a) => a.sessions === 1000) ?? arbor.at(-1)!;
    const targets: Target[] = [];
    targets.push({
      name: `durable appends/s at ${at1000.sessions} sessions ≥ 400,000`,
      status: at1000.appendsPerSec >= 400_000 ? 'PASS' : 'MISS',
      actual: at1000.appendsPerSec,
      target: 400_000,
      detail: `${fmtInt(at1000.appendsPerSec)}/s (${fmt(at1000.appendsPerSec / 400_000, 2)} of target)`,
    });
    if (peers.skipped) {
      targets.push({ name: '≥ 40× SQLite FULL', status: 'SKIP', actual: null, target: 40, detail: `SQLite not measured (${peers.reason})` });
    } else {
      targets.push({
        name: '≥ 40× SQLite FULL',
        status: peers.ratioArbor1000ToSqlite >= 40 ? 'PASS' : 'MISS',
        actual: peers.ratioArbor1000ToSqlite,
        target: 40,
        detail: `${fmt(peers.ratioArbor1000ToSqlite, 1)}× (${fmtInt(at1000.appendsPerSec)} vs ${fmtInt(peers.sqlite.appendsPerSec)} appends/s)`,
      });
    }
    targets.push({
      name: 'moderate-load ack p99 ≤ 2× raw single-sync p99 (raw synced back to back)',
      status: moderate.ratioToRawSingleP99 <= 2 ? 'PASS' : 'MISS',
      actual: moderate.ratioToRawSingleP99,
      target: 2,
      detail: `${fmt(moderate.ratioToRawSingleP99, 2)}× (${fmt(moderate.ackP99Ms, 3)} ms vs ${fmt(moderate.rawSingleP99Ms, 3)} ms)`,
    });
    targets.push({
      name: 'moderate-load ack p99 ≤ 2× raw single-sync p99 (raw timed under the same arrivals)',
      status: moderate.ratioToRawOpenLoopSyncP99 <= 2 ? 'PASS' : 'MISS',
      actual: moderate.ratioToRawOpenLoopSyncP99,
      target: 2,
      detail: `${fmt(moderate.ratioToRawOpenLoopSyncP99, 2)}× (${fmt(moderate.ackP99Ms, 3)} ms vs ${fmt(moderate.rawOpenLoopSyncP99Ms, 3)} ms)`,
    });
    if (encrypted !== undefined) {
      const fewer = 1 - encrypted.ratioToPlain;
      targets.push({
        name: `encryption at rest costs ≤ 15% of appends/s at ${encrypted.sessions} sessions`,
        status: fewer <= 0.15 ? 'PASS' : 'MISS',
        actual: fewer,
        target: 0.15,
        detail: `${pct(fewer)} fewer (${fmtInt(encrypted.appendsPerSec)} vs ${fmtInt(at1000.appendsPerSec)} appends/s, interleaved in the same run)`,
      });
    }
    for (const w of raw) {
      targets.push({
        name: `fraction of the raw ceiling at ${w.sessions} session(s)`,
        status: 'INFO',
        actual: w.arborFraction,
        target: null,
        detail: `${pct(w.arborFraction)} (${fmtInt(arbor.find((a) => a.sessions === w.sessions)!.appendsPerSec)} of ${fmtInt(w.recordsPerSec)} records/s at ${fmt(w.batchRecords, 1)} records per sync; no threshold set)`,
      });
    }

    const goals = issueGoals(at1000, raw.find((w) => w.sessions === at1000.sessions)!, moderate, nullFs, peers);

    const results: Results = {
      meta: benchMeta(cfg, start),
      payload: { type: EVENT_TYPE, contentChars: CONTENT.length, recordBytes },
      arbor,
      raw,
      rawSingle,
      moderate,
      cpu: { primary, batch1, nullFs },
      peers,
      targets,
      goals,
      ...(encrypted === undefined ? {} : { encrypted }),
    };
    printResults(cfg, results, render);
  });
}

runMain(main);
