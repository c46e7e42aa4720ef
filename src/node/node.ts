/**
 * The composition root: wires one shoal node from its config. Every node runs membership, Raft, the
 * agent and the API; the Raft leader also registers nodes, manages voters and runs the allocator.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, statSync, statfsSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { availableParallelism, totalmem } from 'node:os';
import { peerIdFromString } from '@libp2p/peer-id';
import { preemptionPriorityGapDefault } from '../allocator/index.ts';
import type { SubmitOptions } from '../api/index.ts';
import {
  ClusterState,
  isTerminal,
  type ApplyResult,
  type ClusterNode,
  type Command,
  type NodeDescription,
  type Task,
  type TaskDriver,
  type NamespacePolicySpec,
  type TaskSpec,
  taskNameLengthMax,
} from '../cluster/index.ts';
import {
  Libp2pRaftTransport,
  RaftService,
  defaultRaftTimings,
  defaultVoterPolicy,
  parseConfig,
  planVoterChange,
  type CompactionPolicy,
  type LogEntry,
  type RaftTimings,
  type VoterPolicy,
} from '../election/index.ts';
import {
  MembershipService,
  defaultMembershipConfig,
  type Member,
  type MembershipConfig,
} from '../membership/index.ts';
import { Agent, type TaskReport } from '../runtime/agent.ts';
import {
  cgroupParentDefault,
  createDockerDriver,
  createExecDriver,
  readTaskLogs,
  type Driver,
} from '../runtime/drivers/index.ts';
import { ShoalError, errorMessage, isShoalError } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { systemRandom } from '../shared/random.ts';
import { callRpc, handleRpc } from '../shared/wire.ts';
import { advertisedHost, formatHostPort, type HostPort, toMultiaddr } from './address.ts';
import { ensureDataDir, loadOrCreateNodeKey, nextIncarnation, resolveClusterKey } from './identity.ts';
import { createP2p, type ShoalLibp2p } from './p2p.ts';
import { Scheduler } from './scheduler.ts';
import { followLocalLogs, followRemoteLogs, serveLogs } from './follow.ts';
import type { LogFrame } from '../shared/log-frames.ts';

export const shoalVersion = '0.1.0';
export const controlProtocol = '/shoal/control/1.0.0';
/** How long a write waits for a leader and a commit before it fails. */
export const writeTimeoutMs = 10_000;
/** Placements per committed plan, so one plan stays a small log entry. */
export const placementsPerPlanMax = 2000;
/** Log bytes returned by one logs request. */
export const logsTailBytesMax = 4 * 1024 * 1024;
/**
 * An agent that has not renewed its lease with a leader for this long stops its tasks; the leader
 * replaces a node's tasks only after the lease plus replaceGraceMs has passed without a renewal, so the
 * two never overlap. The agent counts from when it sent its last confirmed renewal, the leader from when
 * that renewal arrived (later), so the grace only has to cover the stop itself: the shim checks the lease
 * every 250 ms and kills at once; an agent that notices first gives 0.5 s of grace (leaseStopGraceMs).
 */
export const taskLeaseMs = 10_000;
export const leaseFileName = 'lease.json';
export const replaceGraceMs = 1_000;
/** How often an agent renews its lease with the leader. */
export const leaseRenewIntervalMs = 1_000;
/** Lease renewals arriving within this long share one ReadIndex round (see confirmLeadership). */
export const leadershipCheckBatchMs = 20;
/** New tasks go only to nodes that renewed their lease this recently. */
export const placementLeaseFreshMs = 5_000;
/** How long `shoal leave` waits for a node's tasks to move before it leaves anyway. */
export const leaveDrainTimeoutMs = 60_000;
/**
 * How often the node checks its drivers (a ping of the Docker engine's socket): an engine that dies stops
 * being advertised within about this long plus a membership update, so the allocator stops placing docker
 * tasks here; one that returns is advertised again as quickly.
 */
export const driverHealthIntervalMs = 2000;
/** How often the agent collects garbage (leftover containers, processes, old task directories). */
export const garbageIntervalMs = 60_000;
/** The first collection, soon after start: what a crashed agent left is freed without waiting a minute. */
export const garbageFirstDelayMs = 5000;
/** How long a read waits for the leader to confirm it still leads. */
export const readIndexTimeoutMs = 2000;

export interface NodeConfig {
  readonly dataDir: string;
  readonly listen: HostPort;
  readonly join: readonly string[];
  readonly clusterKey: string | null;
  readonly name: string;
  readonly cpuMillis: number | null;
  readonly memoryBytes: number | null;
  /** Disk offered to tasks; null: the data dir's free space at start minus reservedDiskBytes. */
  readonly diskBytes?: number | null;
  /** Device counts by kind offered to tasks (e.g. gpu: 2). */
  readonly devices?: Readonly<Record<string, number>>;
  /** A task may preempt only tasks at least this much lower in priority (101 turns preemption off). */
  readonly preemptionPriorityGap?: number;
  readonly labels: Readonly<Record<string, string>>;
  readonly dockerSocket: string | null;
  readonly raftTimings?: RaftTimings;
  readonly membership?: MembershipConfig;
  readonly voterPolicy?: VoterPolicy;
  readonly compaction?: CompactionPolicy;
  /** Held back from detected capacity for the agent itself, so tasks cannot starve the control plane. */
  readonly reservedCpuMillis?: number;
  readonly reservedMemoryBytes?: number;
}

/** What the agent keeps for itself when capacity is detected: Raft, gossip and the API must stay responsive. */
export const reservedCpuMillisDefault = 200;
export const reservedMemoryBytesDefault = 256 * 1024 * 1024;
/** Disk kept free on the data dir's filesystem when disk capacity is detected: the log and logs need it. */
export const reservedDiskBytesDefault = 1024 * 1024 * 1024;
/** The leader rebuilds its allocator from the state this often, whatever happens (see scheduler.ts). */
export const schedulerRebuildIntervalMs = 5 * 60_000;

export interface StatusView {
  readonly id: string;
  readonly name: string;
  readonly role: string;
  readonly leader: { id: string; name: string } | null;
  readonly term: number;
  readonly voters: { id: string; name: string }[];
  readonly learners: { id: string; name: string }[];
  readonly commitIndex: number;
  readonly appliedIndex: number;
  /** The longest the event loop stalled between two Raft ticks since start (election timeouts must exceed it). */
  readonly eventLoopStallMsMax: number;
}

export interface MemberView {
  readonly id: string;
  readonly name: string;
  readonly address: string;
  readonly state: string;
  readonly cpu: number;
  readonly memory: number;
  readonly labels: Record<string, string>;
  readonly drivers: string[];
  readonly incarnation: number;
  readonly lastHeardMsAgo: number;
  /** True while `shoal drain` keeps new tasks off the node. */
  readonly draining: boolean;
}

export interface TaskView {
  readonly id: string;
  readonly name: string;
  readonly state: string;
  readonly node: string | null;
  readonly nodeId: string | null;
  readonly exitCode: number | null;
  readonly reason: string | null;
  /** 0 for the first run, +1 per restart. */
  readonly attempt: number;
  readonly restart: string;
  readonly priority: number;
  readonly namespace: string;
  readonly job: string | null;
  readonly driver: string;
  readonly cpu: number;
  readonly memory: number;
  readonly command: string[];
  readonly image: string | null;
  readonly desired: string;
  readonly submittedAt: string;
  readonly updatedAt: string;
}

/** One task with its recent events, oldest first (`shoal inspect`, `shoal run`). */
export interface TaskDetailView extends TaskView {
  readonly events: { readonly at: string; readonly message: string }[];
}

type ControlRequest =
  | { method: 'propose'; command: Command }
  | { method: 'renewLease' }
  | { method: 'readIndex' }
  | { method: 'logs'; taskId: string; tailBytes: number };

const mebibyte = 1024 * 1024;

export class ShoalNode {
  readonly config: NodeConfig;
  readonly logger: Logger;
  readonly state = new ClusterState();
  readonly clusterKey: string;
  readonly createdCluster: boolean;
  private libp2pHost: ShoalLibp2p | null = null;
  private raftService: RaftService | null = null;
  private membershipService: MembershipService | null = null;
  private agentService: Agent | null = null;
  private drivers = new Map<TaskDriver, Driver>();
  private leaderTimer: NodeJS.Timeout | null = null;
  private healthTimer: NodeJS.Timeout | null = null;
  private garbageTimer: NodeJS.Timeout | null = null;
  private planInFlight = false;
  /** The leader's allocator, kept in step with the state while this node leads (null otherwise). */
  private scheduler: Scheduler | null = null;
  private backoffTimer: NodeJS.Timeout | null = null;
  private configInFlight = false;
  /** When each member was last seen turning alive (for the voter promotion stability period). */
  private readonly aliveSinceMs = new Map<string, number>();
  /**
   * Agent side: when this node last confirmed that a leader hears it. Kept in the data dir, so a restarted
   * agent does not grant itself a fresh lease (its tasks may have been placed elsewhere meanwhile).
   */
  private leaseConfirmedMs = 0;
  /** The term and leader onLeaderChange last acted on. */
  private leaderKey = '';
  private leaseTimer: NodeJS.Timeout | null = null;
  private leaseExpiryTimer: NodeJS.Timeout | null = null;
  /** Leader side: when each node last renewed its lease with this leader (this node's clock). */
  private readonly leaseRenewedMs = new Map<string, number>();
  private ledInTerm = 0;
  private readonly nodeUpdatesInFlight = new Set<string>();
  /** The ReadIndex round in flight that confirms this node still leads (see confirmLeadership). */
  private leadershipCheck: { started: boolean; done: Promise<void> } | null = null;
  private stopped = false;

  private constructor(config: NodeConfig, logger: Logger, clusterKey: string, createdCluster: boolean) {
    this.config = config;
    this.logger = logger;
    this.clusterKey = clusterKey;
    this.createdCluster = createdCluster;
  }

  /** Starts a node: identity, libp2p, Raft, membership, agent. Throws ShoalError on bad config or data. */
  static async start(config: NodeConfig, logger: Logger): Promise<ShoalNode> {
    ensureDataDir(config.dataDir);
    const { key, created } = resolveClusterKey(config.dataDir, config.clusterKey, config.join.length > 0);
    const node = new ShoalNode(config, logger, key, created);
    try {
      await node.startParts();
    } catch (error) {
      await node.stop();
      throw error;
    }
    return node;
  }

  get id(): string {
    return this.libp2p.peerId.toString();
  }

  /** host:port other nodes join with. */
  get joinAddress(): string {
    return formatHostPort({ host: advertisedHost(this.config.listen.host), port: this.listenPort() });
  }

  private get libp2p(): ShoalLibp2p {
    if (!this.libp2pHost) throw new ShoalError('UNAVAILABLE', 'the node is not started');
    return this.libp2pHost;
  }

  private get raft(): RaftService {
    if (!this.raftService) throw new ShoalError('UNAVAILABLE', 'the node is not started');
    return this.raftService;
  }

  private get membership(): MembershipService {
    if (!this.membershipService) throw new ShoalError('UNAVAILABLE', 'the node is not started');
    return this.membershipService;
  }

  private async startParts(): Promise<void> {
    const { config, logger } = this;
    const privateKey = await loadOrCreateNodeKey(config.dataDir);
    const incarnation = nextIncarnation(config.dataDir);
    this.leaseConfirmedMs = readLease(join(config.dataDir, leaseFileName));
    try {
      this.libp2pHost = await createP2p({
        privateKey,
        listenMultiaddr: toMultiaddr(config.listen),
        clusterKey: this.clusterKey,
      });
    } catch (error) {
      throw new ShoalError(
        'UNAVAILABLE',
        `cannot listen on ${formatHostPort(config.listen)}: ${errorMessage(error)}; pick another --listen`,
        {
          cause: error,
        },
      );
    }
    const id = this.libp2p.peerId.toString();

    // Cgroups under one of this node's own: two agents on one host (tests, the chaos harness) must not share
    // a task's cgroup when the task moves between them, nor remove each other's.
    this.drivers.set(
      'exec',
      createExecDriver({ logger: logger.child('exec'), cgroupParent: `${cgroupParentDefault}/${id}` }),
    );
    const dockerInit =
      config.dockerSocket === null
        ? { logger: logger.child('docker'), nodeId: id }
        : { logger: logger.child('docker'), socketPath: config.dockerSocket, nodeId: id };
    this.drivers.set('docker', createDockerDriver(dockerInit));
    const drivers = await this.healthyDrivers();

    this.raftService = new RaftService({
      id,
      walDir: join(config.dataDir, 'raft'),
      transport: new Libp2pRaftTransport(this.libp2p, logger.child('raft')),
      timings: config.raftTimings ?? defaultRaftTimings,
      ...(config.compaction === undefined ? {} : { compaction: config.compaction }),
      random: systemRandom(),
      logger: logger.child('raft'),
      apply: (entry) => this.applyEntry(entry),
      snapshotState: () => this.state.toSnapshot(),
      restoreState: (data) => {
        this.state.restore(data);
        this.agentService?.schedule();
      },
      // Not a reconcile per change: Raft reports one for every heartbeat and ReadIndex round, and a
      // reconcile walks every task here. Applied entries, lease changes and the agent's own timer
      // schedule it; so does a change of leader.
      onChange: () => this.onLeaderChange(),
    });
    if (this.raft.isEmpty() && config.join.length === 0) {
      logger.info('starting a new cluster', { node: config.name, id });
      this.raft.bootstrap();
    }

    this.membershipService = new MembershipService({
      libp2p: this.libp2p,
      self: {
        name: config.name,
        address: this.joinAddress,
        cpuMillis:
          config.cpuMillis ??
          Math.max(0, availableParallelism() * 1000 - (config.reservedCpuMillis ?? reservedCpuMillisDefault)),
        memoryBytes:
          config.memoryBytes ??
          Math.max(0, totalmem() - (config.reservedMemoryBytes ?? reservedMemoryBytesDefault)),
        diskBytes: config.diskBytes ?? detectDiskBytes(config.dataDir),
        ...(config.devices === undefined || Object.keys(config.devices).length === 0
          ? {}
          : { devices: { ...config.devices } }),
        labels: { ...config.labels },
        drivers,
        version: shoalVersion,
        incarnation,
      },
      config: config.membership ?? defaultMembershipConfig,
      logger: logger.child('members'),
      onTransition: (transition) => {
        if (transition.to === 'alive') this.aliveSinceMs.set(transition.id, Date.now());
        else this.aliveSinceMs.delete(transition.id);
        this.scheduleLeaderWork();
      },
    });

    await handleRpc(this.libp2p, controlProtocol, (request, remotePeer) =>
      this.handleControl(request as ControlRequest, remotePeer.toString()),
    );
    await serveLogs(this.libp2p, (request, signal) =>
      this.followHere(request.taskId, Math.min(request.tailBytes, logsTailBytesMax), signal),
    );
    await this.raft.start();
    await this.membership.start();
    // Join first, and start the agent while the dial and the push-pull are under way: the cluster learns
    // of a new node sooner (bench:membership's join time). Nothing is placed here before the node holds
    // a lease and is registered in the replicated state, so joining early promises nothing too soon.
    const joining = config.join.length > 0 ? this.membership.join(config.join, 30_000) : null;
    // Awaited below; until then a rejection (a wrong key) must not count as unhandled.
    joining?.catch(() => undefined);

    this.agentService = new Agent({
      nodeId: id,
      dataDir: config.dataDir,
      drivers: this.drivers,
      logger: logger.child('agent'),
      assignedTasks: () => this.state.liveTasksOn(id),
      task: (taskId) => this.state.tasks.get(taskId),
      report: (report) => this.reportTask(report),
      recordEvents: async (batch) => {
        const result = await this.propose({ type: 'taskEvents', nodeId: id, ...batch });
        if (!result.ok) throw new ShoalError(result.code, result.message);
      },
      leaseExpired: () => Date.now() - this.leaseConfirmedMs > taskLeaseMs,
      leaseReason: `stopped after losing contact with the cluster's leader for ${taskLeaseMs / 1000} s`,
      lease: { file: join(config.dataDir, leaseFileName), durationMs: taskLeaseMs },
    });
    await this.agentService.start();

    if (joining) {
      await joining;
      logger.info('joined the cluster', { via: config.join.join(',') });
    }
    this.leaderTimer = setInterval(() => this.scheduleLeaderWork(), 500);
    this.healthTimer = setInterval(() => void this.refreshDriverHealth(), driverHealthIntervalMs);
    this.garbageTimer = setTimeout(() => void this.collectGarbage(), garbageFirstDelayMs);
    this.leaseTimer = setInterval(() => void this.renewLease(), leaseRenewIntervalMs);
    this.onLeaderChange();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.leaderTimer) clearInterval(this.leaderTimer);
    if (this.healthTimer) clearInterval(this.healthTimer);
    if (this.garbageTimer) clearTimeout(this.garbageTimer);
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    if (this.leaseExpiryTimer) clearTimeout(this.leaseExpiryTimer);
    this.agentService?.stop();
    this.membershipService?.stop();
    this.raftService?.stop();
    try {
      await this.libp2pHost?.stop();
    } catch (error) {
      this.logger.debug('libp2p stop failed', { error: errorMessage(error) });
    }
  }

  /** Graceful shutdown: stops local tasks, then announces the leave so peers don't wait for a timeout. */
  async leave(graceMs: number): Promise<void> {
    await this.agentService?.stopAll(graceMs);
    // A leader hands over first, so the cluster does not wait out an election timeout.
    if (this.raftService?.isLeader() === true) {
      const moved = await this.raftService.transferLeadership(2000).catch(() => false);
      this.logger.info(moved ? 'handed leadership over' : 'could not hand leadership over; leaving anyway');
    }
    await this.membershipService?.leave();
  }

  // ---- the API's operations -------------------------------------------------------------------------

  /** Drains a node (by name or id): no new tasks there, and its tasks move elsewhere. */
  async drain(node: string, drain: boolean): Promise<void> {
    await this.readBarrier();
    const target = [...this.state.nodes.values()].find((n) => n.id === node || n.name === node);
    if (!target) throw new ShoalError('NOT_FOUND', `no node ${node}; list nodes with shoal members`);
    const result = await this.propose({ type: 'drainNode', nodeId: target.id, drain, atMs: Date.now() });
    if (!result.ok) throw new ShoalError(result.code, result.message);
  }

  /**
   * `shoal leave` on this node: drains it, waits until its tasks have moved (at most leaveDrainTimeoutMs),
   * then hands the process over to the shutdown handler (which hands over leadership and leaves).
   */
  async leaveCluster(): Promise<void> {
    await this.drain(this.id, true);
    const deadline = Date.now() + leaveDrainTimeoutMs;
    while (this.state.liveTasksOn(this.id).length > 0 && Date.now() < deadline) await sleep(100);
    const left = this.state.liveTasksOn(this.id).length;
    if (left > 0) this.logger.warn(`leaving with ${left} tasks not yet moved`);
    setImmediate(() => this.onLeaveRequested?.());
  }

  /** Set by the process that runs the node: what to do once `shoal leave` has drained it. */
  onLeaveRequested: (() => void) | null = null;

  async submit(spec: TaskSpec, options: SubmitOptions = { replicas: 1, gang: false }): Promise<string[]> {
    // A client that names its task can retry a submission whose outcome it did not hear: ids are
    // idempotent in the log, and replicas' ids derive from the first.
    const baseId = options.id ?? randomBytes(6).toString('hex');
    if (options.replicas <= 1 && !options.gang) {
      const id = baseId;
      const result = await this.propose({ type: 'submitTask', id, spec, atMs: Date.now() });
      if (!result.ok) throw new ShoalError(result.code, result.message);
      return [id];
    }
    // Replicas form one job (named after the task unless given); a gang is also one group, so the
    // allocator starts all of them or none. One entry: they are all accepted or none.
    const ids = Array.from({ length: options.replicas }, (_, index) =>
      index === 0 ? baseId : createHash('sha256').update(`${baseId}/${index}`).digest('hex').slice(0, 12),
    );
    const job = spec.job ?? spec.name;
    const digits = String(options.replicas - 1).length;
    const tasks = ids.map((id, index) => ({
      id,
      spec: {
        ...spec,
        name: `${spec.name.slice(0, taskNameLengthMax - digits - 1)}-${index}`,
        job,
        ...(options.gang ? { group: `gang-${ids[0] ?? id}` } : {}),
      },
    }));
    const result = await this.propose({ type: 'submitTasks', tasks, atMs: Date.now() });
    if (!result.ok) throw new ShoalError(result.code, result.message);
    return ids;
  }

  async namespaces(): Promise<NamespacePolicySpec[]> {
    await this.readBarrier();
    return [...this.state.namespaces.values()];
  }

  async setNamespace(policy: NamespacePolicySpec): Promise<void> {
    const result = await this.propose({ type: 'setNamespace', policy, atMs: Date.now() });
    if (!result.ok) throw new ShoalError(result.code, result.message);
  }

  async kill(taskId: string): Promise<void> {
    await this.readBarrier();
    this.requireTask(taskId);
    const result = await this.propose({ type: 'killTask', taskId, atMs: Date.now() });
    if (!result.ok) throw new ShoalError(result.code, result.message);
  }

  async tasks(): Promise<TaskView[]> {
    await this.readBarrier();
    return [...this.state.tasks.values()]
      .sort((a, b) => a.submitIndex - b.submitIndex)
      .map((task) => this.taskView(task));
  }

  async task(taskId: string): Promise<TaskDetailView> {
    await this.readBarrier();
    const task = this.requireTask(taskId);
    return {
      ...this.taskView(task),
      events: [{ atMs: task.submittedAtMs, message: 'submitted' }, ...task.events].map((event) => ({
        at: new Date(event.atMs).toISOString(),
        message: event.message,
      })),
    };
  }

  async logs(taskId: string, tailBytes: number): Promise<{ stdout: string; stderr: string }> {
    await this.readBarrier();
    const task = this.requireTask(taskId);
    if (task.nodeId === null) return { stdout: '', stderr: '' };
    const tail = Math.min(Math.max(tailBytes, 0), logsTailBytesMax);
    if (task.nodeId === this.id) return this.localLogs(taskId, tail);
    const reply = (await callRpc(
      this.libp2p,
      peerIdFromString(task.nodeId),
      controlProtocol,
      { method: 'logs', taskId, tailBytes: tail } satisfies ControlRequest,
      5000,
    )) as { stdout: string; stderr: string };
    return reply;
  }

  /**
   * `shoal logs -f`: the task's output from `tailBytes` back, then new output as it comes, until the task ends
   * or `signal` aborts. Waits for a pending task to be placed; follows through the node that runs it.
   */
  async followLogs(taskId: string, tailBytes: number, signal: AbortSignal): Promise<AsyncIterable<LogFrame>> {
    await this.readBarrier();
    this.requireTask(taskId);
    const tail = Math.min(Math.max(tailBytes, 0), logsTailBytesMax);
    return this.followAnywhere(taskId, tail, signal);
  }

  private async *followAnywhere(
    taskId: string,
    tailBytes: number,
    signal: AbortSignal,
  ): AsyncGenerator<LogFrame, void, undefined> {
    for (;;) {
      const task = this.state.tasks.get(taskId);
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
      await sleep(250);
      if (signal.aborted) return;
    }
    const nodeId = this.state.tasks.get(taskId)?.nodeId ?? null;
    if (nodeId === null) return;
    if (nodeId === this.id) {
      yield* this.followHere(taskId, tailBytes, signal);
      return;
    }
    yield* followRemoteLogs(
      this.libp2p,
      peerIdFromString(nodeId),
      this.nameOf(nodeId),
      { taskId, tailBytes },
      signal,
    );
  }

  private async *followHere(
    taskId: string,
    tailBytes: number,
    signal: AbortSignal,
  ): AsyncGenerator<LogFrame, void, undefined> {
    // Asked by another node: this replica may not have applied the assignment yet.
    await this.readBarrier();
    this.requireTask(taskId);
    yield* followLocalLogs({
      taskDir: this.agentService?.taskDir(taskId) ?? join(this.config.dataDir, 'tasks', taskId),
      nodeId: this.id,
      taskId,
      tailBytes,
      current: (id) => this.state.tasks.get(id),
      signal,
    });
  }

  status(): StatusView {
    const raft = this.raft.status();
    const named = (id: string): { id: string; name: string } => ({ id, name: this.nameOf(id) });
    return {
      id: this.id,
      name: this.config.name,
      role: raft.role,
      leader: raft.leaderId === null ? null : named(raft.leaderId),
      term: raft.term,
      voters: raft.config.voters.map(named),
      learners: raft.config.learners.map(named),
      commitIndex: raft.commitIndex,
      appliedIndex: raft.appliedIndex,
      eventLoopStallMsMax: Math.round(this.raft.tickStallMsMax),
    };
  }

  members(): MemberView[] {
    const now = Date.now();
    return this.membership.members().map((member) => ({
      id: member.record.id,
      name: member.record.name,
      address: member.record.address,
      state: member.state,
      cpu: member.record.cpuMillis / 1000,
      memory: Math.floor(member.record.memoryBytes / mebibyte),
      labels: member.record.labels,
      drivers: member.record.drivers,
      incarnation: member.record.incarnation,
      lastHeardMsAgo: member.record.id === this.id ? 0 : now - member.lastHeardMs,
      draining: this.state.nodes.get(member.record.id)?.draining ?? false,
    }));
  }

  // ---- writes and reads through the leader -----------------------------------------------------------

  /** Commits a command through the leader (forwarding if this node is not it) and returns its result. */
  private async propose(command: Command): Promise<ApplyResult> {
    const deadline = Date.now() + writeTimeoutMs;
    let lastError: unknown = null;
    // Once an attempt may have reached a leader's log, a failure no longer means "not done": it may
    // commit later. The caller must then hear that the outcome is unknown, not that it was refused.
    let mayHaveCommitted = false;
    while (Date.now() < deadline && !this.stopped) {
      const raft = this.raft.status();
      try {
        if (raft.role === 'leader') {
          mayHaveCommitted = true;
          return (await this.raft.propose(
            JSON.stringify(command),
            Math.max(1, deadline - Date.now()),
          )) as ApplyResult;
        }
        if (raft.leaderId !== null) {
          const result = (await callRpc(
            this.libp2p,
            peerIdFromString(raft.leaderId),
            controlProtocol,
            { method: 'propose', command } satisfies ControlRequest,
            Math.max(1, deadline - Date.now()),
          )) as ApplyResult;
          return result;
        }
      } catch (error) {
        lastError = error;
        if (!isShoalError(error, 'NOT_LEADER') && !isShoalError(error, 'NO_LEADER')) {
          mayHaveCommitted = true;
        }
        // A timeout may have committed; retrying a submit is safe (ids are idempotent), others are too.
        if (isShoalError(error, 'INVALID_ARGUMENT') || isShoalError(error, 'TOO_LARGE')) throw error;
      }
      // Short: right after a failover the new leader is usually known within a few ticks.
      await sleep(20);
    }
    const detail = `${this.quorumHint()}${lastError ? `: ${errorMessage(lastError)}` : ''}`;
    if (mayHaveCommitted) {
      throw new ShoalError(
        'TIMEOUT',
        `the outcome is unknown: a leader got the request but did not confirm it within ${writeTimeoutMs / 1000} s (${detail}); it may still be committed, and sending it again with the same id is safe`,
      );
    }
    throw new ShoalError(
      'NO_LEADER',
      `no leader accepted the request within ${writeTimeoutMs / 1000} s (${detail})`,
    );
  }

  /** Makes this node's state at least as new as the leader's commit at the time of the call. */
  /**
   * Linearizable reads (ReadIndex): learn the leader's commit index once a quorum confirms its leadership,
   * then wait until this node has applied it. Without a reachable leader the read is served from local
   * state, which may be stale: a minority keeps answering `ps` rather than nothing.
   */
  private async readBarrier(): Promise<void> {
    const deadline = Date.now() + readIndexTimeoutMs;
    for (;;) {
      try {
        await this.readIndexOnce();
        return;
      } catch (error) {
        if (Date.now() >= deadline || this.stopped) {
          this.logger.warn('linearizable read failed; serving local state, which may be stale', {
            error: errorMessage(error),
          });
          return;
        }
        // Right after an election the leader must commit in its term first; that takes a few ticks.
        await sleep(20);
      }
    }
  }

  private async readIndexOnce(): Promise<void> {
    const raft = this.raft.status();
    let readIndex: number;
    if (raft.role === 'leader') {
      readIndex = await this.raft.readIndex(readIndexTimeoutMs);
    } else if (raft.leaderId !== null) {
      const reply = (await callRpc(
        this.libp2p,
        peerIdFromString(raft.leaderId),
        controlProtocol,
        { method: 'readIndex' } satisfies ControlRequest,
        readIndexTimeoutMs,
      )) as { index: number };
      readIndex = reply.index;
    } else {
      throw new ShoalError('NO_LEADER', 'no leader is known');
    }
    await this.raft.waitApplied(readIndex, readIndexTimeoutMs);
  }

  private async handleControl(request: ControlRequest, remotePeer: string): Promise<unknown> {
    switch (request.method) {
      case 'renewLease': {
        if (!this.raft.isLeader()) throw new ShoalError('NOT_LEADER', 'this node is not the leader');
        const arrivedMs = Date.now();
        this.leaseRenewedMs.set(remotePeer, arrivedMs);
        // A leader that was paused or cut off may not know it was deposed: it grants a lease only after a
        // quorum confirms it still leads (a ReadIndex round), so no agent keeps its tasks on a stale word.
        await this.confirmLeadership();
        return { ok: true };
      }
      case 'propose':
        if (!this.raft.isLeader())
          throw new ShoalError('NOT_LEADER', 'this node is no longer the leader; retry');
        return this.raft.propose(JSON.stringify(request.command), writeTimeoutMs);
      case 'readIndex':
        if (!this.raft.isLeader()) throw new ShoalError('NOT_LEADER', 'this node is not the leader');
        return { index: await this.raft.readIndex(readIndexTimeoutMs) };
      case 'logs':
        return this.localLogs(request.taskId, Math.min(request.tailBytes, logsTailBytesMax));
    }
  }

  private async localLogs(taskId: string, tailBytes: number): Promise<{ stdout: string; stderr: string }> {
    const dir = this.agentService?.taskDir(taskId) ?? join(this.config.dataDir, 'tasks', taskId);
    const logs = await readTaskLogs(dir, { tailBytes });
    return { stdout: logs.stdout.toString('utf8'), stderr: logs.stderr.toString('utf8') };
  }

  private async reportTask(report: TaskReport): Promise<void> {
    const result = await this.propose({ type: 'reportTask', nodeId: this.id, ...report, atMs: Date.now() });
    if (!result.ok) throw new ShoalError(result.code, result.message);
  }

  // ---- applying the log ------------------------------------------------------------------------------

  private applyEntry(entry: LogEntry): ApplyResult | undefined {
    if (entry.kind === 'config') {
      const config = parseConfig(entry.data);
      this.logger.info('cluster configuration committed', {
        voters: config.voters.map((id) => this.nameOf(id)).join(','),
        learners: config.learners.map((id) => this.nameOf(id)).join(','),
      });
      return undefined;
    }
    if (entry.kind !== 'command') return undefined;
    const result = this.state.apply(entry.index, JSON.parse(entry.data) as Command);
    this.agentService?.schedule();
    this.scheduleLeaderWork();
    return result;
  }

  // ---- leader duties ---------------------------------------------------------------------------------

  private leaderWorkScheduled = false;

  private scheduleLeaderWork(): void {
    if (this.leaderWorkScheduled || this.stopped) return;
    this.leaderWorkScheduled = true;
    setImmediate(() => {
      this.leaderWorkScheduled = false;
      if (this.stopped || !this.raftService?.isReadyLeader()) {
        this.dropScheduler();
        return;
      }
      const term = this.raftService.status().term;
      if (term !== this.ledInTerm) {
        // A new leader knows nothing of earlier renewals: every node gets a full lease from now.
        this.ledInTerm = term;
        const nowMs = Date.now();
        for (const id of this.state.nodes.keys()) this.leaseRenewedMs.set(id, nowMs);
      }
      this.reconcileNodes();
      this.reconcileVoters();
      this.runAllocator();
    });
  }

  /**
   * Registers members in the replicated state while they are alive and hold a lease, and marks nodes
   * down once their lease has run out (their agents have stopped their tasks by then): their tasks become
   * lost and are placed elsewhere as their restart policies allow.
   */
  private reconcileNodes(): void {
    const nowMs = Date.now();
    this.leaseRenewedMs.set(this.id, nowMs);
    for (const member of this.membership.members()) {
      const id = member.record.id;
      if (this.nodeUpdatesInFlight.has(id)) continue;
      const known = this.state.nodes.get(id);
      const renewedMs = this.leaseRenewedMs.get(id);
      const leaseHeld = renewedMs !== undefined && nowMs - renewedMs < taskLeaseMs;
      const leaseGone = renewedMs === undefined || nowMs - renewedMs >= taskLeaseMs + replaceGraceMs;
      let command: Command | null = null;
      if (member.state === 'alive' && leaseHeld) {
        const description = describeNode(member);
        if (!known || known.status === 'down' || !sameNode(known, description)) {
          command = { type: 'upsertNode', node: description, atMs: nowMs };
        }
      } else if (known?.status === 'up' && (member.state === 'left' || leaseGone)) {
        const since = new Date(renewedMs ?? member.lastHeardMs).toISOString();
        const reason =
          member.state === 'left'
            ? `node ${member.record.name} left the cluster`
            : `node ${member.record.name} unreachable since ${since}`;
        command = { type: 'nodeDown', nodeId: id, reason, atMs: nowMs };
      }
      if (!command) continue;
      this.nodeUpdatesInFlight.add(id);
      this.raft
        .propose(JSON.stringify(command), writeTimeoutMs)
        .catch((error: unknown) =>
          this.logger.debug('node update failed', { node: member.record.name, error: errorMessage(error) }),
        )
        .finally(() => this.nodeUpdatesInFlight.delete(id));
    }
  }

  private confirmLease(atMs: number): void {
    if (atMs <= this.leaseConfirmedMs) return;
    const wasExpired = Date.now() - this.leaseConfirmedMs > taskLeaseMs;
    this.leaseConfirmedMs = atMs;
    // Wake the agent the moment the lease would run out, not at its next periodic reconcile: tasks the
    // shim does not watch (docker) must stop within the leader's grace.
    if (this.leaseExpiryTimer) clearTimeout(this.leaseExpiryTimer);
    this.leaseExpiryTimer = setTimeout(
      () => this.agentService?.schedule(),
      Math.max(0, atMs + taskLeaseMs + 1 - Date.now()),
    );
    this.leaseExpiryTimer.unref();
    // Back in contact: run what waited for the lease without waiting for the next reconcile tick.
    if (wasExpired) this.agentService?.schedule();
    // No fsync: after a power loss an older time only makes the lease end sooner, which is safe. A failed
    // write (full disk) leaves the older time on disk, which is safe too.
    // The file's modification time is the lease (task shims and readLease read it). Setting the time
    // needs no free blocks, so it works on a full disk; the file is written only when it is missing.
    const path = join(this.config.dataDir, leaseFileName);
    try {
      if (!existsSync(path)) writeFileSync(path, '');
      utimesSync(path, atMs / 1000, atMs / 1000);
    } catch (error) {
      this.logger.debug('cannot stamp the lease time', { error: errorMessage(error) });
    }
  }

  /**
   * Resolves once a quorum has confirmed, in a ReadIndex round that started after the call, that this node
   * still leads. Calls are batched: the first starts a round leadershipCheckBatchMs later, and every call
   * until that round starts shares it, so a large cluster's renewals cost a few rounds a second, not one
   * per node.
   */
  private confirmLeadership(): Promise<void> {
    const pending = this.leadershipCheck;
    if (pending && !pending.started) return pending.done;
    const check: { started: boolean; done: Promise<void> } = { started: false, done: Promise.resolve() };
    check.done = sleep(leadershipCheckBatchMs).then(async () => {
      check.started = true;
      await this.raft.readIndex(readIndexTimeoutMs);
    });
    this.leadershipCheck = check;
    check.done
      .finally(() => {
        if (this.leadershipCheck === check) this.leadershipCheck = null;
      })
      .catch(() => undefined);
    return check.done;
  }

  /**
   * On a change of leader (this node's start, a failover): reconciles, and renews the lease at once rather
   * than at the next periodic renewal. Until the lease is renewed nothing assigned here starts, which cost
   * a fresh agent up to a second before its first task started (bench:replicas).
   */
  private onLeaderChange(): void {
    if (this.stopped || this.leaseTimer === null) return;
    const raft = this.raft.status();
    const leader = raft.role === 'leader' ? (this.raft.isReadyLeader() ? this.id : null) : raft.leaderId;
    const key = `${raft.term}/${leader ?? ''}`;
    if (key === this.leaderKey) return;
    this.leaderKey = key;
    this.agentService?.schedule();
    // Not from inside Raft's callback: renewing asks Raft for a read index.
    if (leader !== null) setImmediate(() => void this.renewLease());
  }

  /** Agent side: confirms with the leader that it still hears this node (see taskLeaseMs). */
  private async renewLease(): Promise<void> {
    const raft = this.raft.status();
    if (raft.role === 'leader') {
      if (!this.raft.isReadyLeader()) return;
      // Its own lease too: a deposed leader that has not noticed yet must not extend it.
      const sentMs = Date.now();
      try {
        await this.confirmLeadership();
        this.confirmLease(sentMs);
      } catch (error) {
        this.logger.debug('lease renewal failed: leadership not confirmed', { error: errorMessage(error) });
      }
      return;
    }
    if (raft.leaderId === null) return;
    const sentMs = Date.now();
    try {
      await callRpc(
        this.libp2p,
        peerIdFromString(raft.leaderId),
        controlProtocol,
        { method: 'renewLease' } satisfies ControlRequest,
        leaseRenewIntervalMs,
      );
      // Counted from when the request left: the leader recorded it after that.
      this.confirmLease(sentMs);
    } catch (error) {
      this.logger.debug('lease renewal failed', { error: errorMessage(error) });
    }
  }

  /** Keeps the voter set healthy and odd from live members (see planVoterChange). One change at a time. */
  private reconcileVoters(): void {
    if (this.configInFlight) return;
    const raft = this.raft.status();
    const nowMs = Date.now();
    const next = planVoterChange({
      leaderId: this.id,
      config: raft.config,
      members: this.membership.members().map((member) => ({
        id: member.record.id,
        state: member.state,
        aliveSinceMs: member.state === 'alive' ? (this.aliveSinceMs.get(member.record.id) ?? nowMs) : null,
        lastHeardMs: member.lastHeardMs,
      })),
      progress: raft.progress,
      commitIndex: raft.commitIndex,
      nowMs,
      policy: this.config.voterPolicy ?? defaultVoterPolicy,
    });
    if (!next) return;
    this.configInFlight = true;
    this.raft
      .proposeConfig(next, writeTimeoutMs)
      .catch((error: unknown) =>
        this.logger.debug('configuration change failed', { error: errorMessage(error) }),
      )
      .finally(() => {
        this.configInFlight = false;
        this.scheduleLeaderWork();
      });
  }

  /**
   * Places pending tasks on live nodes with room (preempting lower priorities where the policy allows),
   * and commits the plan. One plan in flight at a time.
   */
  private runAllocator(): void {
    if (this.planInFlight) return;
    const scheduler = this.ensureScheduler();
    const nowMs = Date.now();
    let plan;
    try {
      plan = scheduler.plan(nowMs, placementsPerPlanMax);
    } catch (error) {
      this.logger.warn('the allocator failed; it is rebuilt from the state', { error: errorMessage(error) });
      return;
    } finally {
      this.armBackoffTimer(scheduler, nowMs);
    }
    const reasons = plan.waiting.filter((w) => this.state.tasks.get(w.taskId)?.reason !== w.reason);
    if (plan.placements.length === 0 && plan.preemptions.length === 0 && reasons.length === 0) return;
    this.planInFlight = true;
    const command: Command = {
      type: 'assignTasks',
      term: this.raft.status().term,
      assignments: plan.placements,
      ...(plan.preemptions.length === 0
        ? {}
        : { preemptions: plan.preemptions, preemptionPriorityGap: this.preemptionGap() }),
      waiting: reasons,
      atMs: Date.now(),
    };
    this.raft
      .propose(JSON.stringify(command), writeTimeoutMs)
      .then(() => {
        // Placements the log refused as stale stay pending: have their reasons reported again.
        for (const { taskId } of plan.placements) {
          if (this.state.tasks.get(taskId)?.state === 'pending') this.scheduler?.unplaced(taskId);
        }
      })
      .catch((error: unknown) => {
        this.logger.debug('plan commit failed', { error: errorMessage(error) });
        // What the allocator assumed may not have happened: start again from the state.
        this.dropScheduler();
      })
      .finally(() => {
        this.planInFlight = false;
        this.scheduleLeaderWork();
      });
  }

  private preemptionGap(): number {
    return this.config.preemptionPriorityGap ?? preemptionPriorityGapDefault;
  }

  private ensureScheduler(): Scheduler {
    if (this.scheduler) return this.scheduler;
    const scheduler = new Scheduler(this.state, {
      preemptionPriorityGap: this.preemptionGap(),
      // Alive to membership and renewing its lease: a node that has just died but is not yet suspected
      // stops renewing at once, so no new task goes to it in the seconds before membership notices.
      isAlive: (nodeId) =>
        this.membership.member(nodeId)?.state === 'alive' &&
        Date.now() - (this.leaseRenewedMs.get(nodeId) ?? 0) < placementLeaseFreshMs,
      rebuildIntervalMs: schedulerRebuildIntervalMs,
    });
    this.scheduler = scheduler;
    this.state.observer = scheduler;
    return scheduler;
  }

  private dropScheduler(): void {
    if (!this.scheduler) return;
    this.scheduler.reset();
    this.scheduler = null;
    this.state.observer = null;
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
  }

  /** Wakes the allocator when the next restarted task's backoff ends. */
  private armBackoffTimer(scheduler: Scheduler, nowMs: number): void {
    const dueMs = scheduler.nextDueMs();
    if (this.backoffTimer) clearTimeout(this.backoffTimer);
    this.backoffTimer = null;
    if (dueMs === null) return;
    this.backoffTimer = setTimeout(
      () => {
        this.backoffTimer = null;
        this.scheduleLeaderWork();
      },
      Math.max(0, dueMs - nowMs) + 5,
    );
    this.backoffTimer.unref();
  }

  // ---- helpers ---------------------------------------------------------------------------------------

  /** The last health detail logged per driver: checks run every few seconds, the log says only what changed. */
  private readonly driverHealthLogged = new Map<TaskDriver, string>();

  private async healthyDrivers(): Promise<TaskDriver[]> {
    const healthy: TaskDriver[] = [];
    for (const [name, driver] of this.drivers) {
      const health = await driver
        .health()
        .catch((error: unknown) => ({ healthy: false, detail: errorMessage(error) }));
      if (health.healthy) healthy.push(name);
      const line = health.healthy
        ? `the ${name} driver is available`
        : `the ${name} driver is unavailable: ${health.detail}`;
      if (this.driverHealthLogged.get(name) !== line) this.logger.info(line);
      this.driverHealthLogged.set(name, line);
    }
    return healthy;
  }

  /** One garbage collection pass, then the next one is scheduled. Skipped while no leader confirms the state. */
  private async collectGarbage(): Promise<void> {
    try {
      // A state that is still catching up (a restarted node replaying the log) would make live tasks look
      // unknown: collect only once the leader's commit index has been applied here.
      await this.readIndexOnce();
      const report = await this.agentService?.collectGarbage();
      if (report && (report.collected.length > 0 || report.removedDirs.length > 0)) {
        this.logger.info('collected garbage', {
          freed: report.collected.join(','),
          removedDirs: report.removedDirs.length,
        });
      }
    } catch (error) {
      this.logger.debug('garbage collection skipped', { error: errorMessage(error) });
    } finally {
      if (!this.stopped) this.garbageTimer = setTimeout(() => void this.collectGarbage(), garbageIntervalMs);
    }
  }

  private healthRefreshing = false;

  /** One check at a time: a hung engine makes a check last its ping timeout, longer than the interval. */
  private async refreshDriverHealth(): Promise<void> {
    if (this.healthRefreshing || this.stopped) return;
    this.healthRefreshing = true;
    try {
      const drivers = await this.healthyDrivers();
      this.membershipService?.update({ drivers });
    } finally {
      this.healthRefreshing = false;
    }
  }

  private requireTask(taskId: string): Task {
    const task = this.state.tasks.get(taskId);
    if (!task) throw new ShoalError('NOT_FOUND', `no task ${taskId}; list tasks with shoal ps`);
    return task;
  }

  private taskView(task: Task): TaskView {
    return {
      id: task.id,
      name: task.spec.name,
      state: task.state,
      node: task.nodeId === null ? null : this.nameOf(task.nodeId),
      nodeId: task.nodeId,
      exitCode: task.exitCode,
      reason: task.reason,
      attempt: task.attempt,
      restart: task.spec.restart?.policy ?? 'never',
      priority: task.spec.priority,
      namespace: task.spec.namespace ?? 'default',
      job: task.spec.job ?? null,
      driver: task.spec.driver,
      cpu: task.spec.cpuMillis / 1000,
      memory: Math.ceil(task.spec.memoryBytes / mebibyte),
      command: task.spec.command,
      image: task.spec.image ?? null,
      desired: isTerminal(task.state) ? 'none' : task.desired,
      submittedAt: new Date(task.submittedAtMs).toISOString(),
      updatedAt: new Date(task.updatedAtMs).toISOString(),
    };
  }

  private nameOf(id: string): string {
    return this.membershipService?.member(id)?.record.name ?? this.state.nodes.get(id)?.name ?? id;
  }

  private quorumHint(): string {
    const raft = this.raft.status();
    const reachable = new Set(this.libp2p.getConnections().map((c) => c.remotePeer.toString()));
    const voters = raft.config.voters.map(
      (id) => `${this.nameOf(id)}${id === this.id || reachable.has(id) ? '' : ' (unreachable)'}`,
    );
    return `voters: ${voters.join(', ') || 'none yet'}`;
  }

  private listenPort(): number {
    for (const address of this.libp2p.getMultiaddrs()) {
      const port = Number(/\/tcp\/(\d+)/.exec(address.toString())?.[1] ?? 0);
      if (port > 0) return port;
    }
    return this.config.listen.port;
  }
}

/** Free space on the data dir's filesystem, less a reserve for the log and task logs. */
function detectDiskBytes(dataDir: string): number {
  try {
    const stats = statfsSync(dataDir);
    return Math.max(0, stats.bavail * stats.bsize - reservedDiskBytesDefault);
  } catch {
    return 0;
  }
}

function describeNode(member: Member): NodeDescription {
  const record = member.record;
  return {
    id: record.id,
    name: record.name,
    address: record.address,
    capacity: {
      cpuMillis: record.cpuMillis,
      memoryBytes: record.memoryBytes,
      ...(record.diskBytes === undefined ? {} : { diskBytes: record.diskBytes }),
      ...(record.devices === undefined ? {} : { devices: record.devices }),
    },
    labels: member.record.labels,
    drivers: member.record.drivers,
  };
}

function sameNode(known: ClusterNode, description: NodeDescription): boolean {
  return (
    known.name === description.name &&
    known.address === description.address &&
    JSON.stringify(known.capacity) === JSON.stringify(description.capacity) &&
    JSON.stringify(known.labels) === JSON.stringify(description.labels) &&
    JSON.stringify(known.drivers) === JSON.stringify(description.drivers)
  );
}

/** The lease time saved by an earlier run; 0 (expired) if missing or unreadable. */
function readLease(path: string): number {
  try {
    return Math.min(statSync(path).mtimeMs, Date.now());
  } catch {
    return 0;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
