/**
 * `GET /metrics`: the node's metrics in the Prometheus text format, through prom-client (a registry of our
 * own, not the library's global one). Gauges are read from the node's parts when scraped (Raft, membership,
 * the replicated state); counters and histograms are fed by hooks where things happen (API requests,
 * commits, allocator plans, task events). Names follow Prometheus: a `shoal_` prefix, base units
 * (`_seconds`, `_bytes`, cores), `_total` for counters, no task ids in labels.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ClusterEvent, ClusterState } from '../cluster/index.ts';
import { dominantShare, isTerminal, taskStates } from '../cluster/index.ts';
import type { RaftService } from '../election/index.ts';
import type { MembershipService } from '../membership/index.ts';
import { shoalVersion } from '../shared/index.ts';

export interface MetricsSources {
  readonly state: ClusterState;
  readonly raft: () => RaftService | null;
  readonly membership: () => MembershipService | null;
  /** A node's name from its id. */
  readonly nameOf: (nodeId: string) => string;
  /** The longest event-loop stall between two Raft ticks, in ms. */
  readonly eventLoopStallMsMax: () => number;
}

/** Latency buckets for things that take milliseconds to seconds (commits, plans, requests). */
const fastBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Buckets for submit → running: from tens of milliseconds to minutes (image pulls, queues). */
const startBuckets = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
/** Priority bands of the pending queue: 0–24, 25–49, 50–74, 75–100. */
const priorityBand = (priority: number): string =>
  priority >= 75 ? '75-100' : priority >= 50 ? '50-74' : priority >= 25 ? '25-49' : '0-24';

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly apiRequests: Counter<'route' | 'code'>;
  private readonly apiDuration: Histogram<'route'>;
  private readonly commitDuration: Histogram;
  private readonly planDuration: Histogram;
  private readonly placements: Counter;
  private readonly preemptions: Counter;
  private readonly leaderChanges: Counter;
  private readonly taskStarts: Histogram;
  private readonly restarts: Counter;
  private readonly oomKills: Counter;
  private readonly probeRoundTrips: Histogram;

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    // Node's own: process CPU, memory, event-loop lag, GC (prom-client's defaults, prefixed).
    collectDefaultMetrics({ register: this.registry, prefix: 'shoal_' });
    // prom-client names three gauges with `_total`, which Prometheus keeps for counters (promtool refuses
    // them); the count of active handles says little here anyway.
    for (const name of ['active_handles_total', 'active_requests_total', 'active_resources_total'])
      this.registry.removeSingleMetric(`shoal_nodejs_${name}`);
    new Gauge({
      name: 'shoal_build_info',
      help: 'The shoal build this node runs (always 1)',
      labelNames: ['version'],
      registers,
      collect() {
        this.set({ version: shoalVersion }, 1);
      },
    });
    const raftGauge = (name: string, help: string, read: (raft: RaftService) => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          const raft = sources.raft();
          if (raft) this.set(read(raft));
        },
      });
    };
    raftGauge('shoal_raft_is_leader', '1 when this node is the Raft leader', (raft) =>
      raft.isLeader() ? 1 : 0,
    );
    raftGauge('shoal_raft_term', 'The Raft term this node is in', (raft) => raft.status().term);
    raftGauge(
      'shoal_raft_commit_index',
      'The highest log index this node knows committed',
      (raft) => raft.status().commitIndex,
    );
    raftGauge(
      'shoal_raft_applied_index',
      'The highest log index this node has applied',
      (raft) => raft.status().appliedIndex,
    );
    raftGauge(
      'shoal_raft_leader_last_contact_seconds',
      'How long ago this node last heard from a leader, to a Raft tick (0 on the leader)',
      (raft) => raft.leaderLastContactMs() / 1000,
    );
    raftGauge(
      'shoal_raft_voters',
      'Voters in the Raft configuration',
      (raft) => raft.status().config.voters.length,
    );
    this.leaderChanges = new Counter({
      name: 'shoal_raft_leader_changes_total',
      help: 'Leaders this node has seen take office (elections that produced a leader)',
      registers,
    });
    this.commitDuration = new Histogram({
      name: 'shoal_raft_commit_duration_seconds',
      help: 'From proposing an entry on this node to it being committed and applied here',
      buckets: fastBuckets,
      registers,
    });
    new Gauge({
      name: 'shoal_members',
      help: 'Cluster members as this node sees them, by state',
      labelNames: ['state'],
      registers,
      collect() {
        const membership = sources.membership();
        if (!membership) return;
        const counts: Record<string, number> = { alive: 0, suspect: 0, dead: 0, left: 0 };
        for (const member of membership.members()) counts[member.state] = (counts[member.state] ?? 0) + 1;
        for (const [state, count] of Object.entries(counts)) this.set({ state }, count);
      },
    });
    const membershipCounter = (
      name: string,
      help: string,
      read: (stats: ReturnType<MembershipService['stats']>) => number,
    ): void => {
      // Read from the service's own running totals when scraped.
      new Counter({
        name,
        help,
        registers,
        collect() {
          const membership = sources.membership();
          if (!membership) return;
          this.reset();
          this.inc(read(membership.stats()));
        },
      });
    };
    this.probeRoundTrips = new Histogram({
      name: 'shoal_membership_probe_round_trip_seconds',
      help: 'Round trips of the SWIM probes this node sent that were answered directly',
      buckets: fastBuckets,
      registers,
    });
    membershipCounter('shoal_membership_probes_total', 'SWIM probes this node sent', (s) => s.probes);
    membershipCounter(
      'shoal_membership_probes_failed_total',
      'SWIM probes that got no answer in time',
      (s) => s.probesFailed,
    );
    membershipCounter(
      'shoal_membership_suspicions_total',
      'Members this node began to suspect',
      (s) => s.suspicions,
    );
    membershipCounter(
      'shoal_membership_sent_bytes_total',
      'Gossip bytes sent (SWIM frames and push-pull)',
      (s) => s.bytesSent + s.syncBytesSent,
    );
    membershipCounter(
      'shoal_membership_received_bytes_total',
      'Gossip bytes received',
      (s) => s.bytesReceived,
    );
    new Gauge({
      name: 'shoal_tasks',
      help: 'Tasks in the replicated state, by state',
      labelNames: ['state'],
      registers,
      collect() {
        const counts = new Map<string, number>(taskStates.map((state) => [state, 0]));
        for (const task of sources.state.tasks.values())
          counts.set(task.state, (counts.get(task.state) ?? 0) + 1);
        for (const [state, count] of counts) this.set({ state }, count);
      },
    });
    new Gauge({
      name: 'shoal_tasks_pending',
      help: 'Tasks waiting to be placed, by priority band',
      labelNames: ['priority'],
      registers,
      collect() {
        const counts = new Map<string, number>(['0-24', '25-49', '50-74', '75-100'].map((band) => [band, 0]));
        for (const task of sources.state.tasks.values())
          if (task.state === 'pending') {
            const band = priorityBand(task.spec.priority);
            counts.set(band, (counts.get(band) ?? 0) + 1);
          }
        for (const [priority, count] of counts) this.set({ priority }, count);
      },
    });
    new Gauge({
      name: 'shoal_tasks_pending_oldest_seconds',
      help: 'How long the task waiting longest has waited since it last became pending (0: none waits)',
      registers,
      collect() {
        let oldestMs: number | null = null;
        for (const task of sources.state.tasks.values())
          if (task.state === 'pending' && (oldestMs === null || task.updatedAtMs < oldestMs))
            oldestMs = task.updatedAtMs;
        this.set(oldestMs === null ? 0 : Math.max(0, Date.now() - oldestMs) / 1000);
      },
    });
    new Gauge({
      name: 'shoal_namespace_dominant_share',
      help: "Each namespace's dominant share: the larger of its share of the cluster's CPU and memory in use (0–1)",
      labelNames: ['namespace'],
      registers,
      collect() {
        let cpu = 0;
        let memory = 0;
        for (const node of sources.state.nodes.values()) {
          if (node.status !== 'up') continue;
          cpu += node.capacity.cpuMillis;
          memory += node.capacity.memoryBytes;
        }
        const used = new Map<string, { cpu: number; memory: number }>();
        for (const task of sources.state.tasks.values()) {
          if (isTerminal(task.state) || task.state === 'pending') continue;
          const namespace = task.spec.namespace ?? 'default';
          const entry = used.get(namespace) ?? { cpu: 0, memory: 0 };
          entry.cpu += task.spec.cpuMillis;
          entry.memory += task.spec.memoryBytes;
          used.set(namespace, entry);
        }
        this.reset();
        const capacity = { cpuMillis: cpu, memoryBytes: memory };
        for (const [namespace, entry] of used)
          this.set(
            { namespace },
            dominantShare({ cpuMillis: entry.cpu, memoryBytes: entry.memory }, capacity),
          );
      },
    });
    const nodeGauge = (name: string, help: string, read: (nodeId: string) => number): void => {
      new Gauge({
        name,
        help,
        labelNames: ['node'],
        registers,
        collect() {
          this.reset();
          for (const node of sources.state.nodes.values())
            if (node.status === 'up') this.set({ node: node.name }, read(node.id));
        },
      });
    };
    const capacity = (nodeId: string): { cpuMillis: number; memoryBytes: number } =>
      sources.state.nodes.get(nodeId)?.capacity ?? { cpuMillis: 0, memoryBytes: 0 };
    nodeGauge('shoal_node_cpu_cores', 'CPU a node offers to tasks', (id) => capacity(id).cpuMillis / 1000);
    nodeGauge(
      'shoal_node_cpu_allocated_cores',
      'CPU reserved on a node by its live tasks',
      (id) => (capacity(id).cpuMillis - sources.state.freeOn(id).cpuMillis) / 1000,
    );
    nodeGauge('shoal_node_memory_bytes', 'Memory a node offers to tasks', (id) => capacity(id).memoryBytes);
    nodeGauge(
      'shoal_node_memory_allocated_bytes',
      'Memory reserved on a node by its live tasks',
      (id) => capacity(id).memoryBytes - sources.state.freeOn(id).memoryBytes,
    );
    this.planDuration = new Histogram({
      name: 'shoal_allocator_plan_duration_seconds',
      help: "The allocator's time to make one plan (leader only)",
      buckets: fastBuckets,
      registers,
    });
    this.placements = new Counter({
      name: 'shoal_allocator_placements_total',
      help: 'Placements the allocator planned here (leader)',
      registers,
    });
    this.preemptions = new Counter({
      name: 'shoal_allocator_preemptions_total',
      help: 'Evictions the allocator planned here (leader)',
      registers,
    });
    this.taskStarts = new Histogram({
      name: 'shoal_task_start_duration_seconds',
      help: "From a task's submission to its first run reported running",
      buckets: startBuckets,
      registers,
    });
    this.restarts = new Counter({
      name: 'shoal_task_restarts_total',
      help: 'Runs of a task after its first (restarts, moves, reschedules)',
      registers,
    });
    this.oomKills = new Counter({
      name: 'shoal_task_oom_kills_total',
      help: 'Task runs ended by the out-of-memory killer',
      registers,
    });
    this.apiRequests = new Counter({
      name: 'shoal_api_requests_total',
      help: 'API requests answered by this node, by route and status code',
      labelNames: ['route', 'code'],
      registers,
    });
    this.apiDuration = new Histogram({
      name: 'shoal_api_request_duration_seconds',
      help: 'API request latency on this node, by route (streams: until the stream began)',
      labelNames: ['route'],
      buckets: fastBuckets,
      registers,
    });
    new Gauge({
      name: 'shoal_event_loop_stall_seconds_max',
      help: 'The longest the event loop stalled between two Raft ticks since the node started',
      registers,
      collect() {
        this.set(sources.eventLoopStallMsMax() / 1000);
      },
    });
  }

  /** The exposition, for GET /metrics. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  apiRequest(route: string, code: number, seconds: number): void {
    this.apiRequests.inc({ route, code: String(code) });
    this.apiDuration.observe({ route }, seconds);
  }

  committed(seconds: number): void {
    this.commitDuration.observe(seconds);
  }

  planned(seconds: number, placements: number, preemptions: number): void {
    this.planDuration.observe(seconds);
    this.placements.inc(placements);
    this.preemptions.inc(preemptions);
  }

  probeRoundTrip(seconds: number): void {
    this.probeRoundTrips.observe(seconds);
  }

  leaderElected(): void {
    this.leaderChanges.inc();
  }

  /** Counts what one applied entry's events say: first runs (their start latency), restarts, OOM kills. */
  applied(events: readonly ClusterEvent[], state: ClusterState): void {
    for (const event of events) {
      if (event.type !== 'task:state') continue;
      if (event.state === 'running' && event.attempt === 0) {
        const task = state.tasks.get(event.taskId);
        if (task) this.taskStarts.observe(Math.max(0, Date.parse(event.at) - task.submittedAtMs) / 1000);
      } else if (event.state === 'pending' && event.attempt > 0) this.restarts.inc();
      else if (event.state === 'failed' && /out of memory|oom/i.test(event.reason ?? '')) this.oomKills.inc();
    }
  }
}
