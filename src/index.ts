/**
 * Arbor's main entry (`import { createArbor } from 'arbor-runtime'`): the
 * runtime API. Test doubles and the crash-injection kit are in
 * `arbor-runtime/testing`, operations tooling in `arbor-runtime/ops`, the HTTP
 * server in `arbor-runtime/server`.
 */
export { createArbor, Arbor, Session, DEFAULT_RUNTIME_OPTIONS, ARBOR_OPTION_NAMES, type ArborOptions, type RuntimeOptions, type ArborHealth, type ArborWritable, type RecoveryProbe } from './runtime.ts';
export type { SessionUpdate, CommandHandler } from './sessions/session-actor.ts';
export type { Chunk } from './sessions/chunk-buffer.ts';
export type { SessionSummary, SessionPage, ListOptions } from './sessions/session-list.ts';
export { DEFAULT_TENANT, MAX_TENANT_SESSION_ID_CHARS, storageSessionId, publicSessionId, isTenantStorageId } from './sessions/tenancy.ts';

export { initialSessionState, reduceSession, pendingInterruption, INTERRUPTED_NOTICE_CONTENT, type SessionState, type Message, type ForkLink } from './core/state.ts';
export { textPart, textParts, textOfParts, findToolPart, appendStreamParts, updateToolPart, type MessagePart, type TextPart, type ReasoningPart, type StepStartPart, type ToolPart, type ToolPartState, type ToolApproval } from './core/state.ts';
export { toUIMessage, toUIPart, toolUIPartType, type UIMessageShape, type UIPartShape } from './core/ui-message.ts';
export { parseEventData, CRITICAL_EVENT_TYPES, RECOVERABLE_EVENT_TYPES, CURRENT_EVENT_VERSION, EventUpcasters, eventUpcasters, type EventType, type EventData } from './core/events.ts';
export type { JournalRecord } from './core/record.ts';
export { ArborError, ErrorCodes, isArborError, type ErrorCode } from './core/errors.ts';
export { assertSessionId, isSessionId, SESSION_ID_PATTERN } from './core/ids.ts';

export { MockProvider } from './llm/mock-provider.ts';
export { AiSdkProvider, LanguageModelProvider, type LanguageModelProviderOptions } from './llm/ai-sdk-provider.ts';
export type { LlmProvider, StreamRequest, ChatTurn, LlmStreamPart, LlmUsage } from './llm/provider.ts';
export { TurnLog, type UIChunk } from './sessions/turn-log.ts';
export { MCP_SERVERS_SCHEMA, parseMcpServers, type McpServerConfig, type McpServerStatus } from './tools/mcp.ts';
export type { ArborTool } from './tools/registry.ts';

export { CHANNELS, subscribeTelemetry, publishToolStep, withTraceParent, currentTraceParent, type TelemetryListeners, type JournalWriteMessage, type SnapshotMessage, type RecoveryMessage, type ErrorMessage, type TurnStartMessage, type LlmTurnMessage, type ToolStepMessage, type TokenUsage, type TurnInterruption, type LeaseMessage } from './telemetry/channels.ts';

// The storage engine on its own (your own events and reducer), and the backend contract.
export type { SessionBackend, BackendOwnership, RecoveredSession, BackendStats, AppendInput, AppendResult, DedupeEntry, StoredSession } from './backend/backend.ts';
export type { Reducer, RecoveryHooks, DraftReducer, ReplayDraft, RecoveryStatus, SessionRecovery, EventUpcaster, StateUpcaster, DamagedSnapshot } from './backend/replay.ts';
export { openStore, Store, type RecoveryReport } from './file/store.ts';
export { DEFAULT_STORE_OPTIONS, resolveStoreOptions, type StoreOptions, type ResolvedStoreOptions } from './file/options.ts';
export type { Durability, JournalOpenReport } from './file/journal/journal.ts';
export type { DamagedRegion, TornTail } from './file/journal/segment-scanner.ts';
export { PgBackend, openPgBackend, DEFAULT_PG_BACKEND_OPTIONS, SCHEMA_NAME_PATTERN, type PgBackendOptions, type PgBackendStats } from './postgres/index.ts';
export type { FileSystem, FileHandle, FileStat, OpenFlags } from './storage/fs-port.ts';
export { NodeFileSystem } from './storage/node-fs.ts';
export { closestName, editDistance } from './core/suggest.ts';
