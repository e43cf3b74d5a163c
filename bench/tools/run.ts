/**
 * Arbor tools benchmark: what the intent log costs a tool step, and what tools
 * cost the time to first chunk — each figure beside its baseline from the same
 * run, measured turn by turn in alternation. See bench/README.md.
 *
 *   node --import tsx bench/tools/run.ts [--tiny] [--json] [--turns N]
 *
 * Goals are judged PASS/FAIL, targets reported; neither fails the run: the
 * exit code is non-zero only when the benchmark itself breaks.
 */
import { open } from 'node:fs/promises';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { tool } from 'ai';
import { z } from 'zod';
import { createArbor, type Arbor, type ArborTool, type LlmProvider, type Session } from '../../src/index.ts';
import { MemoryFileSystem } from '../../src/testing.ts';
import type { ToolStepPart, ToolStepProvider, ToolStepRequest } from '../../src/llm/provider.ts';
import { runMain } from '../lib/cli.ts';
import { maybeGc, progress } from '../lib/phases.ts';
import { benchMeta, fmt, headline, printResults, startRun, table, targetLines, type BenchMeta, type Target } from '../lib/report.ts';
import { Samples } from '../lib/stats.ts';
import { withTempRoot } from '../lib/temp-root.ts';

const USAGE = `usage: node --import tsx bench/tools/run.ts [--tiny] [--json] [--turns N]

  --tiny        a configuration that finishes in a few seconds (CI smoke run)
  --json        print one JSON object on stdout instead of the table
  --turns N     measured turns of each kind (default 300; 20 with --tiny)
`;

interface Config {
  tiny: boolean;
  json: boolean;
  /** measured turns of each kind (after `warmupTurns` unmeasured ones) */
  turns: number;
  warmupTurns: number;
  /** direct calls of the no-op tool */
  directCalls: number;
}

function parseConfig(argv: string[]): Config {
  const { values } = parseArgs({ args: argv, strict: true, options: { tiny: { type: 'boolean', default: false }, json: { type: 'boolean', default: false }, turns: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } } });
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const tiny = values.tiny === true;
  let turns = tiny ? 20 : 300;
  if (values.turns !== undefined) {
    turns = Number(values.turns);
    if (!Number.isSafeInteger(turns) || turns < 1 || turns > 100_000) throw new RangeError(`--turns must be an integer in 1..100000, got ${JSON.stringify(values.turns)}`);
  }
  return { tiny, json: values.json === true, turns, warmupTurns: tiny ? 3 : 30, directCalls: tiny ? 2_000 : 50_000 };
}

// ---- the model and the tool -----------------------------------------------------

/** When the parts of one tool step happened (performance.now() ms). */
interface StepTimes {
  /** the model's step with the tool call finished (its finish part was handed over) */
  callMade?: number;
  /** the tool's execute was entered: tool_call_started was durable */
  toolEntered?: number;
  /** the tool's execute returned */
  toolReturned?: number;
  /** the next model step was asked for: tool_call_finished was durable */
  nextStep?: number;
}

/**
 * A deterministic model with no latency of its own: a message starting with
 * `tool` gets one step that calls `noop`, then (after the result) one text
 * chunk; any other message gets the text chunk at once. Without tools
 * (`stream`) it answers with the same chunk.
 */
class BenchModel implements LlmProvider, ToolStepProvider {
  readonly name = 'bench';
  readonly model = 'bench-1';
  times: StepTimes = {};

  async *stream(): AsyncGenerator<string> {
    yield 'answer';
  }

  async *streamStep(request: ToolStepRequest): AsyncGenerator<ToolStepPart> {
    const messages = request.messages as { role: string; content: unknown }[];
    let last = messages.length - 1;
    while (last >= 0 && messages[last]!.role !== 'user') last -= 1;
    const content = messages[last]?.content;
    const text = typeof content === 'string' ? content : Array.isArray(content) ? content.map((p: { text?: string }) => p.text ?? '').join('') : '';
    const answered = messages.slice(last + 1).some((m) => m.role === 'tool');
    if (text.startsWith('tool') && !answered) {
      yield { type: 'tool-call', toolCallId: `${request.messageId}-1`, toolName: 'noop', input: { n: 1 } };
      this.times.callMade = performance.now();
      yield { type: 'finish', finishReason: 'tool-calls' };
      return;
    }
    if (answered) this.times.nextStep = performance.now();
    yield { type: 'text', text: 'answer' };
    yield { type: 'finish', finishReason: 'stop' };
  }
}

function noopTool(times: () => StepTimes): ArborTool {
  return tool({
    description: 'does nothing',
    inputSchema: z.object({ n: z.number() }),
    execute: async (input: { n: number }) => {
      const t = times();
      t.toolEntered = performance.now();
      const out = { n: input.n };
      t.toolReturned = performance.now();
      return out;
    },
  }) as ArborTool;
}

// ---- measurements ---------------------------------------------------------------

/** One message's turn: from the sendMessage call to its first chunk and to its end. */
async function oneTurn(session: Session, content: string): Promise<{ firstChunkMs: number; turnMs: number }> {
  let first = Number.NaN;
  const t0 = performance.now();
  const off = session.subscribe((u) => {
    if (u.kind === 'chunk' && Number.isNaN(first)) first = performance.now();
  });
  try {
    await session.sendMessage({ content });
    await session.idle();
  } finally {
    off();
  }
  return { firstChunkMs: first - t0, turnMs: performance.now() - t0 };
}

interface Dist {
  p50: number;
  p99: number;
  mean: number;
  samples: number;
}
const dist = (s: Samples): Dist => {
  const { p50, p99, mean } = s.summary();
  return { p50, p99, mean, samples: s.count };
};

interface TurnKinds {
  /** overhead of the tool step: (call made → tool entered) + (tool returned → next model step), ms */
  toolStepOverheadMs: Dist;
  /** two events journaled back to back by plain commands (changeConfig): the journaling a tool step cannot avoid */
  twoCommitsMs: Dist;
  /** the tool's own execute, as it ran inside the step (µs) */
  toolInsideUs: Dist;
  /** time to first chunk: no tools registered (the plain stream path) */
  ttfcNoTools: Dist;
  /** time to first chunk: tools registered, the model answers without calling one */
  ttfcToolsUnused: Dist;
  /** time to first chunk: the model calls the no-op tool first, then answers */
  ttfcToolFirst: Dist;
  /** whole turns: with one tool step, and the same answer without it (tools registered) */
  turnWithToolStep: Dist;
  turnWithoutToolStep: Dist;
  /** process CPU (user + system, all threads) of a turn with one tool step minus that of a turn without, per turn (µs): the step's CPU, its second model step included */
  toolStepCpuUs: number;
}

/**
 * The turns, alternating kind by kind (no tools / tools unused / a tool step)
 * so that a noisy neighbour slows all of them alike. `fs` absent: the real
 * disk under `dir` with durability fsync; a MemoryFileSystem: no disk (CPU only).
 */
async function measureTurns(cfg: Config, dir: string, fs: MemoryFileSystem | undefined, rawSync?: RawSync): Promise<TurnKinds> {
  const plainModel = new BenchModel();
  const toolModel = new BenchModel();
  const open = (name: string, llm: BenchModel, tools: boolean): Promise<Arbor> =>
    createArbor({ dataDir: join(dir, name), durability: 'fsync', llm, ...(fs === undefined ? {} : { fs }), ...(tools ? { tools: { noop: noopTool(() => llm.times) } } : {}) });
  const plain = await open('plain', plainModel, false);
  const tooled = await open('tools', toolModel, true);
  let cpuWith = 0;
  let cpuWithout = 0;
  const s = { commits: new Samples(), overhead: new Samples(), inside: new Samples(), noTools: new Samples(), unused: new Samples(), toolFirst: new Samples(), withStep: new Samples(), withoutStep: new Samples() };
  try {
    const a = plain.session('plain');
    const b = tooled.session('unused');
    const c = tooled.session('stepped');
    const d = plain.session('commits');
    for (let i = 0; i < cfg.warmupTurns + cfg.turns; i += 1) {
      const measured = i >= cfg.warmupTurns;
      if (i % 50 === 0) maybeGc();
      const r1 = await oneTurn(a, `hello ${i}`);
      const cpu0 = process.cpuUsage();
      const r2 = await oneTurn(b, `hello ${i}`);
      const cpu1 = process.cpuUsage();
      toolModel.times = {};
      const r3 = await oneTurn(c, `tool ${i}`);
      const cpu2 = process.cpuUsage();
      const t = toolModel.times;
      // The baselines' samples in the same alternation: two plain commits, and the journal's floor on this disk.
      const c0 = performance.now();
      await d.changeConfig('k', i + 1);
      await d.changeConfig('k', -(i + 1));
      const twoCommits = performance.now() - c0;
      await rawSync?.once(measured);
      if (!measured) continue;
      s.noTools.push(r1.firstChunkMs);
      s.unused.push(r2.firstChunkMs);
      s.toolFirst.push(r3.firstChunkMs);
      s.withoutStep.push(r2.turnMs);
      s.withStep.push(r3.turnMs);
      s.commits.push(twoCommits);
      cpuWith += cpu2.user + cpu2.system - cpu1.user - cpu1.system;
      cpuWithout += cpu1.user + cpu1.system - cpu0.user - cpu0.system;
      if (t.callMade === undefined || t.toolEntered === undefined || t.toolReturned === undefined || t.nextStep === undefined) throw new Error(`turn ${i}: the tool step did not run as planned: ${JSON.stringify(t)}`);
      s.overhead.push(t.toolEntered - t.callMade + (t.nextStep - t.toolReturned));
      s.inside.push((t.toolReturned - t.toolEntered) * 1000);
    }
    const events = (await c.events()).map((e) => e.type);
    if (!events.includes('tool_call_started') || !events.includes('tool_call_finished')) throw new Error('the tool steps were not journaled');
  } finally {
    await plain.close();
    await tooled.close();
  }
  return {
    toolStepOverheadMs: dist(s.overhead),
    twoCommitsMs: dist(s.commits),
    toolInsideUs: dist(s.inside),
    ttfcNoTools: dist(s.noTools),
    ttfcToolsUnused: dist(s.unused),
    ttfcToolFirst: dist(s.toolFirst),
    turnWithToolStep: dist(s.withStep),
    turnWithoutToolStep: dist(s.withoutStep),
    toolStepCpuUs: (cpuWith - cpuWithout) / cfg.turns,
  };
}

/** The no-op tool called directly (what a runtime without an intent log does): µs per call. */
async function measureDirect(cfg: Config): Promise<Dist> {
  const times: StepTimes = {};
  const t = noopTool(() => times);
  const samples = new Samples();
  for (let i = 0; i < cfg.directCalls; i += 1) {
    const t0 = performance.now();
    await t.execute!({ n: 1 }, { toolCallId: `d${i}`, messages: [] });
    samples.push((performance.now() - t0) * 1000);
  }
  return dist(samples);
}

/** The journal's floor on this disk: one ~330-byte write + fdatasync (ms), sampled once per turn of the alternation. */
interface RawSync {
  once(measured: boolean): Promise<void>;
  readonly samples: Samples;
}

async function openRawSync(dir: string): Promise<RawSync & { close(): Promise<void> }> {
  const fh = await open(join(dir, 'raw-sync'), 'a');
  const buf = Buffer.alloc(330, 0x61);
  const samples = new Samples();
  return {
    samples,
    async once(measured) {
      const t0 = performance.now();
      await fh.write(buf);
      await fh.datasync();
      if (measured) samples.push(performance.now() - t0);
    },
    close: () => fh.close(),
  };
}

// ---- report ---------------------------------------------------------------------

interface Goal {
  goal: string;
  status: 'PASS' | 'FAIL';
  figure: string;
  baseline: string;
  ratio: string;
  /** /proc/loadavg (1, 5, 15 min) when judged */
  loadAverage: number[];
}

interface Results {
  meta: BenchMeta<Config>;
  disk: TurnKinds;
  noDisk: TurnKinds;
  directToolUs: Dist;
  rawSyncMs: Dist;
  ratios: {
    /** tool-step overhead p50 on the disk ÷ two events journaled by plain commands p50 */
    toolStepToTwoCommits: number;
    /** tool-step overhead p50 on the disk ÷ one raw write+fdatasync p50 (two durable events: ≈ 2 is the floor) */
    toolStepToRawSync: number;
    /** tool-step overhead p50 on the disk ÷ the direct call p50 */
    toolStepToDirectCall: number;
    /** tool-step overhead p50 with no disk ÷ the direct call p50 (the intent log's own work, wall time) */
    noDiskToolStepToDirectCall: number;
    /** time to first chunk p50: tools registered but unused ÷ no tools */
    ttfcToolsUnusedToNoTools: number;
    /** time to first chunk p50: a tool step first ÷ no tools */
    ttfcToolFirstToNoTools: number;
    /** whole turn p50: with one tool step ÷ without */
    turnWithToolStepToWithout: number;
  };
  goals: Goal[];
  targets: Target[];
}

function judge(r: Omit<Results, 'goals' | 'targets' | 'meta'>): { goals: Goal[]; targets: Target[] } {
  const load = loadavg().map((x) => Math.round(x * 100) / 100);
  const goal = (name: string, ok: boolean, figure: string, baseline: string, ratio: string): Goal => ({ goal: name, status: ok ? 'PASS' : 'FAIL', figure, baseline, ratio, loadAverage: load });
  const d = r.disk;
  const goals = [
    goal(
      'a tool step costs at most 1.5× the journaling it cannot avoid (two events committed by plain commands)',
      r.ratios.toolStepToTwoCommits <= 1.5,
      `tool-step overhead p50 ${fmt(d.toolStepOverheadMs.p50, 3)} ms (p99 ${fmt(d.toolStepOverheadMs.p99, 3)})`,
      `two changeConfig commits p50 ${fmt(d.twoCommitsMs.p50, 3)} ms; raw write+fdatasync p50 ${fmt(r.rawSyncMs.p50, 3)} ms; the no-op tool called directly ${fmt(r.directToolUs.p50, 2)} µs`,
      `${fmt(r.ratios.toolStepToTwoCommits, 2)}× two commits (limit 1.5×); ${fmt(r.ratios.toolStepToRawSync, 2)}× a raw sync; ${fmt(r.ratios.toolStepToDirectCall, 0)}× the direct call`,
    ),
    goal(
      'registering tools adds at most 25% to the time to first chunk of a turn that calls none',
      r.ratios.ttfcToolsUnusedToNoTools <= 1.25,
      `first chunk p50 ${fmt(d.ttfcToolsUnused.p50, 3)} ms with tools registered (p99 ${fmt(d.ttfcToolsUnused.p99, 3)})`,
      `without tools ${fmt(d.ttfcNoTools.p50, 3)} ms (p99 ${fmt(d.ttfcNoTools.p99, 3)})`,
      `${fmt(r.ratios.ttfcToolsUnusedToNoTools, 2)}× (limit 1.25×)`,
    ),
  ];
  const targets: Target[] = [
    { name: 'time to first chunk when the first step calls a tool, vs no tools', status: 'INFO', actual: r.ratios.ttfcToolFirstToNoTools, target: null, detail: `${fmt(d.ttfcToolFirst.p50, 3)} ms vs ${fmt(d.ttfcNoTools.p50, 3)} ms p50 (${fmt(r.ratios.ttfcToolFirstToNoTools, 2)}×): the tool step (two durable events) and a second model step come first` },
    { name: 'process CPU of a tool step (a turn with one, minus a turn without; its second model step included)', status: 'INFO', actual: r.noDisk.toolStepCpuUs, target: null, detail: `${fmt(r.disk.toolStepCpuUs, 0)} µs on the disk, ${fmt(r.noDisk.toolStepCpuUs, 0)} µs without (mean per turn)` },
    { name: 'whole turn with one tool step, vs the same answer without it', status: 'INFO', actual: r.ratios.turnWithToolStepToWithout, target: null, detail: `${fmt(d.turnWithToolStep.p50, 3)} ms vs ${fmt(d.turnWithoutToolStep.p50, 3)} ms p50 (${fmt(r.ratios.turnWithToolStepToWithout, 2)}×)` },
    { name: 'the intent log around a tool with no disk (in-memory filesystem; wall time, so on a loaded machine it includes waits for a core)', status: 'INFO', actual: r.noDisk.toolStepOverheadMs.p50 * 1000, target: null, detail: `${fmt(r.noDisk.toolStepOverheadMs.p50 * 1000, 1)} µs p50 per tool step vs ${fmt(r.directToolUs.p50, 2)} µs for the direct call (${fmt(r.ratios.noDiskToolStepToDirectCall, 0)}×)` },
  ];
  return { goals, targets };
}

function render(r: Results): string {
  const row = (label: string, x: Dist, unit = 'ms'): string[] => [label, `${fmt(x.p50, 3)} ${unit}`, `${fmt(x.p99, 3)} ${unit}`, String(x.samples)];
  const out = [headline('Arbor tools benchmark', r.meta), ''];
  out.push(
    table(
      ['figure (disk, durability fsync)', 'p50', 'p99', 'samples'],
      [
        row('tool-step overhead (intent log around the tool)', r.disk.toolStepOverheadMs),
        row('  baseline: two events by plain commands', r.disk.twoCommitsMs),
        row('  baseline: raw write+fdatasync', r.rawSyncMs),
        row('  baseline: the no-op tool called directly', r.directToolUs, 'µs'),
        row('  the tool inside the step', r.disk.toolInsideUs, 'µs'),
        row('tool-step overhead, no disk (in-memory fs, wall)', r.noDisk.toolStepOverheadMs),
        [`CPU of a tool step (disk / no disk)`, `${fmt(r.disk.toolStepCpuUs, 0)} µs`, `${fmt(r.noDisk.toolStepCpuUs, 0)} µs`, 'mean'],
        row('first chunk: no tools', r.disk.ttfcNoTools),
        row('first chunk: tools registered, none called', r.disk.ttfcToolsUnused),
        row('first chunk: a tool step first', r.disk.ttfcToolFirst),
        row('turn: without a tool step', r.disk.turnWithoutToolStep),
        row('turn: with one tool step', r.disk.turnWithToolStep),
      ],
    ),
    '',
    `Goals (load average ${r.goals[0]?.loadAverage.map((x) => fmt(x, 2)).join(' / ') ?? '?'} over 1 / 5 / 15 min when judged)`,
  );
  for (const g of r.goals) out.push(`  ${g.status.padEnd(4)}  ${g.goal}`, `        figure ${g.figure}; baseline ${g.baseline}; ratio ${g.ratio}`);
  out.push('', ...targetLines(r.targets));
  return out.join('\n');
}

async function main(): Promise<void> {
  let cfg: Config;
  try {
    cfg = parseConfig(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}`);
    process.exitCode = 2;
    return;
  }
  const start = startRun();
  await withTempRoot('arbor-bench-tools-', async (root) => {
    progress(`the no-op tool called directly × ${cfg.directCalls}`);
    const directToolUs = await measureDirect(cfg);
    progress(`turns on the disk: ${cfg.turns} of each kind and raw write+fdatasync, alternating`);
    const raw = await openRawSync(root);
    let disk: TurnKinds;
    try {
      disk = await measureTurns(cfg, join(root, 'disk'), undefined, raw);
    } finally {
      await raw.close();
    }
    const rawSyncMs = dist(raw.samples);
    progress(`turns without a disk: ${cfg.turns} of each kind`);
    const noDisk = await measureTurns(cfg, '/bench', new MemoryFileSystem());
    const ratios = {
      toolStepToTwoCommits: disk.toolStepOverheadMs.p50 / disk.twoCommitsMs.p50,
      toolStepToRawSync: disk.toolStepOverheadMs.p50 / rawSyncMs.p50,
      toolStepToDirectCall: (disk.toolStepOverheadMs.p50 * 1000) / directToolUs.p50,
      noDiskToolStepToDirectCall: (noDisk.toolStepOverheadMs.p50 * 1000) / directToolUs.p50,
      ttfcToolsUnusedToNoTools: disk.ttfcToolsUnused.p50 / disk.ttfcNoTools.p50,
      ttfcToolFirstToNoTools: disk.ttfcToolFirst.p50 / disk.ttfcNoTools.p50,
      turnWithToolStepToWithout: disk.turnWithToolStep.p50 / disk.turnWithoutToolStep.p50,
    };
    const base = { disk, noDisk, directToolUs, rawSyncMs, ratios };
    const results: Results = { meta: benchMeta(cfg, start), ...base, ...judge(base) };
    printResults(cfg, results, render);
  });
}

runMain(main);
