/**
 * The leader's duties, run while this node is Raft's ready leader: register members as nodes in the
 * replicated state and mark lost ones down (planNodeUpdates), keep the voter set healthy (planVoterChange),
 * and run the allocator and commit its plans. Each duty proposes at most one change at a time; all of them
 * run again on every applied entry, membership change, finished proposal and a periodic tick.
 */
import {
  type ClusterState,
  type Command,
  deploymentProgress,
  encodeCommand,
  planPeriodicLaunches,
  Scheduler,
  type Hold,
} from '../cluster/index.ts';
import {
  defaultVoterPolicy,
  planVoterChange,
  type RaftService,
  type VoterCandidate,
} from '../election/index.ts';
import type { MembershipService, Member, MemberTransition } from '../membership/index.ts';
import { errorMessage, type Logger } from '../shared/index.ts';
import { preemptionGapOf, type NodeConfig } from './config.ts';
import { writeTimeoutMs } from './control.ts';
import type { LeaderLeases } from './lease.ts';
import { planNodeUpdates, type MemberFacts } from './node-updates.ts';

/** Placements per committed plan, so one plan stays a small log entry. */
export const placementsPerPlanMax = 2000;
/** The leader rebuilds its allocator from the state this often, whatever happens (see cluster/scheduler.ts). */
export const schedulerRebuildIntervalMs = 5 * 60_000;
/** The most often the leader compares every member with the state when nothing about members changed. */
export const nodeReconcileGapMs = 100;
/** The leader's duties also run this often with nothing to wake them (leases run out without an event). */
export const leaderTickMs = 500;
/** The deployment watcher looks at most this often (it reads every task of each deploying job). */
export const deploymentWatchIntervalMs = 100;

export interface LeaderInit {
  readonly selfId: string;
  readonly config: NodeConfig;
  readonly state: ClusterState;
  readonly raft: RaftService;
  readonly membership: MembershipService;
  readonly leases: LeaderLeases;
  readonly logger: Logger;
  /** What a member advertises, as a node record. */
  readonly describe: (member: Member) => MemberFacts['description'];
  /** Hears each allocator plan: its time, placements and evictions (metrics). */
  readonly planned?: (seconds: number, placements: number, preemptions: number) => void;
  /** Frameworks' offers (frameworks.ts): led in each term, held in the allocator, offered after each plan. */
  readonly frameworks?: {
    lead(term: number): void;
    stepDown(reason: string): void;
    holds(): Map<string, Hold>;
    round(): void;
  };
}

export class LeaderDuties {
  private readonly init: LeaderInit;
  private tickTimer: NodeJS.Timeout | null = null;
  private backoffTimer: NodeJS.Timeout | null = null;
  private scheduled = false;
  private stopped = false;
  private planInFlight = false;
  private configInFlight = false;
  private readonly nodeUpdatesInFlight = new Set<string>();
  /** Deployments whose progress is being proposed, and when the watcher last looked. */
  private readonly deploymentsInFlight = new Set<string>();
  private deploymentsWatchedMs = 0;
  private deploymentTimer: NodeJS.Timeout | null = null;
  /** Periodic jobs (namespace/name) whose launch is being proposed. */
  private readonly launchesInFlight = new Set<string>();
  /** The allocator's mirror of the state: while this node leads, and kept warm while it is a voter (see follow). */
  private scheduler: Scheduler | null = null;
  /** When reconcileNodes last ran, and whether a member changed since. */
  private nodesReconciledMs = 0;
  private membersChanged = true;
  private nodesTimer: NodeJS.Timeout | null = null;
  /** Whether the scheduler was last used to lead (false: kept warm while following). */
  private ledWithScheduler = false;
  /** When the allocator mirror falling out of step was last logged (ms). */
  private outOfStepLoggedMs = 0;
  /** When each member was last seen turning alive (for the voter promotion stability period). */
  private readonly aliveSinceMs = new Map<string, number>();

  constructor(init: LeaderInit) {
    this.init = init;
  }

  start(): void {
    this.tickTimer = setInterval(() => this.schedule(), leaderTickMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.tickTimer) clearInterval(this.tickTimer);
    if (this.deploymentTimer) clearTimeout(this.deploymentTimer);
    if (this.nodesTimer) clearTimeout(this.nodesTimer);
    this.dropScheduler();
  }

  /** A member changed state: remember when it turned alive, and look again. */
  memberTransition(transition: MemberTransition): void {
    if (transition.to === 'alive') this.aliveSinceMs.set(transition.id, Date.now());
    else this.aliveSinceMs.delete(transition.id);
    this.membersChanged = true;
    this.schedule();
  }

  /** The members as the voter rules see them: state, and since when alive. */
  voterCandidates(nowMs: number): VoterCandidate[] {
    // A hosted node (the fleet simulator's) speaks membership and leases through its host, never Raft.
    const members = this.init.membership.members().filter((member) => member.record.via === undefined);
    return members.map((member) => ({
      id: member.record.id,
      state: member.state,
      aliveSinceMs: member.state === 'alive' ? (this.aliveSinceMs.get(member.record.id) ?? nowMs) : null,
      lastHeardMs: member.lastHeardMs,
    }));
  }

  /** Runs the duties soon (once per turn of the event loop however often it is asked). */
  schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const { raft, state, leases } = this.init;
      if (this.stopped || !raft.isReadyLeader()) {
        this.follow();
        this.init.frameworks?.stepDown('this node is no longer the leader: subscribe again');
        return;
      }
      const term = raft.status().term;
      leases.leading(term, state.nodes.keys(), Date.now());
      this.init.frameworks?.lead(term);
      // Every member's record against the state is O(nodes): not on every applied entry of a busy leader,
      // but on a member's change and otherwise at most every nodeReconcileGapMs (leases count in seconds).
      const nowMs = Date.now();
      if (this.membersChanged || nowMs - this.nodesReconciledMs >= nodeReconcileGapMs) {
        this.membersChanged = false;
        this.nodesReconciledMs = nowMs;
        this.reconcileNodes();
      } else {
        this.nodesTimer ??= setTimeout(() => {
          this.nodesTimer = null;
          this.schedule();
        }, nodeReconcileGapMs).unref();
      }
      this.reconcileVoters();
      this.launchPeriodicJobs();
      this.watchDeployments();
      this.runAllocator();
      // Offers are made from what the plan left (pending built-in work that outranks a framework keeps it
      // off the nodes that work fits).
      this.init.frameworks?.round();
    });
  }

  /**
   * Proposes the launch of every periodic job whose slot is due (periodic.ts). Runs on every tick, so a
   * slot is launched within a tick of its time; the state applies each slot once, so a retry or a new
   * leader proposing the same slot launches nothing twice.
   */
  private launchPeriodicJobs(): void {
    const { raft, state, logger } = this.init;
    for (const command of planPeriodicLaunches(state.jobs.values(), Date.now(), this.launchesInFlight)) {
      const key = `${command.namespace}/${command.name}`;
      this.launchesInFlight.add(key);
      raft
        .propose(encodeCommand(command), writeTimeoutMs)
        .then(() => {
          logger.info(command.launch ? 'launched a periodic job' : 'skipped a missed periodic slot', {
            job: key,
            slot: new Date(command.slotMs).toISOString(),
          });
        })
        .catch((error: unknown) =>
          logger.debug('periodic launch failed', { job: key, error: errorMessage(error) }),
        )
        .finally(() => this.launchesInFlight.delete(key));
    }
  }

  /**
   * The deployment watcher: judges the instances of every running deployment (deployment.ts) and proposes
   * what changed: instances healthy or unhealthy, success or failure. A deployment's record is in the
   * replicated state, so a new leader's watcher takes over where this one was. At most one proposal per
   * deployment in flight, and a look at most every deploymentWatchIntervalMs (the tick also brings one).
   */
  private watchDeployments(): void {
    const { raft, state, logger } = this.init;
    const nowMs = Date.now();
    if (nowMs - this.deploymentsWatchedMs < deploymentWatchIntervalMs) return;
    this.deploymentsWatchedMs = nowMs;
    let nextCheckAtMs = Infinity;
    for (const deployment of state.deployments.values()) {
      if (deployment.status !== 'running' && deployment.status !== 'paused') continue;
      if (this.deploymentsInFlight.has(deployment.id)) continue;
      const progress = deploymentProgress(deployment, state.deploymentTasks(deployment), nowMs);
      if (progress.nextCheckAtMs !== null) nextCheckAtMs = Math.min(nextCheckAtMs, progress.nextCheckAtMs);
      if (progress.healthy.length === 0 && progress.unhealthy.length === 0 && progress.status === null)
        continue;
      const command: Command = {
        type: 'deploymentProgress',
        deploymentId: deployment.id,
        healthy: progress.healthy,
        unhealthy: progress.unhealthy,
        status: progress.status,
        atMs: nowMs,
      };
      this.deploymentsInFlight.add(deployment.id);
      raft
        .propose(encodeCommand(command), writeTimeoutMs)
        .then(() => {
          if (progress.status !== null)
            logger.info(`deployment ${progress.status.status}`, {
              deployment: deployment.id,
              job: `${deployment.namespace}/${deployment.job}`,
              reason: progress.status.reason,
            });
        })
        .catch((error: unknown) =>
          logger.debug('deployment progress failed', {
            deployment: deployment.id,
            error: errorMessage(error),
          }),
        )
        .finally(() => {
          this.deploymentsInFlight.delete(deployment.id);
          this.schedule();
        });
    }
    // An instance's min healthy time comes due between ticks: look again right then, not up to a tick late.
    if (this.deploymentTimer !== null) clearTimeout(this.deploymentTimer);
    this.deploymentTimer = null;
    if (Number.isFinite(nextCheckAtMs) && nextCheckAtMs - nowMs < leaderTickMs) {
      this.deploymentTimer = setTimeout(
        () => {
          this.deploymentTimer = null;
          this.deploymentsWatchedMs = 0;
          this.schedule();
        },
        Math.max(0, nextCheckAtMs - nowMs) + 1,
      );
      this.deploymentTimer.unref();
    }
  }

  private reconcileNodes(): void {
    const { selfId, membership, state, leases, raft } = this.init;
    const nowMs = Date.now();
    leases.renewed(selfId, nowMs);
    const updates = planNodeUpdates({
      members: membership.members().map((member) => ({
        id: member.record.id,
        name: member.record.name,
        state: member.state,
        lastHeardMs: member.lastHeardMs,
        description: this.init.describe(member),
      })),
      known: state.nodes,
      renewedMs: (id) => leases.lastRenewedMs(id),
      inFlight: this.nodeUpdatesInFlight,
      nowMs,
    });
    for (const { nodeId, name, command } of updates) {
      this.nodeUpdatesInFlight.add(nodeId);
      raft
        .propose(encodeCommand(command), writeTimeoutMs)
        .catch((error: unknown) =>
          this.init.logger.debug('node update failed', { node: name, error: errorMessage(error) }),
        )
        .finally(() => this.nodeUpdatesInFlight.delete(nodeId));
    }
  }

  /** Keeps the voter set healthy and odd from live members (see planVoterChange). One change at a time. */
  private reconcileVoters(): void {
    if (this.configInFlight) return;
    const { raft } = this.init;
    const status = raft.status();
    const nowMs = Date.now();
    const next = planVoterChange({
      leaderId: this.init.selfId,
      config: status.config,
      members: this.voterCandidates(nowMs),
      progress: status.progress,
      commitIndex: status.commitIndex,
      nowMs,
      policy: this.init.config.voterPolicy ?? defaultVoterPolicy,
    });
    if (!next) return;
    this.configInFlight = true;
    raft
      .proposeConfig(next, writeTimeoutMs)
      .catch((error: unknown) =>
        this.init.logger.debug('configuration change failed', { error: errorMessage(error) }),
      )
      .finally(() => {
        this.configInFlight = false;
        this.schedule();
      });
  }

  /**
   * Places pending tasks on live nodes with room (preempting lower priorities where the policy allows),
   * and commits the plan. One plan in flight at a time.
   */
  private runAllocator(): void {
    if (this.planInFlight) return;
    const { raft, state } = this.init;
    const scheduler = this.ensureScheduler();
    const nowMs = Date.now();
    // Offered room counts as allocated: no plan places there.
    if (this.init.frameworks !== undefined) scheduler.setHolds(this.init.frameworks.holds());
    let plan;
    const startedMs = performance.now();
    try {
      plan = scheduler.plan(nowMs, placementsPerPlanMax);
      this.init.planned?.(
        (performance.now() - startedMs) / 1000,
        plan.placements.length,
        plan.preemptions.length,
      );
    } catch (error) {
      this.init.logger.warn('the allocator failed; it is rebuilt from the state', {
        error: errorMessage(error),
      });
      return;
    } finally {
      this.armBackoffTimer(scheduler, nowMs);
    }
    const reasons = plan.waiting.filter((w) => state.tasks.get(w.taskId)?.reason !== w.reason);
    if (plan.placements.length === 0 && plan.preemptions.length === 0 && reasons.length === 0) return;
    this.planInFlight = true;
    const command: Command = {
      type: 'assignTasks',
      term: raft.status().term,
      assignments: plan.placements,
      ...(plan.preemptions.length === 0
        ? {}
        : { preemptions: plan.preemptions, preemptionPriorityGap: preemptionGapOf(this.init.config) }),
      waiting: reasons,
      atMs: Date.now(),
    };
    raft
      .propose(encodeCommand(command), writeTimeoutMs)
      .then(() => {
        // Placements the log refused as stale stay pending: have their reasons reported again.
        for (const { taskId } of plan.placements) {
          if (state.tasks.get(taskId)?.state === 'pending') this.scheduler?.unplaced(taskId);
        }
      })
      .catch((error: unknown) => {
        this.init.logger.debug('plan commit failed', { error: errorMessage(error) });
        // What the allocator assumed may not have happened: start again from the state.
        this.dropScheduler();
      })
      .finally(() => {
        this.planInFlight = false;
        this.schedule();
      });
  }

  /**
   * Not leading: a voter keeps its scheduler warm, fed by the state's changes alone, so it can lead without
   * a rebuild; anything else drops it. A scheduler whose own plan may still be in flight assumed placements
   * the log may never hold, so it is dropped too (rebuilt if this node leads again).
   */
  private follow(): void {
    const { raft } = this.init;
    const voter = !this.stopped && raft.status().config.voters.includes(this.init.selfId);
    if (!voter || (this.scheduler !== null && this.planInFlight)) {
      this.dropScheduler();
      return;
    }
    if (this.scheduler !== null && this.ledWithScheduler) {
      // Just stepped down: offers are the leader's alone (cleared once, not on every entry applied after).
      this.scheduler.setHolds(new Map());
      if (this.backoffTimer) clearTimeout(this.backoffTimer);
      this.backoffTimer = null;
    }
    this.ensureScheduler(false).warm(Date.now());
  }

  private ensureScheduler(leading = true): Scheduler {
    if (this.scheduler) {
      if (leading && !this.ledWithScheduler) this.scheduler.leading(Date.now());
      this.ledWithScheduler = leading;
      return this.scheduler;
    }
    this.ledWithScheduler = leading;
    const { membership, leases, state } = this.init;
    const scheduler = new Scheduler(state, {
      preemptionPriorityGap: preemptionGapOf(this.init.config),
      // Alive to membership and renewing its lease: a node that has just died but is not yet suspected
      // stops renewing at once, so no new task goes to it in the seconds before membership notices.
      isAlive: (nodeId) =>
        membership.member(nodeId)?.state === 'alive' && leases.freshForPlacement(nodeId, Date.now()),
      rebuildIntervalMs: schedulerRebuildIntervalMs,
      onOutOfStep: (reason) => {
        // At most one line a minute: a mirror that keeps falling out of step would fill the log.
        const nowMs = Date.now();
        if (nowMs - this.outOfStepLoggedMs < 60_000) return;
        this.outOfStepLoggedMs = nowMs;
        this.init.logger.warn('the allocator mirror fell out of step with the state; rebuilding it', {
          reason,
          times: scheduler.rebuildsAfterError,
        });
      },
    });
    this.scheduler = scheduler;
    state.observer = scheduler;
    return scheduler;
  }

  private dropScheduler(): void {
    this.ledWithScheduler = false;
    if (!this.scheduler) return;
    this.scheduler.reset();
    this.scheduler = null;
    this.init.state.observer = null;
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
        this.schedule();
      },
      Math.max(0, dueMs - nowMs) + 5,
    );
    this.backoffTimer.unref();
  }
}
