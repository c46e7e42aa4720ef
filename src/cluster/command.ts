/**
 * The commands of the replicated log, and their one codec. A command is encoded by its proposer and decoded
 * by every node that applies it, from its own log or a leader's: the decoder validates every field, so a
 * corrupt or foreign entry is a clear error naming its log index, never a cast that fails later.
 */
import * as z from 'zod/mini';
import { ShoalError } from '../shared/errors.ts';
import { text, whole } from '../shared/schema.ts';
import {
  describeIssues,
  namespacePolicySchema,
  priorityMax,
  taskDrivers,
  taskEventsPerCommandMax,
  taskSpecSchema,
  taskStates,
  type NamespacePolicySpec,
  type TaskDriver,
  type TaskEventRecord,
  type TaskSpec,
  type TaskHealth,
  type TaskState,
} from './task.ts';
import { accessorIdPattern, tokenRecordSchema, type TokenRecord } from './tokens.ts';
import { clusterCaSchema, type ClusterCaRecord } from './ca.ts';
import { backupStateSchema, type BackupState } from './backup.ts';
import { storedJobSpecSchema, type JobSpec } from './job.ts';
import { frameworkCommandSchemas, tasksPerAcceptMax, type FrameworkCommand } from '../frameworks/index.ts';
import { taskLimitsSchema, type TaskLimits } from './limits.ts';
import type { ApplyResult, CommandResult } from './state.ts';

/** What `shoal deployment pause|resume|promote|fail` asks of a deployment. */
export const deploymentActions = ['pause', 'resume', 'promote', 'fail'] as const;
export type DeploymentAction = (typeof deploymentActions)[number];

export interface NodeResources {
  readonly cpuMillis: number;
  readonly memoryBytes: number;
  /** Absent = 0 (a node from before disk was advertised offers none). */
  readonly diskBytes?: number;
  /** Device counts by kind; kinds not listed count 0. */
  readonly devices?: Readonly<Record<string, number>>;
}

export interface ClusterNode {
  readonly id: string;
  readonly name: string;
  /** host:port of its cluster listener, for humans. */
  readonly address: string;
  readonly capacity: NodeResources;
  readonly labels: Readonly<Record<string, string>>;
  /** Drivers that are healthy on the node; the allocator places a task only where its driver is. */
  readonly drivers: readonly TaskDriver[];
  /** The range dynamic ports are picked from on this node (absent: dynamicPortRangeDefault). */
  readonly dynamicPorts?: { readonly min: number; readonly max: number };
  status: 'up' | 'down';
  /** A draining node takes no new tasks, and its tasks are moved elsewhere. */
  draining: boolean;
  updatedAtMs: number;
}

export type NodeDescription = Omit<ClusterNode, 'status' | 'updatedAtMs' | 'draining'>;

/** One agent's report of a task's new observed state (a reportTask, or one of a reportTasks). */
export interface TaskReportRecord {
  readonly taskId: string;
  /** The run the report is about; a report about an earlier run of a restarted task is ignored. */
  readonly attempt: number;
  readonly state: TaskState;
  readonly exitCode: number | null;
  readonly reason: string | null;
}

/**
 * Reports one reportTasks command carries at most, and the characters of their reasons together (src/node/
 * reports.ts batches a node's reports within a short window and cuts a batch at either bound), so an entry
 * stays far below the 8 MiB wire message that carries it (a reason alone may be 64 KiB).
 */
export const reportsPerCommandMax = 256;
export const reportReasonsLengthMax = 256 * 1024;

/** The characters of a batch's reasons together (see reportReasonsLengthMax). */
export function reportReasonsLength(reports: readonly TaskReportRecord[]): number {
  let length = 0;
  for (const report of reports) length += report.reason?.length ?? 0;
  return length;
}

export interface Assignment {
  readonly taskId: string;
  readonly nodeId: string;
}

/** A pending task was placed on a node where lower-priority tasks are being evicted for it. */
export interface PreemptionCommand {
  readonly taskId: string;
  readonly nodeId: string;
  readonly forTaskId: string;
}

export type Command =
  | { readonly type: 'submitTask'; readonly id: string; readonly spec: TaskSpec; readonly atMs: number }
  /** Frameworks' durable commands (src/frameworks): subscribe, disconnect, expire, teardown, acknowledge. */
  | FrameworkCommand
  | {
      /**
       * An ACCEPT's tasks, placed where the framework's offers were: all are created, already assigned, or
       * none (a node gone or full since, a task id taken). Their namespace is the framework's role.
       */
      readonly type: 'launchFrameworkTasks';
      readonly frameworkId: string;
      readonly tasks: readonly FrameworkLaunchCommandTask[];
      readonly atMs: number;
    }
  | {
      /** Several tasks at once (replicas, a gang): all are accepted or none. */
      readonly type: 'submitTasks';
      readonly tasks: readonly { readonly id: string; readonly spec: TaskSpec }[];
      readonly atMs: number;
    }
  | {
      readonly type: 'assignTasks';
      /**
       * The proposing leader's term, for whoever reads the log. Nothing checks it: every assignment is
       * re-checked when applied (the task still pending, the node up with room), so a deposed leader's plan
       * that still commits places nothing that a current plan could not.
       */
      readonly term: number;
      readonly assignments: readonly Assignment[];
      /** Running tasks to evict for waiting higher-priority ones (absent in older entries: none). */
      readonly preemptions?: readonly PreemptionCommand[];
      /** The least priority difference that allows a preemption, as the leader used it. */
      readonly preemptionPriorityGap?: number;
      /** Why tasks the plan could not place still wait, shown by `shoal ps`. */
      readonly waiting: readonly { readonly taskId: string; readonly reason: string }[];
      readonly atMs: number;
    }
  | ({ readonly type: 'reportTask'; readonly nodeId: string; readonly atMs: number } & TaskReportRecord)
  | {
      /**
       * Several reports of one node's agent in one entry, applied as a reportTask each, in order; the apply
       * result holds each one's own result (`results`).
       */
      readonly type: 'reportTasks';
      readonly nodeId: string;
      readonly reports: readonly TaskReportRecord[];
      readonly atMs: number;
    }
  /** The ready leader's configured task limits, made the cluster's (limits.ts). */
  | { readonly type: 'setTaskLimits'; readonly limits: TaskLimits; readonly atMs: number }
  | {
      /** What an agent saw while running a task (pull progress, limits not enforced), batched and throttled. */
      readonly type: 'taskEvents';
      readonly nodeId: string;
      readonly taskId: string;
      readonly attempt: number;
      readonly events: readonly TaskEventRecord[];
    }
  | { readonly type: 'killTask'; readonly taskId: string; readonly atMs: number }
  | { readonly type: 'upsertNode'; readonly node: NodeDescription; readonly atMs: number }
  | { readonly type: 'nodeDown'; readonly nodeId: string; readonly reason: string; readonly atMs: number }
  | { readonly type: 'drainNode'; readonly nodeId: string; readonly drain: boolean; readonly atMs: number }
  | { readonly type: 'setNamespace'; readonly policy: NamespacePolicySpec; readonly atMs: number }
  /** An API token: its record, with the hash of its secret (the secret itself is never in the log). */
  | { readonly type: 'createToken'; readonly token: TokenRecord; readonly atMs: number }
  | { readonly type: 'revokeToken'; readonly accessorId: string; readonly atMs: number }
  /**
   * The cluster's CA, made by the first node that needs one (`--tls auto`); a second is refused (CONFLICT)
   * and its proposer uses the committed one. Its key travels sealed (see ca.ts).
   */
  | { readonly type: 'setClusterCa'; readonly ca: ClusterCaRecord; readonly atMs: number }
  /**
   * A backup restored into a cluster that has no tasks yet (`shoal snapshot restore`): its tasks,
   * namespaces and tokens join this cluster's; tasks that ran on the old cluster's nodes come back lost.
   * The backup's CA is kept only when the proposer could open its key with this cluster's key.
   */
  | {
      readonly type: 'restoreBackup';
      readonly backup: BackupState;
      readonly keepClusterCa: boolean;
      readonly atMs: number;
    }
  /** A job applied (`shoal job apply`); with checkIndex, only if the job's modify index is still that. */
  | { readonly type: 'putJob'; readonly job: JobSpec; readonly checkIndex?: number; readonly atMs: number }
  /**
   * The leader's launch of a periodic job's slot (periodic.ts): applied at most once per slot; `launch`
   * false records a missed slot skipped by policy.
   */
  | {
      readonly type: 'launchPeriodic';
      readonly namespace: string;
      readonly name: string;
      readonly slotMs: number;
      readonly launch: boolean;
      readonly atMs: number;
    }
  /** What a running task's health checks say now, from the agent of its node (a change of verdict). */
  | {
      readonly type: 'taskHealth';
      readonly nodeId: string;
      readonly taskId: string;
      readonly attempt: number;
      readonly health: TaskHealth;
      readonly atMs: number;
    }
  /** The leader's deployment watcher: instances it judged healthy or unhealthy, and the end it reached. */
  | {
      readonly type: 'deploymentProgress';
      readonly deploymentId: string;
      readonly healthy: readonly { readonly group: string; readonly taskId: string }[];
      readonly unhealthy: readonly {
        readonly group: string;
        readonly taskId: string;
        readonly reason: string;
      }[];
      readonly status: { readonly status: 'successful' | 'failed'; readonly reason: string } | null;
      readonly atMs: number;
    }
  /** `shoal deployment pause|resume|promote|fail`. */
  | {
      readonly type: 'controlDeployment';
      readonly deploymentId: string;
      readonly action: DeploymentAction;
      readonly atMs: number;
    }
  /** `shoal job stop`: its instances stop; purge also forgets the job. */
  | {
      readonly type: 'stopJob';
      readonly namespace: string;
      readonly name: string;
      readonly purge: boolean;
      readonly atMs: number;
    };

/**
 * The preemption gap that turns preemption off: above the widest difference between two priorities, so no
 * task is ever far enough above another. A whole number rather than Infinity (the allocator's "off"),
 * because the gap travels in the log as JSON.
 */
export const preemptionPriorityGapOff = priorityMax + 1;

/** Ids of tasks and nodes as they appear in commands (task ids are 12 hex digits; node ids are peer ids). */
const id = text(128, 1);
const timeMs = whole(0);
/**
 * Reasons and event messages. The state cuts long ones when it applies them; the codec only checks a bound
 * far above anything a node writes, because a valid entry refused here would stop the node that applies it.
 */
const reason = text(64 * 1024);

const nodeDescriptionSchema = z.strictObject({
  id,
  name: text(256, 1),
  address: text(1024),
  capacity: z.strictObject({
    cpuMillis: whole(0),
    memoryBytes: whole(0),
    diskBytes: z.exactOptional(whole(0)),
    devices: z.exactOptional(z.record(text(1024, 1), whole(0))),
  }),
  labels: z.record(text(1024, 1), text(64 * 1024)),
  drivers: z.array(z.enum(taskDrivers)),
  dynamicPorts: z.exactOptional(z.strictObject({ min: whole(1, 65_535), max: whole(1, 65_535) })),
});

const taskReportFields = {
  taskId: id,
  attempt: whole(0),
  state: z.enum(taskStates),
  exitCode: z.nullable(z.int()),
  reason: z.nullable(reason),
};

/** One task of a launchFrameworkTasks command. */
export interface FrameworkLaunchCommandTask {
  /** The cluster's id for it. */
  readonly id: string;
  /** The framework's id for it. */
  readonly frameworkTaskId: string;
  readonly nodeId: string;
  readonly spec: TaskSpec;
}

const commandSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('submitTask'), id, spec: taskSpecSchema, atMs: timeMs }),
  ...frameworkCommandSchemas,
  z.strictObject({
    type: z.literal('launchFrameworkTasks'),
    frameworkId: id,
    tasks: z
      .array(z.strictObject({ id, frameworkTaskId: id, nodeId: id, spec: taskSpecSchema }))
      .check(z.minLength(1), z.maxLength(tasksPerAcceptMax)),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('submitTasks'),
    tasks: z.array(z.strictObject({ id, spec: taskSpecSchema })).check(z.minLength(1)),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('assignTasks'),
    term: whole(0),
    assignments: z.array(z.strictObject({ taskId: id, nodeId: id })),
    preemptions: z.exactOptional(z.array(z.strictObject({ taskId: id, nodeId: id, forTaskId: id }))),
    preemptionPriorityGap: z.exactOptional(whole(0, preemptionPriorityGapOff)),
    waiting: z.array(z.strictObject({ taskId: id, reason })),
    atMs: timeMs,
  }),
  z.strictObject({ type: z.literal('reportTask'), nodeId: id, ...taskReportFields, atMs: timeMs }),
  z.strictObject({
    type: z.literal('reportTasks'),
    nodeId: id,
    reports: z.array(z.strictObject(taskReportFields)).check(
      z.minLength(1),
      z.maxLength(reportsPerCommandMax),
      z.refine(
        (reports) => reportReasonsLength(reports) <= reportReasonsLengthMax,
        `the reasons of a batch hold at most ${reportReasonsLengthMax} characters together`,
      ),
    ),
    atMs: timeMs,
  }),
  z.strictObject({ type: z.literal('setTaskLimits'), limits: taskLimitsSchema, atMs: timeMs }),
  z.strictObject({
    type: z.literal('taskEvents'),
    nodeId: id,
    taskId: id,
    attempt: whole(0),
    events: z
      .array(z.strictObject({ atMs: timeMs, message: reason }))
      .check(z.maxLength(taskEventsPerCommandMax)),
  }),
  z.strictObject({ type: z.literal('killTask'), taskId: id, atMs: timeMs }),
  z.strictObject({ type: z.literal('upsertNode'), node: nodeDescriptionSchema, atMs: timeMs }),
  z.strictObject({ type: z.literal('nodeDown'), nodeId: id, reason, atMs: timeMs }),
  z.strictObject({ type: z.literal('drainNode'), nodeId: id, drain: z.boolean(), atMs: timeMs }),
  z.strictObject({ type: z.literal('setNamespace'), policy: namespacePolicySchema, atMs: timeMs }),
  z.strictObject({ type: z.literal('createToken'), token: tokenRecordSchema, atMs: timeMs }),
  z.strictObject({
    type: z.literal('revokeToken'),
    accessorId: z.string().check(z.regex(accessorIdPattern)),
    atMs: timeMs,
  }),
  z.strictObject({ type: z.literal('setClusterCa'), ca: clusterCaSchema, atMs: timeMs }),
  z.strictObject({
    type: z.literal('restoreBackup'),
    backup: backupStateSchema,
    keepClusterCa: z.boolean(),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('putJob'),
    job: storedJobSpecSchema,
    checkIndex: z.exactOptional(whole(0)),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('launchPeriodic'),
    namespace: text(64, 1),
    name: text(64, 1),
    slotMs: timeMs,
    launch: z.boolean(),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('taskHealth'),
    nodeId: id,
    taskId: id,
    attempt: whole(0),
    health: z.strictObject({ status: z.enum(['healthy', 'unhealthy']), sinceMs: timeMs, message: reason }),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('deploymentProgress'),
    deploymentId: id,
    healthy: z.array(z.strictObject({ group: text(1024, 1), taskId: id })),
    unhealthy: z.array(z.strictObject({ group: text(1024, 1), taskId: id, reason })),
    status: z.nullable(z.strictObject({ status: z.enum(['successful', 'failed']), reason })),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('controlDeployment'),
    deploymentId: id,
    action: z.enum(deploymentActions),
    atMs: timeMs,
  }),
  z.strictObject({
    type: z.literal('stopJob'),
    namespace: text(64, 1),
    name: text(64, 1),
    purge: z.boolean(),
    atMs: timeMs,
  }),
]);

const refusalSchema = z.object({
  ok: z.literal(false),
  code: z.enum(['NOT_FOUND', 'CONFLICT']),
  message: z.string(),
});
const commandResultSchema: z.ZodMiniType<CommandResult> = z.union([
  z.object({ ok: z.literal(true), taskId: z.exactOptional(z.string()) }),
  refusalSchema,
]);

/**
 * What applying a command answers (state.ts ApplyResult), as a node checks it when it comes from the leader:
 * a reportTasks answers each report in `results`, which a check of its own that does not know them drops.
 */
export const applyResultSchema: z.ZodMiniType<ApplyResult> = z.union([
  z.object({
    ok: z.literal(true),
    taskId: z.exactOptional(z.string()),
    results: z.exactOptional(z.array(commandResultSchema).check(z.maxLength(reportsPerCommandMax))),
  }),
  refusalSchema,
]);

/** A command as it is written to the log. */
export function encodeCommand(command: Command): string {
  return JSON.stringify(command);
}

/**
 * A log entry's command, validated. Throws CORRUPT_DATA naming the entry's index when the entry is not JSON
 * or not a command this version knows: a node must not apply what it cannot read.
 */
export function decodeCommand(index: number, data: string): Command {
  let value: unknown;
  try {
    value = JSON.parse(data);
  } catch {
    throw new ShoalError('CORRUPT_DATA', `log entry ${index} is not JSON: ${preview(data)}`);
  }
  const parsed = commandSchema.safeParse(value);
  if (!parsed.success) {
    const type =
      typeof value === 'object' && value !== null && 'type' in value ? JSON.stringify(value.type) : 'none';
    throw new ShoalError(
      'CORRUPT_DATA',
      `log entry ${index} is not a command this version of shoal knows (type ${type}): ${describeIssues(parsed.error)}`,
    );
  }
  // Returned as a Command: this compiles only while the schema accepts nothing the type does not describe.
  return parsed.data;
}

/** A command that came from another node to be proposed; INVALID_ARGUMENT when it is not one. */
export function validateCommand(value: unknown): Command {
  const parsed = commandSchema.safeParse(value);
  if (!parsed.success) {
    throw new ShoalError('INVALID_ARGUMENT', `not a command: ${describeIssues(parsed.error)}`);
  }
  return parsed.data;
}

function preview(data: string): string {
  return JSON.stringify(data.length > 60 ? `${data.slice(0, 60)}…` : data);
}
