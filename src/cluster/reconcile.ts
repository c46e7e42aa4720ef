/**
 * The job reconciler, after Nomad's: from what a job wants (its groups, their counts and spec versions, its
 * reschedule policy) and every task of the job the state still holds, which instances to start and which
 * to stop. Pure: no I/O, no clock (time comes in as nowMs), no randomness; the leader's shell proposes what
 * it returns, and reconciling again once that is applied returns nothing.
 *
 * Rules:
 * - A task is live while its state is not terminal. A live task desired `kill` is already stopping: it
 *   does not occupy its slot and is never stopped again (for the history of its slot it counts as killed).
 *   Live tasks desired `move` or `preempt` still occupy their slot: they requeue themselves.
 * - A stopped job (`job stop`): every live task not already stopping stops ("job stopped"); nothing starts.
 * - Live tasks of a group the job no longer has stop.
 * - service, per group and slot 0…count-1: of the tasks occupying the slot the newest version (then the
 *   highest id) stays and the others stop. An occupant older than the group's specVersion stops and a
 *   replacement starts at once (a destructive update). An empty slot starts an instance; the previous
 *   instance of the slot (its latest ended task by updatedAtMs) decides when: lost or killed, at once;
 *   failed or finished, after reschedule.delayMs * 2^(n-1), at most restartDelayMsMax, where n counts the
 *   slot's failed and finished tasks that ended within crashLoopWindowMs before nowMs (a crash loop slows
 *   down; one that ended long ago comes back at once). Policy `never`: a slot whose previous instance was
 *   lost, failed or finished stays empty (one that never had a task still starts). reschedule.attempts
 *   caps the reschedules after failures of a slot (a lost node is no failure). Live tasks in slots past
 *   count stop.
 * - Only tasks at the group's specVersion or later make a slot's history: a new spec starts afresh (at
 *   once, with its own attempts), and a slot finished or killed at an old spec runs again.
 * - batch: as service, except that a slot finished (at specVersion or later) is done for good; failed is
 *   rescheduled under policy `always` while attempts are left, else done as failed; lost is rescheduled at
 *   once unless the policy is `never` (then done as failed); killed (by a user) is done as failed.
 *   A task carries no record of who killed it, so a batch slot stopped by `job stop` or a lowered count
 *   is done as failed too, until a new spec runs it again.
 * - system, per group and eligible node: exactly one live instance pinned to the node (slot 0). One is
 *   started where none is: at once after lost, killed or nothing, with the service's backoff after failed
 *   or finished; a system job's instance always comes back while its node stays eligible (the reschedule
 *   policy and attempts are for placing elsewhere, which a pinned instance cannot). Instances pinned to a
 *   node no longer eligible stop, and none is ever started for such a node. Old versions are replaced as
 *   for service.
 * - Slots that will not run again are reported done: batch ones, and service ones under policy `never` or
 *   out of attempts. A system instance always comes back, so system jobs report none.
 * - Order: groups in input order (then groups no longer in the job, by name); starts by slot (system: by
 *   node, in the order given); stops by task id within a group.
 */
import type { JobType, RescheduleSpec } from './job.ts';
import { isTerminal, restartDelayMsMax, type TaskState } from './task.ts';

/** A task of the job as the reconciler sees it. */
export interface InstanceTask {
  readonly id: string;
  readonly group: string;
  /** service/batch: 0…count-1; system: always 0. */
  readonly slot: number;
  /** The job version the instance was created at. */
  readonly version: number;
  /** system: the node it is pinned to; others: where it is or was placed (null if never). */
  readonly nodeId: string | null;
  /** pending, assigned, starting, running (live) or finished, failed, killed, lost (terminal). */
  readonly state: TaskState;
  readonly desired: 'run' | 'kill' | 'move' | 'preempt';
  /** When it last changed state. */
  readonly updatedAtMs: number;
}

export interface ReconcileGroup {
  readonly name: string;
  /** Instances wanted; null for a system job (one per eligible node). */
  readonly count: number | null;
  /** The job version at which this group's task spec last changed: live instances created before it are replaced. */
  readonly specVersion: number;
  /** System jobs only: the ids of nodes eligible for this group now (up, not draining, matching constraints and driver). */
  readonly eligibleNodeIds: readonly string[];
}

export interface ReconcileInput {
  /** A periodic job's launches are batch jobs. */
  readonly type: Exclude<JobType, 'periodic'>;
  /** The job's current version. */
  readonly version: number;
  /** `job stop`: every live instance stops, nothing starts. */
  readonly stopped: boolean;
  readonly groups: readonly ReconcileGroup[];
  /** {policy, attempts (null: no limit), delayMs}; defaults resolved by the caller. */
  readonly reschedule: Required<RescheduleSpec>;
  /** Every task of the job the state still holds, live and terminal. */
  readonly tasks: readonly InstanceTask[];
  readonly nowMs: number;
}

export interface StartAction {
  readonly group: string;
  readonly slot: number;
  /** System jobs: pin to this node. */
  readonly nodeId?: string;
  /** A reschedule's backoff; null: at once. */
  readonly notBeforeMs: number | null;
  readonly reason: string;
  /** The task id it replaces, if any. */
  readonly replaces?: string;
}

export interface StopAction {
  readonly taskId: string;
  readonly reason: string;
}

export interface DoneSlot {
  readonly group: string;
  readonly slot: number;
  readonly outcome: 'finished' | 'failed';
}

export interface ReconcileActions {
  readonly start: readonly StartAction[];
  readonly stop: readonly StopAction[];
  /** Slots that will not run again (batch: finished, or failed with no reschedule left), for status output. */
  readonly done: readonly DoneSlot[];
}

/** Failed or finished ends within this long before now count towards a slot's backoff. */
export const crashLoopWindowMs = 10 * 60_000;

/** Whether a task holds its slot: live and not already being stopped. */
export function occupiesSlot(task: InstanceTask): boolean {
  return !isTerminal(task.state) && task.desired !== 'kill';
}

/**
 * The wait before a slot's next instance after `endsInWindow` failed or finished ends within
 * crashLoopWindowMs: none for 0, then delayMs doubling with each, at most restartDelayMsMax.
 */
export function rescheduleDelayMs(delayMs: number, endsInWindow: number): number {
  if (endsInWindow <= 0) return 0;
  return Math.min(restartDelayMsMax, delayMs * 2 ** Math.min(endsInWindow - 1, 20));
}

export function reconcileJob(input: ReconcileInput): ReconcileActions {
  const start: StartAction[] = [];
  const stop: StopAction[] = [];
  const done: DoneSlot[] = [];
  const tasksByGroup = new Map<string, InstanceTask[]>();
  for (const task of input.tasks) appendTo(tasksByGroup, task.group, task);

  for (const group of input.groups) {
    const tasks = tasksByGroup.get(group.name) ?? [];
    // A group named twice (the job schema forbids it) is planned once, from its first entry.
    tasksByGroup.delete(group.name);
    const plan: GroupPlan = { start: [], stop: [], done: [] };
    if (input.stopped) stopLive(tasks, 'job stopped', plan.stop);
    else if (input.type === 'system') planSystemGroup(input, group, tasks, plan);
    else planSlotGroup(input, group, tasks, plan);
    start.push(...plan.start);
    stop.push(...plan.stop.sort(byTaskId));
    done.push(...plan.done);
  }

  // Tasks of groups the job no longer has: their instances are not wanted anywhere.
  const removed = [...tasksByGroup.keys()].sort(compareText);
  for (const name of removed) {
    const stops: StopAction[] = [];
    const reason = input.stopped ? 'job stopped' : `group ${name} is no longer in the job`;
    stopLive(tasksByGroup.get(name) ?? [], reason, stops);
    stop.push(...stops.sort(byTaskId));
  }
  return { start, stop, done };
}

interface GroupPlan {
  start: StartAction[];
  stop: StopAction[];
  done: DoneSlot[];
}

function stopLive(tasks: readonly InstanceTask[], reason: string, stops: StopAction[]): void {
  for (const task of tasks) if (occupiesSlot(task)) stops.push({ taskId: task.id, reason });
}

/** service and batch: slots 0…count-1. */
function planSlotGroup(
  input: ReconcileInput,
  group: ReconcileGroup,
  tasks: readonly InstanceTask[],
  plan: GroupPlan,
): void {
  const count = group.count ?? 0;
  const occupants = new Map<number, InstanceTask[]>();
  const history = new Map<number, InstanceTask[]>();
  const hadOlder = new Set<number>();
  for (const task of tasks) {
    if (occupiesSlot(task)) {
      if (Number.isInteger(task.slot) && task.slot >= 0 && task.slot < count)
        appendTo(occupants, task.slot, task);
      else plan.stop.push({ taskId: task.id, reason: `count lowered to ${count}` });
    } else if (task.version >= group.specVersion) appendTo(history, task.slot, task);
    else hadOlder.add(task.slot);
  }

  for (let slot = 0; slot < count; slot++) {
    const kept = keepNewest(occupants.get(slot) ?? [], `slot ${slot}`, plan.stop);
    const past = history.get(slot) ?? [];
    // A batch slot that finished at the current spec is done, whatever came after (a duplicate's kill).
    const finished = input.type === 'batch' && past.some((task) => task.state === 'finished');
    if (kept !== undefined) {
      if (kept.version >= group.specVersion) continue;
      if (finished) {
        plan.stop.push({ taskId: kept.id, reason: `slot ${slot} already finished at this spec` });
        plan.done.push({ group: group.name, slot, outcome: 'finished' });
        continue;
      }
      plan.stop.push({ taskId: kept.id, reason: `replaced by version ${group.specVersion}` });
      plan.start.push({
        group: group.name,
        slot,
        notBeforeMs: null,
        reason: `version ${group.specVersion} (replaces ${kept.id} at version ${kept.version})`,
        replaces: kept.id,
      });
      continue;
    }
    if (finished) {
      plan.done.push({ group: group.name, slot, outcome: 'finished' });
      continue;
    }
    const next = nextInstance(input, group, past, hadOlder.has(slot));
    if (next.kind === 'done') plan.done.push({ group: group.name, slot, outcome: next.outcome });
    else plan.start.push({ group: group.name, slot, ...next.start });
  }
}

/** system: one instance pinned to each eligible node. */
function planSystemGroup(
  input: ReconcileInput,
  group: ReconcileGroup,
  tasks: readonly InstanceTask[],
  plan: GroupPlan,
): void {
  const eligible = [...new Set(group.eligibleNodeIds)];
  const eligibleSet = new Set(eligible);
  const occupants = new Map<string, InstanceTask[]>();
  const history = new Map<string, InstanceTask[]>();
  const hadOlder = new Set<string>();
  for (const task of tasks) {
    if (occupiesSlot(task)) {
      if (task.nodeId !== null && eligibleSet.has(task.nodeId)) appendTo(occupants, task.nodeId, task);
      else plan.stop.push({ taskId: task.id, reason: 'node no longer eligible' });
    } else if (task.nodeId === null) continue;
    else if (task.version >= group.specVersion) appendTo(history, task.nodeId, task);
    else hadOlder.add(task.nodeId);
  }

  for (const nodeId of eligible) {
    const kept = keepNewest(occupants.get(nodeId) ?? [], `node ${nodeId}`, plan.stop);
    if (kept !== undefined) {
      if (kept.version >= group.specVersion) continue;
      plan.stop.push({ taskId: kept.id, reason: `replaced by version ${group.specVersion}` });
      plan.start.push({
        group: group.name,
        slot: 0,
        nodeId,
        notBeforeMs: null,
        reason: `version ${group.specVersion} (replaces ${kept.id} at version ${kept.version})`,
        replaces: kept.id,
      });
      continue;
    }
    const next = nextInstance(input, group, history.get(nodeId) ?? [], hadOlder.has(nodeId));
    // System instances always come back (see the module's comment), so `done` cannot happen here.
    if (next.kind === 'start') plan.start.push({ group: group.name, slot: 0, nodeId, ...next.start });
  }
}

/** The newest of a slot's occupants (newest version, then highest id); the others are stopped. */
function keepNewest(
  occupants: readonly InstanceTask[],
  where: string,
  stops: StopAction[],
): InstanceTask | undefined {
  const [kept, ...others] = [...occupants].sort((a, b) => b.version - a.version || compareText(b.id, a.id));
  if (kept === undefined) return undefined;
  for (const task of others) stops.push({ taskId: task.id, reason: `duplicate of ${kept.id} in ${where}` });
  return kept;
}

type NextInstance =
  | { readonly kind: 'done'; readonly outcome: 'finished' | 'failed' }
  | {
      readonly kind: 'start';
      readonly start: Pick<StartAction, 'notBeforeMs' | 'reason' | 'replaces'>;
    };

/**
 * What follows in an empty slot, from its history at the current spec (ended tasks, and stopping ones
 * which count as killed): a new instance, when, and why; or nothing more (done).
 */
function nextInstance(
  input: ReconcileInput,
  group: ReconcileGroup,
  past: readonly InstanceTask[],
  hadOlder: boolean,
): NextInstance {
  const previous = latest(past);
  if (previous === undefined)
    return {
      kind: 'start',
      start: { notBeforeMs: null, reason: hadOlder ? `version ${group.specVersion}` : 'new instance' },
    };
  const { type, reschedule, nowMs } = input;
  // The reschedule policy is about placing elsewhere; a system instance is pinned to its node.
  const never = type !== 'system' && reschedule.policy === 'never';
  const state = isTerminal(previous.state) ? previous.state : 'killed';
  const atOnce = (why: string): NextInstance => ({
    kind: 'start',
    start: { notBeforeMs: null, reason: `replaces ${previous.id} (${why})`, replaces: previous.id },
  });
  switch (state) {
    case 'killed':
      // A user's kill of a batch task is its end; a service (or system) instance is wanted until stopped.
      return type === 'batch' ? { kind: 'done', outcome: 'failed' } : atOnce('killed');
    case 'lost':
      return never ? { kind: 'done', outcome: 'failed' } : atOnce('lost with its node');
    case 'finished':
    case 'failed': {
      if (state === 'finished' && type === 'batch') return { kind: 'done', outcome: 'finished' };
      if (never) return { kind: 'done', outcome: state };
      if (state === 'failed' && type !== 'system' && reschedule.attempts !== null) {
        const failures = past.filter((task) => task.state === 'failed').length;
        if (failures > reschedule.attempts) return { kind: 'done', outcome: 'failed' };
      }
      const ends = past.filter(
        (task) =>
          (task.state === 'failed' || task.state === 'finished') &&
          nowMs - task.updatedAtMs < crashLoopWindowMs,
      ).length;
      const delayMs = rescheduleDelayMs(reschedule.delayMs, ends);
      if (delayMs === 0) return atOnce(state);
      return {
        kind: 'start',
        start: {
          notBeforeMs: nowMs + delayMs,
          reason: `replaces ${previous.id} (${state}; ${ends}× in ${crashLoopWindowMs / 60_000} min: backoff ${delayMs / 1000} s)`,
          replaces: previous.id,
        },
      };
    }
    case 'pending':
    case 'assigned':
    case 'starting':
    case 'running':
      // Unreachable: a live task in the history is a stopping one, taken as killed above.
      return atOnce('killed');
  }
}

/** The task that changed state last (then the highest id, so the answer does not depend on input order). */
function latest(tasks: readonly InstanceTask[]): InstanceTask | undefined {
  let best: InstanceTask | undefined;
  for (const task of tasks)
    if (
      best === undefined ||
      task.updatedAtMs > best.updatedAtMs ||
      (task.updatedAtMs === best.updatedAtMs && task.id > best.id)
    )
      best = task;
  return best;
}

function appendTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  const list = map.get(key);
  if (list === undefined) map.set(key, [value]);
  else list.push(value);
}

/** Code-unit order: the same on every node, unlike localeCompare. */
function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function byTaskId(a: StopAction, b: StopAction): number {
  return compareText(a.taskId, b.taskId);
}
