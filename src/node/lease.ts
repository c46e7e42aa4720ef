/**
 * The task lease, both sides. A task instance must never run on two nodes at once, so:
 * - the agent side stops its tasks once it has not confirmed contact with a leader for taskLeaseMs;
 * - the leader side replaces a node's tasks only after taskLeaseMs + replaceGraceMs without a renewal.
 * The agent counts from when it sent its last confirmed renewal, the leader from when that renewal arrived
 * (later), so the two never overlap and the grace only has to cover the stop itself. Exec tasks' shims
 * look at the lease file just after the lease would run out and kill at once; the agent, if it notices
 * first, stops tasks with leaseStopGraceMs (runtime/agent.ts) of grace.
 *
 * The decisions are pure functions of times; the classes below only hold the times and the timers.
 */
import { existsSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** How long an agent keeps its tasks without a confirmed renewal. */
export const taskLeaseMs = 10_000;
/** What the leader waits beyond the lease before it replaces a silent node's tasks. */
export const replaceGraceMs = 1_000;
/** How often an agent renews its lease with the leader. */
export const leaseRenewIntervalMs = 1_000;
/** Lease renewals arriving within this long share one ReadIndex round (see LeaderLeases.confirmLeadership). */
export const leadershipCheckBatchMs = 20;
/** New tasks go only to nodes that renewed their lease this recently. */
export const placementLeaseFreshMs = 5_000;
/** The file in the data dir whose modification time is the lease (task shims read it too). */
export const leaseFileName = 'lease.json';

/** Whether an agent whose last renewal was confirmed at confirmedMs must stop its tasks. */
export function leaseExpired(confirmedMs: number, nowMs: number): boolean {
  return nowMs - confirmedMs > taskLeaseMs;
}

/** What the leader may do with a node's tasks, given when the node last renewed with it. */
export type LeaseStanding =
  /** Renewed within the lease: the node runs its tasks. */
  | 'held'
  /** Lapsed, but the node's agent may still be stopping its tasks: wait. */
  | 'lapsing'
  /** Lapsed past the grace: the node's tasks are stopped; replace them. */
  | 'gone';

export function leaseStanding(renewedMs: number | undefined, nowMs: number): LeaseStanding {
  if (renewedMs === undefined) return 'gone';
  const sinceMs = nowMs - renewedMs;
  if (sinceMs < taskLeaseMs) return 'held';
  return sinceMs >= taskLeaseMs + replaceGraceMs ? 'gone' : 'lapsing';
}

/** Whether a node renewed recently enough to be given new tasks. */
export function freshForPlacement(renewedMs: number | undefined, nowMs: number): boolean {
  return renewedMs !== undefined && nowMs - renewedMs < placementLeaseFreshMs;
}

/**
 * The agent's side: when this node last confirmed that a leader hears it, kept as the lease file's
 * modification time, so a restarted agent does not grant itself a fresh lease (its tasks may have been
 * placed elsewhere meanwhile). Setting a file's time needs no free blocks, so it works on a full disk.
 */
export class AgentLease {
  private readonly path: string;
  private confirmedMs: number;
  private expiryTimer: NodeJS.Timeout | null = null;
  private readonly onChange: () => void;
  private readonly onStampFailed: (error: unknown) => void;

  /** onChange: wake the agent (the lease ran out, or came back). */
  constructor(path: string, onChange: () => void, onStampFailed: (error: unknown) => void) {
    this.path = path;
    this.onChange = onChange;
    this.onStampFailed = onStampFailed;
    this.confirmedMs = readLeaseFile(path);
  }

  expired(nowMs = Date.now()): boolean {
    return leaseExpired(this.confirmedMs, nowMs);
  }

  /** A renewal sent at atMs was confirmed by a leader. */
  confirm(atMs: number): void {
    if (atMs <= this.confirmedMs) return;
    const wasExpired = this.expired();
    this.confirmedMs = atMs;
    // Wake the agent the moment the lease would run out, not at its next periodic reconcile: tasks the
    // shim does not watch (docker) must stop within the leader's grace.
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = setTimeout(this.onChange, Math.max(0, atMs + taskLeaseMs + 1 - Date.now()));
    this.expiryTimer.unref();
    // Back in contact: run what waited for the lease without waiting for the next reconcile tick.
    if (wasExpired) this.onChange();
    // No fsync: after a power loss an older time only makes the lease end sooner, which is safe. A failed
    // write (full disk) leaves the older time on disk, which is safe too. The file is written only when
    // it is missing.
    try {
      if (!existsSync(this.path)) writeFileSync(this.path, '');
      utimesSync(this.path, atMs / 1000, atMs / 1000);
    } catch (error) {
      this.onStampFailed(error);
    }
  }

  stop(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
  }
}

/**
 * The leader's side: when each node last renewed its lease with this leader (this node's clock), and the
 * batched ReadIndex rounds that confirm this node still leads before it grants a renewal.
 */
export class LeaderLeases {
  private readonly renewedMs = new Map<string, number>();
  private ledInTerm = 0;
  private leadershipCheck: { started: boolean; done: Promise<void> } | null = null;
  private readonly readIndex: () => Promise<unknown>;

  /** readIndex: one ReadIndex round, resolving once a quorum confirms this node leads. */
  constructor(readIndex: () => Promise<unknown>) {
    this.readIndex = readIndex;
  }

  renewed(nodeId: string, atMs: number): void {
    this.renewedMs.set(nodeId, atMs);
  }

  lastRenewedMs(nodeId: string): number | undefined {
    return this.renewedMs.get(nodeId);
  }

  /**
   * Called as this node leads in `term`: a new leader knows nothing of earlier renewals, so every known
   * node gets a full lease from now.
   */
  leading(term: number, nodeIds: Iterable<string>, nowMs: number): void {
    if (term === this.ledInTerm) return;
    this.ledInTerm = term;
    for (const id of nodeIds) this.renewedMs.set(id, nowMs);
  }

  standing(nodeId: string, nowMs: number): LeaseStanding {
    return leaseStanding(this.renewedMs.get(nodeId), nowMs);
  }

  freshForPlacement(nodeId: string, nowMs: number): boolean {
    return freshForPlacement(this.renewedMs.get(nodeId), nowMs);
  }

  /**
   * Resolves once a quorum has confirmed, in a ReadIndex round that started after the call, that this node
   * still leads. Calls are batched: the first starts a round leadershipCheckBatchMs later, and every call
   * until that round starts shares it, so a large cluster's renewals cost a few rounds a second, not one
   * per node.
   */
  confirmLeadership(): Promise<void> {
    const pending = this.leadershipCheck;
    if (pending && !pending.started) return pending.done;
    const check: { started: boolean; done: Promise<void> } = { started: false, done: Promise.resolve() };
    check.done = sleep(leadershipCheckBatchMs).then(async () => {
      check.started = true;
      await this.readIndex();
    });
    this.leadershipCheck = check;
    check.done
      .finally(() => {
        if (this.leadershipCheck === check) this.leadershipCheck = null;
      })
      .catch(() => undefined);
    return check.done;
  }
}

/** The lease time saved by an earlier run; 0 (expired) if missing or unreadable. */
function readLeaseFile(path: string): number {
  try {
    return Math.min(statSync(path).mtimeMs, Date.now());
  } catch {
    return 0;
  }
}
