import { posix as path } from 'node:path';
import type { FileSystem } from '../storage/fs-port.ts';
import { hasCode } from '../storage/fs-port.ts';
import { NodeFileSystem } from '../storage/node-fs.ts';

/**
 * Where a data directory keeps its files, as the operations commands see it:
 * the same defaults as the store (`<dataDir>/journals`, `<dataDir>/snapshots`).
 */
export interface DataDirLayout {
  dataDir: string;
  journalDir: string;
  snapshotDir: string;
  fs: FileSystem;
}

export interface LayoutOptions {
  dataDir: string;
  journalDir?: string | undefined;
  snapshotDir?: string | undefined;
  fs?: FileSystem | undefined;
}

export function resolveLayout(o: LayoutOptions): DataDirLayout {
  return {
    dataDir: o.dataDir,
    journalDir: o.journalDir ?? path.join(o.dataDir, 'journals'),
    snapshotDir: o.snapshotDir ?? path.join(o.dataDir, 'snapshots'),
    fs: o.fs ?? new NodeFileSystem(),
  };
}

/** Entry names of a directory, sorted; an empty list when it does not exist. */
export async function listDir(fs: FileSystem, dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).sort();
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return [];
    throw err;
  }
}

/** The file's bytes, or undefined when it vanished (ENOENT): a live server deletes released segments and pruned snapshots. */
export async function readIfPresent(fs: FileSystem, file: string): Promise<Uint8Array | undefined> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
}

export async function exists(fs: FileSystem, p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return false;
    throw err;
  }
}

/** Progress of long work: units done of total (bytes, files or sessions). */
export type ProgressFn = (done: number, total: number) => void;
