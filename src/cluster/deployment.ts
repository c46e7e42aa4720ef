/**
 * Deployments: a service job's rolling update to a new version, as a record in the replicated state (so a
 * new leader continues it where it was), and the pure decisions about it. The leader's deployment watcher
 * calls deploymentProgress with the committed state and the time, and proposes what it returns as a
 * `deploymentProgress` command; the reconciler (reconcile.ts) reads the record's rollout to decide how many
 * old instances it may replace at once. Pure: no I/O, no clock (nowMs comes in), no randomness.
 *
 * Rules of deploymentProgress, for a running deployment (a paused one gets its health marks only, and no
 * status or progress deadline; an ended one, nothing):
 * - Each group's current tasks not yet judged are judged once. Healthy: running, desired run, and running
 *   (and, with checks, passing them) for minHealthyTimeMs. Unhealthy: failed or finished (a service
 *   exiting) unless the cluster was stopping it, checks failing, or not healthy healthyDeadlineMs after it
 *   was created. A task the cluster stopped (killed, or desired kill) or lost with its node is neither: a
 *   lowered count, a user's stop or a dead node is no verdict on the version. A verdict, once recorded, stays (an instance that fails later is replaced
 *   in its slot, and the replacement is judged).
 * - It fails on the first unhealthy task (a bad version stops at maxParallel replacements), or when no task
 *   turned healthy by progressDeadlineAtMs (each healthy task pushes it back). The deadline does not run
 *   while the deployment only waits for a user to promote healthy canaries.
 * - It succeeds when every group is promoted (or wants no canaries), runs no old instance any more, and has
 *   desiredTotal healthy current ones live.
 * - nextCheckAtMs: the earliest time the clock alone could change a verdict or the status.
 * The reconciler sees a running deployment as an active rollout, a paused or failed one as an inactive one
 * (nothing more replaced; the old instances it did not reach stay until a revert or a new version), and
 * none at all once it succeeded or was cancelled. Promotion needs every wanted canary healthy.
 */
import type { UpdatePolicy } from './job.ts';
import type { GroupRollout } from './reconcile.ts';
import { isTerminal, type TaskHealth, type TaskState } from './task.ts';

export const deploymentStatuses = ['running', 'paused', 'successful', 'failed', 'cancelled'] as const;
export type DeploymentStatus = (typeof deploymentStatuses)[number];

/** Deployments kept per job (the newest; ended older ones are forgotten). */
export const deploymentsPerJobMax = 5;

/** One group's part of a deployment. */
export interface DeploymentGroupRecord {
  /** Instances the group wants at the new version (its count). */
  readonly desiredTotal: number;
  /** Canaries to start before `promote` (0: none). */
  readonly desiredCanaries: number;
  /** Canaries promoted (always true without canaries). */
  promoted: boolean;
  /** Tasks of the new version the deployment judged healthy (ran, checks passing, minHealthyTimeMs). */
  healthyTaskIds: string[];
  /** Tasks of the new version judged unhealthy, with why. */
  unhealthy: { readonly taskId: string; readonly reason: string }[];
  /** Tasks started as canaries (new version, beside the old instances of their slots). */
  canaryTaskIds: string[];
}

export interface DeploymentRecord {
  /** `d` + the log index that created it: unique in the cluster. */
  readonly id: string;
  readonly namespace: string;
  readonly job: string;
  /** The job version it rolls out. */
  readonly jobVersion: number;
  /** The newest version whose deployment succeeded before this one (auto-revert's target); null if none. */
  readonly stableVersion: number | null;
  /** The job's update policy; a new version that changes only the policy changes it here too. */
  policy: UpdatePolicy;
  status: DeploymentStatus;
  /** One line: "waiting for promotion", "task t-1 unhealthy: GET / returned 503", "superseded by version 4". */
  statusReason: string;
  /** Groups whose instances it replaces (those whose spec changed at jobVersion). */
  groups: Record<string, DeploymentGroupRecord>;
  readonly createdAtMs: number;
  updatedAtMs: number;
  /** It fails when no instance turned healthy by then; null: no deadline (policy 0, or paused). */
  progressDeadlineAtMs: number | null;
  /** Set on a failed deployment that auto-revert answered: the version applied to go back. */
  revertedToVersion?: number;
}

/** A task of the deployment's job as deploymentProgress sees it. */
export interface DeploymentTask {
  readonly id: string;
  readonly group: string;
  /** Whether its version runs the deployment's spec for its group (see ReconcileGroup.currentVersions). */
  readonly current: boolean;
  readonly state: TaskState;
  readonly desired: 'run' | 'kill' | 'move' | 'preempt';
  /** Whether the task has health checks (without them, running is healthy). */
  readonly hasChecks: boolean;
  readonly health: TaskHealth | undefined;
  /** When it was last reported running (undefined: not running). */
  readonly runningSinceMs: number | undefined;
  /** When it was created (submitted): healthyDeadlineMs counts from here. */
  readonly createdAtMs: number;
  /** Its reason when it ended (for "task x failed: exit code 1"). */
  readonly reason: string | null;
}

/** What the watcher proposes for one deployment; empty when nothing changed. */
export interface DeploymentProgress {
  readonly healthy: readonly { readonly group: string; readonly taskId: string }[];
  readonly unhealthy: readonly { readonly group: string; readonly taskId: string; readonly reason: string }[];
  /** A new status (successful or failed) and its reason, or null to keep it. */
  readonly status: { readonly status: 'successful' | 'failed'; readonly reason: string } | null;
  /** When to look again at the latest (a task's min healthy time or a deadline comes due); null: on change only. */
  readonly nextCheckAtMs: number | null;
}

const noProgress: DeploymentProgress = { healthy: [], unhealthy: [], status: null, nextCheckAtMs: null };

export function deploymentProgress(
  deployment: DeploymentRecord,
  tasks: readonly DeploymentTask[],
  nowMs: number,
): DeploymentProgress {
  const { status, policy } = deployment;
  if (status !== 'running' && status !== 'paused') return noProgress;
  const healthy: { group: string; taskId: string }[] = [];
  const unhealthy: { group: string; taskId: string; reason: string }[] = [];
  let nextCheckAtMs: number | null = null;
  const checkAt = (atMs: number): void => {
    if (atMs > nowMs && (nextCheckAtMs === null || atMs < nextCheckAtMs)) nextCheckAtMs = atMs;
  };
  let complete = true;
  // Groups whose canaries wait for promotion: all healthy (a user's move), or some not yet.
  let canariesReady = false;
  let canariesPending = false;
  const groups = Object.entries(deployment.groups).sort(([a], [b]) => compareText(a, b));
  for (const [name, group] of groups) {
    const healthyIds = new Set(group.healthyTaskIds);
    const judged = new Set([...healthyIds, ...group.unhealthy.map((entry) => entry.taskId)]);
    const mine = tasks.filter((task) => task.group === name);
    for (const task of mine) {
      if (!task.current || judged.has(task.id)) continue;
      const verdict = judge(task, policy, nowMs);
      if (verdict.kind === 'healthy') {
        healthy.push({ group: name, taskId: task.id });
        healthyIds.add(task.id);
      } else if (verdict.kind === 'unhealthy')
        unhealthy.push({ group: name, taskId: task.id, reason: verdict.reason });
      else if (verdict.kind === 'waiting') for (const atMs of verdict.dueAtMs) checkAt(atMs);
    }
    const live = mine.filter(wantedLive);
    const healthyLive = live.filter((task) => task.current && healthyIds.has(task.id)).length;
    const promotionDue = group.desiredCanaries > 0 && !group.promoted;
    if (promotionDue) {
      const healthyCanaries = group.canaryTaskIds.filter((id) => healthyIds.has(id)).length;
      if (healthyCanaries >= group.desiredCanaries) canariesReady = true;
      else canariesPending = true;
    }
    if (promotionDue || live.some((task) => !task.current) || healthyLive < group.desiredTotal)
      complete = false;
  }
  if (status === 'paused') return { healthy, unhealthy, status: null, nextCheckAtMs };

  const recorded = groups.flatMap(([, group]) => group.unhealthy);
  const firstUnhealthy = recorded[0] ?? unhealthy[0];
  if (firstUnhealthy !== undefined)
    return {
      healthy,
      unhealthy,
      status: { status: 'failed', reason: firstUnhealthy.reason },
      nextCheckAtMs: null,
    };
  if (complete)
    return {
      healthy,
      unhealthy,
      status: { status: 'successful', reason: 'every instance runs the new version, healthy' },
      nextCheckAtMs: null,
    };
  // A healthy task pushes the deadline back (applyDeploymentProgress); a user's promotion is not progress
  // the deployment can make by itself, so it does not fail waiting for one.
  const deadlineAtMs =
    healthy.length > 0 && policy.progressDeadlineMs > 0
      ? nowMs + policy.progressDeadlineMs
      : deployment.progressDeadlineAtMs;
  const waitsForUser = canariesReady && !canariesPending;
  if (deadlineAtMs !== null && !waitsForUser) {
    if (nowMs >= deadlineAtMs)
      return {
        healthy,
        unhealthy,
        status: {
          status: 'failed',
          reason: `no instance became healthy within ${seconds(policy.progressDeadlineMs)} s`,
        },
        nextCheckAtMs: null,
      };
    checkAt(deadlineAtMs);
  }
  return { healthy, unhealthy, status: null, nextCheckAtMs };
}

type Verdict =
  | { readonly kind: 'healthy' }
  | { readonly kind: 'unhealthy'; readonly reason: string }
  /** Not yet: these times (a min healthy time, the healthy deadline) could change that. */
  | { readonly kind: 'waiting'; readonly dueAtMs: readonly number[] }
  /** Stopped by the cluster: no verdict, ever. */
  | { readonly kind: 'none' };

function judge(task: DeploymentTask, policy: UpdatePolicy, nowMs: number): Verdict {
  // Lost with its node: the node's doing, not the version's (its slot is filled again).
  const stoppedByCluster = task.state === 'killed' || task.state === 'lost' || task.desired === 'kill';
  if (task.state === 'failed' || task.state === 'finished') {
    // Ended while the cluster stopped it: the stop's doing, not the version's.
    if (task.desired === 'kill') return { kind: 'none' };
    // A service instance is meant to keep running: exiting, even with 0, is no health.
    const verb = task.state === 'finished' ? 'exited' : 'failed';
    return { kind: 'unhealthy', reason: `task ${task.id} ${verb}: ${task.reason ?? task.state}` };
  }
  if (stoppedByCluster) return { kind: 'none' };
  const { health } = task;
  if (task.hasChecks && health?.status === 'unhealthy')
    return { kind: 'unhealthy', reason: `task ${task.id} unhealthy: ${health.message}` };
  const dueAtMs: number[] = [];
  const checksPass = !task.hasChecks || task.health?.status === 'healthy';
  if (task.state === 'running' && task.desired === 'run' && task.runningSinceMs !== undefined && checksPass) {
    const sinceMs = Math.max(task.runningSinceMs, task.hasChecks ? (task.health?.sinceMs ?? 0) : 0);
    const healthyAtMs = sinceMs + policy.minHealthyTimeMs;
    if (nowMs >= healthyAtMs) return { kind: 'healthy' };
    dueAtMs.push(healthyAtMs);
  }
  const deadlineAtMs = task.createdAtMs + policy.healthyDeadlineMs;
  if (nowMs >= deadlineAtMs)
    return {
      kind: 'unhealthy',
      reason: `task ${task.id} not healthy within ${seconds(policy.healthyDeadlineMs)} s`,
    };
  dueAtMs.push(deadlineAtMs);
  return { kind: 'waiting', dueAtMs };
}

/** Live and wanted: not ended, not being stopped. */
function wantedLive(task: DeploymentTask): boolean {
  return !isTerminal(task.state) && task.desired !== 'kill';
}

/**
 * Records what deploymentProgress found, as the replicated state machine applies it (deterministic: every
 * node gets the same record). A verdict is recorded once; a status only changes a running deployment (one
 * paused, cancelled or ended since the watcher looked keeps its own); each newly healthy task pushes the
 * progress deadline back to atMs + progressDeadlineMs.
 */
export function applyDeploymentProgress(
  record: DeploymentRecord,
  progress: DeploymentProgress,
  atMs: number,
): void {
  if (record.status !== 'running' && record.status !== 'paused') return;
  let turnedHealthy = false;
  for (const { group, taskId } of progress.healthy) {
    const entry = record.groups[group];
    if (entry === undefined || entry.healthyTaskIds.includes(taskId)) continue;
    if (entry.unhealthy.some((bad) => bad.taskId === taskId)) continue;
    entry.healthyTaskIds.push(taskId);
    turnedHealthy = true;
  }
  for (const { group, taskId, reason } of progress.unhealthy) {
    const entry = record.groups[group];
    if (entry === undefined || entry.unhealthy.some((bad) => bad.taskId === taskId)) continue;
    if (entry.healthyTaskIds.includes(taskId)) continue;
    entry.unhealthy.push({ taskId, reason });
  }
  if (turnedHealthy && record.status === 'running' && record.policy.progressDeadlineMs > 0)
    record.progressDeadlineAtMs = atMs + record.policy.progressDeadlineMs;
  if (progress.status !== null && record.status === 'running') {
    record.status = progress.status.status;
    record.statusReason = progress.status.reason;
    record.progressDeadlineAtMs = null;
  }
  record.updatedAtMs = atMs;
}

/** What the reconciler needs of a deployment for one group; undefined: replace at once (or nothing to roll). */
export function groupRollout(record: DeploymentRecord | undefined, group: string): GroupRollout | undefined {
  if (record === undefined) return undefined;
  if (record.status !== 'running' && record.status !== 'paused' && record.status !== 'failed')
    return undefined;
  const entry = record.groups[group];
  if (entry === undefined) return undefined;
  return {
    maxParallel: record.policy.maxParallel,
    order: record.policy.order,
    canary: entry.desiredCanaries,
    promoted: entry.promoted,
    active: record.status === 'running',
    healthyTaskIds: new Set(entry.healthyTaskIds),
    canaryTaskIds: new Set(entry.canaryTaskIds),
    startedAtMs: record.createdAtMs,
  };
}

/** Whether the deployment waits (or will wait) for `promote`: a group wants canaries not yet promoted. */
export function needsPromotion(record: DeploymentRecord): boolean {
  if (record.status !== 'running' && record.status !== 'paused') return false;
  return Object.values(record.groups).some((group) => group.desiredCanaries > 0 && !group.promoted);
}

/**
 * `deployment promote`: every group's canaries are promoted, so the rest of the old instances are replaced.
 * Refused (the reason returned, the record untouched) unless the deployment is running or paused, has
 * canaries to promote, and every group's wanted canaries are healthy. A running deployment's progress
 * deadline starts again from atMs. Null when done.
 */
export function promoteDeployment(record: DeploymentRecord, atMs: number): string | null {
  if (record.status !== 'running' && record.status !== 'paused')
    return `deployment ${record.id} is ${record.status}: nothing to promote`;
  if (!needsPromotion(record)) return `deployment ${record.id} has no canaries to promote`;
  const names = Object.keys(record.groups).sort(compareText);
  for (const name of names) {
    const group = record.groups[name];
    if (group === undefined || group.promoted || group.desiredCanaries === 0) continue;
    const healthy = group.canaryTaskIds.filter((id) => group.healthyTaskIds.includes(id)).length;
    if (healthy < group.desiredCanaries)
      return `group ${name}: ${healthy} of ${group.desiredCanaries} canaries healthy; promote once all are`;
  }
  for (const group of Object.values(record.groups)) group.promoted = true;
  record.statusReason = 'canaries promoted';
  if (record.status === 'running' && record.policy.progressDeadlineMs > 0)
    record.progressDeadlineAtMs = atMs + record.policy.progressDeadlineMs;
  record.updatedAtMs = atMs;
  return null;
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}

/** Code-unit order: the same on every node, unlike localeCompare. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
