/**
 * The task model as users and the replicated state see it. Pure data and validation; no I/O.
 */
import * as z from 'zod/mini';
import {
  affinitiesMax,
  deviceKindsMax,
  patternLengthMax,
  portMax,
  portsPerTaskMax,
  priorityMax,
  priorityMin,
} from '../allocator/index.ts';
import { taskDrivers } from '../shared/drivers.ts';
import { kibibyte, mebibyte } from '../shared/units.ts';
import { text, whole } from '../shared/schema.ts';

// Driver names and priority bounds have their homes in shared/ and the allocator; the cluster's public
// face (index.ts) re-exports them from here.
export { taskDrivers, type TaskDriver } from '../shared/drivers.ts';
export { priorityMax, priorityMin } from '../allocator/index.ts';

/** Observed states, after Mesos. The first four are live; the last four are terminal. */
export const taskStates = [
  'pending',
  'assigned',
  'starting',
  'running',
  'finished',
  'failed',
  'killed',
  'lost',
] as const;
export type TaskState = (typeof taskStates)[number];

export const terminalTaskStates: ReadonlySet<TaskState> = new Set(['finished', 'failed', 'killed', 'lost']);

export function isTerminal(state: TaskState): boolean {
  return terminalTaskStates.has(state);
}

/** What the user asked for. The log stores it as submitted. */
export const priorityDefault = 50;
/** The most CPU one task may reserve: 1000 cores. */
export const cpuMillisMax = 1_000_000;
/** Room for a job's task names: job.group.task.slot (64 + 48 + 48 + the dots and the slot). */
export const taskNameLengthMax = 192;
export const commandArgumentsMax = 256;
export const commandBytesMax = 64 * kibibyte;
export const envEntriesMax = 256;

export const restartPolicies = ['never', 'on-failure', 'always'] as const;
export type RestartPolicy = (typeof restartPolicies)[number];
/** The longest wait between two restarts, however many failures came before. */
export const restartDelayMsMax = 5 * 60_000;

export const restartSchema = z.strictObject({
  policy: z.enum(restartPolicies),
  /** Restarts allowed after the first run; null means no limit (for `always`). */
  maxRestarts: z.nullable(z.int().check(z.gte(0), z.lte(1_000_000))),
  /** Delay before the first restart; it doubles with each restart, up to restartDelayMsMax. */
  delayMs: z.int().check(z.gte(0), z.lte(restartDelayMsMax)),
});

export type RestartSpec = z.infer<typeof restartSchema>;

/** Names of namespaces, jobs, groups, ports, device kinds and label keys in specs. */
const identifierPattern = /^[A-Za-z0-9][A-Za-z0-9._/-]*$/;
export const identifier = (what: string, lengthMax = 128): z.ZodMiniString =>
  z
    .string()
    .check(
      z.minLength(1),
      z.maxLength(lengthMax),
      z.regex(identifierPattern, `${what} may hold letters, digits, ".", "_", "/" and "-"`),
    );

export const labelConstraintsMax = 32;

/** A hard rule on a node label; see the allocator's LabelConstraint for the semantics. */
export const labelConstraintSchema = z.discriminatedUnion('operator', [
  z.strictObject({ key: text(128, 1), operator: z.literal('='), value: text(256) }),
  z.strictObject({ key: text(128, 1), operator: z.literal('!='), value: text(256) }),
  z.strictObject({
    key: text(128, 1),
    operator: z.literal('in'),
    values: z.array(text(256)).check(z.minLength(1), z.maxLength(64)),
  }),
  z.strictObject({
    key: text(128, 1),
    operator: z.literal('notIn'),
    values: z.array(text(256)).check(z.minLength(1), z.maxLength(64)),
  }),
  z.strictObject({
    key: text(128, 1),
    operator: z.literal('regex'),
    pattern: text(patternLengthMax, 1).check(
      z.refine(isValidPattern, 'the pattern is not a valid regular expression'),
    ),
  }),
]);

export type LabelConstraintSpec = z.infer<typeof labelConstraintSchema>;

function isValidPattern(pattern: string): boolean {
  try {
    new RegExp(pattern, 'u');
    return true;
  } catch {
    return false;
  }
}

/** Health checks one task may have; it is healthy when every one passes. */
export const healthChecksPerTaskMax = 4;

/**
 * A health check, run by the agent of the task's node: `http` (a GET of `path` on the named port, healthy
 * on `expectStatus` or any 2xx), `tcp` (a connection to the named port is accepted) or `exec` (a command in
 * the task's environment — inside its container for docker — that exits 0). A check's verdict changes after
 * `successesBeforeHealthy` passes in a row, or `failuresBeforeUnhealthy` failures in a row; failures in the
 * first `graceMs` after the task started do not count. `restartAfterFailures`: after that many failures in a
 * row the agent stops the task as failed ("unhealthy: …"), and its restart policy decides what follows.
 */
export const healthCheckSchema = z
  .strictObject({
    type: z.enum(['http', 'tcp', 'exec']),
    /** http and tcp: the name of one of the task's ports. */
    port: z.optional(identifier('a port name', 64)),
    /** http: the path to GET (default `/`). */
    path: z.optional(text(1024, 1).check(z.regex(/^\//, 'a path starts with "/"'))),
    /** http: the status that passes (default any 2xx). */
    expectStatus: z.optional(whole(100, 599)),
    /** exec: the command and its arguments. */
    command: z.optional(z.array(text(4096)).check(z.minLength(1), z.maxLength(64))),
    intervalMs: whole(100, 3_600_000),
    timeoutMs: whole(10, 600_000),
    graceMs: whole(0, 3_600_000),
    failuresBeforeUnhealthy: whole(1, 100),
    successesBeforeHealthy: whole(1, 100),
    restartAfterFailures: z.optional(whole(1, 10_000)),
  })
  .check(
    z.superRefine((check, ctx) => {
      if (check.type !== 'exec' && check.port === undefined)
        ctx.addIssue({
          code: 'custom',
          message: `a ${check.type} check needs the name of a port (port: http)`,
        });
      if (check.type === 'exec' && check.command === undefined)
        ctx.addIssue({ code: 'custom', message: 'an exec check needs a command' });
      if (check.type !== 'http' && (check.path !== undefined || check.expectStatus !== undefined))
        ctx.addIssue({ code: 'custom', message: 'path and expectStatus are for http checks' });
      if (check.timeoutMs > check.intervalMs)
        ctx.addIssue({ code: 'custom', message: "a check's timeout must not exceed its interval" });
    }),
  );
export type HealthCheckSpec = z.infer<typeof healthCheckSchema>;

/** Defaults a job file and `shoal run --check` fill in (Nomad's and Docker's usual values, a little quicker). */
export const healthCheckDefaults = {
  intervalMs: 10_000,
  timeoutMs: 2_000,
  graceMs: 0,
  failuresBeforeUnhealthy: 3,
  successesBeforeHealthy: 1,
} as const;

/** Docker network modes: the engine's bridge with published ports, the host's network, or none at all. */
export const networkModes = ['bridge', 'host', 'none'] as const;
export type NetworkMode = (typeof networkModes)[number];

/**
 * The pids limit a task gets unless it asks for another: enough for a busy JVM's threads, few enough that a
 * fork bomb stops long before the node runs out of pids (its default maximum is 4,194,304 on 64-bit Linux).
 */
export const pidsMaxDefault = 4096;

/** The user an exec task runs as unless it names one. */
export const taskUserDefault = 'nobody';

/** Ports allocated from a node's dynamic range when the task's agent does not set one (Nomad's default is alike). */
export const dynamicPortRangeDefault = { min: 20_000, max: 32_000 } as const;

/** A task's user: NAME, UID, NAME:GROUP or UID:GID, as in /etc/passwd and /etc/group. */
export const taskUserSchema = text(64, 1).check(
  z.regex(
    /^(?:[a-z_][a-z0-9_.-]*[$]?|\d{1,10})(?::(?:[a-z_][a-z0-9_.-]*|\d{1,10}))?$/,
    'a user is NAME, UID or UID:GID (e.g. nobody, 1000 or 1000:1000)',
  ),
);

/** The most pids a task may ask for: Linux's pid_max on 64-bit. */
export const pidsMaxLimit = 4_194_304;

export const taskSpecSchema = z
  .strictObject({
    name: z
      .string()
      .check(
        z.minLength(1),
        z.maxLength(taskNameLengthMax),
        z.regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'name may hold letters, digits, ".", "_" and "-"'),
      ),
    driver: z.enum(taskDrivers),
    command: z.array(text(commandBytesMax)).check(z.maxLength(commandArgumentsMax)),
    image: z.optional(text(1024, 1)),
    cpuMillis: whole(1, cpuMillisMax, 'cpu must be positive'),
    memoryBytes: whole(mebibyte, 2 ** 50, 'memory must be at least 1 MiB'),
    priority: whole(priorityMin, priorityMax),
    env: z
      .record(
        z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'env names are letters, digits and "_"')),
        z.string(),
      )
      .check(
        z.refine((env) => Object.keys(env).length <= envEntriesMax, `at most ${envEntriesMax} env entries`),
      ),
    /** Node labels that must equal these values. */
    constraints: z.record(text(128, 1), text(256)),
    /** What to do when the task ends; absent means never restart. */
    restart: z.optional(restartSchema),
    // ---- placement; every field below is optional and absent in specs from before it existed ----
    /** Disk the task needs on its node; its agent stops it as failed when its directory holds more. Default 0. */
    diskBytes: z.optional(whole(0, 2 ** 50)),
    /** Device counts by kind (e.g. gpu: 2), from what nodes advertise with --device. Default none. */
    devices: z.optional(
      z
        .record(identifier('a device kind', 64), whole(1, 1024))
        .check(
          z.refine((d) => Object.keys(d).length <= deviceKindsMax, `at most ${deviceKindsMax} device kinds`),
        ),
    ),
    /** Static host ports the task needs, by name; two tasks needing one port never share a node. */
    ports: z.optional(
      z.record(identifier('a port name', 64), whole(1, portMax)).check(
        z.refine((p) => Object.keys(p).length <= portsPerTaskMax, `at most ${portsPerTaskMax} ports`),
        z.refine((p) => new Set(Object.values(p)).size === Object.keys(p).length, 'ports must differ'),
      ),
    ),
    /** Ports by name that the node picks from its dynamic range when the task is placed. */
    dynamicPorts: z.optional(z.array(identifier('a port name', 64)).check(z.maxLength(portsPerTaskMax))),
    /** docker bridge: the container port each named port is published to (default: the host port). */
    portTargets: z.optional(z.record(identifier('a port name', 64), whole(1, portMax))),
    /**
     * docker: `bridge` (the engine's bridge, ports published; default when the task has ports), `host`, or
     * `none` (default without ports). exec: `host` (the default) only.
     */
    network: z.optional(z.enum(networkModes)),
    /**
     * The user the task runs as, `NAME`, `UID` or `UID:GID`. exec: default `nobody`; `root` (uid 0) runs
     * only on agents started with --allow-root-tasks. docker: instead of the image's user (a NAME from the
     * image's /etc/passwd).
     */
    user: z.optional(taskUserSchema),
    /** Most processes and threads the task may have at once (its pids cgroup). Default pidsMaxDefault. */
    pidsMax: z.optional(whole(8, pidsMaxLimit)),
    /** Health checks; the task is healthy when every one passes. */
    checks: z.optional(z.array(healthCheckSchema).check(z.maxLength(healthChecksPerTaskMax))),
    /** The tenant, for fair sharing and quotas. Default `default`. */
    namespace: z.optional(identifier('a namespace', 64)),
    /** More hard rules on node labels (`!=`, `in`, `notIn`, `regex`). */
    labelConstraints: z.optional(z.array(labelConstraintSchema).check(z.maxLength(labelConstraintsMax))),
    /** Soft preferences: nodes matching a rule score its weight (-100..100; negative avoids). */
    affinities: z.optional(
      z
        .array(z.strictObject({ constraint: labelConstraintSchema, weight: whole(-100, 100) }))
        .check(z.maxLength(affinitiesMax)),
    ),
    /** The job this task is a replica of: caps, distinct nodes and spread count per job. */
    job: z.optional(identifier('a job name')),
    /** Most tasks of the job running at once. */
    jobRunningMax: z.optional(whole(1, 1_000_000)),
    /** At most one task of the job per node. */
    distinctNodes: z.optional(z.boolean()),
    /** Spread the job's tasks evenly over the values of this node label (e.g. zone). */
    spreadOver: z.optional(text(128, 1)),
    /** binpack (default) fills nodes in order; spread prefers the node with the most free CPU. */
    packing: z.optional(z.enum(['binpack', 'spread'])),
    /** Tasks of one group start together or not at all. Set by `shoal run --replicas N --gang`. */
    group: z.optional(identifier('a group name')),
    /** The group's tasks go to one node together (a job group's tasks). Needs a group. */
    colocated: z.optional(z.boolean()),
    /** False: never evicted for a higher-priority task. Default true. */
    preemptible: z.optional(z.boolean()),
    /**
     * When its node loses contact with the leader for a whole lease: `stop` (default) so it never runs on
     * two nodes at once, or `keep` it running, accepting that the cluster may start a replacement meanwhile.
     */
    onDisconnect: z.optional(z.enum(['stop', 'keep'])),
    /**
     * When its node is lost: `always` (default) places it again elsewhere, even when its restart policy
     * says never (the task did not fail; its node did); `never` leaves it lost.
     */
    reschedule: z.optional(z.enum(['always', 'never'])),
  })
  .check(
    z.superRefine((spec, ctx) => {
      if (spec.driver === 'exec' && spec.command.length === 0 && spec.image === undefined) {
        ctx.addIssue({ code: 'custom', message: 'the exec driver needs a command (shoal run -- CMD ARGS…)' });
      }
      if (spec.driver === 'docker' && spec.image === undefined) {
        ctx.addIssue({ code: 'custom', message: 'the docker driver needs an image (--image NAME)' });
      }
      if (
        (spec.distinctNodes === true || spec.spreadOver !== undefined || spec.jobRunningMax !== undefined) &&
        spec.job === undefined
      ) {
        ctx.addIssue({
          code: 'custom',
          message: 'distinct nodes, spread and a running cap need a job (--job NAME)',
        });
      }
      const portNames = [...Object.keys(spec.ports ?? {}), ...(spec.dynamicPorts ?? [])];
      if (new Set(portNames).size !== portNames.length)
        ctx.addIssue({ code: 'custom', message: 'each port name is given once (static or dynamic)' });
      if (portNames.length > portsPerTaskMax)
        ctx.addIssue({ code: 'custom', message: `at most ${portsPerTaskMax} ports` });
      for (const name of Object.keys(spec.portTargets ?? {}))
        if (!portNames.includes(name))
          ctx.addIssue({
            code: 'custom',
            message: `portTargets names ${name}, which is not one of the task's ports`,
          });
      for (const check of spec.checks ?? [])
        if (check.port !== undefined && !portNames.includes(check.port))
          ctx.addIssue({
            code: 'custom',
            message: `a ${check.type} check uses port ${check.port}, which the task does not have`,
          });
      if (spec.driver === 'exec' && (spec.network === 'bridge' || spec.portTargets !== undefined))
        ctx.addIssue({
          code: 'custom',
          message: 'exec tasks use the host network (or none): bridge and port targets are for docker',
        });
      if (spec.network === 'none' && portNames.length > 0)
        ctx.addIssue({ code: 'custom', message: 'a task with network none cannot have ports' });
    }),
  );

export type TaskSpec = z.infer<typeof taskSpecSchema>;

/** The node label an agent sets to "true" when its Docker engine has a usable bridge network. */
export const dockerBridgeLabel = 'shoal.docker.bridge';

/** The node label an agent sets to "true" when exec tasks may run as root there (--allow-root-tasks). */
export const execRootLabel = 'shoal.exec.root';

/** An exec task that asks for root by name or uid 0 (a name that maps to uid 0 is refused at start). */
export function asksForRoot(spec: TaskSpec): boolean {
  const user = spec.user;
  return spec.driver === 'exec' && user !== undefined && /^(root|0)(:|$)/.test(user);
}

/** A task's network: as given, else docker's bridge when it has ports and none without; exec: the host's. */
export function networkOf(spec: TaskSpec): NetworkMode {
  if (spec.network !== undefined) return spec.network;
  if (spec.driver !== 'docker') return 'host';
  const hasPorts = Object.keys(spec.ports ?? {}).length > 0 || (spec.dynamicPorts ?? []).length > 0;
  return hasPorts ? 'bridge' : 'none';
}

/**
 * The label equalities a task's node must have: the spec's own, and the ones its network implies (a docker
 * task on the bridge goes only where the engine has one).
 */
export function taskConstraints(spec: TaskSpec): Readonly<Record<string, string>> {
  if (spec.driver === 'docker' && networkOf(spec) === 'bridge')
    return { ...spec.constraints, [dockerBridgeLabel]: 'true' };
  if (asksForRoot(spec)) return { ...spec.constraints, [execRootLabel]: 'true' };
  return spec.constraints;
}

/** The names of a task's ports, static then dynamic, in the order the spec gives them. */
export function portNames(spec: TaskSpec): string[] {
  return [...Object.keys(spec.ports ?? {}), ...(spec.dynamicPorts ?? [])];
}

/** A task as the replicated state holds it. `desired` is what should be; `state` is what was observed. */
export interface Task {
  readonly id: string;
  readonly spec: TaskSpec;
  /** Log index of the submission: the FIFO order among equal priorities. */
  readonly submitIndex: number;
  readonly submittedAtMs: number;
  /**
   * run; kill (stop for good); move (stop here, then queue again: the node is being drained); preempt
   * (stop for a higher-priority task, then queue again or end as killed, by its restart policy).
   */
  desired: 'run' | 'kill' | 'move' | 'preempt';
  /** A pending task that preempted tasks on a node waits for that node (absent: none). */
  nominatedNodeId?: string;
  /** Why a task being preempted is stopped (absent: it is not). */
  preemptedBy?: string;
  state: TaskState;
  /** The node (peer id) the task is assigned to, once placed. */
  nodeId: string | null;
  /** Which run this is: 0 for the first, +1 for every restart. Reports name the attempt they are about. */
  attempt: number;
  /** A restarted task is not placed before this time (its backoff). */
  notBeforeMs: number | null;
  exitCode: number | null;
  /** Why the task is in its state: a terminal reason, or why it still waits. */
  reason: string | null;
  updatedAtMs: number;
  /**
   * What happened to the task lately, oldest first, at most taskEventsMax: state changes (from the log's own
   * commands; not the submission, which submittedAtMs records) and what its agent saw (image pulls, limits it could not enforce). Shown by `shoal inspect` and
   * `shoal run`. Snapshots written before events existed restore with an empty list.
   */
  events: TaskEventRecord[];
  /**
   * The host ports the task holds on its node by name, static and dynamic, set when it is placed (absent:
   * it holds none, or it is not placed).
   */
  hostPorts?: Record<string, number>;
  /**
   * Which of its node's devices the task holds, by kind: slots 0…count-1 of what the node offers, set when
   * it is placed (absent: it asks for none, or it is not placed, or it was placed before slots existed).
   */
  deviceSlots?: Record<string, number[]>;
  /** When the current attempt was last reported running (absent: it is not running). */
  runningSinceMs?: number;
  /** What its health checks say, as its agent reported (absent: no checks, or no verdict yet). */
  health?: TaskHealth;
  /** A job's instance: which group and slot of which version (absent: a task of its own). */
  instance?: TaskInstance;
  /**
   * Launched by a framework (src/frameworks): which one, its own id for the task, and its name then (kept:
   * the framework may be gone while the task is still listed).
   */
  framework?: { readonly id: string; readonly taskId: string; readonly name?: string };
}

/** Where a job's task belongs: which job (in the task's namespace), group, task of the group and slot. */
export interface TaskInstance {
  /** The job's name (its namespace is the task's). */
  readonly job: string;
  readonly group: string;
  /** The task's name within its group. */
  readonly task: string;
  readonly slot: number;
  /** The job version it was made at. */
  readonly version: number;
  /** System jobs: the node it is pinned to. */
  readonly pinnedNodeId?: string;
}

/** A task's health as its checks judge it, and since when (the agent's clock). */
export interface TaskHealth {
  readonly status: 'healthy' | 'unhealthy';
  readonly sinceMs: number;
  /** Why, in one line: "GET /health returned 503", "connection refused"; empty when healthy. */
  readonly message: string;
}

/** One line of a task's history. */
export interface TaskEventRecord {
  readonly atMs: number;
  readonly message: string;
}

/** Events kept per task: enough to explain a start or a failure, small enough to keep the state bounded. */
export const taskEventsMax = 20;
/** An event message longer than this many characters is cut: events are one line for a human, not logs. */
export const taskEventMessageLengthMax = 240;
/** Events one command may carry (an agent's batch for one task). */
export const taskEventsPerCommandMax = 10;

/** Adds an event in time order (agents' clocks and commit order may disagree), dropping the oldest beyond the cap. */
export function addTaskEvent(task: Task, event: TaskEventRecord): void {
  const message =
    event.message.length > taskEventMessageLengthMax
      ? `${event.message.slice(0, taskEventMessageLengthMax - 1)}…`
      : event.message;
  let at = task.events.length;
  while (at > 0 && (task.events[at - 1]?.atMs ?? 0) > event.atMs) at--;
  task.events.splice(at, 0, { atMs: event.atMs, message });
  if (task.events.length > taskEventsMax) task.events.splice(0, task.events.length - taskEventsMax);
}

/** Turns zod's issues into one line a user can act on. */
export function describeIssues(error: z.core.$ZodError): string {
  return error.issues
    .map((issue) => (issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message))
    .join('; ');
}

/** Whether a task that ended in `state` runs again under its policy, after how long, and why. */
export function restartDecision(
  spec: TaskSpec,
  attempt: number,
  state: TaskState,
): { restart: false } | { restart: true; delayMs: number } {
  const restart = spec.restart;
  if (!restart || restart.policy === 'never' || state === 'killed') return { restart: false };
  if (restart.policy === 'on-failure' && state === 'finished') return { restart: false };
  if (restart.maxRestarts !== null && attempt >= restart.maxRestarts) return { restart: false };
  // A lost task did not fail: its node did. It goes elsewhere at once; backoff is for crash loops.
  if (state === 'lost') return { restart: true, delayMs: 0 };
  const delayMs = Math.min(restartDelayMsMax, restart.delayMs * 2 ** Math.min(attempt, 20));
  return { restart: true, delayMs };
}

/** The largest share weight of a namespace (weights are positive, not necessarily whole). */
export const namespaceWeightMax = 1_000_000;

/** A tenant's share weight and quota, as `shoal namespace set` gives them. */
export const namespacePolicySchema = z.strictObject({
  name: identifier('a namespace', 64),
  weight: z.number().check(z.gt(0), z.lte(namespaceWeightMax)),
  quota: z.nullable(
    z.strictObject({
      cpuMillis: z.optional(whole(0)),
      memoryBytes: z.optional(whole(0)),
      diskBytes: z.optional(whole(0)),
      devices: z.optional(z.record(identifier('a device kind', 64), whole(0))),
    }),
  ),
});

export type NamespacePolicySpec = z.infer<typeof namespacePolicySchema>;
