/**
 * The frameworks' expected failures: one `FrameworkError` class whose `frameworkCode` names the condition
 * (stable, for programs) and whose `code` is the shoal code the API maps to an HTTP status. Messages are one
 * line a framework's author can act on. In: a code and a message. Out: an error, thrown or returned. Broken
 * invariants are assertions (shared/assert.ts), never these.
 */
import { ShoalError, type ShoalErrorCode } from '../shared/errors.ts';

/** Each condition, with the shoal code it travels as. */
export const frameworkErrorCodes = {
  /** SUBSCRIBE's framework info breaks a rule (name, role, priority, failover timeout). */
  FRAMEWORK_INVALID: 'INVALID_ARGUMENT',
  /** No framework with that id is registered (never was, torn down, or its failover timeout passed). */
  FRAMEWORK_UNKNOWN: 'NOT_FOUND',
  /** A new subscription chose an id that a registered framework has. */
  FRAMEWORK_EXISTS: 'CONFLICT',
  /** A re-subscription changes what cannot change: the role or the user its tasks run under. */
  FRAMEWORK_MISMATCH: 'CONFLICT',
  /** An expiry proposed for a framework that is connected again or whose timeout has not passed. */
  FRAMEWORK_NOT_EXPIRED: 'CONFLICT',
  /** `frameworksMax` are registered. */
  FRAMEWORKS_FULL: 'TOO_LARGE',
  /** A call from a framework without a subscription on this leader. */
  NOT_SUBSCRIBED: 'PERMISSION_DENIED',
  /** A call's field is out of range (a negative refuse_seconds, an empty offer list). */
  CALL_INVALID: 'INVALID_ARGUMENT',
  /** The offer book's settings are out of range. */
  CONFIG_INVALID: 'INVALID_ARGUMENT',
  /** An offer that is not outstanding: it was used, declined, rescinded, or made by another leader. */
  OFFER_UNKNOWN: 'NOT_FOUND',
  /** An offer made to another framework. */
  OFFER_NOT_OWNED: 'PERMISSION_DENIED',
  /** An offer past its timeout, not yet rescinded. */
  OFFER_EXPIRED: 'CONFLICT',
  /** One call names an offer twice. */
  OFFER_DUPLICATE: 'INVALID_ARGUMENT',
  TOO_MANY_OFFERS: 'TOO_LARGE',
  TOO_MANY_TASKS: 'TOO_LARGE',
  /** A task's id or resources are malformed. */
  TASK_INVALID: 'INVALID_ARGUMENT',
  /** A task id used twice in one call, or already the framework's. */
  TASK_DUPLICATE: 'CONFLICT',
  /** A task names a node that none of the accepted offers is on. */
  TASK_NODE_NOT_OFFERED: 'INVALID_ARGUMENT',
  /** The tasks on a node ask for more than the accepted offers there hold. */
  TASKS_DO_NOT_FIT: 'CONFLICT',
  /** A task asks for a port its node's offers do not hold, or two tasks for one port. */
  PORTS_NOT_OFFERED: 'CONFLICT',
  /** A durable command that does not decode. */
  COMMAND_INVALID: 'INVALID_ARGUMENT',
  /** A snapshot of the registry that does not decode. */
  SNAPSHOT_INVALID: 'CORRUPT_DATA',
} as const satisfies Record<string, ShoalErrorCode>;

export type FrameworkErrorCode = keyof typeof frameworkErrorCodes;

export class FrameworkError extends ShoalError {
  readonly frameworkCode: FrameworkErrorCode;

  constructor(frameworkCode: FrameworkErrorCode, message: string) {
    // One line: events and API answers carry it as is.
    super(frameworkErrorCodes[frameworkCode], message.replace(/\s*\n\s*/g, ' '));
    this.frameworkCode = frameworkCode;
  }
}

export function isFrameworkError(error: unknown, code?: FrameworkErrorCode): error is FrameworkError {
  return error instanceof FrameworkError && (code === undefined || error.frameworkCode === code);
}
