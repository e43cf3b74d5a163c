/**
 * `arbor-runtime/ops`: the operations behind `arbor verify`, `inspect`,
 * `compact`, `backup`, `restore` and `bench`, for tooling of your own.
 * They work on a file data directory that no running Arbor holds.
 */
export { verifyDataDir, checkSnapshot, type VerifyReport, type VerifyDamage, type VerifiedSegment, type VerifiedSnapshot, type VerifiedSession, type VerifyOptions } from './ops/verify.ts';
export { inspectSession, summarizeEvent, type InspectReport, type InspectOptions, type TimelineEvent, type TimelineSnapshot, type StateSummary } from './ops/inspect.ts';
export { compactDataDir, type CompactOptions, type CompactResult } from './ops/compact.ts';
export { backupDataDir, restoreBackup, readManifest, MANIFEST_FILE, type BackupManifest, type BackupOptions, type BackupResult, type ManifestFile, type RestoreOptions, type RestoreResult } from './ops/backup.ts';
export { restoreToPoint, pitrNoticeText, type PointInTimeRestoreOptions, type PointInTimeRestoreResult } from './ops/pitr.ts';
export { readArchive, ARCHIVE_META_SUFFIX, type ArchivedSegmentMeta } from './file/journal-archive.ts';
export { readRestoreMarker, writeRestoreMarker, restoreNoticeText, restoreNoticeFor, RESTORE_MARKER_FILE, type RestoreMarker, type RestoreNoticeMetadata } from './file/restore-marker.ts';
export { BENCHMARKS, PEERS_HINT, runBenchmarks, sourceRoot, type BenchmarkName } from './ops/bench.ts';
export { exists as pathExists } from './ops/layout.ts';
export { rotateEncryptionKey, type RotateKeyOptions, type KeyOptions } from './ops/keys.ts';
