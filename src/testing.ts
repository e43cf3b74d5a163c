/**
 * `arbor-runtime/testing`: test doubles and the crash-injection kit, so an
 * application can crash-test its own reducers and handlers the way Arbor's
 * own suite does.
 */
export { MemoryFileSystem, mulberry32, type FaultSpec, type FsOp, type MemoryFileSystemOptions } from './testing/memory-fs.ts';
export { ForwardingFileHandle, ForwardingFileSystem } from './testing/forwarding-fs.ts';
