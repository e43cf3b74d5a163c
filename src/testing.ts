/**
 * `arbor-runtime/testing`: test doubles and the crash-injection kit, so an
 * application can crash-test its own reducers and handlers the way Arbor's
 * own suite does.
 *
 * In process: `MemoryFileSystem` keeps unsynced bytes apart and produces the
 * disk images a power cut could leave. Across processes: a child opens Arbor
 * on a `KillingFileSystem` (or is killed at a random moment), reports each
 * acknowledged append with `writeLineSync`, and the parent runs it with
 * `runKillChild`, then opens the data directory and checks that nothing it
 * acknowledged is lost.
 */
export { MemoryFileSystem, mulberry32, type FaultSpec, type FsOp, type MemoryFileSystemOptions } from './testing/memory-fs.ts';
export { ForwardingFileHandle, ForwardingFileSystem } from './testing/forwarding-fs.ts';
export { KillingFileSystem } from './testing/killing-fs.ts';
export { KillSwitch, KILL_POINTS, KILL_VARIANTS, isKillPoint, randInt, type KillPoint } from './testing/kill-switch.ts';
export {
  runKillChild,
  killChildProblems,
  describePlan,
  randomPlan,
  CrashViolation,
  type KillPlan,
  type KillChildAck,
  type KillChildRun,
  type RunKillChildOptions,
} from './testing/kill-harness.ts';
export { writeLineSync } from './testing/write-line-sync.ts';
