/**
 * The incremental allocator. It keeps the cluster between plans (nodes indexed by free capacity, running
 * tasks, the pending queue grouped by shape) so that one event — a task ends, a node joins — costs work in
 * proportion to what changed, not to the size of the cluster. Pure: no I/O, no clock; the same calls in
 * the same order give the same plans, and `allocate()` on a snapshot gives the same plan whatever order
 * the snapshot lists things in.
 *
 * Policy, in the order it applies:
 * 1. Strict priority (high first). Within one priority, namespaces take turns by weighted Dominant
 *    Resource Fairness (the lowest dominant share goes next); within a namespace, FIFO by submission.
 * 2. A task goes to a node that is eligible (healthy driver, schedulable, hard label rules), has its ports
 *    free, holds no task of its job if it wants distinct nodes, is not held back for an earlier task, and
 *    has the room. Among those: best soft-affinity score, then the spread value where its job has fewest
 *    tasks, then first in node order (bin-packing) or most free CPU (spread packing).
 * 3. Nothing fits: it may preempt running tasks at least `preemptionPriorityGap` lower, choosing the node
 *    and the smallest victim set (then the lowest priorities). It then waits, nominated to that node,
 *    while the victims exit.
 * 4. Still nothing: the first blocked task of each shape holds back the node nearest to fitting it, so
 *    lower-ordered work may backfill everywhere else but cannot starve it there.
 * 5. Caps: a job's `runningMax`, a namespace's quota. Groups (gangs) place all members or none, at the
 *    priority and namespace of their first member in placement order; they neither preempt nor hold
 *    nodes back, and one larger than `placementsMax` may still go whole as a plan's first decision.
 *
 * Why it is fast. Pending tasks with the same shape, priority, namespace (and job, when the job matters)
 * form one FIFO queue; once its head is blocked, every later member would be too (within a plan, room
 * only shrinks), so the whole queue waits in O(1). Nodes sit in binary trees of free-capacity maxima (one
 * per distinct set of hard rules, see tree.ts); a fit is a root-to-leaf walk. A shape that found no room remembers it,
 * and the next plan re-checks only the nodes touched since (a log of changed nodes), so a plan on a full
 * cluster with one task ended visits a handful of nodes.
 *
 * Where the parts are: the records it keeps (records.ts), their orderings (order.ts), the queue heap
 * (queue-heap.ts), limits and defaults (limits.ts), resource vectors (resources.ts), label rules
 * (labels.ts), the node index (tree.ts) and the choice of victims on one node (victims.ts).
 */
import { assert } from '../shared/assert.ts';
import { compileConstraint, compileConstraints, labelOf, matchesAll, sameLabels } from './labels.ts';
import {
  affinitiesMax,
  assertPriority,
  defaultNamespace,
  portList,
  preemptionPriorityGapDefault,
  priorityMax,
  priorityMin,
  reservationsMaxDefault,
  spreadValuesMax,
} from './limits.ts';
import {
  compareIds,
  comparePending,
  compareSingles,
  compareVictims,
  firstUnheld,
  insertNear,
  insertSingle,
  isBetter,
  slotPosition,
} from './order.ts';
import { QueueHeap } from './queue-heap.ts';
import {
  addCount,
  addPort,
  noNodes,
  type Cell,
  type Eligibility,
  type GangQueue,
  type JobEntry,
  type NamespaceEntry,
  type NearEntry,
  type NodeEntry,
  type Partition,
  type Pass,
  type PendingEntry,
  type Preemptible,
  type Queue,
  type RunningEntry,
  type Shape,
  type SingleEntry,
  type Spec,
  type TaskQueue,
} from './records.ts';
import {
  ResourceLayout,
  addInto,
  cpuDimension,
  fits,
  fitsWith,
  formatRequest,
  sameVector,
  type Vector,
} from './resources.ts';
import { NodeTree, isBefore, shortfall } from './tree.ts';
import type {
  AllocatorInput,
  AllocatorNode,
  AllocatorOptions,
  AllocatorTask,
  JobPolicy,
  NamespacePolicy,
  Plan,
  PlanOptions,
  Resources,
  RunningTask,
  Waiting,
} from './types.ts';
import { exactCandidatesMax, smallestVictimSet, type VictimCandidate } from './victims.ts';

/** Nearest nodes a shape remembers, so holds by other shapes in a plan rarely force a new search. */
const nearestRemembered = 16;
/** Changed nodes remembered for re-checks; a shape that last looked longer ago searches afresh. */
const touchWindow = 4096;
/** Node indexes for rules no pending task uses any more, tolerated before a rebuild drops them. */
const unusedIndexesMax = 32;
const nextRoundReason = 'waiting for the next allocation round';

// ---- the allocator ---------------------------------------------------------------------------------

export class Allocator {
  private readonly gap: number;
  private readonly reservationsMax: number;
  private layout = new ResourceLayout();
  private readonly nodes = new Map<string, NodeEntry>();
  private slotNodes: NodeEntry[] = [];
  private readonly running = new Map<string, RunningEntry>();
  private readonly pending = new Map<string, PendingEntry>();
  private readonly namespaces = new Map<string, NamespaceEntry>();
  private readonly jobs = new Map<string, JobEntry>();
  private readonly specs = new Map<string, Spec>();
  private readonly shapes = new Map<string, Shape>();
  private eligibilities = new Map<string, Eligibility>();
  private readonly queues = new Map<string, Queue>();
  private readonly levels = new Map<number, Map<NamespaceEntry, Set<Queue>>>();
  private priorities: number[] | null = null;
  /** Running, preemptible, not terminating tasks on live nodes, by priority. */
  private readonly preemptible = new Int32Array(priorityMax + 1);
  private totals: Vector = new Float64Array(3);
  private generation = 0;
  private dirty = true;
  private readonly unresolved = new Set<Spec>();
  private readonly unsorted = new Set<Queue>();
  private unusedIndexes = 0;
  private passCount = 0;
  private touchSeq = 0;
  private readonly touchRing = new Int32Array(touchWindow);
  private stampCount = 0;
  private readonly heaps: QueueHeap[] = [];
  private readonly touchedList: NodeEntry[] = [];
  /** Set by `allocate()`: the instance is thrown away after one plan, so the plan need not be undone. */
  private discardAfterPlan = false;

  constructor(options: AllocatorOptions = {}) {
    this.gap = options.preemptionPriorityGap ?? preemptionPriorityGapDefault;
    this.reservationsMax = options.reservationsMax ?? reservationsMaxDefault;
    assert(this.gap >= 0, 'the preemption priority gap is not negative');
    assert(this.reservationsMax >= 0, 'reservationsMax is not negative');
  }

  /** One plan from a snapshot; see `allocate()`. */
  static planSnapshot(input: AllocatorInput): Plan {
    const options: { preemptionPriorityGap?: number; reservationsMax?: number } = {};
    if (input.preemptionPriorityGap !== undefined)
      options.preemptionPriorityGap = input.preemptionPriorityGap;
    if (input.reservationsMax !== undefined) options.reservationsMax = input.reservationsMax;
    const allocator = new Allocator(options);
    allocator.discardAfterPlan = true;
    // Learn every device kind first, so vectors are laid out once.
    const kinds = new Set<string>();
    const collect = (resources: Partial<Resources> | undefined): void => {
      for (const kind of Object.keys(resources?.devices ?? {})) kinds.add(kind);
    };
    for (const node of input.nodes) {
      collect(node.capacity);
      collect(node.free);
    }
    for (const task of input.pending) collect(task.request);
    for (const task of input.running ?? []) collect(task.request);
    allocator.layout = new ResourceLayout([...kinds]);
    allocator.totals = new Float64Array(allocator.layout.size);
    for (const policy of input.namespaces ?? []) allocator.setNamespace(policy);
    for (const policy of input.jobs ?? []) allocator.setJob(policy);
    for (const node of input.nodes) allocator.addNode(node);
    for (const task of input.running ?? []) allocator.addRunning(task);
    for (const task of input.pending) allocator.addPending(task);
    return allocator.plan({ placementsMax: input.placementsMax });
  }

  // ---- nodes ---------------------------------------------------------------------------------------

  /** Adds a node, or replaces what is known of it (its `free` counts its running tasks). */
  addNode(node: AllocatorNode): void {
    this.learnKinds([node.capacity, node.free]);
    const drivers = new Set(node.drivers);
    const schedulable = node.schedulable ?? true;
    const capacity = this.layout.encode(node.capacity);
    const free = this.layout.encode(node.free);
    const existing = this.nodes.get(node.id);
    if (existing) {
      const same =
        sameLabels(existing.labels, node.labels) &&
        sameSet(existing.drivers, drivers) &&
        existing.schedulable === schedulable &&
        sameVector(existing.capacity, capacity);
      existing.source = node;
      existing.labels = node.labels;
      existing.drivers = drivers;
      existing.schedulable = schedulable;
      existing.capacity = capacity;
      existing.free = free;
      existing.ports.clear();
      for (const port of node.portsInUse ?? []) addPort(existing.ports, port, 1);
      if (same) this.nodeChanged(existing);
      else this.dirty = true;
      return;
    }
    const entry: NodeEntry = {
      id: node.id,
      source: node,
      labels: node.labels,
      drivers,
      schedulable,
      capacity,
      free,
      terminating: new Float64Array(this.layout.size),
      victims: [],
      victimSums: null,
      ports: new Map(),
      running: new Set(),
      slot: -1,
      trees: [],
      reservedPass: 0,
      stamp: 0,
      version: 0,
    };
    for (const port of node.portsInUse ?? []) addPort(entry.ports, port, 1);
    this.nodes.set(node.id, entry);
    this.dirty = true;
  }

  /** The node left: tasks still listed on it stay counted for their namespace and job until they end. */
  removeNode(nodeId: string): void {
    const node = this.nodes.get(nodeId);
    if (!node) return;
    for (const task of [...node.running]) this.detach(task);
    this.nodes.delete(nodeId);
    this.dirty = true;
  }

  /** Overrides a node's free resources (say, after resynchronising with the committed state). */
  updateFree(nodeId: string, free: Resources): void {
    const node = this.nodes.get(nodeId);
    assert(node, `updateFree: node ${nodeId} is known`);
    this.learnKinds([free]);
    node.free = this.layout.encode(free);
    this.nodeChanged(node);
  }

  // ---- tasks ---------------------------------------------------------------------------------------

  /** A task already on its node; the node's `free` already excludes it. */
  addRunning(task: RunningTask): void {
    assert(!this.running.has(task.id) && !this.pending.has(task.id), `task ${task.id} is new`);
    assertPriority(task.priority);
    this.learnKinds([task.request]);
    const entry: RunningEntry = {
      id: task.id,
      requestSource: task.request,
      request: this.layout.encode(task.request),
      node: null,
      priority: task.priority,
      namespace: this.namespace(task.namespace ?? defaultNamespace),
      job: task.job === undefined ? null : this.job(task.job),
      ports: portList(task.ports),
      preemptible: task.preemptible ?? true,
      terminating: task.terminating ?? false,
      evictedPass: 0,
    };
    this.running.set(task.id, entry);
    this.attach(entry, this.nodes.get(task.nodeId) ?? null, false);
  }

  addPending(task: AllocatorTask): void {
    assert(!this.running.has(task.id) && !this.pending.has(task.id), `task ${task.id} is new`);
    assertPriority(task.priority);
    assert(Number.isFinite(task.submitIndex), 'submitIndex is a finite number');
    this.learnKinds([task.request]);
    const namespace = this.namespace(task.namespace ?? defaultNamespace);
    const job = task.job === undefined ? null : this.job(task.job);
    if (task.spreadOver !== undefined && job) this.trackSpread(job, task.spreadOver);
    const spec = this.spec(task, job);
    const queue = this.queueFor(task, spec, namespace);
    const entry: PendingEntry = {
      id: task.id,
      task,
      priority: task.priority,
      submitIndex: task.submitIndex,
      namespace,
      job,
      ports: spec.shape.ports,
      spec,
      queue,
      removed: false,
      decidedPass: 0,
      preemptingOn: null,
      victims: 0,
      reportedReason: null,
    };
    this.pending.set(task.id, entry);
    job?.pending.add(entry);
    spec.refs++;
    this.enqueue(queue, entry);
  }

  /**
   * The leader committed a placement: the pending task now holds its resources on the node. A task that
   * must never be evicted is placed with `preemptible` false.
   */
  taskPlaced(taskId: string, nodeId: string, preemptible = true): void {
    const pending = this.pending.get(taskId);
    assert(pending, `taskPlaced: task ${taskId} is pending`);
    this.dequeue(pending);
    const entry: RunningEntry = {
      id: taskId,
      requestSource: pending.task.request,
      request: pending.spec.shape.request,
      node: null,
      priority: pending.priority,
      namespace: pending.namespace,
      job: pending.job,
      ports: pending.ports,
      preemptible,
      terminating: false,
      evictedPass: 0,
    };
    this.running.set(taskId, entry);
    this.attach(entry, this.nodes.get(nodeId) ?? null, true);
  }

  /** A task ended, failed, was killed or lost, running or still pending: its resources come back. */
  taskEnded(taskId: string): void {
    const pending = this.pending.get(taskId);
    if (pending) {
      this.dequeue(pending);
      this.forgetJob(pending.job);
      return;
    }
    const running = this.running.get(taskId);
    if (!running) return;
    this.release(running);
    this.running.delete(taskId);
    this.forgetJob(running.job);
  }

  /** A running task is being killed (preempted): it still holds its resources but is no victim again. */
  setTerminating(taskId: string): void {
    const task = this.running.get(taskId);
    if (!task || task.terminating) return;
    const node = task.node;
    task.terminating = true;
    if (node && task.preemptible) {
      this.countPreemptible(task.priority, -1);
      this.preemptibleChanged(node, task, -1);
    }
    if (node) {
      addInto(node.terminating, task.request, 1);
      this.nodeChanged(node);
    }
  }

  /**
   * A placement from a plan was not committed (the log rejected it as stale): the task stays pending.
   * Only matters for `waiting: 'changed'`, which then reports the task's reason again.
   */
  unplaced(taskId: string): void {
    const pending = this.pending.get(taskId);
    if (pending) pending.queue.version++;
  }

  /** Records (or clears, with null) the node a pending task preempted on; it waits there. */
  nominate(taskId: string, nodeId: string | null): void {
    const pending = this.pending.get(taskId);
    assert(pending, `nominate: task ${taskId} is pending`);
    const task: { -readonly [K in keyof AllocatorTask]: AllocatorTask[K] } = { ...pending.task };
    delete task.nominatedNodeId;
    if (nodeId !== null) task.nominatedNodeId = nodeId;
    this.dequeue(pending);
    this.addPending(task);
  }

  setNamespace(policy: NamespacePolicy): void {
    const namespace = this.namespace(policy.name);
    const weight = policy.weight ?? 1;
    assert(weight > 0 && Number.isFinite(weight), `namespace ${policy.name}: weight is positive`);
    namespace.weight = weight;
    namespace.quotaSource = policy.quota;
    namespace.quota = this.layout.encodeLimit(policy.quota);
  }

  setJob(policy: JobPolicy): void {
    assert(policy.runningMax >= 0, `job ${policy.id}: runningMax is not negative`);
    const job = this.job(policy.id);
    const wasCapped = job.runningMax < Infinity;
    job.runningMax = policy.runningMax;
    job.hasPolicy = true;
    // Capped jobs queue apart (a capped head must not block other jobs' tasks): move its tasks.
    if (wasCapped !== job.runningMax < Infinity) {
      for (const entry of [...job.pending]) {
        this.dequeue(entry);
        this.addPending(entry.task);
      }
    }
  }

  // ---- planning ------------------------------------------------------------------------------------

  /**
   * Decides what to place, preempt and hold back now. Does not change the allocator: report what the
   * leader commits with `taskPlaced`, `setTerminating` and `nominate`.
   */
  plan(options: PlanOptions): Plan {
    this.prepare();
    const pass: Pass = {
      id: ++this.passCount,
      placementsMax: options.placementsMax,
      decisions: 0,
      placements: [],
      preemptions: [],
      reservations: [],
      held: [],
      ops: [],
      undoable: !this.discardAfterPlan,
      blocked: [],
      preemptors: [],
    };
    this.run(pass, options.onDecision);
    const waiting = options.waiting === 'changed' ? this.changedWaiting(pass) : this.allWaiting(pass);
    const plan: Plan = {
      placements: pass.placements,
      waiting,
      preemptions: pass.preemptions,
      reservations: pass.reservations,
    };
    if (!this.discardAfterPlan) this.rollback(pass, 0);
    return plan;
  }

  private run(pass: Pass, onDecision: (() => void) | undefined): void {
    let heapsUsed = 0;
    for (const priority of this.priorities ?? []) {
      const level = this.levels.get(priority);
      if (!level) continue;
      const active: { namespace: NamespaceEntry; heap: QueueHeap }[] = [];
      for (const [namespace, queues] of level) {
        // Heaps are reused from pass to pass: a plan on a busy cluster should make little garbage.
        let heap = this.heaps[heapsUsed];
        if (!heap) {
          heap = new QueueHeap();
          this.heaps.push(heap);
        }
        heapsUsed++;
        heap.clear();
        for (const queue of queues) if (this.startQueue(queue)) heap.push(queue);
        if (heap.size > 0) active.push({ namespace, heap });
      }
      active.sort((a, b) => compareIds(a.namespace.name, b.namespace.name));
      while (active.length > 0) {
        if (pass.decisions >= pass.placementsMax) return;
        const index = this.nextNamespace(active);
        const turn = active[index];
        assert(turn, 'the chosen namespace is active');
        const queue = turn.heap.peek();
        assert(queue, 'an active namespace has a queue');
        let more: boolean;
        if (queue.kind === 'tasks') {
          more = this.tryTasks(queue, pass);
        } else {
          const outcome = this.tryGang(queue, pass);
          if (outcome === 'stop') return;
          more = false;
        }
        onDecision?.();
        if (more) turn.heap.headChanged();
        else turn.heap.pop();
        if (turn.heap.size === 0) active.splice(index, 1);
      }
    }
  }

  /** Resets a queue for a pass; false when it holds nothing to place. */
  private startQueue(queue: Queue): boolean {
    if (queue.kind === 'gang') return queue.members.length > 0;
    while (queue.head < queue.tasks.length && queue.tasks[queue.head]?.removed === true) queue.head++;
    queue.cursor = queue.head;
    return queue.cursor < queue.tasks.length;
  }

  /** The namespace whose weighted dominant share is lowest goes next; ties go by name. */
  private nextNamespace(active: readonly { namespace: NamespaceEntry }[]): number {
    if (active.length === 1) return 0;
    let best = 0;
    let bestShare = Infinity;
    active.forEach(({ namespace }, index) => {
      const share = this.dominantShare(namespace);
      if (share < bestShare) {
        best = index;
        bestShare = share;
      }
    });
    return best;
  }

  private dominantShare(namespace: NamespaceEntry): number {
    let share = 0;
    for (let d = 0; d < this.totals.length; d++) {
      const total = this.totals[d] ?? 0;
      if (total > 0) share = Math.max(share, (namespace.usage[d] ?? 0) / total);
    }
    return share / namespace.weight;
  }

  /** Decides the queue's head; true when the queue has more to try in this pass. */
  private tryTasks(queue: TaskQueue, pass: Pass): boolean {
    const task = queue.tasks[queue.cursor];
    assert(task && !task.removed, 'the queue cursor is on a live task');
    const spec = queue.spec;
    const shape = spec.shape;
    const blocked = this.blockedBefore(task);
    if (blocked !== null) return this.block(queue, pass, blocked);
    let searched = false;
    if (queue.nominated !== null) {
      const nominated = this.nodes.get(queue.nominated);
      if (nominated && this.usableNomination(nominated, shape, pass)) {
        if (fits(nominated.free, shape.request)) {
          this.place(task, nominated, pass, 0);
          return this.advance(queue);
        }
        const elsewhere = shape.blockedPass === pass.id ? null : this.findNode(spec, pass);
        if (elsewhere) {
          this.place(task, elsewhere, pass, 0);
          return this.advance(queue);
        }
        searched = true;
        if (fitsWith(nominated.free, nominated.terminating, shape.request)) {
          this.hold(nominated, task, pass, true);
          return this.block(queue, pass, `waiting on node ${nominated.id} for preempted tasks to exit`);
        }
      }
    }
    if (!searched && shape.blockedPass !== pass.id) {
      const node = this.findNode(spec, pass);
      if (node) {
        this.place(task, node, pass, 0);
        return this.advance(queue);
      }
    }
    if (this.tryPreempt(task, pass)) return this.advance(queue);
    shape.blockedPass = pass.id;
    this.reserve(task, pass);
    return this.block(queue, pass, this.busyReason(shape));
  }

  private advance(queue: TaskQueue): boolean {
    queue.cursor++;
    while (queue.cursor < queue.tasks.length && queue.tasks[queue.cursor]?.removed === true) queue.cursor++;
    return queue.cursor < queue.tasks.length;
  }

  private block(queue: TaskQueue, pass: Pass, reason: string): false {
    queue.blockedPass = pass.id;
    queue.reason = reason;
    pass.blocked.push(queue);
    return false;
  }

  /** Why the task cannot go anywhere whatever is free: a cap, a quota, no eligible or large node. */
  private blockedBefore(task: PendingEntry): string | null {
    const job = task.job;
    if (job && job.running >= job.runningMax)
      return `job ${job.id} has ${job.running} tasks running, its cap of ${job.runningMax}`;
    const namespace = task.namespace;
    if (namespace.quotaSource !== undefined) {
      const quotaReason = this.overQuota(namespace, task.spec.shape.request);
      if (quotaReason !== null) return quotaReason;
    }
    const shape = task.spec.shape;
    const eligibility = this.eligibilityOf(shape);
    if (eligibility.nodes.length === 0) return eligibility.emptyReason;
    if (this.largeEnough(shape) === 0)
      return `no node has ${shape.requestText} in total (${eligibility.nodes.length} eligible)`;
    return null;
  }

  private overQuota(namespace: NamespaceEntry, request: Vector): string | null {
    for (let d = 0; d < request.length; d++) {
      const need = request[d] ?? 0;
      const used = namespace.usage[d] ?? 0;
      const quota = namespace.quota[d] ?? Infinity;
      if (need > 0 && used + need > quota) {
        const amount = (value: number): string => this.layout.formatAmount(d, value);
        return `namespace ${namespace.name} is at its quota: ${amount(used)} of ${amount(quota)} in use, the task needs ${amount(need)} more`;
      }
    }
    return null;
  }

  private usableNomination(node: NodeEntry, shape: Shape, pass: Pass): boolean {
    return (
      node.slot >= 0 &&
      this.eligibilityOf(shape).tree.contains(node.slot) &&
      fits(node.capacity, shape.request) &&
      node.reservedPass !== pass.id &&
      this.acceptStatic(shape, node)
    );
  }

  // ---- finding a node ------------------------------------------------------------------------------

  /** Ports free and, for distinct jobs, no task of the job there. Everything but room and holds. */
  private acceptStatic(shape: Shape, node: NodeEntry): boolean {
    for (const port of shape.ports) if ((node.ports.get(port) ?? 0) > 0) return false;
    return shape.distinctJob === null || !shape.distinctJob.nodes.has(node);
  }

  private findNode(spec: Spec, pass: Pass): NodeEntry | null {
    const shape = spec.shape;
    const eligibility = this.eligibilityOf(shape);
    const request = shape.request;
    const memo = shape.fitMemo;
    if (memo && this.memoUsable(memo)) {
      let maybe: NodeEntry[] | null = null;
      let best: NodeEntry | null = null;
      let bestLeaf = Infinity;
      for (const node of this.touchedSince(memo.seq, memo.maybe)) {
        const leaf = eligibility.tree.leafOf(node.slot);
        if (leaf < 0 || !fits(node.free, request) || !this.acceptStatic(shape, node)) continue;
        maybe ??= [];
        maybe.push(node);
        if (node.reservedPass !== pass.id && leaf < bestLeaf) {
          best = node;
          bestLeaf = leaf;
        }
      }
      // Updated in place: this runs for every blocked shape in every plan.
      memo.seq = this.touchSeq;
      memo.maybe = maybe ?? noNodes;
      if (best === null) return null;
      // Bin-packing wants the first fitting node in order, and only these can fit: exact.
      if (spec.partition === null && spec.packing === 'binpack') return best;
    }
    const held: NodeEntry[] = [];
    const accept = (slot: number): boolean => {
      const node = this.slotNodes[slot];
      if (!node || !this.acceptStatic(shape, node)) return false;
      if (node.reservedPass === pass.id) {
        held.push(node);
        return false;
      }
      return true;
    };
    let slot: number;
    if (spec.partition !== null) slot = this.searchCells(spec, spec.partition, accept);
    else if (spec.packing === 'spread') slot = eligibility.tree.mostFree(request, cpuDimension, accept);
    else slot = eligibility.tree.firstFit(request, accept);
    // A failed search saw every fitting node, so the held ones are all that may fit later.
    shape.fitMemo = slot < 0 ? { generation: this.generation, seq: this.touchSeq, maybe: held } : null;
    return slot < 0 ? null : (this.slotNodes[slot] ?? null);
  }

  /** Cells in preference order: affinity score, then fewest of the job's tasks, then value, then mask. */
  private searchCells(spec: Spec, partition: Partition, accept: (slot: number) => boolean): number {
    const counts =
      partition.spreadCounts && spec.spreadOver !== null ? spec.job?.spread.get(spec.spreadOver) : undefined;
    const order = [...partition.cells].sort(
      (a, b) =>
        b.score - a.score ||
        (counts?.get(a.value) ?? 0) - (counts?.get(b.value) ?? 0) ||
        compareIds(a.value, b.value) ||
        a.mask - b.mask,
    );
    const request = spec.shape.request;
    for (const cell of order) {
      const slot =
        spec.packing === 'spread'
          ? cell.tree.mostFree(request, cpuDimension, accept)
          : cell.tree.firstFit(request, accept);
      if (slot >= 0) return slot;
    }
    return -1;
  }

  /** The node to hold back for a blocked task: eligible, large enough, nearest to fitting. */
  private nearestNode(shape: Shape, pass: Pass): NodeEntry | null {
    const eligibility = this.eligibilityOf(shape);
    const request = shape.request;
    const distinct = shape.distinctJob;
    let memo = shape.nearestMemo !== null && this.memoUsable(shape.nearestMemo) ? shape.nearestMemo : null;
    if (memo) {
      // Touched nodes are measured again (in place, without closures: this runs for every blocked shape
      // in every plan); the rest keep their place.
      const touched = this.touchedSince(memo.seq, noNodes);
      const stamp = this.stampCount;
      const entries = memo.entries;
      let relevant = false;
      for (const node of touched) if (eligibility.tree.contains(node.slot)) relevant = true;
      if (relevant) {
        let kept = 0;
        for (const entry of entries) if (entry.node.stamp !== stamp) entries[kept++] = entry;
        entries.length = kept;
        for (const node of touched) {
          if (!eligibility.tree.contains(node.slot) || !fits(node.capacity, request)) continue;
          if (distinct !== null && distinct.nodes.has(node)) continue;
          const entry: NearEntry = {
            node,
            value: shortfall(request, node.free, node.capacity),
            leaf: eligibility.tree.leafOf(node.slot),
          };
          if (memo.bound === null || !isBefore(memo.bound, entry)) insertNear(entries, entry);
        }
      }
      memo.seq = this.touchSeq;
      // Every remembered node is held by an earlier shape: look further afield.
      if (memo.bound !== null && firstUnheld(entries, pass.id) === null) memo = null;
    }
    if (memo === null) {
      // Remember past the nodes earlier shapes hold now: they will likely hold them next time too.
      const count = nearestRemembered + pass.held.length;
      const few = eligibility.tree.nearestFew(request, count, (slot) => {
        const node = this.slotNodes[slot];
        return node !== undefined && (distinct === null || !distinct.nodes.has(node));
      });
      const entries: NearEntry[] = [];
      for (const near of few) {
        const node = this.slotNodes[near.slot];
        if (node) entries.push({ node, value: near.value, leaf: near.leaf });
      }
      memo = {
        generation: this.generation,
        seq: this.touchSeq,
        entries,
        bound: few.length === count ? (few[few.length - 1] ?? null) : null,
      };
      shape.nearestMemo = memo;
    }
    const chosen = firstUnheld(memo.entries, pass.id);
    if (chosen) return chosen.node;
    if (memo.bound === null) return null;
    // Even the fresh list is all held: search past the holds (rare, and not remembered).
    const slot = eligibility.tree.nearest(request, (s) => {
      const node = this.slotNodes[s];
      return (
        node !== undefined &&
        (distinct === null || !distinct.nodes.has(node)) &&
        node.reservedPass !== pass.id
      );
    });
    return slot < 0 ? null : (this.slotNodes[slot] ?? null);
  }

  /**
   * Holds a node back for the first blocked task of each shape (the plan lists it; the task's reason
   * does not name it, so reasons stay stable while the held node moves).
   */
  private reserve(task: PendingEntry, pass: Pass): void {
    const shape = task.spec.shape;
    if (shape.reservedPass === pass.id || pass.reservations.length >= this.reservationsMax) return;
    shape.reservedPass = pass.id;
    const node = this.nearestNode(shape, pass);
    if (node) this.hold(node, task, pass, true);
  }

  private hold(node: NodeEntry, task: PendingEntry, pass: Pass, listed: boolean): void {
    node.reservedPass = pass.id;
    pass.held.push(node);
    if (listed) pass.reservations.push({ taskId: task.id, nodeId: node.id });
  }

  // ---- preemption ----------------------------------------------------------------------------------

  private lowestPreemptible(): number {
    for (let priority = priorityMin; priority <= priorityMax; priority++)
      if ((this.preemptible[priority] ?? 0) > 0) return priority;
    return Infinity;
  }

  private tryPreempt(task: PendingEntry, pass: Pass): boolean {
    if (!Number.isFinite(this.gap)) return false;
    const threshold = task.priority - this.gap;
    if (threshold < this.lowestPreemptible()) return false;
    const shape = task.spec.shape;
    const memo = shape.preemptMemos.get(threshold);
    if (memo?.failedPass === pass.id) return false;
    const eligibility = this.eligibilityOf(shape);
    const request = shape.request;
    const distinct = shape.distinctJob;
    /** What one node offers, holds aside: 'never' (no victims would do), a single victim, or null. */
    const evaluate = (node: NodeEntry): SingleEntry | 'never' | null => {
      if (!eligibility.tree.contains(node.slot) || !fits(node.capacity, request)) return 'never';
      if (distinct !== null && distinct.nodes.has(node)) return 'never';
      const single = this.singleVictim(node, shape, threshold);
      if (single === null || single === 'never') return single;
      return { node, priority: single.priorityMax, version: node.version };
    };
    let remembered = memo && this.memoUsable(memo) ? memo : null;
    if (remembered) {
      // Only nodes touched since can have changed: evaluate those, keep the rest as they are.
      for (const node of this.touchedSince(remembered.seq, noNodes)) {
        const found = evaluate(node);
        const listed = remembered.maybeSet.has(node);
        if (found === 'never') {
          if (listed) {
            remembered.maybeSet.delete(node);
            remembered.maybe.splice(slotPosition(remembered.maybe, node.slot), 1);
          }
          continue;
        }
        if (!listed) {
          remembered.maybeSet.add(node);
          remembered.maybe.splice(slotPosition(remembered.maybe, node.slot), 0, node);
        }
        if (found !== null) insertSingle(remembered.singles, found);
      }
      if (remembered.singles.length > 2 * remembered.maybe.length + 64)
        remembered.singles = remembered.singles.filter((entry) => entry.version === entry.node.version);
    } else {
      const maybe: NodeEntry[] = [];
      const singles: SingleEntry[] = [];
      for (const node of eligibility.nodes) {
        const found = evaluate(node);
        if (found === 'never') continue;
        maybe.push(node);
        if (found !== null) singles.push(found);
      }
      singles.sort(compareSingles);
      remembered = {
        generation: this.generation,
        seq: 0,
        maybe,
        maybeSet: new Set(maybe),
        singles,
        failedPass: 0,
      };
      shape.preemptMemos.set(threshold, remembered);
    }
    // Taken before the evictions below, which touch the node: the next search looks at it again.
    remembered.seq = this.touchSeq;
    // One victim is the fewest there can be: the first current, not held entry is the answer.
    let best: Preemptible | null = null;
    for (const entry of remembered.singles) {
      if (entry.version !== entry.node.version || entry.node.reservedPass === pass.id) continue;
      const single = this.singleVictim(entry.node, shape, threshold);
      assert(single !== null && single !== 'never', 'a current single-victim entry still holds');
      best = single;
      break;
    }
    // Otherwise the smallest set on each node, no larger than the best so far.
    if (best === null) {
      for (const node of remembered.maybe) {
        if (node.reservedPass === pass.id) continue;
        const found = this.victimsOn(node, shape, threshold, pass, best?.victims.length ?? Infinity);
        if (found !== null && found !== 'never' && (best === null || isBetter(found, best))) best = found;
      }
    }
    remembered.failedPass = best === null ? pass.id : 0;
    if (best === null) return false;
    for (const victim of best.victims) this.evict(victim, best.node, task, pass);
    this.place(task, best.node, pass, best.victims.length);
    this.hold(best.node, task, pass, false);
    return true;
  }

  /**
   * 'never' when even every victim at or below the threshold leaves too little room (so the node need
   * not be looked at again until it changes); otherwise the best single victim that suffices (lowest
   * priority, then id: the first in order), or null.
   */
  private singleVictim(node: NodeEntry, shape: Shape, threshold: number): Preemptible | 'never' | null {
    const request = shape.request;
    const dimensions = request.length;
    const victims = node.victims;
    let count = 0;
    while (count < victims.length && (victims[count]?.priority ?? Infinity) <= threshold) count++;
    const sums = this.victimSums(node);
    for (let d = 0; d < dimensions; d++)
      if ((node.free[d] ?? 0) + (sums[count * dimensions + d] ?? 0) < (request[d] ?? 0)) return 'never';
    // Not even the largest victim (of any priority) frees enough alone.
    const most = (victims.length + 1) * dimensions;
    for (let d = 0; d < dimensions; d++)
      if ((node.free[d] ?? 0) + (sums[most + d] ?? 0) < (request[d] ?? 0)) return null;
    for (let i = 0; i < count; i++) {
      const victim = victims[i];
      if (
        victim &&
        fitsWith(node.free, victim.request, request) &&
        this.portsFreeWithout(node, shape, victim)
      )
        return { node, victims: [victim], priorityMax: victim.priority, prioritySum: victim.priority };
    }
    return null;
  }

  /** The shape's ports are free on the node once `victim` is gone. */
  private portsFreeWithout(node: NodeEntry, shape: Shape, victim: RunningEntry): boolean {
    for (const port of shape.ports) {
      const held = (node.ports.get(port) ?? 0) - (victim.ports.includes(port) ? 1 : 0);
      if (held > 0) return false;
    }
    return true;
  }

  /**
   * The smallest set of victims on `node` that makes room for the shape and is no larger than
   * `countMax`; null when none that small; 'never' when no set at all would do.
   */
  private victimsOn(
    node: NodeEntry,
    shape: Shape,
    threshold: number,
    pass: Pass,
    countMax: number,
  ): Preemptible | null | 'never' {
    const candidates = node.victims.filter(
      (task) => task.evictedPass !== pass.id && task.priority <= threshold,
    );
    if (candidates.length === 0) return 'never';
    // Ports: whoever holds a wanted port must go, and must be a candidate.
    const forced: RunningEntry[] = [];
    for (const port of shape.ports) {
      const held = node.ports.get(port) ?? 0;
      if (held === 0) continue;
      const holders = candidates.filter((task) => task.ports.includes(port));
      if (holders.length < held) return 'never';
      for (const holder of holders) if (!forced.includes(holder)) forced.push(holder);
    }
    const need = new Float64Array(shape.request.length);
    for (let d = 0; d < need.length; d++) need[d] = (shape.request[d] ?? 0) - (node.free[d] ?? 0);
    for (const task of forced) addInto(need, task.request, -1);
    const rest = forced.length === 0 ? candidates : candidates.filter((task) => !forced.includes(task));
    const total = new Float64Array(need.length);
    for (const task of rest) addInto(total, task.request, 1);
    if (!fits(total, need)) return 'never';
    if (forced.length > countMax) return null;
    rest.sort((a, b) => a.priority - b.priority || compareIds(a.id, b.id));
    const choice = smallestVictimSet(
      need,
      rest.map((task): VictimCandidate => ({ priority: task.priority, request: task.request })),
      exactCandidatesMax,
      countMax - forced.length,
    );
    if (!choice) return null;
    const victims = [...forced];
    for (const i of choice.indices) {
      const victim = rest[i];
      if (victim) victims.push(victim);
    }
    if (victims.length === 0) return null;
    let victimPriorityMax = -Infinity;
    let prioritySum = 0;
    for (const victim of victims) {
      victimPriorityMax = Math.max(victimPriorityMax, victim.priority);
      prioritySum += victim.priority;
    }
    victims.sort((a, b) => a.priority - b.priority || compareIds(a.id, b.id));
    return { node, victims, priorityMax: victimPriorityMax, prioritySum };
  }

  // ---- gangs ---------------------------------------------------------------------------------------

  private tryGang(queue: GangQueue, pass: Pass): 'done' | 'stop' {
    const members = queue.members;
    if (pass.decisions > 0 && pass.decisions + members.length > pass.placementsMax) return 'stop';
    if (queue.colocated) return this.tryColocatedGang(queue, pass);
    const opsMark = pass.ops.length;
    const placementsMark = pass.placements.length;
    const decisionsMark = pass.decisions;
    const undoable = pass.undoable;
    pass.undoable = true;
    for (const member of members) {
      const shape = member.spec.shape;
      let reason = this.blockedBefore(member);
      if (reason === null && shape.blockedPass === pass.id) reason = this.busyReason(shape);
      if (reason === null) {
        const node = this.findNode(member.spec, pass);
        if (node) {
          this.place(member, node, pass, 0);
          continue;
        }
        reason = this.busyReason(shape);
      }
      this.rollback(pass, opsMark);
      pass.undoable = undoable;
      pass.placements.length = placementsMark;
      pass.decisions = decisionsMark;
      queue.blockedPass = pass.id;
      queue.reason = `group ${queue.name} starts its ${members.length} tasks together; ${member.id} waits: ${reason}`;
      pass.blocked.push(queue);
      return 'done';
    }
    pass.undoable = undoable;
    return 'done';
  }

  /**
   * A gang whose members share one node: the first node, in slot order, that takes every member (its
   * eligibility, room and ports, counted member after member). A linear scan of the nodes per attempt:
   * co-located groups are a job's few tasks, not the bulk of the queue; a blocked gang is not tried again
   * in the same pass.
   */
  private tryColocatedGang(queue: GangQueue, pass: Pass): 'done' | 'stop' {
    const members = queue.members;
    const opsMark = pass.ops.length;
    const placementsMark = pass.placements.length;
    const decisionsMark = pass.decisions;
    const undoable = pass.undoable;
    pass.undoable = true;
    let reason: string | null = null;
    for (const member of members) {
      reason = this.blockedBefore(member);
      if (reason !== null) break;
    }
    if (reason === null) {
      for (const node of this.slotNodes) {
        if (node.reservedPass === pass.id) continue;
        let placed = 0;
        for (const member of members) {
          const shape = member.spec.shape;
          if (this.eligibilityOf(shape).tree.leafOf(node.slot) < 0) break;
          if (!fits(node.free, shape.request) || !this.acceptStatic(shape, node)) break;
          this.place(member, node, pass, 0);
          placed++;
        }
        if (placed === members.length) {
          pass.undoable = undoable;
          return 'done';
        }
        this.rollback(pass, opsMark);
        pass.placements.length = placementsMark;
        pass.decisions = decisionsMark;
      }
      reason = 'no node has room for all of them at once';
    }
    pass.undoable = undoable;
    queue.blockedPass = pass.id;
    queue.reason = `group ${queue.name} runs its ${members.length} tasks on one node; ${reason}`;
    pass.blocked.push(queue);
    return 'done';
  }

  // ---- tentative changes within a pass -------------------------------------------------------------

  private place(task: PendingEntry, node: NodeEntry, pass: Pass, victims: number): void {
    const request = task.spec.shape.request;
    addInto(node.free, request, -1);
    for (const port of task.ports) addPort(node.ports, port, 1);
    if (task.job) {
      task.job.running++;
      this.jobOnNode(task.job, node, 1);
    }
    addInto(task.namespace.usage, request, 1);
    this.nodeChanged(node);
    if (pass.undoable) pass.ops.push({ kind: 'place', task, node });
    task.decidedPass = pass.id;
    task.victims = victims;
    task.preemptingOn = victims > 0 ? node : null;
    if (victims > 0) pass.preemptors.push(task);
    else pass.placements.push({ taskId: task.id, nodeId: node.id });
    pass.decisions++;
  }

  private evict(victim: RunningEntry, node: NodeEntry, forTask: PendingEntry, pass: Pass): void {
    addInto(node.free, victim.request, 1);
    for (const port of victim.ports) addPort(node.ports, port, -1);
    if (victim.job) {
      victim.job.running--;
      this.jobOnNode(victim.job, node, -1);
    }
    addInto(victim.namespace.usage, victim.request, -1);
    victim.evictedPass = pass.id;
    this.countPreemptible(victim.priority, -1);
    this.preemptibleChanged(node, victim, -1);
    this.nodeChanged(node);
    if (pass.undoable) pass.ops.push({ kind: 'evict', victim, node });
    pass.preemptions.push({ taskId: victim.id, nodeId: node.id, forTaskId: forTask.id });
  }

  /** Undoes the pass's tentative changes down to `mark`, newest first. */
  private rollback(pass: Pass, mark: number): void {
    while (pass.ops.length > mark) {
      const op = pass.ops.pop();
      if (!op) break;
      if (op.kind === 'place') {
        const { task, node } = op;
        const request = task.spec.shape.request;
        addInto(node.free, request, 1);
        for (const port of task.ports) addPort(node.ports, port, -1);
        if (task.job) {
          task.job.running--;
          this.jobOnNode(task.job, node, -1);
        }
        addInto(task.namespace.usage, request, -1);
        task.decidedPass = 0;
        task.preemptingOn = null;
        this.nodeChanged(node);
      } else {
        const { victim, node } = op;
        addInto(node.free, victim.request, -1);
        for (const port of victim.ports) addPort(node.ports, port, 1);
        if (victim.job) {
          victim.job.running++;
          this.jobOnNode(victim.job, node, 1);
        }
        addInto(victim.namespace.usage, victim.request, 1);
        victim.evictedPass = 0;
        this.countPreemptible(victim.priority, 1);
        this.preemptibleChanged(node, victim, 1);
        this.nodeChanged(node);
      }
    }
  }

  // ---- reasons and output --------------------------------------------------------------------------

  private busyReason(shape: Shape): string {
    if (shape.busyText !== null) return shape.busyText;
    const eligibility = this.eligibilityOf(shape);
    let text = `no node has ${shape.requestText} free (${this.largeEnough(shape)} large enough, all busy)`;
    text += eligibility.failureText;
    if (shape.ports.length > 0) text += `; needs port${plural(shape.ports.length)} ${shape.ports.join(', ')}`;
    if (shape.distinctJob !== null) text += `; one task of job ${shape.distinctJob.id} per node`;
    shape.busyText = text;
    return text;
  }

  private largeEnough(shape: Shape): number {
    if (shape.largeEnough >= 0) return shape.largeEnough;
    let count = 0;
    for (const node of this.eligibilityOf(shape).nodes) if (fits(node.capacity, shape.request)) count++;
    shape.largeEnough = count;
    return count;
  }

  private preemptingReason(task: PendingEntry): string {
    const node = task.preemptingOn;
    return `preempting ${task.victims} lower-priority task${plural(task.victims)} on node ${node?.id ?? '?'}`;
  }

  private allWaiting(pass: Pass): Waiting[] {
    const waiting: { entry: PendingEntry; reason: string }[] = [];
    for (const queue of this.queues.values()) {
      if (queue.kind === 'tasks') {
        for (let i = queue.head; i < queue.tasks.length; i++) {
          const entry = queue.tasks[i];
          if (!entry || entry.removed) continue;
          if (entry.decidedPass === pass.id) {
            if (entry.preemptingOn) waiting.push({ entry, reason: this.preemptingReason(entry) });
            continue;
          }
          waiting.push({ entry, reason: queue.blockedPass === pass.id ? queue.reason : nextRoundReason });
        }
      } else {
        for (const entry of queue.members) {
          if (entry.decidedPass === pass.id) continue;
          waiting.push({ entry, reason: queue.blockedPass === pass.id ? queue.reason : nextRoundReason });
        }
      }
    }
    waiting.sort((a, b) => comparePending(a.entry, b.entry));
    return waiting.map(({ entry, reason }) => ({ taskId: entry.id, reason }));
  }

  private changedWaiting(pass: Pass): Waiting[] {
    const waiting: Waiting[] = [];
    const report = (entry: PendingEntry, reason: string): void => {
      if (entry.reportedReason === reason) return;
      entry.reportedReason = reason;
      waiting.push({ taskId: entry.id, reason });
    };
    for (const entry of pass.preemptors) {
      report(entry, this.preemptingReason(entry));
      // Its queue's record no longer speaks for it.
      entry.queue.version++;
    }
    // A queue's record holds while no task joined it since and its reason is the same: every task in
    // it was reported with that reason then (placements in a plan change no task's reported reason).
    for (const queue of pass.blocked) {
      if (queue.reported?.reason === queue.reason && queue.reported.version === queue.version) continue;
      if (queue.kind === 'gang') {
        for (const entry of queue.members) report(entry, queue.reason);
      } else {
        for (let i = queue.cursor; i < queue.tasks.length; i++) {
          const entry = queue.tasks[i];
          if (entry && !entry.removed) report(entry, queue.reason);
        }
      }
      queue.reported = { reason: queue.reason, version: queue.version };
    }
    return waiting;
  }

  // ---- bookkeeping ---------------------------------------------------------------------------------

  private namespace(name: string): NamespaceEntry {
    let namespace = this.namespaces.get(name);
    if (!namespace) {
      namespace = {
        name,
        weight: 1,
        quotaSource: undefined,
        quota: this.layout.encodeLimit(undefined),
        usage: new Float64Array(this.layout.size),
      };
      this.namespaces.set(name, namespace);
    }
    return namespace;
  }

  private job(id: string): JobEntry {
    let job = this.jobs.get(id);
    if (!job) {
      job = {
        id,
        runningMax: Infinity,
        hasPolicy: false,
        running: 0,
        nodes: new Map(),
        spread: new Map(),
        pending: new Set(),
      };
      this.jobs.set(id, job);
    }
    return job;
  }

  private forgetJob(job: JobEntry | null): void {
    if (job && !job.hasPolicy && job.running === 0 && job.pending.size === 0 && job.nodes.size === 0)
      this.jobs.delete(job.id);
  }

  private trackSpread(job: JobEntry, labelKey: string): void {
    if (job.spread.has(labelKey)) return;
    const counts = new Map<string, number>();
    for (const [node, count] of job.nodes) addCount(counts, labelOf(node.labels, labelKey) ?? '', count);
    job.spread.set(labelKey, counts);
  }

  private jobOnNode(job: JobEntry, node: NodeEntry, delta: number): void {
    addCount(job.nodes, node, delta);
    for (const [labelKey, counts] of job.spread)
      addCount(counts, labelOf(node.labels, labelKey) ?? '', delta);
  }

  /** A preemptible task joined (1) or left (-1) the node's candidate victims. */
  private preemptibleChanged(node: NodeEntry, task: RunningEntry, sign: 1 | -1): void {
    const victims = node.victims;
    // A binary search: victims are in compareVictims order, a total order (ids are unique). A linear scan
    // made a rebuild quadratic in the tasks per node (1.2 s of a 100,000-task rebuild at 200 a node).
    let low = 0;
    let high = victims.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (compareVictims(task, victims[middle]) > 0) low = middle + 1;
      else high = middle;
    }
    if (sign > 0) victims.splice(low, 0, task);
    else if (victims[low] === task) victims.splice(low, 1);
    else {
      const at = victims.indexOf(task);
      if (at >= 0) victims.splice(at, 1);
    }
    node.victimSums = null;
  }

  /** The node's running sums over its victims (and their largest), rebuilt when stale. */
  private victimSums(node: NodeEntry): Float64Array {
    if (node.victimSums) return node.victimSums;
    const dimensions = this.layout.size;
    const count = node.victims.length;
    const sums = new Float64Array((count + 2) * dimensions);
    const most = (count + 1) * dimensions;
    node.victims.forEach((victim, i) => {
      for (let d = 0; d < dimensions; d++) {
        const amount = victim.request[d] ?? 0;
        sums[(i + 1) * dimensions + d] = (sums[i * dimensions + d] ?? 0) + amount;
        sums[most + d] = Math.max(sums[most + d] ?? 0, amount);
      }
    });
    node.victimSums = sums;
    return sums;
  }

  private countPreemptible(priority: number, delta: number): void {
    this.preemptible[priority] = (this.preemptible[priority] ?? 0) + delta;
  }

  /** Counts a running task where it runs; `consume` takes its resources from the node's free. */
  private attach(task: RunningEntry, node: NodeEntry | null, consume: boolean): void {
    task.node = node;
    addInto(task.namespace.usage, task.request, 1);
    if (task.job) task.job.running++;
    if (!node) return;
    node.running.add(task);
    if (consume) {
      addInto(node.free, task.request, -1);
      for (const port of task.ports) addPort(node.ports, port, 1);
    }
    if (task.terminating) addInto(node.terminating, task.request, 1);
    else if (task.preemptible) {
      this.countPreemptible(task.priority, 1);
      this.preemptibleChanged(node, task, 1);
    }
    if (task.job) this.jobOnNode(task.job, node, 1);
    this.nodeChanged(node);
  }

  /** The task's resources go back to its node (if still known). */
  private release(task: RunningEntry): void {
    addInto(task.namespace.usage, task.request, -1);
    if (task.job) task.job.running--;
    const node = task.node;
    if (!node) return;
    this.unlink(task, node);
    addInto(node.free, task.request, 1);
    for (const port of task.ports) addPort(node.ports, port, -1);
    this.nodeChanged(node);
  }

  /** The task's node went away; it still counts for its namespace and job. */
  private detach(task: RunningEntry): void {
    const node = task.node;
    if (!node) return;
    this.unlink(task, node);
    task.node = null;
  }

  private unlink(task: RunningEntry, node: NodeEntry): void {
    node.running.delete(task);
    if (task.terminating) addInto(node.terminating, task.request, -1);
    else if (task.preemptible) {
      this.countPreemptible(task.priority, -1);
      this.preemptibleChanged(node, task, -1);
    }
    if (task.job) this.jobOnNode(task.job, node, -1);
  }

  private nodeChanged(node: NodeEntry): void {
    node.version++;
    if (this.dirty || node.slot < 0) return;
    for (const tree of node.trees) tree.changed(node.slot);
    this.touchRing[this.touchSeq % touchWindow] = node.slot;
    this.touchSeq++;
  }

  private memoUsable(memo: { readonly generation: number; readonly seq: number }): boolean {
    return memo.generation === this.generation && this.touchSeq - memo.seq <= touchWindow;
  }

  /** Nodes touched since `seq`, plus `extra`, each once. */
  private touchedSince(seq: number, extra: readonly NodeEntry[]): readonly NodeEntry[] {
    const stamp = ++this.stampCount;
    // One list reused by every call (callers read it at once and keep nothing): searches run for every
    // blocked shape in every plan and should make no garbage.
    const nodes = this.touchedList;
    nodes.length = 0;
    for (let s = seq; s < this.touchSeq; s++) {
      const node = this.slotNodes[this.touchRing[s % touchWindow] ?? -1];
      if (node && node.stamp !== stamp) {
        node.stamp = stamp;
        nodes.push(node);
      }
    }
    for (const node of extra) {
      if (node.stamp !== stamp) {
        node.stamp = stamp;
        nodes.push(node);
      }
    }
    return nodes;
  }

  // ---- specs, shapes, queues -----------------------------------------------------------------------

  private spec(task: AllocatorTask, job: JobEntry | null): Spec {
    const jobMatters =
      job !== null &&
      (task.distinctNodes === true || task.spreadOver !== undefined || job.runningMax < Infinity);
    // Complete JSON values joined by a character JSON never puts between them: unambiguous, and cheaper
    // than one JSON text of them all. Equal keys mean equal treatment.
    const request = task.request;
    const key =
      JSON.stringify(task.driver) +
      '|' +
      JSON.stringify(task.constraints) +
      '|' +
      (task.labelConstraints === undefined ? '' : JSON.stringify(task.labelConstraints)) +
      '|' +
      `${request.cpuMillis},${request.memoryBytes},${request.diskBytes ?? 0}` +
      (request.devices === undefined ? '' : JSON.stringify(request.devices)) +
      '|' +
      (task.ports === undefined ? '' : JSON.stringify(task.ports)) +
      '|' +
      `${task.distinctNodes === true},${task.packing ?? 'binpack'}` +
      '|' +
      (task.spreadOver === undefined ? '' : JSON.stringify(task.spreadOver)) +
      '|' +
      (task.affinities === undefined ? '' : JSON.stringify(task.affinities)) +
      '|' +
      (jobMatters ? JSON.stringify(job.id) : '');
    const existing = this.specs.get(key);
    if (existing) return existing;
    const affinities = (task.affinities ?? [])
      .slice(0, affinitiesMax)
      .map((affinity) => ({ constraint: compileConstraint(affinity.constraint), weight: affinity.weight }))
      .filter((affinity) => affinity.weight !== 0);
    const spreadOver = job === null ? null : (task.spreadOver ?? null);
    const partitionKey =
      affinities.length > 0 || spreadOver !== null
        ? JSON.stringify([spreadOver, affinities.map((a) => [a.constraint.key, a.weight])])
        : null;
    const spec: Spec = {
      key,
      shape: this.shape(task, task.distinctNodes === true ? job : null),
      packing: task.packing ?? 'binpack',
      spreadOver,
      job: jobMatters ? job : null,
      affinities,
      partitionKey,
      partition: null,
      resolvedGeneration: -1,
      refs: 0,
    };
    spec.shape.refs++;
    this.specs.set(key, spec);
    this.unresolved.add(spec);
    return spec;
  }

  private shape(task: AllocatorTask, distinctJob: JobEntry | null): Shape {
    const constraints = compileConstraints(task.constraints, task.labelConstraints);
    const eligibilityKey = JSON.stringify([task.driver, constraints.map((c) => c.key)]);
    const request = this.layout.encode(task.request);
    const ports = portList(task.ports);
    // The request by name, not by vector position: keys must not change when a device kind is learnt.
    const devices = Object.entries(task.request.devices ?? {})
      .filter(([, count]) => count !== 0)
      .sort(([a], [b]) => compareIds(a, b));
    const amounts = [task.request.cpuMillis, task.request.memoryBytes, task.request.diskBytes ?? 0, devices];
    const key = JSON.stringify([eligibilityKey, amounts, ports, distinctJob?.id ?? null]);
    const existing = this.shapes.get(key);
    if (existing) return existing;
    const shape: Shape = {
      key,
      eligibilityKey,
      driver: task.driver,
      constraints,
      requestSource: task.request,
      request,
      requestText: formatRequest(task.request),
      ports,
      distinctJob,
      eligibility: null,
      largeEnough: -1,
      busyText: null,
      blockedPass: 0,
      reservedPass: 0,
      fitMemo: null,
      nearestMemo: null,
      preemptMemos: new Map(),
      refs: 0,
    };
    this.shapes.set(key, shape);
    return shape;
  }

  private queueFor(task: AllocatorTask, spec: Spec, namespace: NamespaceEntry): Queue {
    if (task.group !== undefined) {
      const key = `gang\u0001${task.group}`;
      const existing = this.queues.get(key);
      if (existing) return existing;
      const queue: GangQueue = {
        kind: 'gang',
        key,
        name: task.group,
        colocated: task.colocated === true,
        priority: task.priority,
        namespace,
        members: [],
        version: 0,
        blockedPass: 0,
        reason: '',
        reported: null,
      };
      this.queues.set(key, queue);
      return queue;
    }
    const nominated = task.nominatedNodeId ?? null;
    const key =
      nominated === null
        ? `${task.priority}\u0001${namespace.name}\u0001${spec.key}`
        : `nominated\u0001${task.id}`;
    const existing = this.queues.get(key);
    if (existing) return existing;
    const queue: TaskQueue = {
      kind: 'tasks',
      key,
      priority: task.priority,
      namespace,
      spec,
      nominated,
      tasks: [],
      head: 0,
      live: 0,
      version: 0,
      cursor: 0,
      blockedPass: 0,
      reason: '',
      reported: null,
    };
    this.queues.set(key, queue);
    return queue;
  }

  private enqueue(queue: Queue, entry: PendingEntry): void {
    queue.version++;
    if (queue.kind === 'gang') {
      if (queue.members.length > 0) this.leaveLevel(queue);
      queue.members.push(entry);
      queue.members.sort(comparePending);
      const first = queue.members[0];
      assert(first, 'a gang has a first member');
      queue.priority = first.priority;
      queue.namespace = first.namespace;
      this.joinLevel(queue);
      return;
    }
    const last = queue.tasks[queue.tasks.length - 1];
    queue.tasks.push(entry);
    if (last && comparePending(last, entry) > 0) {
      this.unsorted.add(queue);
    }
    queue.live++;
    if (queue.live === 1) this.joinLevel(queue);
  }

  private dequeue(entry: PendingEntry): void {
    this.pending.delete(entry.id);
    entry.job?.pending.delete(entry);
    entry.removed = true;
    const queue = entry.queue;
    if (queue.kind === 'gang') {
      this.leaveLevel(queue);
      queue.members = queue.members.filter((member) => member !== entry);
      const first = queue.members[0];
      if (first) {
        queue.priority = first.priority;
        queue.namespace = first.namespace;
        this.joinLevel(queue);
      } else {
        this.queues.delete(queue.key);
      }
    } else {
      queue.live--;
      if (queue.live === 0) {
        this.leaveLevel(queue);
        this.queues.delete(queue.key);
        this.unsorted.delete(queue);
      } else if (queue.tasks.length - queue.live > Math.max(32, queue.live)) {
        queue.tasks = queue.tasks.filter((task) => !task.removed);
        queue.head = 0;
      }
    }
    this.releaseSpec(entry.spec);
  }

  private releaseSpec(spec: Spec): void {
    spec.refs--;
    if (spec.refs > 0) return;
    this.specs.delete(spec.key);
    this.unresolved.delete(spec);
    if (spec.partition) {
      spec.partition.refs--;
      if (spec.partition.refs === 0) this.unusedIndexes++;
    }
    const shape = spec.shape;
    shape.refs--;
    if (shape.refs > 0) return;
    this.shapes.delete(shape.key);
    if (shape.eligibility) {
      shape.eligibility.refs--;
      if (shape.eligibility.refs === 0) this.unusedIndexes++;
    }
  }

  private joinLevel(queue: Queue): void {
    let level = this.levels.get(queue.priority);
    if (!level) {
      level = new Map();
      this.levels.set(queue.priority, level);
      this.priorities = null;
    }
    let queues = level.get(queue.namespace);
    if (!queues) {
      queues = new Set();
      level.set(queue.namespace, queues);
    }
    queues.add(queue);
  }

  private leaveLevel(queue: Queue): void {
    const level = this.levels.get(queue.priority);
    const queues = level?.get(queue.namespace);
    if (!level || !queues) return;
    queues.delete(queue);
    if (queues.size === 0) level.delete(queue.namespace);
    if (level.size === 0) {
      this.levels.delete(queue.priority);
      this.priorities = null;
    }
  }

  // ---- indexes -------------------------------------------------------------------------------------

  /** Brings indexes up to date before a pass. */
  private prepare(): void {
    if (this.unusedIndexes > unusedIndexesMax) this.dirty = true;
    if (this.dirty) this.rebuild();
    for (const spec of this.unresolved) this.resolve(spec);
    this.unresolved.clear();
    for (const queue of this.unsorted) {
      if (queue.kind !== 'tasks') continue;
      queue.tasks = queue.tasks.filter((task) => !task.removed).sort(comparePending);
      queue.head = 0;
    }
    this.unsorted.clear();
    this.priorities ??= [...this.levels.keys()].sort((a, b) => b - a);
  }

  private rebuild(): void {
    this.generation++;
    this.slotNodes = [...this.nodes.values()].sort((a, b) => compareIds(a.id, b.id));
    this.totals = new Float64Array(this.layout.size);
    this.slotNodes.forEach((node, slot) => {
      node.slot = slot;
      node.trees = [];
      node.reservedPass = 0;
      if (node.schedulable) addInto(this.totals, node.capacity, 1);
    });
    this.eligibilities = new Map();
    for (const shape of this.shapes.values()) {
      shape.eligibility = null;
      shape.largeEnough = -1;
      shape.busyText = null;
      shape.fitMemo = null;
      shape.nearestMemo = null;
      shape.preemptMemos.clear();
    }
    for (const spec of this.specs.values()) {
      spec.partition = null;
      this.unresolved.add(spec);
    }
    // Node labels may have changed: recount spread values.
    for (const job of this.jobs.values()) {
      for (const [labelKey, counts] of job.spread) {
        counts.clear();
        for (const [node, count] of job.nodes) addCount(counts, labelOf(node.labels, labelKey) ?? '', count);
      }
    }
    this.touchSeq = 0;
    this.unusedIndexes = 0;
    this.dirty = false;
  }

  private resolve(spec: Spec): void {
    if (this.specs.get(spec.key) !== spec || spec.resolvedGeneration === this.generation) return;
    spec.resolvedGeneration = this.generation;
    const eligibility = this.eligibilityOf(spec.shape);
    if (spec.partitionKey !== null) {
      let partition = eligibility.partitions.get(spec.partitionKey);
      if (!partition) {
        partition = this.buildPartition(eligibility, spec);
        eligibility.partitions.set(spec.partitionKey, partition);
      }
      partition.refs++;
      spec.partition = partition;
    }
  }

  private eligibilityOf(shape: Shape): Eligibility {
    if (shape.eligibility) return shape.eligibility;
    let eligibility = this.eligibilities.get(shape.eligibilityKey);
    if (!eligibility) {
      eligibility = this.buildEligibility(shape);
      this.eligibilities.set(shape.eligibilityKey, eligibility);
    }
    eligibility.refs++;
    shape.eligibility = eligibility;
    return eligibility;
  }

  private buildEligibility(shape: Shape): Eligibility {
    const schedulable = this.slotNodes.filter((node) => node.schedulable);
    const capable = schedulable.filter((node) => node.drivers.has(shape.driver));
    const nodes = capable.filter((node) => matchesAll(node.labels, shape.constraints));
    const failures: string[] = [];
    for (const constraint of shape.constraints) {
      let failing = 0;
      for (const node of capable) if (!constraint.matches(node.labels)) failing++;
      if (failing > 0)
        failures.push(`${failing} node${failing === 1 ? ' fails' : 's fail'} ${constraint.text}`);
    }
    let emptyReason: string;
    if (this.slotNodes.length === 0) emptyReason = 'no nodes are up';
    else if (schedulable.length === 0) emptyReason = 'no node accepts new tasks (all are draining)';
    else if (capable.length === 0) emptyReason = `no node has a healthy ${shape.driver} driver`;
    else emptyReason = `no node matches the constraints (${failures.join('; ')})`;
    return {
      key: shape.eligibilityKey,
      nodes,
      tree: this.buildTree(nodes),
      emptyReason,
      failureText: failures.map((failure) => `; ${failure}`).join(''),
      partitions: new Map(),
      refs: 0,
    };
  }

  private buildPartition(eligibility: Eligibility, spec: Spec): Partition {
    let spreadCounts = spec.spreadOver !== null;
    if (spec.spreadOver !== null) {
      const values = new Set<string>();
      for (const node of eligibility.nodes) values.add(labelOf(node.labels, spec.spreadOver) ?? '');
      if (values.size > spreadValuesMax) spreadCounts = false;
    }
    const groups = new Map<string, { mask: number; value: string; nodes: NodeEntry[] }>();
    for (const node of eligibility.nodes) {
      let mask = 0;
      spec.affinities.forEach((affinity, bit) => {
        if (affinity.constraint.matches(node.labels)) mask |= 1 << bit;
      });
      const value =
        spreadCounts && spec.spreadOver !== null ? (labelOf(node.labels, spec.spreadOver) ?? '') : '';
      const key = `${mask}\u0001${value}`;
      let group = groups.get(key);
      if (!group) {
        group = { mask, value, nodes: [] };
        groups.set(key, group);
      }
      group.nodes.push(node);
    }
    const cells: Cell[] = [];
    for (const group of groups.values()) {
      let score = 0;
      spec.affinities.forEach((affinity, bit) => {
        if ((group.mask & (1 << bit)) !== 0) score += affinity.weight;
      });
      cells.push({ score, value: group.value, mask: group.mask, tree: this.buildTree(group.nodes) });
    }
    return { cells, spreadCounts, refs: 0 };
  }

  private buildTree(nodes: readonly NodeEntry[]): NodeTree {
    const tree = new NodeTree(
      this.layout.size,
      nodes.map((node) => node.slot),
      this.slotNodes.length,
      (slot) => this.slotNodes[slot]?.capacity ?? new Float64Array(this.layout.size),
      (slot) => this.slotNodes[slot]?.free ?? new Float64Array(this.layout.size),
    );
    for (const node of nodes) node.trees.push(tree);
    return tree;
  }

  /** Grows the vector layout when a new device kind appears; every vector is re-laid and indexes rebuilt. */
  private learnKinds(resources: readonly (Partial<Resources> | undefined)[]): void {
    if (resources.every((r) => r?.devices === undefined)) return;
    const missing = new Set<string>();
    for (const r of resources) for (const kind of this.layout.missingKinds(r)) missing.add(kind);
    if (missing.size === 0) return;
    const previous = this.layout;
    const next = new ResourceLayout([...previous.kinds, ...missing]);
    this.layout = next;
    for (const node of this.nodes.values()) {
      node.capacity = next.encode(node.source.capacity);
      node.free = next.remap(node.free, previous, 0);
      node.terminating = next.remap(node.terminating, previous, 0);
      node.victimSums = null;
    }
    for (const task of this.running.values()) task.request = next.encode(task.requestSource);
    for (const shape of this.shapes.values()) shape.request = next.encode(shape.requestSource);
    for (const namespace of this.namespaces.values()) {
      namespace.usage = next.remap(namespace.usage, previous, 0);
      namespace.quota = next.encodeLimit(namespace.quotaSource);
    }
    this.dirty = true;
  }
}

// ---- small helpers ---------------------------------------------------------------------------------

function plural(count: number): string {
  return count === 1 ? '' : 's';
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) return false;
  for (const value of a) if (!b.has(value)) return false;
  return true;
}
