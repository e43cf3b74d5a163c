/**
 * Runtime failures carry a stable `code`; messages may change between versions,
 * codes do not. Tests and callers branch on `code`, never on the message.
 */
export const ErrorCodes = {
  /** The journal's bounded queue is full; retry later. Nothing was written. */
  QUEUE_FULL: 'ARBOR_QUEUE_FULL',
  /** `expectedSeq` did not match the session's last sequence number. Nothing was written. */
  SEQ_CONFLICT: 'ARBOR_SEQ_CONFLICT',
  /** A write or sync failed earlier; the journal refuses everything until it is reopened. */
  JOURNAL_FAILED: 'ARBOR_JOURNAL_FAILED',
  /** An I/O call failed while writing; the append was not acknowledged. */
  IO_ERROR: 'ARBOR_IO_ERROR',
  /** The store is closed (or closing). */
  CLOSED: 'ARBOR_CLOSED',
  /** Another live process holds the data directory's lock. */
  LOCKED: 'ARBOR_LOCKED',
  /** A session id that is not allowed (it would never become a path). */
  INVALID_SESSION_ID: 'ARBOR_INVALID_SESSION_ID',
  /** Input failed validation; `details.field` names the field. */
  INVALID_INPUT: 'ARBOR_INVALID_INPUT',
  /** The session's history is damaged; it is readable but refuses writes until salvaged. */
  SESSION_QUARANTINED: 'ARBOR_SESSION_QUARANTINED',
  /** Bytes on disk that fail their checksum or framing. `details` has file and offset. */
  CORRUPTION: 'ARBOR_CORRUPTION',
  /** A record or snapshot larger than the configured limit. */
  TOO_LARGE: 'ARBOR_TOO_LARGE',
  /** A session's mailbox is full; retry later. Nothing was done. */
  MAILBOX_FULL: 'ARBOR_MAILBOX_FULL',
  /** The session crashed too often within the restart window and was stopped. */
  SESSION_STOPPED: 'ARBOR_SESSION_STOPPED',
  /** A command handler threw; the session was restarted from its last committed state. */
  HANDLER_CRASHED: 'ARBOR_HANDLER_CRASHED',
  /** The LLM provider failed; the turn ended with `stream_interrupted` and can be retried. */
  PROVIDER_ERROR: 'ARBOR_PROVIDER_ERROR',
  /** `retry()` found no answer to regenerate. */
  NOTHING_TO_RETRY: 'ARBOR_NOTHING_TO_RETRY',
  /** An unknown command name for `executeCommand`. */
  UNKNOWN_COMMAND: 'ARBOR_UNKNOWN_COMMAND',
  /** The session is still being recovered after a restart; `await session.load()` first. */
  NOT_LOADED: 'ARBOR_NOT_LOADED',
  /** Another live process owns the session (multi-node backends); `details.owner` names it. Nothing was written. */
  NOT_OWNER: 'ARBOR_NOT_OWNER',
  /** This process lost the session's lease (another process took it over); the write was not committed. */
  FENCED: 'ARBOR_FENCED',
  /** A bad argument or option of a command (the CLI exits 2); `details` names it. Nothing was done. */
  USAGE: 'ARBOR_USAGE',
  /** The configuration is invalid (the CLI exits 2); `details.problems` lists each option with its source. */
  CONFIG_INVALID: 'ARBOR_CONFIG_INVALID',
  /** An operations command (backup, restore, inspect, bench…) could not do its work; `details` names what. */
  OPS_FAILED: 'ARBOR_OPS_FAILED',
  /** Loading the session took longer than `recoveryTimeoutMs`: the load was abandoned, the next access tries again. */
  RECOVERY_TIMEOUT: 'ARBOR_RECOVERY_TIMEOUT',
  /** A `clientMessageId` came again with different content: refused (the original stays); the same content returns the original. */
  IDEMPOTENCY_MISMATCH: 'ARBOR_IDEMPOTENCY_MISMATCH',
  /** An option of `createArbor` that is unknown or of the wrong shape; `details.option` names it. Nothing was opened. */
  INVALID_OPTION: 'ARBOR_INVALID_OPTION',
  /** A session with this id already exists (creating or forking into it). Nothing was written. */
  SESSION_EXISTS: 'ARBOR_SESSION_EXISTS',
  /** An MCP server failed to start or died; its tools were withdrawn, the others keep working. */
  TOOL_SERVER_FAILED: 'ARBOR_TOOL_SERVER_FAILED',
  /** A tool call was refused without running: denied, or a repeat of a call that is not safe to repeat (`details.reason`). */
  TOOL_CALL_REFUSED: 'ARBOR_TOOL_CALL_REFUSED',
  /** No pending tool approval with this id (or toolCallId) in the session. */
  NO_SUCH_APPROVAL: 'ARBOR_NO_SUCH_APPROVAL',
  /** The session does not exist (never written, or deleted). */
  SESSION_NOT_FOUND: 'ARBOR_SESSION_NOT_FOUND',
  /** A command retried with the `commandId` of one whose outcome is unknown (the process stopped while its handler ran): it is not run again. */
  COMMAND_OUTCOME_UNKNOWN: 'ARBOR_COMMAND_OUTCOME_UNKNOWN',
  /** The encryption key is missing, malformed, or not the one the data was written with; `details.source` names where it came from. Nothing was written. */
  ENCRYPTION_KEY: 'ARBOR_ENCRYPTION_KEY',
  /** `arbor restore --to`: the point is before the backup's own point or beyond what the archive covers; `details` has the value and the covered range. Nothing was written. */
  RESTORE_POINT: 'ARBOR_RESTORE_POINT',
  /** `arbor restore --to`: a journal segment the restore needs is missing from the archive; `details.segment` names it. Nothing was written. */
  ARCHIVE_GAP: 'ARBOR_ARCHIVE_GAP',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

/** The one error class for runtime failures. `details` names what failed (session, file, offset, seq). */
export class ArborError extends Error {
  override readonly name = 'ArborError';
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.details = Object.freeze({ ...details });
  }
}

/** True when `err` is an ArborError with the given code. */
export function isArborError(err: unknown, code?: ErrorCode): err is ArborError {
  return err instanceof ArborError && (code === undefined || err.code === code);
}
