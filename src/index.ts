/**
 * Arbor's public surface. Everything users, the server, the CLI and the
 * end-to-end tests rely on is exported from here.
 */
export { openStore, Store, type RecoveredSession, type RecoveryReport } from './store.ts';
export { DEFAULT_STORE_OPTIONS, resolveStoreOptions, type StoreOptions, type ResolvedStoreOptions } from './options.ts';
export { Journal, type AppendInput, type AppendResult, type Durability, type JournalOpenReport, type DedupeEntry } from './journal/journal.ts';
export type { JournalRecord } from './journal/format.ts';
export type { DamagedRegion, TornTail } from './journal/segment-scanner.ts';
export { SnapshotStore, type DamagedSnapshot } from './snapshot/snapshot-store.ts';
export type { Reducer, RecoveryHooks, RecoveryStatus, SessionRecovery, EventUpcaster, StateUpcaster } from './recovery/recovery.ts';
export { ArborError, ErrorCodes, isArborError, type ErrorCode } from './errors.ts';
export { assertSessionId, isSessionId, SESSION_ID_PATTERN } from './ids.ts';
export type { FileSystem, FileHandle, FileStat, OpenFlags } from './storage/fs-port.ts';
export { NodeFileSystem } from './storage/node-fs.ts';
export { MemoryFileSystem, mulberry32, type FaultSpec, type FsOp, type MemoryFileSystemOptions } from './storage/memory-fs.ts';
export { ForwardingFileHandle, ForwardingFileSystem } from './storage/forwarding-fs.ts';
export { createArbor, Arbor, Session, DEFAULT_RUNTIME_OPTIONS, type ArborOptions, type RuntimeOptions, type ArborHealth } from './runtime.ts';
export type { SessionUpdate, CommandHandler } from './sessions/session.ts';
export type { Chunk } from './sessions/chunk-buffer.ts';
export { initialSessionState, reduceSession, pendingInterruption, INTERRUPTED_NOTICE_CONTENT, type SessionState, type Message } from './core/state.ts';
export { parseEventData, CRITICAL_EVENT_TYPES, RECOVERABLE_EVENT_TYPES, CURRENT_EVENT_VERSION, EventUpcasters, eventUpcasters, type EventType, type EventData } from './core/events.ts';
export { HotTier } from './hot/hot-tier.ts';
export { MockProvider } from './llm/mock-provider.ts';
export { AiSdkProvider } from './llm/ai-sdk-provider.ts';
export type { LlmProvider, StreamRequest, ChatTurn } from './llm/provider.ts';
export { CHANNELS, subscribeTelemetry, type TelemetryListeners, type JournalWriteMessage, type SnapshotMessage, type RecoveryMessage, type ErrorMessage } from './telemetry/channels.ts';
export type { SessionBackend, RecoveredSession as BackendRecoveredSession, BackendStats } from './backend.ts';
export { PgBackend, openPgBackend, DEFAULT_PG_BACKEND_OPTIONS, type PgBackendOptions, type PgBackendStats } from './postgres/index.ts';
export { verifyDataDir, checkSnapshot, type VerifyReport, type VerifyDamage, type VerifiedSegment, type VerifiedSnapshot, type VerifiedSession, type VerifyOptions } from './ops/verify.ts';
export { inspectSession, summarizeEvent, type InspectReport, type InspectOptions, type TimelineEvent, type TimelineSnapshot, type StateSummary } from './ops/inspect.ts';
export { compactDataDir, type CompactOptions, type CompactResult } from './ops/compact.ts';
export { backupDataDir, restoreBackup, readManifest, MANIFEST_FILE, type BackupManifest, type BackupOptions, type BackupResult, type ManifestFile, type RestoreOptions, type RestoreResult } from './ops/backup.ts';
export { readRestoreMarker, writeRestoreMarker, restoreNoticeText, restoreNoticeFor, RESTORE_MARKER_FILE, type RestoreMarker, type RestoreNoticeMetadata } from './ops/restore-marker.ts';
export { OpsError, type OpsErrorKind } from './ops/ops-error.ts';
