/**
 * Jobs: what a user declares (a job file, or the API's body: one schema for both), and the task specs the
 * cluster makes from it. A job has groups; a group has `count` instances (slots 0…count-1) of its task;
 * a single-task job may give `task` and `count` directly under the job (one group named after the task).
 * Pure: validation and the mapping to task specs. The state keeps versions (state.ts); the reconciler
 * (reconcile.ts) decides which instances to start and stop.
 */
import { Cron } from 'croner';
import * as z from 'zod/mini';
import { affinitiesMax } from '../allocator/index.ts';
import { taskDrivers } from '../shared/drivers.ts';
import { text, whole } from '../shared/schema.ts';
import { mebibyte } from '../shared/units.ts';
import { replicasMax } from './submission.ts';
import {
  cpuMillisMax,
  healthCheckDefaults,
  healthChecksPerTaskMax,
  identifier,
  networkModes,
  pidsMaxLimit,
  taskUserSchema,
  type HealthCheckSpec,
  labelConstraintSchema,
  labelConstraintsMax,
  priorityDefault,
  priorityMax,
  priorityMin,
  restartDelayMsMax,
  restartSchema,
  type TaskSpec,
} from './task.ts';

export const jobTypes = ['batch', 'service', 'system', 'periodic'] as const;

/** Job and group names: part of every instance's task name (job.group.slot), so no dots or slashes. */
const jobNamePattern = /^[A-Za-z0-9][A-Za-z0-9_-]*$/;
const jobName = (what: string, lengthMax = 64): z.ZodMiniString =>
  z
    .string()
    .check(
      z.minLength(1),
      z.maxLength(lengthMax),
      z.regex(jobNamePattern, `${what} may hold letters, digits, "_" and "-"`),
    );
export type JobType = (typeof jobTypes)[number];

/** The most reschedules after failures a job may allow per instance (or none, null: no limit). */
export const rescheduleAttemptsMax = 10;
/** The shortest wait before a reschedule after a failure: a crash loop must not run hot. */
export const rescheduleDelayMsMin = 100;
/** Tasks one job may ask for in all (its groups' counts times their tasks). */
export const jobTasksMax = replicasMax;
/** Tasks one group's instance may run together on its node. */
export const jobGroupTasksMax = 16;
/** Groups one job may have. */
export const jobGroupsMax = 64;
/** Versions of a job the state keeps (the newest; older ones are pruned). */
export const jobVersionsRetainedMax = 10;
/** Jobs the cluster keeps, stopped ones included. */
export const jobsMax = 10_000;

/**
 * A task's port in a job file: a number is a static host port; `{}` asks for a dynamic one from the node's
 * range; `{static: 8080}` is the long form, and `to` is the container port docker's bridge publishes to.
 */
export const jobPortSchema = z.union([
  whole(1, 65_535),
  z.strictObject({ static: z.exactOptional(whole(1, 65_535)), to: z.exactOptional(whole(1, 65_535)) }),
]);
export type JobPortSpec = z.infer<typeof jobPortSchema>;

/** A health check in a job file: as the task spec's, with the timing fields optional (healthCheckDefaults). */
export const jobCheckSchema = z.strictObject({
  type: z.enum(['http', 'tcp', 'exec']),
  port: z.exactOptional(identifier('a port name', 64)),
  path: z.exactOptional(text(1024, 1)),
  expectStatus: z.exactOptional(whole(100, 599)),
  command: z.exactOptional(z.array(text(4096)).check(z.minLength(1), z.maxLength(64))),
  intervalMs: z.exactOptional(whole(100, 3_600_000)),
  timeoutMs: z.exactOptional(whole(10, 600_000)),
  graceMs: z.exactOptional(whole(0, 3_600_000)),
  failuresBeforeUnhealthy: z.exactOptional(whole(1, 100)),
  successesBeforeHealthy: z.exactOptional(whole(1, 100)),
  restartAfterFailures: z.exactOptional(whole(1, 10_000)),
});
export type JobCheckSpec = z.infer<typeof jobCheckSchema>;

/** One task of a group: what runs, with resources in the units people write (millicores, MiB). */
export const jobTaskSchema = z.strictObject({
  name: z.exactOptional(jobName('a task name', 48)),
  driver: z.enum(taskDrivers),
  image: z.exactOptional(text(1024, 1)),
  command: z.exactOptional(z.array(text(64 * 1024)).check(z.maxLength(256))),
  env: z.exactOptional(z.record(z.string().check(z.regex(/^[A-Za-z_][A-Za-z0-9_]*$/)), z.string())),
  cpuMillis: whole(1, cpuMillisMax, 'cpuMillis must be positive'),
  memoryMiB: whole(1, 2 ** 30, 'memoryMiB must be at least 1'),
  diskMiB: z.exactOptional(whole(0, 2 ** 30)),
  devices: z.exactOptional(z.record(identifier('a device kind', 64), whole(1, 1024))),
  ports: z.exactOptional(z.record(identifier('a port name', 64), jobPortSchema)),
  /** docker: bridge (default with ports), host or none (default without). exec: host or none. */
  network: z.exactOptional(z.enum(networkModes)),
  /** exec: the user it runs as (default nobody). */
  user: z.exactOptional(taskUserSchema),
  /** Most processes and threads at once (default pidsMaxDefault). */
  pids: z.exactOptional(whole(8, pidsMaxLimit)),
  checks: z.exactOptional(z.array(jobCheckSchema).check(z.maxLength(healthChecksPerTaskMax))),
  restart: z.exactOptional(restartSchema),
  onDisconnect: z.exactOptional(z.enum(['stop', 'keep'])),
});
export type JobTaskSpec = z.infer<typeof jobTaskSchema>;

export const jobGroupSchema = z.strictObject({
  // A task's name is job.group.slot, at most 128 characters: 64 + 48 + the dots and the slot.
  name: jobName('a group name', 48),
  /** Instances of the group (not for system jobs: they run one per eligible node). */
  count: z.exactOptional(whole(0, replicasMax)),
  /** The group's instances start together or not at all. */
  gang: z.exactOptional(z.boolean()),
  /** At most one instance per node. */
  distinctNodes: z.exactOptional(z.boolean()),
  /** Spread instances evenly over this node label's values (e.g. zone). */
  spreadOver: z.exactOptional(text(128, 1)),
  /** The group's task; or `tasks`, several, which each instance runs together on one node. */
  task: z.exactOptional(jobTaskSchema),
  tasks: z.exactOptional(z.array(jobTaskSchema).check(z.minLength(1), z.maxLength(jobGroupTasksMax))),
});
export type JobGroupSpec = z.infer<typeof jobGroupSchema>;

/**
 * Where an instance goes when it cannot stay: `restart` (the task's own policy) restarts it on the same
 * node after the task itself failed; reschedule places a new instance on any node after its node was lost
 * or the task kept failing.
 */
export const rescheduleSchema = z.strictObject({
  policy: z.enum(['always', 'never']),
  /**
   * Reschedules of one instance after failures (a lost node does not count); null: no limit. At most
   * rescheduleAttemptsMax: the state keeps that many ended tasks of each instance to count them.
   */
  attempts: z.exactOptional(z.nullable(whole(0, rescheduleAttemptsMax))),
  /** Wait before a reschedule after a failure; doubles with each, up to restartDelayMsMax. */
  delayMs: z.exactOptional(whole(rescheduleDelayMsMin, restartDelayMsMax)),
});
export type RescheduleSpec = z.infer<typeof rescheduleSchema>;

export const periodicSchema = z.strictObject({
  /** A cron expression (5 or 6 fields, croner's syntax). */
  cron: text(256, 1),
  /** An IANA time zone (Europe/Berlin); default UTC. */
  timezone: z.exactOptional(text(64, 1)),
  /** Skip a launch while the previous one still runs. */
  prohibitOverlap: z.exactOptional(z.boolean()),
  /** A launch missed while the cluster had no leader: run it once when one appears, or skip it. */
  missed: z.exactOptional(z.enum(['run', 'skip'])),
});
export type PeriodicSpec = z.infer<typeof periodicSchema>;

/**
 * How a service job moves to a new version (Nomad's update block): at most `maxParallel` new instances not
 * yet healthy at a time; `stop-first` stops an old instance before its replacement starts, `start-first`
 * starts the replacement first and stops the old one once the new is healthy. An instance counts healthy
 * once it has run, its checks passing, for `minHealthyTimeMs`; one not healthy within `healthyDeadlineMs` of
 * its placement is unhealthy, and so is one that fails or whose checks fail. An unhealthy instance, or no
 * instance turning healthy within `progressDeadlineMs`, fails the deployment; `autoRevert` then applies the
 * last version whose deployment succeeded. `canary` > 0: that many new instances start beside the old ones
 * and the deployment waits for `shoal job promote` before replacing the rest.
 */
export const updatePolicySchema = z.strictObject({
  maxParallel: z.exactOptional(whole(1, replicasMax)),
  order: z.exactOptional(z.enum(['stop-first', 'start-first'])),
  minHealthyTimeMs: z.exactOptional(whole(0, 3_600_000)),
  healthyDeadlineMs: z.exactOptional(whole(1000, 86_400_000)),
  /** 0: no progress deadline. */
  progressDeadlineMs: z.exactOptional(whole(0, 86_400_000)),
  autoRevert: z.exactOptional(z.boolean()),
  canary: z.exactOptional(whole(0, replicasMax)),
});
export type UpdatePolicySpec = z.infer<typeof updatePolicySchema>;
export type UpdatePolicy = Required<UpdatePolicySpec>;

/** The update policy a service job gets for what it leaves out. */
export const updatePolicyDefaults: UpdatePolicy = {
  maxParallel: 1,
  order: 'stop-first',
  minHealthyTimeMs: 10_000,
  healthyDeadlineMs: 5 * 60_000,
  progressDeadlineMs: 10 * 60_000,
  autoRevert: true,
  canary: 0,
};

/** A job's update policy, its defaults filled in. */
export function resolvedUpdatePolicy(spec: JobSpec): UpdatePolicy {
  return { ...updatePolicyDefaults, ...spec.update };
}

const jobSpecShape = z.strictObject({
  name: jobName('a job name'),
  namespace: z.exactOptional(identifier('a namespace', 64)),
  type: z.enum(jobTypes),
  priority: z.exactOptional(whole(priorityMin, priorityMax)),
  /** Node labels every instance's node must have. */
  constraints: z.exactOptional(z.record(text(128, 1), text(256))),
  labelConstraints: z.exactOptional(z.array(labelConstraintSchema).check(z.maxLength(labelConstraintsMax))),
  affinities: z.exactOptional(
    z
      .array(z.strictObject({ constraint: labelConstraintSchema, weight: whole(-100, 100) }))
      .check(z.maxLength(affinitiesMax)),
  ),
  reschedule: z.exactOptional(rescheduleSchema),
  /** service jobs: how a new version rolls out (see updatePolicySchema). */
  update: z.exactOptional(updatePolicySchema),
  periodic: z.exactOptional(periodicSchema),
  groups: z.exactOptional(z.array(jobGroupSchema).check(z.minLength(1), z.maxLength(jobGroupsMax))),
  /** A single-task job: the task and its count directly under the job. */
  task: z.exactOptional(jobTaskSchema),
  count: z.exactOptional(whole(0, replicasMax)),
});

/**
 * The checks across fields. The schedule's (a cron expression croner reads, a known time zone) depends on
 * the library and the time-zone data of the node that runs it, so it is made where a job comes in (the API,
 * job files), not where the log is read: a node must not refuse an entry the leader accepted.
 */
function jobIssues(checkSchedule: boolean) {
  return (
    job: z.infer<typeof jobSpecShape>,
    ctx: z.core.$RefinementCtx<z.infer<typeof jobSpecShape>>,
  ): void => {
    const issue = (message: string, path: (string | number)[]): void => {
      ctx.addIssue({ code: 'custom', message, path });
    };
    if ((job.groups === undefined) === (job.task === undefined))
      issue('give either groups, or a single task (with count) under the job', []);
    if (job.groups !== undefined && job.count !== undefined)
      issue('count belongs to each group when the job has groups', ['count']);
    if (job.type === 'periodic' && job.periodic === undefined)
      issue('a periodic job needs periodic: {cron: …}', ['periodic']);
    // A launch is named NAME-SLOT (7 more characters), and is a job name too.
    if (job.type === 'periodic' && job.name.length > 56)
      issue('a periodic job name has at most 56 characters (its launches add 7)', ['name']);
    if (job.type !== 'service' && job.update !== undefined)
      issue(`update is for service jobs (this job is ${job.type}: its instances are replaced at once)`, [
        'update',
      ]);
    if (job.type !== 'periodic' && job.periodic !== undefined)
      issue(`periodic is only for type periodic (this job is ${job.type})`, ['periodic']);
    if (job.periodic !== undefined && checkSchedule) {
      const problem = cronProblem(job.periodic);
      if (problem !== null) issue(problem, ['periodic', 'cron']);
    }
    const taskCount =
      job.groups === undefined
        ? (job.count ?? 1)
        : job.groups.reduce((sum, group) => sum + (group.count ?? 1) * (group.tasks?.length ?? 1), 0);
    if (taskCount > jobTasksMax)
      issue(`a job asks for at most ${jobTasksMax} tasks in all; this one asks for ${taskCount}`, []);
    const names = new Set<string>();
    for (const [index, group] of (job.groups ?? []).entries()) {
      if (names.has(group.name)) issue(`group name ${group.name} is used twice`, ['groups', index, 'name']);
      names.add(group.name);
      if (job.type === 'system' && group.count !== undefined)
        issue('a system job runs one instance per eligible node: leave count out', [
          'groups',
          index,
          'count',
        ]);
      if ((group.task === undefined) === (group.tasks === undefined))
        issue('give a group either task, or tasks (several, run together on one node)', ['groups', index]);
      if (group.task !== undefined) taskIssues(group.task, ['groups', index, 'task'], issue);
      const taskNames = new Set<string>();
      for (const [taskIndex, task] of (group.tasks ?? []).entries()) {
        const path = ['groups', index, 'tasks', taskIndex];
        taskIssues(task, path, issue);
        if ((group.tasks?.length ?? 0) > 1 && task.name === undefined)
          issue('each of several tasks needs a name', [...path, 'name']);
        if (task.name !== undefined && taskNames.has(task.name))
          issue(`task name ${task.name} is used twice in the group`, [...path, 'name']);
        if (task.name !== undefined) taskNames.add(task.name);
      }
      if ((group.tasks?.length ?? 0) > 1 && group.gang === true)
        issue('gang is for groups of one task (several tasks of an instance always start together)', [
          'groups',
          index,
          'gang',
        ]);
    }
    if (job.task !== undefined) {
      if (job.type === 'system' && job.count !== undefined)
        issue('a system job runs one instance per eligible node: leave count out', ['count']);
      taskIssues(job.task, ['task'], issue);
    }
  };
}

/** A job as the API and job files take it, every check made. */
export const jobSpecSchema = jobSpecShape.check(z.superRefine(jobIssues(true)));
/** A job as the log and the state hold it: the same, but its schedule is not checked again (see jobIssues). */
export const storedJobSpecSchema = jobSpecShape.check(z.superRefine(jobIssues(false)));
export type JobSpec = z.infer<typeof jobSpecSchema>;

function taskIssues(
  task: JobTaskSpec,
  path: (string | number)[],
  issue: (message: string, path: (string | number)[]) => void,
): void {
  if (task.driver === 'exec' && (task.command ?? []).length === 0 && task.image === undefined)
    issue('the exec driver needs a command (or an image to take it from)', [...path, 'command']);
  if (task.driver === 'docker' && task.image === undefined)
    issue('the docker driver needs an image', [...path, 'image']);
  const ports = task.ports ?? {};
  const statics = Object.values(ports).flatMap((port) =>
    typeof port === 'number' ? [port] : port.static === undefined ? [] : [port.static],
  );
  if (new Set(statics).size !== statics.length) issue('static ports must differ', [...path, 'ports']);
  for (const [name, port] of Object.entries(ports))
    if (typeof port !== 'number' && port.to !== undefined && task.driver !== 'docker')
      issue('to (a container port) is for docker tasks', [...path, 'ports', name, 'to']);
  if (task.network === 'none' && Object.keys(ports).length > 0)
    issue('a task with network none cannot have ports', [...path, 'network']);
  if (task.driver === 'exec' && task.network === 'bridge')
    issue('exec tasks use the host network or none (bridge is for docker)', [...path, 'network']);
  for (const [index, check] of (task.checks ?? []).entries()) {
    const at = [...path, 'checks', index];
    if (check.type !== 'exec' && check.port === undefined)
      issue(`a ${check.type} check needs the name of one of the task's ports (port: http)`, at);
    if (check.port !== undefined && !(check.port in ports))
      issue(`port ${check.port} is not one of the task's ports`, [...at, 'port']);
    if (check.type === 'exec' && check.command === undefined) issue('an exec check needs a command', at);
    if (check.type !== 'http' && (check.path !== undefined || check.expectStatus !== undefined))
      issue('path and expectStatus are for http checks', at);
    if (check.path !== undefined && !check.path.startsWith('/'))
      issue('a path starts with "/"', [...at, 'path']);
    const intervalMs = check.intervalMs ?? healthCheckDefaults.intervalMs;
    if ((check.timeoutMs ?? Math.min(healthCheckDefaults.timeoutMs, intervalMs)) > intervalMs)
      issue("a check's timeout must not exceed its interval", [...at, 'timeoutMs']);
  }
}

/** A job file's ports as the task spec holds them: static ones, dynamic names, and container targets. */
export function taskPorts(
  ports: Readonly<Record<string, JobPortSpec>> | undefined,
): Pick<TaskSpec, 'ports' | 'dynamicPorts' | 'portTargets'> {
  const statics: Record<string, number> = {};
  const dynamic: string[] = [];
  const targets: Record<string, number> = {};
  for (const [name, port] of Object.entries(ports ?? {})) {
    const hostPort = typeof port === 'number' ? port : port.static;
    if (hostPort === undefined) dynamic.push(name);
    else statics[name] = hostPort;
    if (typeof port !== 'number' && port.to !== undefined) targets[name] = port.to;
  }
  return {
    ...(Object.keys(statics).length === 0 ? {} : { ports: statics }),
    ...(dynamic.length === 0 ? {} : { dynamicPorts: dynamic }),
    ...(Object.keys(targets).length === 0 ? {} : { portTargets: targets }),
  };
}

/** A job file's check with its defaults filled in. */
export function taskCheck(check: JobCheckSpec): HealthCheckSpec {
  const intervalMs = check.intervalMs ?? healthCheckDefaults.intervalMs;
  return {
    ...check,
    ...(check.type === 'http' && check.path === undefined ? { path: '/' } : {}),
    intervalMs,
    timeoutMs: check.timeoutMs ?? Math.min(healthCheckDefaults.timeoutMs, intervalMs),
    graceMs: check.graceMs ?? healthCheckDefaults.graceMs,
    failuresBeforeUnhealthy: check.failuresBeforeUnhealthy ?? healthCheckDefaults.failuresBeforeUnhealthy,
    successesBeforeHealthy: check.successesBeforeHealthy ?? healthCheckDefaults.successesBeforeHealthy,
  };
}

/** A task spec's check in the job file's form: the same fields, absent ones left out. */
function jobCheck(check: HealthCheckSpec): JobCheckSpec {
  const { port, path, expectStatus, command, restartAfterFailures, ...rest } = check;
  return {
    ...rest,
    ...(port === undefined ? {} : { port }),
    ...(path === undefined ? {} : { path }),
    ...(expectStatus === undefined ? {} : { expectStatus }),
    ...(command === undefined ? {} : { command }),
    ...(restartAfterFailures === undefined ? {} : { restartAfterFailures }),
  };
}

/** Ports of a task spec in the job file's form (the inverse of taskPorts). */
function jobPorts(spec: TaskSpec): Record<string, JobPortSpec> | undefined {
  const ports: Record<string, JobPortSpec> = {};
  for (const [name, port] of Object.entries(spec.ports ?? {})) {
    const to = spec.portTargets?.[name];
    ports[name] = to === undefined ? port : { static: port, to };
  }
  for (const name of spec.dynamicPorts ?? []) {
    const to = spec.portTargets?.[name];
    ports[name] = to === undefined ? {} : { to };
  }
  return Object.keys(ports).length === 0 ? undefined : ports;
}

/** Why a periodic spec's schedule cannot be used, or null. */
export function cronProblem(periodic: PeriodicSpec): string | null {
  try {
    new Cron(periodic.cron, {
      paused: true,
      ...(periodic.timezone === undefined ? {} : { timezone: periodic.timezone }),
    });
  } catch (error) {
    return `not a cron schedule croner reads: ${error instanceof Error ? error.message : String(error)}`;
  }
  if (periodic.timezone !== undefined) {
    try {
      new Intl.DateTimeFormat('en', { timeZone: periodic.timezone });
    } catch {
      return `unknown time zone ${periodic.timezone} (an IANA name such as Europe/Berlin)`;
    }
  }
  return null;
}

/** A group as the state sees it: always named, with its instance count (null for system jobs) and tasks. */
export interface NormalizedGroup {
  readonly name: string;
  readonly count: number | null;
  readonly spec: JobGroupSpec;
  /** Its tasks, each named (one task alone is named after the group). */
  readonly tasks: readonly { readonly name: string; readonly spec: JobTaskSpec }[];
}

function groupTasks(group: JobGroupSpec): NormalizedGroup['tasks'] {
  if (group.tasks !== undefined)
    return group.tasks.map((task, index) => ({
      name: task.name ?? (group.tasks?.length === 1 ? group.name : `task${index}`),
      spec: task,
    }));
  return group.task === undefined ? [] : [{ name: group.task.name ?? group.name, spec: group.task }];
}

/** The job's groups, the single-task form included (one group named after its task, or the job). */
export function jobGroups(job: JobSpec): NormalizedGroup[] {
  const system = job.type === 'system';
  if (job.groups !== undefined)
    return job.groups.map((group) => ({
      name: group.name,
      count: system ? null : (group.count ?? 1),
      spec: group,
      tasks: groupTasks(group),
    }));
  const task = job.task;
  if (task === undefined) return [];
  const name = task.name ?? job.name;
  const spec: JobGroupSpec = { name, task, ...(job.count === undefined ? {} : { count: job.count }) };
  return [{ name, count: system ? null : (job.count ?? 1), spec, tasks: groupTasks(spec) }];
}

/** Where one instance of a group runs from: its group, its slot, and for system jobs its node. */
export interface InstanceKey {
  readonly group: string;
  /** The task of the group (its name); default its only one. */
  readonly task?: string;
  readonly slot: number;
  /** System jobs: the node the instance is pinned to (by the built-in label nodeIdLabel). */
  readonly nodeId?: string;
}

/** A node label every node carries: its id, so a system job's instance can be pinned to one node. */
export const nodeIdLabel = 'shoal.node.id';

/** The task spec of one instance of a job's group. */
export function instanceTaskSpec(job: JobSpec, group: NormalizedGroup, key: InstanceKey): TaskSpec {
  const named = group.tasks.find((candidate) => candidate.name === key.task) ?? group.tasks[0];
  if (!named) throw new Error(`group ${group.name} has no task`);
  const task = named.spec;
  const several = group.tasks.length > 1;
  const where = key.nodeId === undefined ? String(key.slot) : key.nodeId.slice(-8);
  const spec: TaskSpec = {
    // job.group.slot (job.slot for the job's single task named after it), then .task when a group has
    // several: names people can read in shoal ps, unique within the job.
    name: `${group.name === job.name ? job.name : `${job.name}.${group.name}`}.${where}${several ? `.${named.name}` : ''}`,
    driver: task.driver,
    command: task.command ?? [],
    cpuMillis: task.cpuMillis,
    memoryBytes: task.memoryMiB * mebibyte,
    priority: job.priority ?? priorityDefault,
    env: task.env ?? {},
    constraints: { ...job.constraints, ...(key.nodeId === undefined ? {} : { [nodeIdLabel]: key.nodeId }) },
    job: job.name,
    ...(job.namespace === undefined ? {} : { namespace: job.namespace }),
    ...(task.image === undefined ? {} : { image: task.image }),
    ...(task.restart === undefined ? {} : { restart: task.restart }),
    ...(task.diskMiB === undefined ? {} : { diskBytes: task.diskMiB * mebibyte }),
    ...(task.devices === undefined ? {} : { devices: task.devices }),
    ...taskPorts(task.ports),
    ...(task.network === undefined ? {} : { network: task.network }),
    ...(task.user === undefined ? {} : { user: task.user }),
    ...(task.pids === undefined ? {} : { pidsMax: task.pids }),
    ...(task.checks === undefined ? {} : { checks: task.checks.map(taskCheck) }),
    ...(task.onDisconnect === undefined ? {} : { onDisconnect: task.onDisconnect }),
    ...(job.labelConstraints === undefined ? {} : { labelConstraints: job.labelConstraints }),
    ...(job.affinities === undefined ? {} : { affinities: job.affinities }),
    ...(group.spec.distinctNodes === undefined ? {} : { distinctNodes: group.spec.distinctNodes }),
    ...(group.spec.spreadOver === undefined ? {} : { spreadOver: group.spec.spreadOver }),
    ...(group.spec.gang === true ? { group: `${job.namespace ?? 'default'}/${job.name}.${group.name}` } : {}),
  };
  // The allocator counts distinct nodes and spread per job: for a group of several tasks, per task of the
  // group, so that an instance's tasks may share their node while instances do not.
  if (several) spec.job = `${job.name}.${group.name}.${named.name}`;
  return spec;
}

/** The first slot of a periodic schedule after `afterMs`, or null when there is none. */
export function nextLaunchMs(periodic: PeriodicSpec, afterMs: number): number | null {
  const cron = new Cron(periodic.cron, {
    paused: true,
    ...(periodic.timezone === undefined ? {} : { timezone: periodic.timezone }),
  });
  return cron.nextRun(new Date(afterMs))?.getTime() ?? null;
}

/**
 * The job a `shoal run` would be as a job file (`shoal run --dry-run -o yaml`): a service when the task
 * restarts always, else a batch job; replicas become its count. Placement knobs a job file does not have
 * (a running cap, packing, preemptibility) are left out, and named in `omitted`.
 */
export function jobFromTaskSpec(
  spec: TaskSpec,
  replicas: number,
  gang: boolean,
): { readonly job: JobSpec; readonly omitted: readonly string[] } {
  const name = (spec.job ?? spec.name).replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 56);
  const omitted = [
    ...(spec.jobRunningMax === undefined ? [] : ['--max-running']),
    ...(spec.packing === undefined ? [] : ['--spread']),
    ...(spec.preemptible === undefined ? [] : ['--not-preemptible']),
  ];
  const ports = jobPorts(spec);
  const task: JobTaskSpec = {
    driver: spec.driver,
    ...(spec.image === undefined ? {} : { image: spec.image }),
    ...(spec.command.length === 0 ? {} : { command: spec.command }),
    ...(Object.keys(spec.env).length === 0 ? {} : { env: spec.env }),
    cpuMillis: spec.cpuMillis,
    memoryMiB: Math.ceil(spec.memoryBytes / mebibyte),
    ...(spec.diskBytes === undefined ? {} : { diskMiB: Math.ceil(spec.diskBytes / mebibyte) }),
    ...(spec.devices === undefined ? {} : { devices: spec.devices }),
    ...(ports === undefined ? {} : { ports }),
    ...(spec.network === undefined ? {} : { network: spec.network }),
    ...(spec.user === undefined ? {} : { user: spec.user }),
    ...(spec.pidsMax === undefined ? {} : { pids: spec.pidsMax }),
    ...(spec.checks === undefined ? {} : { checks: spec.checks.map(jobCheck) }),
    ...(spec.restart === undefined ? {} : { restart: spec.restart }),
    ...(spec.onDisconnect === undefined ? {} : { onDisconnect: spec.onDisconnect }),
  };
  const group: JobGroupSpec = {
    name,
    count: replicas,
    ...(gang ? { gang: true } : {}),
    ...(spec.distinctNodes === undefined ? {} : { distinctNodes: spec.distinctNodes }),
    ...(spec.spreadOver === undefined ? {} : { spreadOver: spec.spreadOver }),
    task,
  };
  const simple =
    group.gang === undefined && group.distinctNodes === undefined && group.spreadOver === undefined;
  const job: JobSpec = {
    name,
    type: spec.restart?.policy === 'always' ? 'service' : 'batch',
    ...(spec.namespace === undefined ? {} : { namespace: spec.namespace }),
    ...(spec.priority === priorityDefault ? {} : { priority: spec.priority }),
    ...(Object.keys(spec.constraints).length === 0 ? {} : { constraints: spec.constraints }),
    ...(spec.labelConstraints === undefined ? {} : { labelConstraints: spec.labelConstraints }),
    ...(spec.affinities === undefined ? {} : { affinities: spec.affinities }),
    ...(spec.reschedule === 'never' ? { reschedule: { policy: 'never' as const } } : {}),
    ...(simple ? { task, count: replicas } : { groups: [group] }),
  };
  return { job, omitted };
}
