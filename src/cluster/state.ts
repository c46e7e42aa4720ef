/**
 * The replicated state machine: what the Raft log means. Every node applies the same committed commands
 * in the same order and reaches the same state. Pure: time comes inside commands (`atMs`, set by the
 * proposer), never from a clock here.
 */
import {
  compileConstraints,
  defaultNamespace,
  matchesAll,
  preemptionPriorityGapDefault,
} from '../allocator/index.ts';
import { assert } from '../shared/assert.ts';
import {
  addTaskEvent,
  describeIssues,
  isTerminal,
  restartDecision,
  taskEventsPerCommandMax,
  type Task,
  type TaskInstance,
  type TaskSpec,
  type TaskState,
  type NamespacePolicySpec,
  dynamicPortRangeDefault,
  taskConstraints,
} from './task.ts';
import type {
  Assignment,
  ClusterNode,
  Command,
  DeploymentAction,
  NodeResources,
  PreemptionCommand,
  TaskReportRecord,
} from './command.ts';
import { liveTasksRefusal, taskLimitsBefore, taskLimitsSchema, type TaskLimits } from './limits.ts';
import { tokensMax, type TokenRecord } from './tokens.ts';
import type { ClusterCaRecord } from './ca.ts';
import type { BackupState } from './backup.ts';
import {
  instanceTaskSpec,
  jobGroups,
  jobsMax,
  rescheduleAttemptsMax,
  resolvedUpdatePolicy,
  type JobSpec,
  type NormalizedGroup,
} from './job.ts';
import {
  groupCurrentVersions,
  groupSpecVersions,
  jobKey,
  resolvedReschedule,
  withVersion,
  type JobRecord,
} from './jobs.ts';
import {
  applyDeploymentProgress,
  deploymentsPerJobMax,
  groupRollout,
  promoteDeployment,
  type DeploymentRecord,
  type DeploymentTask,
} from './deployment.ts';
import { reconcileJob, type GroupRollout, type ReconcileInput, type StartAction } from './reconcile.ts';
import { periodicLaunchName, periodicLaunchesRetainedMax } from './periodic.ts';
import { createHash } from 'node:crypto';
import { ShoalError } from '../shared/errors.ts';
import {
  FrameworkRegistry,
  type FrameworkCommand,
  type FrameworkEffects,
  type FrameworkTaskState,
} from '../frameworks/index.ts';

/** What a node's live tasks hold. */
interface Usage {
  cpuMillis: number;
  memoryBytes: number;
  diskBytes: number;
  readonly devices: Map<string, number>;
  /** Device kind → slot → tasks holding it (slots number a node's devices of a kind, 0…count-1). */
  readonly deviceSlots: Map<string, Map<number, number>>;
  /** Port → tasks holding it (more than one only if a stale plan slipped through; never by design). */
  readonly ports: Map<number, number>;
  /** Ports held that were picked from the node's dynamic range (the allocator counts them as a resource). */
  dynamicPorts: number;
}

/**
 * Hears every change the allocator cares about, as it is applied (the leader keeps an incremental
 * allocator in step this way). Called synchronously from apply(); must not call back into the state.
 */
export interface StateObserver {
  /** A task entered the queue: submitted, or queued again (restart, move, preemption). */
  taskPending(task: Task): void;
  /** A pending task was placed: it now holds resources on task.nodeId. */
  taskPlaced(task: Task): void;
  /** A task left the queue or gave back what it held: it ended, or this run ended before another. */
  taskReleased(task: Task): void;
  /** A placed task is being stopped (kill, move, preempt): it holds its resources until it ends. */
  taskTerminating(task: Task): void;
  /** A pending task now waits for the node it preempted on (task.nominatedNodeId). */
  taskNominated(task: Task): void;
  nodeChanged(node: ClusterNode): void;
  namespaceChanged(policy: NamespacePolicySpec): void;
  /** The whole state was replaced by a snapshot. */
  restored(): void;
}

/** What one command, or one report of a reportTasks, came to. */
export type CommandResult =
  | { readonly ok: true; readonly taskId?: string }
  | { readonly ok: false; readonly code: 'NOT_FOUND' | 'CONFLICT'; readonly message: string };

/** What applying a command came to; a reportTasks is applied whole, with each report's own result. */
export type ApplyResult =
  | { readonly ok: true; readonly taskId?: string; readonly results?: readonly CommandResult[] }
  | { readonly ok: false; readonly code: 'NOT_FOUND' | 'CONFLICT'; readonly message: string };

interface StateSnapshot {
  readonly appliedIndex: number;
  readonly nodes: ClusterNode[];
  readonly tasks: Task[];
  readonly terminalOrder: string[];
  /** Absent in snapshots from before namespaces. */
  readonly namespaces?: NamespacePolicySpec[];
  /** Absent in snapshots from before tokens. */
  readonly tokens?: TokenRecord[];
  /** Absent in snapshots from before the cluster CA. */
  readonly clusterCa?: ClusterCaRecord | null;
  /** Absent in snapshots from before jobs. */
  readonly jobs?: JobRecord[];
  /** Absent in snapshots from before deployments. */
  readonly deployments?: DeploymentRecord[];
  /** Absent in snapshots from before frameworks. */
  readonly frameworks?: unknown;
  /** Absent in snapshots from before replicated limits: taskLimitsBefore held. */
  readonly taskLimits?: unknown;
}

/**
 * Ended tasks kept per instance of a job (job, group, task, slot): the reconciler reads them to count
 * reschedule attempts (at most rescheduleAttemptsMax) and a crash loop's recent ends.
 */
export const instanceHistoryMax = rescheduleAttemptsMax + 2;

/** Which observed state may follow which; reports that would go backwards are ignored. */
const stateOrder: Record<TaskState, number> = {
  pending: 0,
  assigned: 1,
  starting: 2,
  running: 3,
  finished: 4,
  failed: 4,
  killed: 4,
  lost: 4,
};

export class ClusterState {
  readonly tasks = new Map<string, Task>();
  readonly nodes = new Map<string, ClusterNode>();
  readonly namespaces = new Map<string, NamespacePolicySpec>();
  /** Resources held on each node by its assigned, starting and running tasks. */
  private readonly used = new Map<string, Usage>();
  /** Set by the leader while it keeps an allocator in step; see StateObserver. */
  observer: StateObserver | null = null;
  private readonly pending = new Set<string>();
  /** Live tasks by the node they are assigned to, so an agent's view costs what runs there, not the cluster. */
  private readonly liveByNode = new Map<string, Set<string>>();
  /**
   * Ended plain tasks in the order they ended, oldest first, from terminalHead on (a queue: forgetting the
   * oldest of a million must not move the rest). Retention by count and by age forgets from the front.
   */
  private terminalOrder: string[] = [];
  private terminalHead = 0;
  private liveCount = 0;
  /** How many live tasks the cluster accepts, and how long and how many ended ones it keeps (limits.ts). */
  taskLimits: TaskLimits = taskLimitsBefore;

  /** Tasks not yet ended (pending, placed, starting, running), what taskLimits.liveTasksMax bounds. */
  get liveTaskCount(): number {
    return this.liveCount;
  }
  /** API tokens by accessor id, and the same by the hash of their secret (what a request is looked up by). */
  readonly tokens = new Map<string, TokenRecord>();
  private readonly tokensBySecretHash = new Map<string, TokenRecord>();
  /** The CA that signs nodes' API certificates under `--tls auto`; null until a node needs one. */
  clusterCa: ClusterCaRecord | null = null;
  /** Jobs by namespace/name (jobs.ts). */
  readonly jobs = new Map<string, JobRecord>();
  /** Task ids of each job's instances, live and terminal (derived). */
  private readonly tasksByJob = new Map<string, Set<string>>();
  /**
   * Of those, the ended ones by instance slot (derived; a job's is built from tasksByJob the first time one
   * of its instances ends, and kept in step after): pruneInstanceHistory's count. Scanning every task of
   * the job instead cost O(job) per ended task: 20 s of a 450-s profile on each voter when leases lapsed
   * on 200,000 tasks of 1,000-task jobs.
   */
  private readonly endedBySlot = new Map<string, Map<string, Set<string>>>();
  /** Deployments by id (deployment.ts), at most deploymentsPerJobMax per job, oldest first per job. */
  readonly deployments = new Map<string, DeploymentRecord>();
  /** Running tasks by the service they answer for (namespace/job, see serviceOf): discovery's index. */
  private readonly runningByService = new Map<string, Set<string>>();
  /** Jobs whose instances or nodes changed while applying a command: reconciled before apply returns. */
  private readonly touchedJobs = new Set<string>();
  /**
   * What the reconciler did while applying the last command: instances it created and ones it began to
   * stop. Not part of the state: the event derivation reads it (a command names none of these tasks).
   */
  readonly jobEffects: { readonly created: string[]; readonly stopping: string[] } = {
    created: [],
    stopping: [],
  };
  /** Frameworks' durable records, their tasks and unacknowledged updates (src/frameworks). */
  readonly frameworks = new FrameworkRegistry();
  /**
   * What the last framework command asks of the leader (events to send, a stream to close). Not part of
   * the state: followers ignore it.
   */
  frameworkEffects: FrameworkEffects | null = null;
  appliedIndex = 0;

  apply(index: number, command: Command): ApplyResult {
    assert(index > this.appliedIndex, 'commands apply in log order');
    this.appliedIndex = index;
    this.jobEffects.created.length = 0;
    this.jobEffects.stopping.length = 0;
    this.frameworkEffects = null;
    const result = this.applyCommand(index, command);
    // Every job whose instances ended or whose nodes changed is brought back to its shape in the same
    // step: deterministic on every node, and no instance waits for another log entry to be replaced.
    if (this.touchedJobs.size > 0) this.reconcileTouched(index, 'atMs' in command ? command.atMs : 0);
    // Ended tasks age by the times in the log, the same on every node, never by this node's clock.
    if ('atMs' in command) this.forgetExpired(command.atMs);
    return result;
  }

  private applyCommand(index: number, command: Command): ApplyResult {
    switch (command.type) {
      case 'submitTask':
        return this.submit(index, [{ id: command.id, spec: command.spec }], command.atMs);
      case 'submitTasks':
        return this.submit(index, command.tasks, command.atMs);
      case 'assignTasks':
        for (const preemption of command.preemptions ?? []) {
          this.preempt(
            preemption,
            command.preemptionPriorityGap ?? preemptionPriorityGapDefault,
            command.atMs,
          );
        }
        for (const assignment of command.assignments) this.assign(assignment, command.atMs);
        for (const { taskId, reason } of command.waiting) {
          const task = this.tasks.get(taskId);
          if (task?.state !== 'pending') continue;
          task.reason = reason;
          addTaskEvent(task, { atMs: command.atMs, message: `waiting: ${reason}` });
        }
        return { ok: true };
      case 'reportTask':
        return this.report(command.nodeId, command, command.atMs);
      case 'reportTasks': {
        // As a reportTask each, in order; the jobs they touch are reconciled once, when apply ends.
        const results = command.reports.map((report) => this.report(command.nodeId, report, command.atMs));
        return { ok: true, results };
      }
      case 'setTaskLimits':
        this.taskLimits = command.limits;
        this.pruneTerminal();
        return { ok: true };
      case 'taskEvents':
        return this.recordEvents(command);
      case 'killTask':
        return this.kill(command.taskId, command.atMs);
      case 'upsertNode': {
        const existing = this.nodes.get(command.node.id);
        this.nodes.set(command.node.id, {
          ...command.node,
          status: 'up',
          draining: existing?.draining ?? false,
          updatedAtMs: command.atMs,
        });
        if (!existing) this.used.set(command.node.id, emptyUsage());
        this.notifyNode(command.node.id);
        this.touchSystemJobs();
        return { ok: true };
      }
      case 'nodeDown':
        this.touchSystemJobs();
        return this.nodeDown(command.nodeId, command.reason, command.atMs);
      case 'drainNode':
        this.touchSystemJobs();
        return this.drain(command.nodeId, command.drain, command.atMs);
      case 'setNamespace':
        this.namespaces.set(command.policy.name, command.policy);
        this.observer?.namespaceChanged(command.policy);
        return { ok: true };
      case 'createToken':
        return this.createToken(command.token);
      case 'revokeToken':
        return this.revokeToken(command.accessorId);
      case 'setClusterCa':
        // One CA per cluster: two nodes that raced to make one both use the first committed.
        if (this.clusterCa !== null)
          return { ok: false, code: 'CONFLICT', message: 'the cluster has a CA already' };
        this.clusterCa = command.ca;
        return { ok: true };
      case 'restoreBackup':
        return this.restoreBackup(command.backup, command.keepClusterCa, command.atMs);
      case 'putJob':
        return this.putJob(index, command.job, command.checkIndex ?? null, command.atMs);
      case 'stopJob':
        return this.stopJob(index, command.namespace, command.name, command.purge, command.atMs);
      case 'launchPeriodic':
        return this.launchPeriodic(index, command);
      case 'taskHealth':
        return this.recordHealth(command);
      case 'deploymentProgress':
        return this.deploymentProgress(index, command);
      case 'subscribeFramework':
      case 'disconnectFramework':
      case 'expireFramework':
      case 'teardownFramework':
      case 'acknowledgeFrameworkUpdate':
        return this.applyFramework(command);
      case 'launchFrameworkTasks':
        return this.launchFrameworkTasks(index, command);
      case 'controlDeployment':
        return this.controlDeployment(index, command.deploymentId, command.action, command.atMs);
    }
  }

  /** A running task's health, from the agent running this attempt; it may let a deployment go on. */
  /** A framework's durable command; the tasks of a framework that is gone are killed with it. */
  private applyFramework(command: FrameworkCommand): ApplyResult {
    const result = this.frameworks.apply(command);
    if (!result.ok) {
      const code = result.error.code === 'NOT_FOUND' ? 'NOT_FOUND' : 'CONFLICT';
      return { ok: false, code, message: result.error.message };
    }
    this.frameworkEffects = result.effects;
    for (const taskId of result.effects.killTasks) this.kill(taskId, command.atMs);
    return { ok: true };
  }

  /**
   * An ACCEPT's launch: every task checked against its node as the leader's plans are (up, not draining, its
   * driver, its label rules, room for all of this launch's tasks there together, free static ports), then
   * all created and placed, or none. A framework task never restarts or moves by the cluster's policies: its
   * framework decides, from its updates.
   */
  private launchFrameworkTasks(
    index: number,
    command: Extract<Command, { type: 'launchFrameworkTasks' }>,
  ): ApplyResult {
    const framework = this.frameworks.get(command.frameworkId);
    if (framework === undefined)
      return { ok: false, code: 'NOT_FOUND', message: `no framework ${command.frameworkId}` };
    const refuse = (message: string): ApplyResult => ({ ok: false, code: 'CONFLICT', message });
    if (this.liveCount + command.tasks.length > this.taskLimits.liveTasksMax)
      return refuse(liveTasksRefusal(this.liveCount, command.tasks.length, this.taskLimits));
    const byNode = new Map<string, TaskSpec[]>();
    for (const launch of command.tasks) {
      if (this.tasks.has(launch.id)) return refuse(`task id ${launch.id} is taken`);
      const node = this.nodes.get(launch.nodeId);
      if (node === undefined || node.status !== 'up' || node.draining)
        return refuse(`node ${launch.nodeId} is not up and schedulable`);
      if (!node.drivers.includes(launch.spec.driver))
        return refuse(`node ${node.name} has no healthy ${launch.spec.driver} driver`);
      const constraints = compileConstraints(taskConstraints(launch.spec), launch.spec.labelConstraints);
      if (!matchesAll(node.labels, constraints))
        return refuse(`task ${launch.frameworkTaskId} does not match node ${node.name}'s labels`);
      const specs = byNode.get(node.id) ?? [];
      specs.push(launch.spec);
      byNode.set(node.id, specs);
    }
    for (const [nodeId, specs] of byNode) {
      const node = this.nodes.get(nodeId);
      if (node === undefined || !this.allFitOn(node, specs))
        return refuse(`the tasks for node ${node?.name ?? nodeId} no longer fit there`);
    }
    const refused = this.frameworks.addTasks(
      command.frameworkId,
      command.tasks.map((launch) => ({
        taskId: launch.frameworkTaskId,
        clusterTaskId: launch.id,
        nodeId: launch.nodeId,
      })),
      command.atMs,
    );
    if (refused !== null) return refuse(refused.message);
    for (const launch of command.tasks) {
      const spec: TaskSpec = {
        ...launch.spec,
        namespace: framework.info.role,
        restart: { policy: 'never', maxRestarts: 0, delayMs: 0 },
        reschedule: 'never',
      };
      this.submit(index, [{ id: launch.id, spec }], command.atMs);
      const task = this.tasks.get(launch.id);
      if (task === undefined) continue;
      task.framework = { id: command.frameworkId, taskId: launch.frameworkTaskId, name: framework.info.name };
      this.assign({ taskId: launch.id, nodeId: launch.nodeId }, command.atMs);
      // Checked above with the launch's other tasks; a port clash between two of them is the one case left.
      if (task.state === 'pending')
        this.transition(task, 'failed', command.atMs, 'its offer no longer had its ports free', null);
    }
    return { ok: true, taskId: command.tasks[0]?.id ?? '' };
  }

  /** Whether every one of `specs` fits on `node` at once, with what its live tasks hold. */
  private allFitOn(node: ClusterNode, specs: readonly TaskSpec[]): boolean {
    const free = this.freeOn(node.id);
    const wanted = { cpuMillis: 0, memoryBytes: 0, diskBytes: 0, dynamicPorts: 0 };
    const devices = new Map<string, number>();
    const staticPorts = new Set<number>();
    const inUse = new Set(this.portsInUseOn(node.id));
    for (const spec of specs) {
      wanted.cpuMillis += spec.cpuMillis;
      wanted.memoryBytes += spec.memoryBytes;
      wanted.diskBytes += spec.diskBytes ?? 0;
      for (const [kind, count] of Object.entries(spec.devices ?? {}))
        devices.set(kind, (devices.get(kind) ?? 0) + count);
      for (const port of Object.values(spec.ports ?? {})) {
        if (staticPorts.has(port) || inUse.has(port)) return false;
        staticPorts.add(port);
      }
      wanted.dynamicPorts += spec.dynamicPorts?.length ?? 0;
    }
    if (wanted.cpuMillis > free.cpuMillis || wanted.memoryBytes > free.memoryBytes) return false;
    if (wanted.diskBytes > free.diskBytes) return false;
    for (const [kind, count] of devices) if (count > (free.devices[kind] ?? 0)) return false;
    const range = node.dynamicPorts ?? dynamicPortRangeDefault;
    return wanted.dynamicPorts <= range.max - range.min + 1 - this.dynamicPortsHeldOn(node.id);
  }

  private recordHealth(command: Extract<Command, { type: 'taskHealth' }>): ApplyResult {
    const task = this.tasks.get(command.taskId);
    if (!task) return { ok: false, code: 'NOT_FOUND', message: `no task ${command.taskId}` };
    if (task.nodeId !== command.nodeId || task.attempt !== command.attempt || isTerminal(task.state))
      return { ok: true };
    if (task.health?.status === command.health.status && task.health.message === command.health.message)
      return { ok: true };
    task.health = command.health;
    const { status, message } = command.health;
    addTaskEvent(task, {
      atMs: command.atMs,
      message: status === 'healthy' ? 'healthy' : `unhealthy: ${message}`,
    });
    return { ok: true };
  }

  private indexRunning(task: Task, running: boolean): void {
    const key = serviceKey(task);
    let ids = this.runningByService.get(key);
    if (running) {
      if (!ids) this.runningByService.set(key, (ids = new Set()));
      ids.add(task.id);
    } else if (ids) {
      ids.delete(task.id);
      if (ids.size === 0) this.runningByService.delete(key);
    }
  }

  /**
   * The running tasks of a service: a job's instances, or the replicas of `shoal run --name NAME
   * --replicas N`, in a namespace. Null when the cluster knows no such service (neither a job nor a task
   * running under that name); an empty list when it knows one with nothing running.
   */
  serviceTasks(namespace: string, name: string): Task[] | null {
    const key = jobKey(namespace, name);
    const ids = this.runningByService.get(key);
    if (ids === undefined) return this.jobs.has(key) ? [] : null;
    const tasks: Task[] = [];
    for (const id of ids) {
      const task = this.tasks.get(id);
      if (task) tasks.push(task);
    }
    return tasks.sort((a, b) => compareIds(a.id, b.id));
  }

  /**
   * The name a service goes by, found without regard to case (DNS names carry none): a job's or a running
   * task's in the namespace; null when there is none.
   */
  serviceNameIgnoringCase(namespace: string, lowerName: string): string | null {
    const wanted = jobKey(namespace, lowerName).toLowerCase();
    for (const key of this.runningByService.keys())
      if (key.toLowerCase() === wanted) return key.slice(key.indexOf('/') + 1);
    for (const job of this.jobs.values())
      if (jobKey(job.namespace, job.name).toLowerCase() === wanted) return job.name;
    return null;
  }

  /** The deployments of a job, oldest first. */
  deploymentsOf(namespace: string, name: string): DeploymentRecord[] {
    const found: DeploymentRecord[] = [];
    for (const deployment of this.deployments.values())
      if (deployment.namespace === namespace && deployment.job === name) found.push(deployment);
    // Ids are d + the creating entry's log index: in log order, whatever the proposers' clocks said.
    return found.sort((a, b) => Number(a.id.slice(1)) - Number(b.id.slice(1)));
  }

  /** The job's deployment that is running or paused, if any. */
  activeDeployment(namespace: string, name: string): DeploymentRecord | undefined {
    return this.deploymentsOf(namespace, name).find(
      (deployment) => deployment.status === 'running' || deployment.status === 'paused',
    );
  }

  /** The job's tasks as the deployment watcher sees them. */
  deploymentTasks(deployment: DeploymentRecord): DeploymentTask[] {
    const key = jobKey(deployment.namespace, deployment.job);
    const job = this.jobs.get(key);
    if (!job) return [];
    const parts = reconcileGroups(job);
    const tasks: DeploymentTask[] = [];
    for (const id of this.tasksByJob.get(key) ?? []) {
      const task = this.tasks.get(id);
      if (!task?.instance) continue;
      const group = reconcileGroupName(task.instance.group, task.instance.task, parts);
      tasks.push({
        id,
        group,
        current: isCurrentVersion(job, task.instance.group, task.instance.version),
        state: task.state,
        desired: task.desired,
        hasChecks: (task.spec.checks ?? []).length > 0,
        health: task.health,
        runningSinceMs: task.runningSinceMs,
        createdAtMs: task.submittedAtMs,
        reason: task.reason,
      });
    }
    return tasks.sort((a, b) => compareIds(a.id, b.id));
  }

  private deploymentProgress(
    index: number,
    command: Extract<Command, { type: 'deploymentProgress' }>,
  ): ApplyResult {
    const deployment = this.deployments.get(command.deploymentId);
    if (!deployment)
      return { ok: false, code: 'NOT_FOUND', message: `no deployment ${command.deploymentId}` };
    if (deployment.status !== 'running' && deployment.status !== 'paused') return { ok: true };
    applyDeploymentProgress(deployment, { ...command, nextCheckAtMs: null }, command.atMs);
    this.deploymentEnded(index, deployment, command.atMs);
    this.touchedJobs.add(jobKey(deployment.namespace, deployment.job));
    return { ok: true };
  }

  private controlDeployment(index: number, id: string, action: DeploymentAction, atMs: number): ApplyResult {
    const deployment = this.deployments.get(id);
    if (!deployment) return { ok: false, code: 'NOT_FOUND', message: `no deployment ${id}` };
    const active = deployment.status === 'running' || deployment.status === 'paused';
    if (!active)
      return { ok: false, code: 'CONFLICT', message: `deployment ${id} is ${deployment.status} already` };
    switch (action) {
      case 'pause':
        deployment.status = 'paused';
        deployment.statusReason = 'paused by an operator';
        deployment.progressDeadlineAtMs = null;
        break;
      case 'resume':
        deployment.status = 'running';
        deployment.statusReason = 'resumed by an operator';
        deployment.progressDeadlineAtMs =
          deployment.policy.progressDeadlineMs > 0 ? atMs + deployment.policy.progressDeadlineMs : null;
        break;
      case 'promote': {
        const problem = promoteDeployment(deployment, atMs);
        if (problem !== null) return { ok: false, code: 'CONFLICT', message: problem };
        break;
      }
      case 'fail':
        deployment.status = 'failed';
        deployment.statusReason = 'failed by an operator';
        break;
    }
    deployment.updatedAtMs = atMs;
    this.deploymentEnded(index, deployment, atMs);
    this.touchedJobs.add(jobKey(deployment.namespace, deployment.job));
    return { ok: true };
  }

  /**
   * What follows a deployment's end: success makes its version the job's stable one; failure under
   * autoRevert applies the stable version again, as a new version (which rolls out like any other).
   */
  private deploymentEnded(index: number, deployment: DeploymentRecord, atMs: number): void {
    const job = this.jobs.get(jobKey(deployment.namespace, deployment.job));
    if (!job) return;
    // Still the job's newest spec (later versions changed no group's spec, only a count or the policy)?
    const newest = Object.keys(deployment.groups).every((group) => {
      const part = reconcileGroups(job).get(group);
      return part !== undefined && isCurrentVersion(job, part.group.name, deployment.jobVersion);
    });
    if (!newest) return;
    if (deployment.status === 'successful') {
      job.stableVersion = job.version;
      return;
    }
    if (deployment.status !== 'failed' || !deployment.policy.autoRevert) return;
    const stable = deployment.stableVersion;
    const target = job.history.find((record) => record.version === stable);
    if (stable === null || stable === deployment.jobVersion || target === undefined) {
      deployment.statusReason += '; no stable version to revert to';
      return;
    }
    const result = this.putJob(index, target.spec, null, atMs, stable);
    // putJob made a new record for the new version.
    const reverted = this.jobs.get(jobKey(deployment.namespace, deployment.job));
    if (result.ok && reverted !== undefined && reverted.version !== deployment.jobVersion) {
      deployment.revertedToVersion = stable;
      deployment.statusReason += `; reverted to version ${stable} (as version ${reverted.version})`;
    }
  }

  /**
   * Launches one slot of a periodic job as a batch job of its own (NAME-SLOT), once: a slot at or before
   * the last one launched is ignored, whoever proposes it. With prohibitOverlap, a slot whose previous
   * launch still runs is recorded and skipped. Launches beyond the retention bound are forgotten, oldest
   * ended first.
   */
  private launchPeriodic(index: number, command: Extract<Command, { type: 'launchPeriodic' }>): ApplyResult {
    const key = jobKey(command.namespace, command.name);
    const job = this.jobs.get(key);
    if (job?.spec.type !== 'periodic')
      return { ok: false, code: 'NOT_FOUND', message: `no periodic job ${command.name}` };
    if (job.stopped || (job.lastLaunchMs !== null && command.slotMs <= job.lastLaunchMs)) return { ok: true };
    job.lastLaunchMs = command.slotMs;
    if (!command.launch) return { ok: true };
    const launches = [...this.jobs.values()]
      .filter((other) => other.parent === job.name && other.namespace === job.namespace)
      .sort((a, b) => a.createIndex - b.createIndex);
    const running = (other: JobRecord): boolean =>
      this.jobTasks(other.namespace, other.name).some((task) => !isTerminal(task.state));
    if (job.spec.periodic?.prohibitOverlap === true && launches.some(running)) return { ok: true };
    for (const old of launches
      .filter((other) => !running(other))
      .slice(0, Math.max(0, launches.length + 1 - periodicLaunchesRetainedMax)))
      this.forgetJob(jobKey(old.namespace, old.name));
    const name = periodicLaunchName(job.name, command.slotMs);
    const spec: JobSpec = { ...job.spec, name, type: 'batch' };
    delete spec.periodic;
    const childKey = jobKey(job.namespace, name);
    // A full cluster skips the launch (recorded above), as it would refuse a new job.
    if (this.jobs.has(childKey) || this.jobs.size >= jobsMax) return { ok: true };
    this.jobs.set(childKey, {
      namespace: job.namespace,
      name,
      version: 1,
      spec,
      groupVersions: groupSpecVersions(undefined, spec, 1),
      stopped: false,
      createIndex: index,
      createdAtMs: command.atMs,
      modifyIndex: index,
      updatedAtMs: command.atMs,
      history: [{ version: 1, spec, atMs: command.atMs, index }],
      lastLaunchMs: null,
      parent: job.name,
    });
    this.touchedJobs.add(childKey);
    return { ok: true };
  }

  /** Forgets a job's record; its tasks stay, as tasks of their own. */
  private forgetJob(key: string): void {
    const job = this.jobs.get(key);
    if (job)
      for (const deployment of this.deploymentsOf(job.namespace, job.name))
        this.deployments.delete(deployment.id);
    this.jobs.delete(key);
    const ids = [...(this.tasksByJob.get(key) ?? [])];
    this.tasksByJob.delete(key);
    this.endedBySlot.delete(key);
    for (const id of ids) {
      const task = this.tasks.get(id);
      if (!task) continue;
      // Its service is its own name from now on.
      const running = task.state === 'running';
      if (running) this.indexRunning(task, false);
      delete task.instance;
      if (running) this.indexRunning(task, true);
      // A plain task now: an ended one joins the cluster-wide retention.
      if (isTerminal(task.state)) this.terminalOrder.push(id);
    }
    this.pruneTerminal();
  }

  /**
   * A job applied: a new version when its spec changed (an unchanged spec changes nothing, so applying
   * a file twice is harmless), then reconciled. With checkIndex, refused unless the job's modify index is
   * still that (0: the job must not exist).
   */
  private putJob(
    index: number,
    spec: JobSpec,
    checkIndex: number | null,
    atMs: number,
    revertOf: number | null = null,
  ): ApplyResult {
    const key = jobKey(spec.namespace, spec.name);
    const existing = this.jobs.get(key);
    if (checkIndex !== null && (existing?.modifyIndex ?? 0) !== checkIndex)
      return {
        ok: false,
        code: 'CONFLICT',
        message:
          existing === undefined
            ? `job ${spec.name} does not exist (any more); plan again`
            : `job ${spec.name} changed since the plan (its modify index is ${existing.modifyIndex}, not ${checkIndex}); plan again`,
      };
    if (existing && !existing.stopped && JSON.stringify(existing.spec) === JSON.stringify(spec))
      return { ok: true };
    if (!existing && this.jobs.size >= jobsMax)
      return {
        ok: false,
        code: 'CONFLICT',
        message: `the cluster holds ${jobsMax} jobs; purge stopped ones first`,
      };
    const changed = existing === undefined || JSON.stringify(existing.spec) !== JSON.stringify(spec);
    const version = existing === undefined ? 1 : changed ? existing.version + 1 : existing.version;
    const record: JobRecord = {
      namespace: spec.namespace ?? defaultNamespace,
      name: spec.name,
      version,
      spec,
      groupVersions: changed ? groupSpecVersions(existing, spec, version) : existing.groupVersions,
      stopped: false,
      createIndex: existing?.createIndex ?? index,
      createdAtMs: existing?.createdAtMs ?? atMs,
      modifyIndex: index,
      updatedAtMs: atMs,
      history: changed
        ? withVersion(existing?.history ?? [], { version, spec, atMs, index })
        : existing.history,
      lastLaunchMs: existing?.lastLaunchMs ?? null,
      ...(existing?.parent === undefined ? {} : { parent: existing.parent }),
      ...(existing?.stableVersion === undefined ? {} : { stableVersion: existing.stableVersion }),
    };
    record.currentVersions = groupCurrentVersions(record.history);
    this.jobs.set(key, record);
    this.touchedJobs.add(key);
    if (changed) this.startDeployment(index, record, existing, atMs, revertOf);
    return { ok: true };
  }

  /**
   * A service job's new version rolls out as a deployment of the groups whose spec changed; a deployment
   * still running for an older version is cancelled (the new one takes over from where it got).
   */
  private startDeployment(
    index: number,
    job: JobRecord,
    previous: JobRecord | undefined,
    atMs: number,
    revertOf: number | null,
  ): void {
    const earlier = this.activeDeployment(job.namespace, job.name);
    const policy = resolvedUpdatePolicy(job.spec);
    const respecced = Object.values(job.groupVersions).some((version) => version === job.version);
    if (earlier && !respecced && job.spec.type === 'service') {
      // No group's spec changed (a count, the update policy): the deployment goes on, under the new policy
      // and counts.
      earlier.policy = policy;
      for (const [name, part] of reconcileGroups(job)) {
        const group = earlier.groups[name];
        if (group) earlier.groups[name] = { ...group, desiredTotal: part.group.count ?? 0 };
      }
      earlier.updatedAtMs = atMs;
      return;
    }
    if (earlier) {
      earlier.status = 'cancelled';
      earlier.statusReason = `superseded by version ${job.version}`;
      earlier.updatedAtMs = atMs;
    }
    if (job.spec.type !== 'service') return;
    const parts = reconcileGroups(job);
    const groups: DeploymentRecord['groups'] = {};
    for (const [name, part] of parts) {
      if (job.groupVersions[part.group.name] !== job.version) continue;
      const count = part.group.count ?? 0;
      // Canaries only make sense beside instances of an older version.
      const hasOld =
        previous !== undefined &&
        this.jobTasks(job.namespace, job.name).some(
          (task) => task.instance?.group === part.group.name && !isTerminal(task.state),
        );
      const canaries = hasOld ? Math.min(policy.canary, count) : 0;
      groups[name] = {
        desiredTotal: count,
        desiredCanaries: canaries,
        promoted: canaries === 0,
        healthyTaskIds: [],
        unhealthy: [],
        canaryTaskIds: [],
      };
    }
    if (Object.keys(groups).length === 0) return;
    const deployment: DeploymentRecord = {
      id: `d${index}`,
      namespace: job.namespace,
      job: job.name,
      jobVersion: job.version,
      stableVersion: job.stableVersion ?? null,
      policy,
      status: 'running',
      statusReason:
        revertOf === null ? `rolling out version ${job.version}` : `reverting to version ${revertOf}`,
      groups,
      createdAtMs: atMs,
      updatedAtMs: atMs,
      progressDeadlineAtMs: policy.progressDeadlineMs > 0 ? atMs + policy.progressDeadlineMs : null,
    };
    this.deployments.set(deployment.id, deployment);
    // Bounded per job: the oldest ended ones go.
    const all = this.deploymentsOf(job.namespace, job.name);
    for (const old of all.slice(0, Math.max(0, all.length - deploymentsPerJobMax)))
      if (old.status !== 'running' && old.status !== 'paused') this.deployments.delete(old.id);
  }

  private stopJob(index: number, namespace: string, name: string, purge: boolean, atMs: number): ApplyResult {
    const key = jobKey(namespace, name);
    const job = this.jobs.get(key);
    if (!job) return { ok: false, code: 'NOT_FOUND', message: `no job ${name} in namespace ${namespace}` };
    job.stopped = true;
    job.modifyIndex = index;
    job.updatedAtMs = atMs;
    // Stop its instances now; a purged job's record goes with them (its ended tasks stay, as plain tasks).
    this.reconcileJobNow(key, index, atMs);
    if (purge) this.forgetJob(key);
    return { ok: true };
  }

  private touchSystemJobs(): void {
    for (const [key, job] of this.jobs)
      if (job.spec.type === 'system' && !job.stopped) this.touchedJobs.add(key);
  }

  private reconcileTouched(index: number, atMs: number): void {
    // In key order, so every node makes the same tasks with the same ids.
    const keys = [...this.touchedJobs].sort();
    this.touchedJobs.clear();
    for (const key of keys) this.reconcileJobNow(key, index, atMs);
    // What the reconciler's own stops touched, it has accounted for already.
    this.touchedJobs.clear();
  }

  /** Brings one job's instances to its shape: starts the missing, stops the extra and the outdated. */
  private reconcileJobNow(key: string, index: number, atMs: number): void {
    const job = this.jobs.get(key);
    if (!job) return;
    // A periodic job runs no instances of its own (its launches are jobs): any it has, from before its type
    // changed, stop.
    const actions = reconcileJob(this.reconcileInput(key, job, atMs));
    for (const stop of actions.stop) this.stopInstanceTask(stop.taskId, stop.reason, atMs);
    const parts = reconcileGroups(job);
    const starts: (StartAction & { readonly part: ReconcileGroupPart })[] = [];
    const instancesStarting = new Map<
      string,
      { slot: number; part: ReconcileGroupPart; notBeforeMs: number | null }
    >();
    for (const start of actions.start) {
      const part = parts.get(start.group);
      if (!part) continue;
      starts.push({ ...start, part });
      if (part.several && start.nodeId === undefined)
        instancesStarting.set(`${part.group.name}\u0000${start.slot}`, {
          slot: start.slot,
          part,
          notBeforeMs: start.notBeforeMs,
        });
    }
    // An instance of several tasks starts again whole: its live tasks stop, and start with the new one as
    // one co-located gang (a task alone in the queue could land on another node).
    for (const [instance, { slot, part }] of instancesStarting) {
      for (const sibling of this.instanceTasks(key, part.group.name, slot)) {
        if (isTerminal(sibling.state) || sibling.desired === 'kill' || !sibling.instance) continue;
        const composite = reconcileGroupName(part.group.name, sibling.instance.task, parts);
        if (starts.some((start) => start.group === composite && start.slot === slot)) continue;
        const siblingPart = parts.get(composite);
        this.stopInstanceTask(sibling.id, 'restarts with its instance', atMs);
        if (siblingPart)
          starts.push({
            group: composite,
            slot,
            notBeforeMs: instancesStarting.get(instance)?.notBeforeMs ?? null,
            reason: `restarts with its instance (${instance.split('\u0000')[0] ?? ''}[${slot}])`,
            replaces: sibling.id,
            part: siblingPart,
          });
      }
    }
    let n = 0;
    for (const start of starts) {
      if (this.liveCount >= this.taskLimits.liveTasksMax) break;
      const { part } = start;
      // A free id derived from the entry: the same on every node (a taken one, from a restored backup or a
      // client's own choice, is skipped deterministically).
      let id = instanceTaskId(index, key, n++);
      while (this.tasks.has(id)) id = instanceTaskId(index, key, n++);
      const spec = instanceTaskSpec(job.spec, part.group, {
        ...start,
        group: part.group.name,
        task: part.task,
      });
      if (part.several && start.nodeId === undefined) {
        spec.group = `${job.namespace}/${job.name}.${part.group.name}.${start.slot}.i${index}`;
        spec.colocated = true;
      }
      this.submit(index, [{ id, spec }], atMs);
      const task = this.tasks.get(id);
      if (!task) continue;
      task.instance = {
        job: job.name,
        group: part.group.name,
        task: part.task,
        slot: start.slot,
        version: job.version,
        ...(start.nodeId === undefined ? {} : { pinnedNodeId: start.nodeId }),
      };
      task.notBeforeMs = start.notBeforeMs;
      task.reason = start.reason;
      addTaskEvent(task, { atMs, message: `${job.name} v${job.version}: ${start.reason}` });
      if (start.canary === true)
        this.activeDeployment(job.namespace, job.name)?.groups[start.group]?.canaryTaskIds.push(id);
      this.trackJobTask(key, id);
      this.jobEffects.created.push(id);
    }
  }

  /** Stops a job's task for the reconciler, saying why. */
  private stopInstanceTask(taskId: string, reason: string, atMs: number): void {
    const task = this.tasks.get(taskId);
    if (!task || isTerminal(task.state) || task.desired === 'kill') return;
    addTaskEvent(task, { atMs, message: `stopping: ${reason}` });
    this.jobEffects.stopping.push(task.id);
    this.kill(task.id, atMs);
  }

  /** The tasks of one instance (group and slot) of a job, in id order. */
  private instanceTasks(key: string, group: string, slot: number): Task[] {
    const tasks: Task[] = [];
    for (const id of this.tasksByJob.get(key) ?? []) {
      const task = this.tasks.get(id);
      if (task?.instance?.group === group && task.instance.slot === slot) tasks.push(task);
    }
    return tasks.sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  private reconcileInput(key: string, job: JobRecord, atMs: number): ReconcileInput {
    const parts = reconcileGroups(job);
    const tasks: ReconcileInput['tasks'][number][] = [];
    for (const id of this.tasksByJob.get(key) ?? []) {
      const task = this.tasks.get(id);
      if (!task?.instance) continue;
      tasks.push({
        id,
        group: reconcileGroupName(task.instance.group, task.instance.task, parts),
        slot: task.instance.slot,
        version: task.instance.version,
        nodeId: task.instance.pinnedNodeId ?? task.nodeId,
        state: task.state,
        desired: task.desired,
        updatedAtMs: task.updatedAtMs,
      });
    }
    tasks.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    // The deployment of this version: running, paused, or failed without a revert (it then replaces nothing more).
    // The job's newest deployment, while it runs, is paused, or failed without a revert (it then replaces
    // nothing more); per group only while it rolls out the group's current spec (a later version may have
    // changed just the count).
    const deployment = this.deploymentsOf(job.namespace, job.name)
      .filter(
        (candidate) =>
          candidate.status === 'running' || candidate.status === 'paused' || candidate.status === 'failed',
      )
      .at(-1);
    const rolloutOf = (group: string): { rollout?: GroupRollout } => {
      const part = parts.get(group);
      if (deployment === undefined || part === undefined) return {};
      if (!isCurrentVersion(job, part.group.name, deployment.jobVersion)) return {};
      const rollout = groupRollout(deployment, group);
      if (rollout === undefined) return {};
      // An instance of several tasks starts whole (see reconcileJobNow): beside its old one it cannot.
      const several = parts.get(group)?.several === true;
      return { rollout: several ? { ...rollout, order: 'stop-first' } : rollout };
    };
    return {
      type: job.spec.type === 'periodic' ? 'batch' : job.spec.type,
      version: job.version,
      stopped: job.stopped || job.spec.type === 'periodic',
      groups: [...parts].map(([name, part]) => ({
        name,
        count: part.group.count,
        specVersion: job.groupVersions[part.group.name] ?? job.version,
        currentVersions: currentVersionsOf(job, part.group.name),
        ...rolloutOf(name),
        eligibleNodeIds:
          job.spec.type === 'system'
            ? this.eligibleNodeIds(
                instanceTaskSpec(job.spec, part.group, { group: part.group.name, task: part.task, slot: 0 }),
              )
            : [],
      })),
      reschedule: resolvedReschedule(job.spec),
      tasks,
      nowMs: atMs,
    };
  }

  /** Nodes a system job's instance of this spec may run on: up, not draining, with its driver and labels. */
  private eligibleNodeIds(spec: TaskSpec): string[] {
    const constraints = compileConstraints(taskConstraints(spec), spec.labelConstraints);
    const ids: string[] = [];
    for (const node of this.nodes.values()) {
      if (node.status !== 'up' || node.draining || !node.drivers.includes(spec.driver)) continue;
      if (!matchesAll(node.labels, constraints)) continue;
      ids.push(node.id);
    }
    return ids.sort();
  }

  private trackJobTask(key: string, taskId: string): void {
    let ids = this.tasksByJob.get(key);
    if (!ids) {
      ids = new Set();
      this.tasksByJob.set(key, ids);
    }
    ids.add(taskId);
  }

  /**
   * Where pending tasks would go if placed now, one after another, each taking its room (on a copy of the
   * state: `job plan`): the node with the most free CPU among those that fit, or why none does. The
   * allocator proper may choose otherwise (priority order, packing, preemption); this answers "does it fit".
   */
  previewPlacements(
    taskIds: readonly string[],
    atMs: number,
  ): Map<string, { node: string | null; waits: string | null }> {
    const result = new Map<string, { node: string | null; waits: string | null }>();
    for (const id of taskIds) {
      const task = this.tasks.get(id);
      if (task?.state !== 'pending') continue;
      const constraints = compileConstraints(taskConstraints(task.spec), task.spec.labelConstraints);
      const matching = [...this.nodes.values()].filter(
        (node) =>
          node.status === 'up' &&
          !node.draining &&
          node.drivers.includes(task.spec.driver) &&
          matchesAll(node.labels, constraints),
      );
      const fitting = matching
        .filter((node) => this.fitsOn(node, task.spec))
        .sort(
          (a, b) => this.freeOn(b.id).cpuMillis - this.freeOn(a.id).cpuMillis || (a.name < b.name ? -1 : 1),
        );
      const chosen = fitting[0];
      if (chosen) {
        this.assign({ taskId: id, nodeId: chosen.id }, atMs);
        result.set(id, { node: chosen.name, waits: null });
      } else {
        const mib = Math.round(task.spec.memoryBytes / (1024 * 1024));
        result.set(id, {
          node: null,
          waits:
            matching.length === 0
              ? `no node up matches its constraints and has its driver (${task.spec.driver})`
              : `no node has room now for ${task.spec.cpuMillis} millicores and ${mib} MiB (unless it preempts lower priorities)`,
        });
      }
    }
    return result;
  }

  /** A job's instances, in id order (jobs.ts's views read them). */
  jobTasks(namespace: string, name: string): Task[] {
    const tasks: Task[] = [];
    for (const id of this.tasksByJob.get(jobKey(namespace, name)) ?? []) {
      const task = this.tasks.get(id);
      if (task) tasks.push(task);
    }
    return tasks.sort((a, b) => a.submitIndex - b.submitIndex || (a.id < b.id ? -1 : 1));
  }

  /** Forgets an ended task (the retention bound), and its place in its job. */
  private forgetTask(id: string): void {
    const task = this.tasks.get(id);
    this.tasks.delete(id);
    if (task?.instance) {
      const key = jobKey(task.spec.namespace, task.instance.job);
      this.tasksByJob.get(key)?.delete(id);
      this.endedBySlot.get(key)?.get(instanceSlotKey(task.instance))?.delete(id);
    }
  }

  /**
   * Restores a backup into this cluster, which must have no tasks: its namespaces and tokens join this
   * cluster's (this cluster's win where both have one, so the tokens in use now keep working), and its
   * tasks come back as they were, except that every task placed on a node of the old cluster is lost
   * (those machines are not this cluster's) and its restart policy decides whether it is queued again.
   */
  private restoreBackup(backup: BackupState, keepClusterCa: boolean, atMs: number): ApplyResult {
    if (this.tasks.size > 0)
      return {
        ok: false,
        code: 'CONFLICT',
        message: `this cluster has ${this.tasks.size} tasks; restore into a new cluster (one agent on an empty data dir)`,
      };
    // No task: what a derived index still holds is empty, and the backup's ended tasks must be counted.
    this.endedBySlot.clear();
    for (const policy of backup.namespaces ?? [])
      if (!this.namespaces.has(policy.name)) this.namespaces.set(policy.name, policy);
    for (const token of backup.tokens ?? []) {
      if (this.tokens.has(token.accessorId) || this.tokensBySecretHash.has(token.secretHash)) continue;
      this.tokens.set(token.accessorId, token);
      this.tokensBySecretHash.set(token.secretHash, token);
    }
    if (this.clusterCa === null && keepClusterCa && backup.clusterCa) this.clusterCa = backup.clusterCa;
    for (const job of backup.jobs ?? []) {
      const key = jobKey(job.namespace, job.name);
      if (this.jobs.has(key)) continue;
      this.jobs.set(key, structuredClone(job));
      // Reconciled when this command's apply ends: instances of the old cluster's nodes are replaced here.
      this.touchedJobs.add(key);
    }
    // The observer (the leader's allocator) is rebuilt from the result at the end, not told step by step.
    const observer = this.observer;
    this.observer = null;
    try {
      this.restoreTasks(backup, atMs);
    } finally {
      this.observer = observer;
    }
    this.observer?.restored();
    return { ok: true };
  }

  private restoreTasks(backup: BackupState, atMs: number): void {
    const byId = new Map(backup.tasks.map((task) => [task.id, task]));
    // A job's ended tasks are kept per instance, outside the cluster-wide order (see transition); a task
    // of a job this cluster does not hold (it had one of that name already) is a plain task here.
    for (const saved of backup.tasks) {
      if (!isTerminal(saved.state) || this.tasks.has(saved.id)) continue;
      const task = restoredTask(saved);
      if (task.instance && this.jobs.get(jobKey(task.spec.namespace, task.instance.job)) === undefined)
        delete task.instance;
      if (!task.instance) continue;
      this.tasks.set(task.id, task);
      this.trackJobTask(jobKey(task.spec.namespace, task.instance.job), task.id);
    }
    for (const id of backup.terminalOrder) {
      const saved = byId.get(id);
      if (!saved || !isTerminal(saved.state) || this.tasks.has(id)) continue;
      const task = restoredTask(saved);
      delete task.instance;
      this.tasks.set(id, task);
      this.terminalOrder.push(id);
    }
    const live = backup.tasks
      .filter((task) => !isTerminal(task.state) && !this.tasks.has(task.id))
      .sort((a, b) => a.submitIndex - b.submitIndex);
    for (const saved of live) {
      const task = restoredTask(saved);
      this.tasks.set(task.id, task);
      this.liveCount++;
      if (task.instance && this.jobs.get(jobKey(task.spec.namespace, task.instance.job)) === undefined)
        delete task.instance;
      if (task.instance) this.trackJobTask(jobKey(task.spec.namespace, task.instance.job), task.id);
      if (task.state === 'pending') {
        this.pending.add(task.id);
        continue;
      }
      // It holds nothing here: its node is not in this cluster.
      const node = task.nodeId;
      task.nodeId = null;
      this.transition(
        task,
        'lost',
        atMs,
        `restored from a snapshot; its node ${node ?? ''} is not in this cluster`,
        null,
        true,
      );
    }
    this.pruneTerminal();
  }

  /** The token whose secret hashes to secretHash, if the cluster knows it (expired or not). */
  tokenBySecretHash(secretHash: string): TokenRecord | undefined {
    return this.tokensBySecretHash.get(secretHash);
  }

  private createToken(token: TokenRecord): ApplyResult {
    if (this.tokens.has(token.accessorId) || this.tokensBySecretHash.has(token.secretHash))
      return { ok: false, code: 'CONFLICT', message: `token ${token.accessorId} exists already` };
    if (this.tokens.size >= tokensMax)
      return {
        ok: false,
        code: 'CONFLICT',
        message: `the cluster holds ${tokensMax} tokens; revoke some first`,
      };
    this.tokens.set(token.accessorId, token);
    this.tokensBySecretHash.set(token.secretHash, token);
    return { ok: true };
  }

  private revokeToken(accessorId: string): ApplyResult {
    const token = this.tokens.get(accessorId);
    if (!token)
      return {
        ok: false,
        code: 'NOT_FOUND',
        message: `no token ${accessorId}; list them with shoal acl token list`,
      };
    this.tokens.delete(accessorId);
    this.tokensBySecretHash.delete(token.secretHash);
    return { ok: true };
  }

  /** The whole state as JSON, for a Raft snapshot. Derived indexes are rebuilt on restore. */
  toSnapshot(): string {
    return JSON.stringify({
      appliedIndex: this.appliedIndex,
      nodes: [...this.nodes.values()],
      tasks: [...this.tasks.values()],
      terminalOrder: this.terminalOrder.slice(this.terminalHead),
      namespaces: [...this.namespaces.values()],
      tokens: [...this.tokens.values()],
      clusterCa: this.clusterCa,
      jobs: [...this.jobs.values()],
      deployments: [...this.deployments.values()],
      frameworks: this.frameworks.toSnapshot(),
      taskLimits: this.taskLimits,
    } satisfies StateSnapshot);
  }

  /** Replaces this state with a snapshot's. */
  restore(data: string): void {
    const snapshot = JSON.parse(data) as StateSnapshot;
    // Validated first: a snapshot whose limits or frameworks do not decode leaves this state as it was.
    const limits = restoredTaskLimits(snapshot.taskLimits);
    this.frameworks.restore(snapshot.frameworks ?? { frameworks: [] });
    this.taskLimits = limits;
    this.tasks.clear();
    this.nodes.clear();
    this.used.clear();
    this.pending.clear();
    this.liveByNode.clear();
    this.terminalOrder = [];
    this.terminalHead = 0;
    this.namespaces.clear();
    this.tokens.clear();
    this.tokensBySecretHash.clear();
    this.jobs.clear();
    this.tasksByJob.clear();
    this.endedBySlot.clear();
    this.touchedJobs.clear();
    this.deployments.clear();
    for (const job of snapshot.jobs ?? []) this.jobs.set(jobKey(job.namespace, job.name), job);
    for (const deployment of snapshot.deployments ?? []) this.deployments.set(deployment.id, deployment);
    this.clusterCa = snapshot.clusterCa ?? null;
    this.liveCount = 0;
    this.appliedIndex = snapshot.appliedIndex;
    for (const policy of snapshot.namespaces ?? []) this.namespaces.set(policy.name, policy);
    for (const token of snapshot.tokens ?? []) {
      this.tokens.set(token.accessorId, token);
      this.tokensBySecretHash.set(token.secretHash, token);
    }
    for (const node of snapshot.nodes) {
      this.nodes.set(node.id, node);
      this.used.set(node.id, emptyUsage());
    }
    this.runningByService.clear();
    for (const task of snapshot.tasks) {
      // Snapshots from before task events read as tasks with none.
      task.events = Array.isArray(task.events) ? task.events : [];
      this.tasks.set(task.id, task);
      if (task.state === 'running') this.indexRunning(task, true);
      if (task.instance) this.trackJobTask(jobKey(task.spec.namespace, task.instance.job), task.id);
      if (isTerminal(task.state)) continue;
      this.liveCount++;
      if (task.state === 'pending') this.pending.add(task.id);
      else if (task.nodeId !== null) {
        this.hold(task.nodeId, task, 1);
        this.track(task.nodeId, task.id, true);
      }
    }
    // A copy, not a spread into push: the order may hold a million ids, more than a call takes arguments.
    this.terminalOrder = snapshot.terminalOrder.slice();
    this.observer?.restored();
  }

  /** Pending tasks in placement order: highest priority first, then oldest submission. */
  pendingTasks(): Task[] {
    const tasks: Task[] = [];
    for (const id of this.pending) {
      const task = this.tasks.get(id);
      if (task) tasks.push(task);
    }
    return tasks.sort((a, b) => b.spec.priority - a.spec.priority || a.submitIndex - b.submitIndex);
  }

  /** What the node offers minus what its live tasks hold, on every resource. */
  freeOn(nodeId: string): Required<NodeResources> {
    const node = this.nodes.get(nodeId);
    if (!node) return { cpuMillis: 0, memoryBytes: 0, diskBytes: 0, devices: {} };
    const used = this.used.get(nodeId) ?? emptyUsage();
    const devices: Record<string, number> = {};
    for (const [kind, count] of Object.entries(node.capacity.devices ?? {})) {
      devices[kind] = count - (used.devices.get(kind) ?? 0);
    }
    return {
      cpuMillis: node.capacity.cpuMillis - used.cpuMillis,
      memoryBytes: node.capacity.memoryBytes - used.memoryBytes,
      diskBytes: (node.capacity.diskBytes ?? 0) - used.diskBytes,
      devices,
    };
  }

  /** How many ports of the node's dynamic range its live tasks hold. */
  dynamicPortsHeldOn(nodeId: string): number {
    return this.used.get(nodeId)?.dynamicPorts ?? 0;
  }

  /** Ports held on the node by its live tasks. */
  portsInUseOn(nodeId: string): number[] {
    return [...(this.used.get(nodeId)?.ports.keys() ?? [])];
  }

  /** Tasks the log assigns to a node that are not terminal. */
  liveTasksOn(nodeId: string): Task[] {
    const tasks: Task[] = [];
    for (const id of this.liveByNode.get(nodeId) ?? []) {
      const task = this.tasks.get(id);
      if (task) tasks.push(task);
    }
    return tasks;
  }

  private submit(
    index: number,
    tasks: readonly { readonly id: string; readonly spec: TaskSpec }[],
    atMs: number,
  ): ApplyResult {
    const first = tasks[0];
    if (!first) return { ok: false, code: 'CONFLICT', message: 'a submission holds at least one task' };
    // Idempotent by id: a client retrying an unacknowledged submission does not create a second task.
    if (this.tasks.has(first.id)) return { ok: true, taskId: first.id };
    if (this.liveCount + tasks.length > this.taskLimits.liveTasksMax) {
      return {
        ok: false,
        code: 'CONFLICT',
        message: liveTasksRefusal(this.liveCount, tasks.length, this.taskLimits),
      };
    }
    for (const { id, spec } of tasks) {
      if (this.tasks.has(id)) continue;
      const task: Task = {
        id,
        spec,
        submitIndex: index,
        submittedAtMs: atMs,
        desired: 'run',
        state: 'pending',
        nodeId: null,
        attempt: 0,
        notBeforeMs: null,
        exitCode: null,
        reason: 'waiting for the allocator',
        updatedAtMs: atMs,
        // The submission itself is not an event here (submittedAtMs says it): one entry less per task.
        events: [],
      };
      this.tasks.set(id, task);
      this.pending.add(id);
      this.liveCount++;
      this.observer?.taskPending(task);
    }
    return { ok: true, taskId: first.id };
  }

  /** The leader's plan is re-checked here, against the state it lands on; a stale placement is skipped. */
  private assign(assignment: Assignment, atMs: number): void {
    const task = this.tasks.get(assignment.taskId);
    const node = this.nodes.get(assignment.nodeId);
    if (!task || !node || task.state !== 'pending' || task.desired !== 'run' || node.status !== 'up') return;
    if (node.draining) return;
    if (!node.drivers.includes(task.spec.driver)) return;
    if (!this.fitsOn(node, task.spec)) return;
    if (!matchesAll(node.labels, compileConstraints(taskConstraints(task.spec), task.spec.labelConstraints)))
      return;
    const hostPorts = this.pickPorts(node, task);
    if (hostPorts === null) return;
    const deviceSlots = this.pickDeviceSlots(node, task);
    if (deviceSlots === null) return;
    if (hostPorts !== undefined) task.hostPorts = hostPorts;
    if (deviceSlots !== undefined) task.deviceSlots = deviceSlots;
    task.state = 'assigned';
    task.nodeId = node.id;
    task.reason = null;
    task.updatedAtMs = atMs;
    delete task.nominatedNodeId;
    addTaskEvent(task, { atMs, message: `assigned to ${node.name}` });
    this.pending.delete(task.id);
    this.hold(node.id, task, 1);
    this.track(node.id, task.id, true);
    this.observer?.taskPlaced(task);
  }

  /**
   * The host ports a task placed on `node` holds: its static ones, and one free port of the node's dynamic
   * range for each dynamic one. Deterministic (every node applies the same entry alike): the search for each
   * port starts at a hash of the task, its attempt and the port's name, so a port just freed is rarely the
   * next one given out. Undefined: the task has no ports; null: the range has no free port left.
   */
  private pickPorts(node: ClusterNode, task: Task): Record<string, number> | undefined | null {
    const spec = task.spec;
    if (spec.ports === undefined && spec.dynamicPorts === undefined) return undefined;
    const hostPorts: Record<string, number> = { ...spec.ports };
    const taken = this.used.get(node.id)?.ports;
    const chosen = new Set(Object.values(hostPorts));
    const range = node.dynamicPorts ?? dynamicPortRangeDefault;
    const size = range.max - range.min + 1;
    for (const name of spec.dynamicPorts ?? []) {
      const start = fnv1a(`${task.id}/${task.attempt}/${name}`) % size;
      let port: number | null = null;
      for (let offset = 0; offset < size; offset++) {
        const candidate = range.min + ((start + offset) % size);
        if ((taken?.get(candidate) ?? 0) === 0 && !chosen.has(candidate)) {
          port = candidate;
          break;
        }
      }
      if (port === null) return null;
      chosen.add(port);
      hostPorts[name] = port;
    }
    return hostPorts;
  }

  /**
   * Which of the node's devices a task placed there holds: for each kind it asks for, the lowest slots no
   * live task of the node holds (the agent maps a slot to the device file it declared in that place, e.g.
   * --device gpu=/dev/nvidia0,/dev/nvidia1). Undefined: it asks for no devices; null: not enough are free.
   */
  private pickDeviceSlots(node: ClusterNode, task: Task): Record<string, number[]> | undefined | null {
    const wanted = Object.entries(task.spec.devices ?? {});
    if (wanted.length === 0) return undefined;
    const taken = this.used.get(node.id)?.deviceSlots;
    const slots: Record<string, number[]> = {};
    for (const [kind, count] of wanted) {
      const total = node.capacity.devices?.[kind] ?? 0;
      const held = taken?.get(kind);
      const picked: number[] = [];
      for (let slot = 0; slot < total && picked.length < count; slot++)
        if ((held?.get(slot) ?? 0) === 0) picked.push(slot);
      if (picked.length < count) return null;
      slots[kind] = picked;
    }
    return slots;
  }

  /** Whether the node has room for the spec on every resource, and its ports free. */
  private fitsOn(node: ClusterNode, spec: TaskSpec): boolean {
    const free = this.freeOn(node.id);
    if (free.cpuMillis < spec.cpuMillis || free.memoryBytes < spec.memoryBytes) return false;
    if (free.diskBytes < (spec.diskBytes ?? 0)) return false;
    for (const [kind, count] of Object.entries(spec.devices ?? {})) {
      if ((free.devices[kind] ?? 0) < count) return false;
    }
    const ports = this.used.get(node.id)?.ports;
    for (const port of Object.values(spec.ports ?? {})) if ((ports?.get(port) ?? 0) > 0) return false;
    return true;
  }

  /**
   * Evicts a running task for a waiting one of higher priority, if the plan still holds: the victim is
   * live on that node, preemptible, and at least `gap` lower; the waiting task is still pending.
   */
  private preempt(preemption: PreemptionCommand, gap: number, atMs: number): void {
    const victim = this.tasks.get(preemption.taskId);
    const waiting = this.tasks.get(preemption.forTaskId);
    if (!victim || !waiting || waiting.state !== 'pending' || waiting.desired !== 'run') return;
    if (isTerminal(victim.state) || victim.state === 'pending' || victim.desired !== 'run') return;
    if (victim.nodeId !== preemption.nodeId || victim.spec.preemptible === false) return;
    if (victim.spec.priority + gap > waiting.spec.priority) return;
    victim.desired = 'preempt';
    victim.preemptedBy = `preempted by ${waiting.spec.name} (${waiting.id}, priority ${waiting.spec.priority})`;
    victim.reason = victim.preemptedBy;
    victim.updatedAtMs = atMs;
    addTaskEvent(victim, { atMs, message: victim.preemptedBy });
    this.observer?.taskTerminating(victim);
    if (waiting.nominatedNodeId !== preemption.nodeId) {
      waiting.nominatedNodeId = preemption.nodeId;
      this.observer?.taskNominated(waiting);
    }
  }

  /** An agent's report: only the assigned node speaks for a task's current run, and only forward. */
  private report(nodeId: string, report: TaskReportRecord, atMs: number): CommandResult {
    const task = this.tasks.get(report.taskId);
    if (!task) return { ok: false, code: 'NOT_FOUND', message: `no task ${report.taskId}` };
    if (task.nodeId !== nodeId || task.attempt !== report.attempt || isTerminal(task.state)) {
      return { ok: true };
    }
    if (stateOrder[report.state] <= stateOrder[task.state]) return { ok: true };
    this.transition(task, report.state, atMs, report.reason, report.exitCode);
    return { ok: true };
  }

  private recordEvents(command: Extract<Command, { type: 'taskEvents' }>): ApplyResult {
    const task = this.tasks.get(command.taskId);
    if (!task) return { ok: false, code: 'NOT_FOUND', message: `no task ${command.taskId}` };
    // Only the node running this attempt speaks for it: a late batch about an earlier run is dropped.
    if (task.nodeId !== command.nodeId || task.attempt !== command.attempt) return { ok: true };
    for (const event of command.events.slice(0, taskEventsPerCommandMax)) addTaskEvent(task, event);
    return { ok: true };
  }

  private kill(taskId: string, atMs: number): ApplyResult {
    const task = this.tasks.get(taskId);
    if (!task) return { ok: false, code: 'NOT_FOUND', message: `no task ${taskId}` };
    if (isTerminal(task.state)) return { ok: true };
    const wasRunning = task.desired === 'run' && task.state !== 'pending';
    if (task.desired !== 'kill') addTaskEvent(task, { atMs, message: 'kill requested' });
    task.desired = 'kill';
    task.updatedAtMs = atMs;
    if (task.state === 'pending') this.transition(task, 'killed', atMs, 'killed before it was placed', null);
    else if (wasRunning) this.observer?.taskTerminating(task);
    return { ok: true };
  }

  /**
   * Drains a node: no new placements there, and each live task on it is stopped and queued again
   * (desired `move`); the allocator then places them elsewhere, highest priority first.
   */
  private drain(nodeId: string, drain: boolean, atMs: number): ApplyResult {
    const node = this.nodes.get(nodeId);
    if (!node) return { ok: false, code: 'NOT_FOUND', message: `no node ${nodeId}` };
    node.draining = drain;
    node.updatedAtMs = atMs;
    this.observer?.nodeChanged(node);
    if (!drain) return { ok: true };
    for (const task of this.liveTasksOn(nodeId)) {
      if (task.desired !== 'run') continue;
      task.desired = 'move';
      task.updatedAtMs = atMs;
      this.observer?.taskTerminating(task);
      addTaskEvent(task, { atMs, message: `moving off ${node.name} (draining)` });
    }
    return { ok: true };
  }

  private nodeDown(nodeId: string, reason: string, atMs: number): ApplyResult {
    const node = this.nodes.get(nodeId);
    if (!node) return { ok: false, code: 'NOT_FOUND', message: `no node ${nodeId}` };
    node.status = 'down';
    node.updatedAtMs = atMs;
    // In id order: the order tasks end in decides which ended ones are forgotten first, on every node alike.
    const lost = this.liveTasksOn(nodeId).sort((a, b) => (a.id < b.id ? -1 : 1));
    for (const task of lost) this.transition(task, 'lost', atMs, reason, null, true);
    // Tasks waiting for this node (they preempted there) look elsewhere again.
    for (const id of this.pending) {
      const task = this.tasks.get(id);
      if (task?.nominatedNodeId !== nodeId) continue;
      delete task.nominatedNodeId;
      this.observer?.taskNominated(task);
    }
    this.observer?.nodeChanged(node);
    return { ok: true };
  }

  /**
   * Moves a task to a new observed state; a terminal one gives back what it held, then its policies decide
   * whether it runs again as the same task (requeue) or ends. `nodeLost`: the task ended because the
   * cluster declared its node down (not because its agent reported it lost, when the process may live on).
   */
  private transition(
    task: Task,
    state: TaskState,
    atMs: number,
    reason: string | null,
    exitCode: number | null,
    nodeLost = false,
  ): void {
    const wasHolding = task.nodeId !== null && !isTerminal(task.state) && task.state !== 'pending';
    if (task.instance && isTerminal(state))
      this.touchedJobs.add(jobKey(task.spec.namespace, task.instance.job));
    if (task.state === 'running' && state !== 'running') this.indexRunning(task, false);
    task.state = state;
    task.updatedAtMs = atMs;
    task.reason = reason;
    if (task.framework !== undefined)
      this.frameworks.recordStatus(
        task.id,
        {
          state: frameworkStateOf(state),
          message: frameworkMessage(reason, exitCode),
          nodeId: task.nodeId,
        },
        atMs,
      );
    if (state === 'running') {
      task.runningSinceMs = atMs;
      this.indexRunning(task, true);
    }
    if (exitCode !== null) task.exitCode = exitCode;
    const exit =
      exitCode === null || reason?.includes('exit code') === true ? '' : ` (exit code ${exitCode})`;
    addTaskEvent(task, { atMs, message: `${state}${reason === null ? '' : `: ${reason}`}${exit}` });
    if (!isTerminal(state)) return;
    if (wasHolding && task.nodeId !== null) {
      this.hold(task.nodeId, task, -1);
      this.track(task.nodeId, task.id, false);
    }
    this.observer?.taskReleased(task);
    // A task of an instance that runs several tasks on one node never goes back to the queue alone (it
    // could land elsewhere): it ends, and its job's reconciliation starts the instance again together.
    const together = task.instance !== undefined && task.spec.colocated === true;
    if (task.desired === 'preempt') {
      // Evicted for a higher-priority task: queued again if its policy restarts it, else it ends. A job's
      // instance ends lost (its node was taken, it did not fail): its job places another.
      const preemptedReason = task.preemptedBy ?? 'preempted';
      delete task.preemptedBy;
      const policy = task.spec.restart?.policy ?? 'never';
      if (policy === 'never' || together) {
        task.state = task.instance ? 'lost' : 'killed';
        task.reason = preemptedReason;
      } else {
        task.reason = `${preemptedReason}; queued again`;
        this.requeue(task, null);
        return;
      }
    } else if (task.desired === 'move') {
      // Moved off a draining node: queue it again at once, as the same task.
      const node = this.nodes.get(task.nodeId ?? '');
      task.reason = `moved off ${node?.name ?? 'a draining node'}`;
      if (together) task.state = 'lost';
      else {
        this.requeue(task, null);
        return;
      }
    }
    const decision = task.desired === 'run' ? restartDecision(task.spec, task.attempt, state) : null;
    if (decision?.restart === true && !together) {
      // Back to the queue for another run, after its backoff; it keeps its place in the FIFO order.
      const seconds = Math.round(decision.delayMs / 100) / 10;
      task.reason = `${state} (${reason ?? 'no reason'}); restart ${task.attempt + 1} in ${seconds} s`;
      addTaskEvent(task, { atMs, message: `restart ${task.attempt + 1} scheduled in ${seconds} s` });
      this.requeue(task, atMs + decision.delayMs);
      return;
    }
    if (
      nodeLost &&
      task.desired === 'run' &&
      task.instance === undefined &&
      task.spec.reschedule !== 'never'
    ) {
      // Its node was lost, not the task: placed again elsewhere, at once (a job's instance is replaced by
      // its job's reconciliation instead).
      task.reason = `lost (${reason ?? 'no reason'}); placed again elsewhere`;
      addTaskEvent(task, { atMs, message: 'rescheduled: its node was lost' });
      this.requeue(task, null);
      return;
    }
    this.pending.delete(task.id);
    this.liveCount--;
    if (task.instance) {
      // A job's ended tasks are its memory (done, failures, backoff): kept per instance, not in the
      // cluster-wide order that forgets the oldest.
      this.pruneInstanceHistory(task);
      return;
    }
    this.terminalOrder.push(task.id);
    this.pruneTerminal();
  }

  /** Forgets the oldest ended plain tasks beyond the retention count. */
  private pruneTerminal(): void {
    const over = this.terminalOrder.length - this.terminalHead - this.taskLimits.terminalTasksRetainedMax;
    this.forgetOldestTerminal(over);
  }

  /**
   * Forgets the ended plain tasks that ended more than the retention age before `atMs` (a committed
   * command's time), from the front of the order they ended in. Proposers' clocks differ a little, so the
   * order is not strictly by time: a task behind one that ended later waits for it, on every node alike.
   */
  private forgetExpired(atMs: number): void {
    const retentionMs = this.taskLimits.terminalTaskRetentionMs;
    if (retentionMs === null) return;
    const cutoffMs = atMs - retentionMs;
    let expired = 0;
    for (let at = this.terminalHead; at < this.terminalOrder.length; at++) {
      const task = this.tasks.get(this.terminalOrder[at] ?? '');
      // An id whose task is gone already takes no time to drop. One that ended at the cutoff stays, so a
      // task is kept through the command that ends it, whatever the retention, and its events derive.
      if (task !== undefined && task.updatedAtMs >= cutoffMs) break;
      expired++;
    }
    this.forgetOldestTerminal(expired);
  }

  /** Forgets the `count` oldest ended plain tasks, and compacts the queue once its dead front is large. */
  private forgetOldestTerminal(count: number): void {
    if (count <= 0) return;
    const end = Math.min(this.terminalOrder.length, this.terminalHead + count);
    for (let at = this.terminalHead; at < end; at++) this.forgetTask(this.terminalOrder[at] ?? '');
    this.terminalHead = end;
    if (this.terminalHead >= 1024 && this.terminalHead * 2 >= this.terminalOrder.length) {
      this.terminalOrder = this.terminalOrder.slice(this.terminalHead);
      this.terminalHead = 0;
    }
  }

  /**
   * Keeps the newest instanceHistoryMax ended tasks of one instance task (its job, group, task and slot):
   * enough for the reconciler to count its reschedule attempts and its crash loop, bounded per instance.
   */
  private pruneInstanceHistory(ended: Task): void {
    const instance = ended.instance;
    if (!instance) return;
    const key = jobKey(ended.spec.namespace, instance.job);
    let slots = this.endedBySlot.get(key);
    if (slots === undefined) {
      slots = new Map();
      this.endedBySlot.set(key, slots);
      for (const id of this.tasksByJob.get(key) ?? []) {
        const task = this.tasks.get(id);
        if (task?.instance && isTerminal(task.state)) addToSetOf(slots, instanceSlotKey(task.instance), id);
      }
    }
    const ids = addToSetOf(slots, instanceSlotKey(instance), ended.id);
    if (ids.size <= instanceHistoryMax) return;
    const same: Task[] = [];
    for (const id of ids) {
      const task = this.tasks.get(id);
      if (task) same.push(task);
    }
    same.sort((a, b) => a.updatedAtMs - b.updatedAtMs || (a.id < b.id ? -1 : 1));
    for (const task of same.slice(0, same.length - instanceHistoryMax)) this.forgetTask(task.id);
  }

  /** Back to the queue as the same task, for its next attempt; it keeps its place in the FIFO order. */
  private requeue(task: Task, notBeforeMs: number | null): void {
    task.desired = 'run';
    task.state = 'pending';
    task.nodeId = null;
    task.attempt++;
    task.notBeforeMs = notBeforeMs;
    delete task.hostPorts;
    delete task.deviceSlots;
    delete task.runningSinceMs;
    delete task.health;
    this.pending.add(task.id);
    this.observer?.taskPending(task);
  }

  private notifyNode(nodeId: string): void {
    const node = this.nodes.get(nodeId);
    if (node) this.observer?.nodeChanged(node);
  }

  private track(nodeId: string, taskId: string, live: boolean): void {
    let ids = this.liveByNode.get(nodeId);
    if (!ids) {
      ids = new Set();
      this.liveByNode.set(nodeId, ids);
    }
    if (live) ids.add(taskId);
    else ids.delete(taskId);
  }

  private hold(nodeId: string, task: Task, sign: 1 | -1): void {
    const spec = task.spec;
    let used = this.used.get(nodeId);
    if (!used) {
      used = emptyUsage();
      this.used.set(nodeId, used);
    }
    used.cpuMillis += sign * spec.cpuMillis;
    used.memoryBytes += sign * spec.memoryBytes;
    used.diskBytes += sign * (spec.diskBytes ?? 0);
    for (const [kind, count] of Object.entries(spec.devices ?? {}))
      addCount(used.devices, kind, sign * count);
    for (const [kind, slots] of Object.entries(task.deviceSlots ?? {})) {
      let held = used.deviceSlots.get(kind);
      if (held === undefined) {
        held = new Map();
        used.deviceSlots.set(kind, held);
      }
      for (const slot of slots) addCount(held, slot, sign);
    }
    for (const port of Object.values(task.hostPorts ?? spec.ports ?? {})) addCount(used.ports, port, sign);
    if (task.hostPorts !== undefined) used.dynamicPorts += sign * (spec.dynamicPorts?.length ?? 0);
    assert(
      used.cpuMillis >= 0 && used.memoryBytes >= 0 && used.diskBytes >= 0,
      'node usage never goes negative',
    );
  }
}

/**
 * What the reconciler sees as groups: one per task of each job group (a group of one task is itself),
 * each kept at the group's count and version; the state puts an instance's tasks back on one node.
 */
interface ReconcileGroupPart {
  readonly group: NormalizedGroup;
  readonly task: string;
  readonly several: boolean;
}

function reconcileGroups(job: JobRecord): Map<string, ReconcileGroupPart> {
  const parts = new Map<string, ReconcileGroupPart>();
  for (const group of jobGroups(job.spec)) {
    const several = group.tasks.length > 1;
    for (const task of group.tasks)
      parts.set(several ? `${group.name}/${task.name}` : group.name, { group, task: task.name, several });
  }
  return parts;
}

function reconcileGroupName(group: string, task: string, parts: ReadonlyMap<string, unknown>): string {
  const composite = `${group}/${task}`;
  return parts.has(composite) ? composite : group;
}

/** The id of the n-th task a command at `index` creates for a job: the same on every node. */
function instanceTaskId(index: number, key: string, n: number): string {
  return createHash('sha256').update(`${index}/${key}/${n}`).digest('hex').slice(0, 12);
}

/** A task of a backup as this state holds it: no node of the old cluster is nominated any more. */
/** A cluster task's state as its framework hears it (Mesos's TaskState). */
export function frameworkStateOf(state: TaskState): FrameworkTaskState {
  switch (state) {
    case 'pending':
    case 'assigned':
      return 'TASK_STAGING';
    case 'starting':
      return 'TASK_STARTING';
    case 'running':
      return 'TASK_RUNNING';
    case 'finished':
      return 'TASK_FINISHED';
    case 'failed':
      return 'TASK_FAILED';
    case 'killed':
      return 'TASK_KILLED';
    case 'lost':
      return 'TASK_LOST';
  }
}

function frameworkMessage(reason: string | null, exitCode: number | null): string {
  const exit = exitCode === null || reason?.includes('exit code') === true ? '' : `exit code ${exitCode}`;
  return [reason ?? '', exit].filter((part) => part !== '').join('; ');
}

/** A snapshot's task limits, validated; a snapshot from before they were replicated had taskLimitsBefore. */
function restoredTaskLimits(value: unknown): TaskLimits {
  if (value === undefined) return taskLimitsBefore;
  const parsed = taskLimitsSchema.safeParse(value);
  if (!parsed.success)
    throw new ShoalError(
      'CORRUPT_DATA',
      `the snapshot's task limits do not decode: ${describeIssues(parsed.error)}`,
    );
  return parsed.data;
}

function restoredTask(saved: BackupState['tasks'][number]): Task {
  const task: Task = { ...saved, events: saved.events ?? [] };
  delete task.nominatedNodeId;
  return task;
}

function emptyUsage(): Usage {
  return {
    cpuMillis: 0,
    memoryBytes: 0,
    diskBytes: 0,
    devices: new Map(),
    deviceSlots: new Map(),
    ports: new Map(),
    dynamicPorts: 0,
  };
}

function addCount<K>(counts: Map<K, number>, key: K, delta: number): void {
  const next = (counts.get(key) ?? 0) + delta;
  assert(next >= 0, 'a count never goes negative');
  if (next === 0) counts.delete(key);
  else counts.set(key, next);
}

/** FNV-1a, 32 bits: a cheap, stable hash (the same on every node and every version). */
function fnv1a(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash;
}

/** Code-unit order: the same on every node, unlike localeCompare. */
function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The versions whose spec of a group is the current one (see JobRecord.currentVersions). */
function currentVersionsOf(job: JobRecord, group: string): number[] {
  const known = job.currentVersions?.[group];
  if (known !== undefined) return known;
  const since = job.groupVersions[group] ?? job.version;
  const versions: number[] = [];
  for (let version = since; version <= job.version; version++) versions.push(version);
  return versions;
}

/** Whether an instance made at `version` runs the group's current spec. */
function isCurrentVersion(job: JobRecord, group: string, version: number): boolean {
  return currentVersionsOf(job, group).includes(version);
}

/** The service a task answers for: its job's name (a job's instance, or a replica of `shoal run`), else its own. */
function serviceKey(task: Task): string {
  return jobKey(task.spec.namespace, task.instance?.job ?? task.spec.job ?? task.spec.name);
}

/** An instance task's slot within its job: group, task and slot. */
function instanceSlotKey(instance: TaskInstance): string {
  return `${instance.group}\u0000${instance.task}\u0000${instance.slot}`;
}

/** Adds `id` to the set under `key` (made if missing) and returns that set. */
function addToSetOf(sets: Map<string, Set<string>>, key: string, id: string): Set<string> {
  let ids = sets.get(key);
  if (ids === undefined) {
    ids = new Set();
    sets.set(key, ids);
  }
  ids.add(id);
  return ids;
}
