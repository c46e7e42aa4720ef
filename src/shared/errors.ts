/**
 * Expected failures are typed errors with a stable `code` and a message a user can act on.
 * Broken invariants are assertions (see assert.ts): they are bugs and crash.
 */
export type ShoalErrorCode =
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  | 'NOT_LEADER'
  | 'NO_LEADER'
  | 'UNAVAILABLE'
  | 'TIMEOUT'
  | 'TOO_LARGE'
  | 'CORRUPT_DATA'
  | 'DRIVER_UNAVAILABLE'
  | 'CONFLICT'
  /** No credentials, or ones the cluster does not know (wrong, revoked, expired). */
  | 'UNAUTHENTICATED'
  /** Known credentials that do not allow what was asked. */
  | 'PERMISSION_DENIED'
  | 'INTERNAL';

/** Every code, for checking one that arrives as text (an API answer, a stream frame). */
export const shoalErrorCodes: readonly ShoalErrorCode[] = [
  'INVALID_ARGUMENT',
  'NOT_FOUND',
  'NOT_LEADER',
  'NO_LEADER',
  'UNAVAILABLE',
  'TIMEOUT',
  'TOO_LARGE',
  'CORRUPT_DATA',
  'DRIVER_UNAVAILABLE',
  'CONFLICT',
  'UNAUTHENTICATED',
  'PERMISSION_DENIED',
  'INTERNAL',
];

export function isShoalErrorCode(value: unknown): value is ShoalErrorCode {
  return typeof value === 'string' && (shoalErrorCodes as readonly string[]).includes(value);
}

export class ShoalError extends Error {
  override readonly name = 'ShoalError';
  readonly code: ShoalErrorCode;

  constructor(code: ShoalErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function invalidArgument(message: string): ShoalError {
  return new ShoalError('INVALID_ARGUMENT', message);
}

export function isShoalError(error: unknown, code?: ShoalErrorCode): error is ShoalError {
  return error instanceof ShoalError && (code === undefined || error.code === code);
}

/** The message of anything thrown, for one-line logs. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
