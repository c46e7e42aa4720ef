/**
 * The composition root: wires one shoal node from its config. Every node runs membership, Raft, the
 * agent and the API backend; the Raft leader also runs the leader's duties (leader.ts). The jobs live in
 * rooms of their own beside this file: writes and reads through the leader (control.ts), the task lease
 * (lease.ts), the leader's duties (leader.ts), the API backend (backend.ts); the runtime owns its driver
 * health and garbage timers (runtime/upkeep.ts). This file starts, stops and leaves.
 */
import { join } from 'node:path';
import {
  ClusterState,
  decodeCommand,
  deriveEvents,
  eventBasis,
  newAccessorId,
  newTokenSecret,
  type ApplyResult,
  type TaskDriver,
  type TokenRecord,
  dockerBridgeLabel,
  execRootLabel,
  nodeIdLabel,
} from '../cluster/index.ts';
import {
  Libp2pRaftTransport,
  RaftService,
  defaultRaftTimings,
  defaultVoterPolicy,
  describeFaultTolerance,
  parseConfig,
  type LogEntry,
} from '../election/index.ts';
import { MembershipService, defaultMembershipConfig, type Member } from '../membership/index.ts';
import {
  Agent,
  Upkeep,
  cgroupParentDefault,
  createDockerDriver,
  createExecDriver,
  ImageStore,
  type Driver,
  type DriverFacts,
} from '../runtime/index.ts';
import {
  ShoalError,
  errorMessage,
  shoalVersion,
  systemRandom,
  writeFileAtomic,
  type Logger,
} from '../shared/index.ts';
import { advertisedHost, formatHostPort, toMultiaddr } from './address.ts';
import { NodeBackend, logsTailBytesMax } from './backend.ts';
import { offeredResources, taskLimitsOf, validateNodeConfig, type NodeConfig } from './config.ts';
import { Control, readIndexTimeoutMs } from './control.ts';
import { EventHub } from './events.ts';
import { NodeMetrics } from './metrics.ts';
import { startDnsServer, type DnsServer } from './dns.ts';
import { readPeers, writePeers } from './peers.ts';
import { serveLogs } from './follow.ts';
import { ensureDataDir, loadOrCreateNodeKey, nextIncarnation, resolveClusterKey } from './identity.ts';
import { FrameworkService } from './frameworks.ts';
import { LeaderDuties } from './leader.ts';
import { AgentLease, LeaderLeases, leaseFileName, leaseRenewIntervalMs, taskLeaseMs } from './lease.ts';
import type { MemberFacts } from './node-updates.ts';
import { createP2p, type ShoalLibp2p } from './p2p.ts';
import { ReportBatcher } from './reports.ts';

/** Where the node that creates a cluster writes the cluster's first (admin) token. */
export const managementTokenFileName = 'management.token';
/** The API's Unix socket in the data dir: its owner needs no token. */
export const apiSocketFileName = 'api.sock';
/** How long a joining node keeps trying its seeds before it gives up. */
export const joinTimeoutMs = 30_000;
/** How long a leader that leaves waits for another to take over before it leaves anyway. */
export const leadershipTransferTimeoutMs = 2000;
/** DNS answers live this long in caches: instances come and go within seconds (the issue asks 0–5 s). */
export const dnsTtlSeconds = 2;
/** Membership changes come in bursts: the members' addresses are kept a second after the last. */
export const peersSaveDelayMs = 1000;

/** The parts of a started node; all exist from start() on. */
interface Parts {
  readonly libp2p: ShoalLibp2p;
  readonly raft: RaftService;
  readonly membership: MembershipService;
  readonly control: Control;
  readonly agent: Agent;
  readonly upkeep: Upkeep;
  readonly leader: LeaderDuties;
  readonly agentLease: AgentLease;
  readonly leases: LeaderLeases;
  readonly backend: NodeBackend;
  /** The scheduler API's streams, and the leader's offers (frameworks.ts). */
  readonly frameworks: FrameworkService;
  /** Null when the node serves no DNS (off, or its address was taken). */
  readonly dns: DnsServer | null;
}

export class ShoalNode {
  readonly config: NodeConfig;
  readonly logger: Logger;
  readonly state = new ClusterState();
  /** What the applied log and the leaders seen here amount to, for `GET /v1/events`. */
  readonly events = new EventHub();
  /** `GET /metrics`: read from the parts when scraped, fed by hooks as things happen. */
  readonly metrics: NodeMetrics = new NodeMetrics({
    state: this.state,
    raft: () => this.made.raft ?? null,
    membership: () => this.made.membership ?? null,
    nameOf: (nodeId) => this.nameOf(nodeId),
    eventLoopStallMsMax: () => this.made.raft?.tickStallMsMax ?? 0,
  });
  readonly clusterKey: string;
  /** This node made the cluster (and its key) at this start. */
  readonly createdCluster: boolean;
  private parts: Parts | null = null;
  /** Set as parts are made, so stop() can undo a start that failed half-way. */
  private readonly made: { -readonly [K in keyof Parts]?: Parts[K] } = {};
  private leaseTimer: NodeJS.Timeout | null = null;
  /** The members' addresses as kept in the data dir (peers.ts), and the coalescing timer of a save. */
  private peersKept: string[] = [];
  private peersTimer: NodeJS.Timeout | null = null;
  /** The term and leader onLeaderChange last acted on. */
  private leaderKey = '';
  private stopped = false;

  /** Set by the process that runs the node: what to do once `shoal leave` has drained it. */
  onLeaveRequested: (() => void) | null = null;

  private constructor(config: NodeConfig, logger: Logger, clusterKey: string, createdCluster: boolean) {
    this.config = config;
    this.logger = logger;
    this.clusterKey = clusterKey;
    this.createdCluster = createdCluster;
  }

  /** Starts a node: identity, libp2p, Raft, membership, agent. Throws ShoalError on bad config or data. */
  static async start(config: NodeConfig, logger: Logger): Promise<ShoalNode> {
    validateNodeConfig(config);
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
    const libp2p = this.made.libp2p;
    if (!libp2p) throw new ShoalError('UNAVAILABLE', 'the node is not started');
    return libp2p.peerId.toString();
  }

  /** host:port other nodes join with. */
  get joinAddress(): string {
    return formatHostPort({ host: advertisedHost(this.config.listen.host), port: this.listenPort() });
  }

  /** What the API serves. */
  get backend(): NodeBackend {
    return this.started.backend;
  }

  /** Writes and linearizable reads through the leader (the API's certificates use it: tls.ts). */
  get control(): Control {
    return this.started.control;
  }

  private get started(): Parts {
    if (!this.parts) throw new ShoalError('UNAVAILABLE', 'the node is not started');
    return this.parts;
  }

  private async startParts(): Promise<void> {
    const { config, logger, made } = this;
    const privateKey = await loadOrCreateNodeKey(config.dataDir);
    const incarnation = nextIncarnation(config.dataDir);
    let libp2p: ShoalLibp2p;
    try {
      libp2p = await createP2p({
        privateKey,
        listenMultiaddr: toMultiaddr(config.listen),
        clusterKey: this.clusterKey,
      });
    } catch (error) {
      throw new ShoalError(
        'UNAVAILABLE',
        `cannot listen on ${formatHostPort(config.listen)}: ${errorMessage(error)}; pick another --listen`,
        { cause: error },
      );
    }
    made.libp2p = libp2p;
    const id = libp2p.peerId.toString();

    const drivers = new Map<TaskDriver, Driver>();
    // Cgroups under one of this node's own: two agents on one host (tests, the chaos harness) must not share
    // a task's cgroup when the task moves between them, nor remove each other's.
    drivers.set(
      'exec',
      createExecDriver({
        logger: logger.child('exec'),
        cgroupParent: `${cgroupParentDefault}/${id}`,
        isolation: {
          enabled: config.execIsolation ?? true,
          hiddenDir: config.dataDir,
          allowRootTasks: config.allowRootTasks ?? false,
        },
        images: new ImageStore({
          dir: join(config.dataDir, 'images'),
          logger: logger.child('images'),
          insecureRegistries: config.insecureRegistries ?? [],
        }),
      }),
    );
    // The lease keeper's files: it holds this node's containers to the lease even while no agent runs.
    const leaseKeeperDir = join(config.dataDir, 'docker-lease');
    const dockerInit =
      config.dockerSocket === null
        ? { logger: logger.child('docker'), nodeId: id, leaseKeeperDir }
        : { logger: logger.child('docker'), socketPath: config.dockerSocket, nodeId: id, leaseKeeperDir };
    drivers.set('docker', createDockerDriver(dockerInit));

    const raft = new RaftService({
      id,
      walDir: join(config.dataDir, 'raft'),
      transport: new Libp2pRaftTransport(libp2p, logger.child('raft')),
      timings: config.raftTimings ?? defaultRaftTimings,
      ...(config.compaction === undefined ? {} : { compaction: config.compaction }),
      random: systemRandom(),
      logger: logger.child('raft'),
      apply: (entry) => this.applyEntry(entry),
      snapshotState: () => this.state.toSnapshot(),
      restoreState: (data) => {
        this.state.restore(data);
        this.events.restored(this.state.appliedIndex);
        this.made.agent?.schedule();
      },
      // Not a reconcile per change: Raft reports one for every heartbeat and ReadIndex round, and a
      // reconcile walks every task here. Applied entries, lease changes and the agent's own timer
      // schedule it; so does a change of leader.
      onChange: () => this.onLeaderChange(),
    });
    made.raft = raft;
    // A crashed leader's connections are reset by its kernel at once: campaign now, not a timeout later.
    libp2p.addEventListener('peer:disconnect', (event) => raft.peerDisconnected(event.detail.toString()));
    const newCluster = raft.isEmpty() && config.join.length === 0;
    if (newCluster) {
      logger.info('starting a new cluster', { node: config.name, id });
      raft.bootstrap();
    }

    const leases = new LeaderLeases(() => raft.readIndex(readIndexTimeoutMs));
    made.leases = leases;
    const agentLease = new AgentLease(
      join(config.dataDir, leaseFileName),
      () => this.made.agent?.schedule(),
      (error) => logger.debug('cannot stamp the lease time', { error: errorMessage(error) }),
    );
    made.agentLease = agentLease;

    const control = new Control({
      libp2p,
      raft,
      logger,
      committed: (seconds) => this.metrics.committed(seconds),
      isStopped: () => this.stopped,
      quorumHint: () => this.quorumHint(),
      hostOf: (nodeId) => this.made.membership?.member(nodeId)?.record.via,
      renewLease: async (nodeIds) => {
        if (!raft.isLeader()) throw new ShoalError('NOT_LEADER', 'this node is not the leader');
        const nowMs = Date.now();
        for (const nodeId of nodeIds) leases.renewed(nodeId, nowMs);
        // A leader that was paused or cut off may not know it was deposed: it grants a lease only after a
        // quorum confirms it still leads (a ReadIndex round), so no agent keeps its tasks on a stale word.
        await leases.confirmLeadership();
      },
      localLogs: (taskId, tailBytes) => this.started.backend.localLogs(taskId, tailBytes),
      logsTailBytesMax,
    });
    made.control = control;

    // Reports arriving while one is in flight share an entry (reports.ts).
    const reports = new ReportBatcher({ nodeId: id, propose: (command) => control.propose(command) });
    const agent = new Agent({
      nodeId: id,
      dataDir: config.dataDir,
      drivers,
      logger: logger.child('agent'),
      assignedTasks: () => this.state.liveTasksOn(id),
      task: (taskId) => this.state.tasks.get(taskId),
      report: (report) => reports.report(report),
      recordEvents: (batch) => control.proposeOrThrow({ type: 'taskEvents', nodeId: id, ...batch }),
      node: {
        name: config.name,
        host: advertisedHost(config.listen.host),
        ...(config.deviceFiles === undefined ? {} : { deviceFiles: config.deviceFiles }),
      },
      reportHealth: (report) =>
        control.proposeOrThrow({ type: 'taskHealth', nodeId: id, ...report, atMs: Date.now() }),
      leaseExpired: () => agentLease.expired(),
      leaseReason: `stopped after losing contact with the cluster's leader for ${taskLeaseMs / 1000} s`,
      lease: { file: join(config.dataDir, leaseFileName), durationMs: taskLeaseMs },
    });
    made.agent = agent;
    const upkeep = new Upkeep({
      drivers,
      agent,
      logger,
      onDriversChecked: (available, facts) =>
        this.made.membership?.update({ drivers: available, labels: labelsWithFacts(config, facts) }),
      stateCurrent: () => control.readIndexOnce(),
    });
    made.upkeep = upkeep;
    const availableDrivers = await upkeep.checkDrivers();

    const resources = offeredResources(config);
    const membership = new MembershipService({
      libp2p,
      self: {
        name: config.name,
        address: this.joinAddress,
        ...resources,
        ...(config.devices === undefined || Object.keys(config.devices).length === 0
          ? {}
          : { devices: { ...config.devices } }),
        labels: labelsWithFacts(config, upkeep.facts()),
        drivers: availableDrivers,
        ...(config.dynamicPorts === undefined ? {} : { dynamicPorts: { ...config.dynamicPorts } }),
        version: shoalVersion,
        incarnation,
      },
      config: config.membership ?? defaultMembershipConfig,
      logger: logger.child('members'),
      onTransition: (transition) => {
        this.made.leader?.memberTransition(transition);
        this.savePeersSoon();
      },
      onProbeRoundTrip: (ms) => this.metrics.probeRoundTrip(ms / 1000),
    });
    made.membership = membership;

    const frameworks = new FrameworkService({
      selfId: id,
      state: this.state,
      libp2p,
      logger: logger.child('frameworks'),
      random: systemRandom(),
      propose: (command) => control.propose(command),
      isLeader: () => raft.isReadyLeader(),
      leaderId: () => raft.status().leaderId,
      nameOf: (nodeId) => this.nameOf(nodeId),
      isAlive: (nodeId) =>
        nodeId === id || membership.members().some((m) => m.record.id === nodeId && m.state === 'alive'),
    });
    made.frameworks = frameworks;

    const leader = new LeaderDuties({
      frameworks,
      selfId: id,
      config,
      state: this.state,
      raft,
      membership,
      leases,
      logger,
      describe: describeNode,
      planned: (seconds, placements, preemptions) => this.metrics.planned(seconds, placements, preemptions),
    });
    made.leader = leader;

    const backend = new NodeBackend({
      selfId: id,
      selfName: config.name,
      state: this.state,
      control,
      raft,
      membership,
      libp2p,
      taskDir: (taskId) => agent.taskDir(taskId),
      nameOf: (nodeId) => this.nameOf(nodeId),
      faultToleranceWarning: () => this.faultToleranceWarning(),
      requestLeave: () => this.onLeaveRequested?.(),
      warn: (message) => logger.warn(message),
      events: this.events,
      clusterKey: this.clusterKey,
      metrics: () => this.metrics.text(),
      frameworks,
      taskLimits: taskLimitsOf(config),
    });
    made.backend = backend;

    await control.start();
    await frameworks.start();
    made.dns = await this.startDns(backend);
    await serveLogs(libp2p, (request, signal) =>
      backend.followHere(request.taskId, request.tailBytes, signal),
    );
    await raft.start();
    await membership.start();
    // Join first, and start the agent while the dial and the push-pull are under way: the cluster learns
    // of a new node sooner (bench:membership's join time). Nothing is placed here before the node holds
    // a lease and is registered in the replicated state, so joining early promises nothing too soon.
    const joining = config.join.length > 0 ? membership.join(config.join, joinTimeoutMs) : null;
    // Awaited below; until then a rejection (a wrong key) must not count as unhandled.
    joining?.catch(() => undefined);
    if (joining === null && !newCluster) this.rejoin(membership);
    await agent.start();
    if (joining) {
      await joining;
      logger.info('joined the cluster', { via: config.join.join(',') });
    }
    this.parts = {
      libp2p,
      raft,
      membership,
      control,
      agent,
      upkeep,
      leader,
      agentLease,
      leases,
      backend,
      frameworks,
      dns: made.dns ?? null,
    };
    leader.start();
    upkeep.start();
    this.leaseTimer = setInterval(() => void this.renewLease(), leaseRenewIntervalMs);
    this.onLeaderChange();
    if (newCluster) void this.createManagementToken(control);
  }

  /**
   * The cluster's first token (admin), made by the node that creates the cluster: committed first, then its
   * secret written to DATA_DIR/management.token (0600). Nothing prints it. Should the node die between the
   * two, the token is useless and harmless, and the local Unix socket still lets an admin make another.
   */
  private async createManagementToken(control: Control): Promise<void> {
    const { secret, secretHash } = newTokenSecret();
    const atMs = Date.now();
    const token: TokenRecord = {
      accessorId: newAccessorId(),
      name: 'management',
      role: 'admin',
      namespaces: null,
      secretHash,
      createdAtMs: atMs,
      expiresAtMs: null,
    };
    for (;;) {
      try {
        await control.proposeOrThrow({ type: 'createToken', token, atMs });
        break;
      } catch (error) {
        if (this.stopped) return;
        this.logger.warn('the management token is not committed yet; retrying', {
          error: errorMessage(error),
        });
      }
    }
    const path = join(this.config.dataDir, managementTokenFileName);
    writeFileAtomic(path, `${secret}\n`, { mode: 0o600 });
    this.logger.info('wrote the management token (an admin token) for this new cluster', { file: path });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    const { made } = this;
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    if (this.peersTimer) clearTimeout(this.peersTimer);
    made.leader?.stop();
    made.frameworks?.stop();
    made.upkeep?.stop();
    made.agentLease?.stop();
    made.agent?.stop();
    await made.dns?.close().catch(() => undefined);
    made.membership?.stop();
    made.raft?.stop();
    this.events.close();
    try {
      await made.libp2p?.stop();
    } catch (error) {
      this.logger.debug('libp2p stop failed', { error: errorMessage(error) });
    }
  }

  /**
   * Answers DNS for services where the config says. An address in use (another agent on this machine) costs
   * discovery by DNS on this node, not the node: it warns and goes on.
   */
  private async startDns(backend: NodeBackend): Promise<DnsServer | null> {
    const where = this.config.dns;
    if (where === undefined || where === null) return null;
    try {
      return await startDnsServer({
        host: where.host,
        port: where.port,
        ttlSeconds: dnsTtlSeconds,
        lookup: (service, namespace) => backend.serviceOperations.addresses(service, namespace),
        logger: this.logger.child('dns'),
      });
    } catch (error) {
      this.logger.warn(
        `not answering DNS: ${errorMessage(error)} (give shoal agent --dns HOST:PORT, or --dns off)`,
      );
      return null;
    }
  }

  /**
   * A member restarting without --join rejoins through the members it last knew (peers.ts), in the
   * background: its own log is enough to start, and the members that are up may dial it meanwhile.
   */
  private rejoin(membership: MembershipService): void {
    const own = new Set(this.made.libp2p?.getMultiaddrs().map((address) => address.toString()));
    const seeds = readPeers(this.config.dataDir).filter((address) => !own.has(address));
    this.peersKept = seeds;
    if (seeds.length === 0) return;
    membership
      .join(seeds, joinTimeoutMs)
      .then(() => this.logger.info('rejoined the cluster', { via: seeds.join(',') }))
      .catch((error: unknown) =>
        this.logger.warn(
          `could not rejoin through the members known before the restart (${errorMessage(error)}); members that are up may still reach this node`,
        ),
      );
  }

  /** Keeps the live members' addresses in the data dir, a second after membership changed. */
  private savePeersSoon(): void {
    if (this.peersTimer !== null || this.stopped) return;
    this.peersTimer = setTimeout(() => {
      this.peersTimer = null;
      const membership = this.made.membership;
      if (!membership || this.stopped) return;
      const addresses = membership
        .members()
        .filter((member) => member.state === 'alive' && member.record.id !== this.id)
        .flatMap((member) => member.record.addresses);
      try {
        this.peersKept = writePeers(this.config.dataDir, addresses, this.peersKept);
      } catch (error) {
        this.logger.debug("cannot keep the members' addresses", { error: errorMessage(error) });
      }
    }, peersSaveDelayMs);
    this.peersTimer.unref();
  }

  /** The address this node answers DNS at, or null. */
  get dnsAddress(): string | null {
    const dns = this.made.dns;
    return dns ? `${dns.host}:${dns.port}` : null;
  }

  /** Graceful shutdown: stops local tasks, then announces the leave so peers don't wait for a timeout. */
  async leave(graceMs: number): Promise<void> {
    const { made } = this;
    await made.agent?.stopAll(graceMs);
    // A leader hands over first, so the cluster does not wait out an election timeout.
    if (made.raft?.isLeader() === true) {
      const moved = await made.raft.transferLeadership(leadershipTransferTimeoutMs).catch(() => false);
      this.logger.info(moved ? 'handed leadership over' : 'could not hand leadership over; leaving anyway');
    }
    await made.membership?.leave();
  }

  // ---- applying the log ------------------------------------------------------------------------------

  private applyEntry(entry: LogEntry): ApplyResult | undefined {
    if (entry.kind === 'config') {
      const config = parseConfig(entry.data);
      const fields = {
        voters: config.voters.map((id) => this.nameOf(id)).join(','),
        learners: config.learners.map((id) => this.nameOf(id)).join(','),
      };
      // The leader says when the new configuration cannot survive the loss of a node, and what comes next.
      const warning = this.made.raft?.isLeader() === true ? this.faultToleranceWarning() : null;
      if (warning === null) this.logger.info('cluster configuration committed', fields);
      else this.logger.warn('cluster configuration committed', { ...fields, warning });
      return undefined;
    }
    if (entry.kind !== 'command') return undefined;
    const command = decodeCommand(entry.index, entry.data);
    const basis = eventBasis(this.state, command);
    const result = this.state.apply(entry.index, command);
    this.made.frameworks?.applied(command, result);
    if (command.type === 'restoreBackup' && result.ok) this.events.restored(entry.index);
    else {
      const events = deriveEvents(entry.index, command, basis, this.state);
      this.events.append(entry.index, events);
      this.metrics.applied(events, this.state);
    }
    this.made.agent?.schedule();
    this.made.leader?.schedule();
    return result;
  }

  // ---- the lease, agent side -------------------------------------------------------------------------

  /**
   * On a change of leader (this node's start, a failover): reconciles, and renews the lease at once rather
   * than at the next periodic renewal. Until the lease is renewed nothing assigned here starts, which cost
   * a fresh agent up to a second before its first task started (bench:replicas).
   */
  private onLeaderChange(): void {
    const { raft } = this.made;
    if (this.stopped || this.leaseTimer === null || !raft) return;
    const status = raft.status();
    const leader = status.role === 'leader' ? (raft.isReadyLeader() ? this.id : null) : status.leaderId;
    const key = `${status.term}/${leader ?? ''}`;
    if (key === this.leaderKey) return;
    this.leaderKey = key;
    this.made.agent?.schedule();
    if (leader === null) return;
    this.metrics.leaderElected();
    // Stamped with the last index applied here, not the commit index: entries committed but not yet
    // applied come later in the stream with higher indexes, so the stream stays in index order.
    const index = Math.max(this.events.lastIndex, status.appliedIndex);
    this.events.append(index, [
      {
        index,
        type: 'leader:elected',
        at: new Date().toISOString(),
        term: status.term,
        leaderId: leader,
        leader: this.nameOf(leader),
      },
    ]);
    // Not from inside Raft's callback: renewing asks Raft for a read index.
    setImmediate(() => void this.renewLease());
    // A new leader's limits become the cluster's (cluster/limits.ts), through a read index too.
    if (leader === this.id)
      setImmediate(
        () =>
          void this.started.backend.adoptTaskLimits().catch((error: unknown) => {
            this.logger.warn("could not make this node's task limits the cluster's", {
              error: errorMessage(error),
            });
          }),
      );
  }

  /** Confirms with the leader that it still hears this node (see lease.ts). */
  private async renewLease(): Promise<void> {
    const { raft, control, agentLease, leases } = this.started;
    const status = raft.status();
    const sentMs = Date.now();
    try {
      if (status.role === 'leader') {
        if (!raft.isReadyLeader()) return;
        // Its own lease too: a deposed leader that has not noticed yet must not extend it.
        await leases.confirmLeadership();
      } else {
        if (status.leaderId === null) return;
        await control.renewWithLeader(status.leaderId, leaseRenewIntervalMs);
      }
      // Counted from when the request left: the leader recorded it after that.
      agentLease.confirm(sentMs);
    } catch (error) {
      this.logger.debug('lease renewal failed', { error: errorMessage(error) });
    }
  }

  // ---- helpers ---------------------------------------------------------------------------------------

  /** Set when losing one more node would stop the cluster (see describeFaultTolerance). */
  private faultToleranceWarning(): string | null {
    const { raft, leader } = this.made;
    if (!raft || !leader) return null;
    const status = raft.status();
    const nowMs = Date.now();
    return describeFaultTolerance({
      leaderId: status.role === 'leader' ? this.id : status.leaderId,
      config: status.config,
      members: leader.voterCandidates(nowMs),
      progress: status.role === 'leader' ? status.progress : [],
      commitIndex: status.commitIndex,
      nowMs,
      policy: this.config.voterPolicy ?? defaultVoterPolicy,
      nameOf: (id) => this.nameOf(id),
    });
  }

  private nameOf(id: string): string {
    return this.made.membership?.member(id)?.record.name ?? this.state.nodes.get(id)?.name ?? id;
  }

  private quorumHint(): string {
    const { raft, libp2p } = this.started;
    const status = raft.status();
    const reachable = new Set(libp2p.getConnections().map((c) => c.remotePeer.toString()));
    const voters = status.config.voters.map(
      (id) => `${this.nameOf(id)}${id === this.id || reachable.has(id) ? '' : ' (unreachable)'}`,
    );
    return `voters: ${voters.join(', ') || 'none yet'}`;
  }

  private listenPort(): number {
    const libp2p = this.made.libp2p;
    for (const address of libp2p?.getMultiaddrs() ?? []) {
      const port = Number(/\/tcp\/(\d+)/.exec(address.toString())?.[1] ?? 0);
      if (port > 0) return port;
    }
    return this.config.listen.port;
  }
}

/**
 * The labels a node advertises: the operator's, what its drivers found (a Docker bridge), and whether exec
 * tasks may run as root here (allowed, or not isolated: then they run as the agent, root or not).
 */
function labelsWithFacts(config: NodeConfig, facts: DriverFacts): Record<string, string> {
  const rootTasks = config.allowRootTasks === true || config.execIsolation === false;
  return {
    ...config.labels,
    ...(rootTasks ? { [execRootLabel]: 'true' } : {}),
    ...(facts.dockerBridge === null ? {} : { [dockerBridgeLabel]: String(facts.dockerBridge) }),
  };
}

/** Descriptions by record: a record is replaced, never changed, and the leader asks for every member's often. */
const descriptions = new WeakMap<Member['record'], MemberFacts['description']>();

function describeNode(member: Member): MemberFacts['description'] {
  const record = member.record;
  const known = descriptions.get(record);
  if (known !== undefined) return known;
  const description: MemberFacts['description'] = {
    id: record.id,
    name: record.name,
    address: record.address,
    capacity: {
      cpuMillis: record.cpuMillis,
      memoryBytes: record.memoryBytes,
      ...(record.diskBytes === undefined ? {} : { diskBytes: record.diskBytes }),
      ...(record.devices === undefined ? {} : { devices: record.devices }),
    },
    // The node's id as a label too, so a system job's instance can be pinned to it like any constraint.
    labels: { ...record.labels, [nodeIdLabel]: record.id },
    drivers: record.drivers,
    ...(record.dynamicPorts === undefined ? {} : { dynamicPorts: record.dynamicPorts }),
  };
  descriptions.set(record, description);
  return description;
}
