/**
 * The fleet simulator: thousands of simulated nodes in one process, speaking the real protocols to a real
 * cluster. What is real and what is simulated (docs/operations.md, "The fleet simulator"):
 *
 * - Real, per node: an Ed25519 identity (its node id), a signed membership record (every voter checks
 *   its signature), SWIM answers to the real nodes' probes (acks, indirect probes, refutations, push-pull;
 *   src/membership/hosted.ts), lease renewals (every second, as an agent's), task reports (each node's own
 *   `reportTask` commands through the leader), the leader registering it (`upsertNode`) and marking it
 *   down when its lease lapses.
 * - Multiplexed: all nodes speak over this process's one libp2p host (its record names the host as
 *   `via`), so their frames share connections and a renewal call carries up to 1,000 nodes; the leader
 *   still renews, registers and hears from each node on its own.
 * - Simulated: the driver (a task "runs" after a start delay, for a given time or until killed, and may
 *   fail or be OOM-killed at the rates given), and how a node learns its work: from one voter's event stream
 *   (`GET /v1/events`) instead of replicating the Raft log as a real agent does. Simulated nodes do not
 *   probe one another.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey, peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { ShoalClient } from '../../src/api/index.ts';
import { reportsPerCommandMax, type Command } from '../../src/cluster/index.ts';
import {
  HostedMembers,
  SwimTransport,
  ed25519MembershipCrypto,
  swimSyncProtocol,
  syncReplySchema,
  syncRequestSchema,
  type HostedOutgoing,
} from '../../src/membership/index.ts';
import {
  controlProtocol,
  createP2p,
  leaseRenewIntervalMs,
  parseJoinTarget,
  renewalNodesMax,
  shoalVersion,
  taskLeaseMs,
  type ShoalLibp2p,
} from '../../src/node/index.ts';
import { errorMessage, isShoalError } from '../../src/shared/errors.ts';
import type { Logger } from '../../src/shared/log.ts';
import { seededRandom, type Random } from '../../src/shared/random.ts';
import { Semaphore } from '../../src/shared/semaphore.ts';
import { callRpc, handleRpc } from '../../src/shared/wire.ts';

/** Records per push-pull message when the fleet joins: each costs a voter ~70 µs to verify. */
const joinEntriesPerSync = 400;
/**
 * Control calls in flight at once over the host's connection to the leader (libp2p allows 64 streams):
 * reports share most of them; renewals have lanes of their own, so a backlog of reports never holds up a
 * lease (a real agent's renewal does not wait behind its reports either).
 */
const reportCallsMax = 28;
const renewalCallsMax = 4;
/** How long reports wait to be sent together. */
const reportBatchMs = 20;
/** Tasks per page when a resync reads the task list (GET /v1/tasks?limit=). */
const resyncPageTasks = 5000;
/** What a node reports of a task its lapsed lease stopped (as the agent's words). */
const leaseLostReason = 'stopped: the node could not reach a leader for the whole task lease (simulated)';
/** A control call's deadline, and each attempt's (the next voter is tried after it). */
const controlTimeoutMs = 10_000;
const attemptTimeoutMs = 3000;

export interface FleetOptions {
  readonly clusterKey: string;
  /** host:port of real nodes' cluster listeners. */
  readonly seeds: readonly string[];
  /** API addresses to follow the cluster's events from (tried in turn when one fails). */
  readonly eventApis: readonly string[];
  readonly token?: string;
  readonly nodes: number;
  readonly namePrefix: string;
  readonly cpuMillis: number;
  readonly memoryBytes: number;
  /** Nodes get the label rack=r0 … r(racks-1), round robin. */
  readonly racks: number;
  readonly startDelayMs: { readonly min: number; readonly max: number };
  /** How long a task runs; null: until it is killed. */
  readonly runMs: number | null;
  /** Share of runs that end failed (exit code 1), and OOM-killed. */
  readonly failRatio: number;
  readonly oomRatio: number;
  readonly seed: number;
  readonly logger: Logger;
}

interface SimNode {
  readonly id: string;
  readonly name: string;
  alive: boolean;
  /** When a renewal sent at this time was last confirmed by a leader. */
  confirmedMs: number;
  readonly tasks: Map<string, SimTask>;
  /** Tasks stopped when the node's lease ran out (id → attempt): reported lost once a leader hears it again. */
  readonly stopped: Map<string, number>;
}

interface SimTask {
  readonly taskId: string;
  readonly attempt: number;
  state: 'starting' | 'running';
  timer: NodeJS.Timeout | null;
}

interface Report {
  readonly taskId: string;
  readonly attempt: number;
  readonly state: 'running' | 'finished' | 'failed' | 'killed' | 'lost';
  readonly exitCode: number | null;
  readonly reason: string | null;
}

export interface FleetStats {
  nodesAlive: number;
  tasksRunning: number;
  tasksStarting: number;
  reportsCommitted: number;
  reportsFailed: number;
  renewalsConfirmed: number;
  renewalsFailed: number;
  eventsSeen: number;
  eventStreamBreaks: number;
  /** Tasks assigned to a node while another live simulated node still ran them: must stay 0. */
  assignedTwice: number;
  /** Times the event stream lost events and the fleet read every task instead. */
  resyncs: number;
  /** Tasks stopped by a lapsed lease and reported lost once the node was heard again. */
  reportedLost: number;
  acks: number;
  helperProbes: number;
  refutations: number;
}

export class Fleet {
  private readonly options: FleetOptions;
  private readonly random: Random;
  private readonly nodes = new Map<string, SimNode>();
  /** The node each simulated task runs on. */
  private readonly taskNodes = new Map<string, SimNode>();
  private readonly reportCalls = new Semaphore(reportCallsMax);
  private readonly renewalCalls = new Semaphore(renewalCallsMax);
  private readonly pendingReports = new Map<string, Report[]>();
  private readonly abort = new AbortController();
  private readonly timers: NodeJS.Timeout[] = [];
  private libp2p: ShoalLibp2p | null = null;
  private hosted: HostedMembers | null = null;
  private transport: SwimTransport | null = null;
  private leaderGuess = 0;
  /** Set when a lease came back: the event loop below reads every task once more. */
  private resyncSoon = false;
  private reportTimer: NodeJS.Timeout | null = null;
  private stopped = false;
  private readonly counters = {
    reportsCommitted: 0,
    reportsFailed: 0,
    renewalsConfirmed: 0,
    renewalsFailed: 0,
    eventsSeen: 0,
    eventStreamBreaks: 0,
    assignedTwice: 0,
    resyncs: 0,
    reportedLost: 0,
  };

  constructor(options: FleetOptions) {
    this.options = options;
    this.random = seededRandom(options.seed);
  }

  /** Makes the nodes, joins the cluster with their records and starts renewing and following events. */
  async start(): Promise<void> {
    const { options } = this;
    const hostKey = await generateKeyPair('Ed25519');
    const libp2p = await createP2p({
      privateKey: hostKey,
      listenMultiaddr: '/ip4/127.0.0.1/tcp/0',
      clusterKey: options.clusterKey,
    });
    this.libp2p = libp2p;
    const hostId = libp2p.peerId.toString();
    const addresses = libp2p.getMultiaddrs().map((address) => address.toString());
    const port = Number(/\/tcp\/(\d+)/.exec(addresses[0] ?? '')?.[1] ?? 0);
    const hosted = new HostedMembers(hostId);
    this.hosted = hosted;
    const width = String(options.nodes).length;
    for (let i = 0; i < options.nodes; i++) {
      const key = await generateKeyPair('Ed25519');
      const id = peerIdFromPrivateKey(key).toString();
      const name = `${options.namePrefix}-${String(i).padStart(width, '0')}`;
      hosted.add(
        {
          id,
          name,
          addresses,
          address: `127.0.0.1:${port}`,
          cpuMillis: options.cpuMillis,
          memoryBytes: options.memoryBytes,
          labels: { rack: `r${i % options.racks}`, fleet: 'simulated' },
          drivers: ['exec'],
          version: shoalVersion,
          incarnation: 1,
          revision: 0,
          leaving: false,
        },
        ed25519MembershipCrypto(key),
      );
      this.nodes.set(id, { id, name, alive: true, confirmedMs: 0, tasks: new Map(), stopped: new Map() });
    }
    const transport = new SwimTransport({
      libp2p,
      logger: options.logger,
      dialTimeoutMs: 2000,
      peerConnectionsMax: 64,
      addressesOf: (id) => hosted.realMembers().get(id)?.record.addresses ?? [],
      viaOf: () => undefined,
      // Frames for the host itself: it is no member, so there are none to answer.
      onMessage: () => undefined,
      onUnreachable: () => undefined,
      nowMs: Date.now,
      hosted: {
        hosts: (member) => hosted.hosts(member),
        onMessage: (from, member, message) => this.send(hosted.receive(from, member, message, Date.now())),
      },
    });
    this.transport = transport;
    await transport.start();
    await handleRpc(libp2p, swimSyncProtocol, (request) => {
      const parsed = syncRequestSchema.safeParse(request);
      if (!parsed.success) throw new Error('malformed membership sync request');
      const reply = hosted.handleSyncRequest(parsed.data);
      this.rememberRealMembers();
      return Promise.resolve(reply);
    });
    await this.join();
    this.every(100, () => {
      this.send(hosted.tick(Date.now()));
      this.send(hosted.gossip());
    });
    this.every(leaseRenewIntervalMs, () => void this.renewLeases());
    this.every(10_000, () => void this.syncWithRandomMember());
    void this.renewLeases();
    void this.followEvents();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    for (const timer of this.timers) clearInterval(timer);
    if (this.reportTimer !== null) clearTimeout(this.reportTimer);
    for (const node of this.nodes.values()) for (const task of node.tasks.values()) clearTask(task);
    this.transport?.stop();
    await this.libp2p?.stop();
  }

  stats(): FleetStats {
    let nodesAlive = 0;
    let tasksRunning = 0;
    let tasksStarting = 0;
    for (const node of this.nodes.values()) {
      if (!node.alive) continue;
      nodesAlive++;
      for (const task of node.tasks.values()) {
        if (task.state === 'running') tasksRunning++;
        else tasksStarting++;
      }
    }
    const hosted = this.hosted?.stats;
    return {
      nodesAlive,
      tasksRunning,
      tasksStarting,
      ...this.counters,
      acks: hosted?.acks ?? 0,
      helperProbes: hosted?.helperProbes ?? 0,
      refutations: hosted?.refutations ?? 0,
    };
  }

  /** Crashes the live node running the most tasks (or `id`): it stops answering, renewing and reporting. */
  crash(id?: string): { id: string; name: string; tasks: number } | null {
    let chosen: SimNode | undefined;
    if (id !== undefined) chosen = this.nodes.get(id);
    else
      for (const node of this.nodes.values())
        if (node.alive && (chosen === undefined || node.tasks.size > chosen.tasks.size)) chosen = node;
    if (chosen === undefined || !chosen.alive) return null;
    chosen.alive = false;
    this.hosted?.crash(chosen.id);
    const tasks = chosen.tasks.size;
    this.dropTasks(chosen);
    this.pendingReports.delete(chosen.id);
    return { id: chosen.id, name: chosen.name, tasks };
  }

  private every(ms: number, work: () => void): void {
    const timer = setInterval(work, ms);
    this.timers.push(timer);
  }

  private send(out: readonly HostedOutgoing[]): void {
    const transport = this.transport;
    if (transport === null) return;
    for (const { to, member, message } of out) transport.send(to, { ...message, member });
  }

  // ---- membership ------------------------------------------------------------------------------------

  /** Pushes every node's record to a seed, a few hundred per push-pull so no voter stalls on signatures. */
  private async join(): Promise<void> {
    const libp2p = this.requireLibp2p();
    const hosted = this.requireHosted();
    let lastError: unknown = null;
    for (const seed of this.options.seeds) {
      try {
        const connection = await libp2p.dial(multiaddr(parseJoinTarget(seed)), {
          signal: AbortSignal.timeout(5000),
        });
        const peer = connection.remotePeer;
        const { digest, entries } = hosted.syncRequest();
        for (let from = 0; from < entries.length; from += joinEntriesPerSync) {
          const chunk = entries.slice(from, from + joinEntriesPerSync);
          await callRpc(libp2p, peer, swimSyncProtocol, { digest: null, entries: chunk }, 30_000);
        }
        const reply = syncReplySchema.parse(
          await callRpc(libp2p, peer, swimSyncProtocol, { digest, entries: [] }, 30_000),
        );
        const back = hosted.handleSyncReply(reply);
        if (back.length > 0)
          await callRpc(libp2p, peer, swimSyncProtocol, { digest: null, entries: back }, 30_000);
        this.rememberRealMembers();
        return;
      } catch (error) {
        lastError = error;
      }
    }
    throw new Error(
      `the fleet could not join through ${this.options.seeds.join(', ')}: ${errorMessage(lastError)}`,
    );
  }

  private async syncWithRandomMember(): Promise<void> {
    const hosted = this.requireHosted();
    const ids = [...hosted.realMembers().keys()];
    const id = ids[Math.floor(this.random.next() * ids.length)];
    if (id === undefined || this.stopped) return;
    try {
      const request = hosted.syncRequest();
      const raw = await callRpc(
        this.requireLibp2p(),
        peerIdFromString(id),
        swimSyncProtocol,
        { digest: request.digest, entries: [] },
        30_000,
      );
      const back = hosted.handleSyncReply(syncReplySchema.parse(raw));
      if (back.length > 0)
        await callRpc(
          this.requireLibp2p(),
          peerIdFromString(id),
          swimSyncProtocol,
          { digest: null, entries: back },
          30_000,
        );
      this.rememberRealMembers();
    } catch (error) {
      this.options.logger.debug('fleet sync failed', { error: errorMessage(error) });
    }
  }

  /** Real members' addresses into the address book, so control calls can dial them by id. */
  private rememberRealMembers(): void {
    const libp2p = this.requireLibp2p();
    for (const [id, { record }] of this.requireHosted().realMembers()) {
      try {
        void libp2p.peerStore
          .merge(peerIdFromString(id), { multiaddrs: record.addresses.map((address) => multiaddr(address)) })
          .catch(() => undefined);
      } catch {
        // A malformed address in a signed record: the next sync may bring a better one.
      }
    }
  }

  // ---- leases and reports ----------------------------------------------------------------------------

  /** Calls the leader (found by trying the real members in turn), within the lanes given. */
  private async callLeader(lanes: Semaphore, request: unknown): Promise<unknown> {
    return lanes.run(async () => {
      let lastError: unknown = null;
      const deadline = Date.now() + controlTimeoutMs;
      while (Date.now() < deadline && !this.stopped) {
        const ids = [...this.requireHosted().realMembers().keys()];
        const id = ids[this.leaderGuess % Math.max(1, ids.length)];
        if (id === undefined) break;
        try {
          return await callRpc(
            this.requireLibp2p(),
            peerIdFromString(id),
            controlProtocol,
            request,
            Math.max(1, Math.min(attemptTimeoutMs, deadline - Date.now())),
          );
        } catch (error) {
          lastError = error;
          // A node that does not answer in time may be a leader stalled or gone: try the next one, as an
          // agent follows the leader it hears of.
          if (
            !isShoalError(error, 'NOT_LEADER') &&
            !isShoalError(error, 'UNAVAILABLE') &&
            !isShoalError(error, 'TIMEOUT')
          )
            throw error;
          this.leaderGuess++;
          await new Promise((done) => setTimeout(done, 20));
        }
      }
      if (lastError instanceof Error) throw lastError;
      throw new Error('no leader known');
    });
  }

  private async renewLeases(): Promise<void> {
    const nowMs = Date.now();
    const alive = [...this.nodes.values()].filter((node) => node.alive);
    for (const node of alive) {
      // As a real agent: a node that has not confirmed its lease for a whole lease stops its tasks.
      if (this.leaseLapsed(node, nowMs)) {
        for (const task of node.tasks.values()) node.stopped.set(task.taskId, task.attempt);
        this.dropTasks(node);
      }
    }
    const batches: SimNode[][] = [];
    for (let from = 0; from < alive.length; from += renewalNodesMax)
      batches.push(alive.slice(from, from + renewalNodesMax));
    await Promise.all(
      batches.map(async (batch) => {
        try {
          await this.callLeader(this.renewalCalls, {
            method: 'renewLease',
            nodes: batch.map((node) => node.id),
          });
          this.counters.renewalsConfirmed += batch.length;
          let regained = false;
          for (const node of batch) {
            regained ||= this.leaseLapsed(node, Date.now());
            node.confirmedMs = Math.max(node.confirmedMs, nowMs);
            // Heard again: what the lapsed lease stopped is reported lost, as an agent does, so the cluster
            // places it again (a leader that never saw the lease lapse still thinks it runs).
            for (const [taskId, attempt] of node.stopped) {
              this.counters.reportedLost++;
              this.report(node.id, {
                taskId,
                attempt,
                state: 'lost',
                exitCode: null,
                reason: leaseLostReason,
              });
            }
            node.stopped.clear();
          }
          // Work assigned while the lease was out was not started: read it from the state, as an agent
          // reconciles with the log once it may run tasks again.
          if (regained) this.resyncSoon = true;
        } catch (error) {
          this.counters.renewalsFailed += batch.length;
          this.options.logger.debug('lease renewal failed', { error: errorMessage(error) });
        }
      }),
    );
  }

  private report(nodeId: string, report: Report): void {
    let queue = this.pendingReports.get(nodeId);
    if (queue === undefined) {
      queue = [];
      this.pendingReports.set(nodeId, queue);
    }
    queue.push(report);
    this.reportTimer ??= setTimeout(() => {
      this.reportTimer = null;
      this.flushReports();
    }, reportBatchMs);
  }

  /**
   * Each node's reports go as that node's own commands, batched as a real agent's are (node/reports.ts):
   * what one node has to say within a batch window is one `reportTasks` entry.
   */
  private flushReports(): void {
    const batches = [...this.pendingReports];
    this.pendingReports.clear();
    for (const [nodeId, reports] of batches) {
      for (let from = 0; from < reports.length; from += reportsPerCommandMax)
        void this.proposeReports(nodeId, reports.slice(from, from + reportsPerCommandMax));
    }
  }

  private async proposeReports(nodeId: string, reports: Report[]): Promise<void> {
    const command: Command =
      reports.length === 1 && reports[0] !== undefined
        ? { type: 'reportTask', nodeId, ...reports[0], atMs: Date.now() }
        : { type: 'reportTasks', nodeId, reports, atMs: Date.now() };
    for (let attempt = 0; attempt < 5 && !this.stopped; attempt++) {
      try {
        await this.callLeader(this.reportCalls, { method: 'propose', command });
        this.counters.reportsCommitted += reports.length;
        return;
      } catch (error) {
        if (!isShoalError(error, 'TIMEOUT') && !isShoalError(error, 'NO_LEADER')) break;
      }
    }
    this.counters.reportsFailed += reports.length;
  }

  // ---- the simulated driver --------------------------------------------------------------------------

  /** Follows the cluster's events from the first API that answers, resuming where a broken stream ended. */
  private async followEvents(): Promise<void> {
    let index: number | undefined;
    let turn = 0;
    while (!this.stopped) {
      const address = this.options.eventApis[turn % this.options.eventApis.length] ?? '';
      const client = new ShoalClient({
        address,
        ...(this.options.token === undefined ? {} : { token: this.options.token }),
      });
      try {
        for await (const frame of client.events({
          ...(index === undefined ? {} : { index }),
          signal: this.abort.signal,
        })) {
          if (frame.type === 'error') throw new Error(frame.error.message);
          if (this.resyncSoon) {
            this.resyncSoon = false;
            this.counters.resyncs++;
            await this.resync(client);
          }
          if (frame.type === 'heartbeat') {
            index = frame.index;
            continue;
          }
          if (frame.type === 'reset') {
            // Events were lost to us (the node keeps the latest 10,000): learn our work from the state,
            // as an agent reconciles with what the log assigns it.
            index = frame.index;
            this.counters.resyncs++;
            await this.resync(client);
            continue;
          }
          // Resume from before this entry: its other events may not have arrived yet.
          index = Math.max(index ?? 0, frame.index - 1);
          if (frame.type === 'task:assigned') {
            this.counters.eventsSeen++;
            this.assigned(frame.nodeId, frame.taskId, frame.attempt);
          } else if (frame.type === 'task:desired') {
            this.counters.eventsSeen++;
            this.stopTask(frame.taskId);
          }
        }
      } catch (error) {
        if (this.abort.signal.aborted) return;
        this.counters.eventStreamBreaks++;
        this.options.logger.debug('event stream broke', { api: address, error: errorMessage(error) });
      } finally {
        client.close();
      }
      turn++;
      await new Promise((done) => setTimeout(done, 100));
    }
  }

  /** Starts what the state assigns to our live nodes and we do not run; stops what it no longer does. */
  private async resync(client: ShoalClient): Promise<void> {
    const wanted = new Map<string, { nodeId: string; attempt: number }>();
    // In pages: one answer of every task holds the voter's event loop for seconds at 500,000 tasks.
    let after: string | null = null;
    do {
      const page: Awaited<ReturnType<ShoalClient['tasksPage']>> = await client.tasksPage(
        resyncPageTasks,
        after,
      );
      for (const task of page.tasks) {
        if (task.nodeId === null || !this.nodes.has(task.nodeId) || task.desired !== 'run') continue;
        if (task.state === 'assigned' || task.state === 'starting' || task.state === 'running')
          wanted.set(task.id, { nodeId: task.nodeId, attempt: task.attempt });
      }
      after = page.next;
    } while (after !== null);
    for (const [taskId, node] of [...this.taskNodes]) {
      const want = wanted.get(taskId);
      if (want === undefined || want.nodeId !== node.id) this.stopTask(taskId);
    }
    for (const [taskId, { nodeId, attempt }] of wanted) this.assigned(nodeId, taskId, attempt);
  }

  /** Whether a node has gone a whole lease without a confirmed renewal (it runs nothing then). */
  private leaseLapsed(node: SimNode, nowMs: number): boolean {
    return node.confirmedMs > 0 && nowMs - node.confirmedMs > taskLeaseMs;
  }

  private assigned(nodeId: string, taskId: string, attempt: number): void {
    const node = this.nodes.get(nodeId);
    if (node?.alive !== true || node.tasks.get(taskId)?.attempt === attempt) return;
    // An agent without a lease starts nothing; it picks the work up when the lease is back (resyncSoon).
    if (this.leaseLapsed(node, Date.now())) return;
    const elsewhere = this.taskNodes.get(taskId);
    if (elsewhere !== undefined && elsewhere !== node && elsewhere.alive && elsewhere.tasks.has(taskId))
      this.counters.assignedTwice++;
    const { min, max } = this.options.startDelayMs;
    const task: SimTask = { taskId, attempt, state: 'starting', timer: null };
    const earlier = node.tasks.get(taskId);
    if (earlier !== undefined) clearTask(earlier);
    node.tasks.set(taskId, task);
    this.taskNodes.set(taskId, node);
    task.timer = setTimeout(() => this.started(node, task), min + this.random.next() * (max - min));
  }

  private started(node: SimNode, task: SimTask): void {
    task.state = 'running';
    task.timer = null;
    this.report(node.id, {
      taskId: task.taskId,
      attempt: task.attempt,
      state: 'running',
      exitCode: null,
      reason: null,
    });
    const { runMs, failRatio, oomRatio } = this.options;
    const roll = this.random.next();
    const ends = roll < failRatio + oomRatio || runMs !== null;
    if (!ends) return;
    const afterMs = runMs ?? 1000 + this.random.next() * 9000;
    task.timer = setTimeout(() => {
      node.tasks.delete(task.taskId);
      this.taskNodes.delete(task.taskId);
      const end: Report =
        roll < oomRatio
          ? {
              taskId: task.taskId,
              attempt: task.attempt,
              state: 'failed',
              exitCode: 137,
              reason: 'OOM killed (simulated)',
            }
          : roll < oomRatio + failRatio
            ? {
                taskId: task.taskId,
                attempt: task.attempt,
                state: 'failed',
                exitCode: 1,
                reason: 'exit code 1 (simulated)',
              }
            : { taskId: task.taskId, attempt: task.attempt, state: 'finished', exitCode: 0, reason: null };
      this.report(node.id, end);
    }, afterMs);
  }

  private stopTask(taskId: string): void {
    const node = this.taskNodes.get(taskId);
    const task = node?.tasks.get(taskId);
    if (node === undefined || task === undefined) return;
    clearTask(task);
    node.tasks.delete(taskId);
    this.taskNodes.delete(taskId);
    if (node.alive)
      this.report(node.id, {
        taskId,
        attempt: task.attempt,
        state: 'killed',
        exitCode: null,
        reason: 'stopped',
      });
  }

  /** A node's tasks are gone (it crashed, or its lease ran out): nothing of them is reported. */
  private dropTasks(node: SimNode): void {
    for (const task of node.tasks.values()) {
      clearTask(task);
      this.taskNodes.delete(task.taskId);
    }
    node.tasks.clear();
  }

  private requireLibp2p(): ShoalLibp2p {
    if (this.libp2p === null) throw new Error('the fleet has not started');
    return this.libp2p;
  }

  private requireHosted(): HostedMembers {
    if (this.hosted === null) throw new Error('the fleet has not started');
    return this.hosted;
  }
}

function clearTask(task: SimTask): void {
  if (task.timer !== null) clearTimeout(task.timer);
  task.timer = null;
}
