/**
 * The allocator's internal records: what it keeps between plans for each node, running task, pending
 * task, namespace, job, shape, spec and queue, the memos a search leaves behind, and one plan's pass. Data
 * only, plus three small helpers over it; no policy (that is allocator.ts, which this file never imports).
 * In: the public types (types.ts), label and resource encodings, the node index type. Out: the record
 * types, `headOf` (a queue's next task), `addPort` and `addCount` (counts kept in maps).
 */
import type { CompiledConstraint, Labels } from './labels.ts';
import type { Vector } from './resources.ts';
import type { Near, NodeTree } from './tree.ts';
import type { AllocatorNode, AllocatorTask, Placement, Preemption, Reservation, Resources } from './types.ts';

export interface NodeEntry {
  readonly id: string;
  source: AllocatorNode;
  labels: Labels;
  drivers: ReadonlySet<string>;
  schedulable: boolean;
  capacity: Vector;
  free: Vector;
  /** Held by tasks being killed: free soon. */
  terminating: Vector;
  /** Tasks that may be preempted (not terminating, not evicted in this pass), by priority then id. */
  readonly victims: RunningEntry[];
  /**
   * Running sums over `victims` (entry i, of `dimensions` values, is what the first i hold), then one
   * more entry: the most any single victim holds, per dimension. Null when stale.
   */
  victimSums: Float64Array | null;
  /** Port → how many holders. */
  readonly ports: Map<number, number>;
  readonly running: Set<RunningEntry>;
  /** Rank by id; leaf order in every tree. -1 until the next rebuild. */
  slot: number;
  trees: NodeTree[];
  /** The pass that holds this node back (for a reservation or a preemption). */
  reservedPass: number;
  /** Dedupes nodes while collecting candidates. */
  stamp: number;
  /** Counts changes (touches), so remembered facts about the node can tell they are stale. */
  version: number;
}

export interface RunningEntry {
  readonly id: string;
  readonly requestSource: Resources;
  request: Vector;
  node: NodeEntry | null;
  readonly priority: number;
  readonly namespace: NamespaceEntry;
  readonly job: JobEntry | null;
  readonly ports: readonly number[];
  readonly preemptible: boolean;
  terminating: boolean;
  evictedPass: number;
}

export interface PendingEntry {
  readonly id: string;
  readonly task: AllocatorTask;
  readonly priority: number;
  readonly submitIndex: number;
  readonly namespace: NamespaceEntry;
  readonly job: JobEntry | null;
  readonly ports: readonly number[];
  readonly spec: Spec;
  readonly queue: Queue;
  removed: boolean;
  /** The pass that placed it (or made it preempt, when `preemptingOn` is set). */
  decidedPass: number;
  preemptingOn: NodeEntry | null;
  victims: number;
  reportedReason: string | null;
}

export interface NamespaceEntry {
  readonly name: string;
  weight: number;
  quotaSource: Partial<Resources> | undefined;
  quota: Vector;
  usage: Vector;
}

export interface JobEntry {
  readonly id: string;
  runningMax: number;
  hasPolicy: boolean;
  /** Running (anywhere, even on lost nodes) plus placed in the current pass. */
  running: number;
  readonly nodes: Map<NodeEntry, number>;
  /** Spread label → value → tasks of the job on nodes with that value. */
  readonly spread: Map<string, Map<string, number>>;
  readonly pending: Set<PendingEntry>;
}

/**
 * What a search learnt, valid while the node log still reaches back to `seq`: at `seq`, no eligible node
 * outside `maybe` could take the shape (held back or not). Nodes touched since may have changed; the rest
 * have not, so the next search looks at `maybe` and the touched nodes only.
 */
export interface FitMemo {
  readonly generation: number;
  seq: number;
  maybe: readonly NodeEntry[];
}

export const noNodes: readonly NodeEntry[] = [];

export interface NearEntry {
  readonly node: NodeEntry;
  readonly value: number;
  readonly leaf: number;
}

/**
 * The nodes nearest to fitting the shape at `seq`, ignoring holds: every eligible node not listed was
 * after `bound` (null: the list is every candidate). Holds change within a plan; nearness does not.
 */
export interface NearestMemo {
  readonly generation: number;
  seq: number;
  readonly entries: NearEntry[];
  readonly bound: Near | null;
}

/** A node where one victim would make room for a shape, and that victim's priority. */
export interface SingleEntry {
  readonly node: NodeEntry;
  readonly priority: number;
  /** The node's version when found: the entry speaks for the node only while it is unchanged. */
  readonly version: number;
}

/**
 * Like FitMemo, for preemption at one priority threshold: `maybe` holds every node (held or not) where
 * some victims would make room, in node order; `singles` those where one victim would, by its priority
 * then node order (entries for nodes changed since are stale and skipped).
 */
export interface PreemptMemo {
  readonly generation: number;
  /** Updated in place, like the lists: a busy cluster preempts often and the lists are long. */
  seq: number;
  readonly maybe: NodeEntry[];
  readonly maybeSet: Set<NodeEntry>;
  singles: SingleEntry[];
  /** The pass in which it found nothing (0: it found something). */
  failedPass: number;
}

export interface Preemptible {
  readonly node: NodeEntry;
  readonly victims: RunningEntry[];
  readonly priorityMax: number;
  readonly prioritySum: number;
}

export interface Eligibility {
  readonly key: string;
  readonly nodes: readonly NodeEntry[];
  readonly tree: NodeTree;
  readonly emptyReason: string;
  /** "; 2 nodes fail zone=eu" for every rule some driver-capable node fails. */
  readonly failureText: string;
  readonly partitions: Map<string, Partition>;
  refs: number;
}

export interface Cell {
  readonly score: number;
  readonly value: string;
  readonly mask: number;
  readonly tree: NodeTree;
}

export interface Partition {
  readonly cells: readonly Cell[];
  readonly spreadCounts: boolean;
  refs: number;
}

export interface CompiledAffinity {
  readonly constraint: CompiledConstraint;
  readonly weight: number;
}

export interface Shape {
  readonly key: string;
  readonly eligibilityKey: string;
  readonly driver: string;
  readonly constraints: readonly CompiledConstraint[];
  readonly requestSource: Resources;
  request: Vector;
  readonly requestText: string;
  readonly ports: readonly number[];
  readonly distinctJob: JobEntry | null;
  eligibility: Eligibility | null;
  largeEnough: number;
  busyText: string | null;
  blockedPass: number;
  reservedPass: number;
  fitMemo: FitMemo | null;
  nearestMemo: NearestMemo | null;
  readonly preemptMemos: Map<number, PreemptMemo>;
  refs: number;
}

export interface Spec {
  readonly key: string;
  readonly shape: Shape;
  readonly packing: 'binpack' | 'spread';
  readonly spreadOver: string | null;
  readonly job: JobEntry | null;
  readonly affinities: readonly CompiledAffinity[];
  readonly partitionKey: string | null;
  partition: Partition | null;
  resolvedGeneration: number;
  refs: number;
}

export interface TaskQueue {
  readonly kind: 'tasks';
  readonly key: string;
  readonly priority: number;
  readonly namespace: NamespaceEntry;
  readonly spec: Spec;
  readonly nominated: string | null;
  tasks: PendingEntry[];
  head: number;
  live: number;
  version: number;
  cursor: number;
  blockedPass: number;
  reason: string;
  /** What `changed` waiting output last said for every task of the queue, as of `version`. */
  reported: { readonly reason: string; readonly version: number } | null;
}

export interface GangQueue {
  readonly kind: 'gang';
  readonly key: string;
  readonly name: string;
  /** Its members go to one node (AllocatorTask.colocated). */
  readonly colocated: boolean;
  priority: number;
  namespace: NamespaceEntry;
  members: PendingEntry[];
  version: number;
  blockedPass: number;
  reason: string;
  reported: { readonly reason: string; readonly version: number } | null;
}

export type Queue = TaskQueue | GangQueue;

export type Op =
  | { readonly kind: 'place'; readonly task: PendingEntry; readonly node: NodeEntry }
  | { readonly kind: 'evict'; readonly victim: RunningEntry; readonly node: NodeEntry };

export interface Pass {
  readonly id: number;
  readonly placementsMax: number;
  decisions: number;
  readonly placements: Placement[];
  readonly preemptions: Preemption[];
  readonly reservations: Reservation[];
  /** Nodes held back so far in this pass, in order (reservations and preemptions). */
  readonly held: NodeEntry[];
  readonly ops: Op[];
  /** Record ops (to undo the plan, or a gang that does not fit); off for allocate()'s one-shot plans. */
  undoable: boolean;
  readonly blocked: Queue[];
  readonly preemptors: PendingEntry[];
}

/** The task a queue would place next, if any. */
export function headOf(queue: Queue | undefined): PendingEntry | undefined {
  if (!queue) return undefined;
  return queue.kind === 'tasks' ? queue.tasks[queue.cursor] : queue.members[0];
}

/** Counts one more (or one fewer) holder of `port`; a port with no holder leaves the map. */
export function addPort(ports: Map<number, number>, port: number, delta: number): void {
  const count = (ports.get(port) ?? 0) + delta;
  if (count > 0) ports.set(port, count);
  else ports.delete(port);
}

/** Adds `delta` to the count of `key`; a count that reaches 0 leaves the map. */
export function addCount<K>(counts: Map<K, number>, key: K, delta: number): void {
  const count = (counts.get(key) ?? 0) + delta;
  if (count > 0) counts.set(key, count);
  else counts.delete(key);
}
