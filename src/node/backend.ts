/**
 * The node's side of the API (ApiBackend): each operation reads through a linearizable barrier or
 * writes through the leader (control.ts), and answers with the API's views (api/views.ts).
 */
import { peerIdFromString } from '@libp2p/peer-id';
import type {
  Answer,
  ApiBackend,
  EventFrame,
  FrameworkView,
  TaskView,
  TasksPage,
  TasksPageRequest,
  TokenRequest,
} from '../api/index.ts';
import {
  defaultNamespace,
  encodeCommand,
  expandSubmission,
  liveTasksRefusal,
  sameTaskLimits,
  makeBackupFile,
  openBackupFile,
  openCaKey,
  pageOfTasks,
  parseTaskPageCursor,
  placementOrder,
  portNames,
  type BackupFile,
  type DeploymentAction,
  type BackupState,
  type JobSpec,
  hashTokenSecret,
  isTerminal,
  newAccessorId,
  newTaskId,
  newTokenSecret,
  tokenExpired,
  type TokenRecord,
  type ClusterState,
  type EventFilter,
  type NamespacePolicySpec,
  type SubmitOptions,
  type Task,
  type TaskLimits,
  type TaskSpec,
} from '../cluster/index.ts';
import type { RaftService } from '../election/index.ts';
import type { MembershipService } from '../membership/index.ts';
import { readTaskLogs } from '../runtime/index.ts';
import { mebibyte, ShoalError, shoalVersion } from '../shared/index.ts';
import type { FrameworkSummary } from '../frameworks/index.ts';
import type { LogFrame } from '../shared/log-frames.ts';
import { writeTimeoutMs, type Control } from './control.ts';
import type { EventHub } from './events.ts';
import type { FrameworkService, NamespaceGrant, Subscription } from './frameworks.ts';
import { JobOperations } from './jobs.ts';
import { ServiceOperations, hostOf } from './services.ts';
import { followLocalLogs, followRemoteLogs } from './follow.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ShoalLibp2p } from './p2p.ts';

/** Log bytes returned by one logs request. */
export const logsTailBytesMax = 4 * mebibyte;
/** How long `shoal leave` waits for a node's tasks to move before it leaves anyway. */
export const leaveDrainTimeoutMs = 60_000;
/** How often a follow of a task not yet placed looks again. */
const followPlacementPollMs = 250;

export interface BackendInit {
  readonly selfId: string;
  readonly selfName: string;
  readonly state: ClusterState;
  readonly control: Control;
  readonly raft: RaftService;
  readonly membership: MembershipService;
  readonly libp2p: ShoalLibp2p;
  /** A task's directory on this node (its logs). */
  readonly taskDir: (taskId: string) => string;
  /** A node's name from its id (the id when unknown). */
  readonly nameOf: (nodeId: string) => string;
  /** Set when the cluster cannot survive the loss of a node (see the status view). */
  readonly faultToleranceWarning: () => string | null;
  /** `shoal leave` has drained this node: the process stops it. */
  readonly requestLeave: () => void;
  readonly warn: (message: string) => void;
  /** The events this node derived from the log it applied, and the leaders it saw. */
  readonly events: EventHub;
  /** The cluster key: `shoal key show` prints it for an admin, so another node can join. */
  readonly clusterKey: string;
  /** This node's metrics, in the Prometheus text format. */
  readonly metrics: () => Promise<string>;
  /** The scheduler API (frameworks.ts). */
  readonly frameworks: FrameworkService;
  /** The task limits this node makes the cluster's when it leads (config.ts taskLimitsOf). */
  readonly taskLimits: TaskLimits;
}

export class NodeBackend implements ApiBackend {
  private readonly init: BackendInit;
  private readonly jobOperations: JobOperations;
  /** Services (discovery) and deployments; DNS reads it too. */
  readonly serviceOperations: ServiceOperations;

  constructor(init: BackendInit) {
    this.init = init;
    this.jobOperations = new JobOperations(init);
    this.serviceOperations = new ServiceOperations(init);
  }

  subscribeFramework(body: unknown, namespaces: NamespaceGrant, signal: AbortSignal): Promise<Subscription> {
    return this.init.frameworks.subscribe(body, namespaces, signal);
  }

  schedulerCall(streamId: string, body: unknown, namespaces: NamespaceGrant): Promise<void> {
    return this.init.frameworks.call(streamId, body, namespaces);
  }

  async frameworks(): Promise<Answer<'frameworks'>> {
    await this.init.control.readBarrier();
    return this.init.state.frameworks.list().map((summary) => frameworkView(summary));
  }

  async framework(id: string): Promise<Answer<'framework'>> {
    await this.init.control.readBarrier();
    const summary = this.init.state.frameworks.get(id);
    if (summary === undefined)
      throw new ShoalError('NOT_FOUND', `no framework ${id}; list frameworks with shoal framework ls`);
    const liveTasks = this.init.state.frameworks.liveClusterTaskIds(id).flatMap((taskId) => {
      const task = this.init.state.tasks.get(taskId);
      return task === undefined ? [] : [this.taskView(task)];
    });
    return { ...frameworkView(summary), liveTasks };
  }

  async teardownFramework(id: string): Promise<void> {
    await this.init.control.proposeOrThrow({ type: 'teardownFramework', frameworkId: id, atMs: Date.now() });
  }

  jobDeployments(namespace: string, name: string): Promise<Answer<'jobDeployments'>> {
    return this.serviceOperations.jobDeployments(namespace, name);
  }

  promoteJob(namespace: string, name: string): Promise<Answer<'promoteJob'>> {
    return this.serviceOperations.promoteJob(namespace, name);
  }

  deployment(id: string): Promise<Answer<'deployment'>> {
    return this.serviceOperations.deployment(id);
  }

  controlDeployment(id: string, action: DeploymentAction): Promise<Answer<'controlDeployment'>> {
    return this.serviceOperations.control(id, action);
  }

  deploymentNamespace(id: string): Promise<string> {
    return this.serviceOperations.deploymentNamespace(id);
  }

  services(namespace: string | null): Promise<Answer<'services'>> {
    return this.serviceOperations.services(namespace);
  }

  service(namespace: string, name: string): Promise<Answer<'service'>> {
    return this.serviceOperations.service(namespace, name);
  }

  metrics(): Promise<string> {
    return this.init.metrics();
  }

  jobs(namespace: string | null): Promise<Answer<'jobs'>> {
    return this.jobOperations.list(namespace);
  }

  job(namespace: string, name: string): Promise<Answer<'job'>> {
    return this.jobOperations.detail(namespace, name);
  }

  jobVersions(namespace: string, name: string): Promise<Answer<'jobVersions'>> {
    return this.jobOperations.versions(namespace, name);
  }

  applyJob(job: JobSpec, checkIndex: number | null): Promise<Answer<'applyJob'>> {
    return this.jobOperations.apply(job, checkIndex);
  }

  planJob(job: JobSpec): Promise<Answer<'planJob'>> {
    return this.jobOperations.plan(job);
  }

  revertJob(
    namespace: string,
    name: string,
    version: number,
    checkIndex: number | null,
  ): Promise<Answer<'revertJob'>> {
    return this.jobOperations.revert(namespace, name, version, checkIndex);
  }

  stopJob(namespace: string, name: string, purge: boolean): Promise<Answer<'stopJob'>> {
    return this.jobOperations.stop(namespace, name, purge);
  }

  async submit(spec: TaskSpec, options: SubmitOptions = { replicas: 1, gang: false }): Promise<string[]> {
    // A client that names its task can retry a submission whose outcome it did not hear: ids are
    // idempotent in the log, and replicas' ids derive from the first.
    const tasks = expandSubmission(spec, options, options.id ?? newTaskId());
    await this.admit(tasks);
    const atMs = Date.now();
    const [only] = tasks;
    // One entry either way: replicas are all accepted or none.
    await this.init.control.proposeOrThrow(
      tasks.length === 1 && only !== undefined && options.replicas <= 1 && !options.gang
        ? { type: 'submitTask', id: only.id, spec: only.spec, atMs }
        : { type: 'submitTasks', tasks, atMs },
    );
    return tasks.map((task) => task.id);
  }

  /**
   * Refuses a submission the cluster is too full for before it costs a log entry (a client retrying
   * against a full cluster would otherwise fill the log with refusals). The state checks again when it
   * applies the entry, against the limit and the count at that point of the log: this check only saves
   * the round. It refuses on a current view only, so a retried submission that did commit is not refused.
   */
  private async admit(tasks: readonly { readonly id: string }[]): Promise<void> {
    const { state, control } = this.init;
    const first = tasks[0]?.id ?? '';
    const over = (): boolean =>
      !state.tasks.has(first) && state.liveTaskCount + tasks.length > state.taskLimits.liveTasksMax;
    if (!over()) return;
    await control.readBarrier();
    if (over())
      throw new ShoalError('CONFLICT', liveTasksRefusal(state.liveTaskCount, tasks.length, state.taskLimits));
  }

  /**
   * Makes this node's configured task limits the cluster's, once it is the ready leader and they differ
   * (cluster/limits.ts): compared after a read barrier, so with every entry committed before it led, and
   * proposed here only (a node that lost the lead meanwhile does not override the new leader's).
   */
  async adoptTaskLimits(): Promise<void> {
    const { state, control, raft, taskLimits } = this.init;
    await control.readIndexOnce();
    if (!raft.isReadyLeader() || sameTaskLimits(state.taskLimits, taskLimits)) return;
    await raft.propose(
      encodeCommand({ type: 'setTaskLimits', limits: taskLimits, atMs: Date.now() }),
      writeTimeoutMs,
    );
  }

  async namespaces(): Promise<NamespacePolicySpec[]> {
    await this.init.control.readBarrier();
    return [...this.init.state.namespaces.values()];
  }

  async setNamespace(policy: NamespacePolicySpec): Promise<void> {
    await this.init.control.proposeOrThrow({ type: 'setNamespace', policy, atMs: Date.now() });
  }

  async kill(taskId: string): Promise<void> {
    await this.init.control.readBarrier();
    this.requireTask(taskId);
    await this.init.control.proposeOrThrow({ type: 'killTask', taskId, atMs: Date.now() });
  }

  async tasks(request?: TasksPageRequest): Promise<TasksPage> {
    let after: ReturnType<typeof parseTaskPageCursor> = null;
    if (request?.after != null) {
      after = parseTaskPageCursor(request.after);
      if (after === null)
        throw new ShoalError('INVALID_ARGUMENT', 'after must be the shoal-next-page header of an answer');
    }
    await this.init.control.readBarrier();
    const page = pageOfTasks(this.init.state.tasks.values(), request?.limit ?? null, after);
    return { tasks: page.tasks.map((task) => this.taskView(task)), next: page.next };
  }

  /** The pending tasks in the order the allocator's policy takes them (allocator/queue-order.ts). */
  async queue(): Promise<TaskView[]> {
    await this.init.control.readBarrier();
    const { state } = this.init;
    const capacity = emptyUse();
    for (const node of state.nodes.values()) if (node.status === 'up') addUse(capacity, node.capacity);
    const namespaces = new Map<string, { weight: number; usage: Use }>();
    const namespaceOf = (task: Task): { weight: number; usage: Use } => {
      const name = task.spec.namespace ?? defaultNamespace;
      let found = namespaces.get(name);
      if (!found) {
        found = { weight: state.namespaces.get(name)?.weight ?? 1, usage: emptyUse() };
        namespaces.set(name, found);
      }
      return found;
    };
    const pending: Task[] = [];
    for (const task of state.tasks.values()) {
      if (task.state === 'pending') pending.push(task);
      else if (!isTerminal(task.state)) addUse(namespaceOf(task).usage, task.spec);
    }
    const order = placementOrder(
      pending.map((task) => {
        namespaceOf(task);
        return {
          id: task.id,
          priority: task.spec.priority,
          submitIndex: task.submitIndex,
          namespace: task.spec.namespace ?? defaultNamespace,
          request: addUse(emptyUse(), task.spec),
        };
      }),
      namespaces,
      capacity,
    );
    return order.flatMap((id) => {
      const task = state.tasks.get(id);
      return task ? [this.taskView(task)] : [];
    });
  }

  async task(taskId: string): Promise<Answer<'task'>> {
    await this.init.control.readBarrier();
    const task = this.requireTask(taskId);
    return {
      ...this.taskView(task),
      user: task.spec.user ?? null,
      pidsMax: task.spec.pidsMax ?? null,
      diskBytes: task.spec.diskBytes ?? 0,
      devices: task.deviceSlots ?? {},
      events: [{ atMs: task.submittedAtMs, message: 'submitted' }, ...task.events].map((event) => ({
        at: new Date(event.atMs).toISOString(),
        message: event.message,
      })),
    };
  }

  async logs(taskId: string, tailBytes: number): Promise<Answer<'taskLogs'>> {
    await this.init.control.readBarrier();
    const task = this.requireTask(taskId);
    if (task.nodeId === null) return { stdout: '', stderr: '' };
    const tail = clampTail(tailBytes);
    if (task.nodeId === this.init.selfId) return this.localLogs(taskId, tail);
    return this.init.control.remoteLogs(task.nodeId, taskId, tail);
  }

  /** This node's copy of a task's logs. */
  async localLogs(taskId: string, tailBytes: number): Promise<{ stdout: string; stderr: string }> {
    const logs = await readTaskLogs(this.init.taskDir(taskId), { tailBytes });
    return { stdout: logs.stdout.toString('utf8'), stderr: logs.stderr.toString('utf8') };
  }

  /**
   * `shoal logs -f`: the task's output from `tailBytes` back, then new output as it comes, until the task ends
   * or `signal` aborts. Waits for a pending task to be placed; follows through the node that runs it.
   */
  async followLogs(taskId: string, tailBytes: number, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
    await this.init.control.readBarrier();
    this.requireTask(taskId);
    return this.followAnywhere(taskId, clampTail(tailBytes), signal);
  }

  /** `GET /v1/events`: from this node's own ring, without a quorum round (events are not replicated). */
  events(index: number | null, filter: EventFilter, signal: AbortSignal): Promise<AsyncIterable<EventFrame>> {
    return Promise.resolve(this.init.events.open(index, filter, signal));
  }

  /** A follow asked of this node by another: the task runs here. */
  async *followHere(
    taskId: string,
    tailBytes: number,
    signal: AbortSignal,
  ): AsyncGenerator<LogFrame, void, undefined> {
    // Asked by another node: this replica may not have applied the assignment yet.
    await this.init.control.readBarrier();
    this.requireTask(taskId);
    yield* followLocalLogs({
      taskDir: this.init.taskDir(taskId),
      nodeId: this.init.selfId,
      taskId,
      tailBytes: clampTail(tailBytes),
      current: (id) => this.init.state.tasks.get(id),
      signal,
    });
  }

  /**
   * The token a secret belongs to. A secret this node does not know may belong to a token committed a
   * moment ago that this node has not applied yet (a client that made a token through one node and uses it
   * at once through another): a node that does not lead looks again after a read barrier before refusing.
   */
  async authenticate(secret: string): Promise<TokenRecord> {
    const secretHash = hashTokenSecret(secret);
    let token = this.init.state.tokenBySecretHash(secretHash);
    if (!token && !this.init.raft.isLeader()) {
      await this.init.control.readBarrier();
      token = this.init.state.tokenBySecretHash(secretHash);
    }
    if (!token) {
      throw new ShoalError(
        'UNAUTHENTICATED',
        'the cluster knows no such token (wrong, or revoked); an admin makes one with shoal acl token create',
      );
    }
    if (tokenExpired(token, Date.now())) {
      const at = new Date(token.expiresAtMs ?? 0).toISOString();
      throw new ShoalError('UNAUTHENTICATED', `token ${token.name} (${token.accessorId}) expired at ${at}`);
    }
    return token;
  }

  /**
   * A task's namespace never changes, so a task this node knows needs no read barrier; the route's own
   * handler takes one (kill, logs), and this check would otherwise cost a second ReadIndex round.
   */
  async taskNamespace(taskId: string): Promise<string> {
    if (!this.init.state.tasks.has(taskId)) await this.init.control.readBarrier();
    return this.requireTask(taskId).spec.namespace ?? defaultNamespace;
  }

  /** Makes a token; its secret is in the answer and nowhere else (the log holds its hash). */
  async createToken(request: TokenRequest): Promise<Answer<'createToken'>> {
    const { secret, secretHash } = newTokenSecret();
    const atMs = Date.now();
    const token: TokenRecord = {
      accessorId: newAccessorId(),
      name: request.name,
      role: request.role,
      namespaces: request.namespaces ?? null,
      secretHash,
      createdAtMs: atMs,
      expiresAtMs: request.ttlSeconds === undefined ? null : atMs + request.ttlSeconds * 1000,
    };
    await this.init.control.proposeOrThrow({ type: 'createToken', token, atMs });
    return { ...tokenView(token, atMs), secret };
  }

  async tokens(): Promise<Answer<'tokens'>> {
    await this.init.control.readBarrier();
    const nowMs = Date.now();
    return [...this.init.state.tokens.values()]
      .sort((a, b) => a.createdAtMs - b.createdAtMs)
      .map((token) => tokenView(token, nowMs));
  }

  async revokeToken(accessorId: string): Promise<void> {
    await this.init.control.proposeOrThrow({ type: 'revokeToken', accessorId, atMs: Date.now() });
  }

  health(): Answer<'health'> {
    return { status: 'ok', node: this.init.selfName, version: shoalVersion };
  }

  status(): Answer<'status'> {
    const status = this.init.raft.status();
    const named = (id: string): { id: string; name: string } => ({ id, name: this.init.nameOf(id) });
    return {
      id: this.init.selfId,
      name: this.init.selfName,
      role: status.role,
      leader: status.leaderId === null ? null : named(status.leaderId),
      term: status.term,
      voters: status.config.voters.map(named),
      learners: status.config.learners.map(named),
      commitIndex: status.commitIndex,
      appliedIndex: status.appliedIndex,
      eventLoopStallMsMax: Math.round(this.init.raft.tickStallMsMax),
      warning: this.init.faultToleranceWarning(),
    };
  }

  members(): Answer<'members'> {
    const now = Date.now();
    return this.init.membership.members().map((member) => ({
      id: member.record.id,
      name: member.record.name,
      address: member.record.address,
      state: member.state,
      cpuMillis: member.record.cpuMillis,
      memoryBytes: member.record.memoryBytes,
      labels: member.record.labels,
      drivers: member.record.drivers,
      incarnation: member.record.incarnation,
      lastHeardMsAgo: member.record.id === this.init.selfId ? 0 : now - member.lastHeardMs,
      draining: this.init.state.nodes.get(member.record.id)?.draining ?? false,
    }));
  }

  /** Drains a node (by name or id): no new tasks there, and its tasks move elsewhere. */
  async drain(node: string, drain: boolean): Promise<void> {
    await this.init.control.readBarrier();
    const target = [...this.init.state.nodes.values()].find((n) => n.id === node || n.name === node);
    if (!target) throw new ShoalError('NOT_FOUND', `no node ${node}; list nodes with shoal members`);
    await this.init.control.proposeOrThrow({ type: 'drainNode', nodeId: target.id, drain, atMs: Date.now() });
  }

  /**
   * `shoal leave` on this node: drains it, waits until its tasks have moved (at most leaveDrainTimeoutMs),
   * then hands the process over to the shutdown handler (which hands over leadership and leaves).
   */
  async leaveCluster(): Promise<void> {
    const { state, selfId } = this.init;
    await this.drain(selfId, true);
    const deadline = Date.now() + leaveDrainTimeoutMs;
    while (state.liveTasksOn(selfId).length > 0 && Date.now() < deadline) await sleep(100);
    const left = state.liveTasksOn(selfId).length;
    if (left > 0) this.init.warn(`leaving with ${left} tasks not yet moved`);
    setImmediate(() => this.init.requestLeave());
  }

  clusterCa(): Answer<'clusterCa'> {
    // From this node's state, without a quorum round: the route is public, and a CA, once set, never changes.
    const ca = this.init.state.clusterCa;
    if (ca === null)
      throw new ShoalError(
        'NOT_FOUND',
        "this cluster has no CA: no node serves its API with --tls auto (with --tls-cert, ask the operator for the certificate's CA and give it to the CLI as --ca FILE)",
      );
    return { certificatePem: ca.certificatePem };
  }

  clusterKey(): Answer<'clusterKey'> {
    return { key: this.init.clusterKey };
  }

  async snapshot(): Promise<Answer<'snapshot'>> {
    // After the barrier the state holds every write committed before this request: one consistent cut,
    // serialized in one synchronous step.
    await this.init.control.readBarrier();
    const { state } = this.init;
    return makeBackupFile(state.toSnapshot(), {
      index: state.appliedIndex,
      tasks: state.tasks.size,
      atMs: Date.now(),
      shoalVersion,
    });
  }

  async restoreSnapshot(file: BackupFile): Promise<Answer<'restoreSnapshot'>> {
    const { state: backup } = openBackupFile(file, 'the snapshot');
    await this.init.control.readBarrier();
    const { state } = this.init;
    if (state.tasks.size > 0)
      throw new ShoalError(
        'CONFLICT',
        `this cluster has ${state.tasks.size} tasks; restore into a new cluster (one agent on an empty data dir)`,
      );
    const keepClusterCa = state.clusterCa === null && backup.clusterCa != null && this.opensCa(backup);
    await this.init.control.proposeOrThrow({
      type: 'restoreBackup',
      backup,
      keepClusterCa,
      atMs: Date.now(),
    });
    await this.init.control.readBarrier();
    // Counted from the snapshot and what the restore made of each task (not where they stand now, which
    // the allocator may have changed already).
    const live = backup.tasks.filter((task) => !isTerminal(task.state));
    const ran = live.filter((task) => task.state !== 'pending');
    const requeued = ran.filter((task) => (state.tasks.get(task.id)?.attempt ?? 0) > task.attempt);
    return {
      index: state.appliedIndex,
      snapshotIndex: file.index,
      tasks: backup.tasks.length,
      waiting: live.length - ran.length,
      requeued: requeued.length,
      lost: ran.length - requeued.length,
      namespaces: backup.namespaces?.length ?? 0,
      tokens: backup.tokens?.length ?? 0,
      clusterCaKept: keepClusterCa,
    };
  }

  /** Whether this cluster's key opens the backup's CA key (it was saved from a cluster with this key). */
  private opensCa(backup: BackupState): boolean {
    if (!backup.clusterCa) return false;
    try {
      openCaKey(backup.clusterCa, this.init.clusterKey);
      return true;
    } catch {
      return false;
    }
  }

  private async *followAnywhere(
    taskId: string,
    tailBytes: number,
    signal: AbortSignal,
  ): AsyncGenerator<LogFrame, void, undefined> {
    const { state } = this.init;
    for (;;) {
      const task = state.tasks.get(taskId);
      if (!task) {
        yield { end: 'the task is gone' };
        return;
      }
      if (task.nodeId !== null) break;
      if (isTerminal(task.state)) {
        yield { end: `task ${task.state}${task.reason === null ? '' : `: ${task.reason}`}` };
        return;
      }
      // Not placed yet: its output will appear where it is placed.
      await sleep(followPlacementPollMs);
      if (signal.aborted) return;
    }
    const nodeId = state.tasks.get(taskId)?.nodeId ?? null;
    if (nodeId === null) return;
    if (nodeId === this.init.selfId) {
      yield* this.followHere(taskId, tailBytes, signal);
      return;
    }
    yield* followRemoteLogs(
      this.init.libp2p,
      peerIdFromString(nodeId),
      this.init.nameOf(nodeId),
      { taskId, tailBytes },
      signal,
    );
  }

  private requireTask(taskId: string): Task {
    const task = this.init.state.tasks.get(taskId);
    if (!task) throw new ShoalError('NOT_FOUND', `no task ${taskId}; list tasks with shoal ps`);
    return task;
  }

  private taskView(task: Task): TaskView {
    return {
      id: task.id,
      name: task.spec.name,
      state: task.state,
      node: task.nodeId === null ? null : this.init.nameOf(task.nodeId),
      nodeId: task.nodeId,
      exitCode: task.exitCode,
      reason: task.reason,
      attempt: task.attempt,
      restart: task.spec.restart?.policy ?? 'never',
      priority: task.spec.priority,
      namespace: task.spec.namespace ?? defaultNamespace,
      job: task.spec.job ?? null,
      driver: task.spec.driver,
      cpuMillis: task.spec.cpuMillis,
      memoryBytes: task.spec.memoryBytes,
      command: task.spec.command,
      image: task.spec.image ?? null,
      desired: isTerminal(task.state) ? 'none' : task.desired,
      submittedAt: new Date(task.submittedAtMs).toISOString(),
      updatedAt: new Date(task.updatedAtMs).toISOString(),
      ports: this.portsView(task),
      health:
        task.health === undefined
          ? null
          : {
              status: task.health.status,
              since: new Date(task.health.sinceMs).toISOString(),
              message: task.health.message,
            },
      framework:
        task.framework === undefined
          ? null
          : {
              id: task.framework.id,
              name:
                task.framework.name ??
                this.init.state.frameworks.get(task.framework.id)?.info.name ??
                task.framework.id,
              taskId: task.framework.taskId,
            },
    };
  }

  private portsView(task: Task): TaskView['ports'] {
    if (task.hostPorts === undefined) return [];
    const node = task.nodeId === null ? undefined : this.init.state.nodes.get(task.nodeId);
    const host = node === undefined ? '' : hostOf(node.address);
    return portNames(task.spec).flatMap((name) => {
      const hostPort = task.hostPorts?.[name];
      return hostPort === undefined ? [] : [{ name, hostPort, address: `${host}:${hostPort}` }];
    });
  }
}

function frameworkView(summary: FrameworkSummary): FrameworkView {
  const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());
  return {
    id: summary.id,
    name: summary.info.name,
    role: summary.info.role,
    user: summary.info.user,
    priority: summary.info.priority,
    failoverTimeoutSeconds: summary.info.failoverTimeoutMs / 1000,
    connected: summary.streamId !== null,
    registeredAt: new Date(summary.registeredAtMs).toISOString(),
    disconnectedAt: iso(summary.disconnectedAtMs),
    expiresAt: iso(summary.expiresAtMs),
    tasks: summary.taskCount,
    pendingUpdates: summary.pendingUpdateCount,
  };
}

function tokenView(token: TokenRecord, nowMs: number): Answer<'tokens'>[number] {
  return {
    accessorId: token.accessorId,
    name: token.name,
    role: token.role,
    namespaces: token.namespaces,
    createdAt: new Date(token.createdAtMs).toISOString(),
    expiresAt: token.expiresAtMs === null ? null : new Date(token.expiresAtMs).toISOString(),
    expired: tokenExpired(token, nowMs),
  };
}

function clampTail(tailBytes: number): number {
  return Math.min(Math.max(tailBytes, 0), logsTailBytesMax);
}

/** Resources summed for the queue's order: CPU, memory, disk and devices. */
interface Use {
  cpuMillis: number;
  memoryBytes: number;
  diskBytes: number;
  devices: Record<string, number>;
}

function emptyUse(): Use {
  return { cpuMillis: 0, memoryBytes: 0, diskBytes: 0, devices: {} };
}

function addUse(
  use: Use,
  what: {
    readonly cpuMillis: number;
    readonly memoryBytes: number;
    readonly diskBytes?: number | undefined;
    readonly devices?: Readonly<Record<string, number>> | undefined;
  },
): Use {
  use.cpuMillis += what.cpuMillis;
  use.memoryBytes += what.memoryBytes;
  use.diskBytes += what.diskBytes ?? 0;
  for (const [kind, count] of Object.entries(what.devices ?? {}))
    use.devices[kind] = (use.devices[kind] ?? 0) + count;
  return use;
}
