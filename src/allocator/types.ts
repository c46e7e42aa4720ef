/**
 * The allocator's public data: what goes in (nodes, running and pending tasks, tenant and job policy) and
 * what comes out (a plan). Every field added after the first version is optional, with its default stated,
 * so a caller that knows only CPU, memory and equality constraints keeps working unchanged.
 */

/** An amount of each resource. Absent optional fields count as 0 (on a node: it has none of it). */
export interface Resources {
  readonly cpuMillis: number;
  readonly memoryBytes: number;
  /** Absent = 0: a node that reports no disk fits no task that asks for some. */
  readonly diskBytes?: number;
  /** Device counts by kind, e.g. `{ gpu: 2 }`; kinds not listed count 0. */
  readonly devices?: Readonly<Record<string, number>>;
}

/**
 * A hard rule on one node label. A node without the label fails `=`, `in` and `regex` and passes `!=` and
 * `notIn`. `regex` is a JavaScript pattern; it matches anywhere in the value unless anchored (`^…$`).
 */
export type LabelConstraint =
  | { readonly key: string; readonly operator: '='; readonly value: string }
  | { readonly key: string; readonly operator: '!='; readonly value: string }
  | { readonly key: string; readonly operator: 'in'; readonly values: readonly string[] }
  | { readonly key: string; readonly operator: 'notIn'; readonly values: readonly string[] }
  | { readonly key: string; readonly operator: 'regex'; readonly pattern: string };

/** A soft preference: nodes matching `constraint` score `weight` (-100..100, negative = avoid). */
export interface Affinity {
  readonly constraint: LabelConstraint;
  readonly weight: number;
}

export interface AllocatorNode {
  readonly id: string;
  /** What the node offers to tasks: its size minus what the shoal agent keeps for itself. */
  readonly capacity: Resources;
  /** What is free now: capacity minus every running task listed for this node (they are already counted). */
  readonly free: Resources;
  readonly labels: Readonly<Record<string, string>>;
  /** Drivers that are healthy on the node; a task goes only where its driver is. */
  readonly drivers: readonly string[];
  /** Ports taken on the node, by its running tasks and anything else. Default: none. */
  readonly portsInUse?: readonly number[];
  /** False while the node drains: its tasks keep running, nothing new goes there. Default true. */
  readonly schedulable?: boolean;
}

/** A pending task, waiting for a node. */
export interface AllocatorTask {
  readonly id: string;
  /** `priorityMin`–`priorityMax`, higher first. */
  readonly priority: number;
  /** FIFO order among equal priorities (the log index of the submission). */
  readonly submitIndex: number;
  readonly driver: string;
  readonly request: Resources;
  /** Labels the node must carry, key = value. */
  readonly constraints: Readonly<Record<string, string>>;
  /** More hard label rules (`!=`, `in`, `notIn`, `regex`, `=`), all of which must hold. Default none. */
  readonly labelConstraints?: readonly LabelConstraint[];
  /** The tenant, for fair sharing and quotas. Default `default`. */
  readonly namespace?: string;
  /** The job the task is a replica of: job caps, distinct nodes and spread count per job. Default none. */
  readonly job?: string;
  /**
   * Tasks sharing a group start together or not at all (a gang), at the priority and namespace of the
   * first in placement order (give them the same). A gang neither preempts nor holds nodes back.
   * Default: alone.
   */
  readonly group?: string;
  /**
   * The group's tasks go to one node together (a job group's co-located tasks), as well as starting
   * together. Give it to every member. Default false.
   */
  readonly colocated?: boolean;
  /** Ports the task needs on its node, by name (e.g. `{ http: 8080 }`). Default none. */
  readonly ports?: Readonly<Record<string, number>>;
  /**
   * Only to a node that runs no other task of `job` (running, or placed earlier in the plan). Give it to
   * every task of the job for "at most one per node". Default false.
   */
  readonly distinctNodes?: boolean;
  /** Soft label preferences; at most `affinitiesMax`. Default none. */
  readonly affinities?: readonly Affinity[];
  /** Spread the job's tasks evenly over the values of this node label (e.g. `zone`). Default none. */
  readonly spreadOver?: string;
  /** `binpack` (default) fills the first node that fits; `spread` picks the node with the most free CPU. */
  readonly packing?: 'binpack' | 'spread';
  /**
   * The node where lower-priority tasks were preempted for it (from an earlier plan's preemptions): it
   * waits there, the node held for it, while they exit, rather than preempting again elsewhere.
   */
  readonly nominatedNodeId?: string;
}

/** A task that holds resources on a node now (assigned, starting or running). */
export interface RunningTask {
  readonly id: string;
  readonly nodeId: string;
  readonly priority: number;
  readonly request: Resources;
  /** Default `default`. */
  readonly namespace?: string;
  /** Default none. */
  readonly job?: string;
  /** Default none. */
  readonly ports?: Readonly<Record<string, number>>;
  /** False for tasks that must never be preempted. Default true. */
  readonly preemptible?: boolean;
  /** Being killed (e.g. preempted): still holds its resources, will free them soon. Default false. */
  readonly terminating?: boolean;
}

export interface NamespacePolicy {
  readonly name: string;
  /** Share weight for fair sharing: a namespace with weight 2 gets twice the dominant share. Default 1. */
  readonly weight?: number;
  /** Most it may hold at once; absent fields (and device kinds) are unlimited. Default unlimited. */
  readonly quota?: Partial<Resources>;
}

export interface JobPolicy {
  readonly id: string;
  /** Most tasks of the job running (or placed) at once. */
  readonly runningMax: number;
}

export interface AllocatorInput {
  readonly nodes: readonly AllocatorNode[];
  readonly pending: readonly AllocatorTask[];
  /** Stop after this many placements (and preemptions) so one plan stays a bounded log entry. */
  readonly placementsMax: number;
  /** Tasks holding resources now; needed for preemption, fair shares, caps, spread and distinct nodes. */
  readonly running?: readonly RunningTask[];
  /** Weights and quotas; namespaces not listed have weight 1 and no quota. */
  readonly namespaces?: readonly NamespacePolicy[];
  /** Caps on running tasks per job; jobs not listed are unlimited. */
  readonly jobs?: readonly JobPolicy[];
  /**
   * A task may preempt only tasks at least this much lower in priority. Default
   * `preemptionPriorityGapDefault`; Infinity disables.
   */
  readonly preemptionPriorityGap?: number;
  /** Most nodes held back for blocked tasks in one plan. Default `reservationsMaxDefault`. */
  readonly reservationsMax?: number;
}

export interface Placement {
  readonly taskId: string;
  readonly nodeId: string;
}

/** A running task to kill so that `forTaskId` (which waits, nominated to `nodeId`) gets room. */
export interface Preemption {
  readonly taskId: string;
  readonly nodeId: string;
  readonly forTaskId: string;
}

/** A node held back for a blocked task: lower-ordered tasks may not use it in this plan. */
export interface Reservation {
  readonly taskId: string;
  readonly nodeId: string;
}

export interface Waiting {
  readonly taskId: string;
  readonly reason: string;
}

export interface Plan {
  readonly placements: Placement[];
  /** Pending tasks not placed, with why, in placement order (see `PlanOptions.waiting`). */
  readonly waiting: Waiting[];
  readonly preemptions: Preemption[];
  readonly reservations: Reservation[];
}

export interface PlanOptions {
  readonly placementsMax: number;
  /**
   * `all` (default): every pending task not placed, in placement order. `changed`: only tasks whose
   * reason differs from what this allocator reported before, which keeps a plan on a busy cluster small.
   */
  readonly waiting?: 'all' | 'changed';
  /** Called after each decision; benchmarks time it. Must not call back into the allocator. */
  readonly onDecision?: () => void;
}

export interface AllocatorOptions {
  /** Default `preemptionPriorityGapDefault`; Infinity disables preemption. */
  readonly preemptionPriorityGap?: number;
  /** Default `reservationsMaxDefault`. */
  readonly reservationsMax?: number;
}
