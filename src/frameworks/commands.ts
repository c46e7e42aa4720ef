/**
 * The frameworks' durable commands and their codec: what the replicated log carries for frameworks
 * (subscribe, disconnect, expire, tear down, acknowledge), the framework info a subscription records, and
 * the registry's snapshot. The cluster's command codec (cluster/command.ts) adds `frameworkCommandSchemas`
 * to its union, so a log entry is validated field by field before the registry applies it. In: unknown
 * values. Out: typed commands and info, or a FrameworkError naming what is wrong. Never touches the registry.
 */
import * as z from 'zod/mini';
import { defaultNamespace, priorityMax, priorityMin } from '../allocator/index.ts';
import type { Random } from '../shared/random.ts';
import { text, whole } from '../shared/schema.ts';
import { FrameworkError } from './errors.ts';
import {
  failoverTimeoutMsDefault,
  failoverTimeoutMsMax,
  frameworkNameLengthMax,
  frameworkPriorityDefault,
  idLengthMax,
  pendingUpdatesMax,
  roleLengthMax,
  statusMessageLengthMax,
  tasksPerFrameworkMax,
  userLengthMax,
} from './limits.ts';
import { frameworkTaskStates, type FrameworkInfo, type StatusUpdate, type TaskStatus } from './types.ts';

const id = text(idLengthMax, 1);
const timeMs = whole(0);

export const frameworkInfoSchema = z.strictObject({
  name: text(frameworkNameLengthMax, 1),
  role: text(roleLengthMax, 1),
  user: text(userLengthMax, 1),
  priority: whole(priorityMin, priorityMax),
  failoverTimeoutMs: whole(0, failoverTimeoutMsMax),
  partitionAware: z.boolean(),
});

/** What SUBSCRIBE may leave out; `resolveFrameworkInfo` fills the defaults. */
export interface FrameworkInfoInput {
  readonly name: string;
  readonly user: string;
  /** Default `default`. */
  readonly role?: string;
  /** Default frameworkPriorityDefault. */
  readonly priority?: number;
  /** Default failoverTimeoutMsDefault (Mesos failover_timeout is in seconds: × 1000). */
  readonly failoverTimeoutMs?: number;
  /** Default false. */
  readonly partitionAware?: boolean;
}

/**
 * The info to record, defaults filled in; FRAMEWORK_INVALID naming the field otherwise. The role must also
 * be a valid namespace name, which the cluster's schema checks (this module sits below cluster/).
 */
export function resolveFrameworkInfo(input: FrameworkInfoInput): FrameworkInfo {
  const parsed = frameworkInfoSchema.safeParse({
    name: input.name,
    user: input.user,
    role: input.role ?? defaultNamespace,
    priority: input.priority ?? frameworkPriorityDefault,
    failoverTimeoutMs: input.failoverTimeoutMs ?? failoverTimeoutMsDefault,
    partitionAware: input.partitionAware ?? false,
  });
  if (!parsed.success)
    throw new FrameworkError('FRAMEWORK_INVALID', `framework info: ${describe(parsed.error)}`);
  return parsed.data;
}

/** A new framework's id: "fw-" and 16 hex digits from the injected source. */
export function newFrameworkId(random: Random): string {
  let digits = '';
  for (let i = 0; i < 16; i++) digits += random.int(0, 16).toString(16);
  return `fw-${digits}`;
}

// ---- commands -----------------------------------------------------------------------------------------

export type FrameworkCommand =
  | {
      /**
       * SUBSCRIBE committed. `resubscribe` false: a new framework with the proposer's fresh id; true: a
       * known framework (its id from SUBSCRIBE) coming back, whose older stream, if any, is told ERROR.
       */
      readonly type: 'subscribeFramework';
      readonly frameworkId: string;
      readonly resubscribe: boolean;
      /** The stream the leader holds for it (any id unique to that stream). */
      readonly streamId: string;
      readonly info: FrameworkInfo;
      readonly atMs: number;
    }
  | {
      /** The stream closed, or a new leader found it held by no one: the failover clock starts at atMs. */
      readonly type: 'disconnectFramework';
      readonly frameworkId: string;
      /** Ignored unless still the framework's stream, so a late close never cuts a newer subscription. */
      readonly streamId: string;
      readonly atMs: number;
    }
  | {
      /** The failover timeout passed (re-checked at apply): its tasks are killed and its record goes. */
      readonly type: 'expireFramework';
      readonly frameworkId: string;
      readonly atMs: number;
    }
  /** TEARDOWN: its tasks are killed and its record goes now. */
  | { readonly type: 'teardownFramework'; readonly frameworkId: string; readonly atMs: number }
  /** ACKNOWLEDGE: the update stops being redelivered. A repeated acknowledgement changes nothing. */
  | {
      readonly type: 'acknowledgeFrameworkUpdate';
      readonly frameworkId: string;
      readonly taskId: string;
      readonly uuid: string;
      readonly atMs: number;
    };

export const frameworkCommandSchemas = [
  z.strictObject({
    type: z.literal('subscribeFramework'),
    frameworkId: id,
    resubscribe: z.boolean(),
    streamId: id,
    info: frameworkInfoSchema,
    atMs: timeMs,
  }),
  z.strictObject({ type: z.literal('disconnectFramework'), frameworkId: id, streamId: id, atMs: timeMs }),
  z.strictObject({ type: z.literal('expireFramework'), frameworkId: id, atMs: timeMs }),
  z.strictObject({ type: z.literal('teardownFramework'), frameworkId: id, atMs: timeMs }),
  z.strictObject({
    type: z.literal('acknowledgeFrameworkUpdate'),
    frameworkId: id,
    taskId: id,
    uuid: id,
    atMs: timeMs,
  }),
] as const;

const frameworkCommandSchema = z.discriminatedUnion('type', frameworkCommandSchemas);

/** A framework command, validated; COMMAND_INVALID naming the field otherwise. */
export function validateFrameworkCommand(value: unknown): FrameworkCommand {
  const parsed = frameworkCommandSchema.safeParse(value);
  if (!parsed.success)
    throw new FrameworkError('COMMAND_INVALID', `not a framework command: ${describe(parsed.error)}`);
  // Returned as a FrameworkCommand: this compiles only while the schema accepts nothing the type lacks.
  return parsed.data;
}

// ---- the registry's snapshot --------------------------------------------------------------------------

const taskStatusSchema = z.strictObject({
  state: z.enum(frameworkTaskStates),
  message: text(statusMessageLengthMax),
  nodeId: z.nullable(id),
  atMs: timeMs,
});

export const frameworkRecordSchema = z.strictObject({
  id,
  info: frameworkInfoSchema,
  registeredAtMs: timeMs,
  streamId: z.nullable(id),
  disconnectedAtMs: z.nullable(timeMs),
  tasks: z
    .array(z.strictObject({ taskId: id, clusterTaskId: id, status: taskStatusSchema }))
    .check(z.maxLength(tasksPerFrameworkMax)),
  updates: z
    .array(z.strictObject({ uuid: id, taskId: id, status: taskStatusSchema }))
    .check(z.maxLength(pendingUpdatesMax)),
  nextUpdateSeq: whole(0),
  updatesDropped: whole(0),
});

/** One framework as the registry stores it, the form snapshots carry. */
export interface FrameworkRecord {
  readonly id: string;
  readonly info: FrameworkInfo;
  readonly registeredAtMs: number;
  /** The stream it is subscribed through; null while disconnected. */
  readonly streamId: string | null;
  /** When its stream was lost (the failover clock's start); null while connected. */
  readonly disconnectedAtMs: number | null;
  /** Its tasks, by its own ids, with the cluster's id for each and the last status recorded. */
  readonly tasks: readonly {
    readonly taskId: string;
    readonly clusterTaskId: string;
    readonly status: TaskStatus;
  }[];
  /** Unacknowledged updates, oldest first. */
  readonly updates: readonly StatusUpdate[];
  /** The next update's uuid is `u` and this number. */
  readonly nextUpdateSeq: number;
  /** Updates dropped at pendingUpdatesMax, over the framework's life. */
  readonly updatesDropped: number;
}

export const registrySnapshotSchema = z.strictObject({ frameworks: z.array(frameworkRecordSchema) });

export interface RegistrySnapshot {
  readonly frameworks: readonly FrameworkRecord[];
}

/** A snapshot, validated; SNAPSHOT_INVALID otherwise. */
export function decodeRegistrySnapshot(value: unknown): RegistrySnapshot {
  const parsed = registrySnapshotSchema.safeParse(value);
  if (!parsed.success)
    throw new FrameworkError('SNAPSHOT_INVALID', `frameworks snapshot: ${describe(parsed.error)}`);
  return parsed.data;
}

function describe(error: z.core.$ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}
