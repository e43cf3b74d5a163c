/**
 * Failures of the operations commands. `usage` errors (a bad argument or
 * option value) make the CLI exit 2; `failed` ones exit 1. `details` names
 * what failed: the file, offset, session or option.
 */
export type OpsErrorKind = 'usage' | 'failed';

export class OpsError extends Error {
  override readonly name = 'OpsError';
  readonly kind: OpsErrorKind;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(kind: OpsErrorKind, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.kind = kind;
    this.details = Object.freeze({ ...details });
  }
}
