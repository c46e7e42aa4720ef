/**
 * The durable half: frameworks as the replicated state keeps them. Every node applies the same framework
 * commands in log order and holds the same records: who is registered (info, stream, failover clock), which
 * tasks are whose, and the status updates not yet acknowledged. The cluster state machine owns one registry,
 * calls `apply` for framework commands and `addTasks`/`recordStatus` while applying its own (a launch, a
 * task report), and snapshots it with the rest of the state.
 *
 * In: commands and calls with their times (`atMs`, set by the proposer; `nowMs` for the leader's queries).
 * Out: results whose effects the caller carries out (tasks to kill, an ERROR for a replaced stream, a stream
 * to close), and read-only answers (reconcile, expiries due, orphaned streams). Never touches offers (the
 * leader's volatile book, offers.ts), streams, timers or the clock.
 */
import { assert } from '../shared/assert.ts';
import {
  decodeRegistrySnapshot,
  type FrameworkCommand,
  type FrameworkRecord,
  type RegistrySnapshot,
} from './commands.ts';
import { FrameworkError } from './errors.ts';
import { compareIds } from './order.ts';
import {
  frameworksMax,
  idLengthMax,
  pendingUpdatesMax,
  reconcileTasksMax,
  statusMessageLengthMax,
  tasksPerFrameworkMax,
} from './limits.ts';
import {
  isTerminalState,
  type FrameworkInfo,
  type FrameworkTaskState,
  type SchedulerEvent,
  type StatusUpdate,
  type TaskStatus,
} from './types.ts';

/** What the caller must do once a command applied. */
export interface FrameworkEffects {
  /** Cluster task ids to kill: the framework is gone (expired or torn down). */
  readonly killTasks: readonly string[];
  /** Events for the shell to send (the leader only; followers drop them). */
  readonly events: readonly SchedulerEvent[];
  /** A stream to close after the events: replaced by a newer subscription, or its framework torn down. */
  readonly closeStreamId: string | null;
}

export type FrameworkApplyResult =
  | { readonly ok: true; readonly effects: FrameworkEffects }
  | { readonly ok: false; readonly error: FrameworkError };

/** A task the cluster launched for a framework. */
export interface FrameworkTaskLaunch {
  /** The framework's id for it. */
  readonly taskId: string;
  /** The cluster's id for it (the replicated task's). */
  readonly clusterTaskId: string;
  readonly nodeId: string;
}

/** A framework at a glance (`GET /v1/frameworks`, the leader's loops). */
export interface FrameworkSummary {
  readonly id: string;
  readonly info: FrameworkInfo;
  readonly registeredAtMs: number;
  readonly streamId: string | null;
  readonly disconnectedAtMs: number | null;
  /** When its failover timeout ends, while disconnected; null while connected. */
  readonly expiresAtMs: number | null;
  readonly taskCount: number;
  readonly pendingUpdateCount: number;
  readonly updatesDropped: number;
}

/** What KILL comes to: a cluster task to kill, and events for tasks the cluster does not know. */
export interface KillTarget {
  readonly clusterTaskId: string | null;
  readonly events: readonly SchedulerEvent[];
}

interface TaskEntry {
  readonly taskId: string;
  readonly clusterTaskId: string;
  status: TaskStatus;
}

interface Entry {
  readonly id: string;
  info: FrameworkInfo;
  readonly registeredAtMs: number;
  streamId: string | null;
  disconnectedAtMs: number | null;
  readonly tasks: Map<string, TaskEntry>;
  updates: StatusUpdate[];
  nextUpdateSeq: number;
  updatesDropped: number;
}

const noEffects: FrameworkEffects = { killTasks: [], events: [], closeStreamId: null };

export class FrameworkRegistry {
  private readonly frameworks = new Map<string, Entry>();
  /** Framework and framework task id by cluster task id, for reports that name the cluster's id. */
  private readonly owners = new Map<string, { readonly frameworkId: string; readonly taskId: string }>();

  apply(command: FrameworkCommand): FrameworkApplyResult {
    switch (command.type) {
      case 'subscribeFramework':
        return this.subscribe(command);
      case 'disconnectFramework': {
        const entry = this.frameworks.get(command.frameworkId);
        if (!entry) return failure('FRAMEWORK_UNKNOWN', unknownFramework(command.frameworkId));
        // A close that comes after a newer subscription (or a second close) changes nothing.
        if (entry.streamId !== command.streamId) return { ok: true, effects: noEffects };
        entry.streamId = null;
        entry.disconnectedAtMs = command.atMs;
        return { ok: true, effects: noEffects };
      }
      case 'expireFramework': {
        const entry = this.frameworks.get(command.frameworkId);
        if (!entry) return failure('FRAMEWORK_UNKNOWN', unknownFramework(command.frameworkId));
        const expiresAtMs = expiryOf(entry);
        if (expiresAtMs === null)
          return failure('FRAMEWORK_NOT_EXPIRED', `framework ${entry.id} is connected again`);
        if (expiresAtMs > command.atMs)
          return failure(
            'FRAMEWORK_NOT_EXPIRED',
            `framework ${entry.id}'s failover timeout ends at ${expiresAtMs} ms, after ${command.atMs} ms`,
          );
        return { ok: true, effects: this.remove(entry) };
      }
      case 'teardownFramework': {
        const entry = this.frameworks.get(command.frameworkId);
        if (!entry) return failure('FRAMEWORK_UNKNOWN', unknownFramework(command.frameworkId));
        return { ok: true, effects: this.remove(entry) };
      }
      case 'acknowledgeFrameworkUpdate': {
        const entry = this.frameworks.get(command.frameworkId);
        if (!entry) return failure('FRAMEWORK_UNKNOWN', unknownFramework(command.frameworkId));
        const index = entry.updates.findIndex(
          (update) => update.uuid === command.uuid && update.taskId === command.taskId,
        );
        if (index >= 0) {
          entry.updates.splice(index, 1);
          this.forgetIfDone(entry, command.taskId);
        }
        return { ok: true, effects: noEffects };
      }
    }
  }

  /**
   * Records tasks a launch command created for a framework: all or none. FRAMEWORK_UNKNOWN, TOO_MANY_TASKS
   * or TASK_DUPLICATE refuse the launch, which the cluster then must not apply.
   */
  addTasks(frameworkId: string, tasks: readonly FrameworkTaskLaunch[], atMs: number): FrameworkError | null {
    const entry = this.frameworks.get(frameworkId);
    if (!entry) return new FrameworkError('FRAMEWORK_UNKNOWN', unknownFramework(frameworkId));
    if (entry.tasks.size + tasks.length > tasksPerFrameworkMax)
      return new FrameworkError(
        'TOO_MANY_TASKS',
        `framework ${frameworkId} would hold more than ${tasksPerFrameworkMax} tasks`,
      );
    const seen = new Set<string>();
    for (const task of tasks) {
      if (seen.has(task.taskId) || entry.tasks.has(task.taskId))
        return new FrameworkError(
          'TASK_DUPLICATE',
          `framework ${frameworkId} has a task ${task.taskId} already`,
        );
      if (this.owners.has(task.clusterTaskId))
        return new FrameworkError(
          'TASK_DUPLICATE',
          `cluster task ${task.clusterTaskId} belongs to a framework already`,
        );
      seen.add(task.taskId);
    }
    for (const task of tasks) {
      entry.tasks.set(task.taskId, {
        taskId: task.taskId,
        clusterTaskId: task.clusterTaskId,
        status: { state: 'TASK_STAGING', message: '', nodeId: task.nodeId, atMs },
      });
      this.owners.set(task.clusterTaskId, { frameworkId, taskId: task.taskId });
    }
    return null;
  }

  /**
   * A framework task's new state, from the cluster's apply of a report, kill or loss: recorded as the
   * task's latest status and queued for delivery until acknowledged. Null (nothing recorded) when the task
   * is no framework's, has ended already, or its state and message did not change.
   */
  recordStatus(
    clusterTaskId: string,
    status: { readonly state: FrameworkTaskState; readonly message: string; readonly nodeId: string | null },
    atMs: number,
  ): StatusUpdate | null {
    const owner = this.owners.get(clusterTaskId);
    if (!owner) return null;
    const entry = this.frameworks.get(owner.frameworkId);
    const task = entry?.tasks.get(owner.taskId);
    assert(entry !== undefined && task !== undefined, 'an owned task is in its framework');
    const message = oneLine(status.message);
    if (isTerminalState(task.status.state)) return null;
    if (task.status.state === status.state && task.status.message === message) return null;
    task.status = { state: status.state, message, nodeId: status.nodeId, atMs };
    const update: StatusUpdate = {
      uuid: `u${entry.nextUpdateSeq}`,
      taskId: task.taskId,
      status: task.status,
    };
    entry.nextUpdateSeq++;
    entry.updates.push(update);
    if (entry.updates.length > pendingUpdatesMax) this.dropOne(entry);
    return update;
  }

  /**
   * RECONCILE: the latest status of each named task, or of all the framework's tasks when none is named
   * (implicit). Unknown tasks come back TASK_UNKNOWN (partition-aware frameworks) or TASK_LOST. Answers
   * carry no uuid: they are not acknowledged.
   */
  reconcile(frameworkId: string, taskIds: readonly string[], nowMs: number): SchedulerEvent[] {
    const entry = this.frameworks.get(frameworkId);
    if (!entry) throw new FrameworkError('FRAMEWORK_UNKNOWN', unknownFramework(frameworkId));
    if (taskIds.length > reconcileTasksMax)
      throw new FrameworkError('TOO_MANY_TASKS', `a reconciliation names at most ${reconcileTasksMax} tasks`);
    const answer = (taskId: string, status: TaskStatus): SchedulerEvent => ({
      type: 'UPDATE',
      frameworkId,
      taskId,
      status,
      uuid: null,
    });
    if (taskIds.length === 0)
      return [...entry.tasks.values()]
        .sort((a, b) => compareIds(a.taskId, b.taskId))
        .map((task) => answer(task.taskId, task.status));
    return taskIds.map((taskId) => {
      checkTaskId(taskId);
      const task = entry.tasks.get(taskId);
      return answer(taskId, task?.status ?? unknownStatus(entry, nowMs));
    });
  }

  /** KILL: the cluster task to kill (null when it ended or is unknown), and TASK_LOST/UNKNOWN if unknown. */
  killTarget(frameworkId: string, taskId: string, nowMs: number): KillTarget {
    const entry = this.frameworks.get(frameworkId);
    if (!entry) throw new FrameworkError('FRAMEWORK_UNKNOWN', unknownFramework(frameworkId));
    checkTaskId(taskId);
    const task = entry.tasks.get(taskId);
    if (!task)
      return {
        clusterTaskId: null,
        events: [{ type: 'UPDATE', frameworkId, taskId, status: unknownStatus(entry, nowMs), uuid: null }],
      };
    return { clusterTaskId: isTerminalState(task.status.state) ? null : task.clusterTaskId, events: [] };
  }

  has(frameworkId: string): boolean {
    return this.frameworks.has(frameworkId);
  }

  /** The framework holds a task with its id `taskId` (live, or ended and not yet acknowledged). */
  hasTask(frameworkId: string, taskId: string): boolean {
    return this.frameworks.get(frameworkId)?.tasks.has(taskId) ?? false;
  }

  get(frameworkId: string): FrameworkSummary | undefined {
    const entry = this.frameworks.get(frameworkId);
    return entry ? summaryOf(entry) : undefined;
  }

  /** Every framework, by id. */
  list(): FrameworkSummary[] {
    return [...this.frameworks.values()].sort((a, b) => compareIds(a.id, b.id)).map(summaryOf);
  }

  /** Whose task a cluster task is, if a framework's. */
  ownerOf(clusterTaskId: string): { readonly frameworkId: string; readonly taskId: string } | null {
    return this.owners.get(clusterTaskId) ?? null;
  }

  /** The cluster ids of the framework's tasks that have not ended (for its usage, and to kill). */
  liveClusterTaskIds(frameworkId: string): string[] {
    const entry = this.frameworks.get(frameworkId);
    if (!entry) return [];
    const ids: string[] = [];
    for (const task of entry.tasks.values())
      if (!isTerminalState(task.status.state)) ids.push(task.clusterTaskId);
    return ids;
  }

  /** Unacknowledged updates, oldest first (empty for an unknown framework): a copy, safe to hold across applies. */
  pendingUpdates(frameworkId: string): readonly StatusUpdate[] {
    return [...(this.frameworks.get(frameworkId)?.updates ?? [])];
  }

  /** Disconnected frameworks whose failover timeout has passed at nowMs: the leader proposes their expiry. */
  dueForExpiry(nowMs: number): string[] {
    const due: string[] = [];
    for (const entry of this.frameworks.values()) {
      const expiresAtMs = expiryOf(entry);
      if (expiresAtMs !== null && expiresAtMs <= nowMs) due.push(entry.id);
    }
    return due.sort(compareIds);
  }

  /** The earliest failover deadline, for the leader's timer; null when every framework is connected. */
  nextExpiryAtMs(): number | null {
    let next: number | null = null;
    for (const entry of this.frameworks.values()) {
      const expiresAtMs = expiryOf(entry);
      if (expiresAtMs !== null && (next === null || expiresAtMs < next)) next = expiresAtMs;
    }
    return next;
  }

  /**
   * Frameworks recorded as connected through a stream this leader does not hold: after a leader change, all
   * of them. The leader proposes disconnectFramework for each, which starts its failover clock.
   */
  orphans(liveStreamIds: ReadonlySet<string>): { frameworkId: string; streamId: string }[] {
    const found: { frameworkId: string; streamId: string }[] = [];
    for (const entry of this.frameworks.values())
      if (entry.streamId !== null && !liveStreamIds.has(entry.streamId))
        found.push({ frameworkId: entry.id, streamId: entry.streamId });
    return found.sort((a, b) => compareIds(a.frameworkId, b.frameworkId));
  }

  toSnapshot(): RegistrySnapshot {
    return {
      frameworks: [...this.frameworks.values()]
        .sort((a, b) => compareIds(a.id, b.id))
        .map((entry): FrameworkRecord => ({
          id: entry.id,
          info: entry.info,
          registeredAtMs: entry.registeredAtMs,
          streamId: entry.streamId,
          disconnectedAtMs: entry.disconnectedAtMs,
          tasks: [...entry.tasks.values()].map((task) => ({ ...task })),
          updates: [...entry.updates],
          nextUpdateSeq: entry.nextUpdateSeq,
          updatesDropped: entry.updatesDropped,
        })),
    };
  }

  /** Replaces the registry with a snapshot's, validated (SNAPSHOT_INVALID, and the registry unchanged). */
  restore(value: unknown): void {
    const snapshot = decodeRegistrySnapshot(value);
    const frameworks = new Map<string, Entry>();
    const owners = new Map<string, { frameworkId: string; taskId: string }>();
    const invalid = (message: string): FrameworkError => new FrameworkError('SNAPSHOT_INVALID', message);
    if (snapshot.frameworks.length > frameworksMax)
      throw invalid(`frameworks snapshot holds more than ${frameworksMax} frameworks`);
    for (const record of snapshot.frameworks) {
      if (frameworks.has(record.id)) throw invalid(`frameworks snapshot lists ${record.id} twice`);
      if ((record.streamId === null) === (record.disconnectedAtMs === null))
        throw invalid(`framework ${record.id} must have either a stream or a disconnection time`);
      const tasks = new Map<string, TaskEntry>();
      for (const task of record.tasks) {
        if (tasks.has(task.taskId) || owners.has(task.clusterTaskId))
          throw invalid(`framework ${record.id}'s task ${task.taskId} appears twice`);
        tasks.set(task.taskId, { ...task });
        owners.set(task.clusterTaskId, { frameworkId: record.id, taskId: task.taskId });
      }
      for (const update of record.updates)
        if (!tasks.has(update.taskId))
          throw invalid(
            `framework ${record.id} has an update for task ${update.taskId}, which it does not hold`,
          );
      frameworks.set(record.id, {
        ...record,
        tasks,
        updates: [...record.updates],
      });
    }
    this.frameworks.clear();
    this.owners.clear();
    for (const [id, entry] of frameworks) this.frameworks.set(id, entry);
    for (const [id, owner] of owners) this.owners.set(id, owner);
  }

  private subscribe(
    command: Extract<FrameworkCommand, { type: 'subscribeFramework' }>,
  ): FrameworkApplyResult {
    const existing = this.frameworks.get(command.frameworkId);
    if (!command.resubscribe) {
      // The same proposal committed twice: the first made the framework.
      if (existing?.streamId === command.streamId) return { ok: true, effects: noEffects };
      if (existing)
        return failure('FRAMEWORK_EXISTS', `framework id ${command.frameworkId} is taken; subscribe again`);
      if (this.frameworks.size >= frameworksMax)
        return failure('FRAMEWORKS_FULL', `the cluster holds ${frameworksMax} frameworks, its most`);
      this.frameworks.set(command.frameworkId, {
        id: command.frameworkId,
        info: command.info,
        registeredAtMs: command.atMs,
        streamId: command.streamId,
        disconnectedAtMs: null,
        tasks: new Map(),
        updates: [],
        nextUpdateSeq: 0,
        updatesDropped: 0,
      });
      return { ok: true, effects: noEffects };
    }
    if (!existing)
      return failure(
        'FRAMEWORK_UNKNOWN',
        `${unknownFramework(command.frameworkId)}; subscribe without an id to register anew`,
      );
    for (const field of ['role', 'user'] as const)
      if (existing.info[field] !== command.info[field])
        return failure(
          'FRAMEWORK_MISMATCH',
          `framework ${existing.id} runs as ${field} ${existing.info[field]}; a re-subscription cannot change it to ${command.info[field]}`,
        );
    const older = existing.streamId;
    existing.info = command.info;
    existing.streamId = command.streamId;
    existing.disconnectedAtMs = null;
    if (older === null || older === command.streamId) return { ok: true, effects: noEffects };
    return {
      ok: true,
      effects: {
        killTasks: [],
        events: [
          {
            type: 'ERROR',
            frameworkId: existing.id,
            streamId: older,
            message: 'framework failed over: a newer subscription replaced this stream',
          },
        ],
        closeStreamId: older,
      },
    };
  }

  /** Removes a framework; its live tasks are to be killed. */
  private remove(entry: Entry): FrameworkEffects {
    const killTasks: string[] = [];
    for (const task of entry.tasks.values()) {
      if (!isTerminalState(task.status.state)) killTasks.push(task.clusterTaskId);
      this.owners.delete(task.clusterTaskId);
    }
    this.frameworks.delete(entry.id);
    return { killTasks, events: [], closeStreamId: entry.streamId };
  }

  /** An ended task leaves once none of its updates waits for acknowledgement. */
  private forgetIfDone(entry: Entry, taskId: string): void {
    const task = entry.tasks.get(taskId);
    if (!task || !isTerminalState(task.status.state)) return;
    if (entry.updates.some((update) => update.taskId === taskId)) return;
    entry.tasks.delete(taskId);
    this.owners.delete(task.clusterTaskId);
  }

  /** Over pendingUpdatesMax: the oldest superseded update, else the oldest of a live task, else the oldest. */
  private dropOne(entry: Entry): void {
    const lastIndex = new Map<string, number>();
    entry.updates.forEach((update, i) => lastIndex.set(update.taskId, i));
    let victim = entry.updates.findIndex((update, i) => (lastIndex.get(update.taskId) ?? i) > i);
    if (victim < 0) victim = entry.updates.findIndex((update) => !isTerminalState(update.status.state));
    if (victim < 0) victim = 0;
    const [dropped] = entry.updates.splice(victim, 1);
    assert(dropped !== undefined, 'a full queue has an update to drop');
    entry.updatesDropped++;
    this.forgetIfDone(entry, dropped.taskId);
  }
}

function failure(code: FrameworkError['frameworkCode'], message: string): FrameworkApplyResult {
  return { ok: false, error: new FrameworkError(code, message) };
}

function unknownFramework(id: string): string {
  return `framework ${id} is not registered (never was, torn down, or its failover timeout passed)`;
}

function expiryOf(entry: Entry): number | null {
  return entry.disconnectedAtMs === null ? null : entry.disconnectedAtMs + entry.info.failoverTimeoutMs;
}

function summaryOf(entry: Entry): FrameworkSummary {
  return {
    id: entry.id,
    info: entry.info,
    registeredAtMs: entry.registeredAtMs,
    streamId: entry.streamId,
    disconnectedAtMs: entry.disconnectedAtMs,
    expiresAtMs: expiryOf(entry),
    taskCount: entry.tasks.size,
    pendingUpdateCount: entry.updates.length,
    updatesDropped: entry.updatesDropped,
  };
}

function unknownStatus(entry: Entry, nowMs: number): TaskStatus {
  return {
    state: entry.info.partitionAware ? 'TASK_UNKNOWN' : 'TASK_LOST',
    message: 'the cluster does not know this task (never launched, or ended and acknowledged)',
    nodeId: null,
    atMs: nowMs,
  };
}

function checkTaskId(taskId: string): void {
  if (taskId.length === 0 || taskId.length > idLengthMax)
    throw new FrameworkError('TASK_INVALID', `task ids are 1–${idLengthMax} characters`);
}

function oneLine(message: string): string {
  const line = message.replace(/\s*\n\s*/g, ' ');
  return line.length > statusMessageLengthMax ? `${line.slice(0, statusMessageLengthMax - 1)}…` : line;
}
