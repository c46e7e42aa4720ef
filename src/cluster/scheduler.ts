/**
 * The leader's allocator, kept in step with the committed state. ClusterState tells it every change as it
 * is applied (StateObserver), so a plan costs work in proportion to what changed since the last one, not
 * to the size of the cluster. Pure: time comes in as arguments, liveness through a callback.
 *
 * Safety does not rest on this mirror: every placement and preemption is checked again when its entry is
 * applied. If the mirror ever disagrees with the state (an allocator assertion fails), it is rebuilt from
 * the state before the next plan; it is also rebuilt now and then as a matter of hygiene.
 */
import { errorMessage } from '../shared/errors.ts';
import {
  Allocator,
  type AllocatorNode,
  type AllocatorTask,
  type NamespacePolicy,
  type Plan,
  type Resources,
  type RunningTask,
} from '../allocator/index.ts';
import type { ClusterNode } from './command.ts';
import type { ClusterState, StateObserver } from './state.ts';
import { dynamicPortRangeDefault, taskConstraints, type NamespacePolicySpec, type Task } from './task.ts';

export interface SchedulerOptions {
  /** A task may preempt only tasks at least this much lower in priority. */
  readonly preemptionPriorityGap: number;
  /** Whether membership believes the node alive; a node that is not gets no new tasks. */
  readonly isAlive: (nodeId: string) => boolean;
  /** Rebuild from the state at least this often, whatever happens. */
  readonly rebuildIntervalMs: number;
  /**
   * Told why, each time the mirror is found out of step with the state (it is rebuilt from every task
   * next, which costs seconds at hundreds of thousands of tasks): a bug worth a log line.
   */
  readonly onOutOfStep?: (reason: string) => void;
}

/** Room on a node held outside the log (a framework's offer), as the allocator counts it. */
export interface Hold {
  readonly nodeId: string;
  readonly priority: number;
  readonly namespace: string;
  readonly request: Resources;
}

export class Scheduler implements StateObserver {
  private allocator: Allocator | null = null;
  /** Pending tasks still in their restart backoff, kept out of the allocator until their time. */
  private readonly deferred = new Map<string, number>();
  /** Nodes' liveness as last given to the allocator. */
  private readonly aliveAsKnown = new Map<string, boolean>();
  /** Running-caps already told to the allocator, by job. */
  private readonly jobCaps = new Map<string, number>();
  private builtAtMs = 0;
  private broken = false;
  /**
   * Room held outside the log, by id: frameworks' outstanding offers, which count as allocated (so a plan
   * never places on offered room). In the allocator as running tasks no plan may preempt.
   */
  private holds = new Map<string, Hold>();
  /** How many times the mirror was found out of step and rebuilt (for tests and status). */
  rebuildsAfterError = 0;

  private readonly state: ClusterState;
  private readonly options: SchedulerOptions;

  constructor(state: ClusterState, options: SchedulerOptions) {
    this.state = state;
    this.options = options;
  }

  /** Plans from the committed state; `changed` reports only waiting reasons that changed. */
  plan(nowMs: number, placementsMax: number): Plan {
    if (this.allocator === null || this.broken || nowMs - this.builtAtMs >= this.options.rebuildIntervalMs) {
      this.rebuild(nowMs);
    }
    this.guard(() => {
      this.releaseDue(nowMs);
      this.refreshLiveness();
    });
    if (this.broken) this.rebuild(nowMs);
    const allocator = this.allocator;
    if (!allocator) return { placements: [], waiting: [], preemptions: [], reservations: [] };
    try {
      return allocator.plan({ placementsMax, waiting: 'changed' });
    } catch (error) {
      this.markBroken(error);
      throw error;
    }
  }

  /**
   * The room held outside the log now (frameworks' offers), replacing what was held before: each enters the
   * allocator as a task placed on its node that no plan preempts (its room consumed), and leaves it when it
   * is no longer in the map (its room given back).
   */
  setHolds(holds: ReadonlyMap<string, Hold>): void {
    const before = this.holds;
    this.holds = new Map(holds);
    this.guard((allocator) => {
      for (const [id, hold] of before) {
        const now = holds.get(id);
        if (now === undefined || now.nodeId !== hold.nodeId) allocator.taskEnded(id);
      }
      for (const [id, hold] of holds) {
        const was = before.get(id);
        if (was === undefined || was.nodeId !== hold.nodeId) this.addHold(allocator, id, hold);
      }
    });
  }

  private addHold(allocator: Allocator, id: string, hold: Hold): void {
    if (this.state.nodes.get(hold.nodeId)?.status !== 'up') return;
    allocator.addPending({
      id,
      priority: hold.priority,
      submitIndex: 0,
      driver: 'exec',
      request: hold.request,
      constraints: {},
      namespace: hold.namespace,
    });
    allocator.taskPlaced(id, hold.nodeId, false);
  }

  /** When the earliest task in backoff may be placed, or null. */
  nextDueMs(): number | null {
    let earliest: number | null = null;
    for (const dueMs of this.deferred.values()) if (earliest === null || dueMs < earliest) earliest = dueMs;
    return earliest;
  }

  /** A placement of a committed plan was refused as stale: report its reason again next time. */
  unplaced(taskId: string): void {
    this.guard((allocator) => allocator.unplaced(taskId));
  }

  /**
   * Builds the mirror now if there is none (a voter keeps one warm while it follows, so that when it comes
   * to lead it plans at once instead of stalling on a rebuild of every task: 1.5 s at 100,000 tasks, an
   * election timeout several times over, which deposed each new leader in turn).
   */
  warm(nowMs: number): void {
    if (this.allocator === null || this.broken) this.rebuild(nowMs);
  }

  /** This node now leads: the periodic rebuild counts from here, not in the first moments of a term. */
  leading(nowMs: number): void {
    if (this.allocator !== null) this.builtAtMs = Math.max(this.builtAtMs, nowMs);
  }

  /** Forget everything (leadership lost); the next plan rebuilds. */
  reset(): void {
    this.allocator = null;
    this.deferred.clear();
    this.aliveAsKnown.clear();
    this.jobCaps.clear();
  }

  // ---- StateObserver -------------------------------------------------------------------------------

  taskPending(task: Task): void {
    if (task.notBeforeMs !== null) {
      this.deferred.set(task.id, task.notBeforeMs);
      return;
    }
    this.guard((allocator) => this.addPending(allocator, task));
  }

  taskPlaced(task: Task): void {
    const nodeId = task.nodeId;
    if (nodeId === null) return;
    // Still in its restart backoff here, placed by a plan made elsewhere: a follower never plans, so it
    // never releases backoffs into its mirror (and a new leader may apply its predecessor's plans).
    const deferred = this.deferred.delete(task.id);
    this.guard((allocator) => {
      if (deferred) this.addPending(allocator, task);
      allocator.taskPlaced(task.id, nodeId, task.spec.preemptible ?? true);
    });
  }

  taskReleased(task: Task): void {
    if (this.deferred.delete(task.id)) return;
    this.guard((allocator) => allocator.taskEnded(task.id));
  }

  taskTerminating(task: Task): void {
    this.guard((allocator) => allocator.setTerminating(task.id));
  }

  taskNominated(task: Task): void {
    if (this.deferred.has(task.id)) return;
    this.guard((allocator) => allocator.nominate(task.id, task.nominatedNodeId ?? null));
  }

  nodeChanged(node: ClusterNode): void {
    this.guard((allocator) => this.addNode(allocator, node));
  }

  namespaceChanged(policy: NamespacePolicySpec): void {
    this.guard((allocator) => allocator.setNamespace(toNamespacePolicy(policy)));
  }

  restored(): void {
    this.allocator = null;
  }

  // ---- building --------------------------------------------------------------------------------------

  private rebuild(nowMs: number): void {
    const allocator = new Allocator({ preemptionPriorityGap: this.options.preemptionPriorityGap });
    this.allocator = allocator;
    this.broken = false;
    this.builtAtMs = nowMs;
    this.deferred.clear();
    this.aliveAsKnown.clear();
    this.jobCaps.clear();
    for (const policy of this.state.namespaces.values()) allocator.setNamespace(toNamespacePolicy(policy));
    for (const node of this.state.nodes.values()) this.addNode(allocator, node);
    for (const node of this.state.nodes.values()) {
      for (const task of this.state.liveTasksOn(node.id)) {
        if (task.state !== 'pending') allocator.addRunning(toRunningTask(task, node.id));
      }
    }
    for (const task of this.state.pendingTasks()) {
      if (task.notBeforeMs !== null && task.notBeforeMs > nowMs) this.deferred.set(task.id, task.notBeforeMs);
      else this.addPending(allocator, task);
    }
    for (const [id, hold] of this.holds) this.addHold(allocator, id, hold);
  }

  private addNode(allocator: Allocator, node: ClusterNode): void {
    if (node.status === 'down') {
      allocator.removeNode(node.id);
      this.aliveAsKnown.delete(node.id);
      return;
    }
    const alive = this.options.isAlive(node.id);
    this.aliveAsKnown.set(node.id, alive);
    allocator.addNode(this.toAllocatorNode(node, alive));
  }

  private addPending(allocator: Allocator, task: Task): void {
    const spec = task.spec;
    if (spec.job !== undefined && spec.jobRunningMax !== undefined) {
      if (this.jobCaps.get(spec.job) !== spec.jobRunningMax) {
        this.jobCaps.set(spec.job, spec.jobRunningMax);
        allocator.setJob({ id: spec.job, runningMax: spec.jobRunningMax });
      }
    }
    allocator.addPending(toAllocatorTask(task));
  }

  private toAllocatorNode(node: ClusterNode, alive: boolean): AllocatorNode {
    const range = node.dynamicPorts ?? dynamicPortRangeDefault;
    const rangeSize = range.max - range.min + 1;
    const free = this.state.freeOn(node.id);
    return {
      id: node.id,
      capacity: {
        ...node.capacity,
        devices: { ...node.capacity.devices, [dynamicPortsKind]: rangeSize },
      },
      free: {
        ...free,
        devices: { ...free.devices, [dynamicPortsKind]: rangeSize - this.state.dynamicPortsHeldOn(node.id) },
      },
      labels: node.labels,
      drivers: node.drivers,
      portsInUse: this.state.portsInUseOn(node.id),
      schedulable: alive && !node.draining,
    };
  }

  /** Tasks whose backoff has run out join the queue. */
  private releaseDue(nowMs: number): void {
    const allocator = this.allocator;
    if (!allocator) return;
    for (const [taskId, dueMs] of this.deferred) {
      if (dueMs > nowMs) continue;
      this.deferred.delete(taskId);
      const task = this.state.tasks.get(taskId);
      if (task?.state === 'pending') this.addPending(allocator, task);
    }
  }

  /** Nodes whose membership state changed since the allocator last heard of them. */
  private refreshLiveness(): void {
    const allocator = this.allocator;
    if (!allocator) return;
    for (const [nodeId, knownAlive] of this.aliveAsKnown) {
      if (this.options.isAlive(nodeId) === knownAlive) continue;
      const node = this.state.nodes.get(nodeId);
      if (node) this.addNode(allocator, node);
    }
  }

  private guard(action: (allocator: Allocator) => void): void {
    if (!this.allocator || this.broken) return;
    try {
      action(this.allocator);
    } catch (error) {
      this.markBroken(error);
    }
  }

  private markBroken(error: unknown): void {
    this.broken = true;
    this.rebuildsAfterError++;
    this.options.onOutOfStep?.(errorMessage(error));
  }
}

/**
 * The allocator counts a node's dynamic ports like a device kind: the range's size on every node, one per
 * dynamic port a task asks for. (Which port a task gets is the state's choice when it applies the placement.)
 * The name is no valid device kind, so it cannot meet one an operator declares.
 */
export const dynamicPortsKind = 'dynamic ports';

/** What a task holds on its node, in the allocator's terms. */
function requestOf(spec: Task['spec']): Resources {
  const dynamicPorts = spec.dynamicPorts?.length ?? 0;
  const devices = dynamicPorts === 0 ? spec.devices : { ...spec.devices, [dynamicPortsKind]: dynamicPorts };
  return {
    cpuMillis: spec.cpuMillis,
    memoryBytes: spec.memoryBytes,
    ...(spec.diskBytes === undefined ? {} : { diskBytes: spec.diskBytes }),
    ...(devices === undefined ? {} : { devices }),
  };
}

export function toAllocatorTask(task: Task): AllocatorTask {
  const spec = task.spec;
  return {
    id: task.id,
    priority: spec.priority,
    submitIndex: task.submitIndex,
    driver: spec.driver,
    request: requestOf(spec),
    constraints: taskConstraints(spec),
    ...(spec.labelConstraints === undefined ? {} : { labelConstraints: spec.labelConstraints }),
    ...(spec.namespace === undefined ? {} : { namespace: spec.namespace }),
    ...(spec.job === undefined ? {} : { job: spec.job }),
    ...(spec.group === undefined ? {} : { group: spec.group }),
    ...(spec.colocated === true ? { colocated: true } : {}),
    ...(spec.ports === undefined ? {} : { ports: spec.ports }),
    ...(spec.distinctNodes === undefined ? {} : { distinctNodes: spec.distinctNodes }),
    ...(spec.affinities === undefined ? {} : { affinities: spec.affinities }),
    ...(spec.spreadOver === undefined ? {} : { spreadOver: spec.spreadOver }),
    ...(spec.packing === undefined ? {} : { packing: spec.packing }),
    ...(task.nominatedNodeId === undefined ? {} : { nominatedNodeId: task.nominatedNodeId }),
  };
}

export function toRunningTask(task: Task, nodeId: string): RunningTask {
  const spec = task.spec;
  return {
    id: task.id,
    nodeId,
    priority: spec.priority,
    request: requestOf(spec),
    ...(spec.namespace === undefined ? {} : { namespace: spec.namespace }),
    ...(spec.job === undefined ? {} : { job: spec.job }),
    ...(spec.ports === undefined ? {} : { ports: spec.ports }),
    preemptible: spec.preemptible ?? true,
    terminating: task.desired !== 'run',
  };
}

export function toNamespacePolicy(policy: NamespacePolicySpec): NamespacePolicy {
  const quota = policy.quota;
  if (quota === null) return { name: policy.name, weight: policy.weight };
  return {
    name: policy.name,
    weight: policy.weight,
    quota: {
      ...(quota.cpuMillis === undefined ? {} : { cpuMillis: quota.cpuMillis }),
      ...(quota.memoryBytes === undefined ? {} : { memoryBytes: quota.memoryBytes }),
      ...(quota.diskBytes === undefined ? {} : { diskBytes: quota.diskBytes }),
      ...(quota.devices === undefined ? {} : { devices: quota.devices }),
    },
  };
}
