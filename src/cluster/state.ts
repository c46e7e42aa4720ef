/**
 * The replicated state machine: what the Raft log means. Every node applies the same committed commands
 * in the same order and reaches the same state. Pure: time comes inside commands (`atMs`, set by the
 * proposer), never from a clock here.
 */
import { assert } from '../shared/assert.ts';
import {
  isTerminal,
  restartDecision,
  type Task,
  type TaskDriver,
  type TaskSpec,
  type TaskState,
} from './task.ts';

export interface NodeResources {
  readonly cpuMillis: number;
  readonly memoryBytes: number;
}

export interface ClusterNode {
  readonly id: string;
  readonly name: string;
  /** host:port of its cluster listener, for humans. */
  readonly address: string;
  readonly capacity: NodeResources;
  readonly labels: Readonly<Record<string, string>>;
  /** Drivers that are healthy on the node; the allocator places a task only where its driver is. */
  readonly drivers: readonly TaskDriver[];
  status: 'up' | 'down';
  /** A draining node takes no new tasks, and its tasks are moved elsewhere. */
  draining: boolean;
  updatedAtMs: number;
}

export type NodeDescription = Omit<ClusterNode, 'status' | 'updatedAtMs' | 'draining'>;

export interface Assignment {
  readonly taskId: string;
  readonly nodeId: string;
}

export type Command =
  | { readonly type: 'submitTask'; readonly id: string; readonly spec: TaskSpec; readonly atMs: number }
  | {
      readonly type: 'assignTasks';
      readonly term: number;
      readonly assignments: readonly Assignment[];
      /** Why tasks the plan could not place still wait, shown by `shoal ps`. */
      readonly waiting: readonly { readonly taskId: string; readonly reason: string }[];
      readonly atMs: number;
    }
  | {
      readonly type: 'reportTask';
      readonly nodeId: string;
      readonly taskId: string;
      /** The run the report is about; a report about an earlier run of a restarted task is ignored. */
      readonly attempt: number;
      readonly state: TaskState;
      readonly exitCode: number | null;
      readonly reason: string | null;
      readonly atMs: number;
    }
  | { readonly type: 'killTask'; readonly taskId: string; readonly atMs: number }
  | { readonly type: 'upsertNode'; readonly node: NodeDescription; readonly atMs: number }
  | { readonly type: 'nodeDown'; readonly nodeId: string; readonly reason: string; readonly atMs: number }
  | { readonly type: 'drainNode'; readonly nodeId: string; readonly drain: boolean; readonly atMs: number };

export type ApplyResult =
  | { readonly ok: true; readonly taskId?: string }
  | { readonly ok: false; readonly code: 'NOT_FOUND' | 'CONFLICT'; readonly message: string };

interface StateSnapshot {
  readonly appliedIndex: number;
  readonly nodes: ClusterNode[];
  readonly tasks: Task[];
  readonly terminalOrder: string[];
}

/** Terminal tasks kept for `shoal ps` and `shoal logs`; older ones are forgotten so state stays bounded. */
export const terminalTasksRetainedMax = 10_000;
/** Live (non-terminal) tasks the cluster accepts; a submission beyond it is refused. */
export const liveTasksMax = 200_000;

/** Which observed state may follow which; reports that would go backwards are ignored. */
const stateOrder: Record<TaskState, number> = {
  pending: 0,
  assigned: 1,
  starting: 2,
  running: 3,
  finished: 4,
  failed: 4,
  killed: 4,
  lost: 4,
};

export class ClusterState {
  readonly tasks = new Map<string, Task>();
  readonly nodes = new Map<string, ClusterNode>();
  /** Resources held on each node by its assigned, starting and running tasks. */
  private readonly used = new Map<string, { cpuMillis: number; memoryBytes: number }>();
  private readonly pending = new Set<string>();
  /** Live tasks by the node they are assigned to, so an agent's view costs what runs there, not the cluster. */
  private readonly liveByNode = new Map<string, Set<string>>();
  private readonly terminalOrder: string[] = [];
  private liveCount = 0;
  appliedIndex = 0;

  apply(index: number, command: Command): ApplyResult {
    assert(index > this.appliedIndex, 'commands apply in log order');
    this.appliedIndex = index;
    switch (command.type) {
      case 'submitTask':
        return this.submit(index, command);
      case 'assignTasks':
        for (const assignment of command.assignments) this.assign(assignment, command.term, command.atMs);
        for (const { taskId, reason } of command.waiting) {
          const task = this.tasks.get(taskId);
          if (task?.state === 'pending') task.reason = reason;
        }
        return { ok: true };
      case 'reportTask':
        return this.report(command);
      case 'killTask':
        return this.kill(command.taskId, command.atMs);
      case 'upsertNode': {
        const existing = this.nodes.get(command.node.id);
        this.nodes.set(command.node.id, {
          ...command.node,
          status: 'up',
          draining: existing?.draining ?? false,
          updatedAtMs: command.atMs,
        });
        if (!existing) this.used.set(command.node.id, { cpuMillis: 0, memoryBytes: 0 });
        return { ok: true };
      }
      case 'nodeDown':
        return this.nodeDown(command.nodeId, command.reason, command.atMs);
      case 'drainNode':
        return this.drain(command.nodeId, command.drain, command.atMs);
    }
  }

  /** The whole state as JSON, for a Raft snapshot. Derived indexes are rebuilt on restore. */
  toSnapshot(): string {
    return JSON.stringify({
      appliedIndex: this.appliedIndex,
      nodes: [...this.nodes.values()],
      tasks: [...this.tasks.values()],
      terminalOrder: this.terminalOrder,
    } satisfies StateSnapshot);
  }

  /** Replaces this state with a snapshot's. */
  restore(data: string): void {
    const snapshot = JSON.parse(data) as StateSnapshot;
    this.tasks.clear();
    this.nodes.clear();
    this.used.clear();
    this.pending.clear();
    this.liveByNode.clear();
    this.terminalOrder.length = 0;
    this.liveCount = 0;
    this.appliedIndex = snapshot.appliedIndex;
    for (const node of snapshot.nodes) {
      this.nodes.set(node.id, node);
      this.used.set(node.id, { cpuMillis: 0, memoryBytes: 0 });
    }
    for (const task of snapshot.tasks) {
      this.tasks.set(task.id, task);
      if (isTerminal(task.state)) continue;
      this.liveCount++;
      if (task.state === 'pending') this.pending.add(task.id);
      else if (task.nodeId !== null) {
        this.hold(task.nodeId, task.spec, 1);
        this.track(task.nodeId, task.id, true);
      }
    }
    this.terminalOrder.push(...snapshot.terminalOrder);
  }

  /** Pending tasks in placement order: highest priority first, then oldest submission. */
  pendingTasks(): Task[] {
    const tasks: Task[] = [];
    for (const id of this.pending) {
      const task = this.tasks.get(id);
      if (task) tasks.push(task);
    }
    return tasks.sort((a, b) => b.spec.priority - a.spec.priority || a.submitIndex - b.submitIndex);
  }

  usedOn(nodeId: string): NodeResources {
    return this.used.get(nodeId) ?? { cpuMillis: 0, memoryBytes: 0 };
  }

  freeOn(nodeId: string): NodeResources {
    const node = this.nodes.get(nodeId);
    if (!node) return { cpuMillis: 0, memoryBytes: 0 };
    const used = this.usedOn(nodeId);
    return {
      cpuMillis: node.capacity.cpuMillis - used.cpuMillis,
      memoryBytes: node.capacity.memoryBytes - used.memoryBytes,
    };
  }

  /** Tasks the log assigns to a node that are not terminal. */
  liveTasksOn(nodeId: string): Task[] {
    const tasks: Task[] = [];
    for (const id of this.liveByNode.get(nodeId) ?? []) {
      const task = this.tasks.get(id);
      if (task) tasks.push(task);
    }
    return tasks;
  }

  private submit(index: number, command: Extract<Command, { type: 'submitTask' }>): ApplyResult {
    // Idempotent by id: a client retrying an unacknowledged submission does not create a second task.
    if (this.tasks.has(command.id)) return { ok: true, taskId: command.id };
    if (this.liveCount >= liveTasksMax) {
      return {
        ok: false,
        code: 'CONFLICT',
        message: `the cluster holds ${liveTasksMax} live tasks, its limit`,
      };
    }
    this.tasks.set(command.id, {
      id: command.id,
      spec: command.spec,
      submitIndex: index,
      submittedAtMs: command.atMs,
      desired: 'run',
      state: 'pending',
      nodeId: null,
      assignedTerm: null,
      attempt: 0,
      notBeforeMs: null,
      exitCode: null,
      reason: 'waiting for the allocator',
      updatedAtMs: command.atMs,
    });
    this.pending.add(command.id);
    this.liveCount++;
    return { ok: true, taskId: command.id };
  }

  /** The leader's plan is re-checked here, against the state it lands on; a stale placement is skipped. */
  private assign(assignment: Assignment, term: number, atMs: number): void {
    const task = this.tasks.get(assignment.taskId);
    const node = this.nodes.get(assignment.nodeId);
    if (!task || !node || task.state !== 'pending' || task.desired !== 'run' || node.status !== 'up') return;
    if (node.draining) return;
    if (!node.drivers.includes(task.spec.driver)) return;
    const free = this.freeOn(node.id);
    if (free.cpuMillis < task.spec.cpuMillis || free.memoryBytes < task.spec.memoryBytes) return;
    task.state = 'assigned';
    task.nodeId = node.id;
    task.assignedTerm = term;
    task.reason = null;
    task.updatedAtMs = atMs;
    this.pending.delete(task.id);
    this.hold(node.id, task.spec, 1);
    this.track(node.id, task.id, true);
  }

  private report(command: Extract<Command, { type: 'reportTask' }>): ApplyResult {
    const task = this.tasks.get(command.taskId);
    if (!task) return { ok: false, code: 'NOT_FOUND', message: `no task ${command.taskId}` };
    if (task.nodeId !== command.nodeId || task.attempt !== command.attempt || isTerminal(task.state)) {
      return { ok: true };
    }
    if (stateOrder[command.state] <= stateOrder[task.state]) return { ok: true };
    this.transition(task, command.state, command.atMs, command.reason, command.exitCode);
    return { ok: true };
  }

  private kill(taskId: string, atMs: number): ApplyResult {
    const task = this.tasks.get(taskId);
    if (!task) return { ok: false, code: 'NOT_FOUND', message: `no task ${taskId}` };
    if (isTerminal(task.state)) return { ok: true };
    task.desired = 'kill';
    task.updatedAtMs = atMs;
    if (task.state === 'pending') this.transition(task, 'killed', atMs, 'killed before it was placed', null);
    return { ok: true };
  }

  /**
   * Drains a node: no new placements there, and each live task on it is stopped and queued again
   * (desired `move`); the allocator then places them elsewhere, highest priority first.
   */
  private drain(nodeId: string, drain: boolean, atMs: number): ApplyResult {
    const node = this.nodes.get(nodeId);
    if (!node) return { ok: false, code: 'NOT_FOUND', message: `no node ${nodeId}` };
    node.draining = drain;
    node.updatedAtMs = atMs;
    if (!drain) return { ok: true };
    for (const task of this.liveTasksOn(nodeId)) {
      if (task.desired !== 'run') continue;
      task.desired = 'move';
      task.updatedAtMs = atMs;
    }
    return { ok: true };
  }

  private nodeDown(nodeId: string, reason: string, atMs: number): ApplyResult {
    const node = this.nodes.get(nodeId);
    if (!node) return { ok: false, code: 'NOT_FOUND', message: `no node ${nodeId}` };
    node.status = 'down';
    node.updatedAtMs = atMs;
    for (const task of this.liveTasksOn(nodeId)) this.transition(task, 'lost', atMs, reason, null);
    return { ok: true };
  }

  private transition(
    task: Task,
    state: TaskState,
    atMs: number,
    reason: string | null,
    exitCode: number | null,
  ): void {
    const wasHolding = task.nodeId !== null && !isTerminal(task.state) && task.state !== 'pending';
    task.state = state;
    task.updatedAtMs = atMs;
    task.reason = reason;
    if (exitCode !== null) task.exitCode = exitCode;
    if (!isTerminal(state)) return;
    if (wasHolding && task.nodeId !== null) {
      this.hold(task.nodeId, task.spec, -1);
      this.track(task.nodeId, task.id, false);
    }
    if (task.desired === 'move') {
      // Moved off a draining node: queue it again at once, as the same task.
      const node = this.nodes.get(task.nodeId ?? '');
      task.reason = `moved off ${node?.name ?? 'a draining node'}`;
      task.desired = 'run';
      task.state = 'pending';
      task.nodeId = null;
      task.assignedTerm = null;
      task.attempt++;
      task.notBeforeMs = null;
      this.pending.add(task.id);
      return;
    }
    const decision = task.desired === 'run' ? restartDecision(task.spec, task.attempt, state) : null;
    if (decision?.restart === true) {
      // Back to the queue for another run, after its backoff; it keeps its place in the FIFO order.
      const seconds = Math.round(decision.delayMs / 100) / 10;
      task.reason = `${state} (${reason ?? 'no reason'}); restart ${task.attempt + 1} in ${seconds} s`;
      task.state = 'pending';
      task.nodeId = null;
      task.assignedTerm = null;
      task.attempt++;
      task.notBeforeMs = atMs + decision.delayMs;
      this.pending.add(task.id);
      return;
    }
    this.pending.delete(task.id);
    this.liveCount--;
    this.terminalOrder.push(task.id);
    while (this.terminalOrder.length > terminalTasksRetainedMax) {
      const oldest = this.terminalOrder.shift();
      if (oldest !== undefined) this.tasks.delete(oldest);
    }
  }

  private track(nodeId: string, taskId: string, live: boolean): void {
    let ids = this.liveByNode.get(nodeId);
    if (!ids) {
      ids = new Set();
      this.liveByNode.set(nodeId, ids);
    }
    if (live) ids.add(taskId);
    else ids.delete(taskId);
  }

  private hold(nodeId: string, spec: TaskSpec, sign: 1 | -1): void {
    const used = this.used.get(nodeId) ?? { cpuMillis: 0, memoryBytes: 0 };
    used.cpuMillis += sign * spec.cpuMillis;
    used.memoryBytes += sign * spec.memoryBytes;
    assert(used.cpuMillis >= 0 && used.memoryBytes >= 0, 'node usage never goes negative');
    this.used.set(nodeId, used);
  }
}
