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
 * - A task is current when its version is one of the group's currentVersions (the job versions whose spec
 *   for the group equals today's: after a revert to version 3 as version 5, instances at 3 are current and
 *   those at 4 are not). Versions are compared by this, never by order.
 * - service, per group and slot 0…count-1: of the current tasks occupying the slot the newest version
 *   (then the highest id) stays, and of the old ones likewise; the other duplicates stop. Without a rollout
 *   a slot holding both keeps the current one, and an old occupant alone stops and a replacement starts at
 *   once (a destructive update). An empty slot starts an instance; the previous instance of the slot (its
 *   latest ended task by updatedAtMs) decides when: lost or killed, at once; failed or finished, after
 *   reschedule.delayMs * 2^(n-1), at most restartDelayMsMax, where n counts the slot's failed and finished
 *   tasks that ended within crashLoopWindowMs before nowMs (a crash loop slows down; one that ended long
 *   ago comes back at once). Policy `never`: a slot whose previous instance was lost, failed or finished
 *   stays empty (one that never had a task still starts). reschedule.attempts caps the reschedules after
 *   failures of a slot (a lost node is no failure). Live tasks in slots past count stop.
 * - service with a rollout (a deployment, see deployment.ts; batch and system ignore it): old instances
 *   are replaced a few at a time. The budget is maxParallel less the group's current occupants (slots
 *   0…count-1) the deployment has not judged healthy, and less its slots whose current instance failed
 *   since the deployment began (one lost with its node is no fault of the version): each replacement holds a share of it until it is healthy, so a
 *   bad version stops after maxParallel. While canaries are wanted and not promoted, the
 *   first `canary` slots (in slot order) that hold an old occupant and no current one get a canary beside
 *   it (canaries already running count), not limited by the budget, and nothing else is replaced (old
 *   instances stay, even beside healthy canaries). Otherwise, slot by slot: a slot holding both stops the
 *   old one once the current one is healthy; an old one alone, while the rollout is active and budget is
 *   left, is replaced (stop-first: stopped, and its replacement started as without a rollout; start-first:
 *   a replacement starts beside it, and it stops once that is healthy). A paused or failed rollout starts
 *   no replacement and no canary (an old instance beside a healthy one still stops). Empty slots start as
 *   without a rollout: the count is kept whatever the deployment's state.
 * - Only current tasks make a slot's history: a new spec starts afresh (at once, with its own attempts),
 *   and a slot finished or killed at an old spec runs again.
 * - batch: as service without a rollout (it never has one: a slot keeps its current occupant, or else its
 *   newest one), except that a slot finished (at a current version) is done for good; failed is
 *   rescheduled under policy `always` while attempts are left, else done as failed; lost is rescheduled at
 *   once unless the policy is `never` (then done as failed); killed (by a user) is done as failed.
 *   A task carries no record of who killed it, so a batch slot stopped by `job stop` or a lowered count
 *   is done as failed too, until a new spec runs it again.
 * - system, per group and eligible node: exactly one live instance pinned to the node (slot 0). One is
 *   started where none is: at once after lost, killed or nothing, with the service's backoff after failed
 *   or finished; a system job's instance always comes back while its node stays eligible (the reschedule
 *   policy and attempts are for placing elsewhere, which a pinned instance cannot). Instances pinned to a
 *   node no longer eligible stop, and none is ever started for such a node. Old versions are replaced as
 *   for service without a rollout (system jobs never have one).
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
  /** The job version at which this group's task spec last changed (named in reasons: "version 4"). */
  readonly specVersion: number;
  /**
   * The job versions at which this group's spec equals the current one: specVersion up to the job's version,
   * and after a revert also the versions it went back to. Instances at any other version are replaced.
   */
  readonly currentVersions: readonly number[];
  /** System jobs only: the ids of nodes eligible for this group now (up, not draining, matching constraints and driver). */
  readonly eligibleNodeIds: readonly string[];
  /** service only: the group's part of a deployment in progress (absent: replace old instances at once). */
  readonly rollout?: GroupRollout;
}

/** How a deployment lets the reconciler replace a service group's old instances (see deployment.ts). */
export interface GroupRollout {
  readonly maxParallel: number;
  readonly order: 'stop-first' | 'start-first';
  /** Canaries wanted before promotion (0: none). */
  readonly canary: number;
  readonly promoted: boolean;
  /** True while the deployment runs; false when paused or failed: nothing more is replaced (empty slots still start). */
  readonly active: boolean;
  /** Current-version tasks the deployment judged healthy. */
  readonly healthyTaskIds: ReadonlySet<string>;
  readonly canaryTaskIds: ReadonlySet<string>;
  /** When the deployment began: new instances that failed since hold their share of maxParallel. */
  readonly startedAtMs: number;
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
  /** The task id it replaces, if any (start-first: the old instance beside it, stopped once it is healthy). */
  readonly replaces?: string;
  /** A deployment's canary: started beside its slot's old instance, which stays until promotion. */
  readonly canary?: true;
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
  const isCurrent = currentTest(group);
  const occupants = new Map<number, InstanceTask[]>();
  const history = new Map<number, InstanceTask[]>();
  const hadOlder = new Set<number>();
  for (const task of tasks) {
    if (occupiesSlot(task)) {
      if (Number.isInteger(task.slot) && task.slot >= 0 && task.slot < count)
        appendTo(occupants, task.slot, task);
      else plan.stop.push({ taskId: task.id, reason: `count lowered to ${count}` });
    } else if (isCurrent(task)) appendTo(history, task.slot, task);
    else hadOlder.add(task.slot);
  }
  const slots: SlotState[] = [];
  for (let slot = 0; slot < count; slot++)
    slots.push({
      slot,
      occupants: occupants.get(slot) ?? [],
      past: history.get(slot) ?? [],
      hadOlder: hadOlder.has(slot),
    });
  if (input.type === 'service') planServiceSlots(input, group, slots, plan);
  else planBatchSlots(input, group, slots, plan);
}

interface SlotState {
  readonly slot: number;
  /** Its live tasks not being stopped. */
  readonly occupants: readonly InstanceTask[];
  /** Its ended (or stopping) current tasks. */
  readonly past: readonly InstanceTask[];
  /** Whether it had ended tasks of an old spec. */
  readonly hadOlder: boolean;
}

function planBatchSlots(
  input: ReconcileInput,
  group: ReconcileGroup,
  slots: readonly SlotState[],
  plan: GroupPlan,
): void {
  const isCurrent = currentTest(group);
  for (const { slot, occupants, past, hadOlder } of slots) {
    const kept = keepNewest(occupants, isCurrent, `slot ${slot}`, plan.stop);
    // A slot that finished at the current spec is done, whatever came after (a duplicate's kill).
    const finished = past.some((task) => task.state === 'finished');
    if (kept !== undefined) {
      if (isCurrent(kept)) continue;
      if (finished) {
        plan.stop.push({ taskId: kept.id, reason: `slot ${slot} already finished at this spec` });
        plan.done.push({ group: group.name, slot, outcome: 'finished' });
        continue;
      }
      replaceAtOnce(group, slot, kept, plan);
      continue;
    }
    if (finished) {
      plan.done.push({ group: group.name, slot, outcome: 'finished' });
      continue;
    }
    startEmpty(input, group, slot, past, hadOlder, plan);
  }
}

/** service: a slot may hold a current and an old occupant at once, while a rollout replaces the old. */
function planServiceSlots(
  input: ReconcileInput,
  group: ReconcileGroup,
  slots: readonly SlotState[],
  plan: GroupPlan,
): void {
  const isCurrent = currentTest(group);
  const { rollout } = group;
  const pairs = slots.map((state) => {
    const where = `slot ${state.slot}`;
    const { occupants } = state;
    const current = keepNewest(occupants.filter(isCurrent), isCurrent, where, plan.stop);
    const old = keepNewest(
      occupants.filter((task) => !isCurrent(task)),
      isCurrent,
      where,
      plan.stop,
    );
    return { ...state, current, old };
  });

  // Each current occupant not yet judged healthy holds one of maxParallel replacements in progress.
  let budget = 0;
  let canariesWanted = 0;
  const canaryPhase = rollout !== undefined && rollout.canary > 0 && !rollout.promoted;
  if (rollout !== undefined) {
    // A slot whose new instance failed since the rollout began holds its share too (until the deployment
    // judges it): otherwise a crashing version would free its share as it fails, and go on replacing.
    const failedSince = (past: readonly InstanceTask[]): boolean =>
      past.some(
        (task) =>
          task.state === 'failed' &&
          task.updatedAtMs >= rollout.startedAtMs &&
          !rollout.healthyTaskIds.has(task.id),
      );
    const pending = pairs.filter(
      ({ current, past }) =>
        (current !== undefined && !rollout.healthyTaskIds.has(current.id)) || failedSince(past),
    ).length;
    budget = rollout.maxParallel - pending;
    const canaries = pairs.filter(
      ({ current }) => current !== undefined && rollout.canaryTaskIds.has(current.id),
    ).length;
    if (canaryPhase && rollout.active) canariesWanted = rollout.canary - canaries;
  }

  for (const { slot, past, hadOlder, current, old } of pairs) {
    if (current !== undefined && old !== undefined) {
      // Without a rollout the old one goes at once; with one, once its successor proved healthy (and
      // canaries keep theirs until promotion).
      if (rollout === undefined || (!canaryPhase && rollout.healthyTaskIds.has(current.id)))
        plan.stop.push({ taskId: old.id, reason: `replaced by version ${group.specVersion}` });
      continue;
    }
    if (current !== undefined) continue;
    if (old === undefined) {
      startEmpty(input, group, slot, past, hadOlder, plan);
      continue;
    }
    if (rollout === undefined) {
      replaceAtOnce(group, slot, old, plan);
      continue;
    }
    if (canaryPhase) {
      if (canariesWanted <= 0) continue;
      canariesWanted--;
      plan.start.push({
        group: group.name,
        slot,
        notBeforeMs: null,
        reason: `canary for version ${group.specVersion} (beside ${old.id} at version ${old.version})`,
        canary: true,
      });
      continue;
    }
    if (!rollout.active || budget <= 0) continue;
    budget--;
    if (rollout.order === 'stop-first') {
      replaceAtOnce(group, slot, old, plan);
      continue;
    }
    plan.start.push({
      group: group.name,
      slot,
      notBeforeMs: null,
      reason: `version ${group.specVersion} (beside ${old.id} at version ${old.version}, until healthy)`,
      replaces: old.id,
    });
  }
}

/** A destructive update of one slot: its old occupant stops and a current instance starts at once. */
function replaceAtOnce(group: ReconcileGroup, slot: number, old: InstanceTask, plan: GroupPlan): void {
  plan.stop.push({ taskId: old.id, reason: `replaced by version ${group.specVersion}` });
  plan.start.push({
    group: group.name,
    slot,
    notBeforeMs: null,
    reason: `version ${group.specVersion} (replaces ${old.id} at version ${old.version})`,
    replaces: old.id,
  });
}

function startEmpty(
  input: ReconcileInput,
  group: ReconcileGroup,
  slot: number,
  past: readonly InstanceTask[],
  hadOlder: boolean,
  plan: GroupPlan,
): void {
  const next = nextInstance(input, group, past, hadOlder);
  if (next.kind === 'done') plan.done.push({ group: group.name, slot, outcome: next.outcome });
  else plan.start.push({ group: group.name, slot, ...next.start });
}

/** Whether a task runs the group's current spec (its version is one of currentVersions). */
function currentTest(group: ReconcileGroup): (task: InstanceTask) => boolean {
  const versions = new Set(group.currentVersions);
  return (task) => versions.has(task.version);
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
  const isCurrent = currentTest(group);
  const occupants = new Map<string, InstanceTask[]>();
  const history = new Map<string, InstanceTask[]>();
  const hadOlder = new Set<string>();
  for (const task of tasks) {
    if (occupiesSlot(task)) {
      if (task.nodeId !== null && eligibleSet.has(task.nodeId)) appendTo(occupants, task.nodeId, task);
      else plan.stop.push({ taskId: task.id, reason: 'node no longer eligible' });
    } else if (task.nodeId === null) continue;
    else if (isCurrent(task)) appendTo(history, task.nodeId, task);
    else hadOlder.add(task.nodeId);
  }

  for (const nodeId of eligible) {
    const kept = keepNewest(occupants.get(nodeId) ?? [], isCurrent, `node ${nodeId}`, plan.stop);
    if (kept !== undefined) {
      if (isCurrent(kept)) continue;
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

/**
 * The one of a slot's occupants to keep (a current one first, then the newest version, then the highest
 * id); the others are stopped.
 */
function keepNewest(
  occupants: readonly InstanceTask[],
  isCurrent: (task: InstanceTask) => boolean,
  where: string,
  stops: StopAction[],
): InstanceTask | undefined {
  const [kept, ...others] = [...occupants].sort(
    (a, b) => Number(isCurrent(b)) - Number(isCurrent(a)) || b.version - a.version || compareText(b.id, a.id),
  );
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
