/**
 * What the API answers: one schema per view, from which the TypeScript types are inferred, so the server,
 * the client and (with the OpenAPI document) every other reader share one description. Quantities carry
 * their unit in the name (`cpuMillis`, `memoryBytes`, `lastHeardMsAgo`); the CLI formats them for people.
 */
import * as z from 'zod/mini';
import {
  deploymentStatuses,
  clusterEventSchema,
  jobSpecSchema,
  jobTypes,
  namespacePolicySchema,
  restartPolicies,
  taskDrivers,
  taskStates,
  tokenRoles,
} from '../cluster/index.ts';
import '../shared/schema.ts';

export const healthViewSchema = z.object({
  /** Always "ok": a node that answers serves the API. */
  status: z.literal('ok'),
  /** The node's name. */
  node: z.string(),
  version: z.string(),
});
export type HealthView = z.infer<typeof healthViewSchema>;

const named = z.object({ id: z.string(), name: z.string() });

export const statusViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  role: z.enum(['follower', 'preCandidate', 'candidate', 'leader']),
  leader: z.nullable(named),
  term: z.int(),
  voters: z.array(named),
  learners: z.array(named),
  commitIndex: z.int(),
  appliedIndex: z.int(),
  /** The longest the event loop stalled between two Raft ticks since start (election timeouts must exceed it). */
  eventLoopStallMsMax: z.number(),
  /** Set when the cluster cannot survive the loss of a node (e.g. one voter while learners catch up). */
  warning: z.nullable(z.string()),
});
export type StatusView = z.infer<typeof statusViewSchema>;

export const memberViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  /** host:port of its cluster listener. */
  address: z.string(),
  state: z.enum(['alive', 'suspect', 'dead', 'left']),
  cpuMillis: z.int(),
  memoryBytes: z.int(),
  labels: z.record(z.string(), z.string()),
  drivers: z.array(z.enum(taskDrivers)),
  incarnation: z.int(),
  lastHeardMsAgo: z.number(),
  /** True while `shoal drain` keeps new tasks off the node. */
  draining: z.boolean(),
});
export type MemberView = z.infer<typeof memberViewSchema>;

export const taskViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  state: z.enum(taskStates),
  /** The node's name, and its id. */
  node: z.nullable(z.string()),
  nodeId: z.nullable(z.string()),
  exitCode: z.nullable(z.int()),
  reason: z.nullable(z.string()),
  /** 0 for the first run, +1 per restart. */
  attempt: z.int(),
  restart: z.enum(restartPolicies),
  priority: z.int(),
  namespace: z.string(),
  job: z.nullable(z.string()),
  driver: z.enum(taskDrivers),
  cpuMillis: z.int(),
  memoryBytes: z.int(),
  command: z.array(z.string()),
  image: z.nullable(z.string()),
  /** What the cluster wants of the task: run, kill, move, preempt; none once it ended. */
  desired: z.enum(['run', 'kill', 'move', 'preempt', 'none']),
  /** ISO 8601 times. */
  submittedAt: z.string(),
  updatedAt: z.string(),
  /** The host ports it holds, by name, and the address others reach each at (node address:port). */
  ports: z.array(z.object({ name: z.string(), hostPort: z.int(), address: z.string() })),
  /** What its health checks say (null: it has none, or no verdict yet). */
  health: z.nullable(
    z.object({ status: z.enum(['healthy', 'unhealthy']), since: z.string(), message: z.string() }),
  ),
  /** The framework that launched it, and its own id for the task (null: submitted, or a job's). */
  framework: z.nullable(z.object({ id: z.string(), name: z.string(), taskId: z.string() })),
});
export type TaskView = z.infer<typeof taskViewSchema>;

/** A framework (`GET /v1/frameworks`): its info, whether it is connected, and what it holds. */
export const frameworkViewSchema = z.object({
  id: z.string(),
  name: z.string(),
  /** The namespace its tasks run in. */
  role: z.string(),
  user: z.string(),
  priority: z.int(),
  failoverTimeoutSeconds: z.number(),
  /** A stream is open to it now. */
  connected: z.boolean(),
  /** ISO 8601 times; disconnectedAt and expiresAt are null while it is connected. */
  registeredAt: z.string(),
  disconnectedAt: z.nullable(z.string()),
  /** When its tasks are killed unless it subscribes again. */
  expiresAt: z.nullable(z.string()),
  /** Its tasks the cluster knows (live, or ended with an update not yet acknowledged). */
  tasks: z.int(),
  /** Status updates sent and not yet acknowledged. */
  pendingUpdates: z.int(),
});
export type FrameworkView = z.infer<typeof frameworkViewSchema>;

/** One framework, with its live tasks. */
export const frameworkDetailViewSchema = z.object({
  ...frameworkViewSchema.shape,
  liveTasks: z.array(taskViewSchema),
});
export type FrameworkDetailView = z.infer<typeof frameworkDetailViewSchema>;

/** One instance of a service that answers now: running, and healthy (or with no checks). */
export const serviceInstanceViewSchema = z.object({
  taskId: z.string(),
  name: z.string(),
  node: z.string(),
  /** The node's address the ports are published on. */
  host: z.string(),
  /** Its ports, host:port, by name. */
  ports: z.record(z.string(), z.string()),
  /** healthy: its checks pass; unchecked: it has none (running counts). */
  health: z.enum(['healthy', 'unchecked']),
});

/** A service: a job's name (or `shoal run --name`'s), with the instances that answer now. */
export const serviceViewSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  /** Running instances, whether healthy or not. */
  running: z.int(),
  instances: z.array(serviceInstanceViewSchema),
});
export type ServiceView = z.infer<typeof serviceViewSchema>;

/** A deployment of a service job's version (cluster/deployment.ts). */
export const deploymentViewSchema = z.object({
  id: z.string(),
  namespace: z.string(),
  job: z.string(),
  jobVersion: z.int(),
  stableVersion: z.nullable(z.int()),
  status: z.enum(deploymentStatuses),
  statusReason: z.string(),
  policy: z.object({
    maxParallel: z.int(),
    order: z.enum(['stop-first', 'start-first']),
    minHealthyTimeMs: z.int(),
    healthyDeadlineMs: z.int(),
    progressDeadlineMs: z.int(),
    autoRevert: z.boolean(),
    canary: z.int(),
  }),
  groups: z.array(
    z.object({
      name: z.string(),
      desiredTotal: z.int(),
      desiredCanaries: z.int(),
      placedCanaries: z.int(),
      promoted: z.boolean(),
      healthy: z.int(),
      unhealthy: z.int(),
      /** Live instances at this version, and at older ones. */
      current: z.int(),
      old: z.int(),
    }),
  ),
  createdAt: z.string(),
  updatedAt: z.string(),
  progressDeadlineAt: z.nullable(z.string()),
  revertedToVersion: z.nullable(z.int()),
});
export type DeploymentView = z.infer<typeof deploymentViewSchema>;

/** One task with its recent events, oldest first (`shoal inspect`, `shoal run`). */
export const taskDetailViewSchema = z.object({
  ...taskViewSchema.shape,
  /** exec: the user it asked to run as (null: the default, nobody where tasks are isolated). */
  user: z.nullable(z.string()),
  /** Its pids limit (null: the default, 4096). */
  pidsMax: z.nullable(z.int()),
  /** The disk it asked for; its agent stops it when its directory holds more (0: none asked). */
  diskBytes: z.int(),
  /** The devices it holds on its node, by kind: the slots it was given (empty when it holds none). */
  devices: z.record(z.string(), z.array(z.int())),
  events: z.array(z.object({ at: z.string(), message: z.string() })),
});
export type TaskDetailView = z.infer<typeof taskDetailViewSchema>;

export const submitAnswerSchema = z.object({
  /** The first task's id; `ids` lists every task the submission created. */
  id: z.string(),
  ids: z.array(z.string()),
});
export type SubmitAnswer = z.infer<typeof submitAnswerSchema>;

export const taskLogsViewSchema = z.object({ stdout: z.string(), stderr: z.string() });
export type TaskLogsView = z.infer<typeof taskLogsViewSchema>;

export const killAnswerSchema = z.object({ id: z.string(), desired: z.literal('kill') });
export const drainAnswerSchema = z.object({ node: z.string(), draining: z.boolean() });
export const leaveAnswerSchema = z.object({ leaving: z.literal(true) });
export const namespaceViewSchema = namespacePolicySchema;
export const namespaceListSchema = z.array(namespacePolicySchema);

/** A token as an admin sees it: never its secret. */
export const tokenViewSchema = z.object({
  accessorId: z.string(),
  name: z.string(),
  role: z.enum(tokenRoles),
  /** The namespaces its deploy rights cover; null: all. */
  namespaces: z.nullable(z.array(z.string())),
  /** ISO 8601 times; expiresAt null: never. */
  createdAt: z.string(),
  expiresAt: z.nullable(z.string()),
  expired: z.boolean(),
});
export type TokenView = z.infer<typeof tokenViewSchema>;

/** A new token, with its secret: the only answer that ever holds it. */
export const newTokenAnswerSchema = z.object({ ...tokenViewSchema.shape, secret: z.string() });
export type NewTokenAnswer = z.infer<typeof newTokenAnswerSchema>;

export const revokeAnswerSchema = z.object({ accessorId: z.string(), revoked: z.literal(true) });

/** The cluster CA's certificate (public): users pin it by its SHA-256 fingerprint (`shoal login`). */
export const clusterCaViewSchema = z.object({ certificatePem: z.string() });
/** The cluster key (secret): what another node needs to join (`shoal agent --join … --key KEY`). */
export const clusterKeyViewSchema = z.object({ key: z.string() });

/** What `shoal snapshot restore` did: the restored tasks by where they stand now. */
export const restoreAnswerSchema = z.object({
  /** The log index this node had applied when it answered (the restore's, or later). */
  index: z.int(),
  /** The snapshot's own index, on the cluster it was saved from. */
  snapshotIndex: z.int(),
  tasks: z.int(),
  /** Tasks that were waiting to be placed, and wait here. */
  waiting: z.int(),
  /** Tasks that ran on the old cluster's nodes and were queued again by their restart policy. */
  requeued: z.int(),
  /** Tasks that ran on the old cluster's nodes and stay lost (their restart policy does not restart them). */
  lost: z.int(),
  namespaces: z.int(),
  tokens: z.int(),
  /** Whether the snapshot's CA was kept (only when this cluster had none and its key opens it). */
  clusterCaKept: z.boolean(),
});

/**
 * One line of `GET /v1/events`: an event (see cluster/events.ts), or what the stream says of itself. A reset
 * says events up to its index are gone from this node (re-read the state); every event after it follows. A
 * heartbeat says the stream has sent everything up to its index: once after the retained events, then
 * whenever it has been quiet for a while. An error is the last line.
 */
export const eventFrameSchema = z.discriminatedUnion('type', [
  clusterEventSchema,
  z.object({ type: z.literal('reset'), index: z.int() }),
  z.object({ type: z.literal('heartbeat'), index: z.int() }),
  z.object({ type: z.literal('error'), error: z.object({ code: z.string(), message: z.string() }) }),
]);
export type EventFrame = z.infer<typeof eventFrameSchema>;

/** Every error answer: a stable code and a message a user can act on. */
export const errorBodySchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });
export type ErrorBody = z.infer<typeof errorBodySchema>;

/** How many of a job's (or a group's) instances are in each state. */
const stateCountsSchema = z.record(z.string(), z.int());

/** One instance of a job: a task, with its group, slot and the job version it runs. */
export const jobInstanceViewSchema = z.object({
  id: z.string(),
  group: z.string(),
  /** The task of the group (a group of several runs them together on one node). */
  task: z.string(),
  slot: z.int(),
  version: z.int(),
  state: z.enum(taskStates),
  node: z.nullable(z.string()),
  reason: z.nullable(z.string()),
  desired: z.enum(['run', 'kill', 'move', 'preempt', 'none']),
});

export const jobViewSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  type: z.enum(jobTypes),
  version: z.int(),
  /** running: the cluster keeps its shape; stopped: `job stop`; complete: a batch job whose instances all ended. */
  status: z.enum(['running', 'stopped', 'complete']),
  /** The log index of its last change, for `job apply --check-index`. */
  modifyIndex: z.int(),
  createIndex: z.int(),
  updatedAt: z.string(),
  /** Live and ended instances by state. */
  states: stateCountsSchema,
  groups: z.array(
    z.object({
      name: z.string(),
      /** Instances wanted; null for a system job (one per eligible node). */
      count: z.nullable(z.int()),
      states: stateCountsSchema,
    }),
  ),
  /** Periodic jobs: the next launch (ISO 8601), and the last slot launched. */
  nextLaunchAt: z.nullable(z.string()),
  lastLaunchAt: z.nullable(z.string()),
  /** A periodic job's launch: the periodic job that launched it. */
  parent: z.nullable(z.string()),
});
export type JobView = z.infer<typeof jobViewSchema>;

export const jobDetailViewSchema = z.object({
  ...jobViewSchema.shape,
  spec: jobSpecSchema,
  instances: z.array(jobInstanceViewSchema),
});

export const jobVersionViewSchema = z.object({
  version: z.int(),
  at: z.string(),
  index: z.int(),
  spec: jobSpecSchema,
});

export const jobApplyAnswerSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  version: z.int(),
  modifyIndex: z.int(),
  /** False when the job was already exactly this (nothing changed). */
  changed: z.boolean(),
});

/** One field that a plan changes: its path in the job, and the values before and after (absent: none). */
export const jobDiffSchema = z.object({
  path: z.string(),
  before: z.optional(z.unknown()),
  after: z.optional(z.unknown()),
});

export const jobPlanAnswerSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  /** The live job's modify index (0: no such job): give it to `job apply --check-index`. */
  modifyIndex: z.int(),
  /** The live version (0: none), and the version applying would make. */
  version: z.int(),
  nextVersion: z.int(),
  changed: z.boolean(),
  diff: z.array(jobDiffSchema),
  /** Instances applying would start, each with where it would go now or why it would wait. */
  start: z.array(
    z.object({
      group: z.string(),
      slot: z.int(),
      reason: z.string(),
      node: z.nullable(z.string()),
      waits: z.nullable(z.string()),
    }),
  ),
  /** Instances applying would stop. */
  stop: z.array(
    z.object({
      id: z.string(),
      group: z.string(),
      slot: z.int(),
      node: z.nullable(z.string()),
      reason: z.string(),
    }),
  ),
});
