import { ErrorCodes, isArborError, type ErrorCode } from '../index.ts';

/** Codes the HTTP layer adds to ArborError's: stable, like those. */
export const HttpErrorCodes = {
  UNAUTHORIZED: 'ARBOR_UNAUTHORIZED',
  SESSION_NOT_FOUND: 'ARBOR_SESSION_NOT_FOUND',
  SESSION_EXISTS: 'ARBOR_SESSION_EXISTS',
  NOT_FOUND: 'ARBOR_NOT_FOUND',
  INVALID_JSON: 'ARBOR_INVALID_JSON',
  BODY_TOO_LARGE: 'ARBOR_BODY_TOO_LARGE',
  HEADERS_TOO_LARGE: 'ARBOR_HEADERS_TOO_LARGE',
  /** The HTTP parser could not read the request. */
  BAD_REQUEST: 'ARBOR_BAD_REQUEST',
  /** The data disk is full: writes are refused until space returns; reads go on. */
  DISK_FULL: 'ARBOR_DISK_FULL',
  INTERNAL: 'ARBOR_INTERNAL',
  /** A write's body is not JSON (`Content-Type` other than application/json): 415. */
  UNSUPPORTED_MEDIA_TYPE: 'ARBOR_UNSUPPORTED_MEDIA_TYPE',
  /** The `Host` header names no host this server answers to (loopback names, IP addresses, allowedHosts): 403. */
  HOST_NOT_ALLOWED: 'ARBOR_HOST_NOT_ALLOWED',
  /** A page of an origin not in corsOrigins tried to write (or asked a preflight): 403. */
  ORIGIN_NOT_ALLOWED: 'ARBOR_ORIGIN_NOT_ALLOWED',
  /** The request's head or body did not arrive within headersTimeoutMs / requestTimeoutMs: 408, and the connection is closed. */
  REQUEST_TIMEOUT: 'ARBOR_REQUEST_TIMEOUT',
  /** The client went away before its request body arrived: logged at debug, counted as 499 (nobody reads the answer). */
  CLIENT_CLOSED_REQUEST: 'ARBOR_CLIENT_CLOSED_REQUEST',
} as const;

export type HttpErrorCode = (typeof HttpErrorCodes)[keyof typeof HttpErrorCodes];

/** An error the HTTP layer answers with `status` and `{error: {code, message}}`. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: HttpErrorCode | ErrorCode,
    message: string,
    readonly retryAfter = false,
  ) {
    super(message);
  }
}

/**
 * The one table from error codes to HTTP statuses. `retryAfter`: the refusal
 * is temporary and the answer carries `Retry-After`.
 */
export const STATUS_BY_CODE: Readonly<Record<ErrorCode, { status: number; retryAfter: boolean }>> = Object.freeze({
  [ErrorCodes.INVALID_SESSION_ID]: { status: 400, retryAfter: false },
  [ErrorCodes.INVALID_INPUT]: { status: 400, retryAfter: false },
  [ErrorCodes.UNKNOWN_COMMAND]: { status: 400, retryAfter: false },
  [ErrorCodes.SEQ_CONFLICT]: { status: 409, retryAfter: false },
  [ErrorCodes.SESSION_EXISTS]: { status: 409, retryAfter: false },
  [ErrorCodes.NOTHING_TO_RETRY]: { status: 409, retryAfter: false },
  // The idempotency key was used before for another message: like Stripe's, a changed body is refused.
  [ErrorCodes.IDEMPOTENCY_MISMATCH]: { status: 409, retryAfter: false },
  // A damaged session stays readable; its writes wait for an operator's salvage.
  [ErrorCodes.SESSION_QUARANTINED]: { status: 409, retryAfter: false },
  [ErrorCodes.SESSION_STOPPED]: { status: 409, retryAfter: false },
  [ErrorCodes.TOO_LARGE]: { status: 413, retryAfter: false },
  [ErrorCodes.MAILBOX_FULL]: { status: 429, retryAfter: true },
  [ErrorCodes.QUEUE_FULL]: { status: 503, retryAfter: true },
  [ErrorCodes.IO_ERROR]: { status: 503, retryAfter: true },
  [ErrorCodes.JOURNAL_FAILED]: { status: 503, retryAfter: true },
  [ErrorCodes.CLOSED]: { status: 503, retryAfter: true },
  [ErrorCodes.LOCKED]: { status: 503, retryAfter: true },
  [ErrorCodes.HANDLER_CRASHED]: { status: 500, retryAfter: false },
  [ErrorCodes.CORRUPTION]: { status: 500, retryAfter: false },
  [ErrorCodes.PROVIDER_ERROR]: { status: 502, retryAfter: false },
  // Still being recovered after a restart (the server loads before it reads, so this is rare): try again shortly.
  [ErrorCodes.NOT_LOADED]: { status: 503, retryAfter: true },
  [ErrorCodes.RECOVERY_TIMEOUT]: { status: 503, retryAfter: true },
  // Another node owns the session (the router forwards such requests; this is what is left when it cannot).
  [ErrorCodes.NOT_OWNER]: { status: 421, retryAfter: true },
  // This node lost the session while writing: nothing was committed; a retry reaches the new owner.
  [ErrorCodes.FENCED]: { status: 503, retryAfter: true },
  // The CLI's and operations' codes: no request can cause them, so reaching here is a server fault.
  [ErrorCodes.USAGE]: { status: 500, retryAfter: false },
  [ErrorCodes.CONFIG_INVALID]: { status: 500, retryAfter: false },
  [ErrorCodes.OPS_FAILED]: { status: 500, retryAfter: false },
  [ErrorCodes.INVALID_OPTION]: { status: 500, retryAfter: false },
  [ErrorCodes.TOOL_SERVER_FAILED]: { status: 502, retryAfter: false },
  [ErrorCodes.TOOL_CALL_REFUSED]: { status: 409, retryAfter: false },
  [ErrorCodes.NO_SUCH_APPROVAL]: { status: 404, retryAfter: false },
  [ErrorCodes.SESSION_NOT_FOUND]: { status: 404, retryAfter: false },
  [ErrorCodes.ENCRYPTION_KEY]: { status: 500, retryAfter: false },
  // The command may or may not have run; repeating it is the caller's decision, under a new commandId.
  [ErrorCodes.COMMAND_OUTCOME_UNKNOWN]: { status: 409, retryAfter: false },
  // operations only (arbor restore --to): never an HTTP answer
  [ErrorCodes.RESTORE_POINT]: { status: 500, retryAfter: false },
  [ErrorCodes.ARCHIVE_GAP]: { status: 500, retryAfter: false },
});

/** True when `err` or one of its causes is a Node error with `code` (e.g. ENOSPC under an ARBOR_IO_ERROR). */
export function hasErrnoCause(err: unknown, code: string): boolean {
  for (let e: unknown = err, depth = 0; typeof e === 'object' && e !== null && depth < 8; depth += 1) {
    if ((e as { code?: unknown }).code === code) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** The status, body and Retry-After of any error a handler threw. Unknown errors are 500 without their message. */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (isArborError(err)) {
    // A full disk under an I/O failure: 507, and writes come back once space does.
    if ((err.code === ErrorCodes.IO_ERROR || err.code === ErrorCodes.JOURNAL_FAILED) && hasErrnoCause(err, 'ENOSPC')) {
      return new HttpError(507, HttpErrorCodes.DISK_FULL, `the data disk is full; writes are refused until space is freed (${err.message})`, true);
    }
    const entry = STATUS_BY_CODE[err.code] ?? { status: 500, retryAfter: false };
    return new HttpError(entry.status, err.code, err.message, entry.retryAfter);
  }
  return new HttpError(500, HttpErrorCodes.INTERNAL, 'internal error');
}

/** The JSON body of an error answer. */
export function errorBody(err: HttpError): { error: { code: string; message: string } } {
  return { error: { code: err.code, message: err.message } };
}
