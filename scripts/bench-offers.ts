/**
 * Offer benchmark (issue #17): the leader's offer engine with frameworks on a large simulated cluster.
 * Prints the offers the leader makes per second, the time from a resource freeing to a framework's launch
 * on it (p50/p99), the utilisation reached and each framework's dominant share beside its weighted-fair
 * target, with the Mesos paper's figures beside.
 *
 *   node scripts/bench-offers.ts [--nodes 1000] [--frameworks 10] [--seconds 60] [--round-interval-ms 100]
 *                                [--seed 1] [--wall-limit-s 60]
 *
 * Without --nodes and --frameworks it runs 1,000 nodes × 10 frameworks, then the Mesos paper's 200
 * frameworks on 5,000 nodes. A run that takes more than --wall-limit-s of real time stops after the round
 * in progress and reports the simulated time it reached.
 *
 * What is real: the `OfferBook` (src/frameworks/offers.ts), in process, and the time spent inside each of
 * its calls (offerRound, accept, settle, decline, suppress, revive, heldOn), measured with performance.now()
 * — the leader's cost. Everything else is simulated, on one thread, from the seed: the nodes (16 cores,
 * 64 GiB each, always up), the frameworks and their answers, the tasks and their ends, the built-in
 * scheduler (framework zero), and time. Not included yet: the HTTP streams (encoding, sending OFFERS),
 * the Raft commit of each launch (an accepted launch is committed and settled in the same turn), the
 * agents starting tasks.
 *
 * The simulation: an offer round every --round-interval-ms of simulated time, as the leader will run it,
 * on a view built from the simulated state. Frameworks are greedy (they always have tasks to run) in four
 * namespaces of weights 3, 2, 1, 1; every tenth has priority 60 and runs at most its part of 15 % of the
 * cluster (it suppresses at that cap, revives below 90 % of it), every tenth priority 40, the rest 50.
 * Each has one task shape (0.5–4 cores, 4 GiB per core: the nodes' ratio, so dominant shares add up and
 * the weighted-fair target is exact), which it gives REVIVE as its minimum, and answers each OFFERS event
 * 1–5 ms after the round (network and decision, seeded): per offer, it declines a fixed share (5–20 %,
 * refusing the node 1–5 s), else accepts as many of its tasks as fit (one ACCEPT per offer; the unused
 * rest is filtered for the default 5 s while no larger), declining what holds none (or passes its cap).
 * Tasks last 1–20 s (uniform). Built-in work (namespace `default`, weight 1, priority 50, 1–4 cores)
 * arrives as a Poisson stream sized to hold 10 % of the cluster; the built-in allocator places it first
 * fit on free room less `heldOn` when it arrives and before each round, and what still waits is passed to
 * the round as demand (one entry per shape).
 *
 * Freed → launched: every task end on a node (simulated time tf) is a freeing; the next ACCEPT that lands
 * a framework's tasks on that node (simulated time ta) ends every freeing pending there, each one sample:
 *   simulated     = ta − tf
 *   with leader   = ta − tf + (measured time of every offerRound run at a simulated time in [tf, ta])
 *                           + (measured time of that ACCEPT and its settle)
 * i.e. the leader is one thread, and each round it runs delays everything behind it by its real cost.
 * Built-in work placed on the node first ends its pending freeings without a sample (counted apart); so
 * do the run's end (counted as never reused). Dominant shares and utilisation are averaged over the
 * samples taken before each round in the second half of the rounds run.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import type { NamespacePolicy, Resources } from '../src/allocator/index.ts';
import {
  OfferBook,
  type BuiltInDemand,
  type LaunchTask,
  type Offer,
  type OfferNode,
  type OfferView,
} from '../src/frameworks/index.ts';
import { seededRandom, type Random } from '../src/shared/random.ts';
import { percentile } from './lib/bench.ts';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string' },
    frameworks: { type: 'string' },
    seconds: { type: 'string', default: '60' },
    'round-interval-ms': { type: 'string', default: '100' },
    seed: { type: 'string', default: '1' },
    'wall-limit-s': { type: 'string', default: '60' },
  },
});

const GiB = 1024 ** 3;
const nodeCapacity: Resources = { cpuMillis: 16_000, memoryBytes: 64 * GiB };
/** Memory per core of every task: the nodes' ratio. */
const memoryBytesPerCore = 4 * GiB;
const namespaces: readonly (NamespacePolicy & { readonly weight: number })[] = [
  { name: 'web', weight: 3 },
  { name: 'batch', weight: 2 },
  { name: 'ml', weight: 1 },
  { name: 'dev', weight: 1 },
  { name: 'default', weight: 1 },
];
const builtInNamespace = 'default';
const builtInPriority = 50;
/** What the priority-60 frameworks run at most, together: a share of the cluster's CPU. */
const highPriorityShare = 0.15;
/** Built-in arrivals are sized to hold this share of the cluster's CPU. */
const builtInLoadShare = 0.1;
/**
 * A capped framework revives once it holds no more than this share of its cap: reviving on every task end
 * hands it each round's whole free room (it goes first), which it mostly declines, and everyone else waits
 * a round — 18 % utilisation in this simulation.
 */
const reviveBelowCapShare = 0.9;
const taskDurationMsMin = 1000;
const taskDurationMsMax = 20_000;
const answerDelayMsMin = 1;
const answerDelayMsMax = 5;
const declineRefuseMsMin = 1000;
const declineRefuseMsMax = 5000;

/** One task of the framework: also its REVIVE minimum, so it is not offered room it cannot use. */
function shapeOf(framework: SimFramework): Resources {
  return { cpuMillis: framework.taskCpuMillis, memoryBytes: framework.taskMemoryBytes };
}

function positive(name: string, text: string | undefined, fallback: number): number {
  const value = text === undefined ? fallback : Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    console.error(`--${name} must be a whole number ≥ 1, not ${text}`);
    process.exit(2);
  }
  return value;
}

interface Config {
  readonly nodes: number;
  readonly frameworks: number;
  readonly seconds: number;
  readonly roundIntervalMs: number;
  readonly seed: number;
  readonly wallLimitMs: number;
}

// ---- the simulated world ------------------------------------------------------------------------------

interface SimFramework {
  readonly id: string;
  readonly role: string;
  readonly weight: number;
  readonly priority: number;
  readonly taskCpuMillis: number;
  readonly taskMemoryBytes: number;
  /** Share of its offers it declines whatever they hold. */
  readonly declineShare: number;
  /** CPU it runs at most (the priority-60 frameworks); null: no cap. */
  readonly cpuMillisCap: number | null;
  cpuMillisHeld: number;
  memoryBytesHeld: number;
  suppressed: boolean;
  /** Offers it was made and has not answered (a RESCIND removes one). */
  readonly held: Set<string>;
  taskSeq: number;
  /** Its dominant share, averaged over the second half of the run. */
  shareMean: number;
}

interface Task {
  readonly nodeIndex: number;
  /** Null: built-in. */
  readonly framework: SimFramework | null;
  readonly cpuMillis: number;
  readonly memoryBytes: number;
}

interface PendingBuiltIn {
  readonly cpuMillis: number;
  readonly memoryBytes: number;
  readonly durationMs: number;
  readonly submittedAtMs: number;
}

type SimEvent =
  | { readonly type: 'end'; readonly task: Task }
  | { readonly type: 'answer'; readonly framework: SimFramework; readonly offers: readonly Offer[] }
  | { readonly type: 'arrival' };

/** Events by time, then by when they were queued: a binary heap, so runs replay exactly. */
class EventQueue {
  private readonly heap: { atMs: number; seq: number; event: SimEvent }[] = [];
  private seq = 0;

  push(atMs: number, event: SimEvent): void {
    const heap = this.heap;
    heap.push({ atMs, seq: this.seq++, event });
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  /** The next event due at or before `atMs`, or null. */
  popDue(atMs: number): { atMs: number; event: SimEvent } | null {
    const heap = this.heap;
    const top = heap[0];
    if (top === undefined || top.atMs > atMs) return null;
    const last = heap.pop();
    if (last !== undefined && heap.length > 0) {
      heap[0] = last;
      let i = 0;
      for (;;) {
        const left = 2 * i + 1;
        const right = left + 1;
        let least = i;
        if (left < heap.length && this.before(left, least)) least = left;
        if (right < heap.length && this.before(right, least)) least = right;
        if (least === i) break;
        this.swap(i, least);
        i = least;
      }
    }
    return top;
  }

  private before(a: number, b: number): boolean {
    const x = this.heap[a];
    const y = this.heap[b];
    if (x === undefined || y === undefined) throw new Error('heap index out of range');
    return x.atMs < y.atMs || (x.atMs === y.atMs && x.seq < y.seq);
  }

  private swap(a: number, b: number): void {
    const x = this.heap[a];
    const y = this.heap[b];
    if (x === undefined || y === undefined) throw new Error('heap index out of range');
    this.heap[a] = y;
    this.heap[b] = x;
  }
}

/** Real time spent inside the book, by call. */
interface LeaderTime {
  roundMs: number;
  acceptMs: number;
  settleMs: number;
  declineMs: number;
  suppressReviveMs: number;
  heldOnMs: number;
}

interface Result {
  readonly config: Config;
  /** Simulated time reached (less than asked when the wall limit stopped the run). */
  readonly simulatedMs: number;
  readonly wallMs: number;
  readonly offers: number;
  readonly rounds: number;
  readonly roundMs: readonly number[];
  readonly leader: LeaderTime;
  readonly accepts: number;
  readonly acceptsRefused: number;
  readonly declines: number;
  readonly declinesUnfit: number;
  readonly rescinds: number;
  readonly frameworkTasks: number;
  readonly builtInTasks: number;
  readonly builtInWaitMs: readonly number[];
  readonly freedSimulatedMs: readonly number[];
  readonly freedWithLeaderMs: readonly number[];
  readonly freeingsTakenByBuiltIn: number;
  readonly freeingsNeverReused: number;
  readonly utilisation: number;
  readonly builtInShare: number;
  readonly frameworks: readonly SimFramework[];
  readonly invariantProblems: readonly string[];
}

function run(config: Config): Result {
  const random: Random = seededRandom(config.seed);
  const durationMs = config.seconds * 1000;
  const nodeIds = Array.from({ length: config.nodes }, (_, i) => `node-${String(i).padStart(5, '0')}`);
  const cpuUsed = new Float64Array(config.nodes);
  const memoryUsed = new Float64Array(config.nodes);
  const totalCpuMillis = config.nodes * nodeCapacity.cpuMillis;
  const totalMemoryBytes = config.nodes * nodeCapacity.memoryBytes;
  const book = new OfferBook({ epoch: 'bench.1' });
  const queue = new EventQueue();
  const leader: LeaderTime = {
    roundMs: 0,
    acceptMs: 0,
    settleMs: 0,
    declineMs: 0,
    suppressReviveMs: 0,
    heldOnMs: 0,
  };
  const timed = <T>(key: keyof LeaderTime, call: () => T): T => {
    const start = performance.now();
    const result = call();
    leader[key] += performance.now() - start;
    return result;
  };

  // The frameworks, and their subscriptions.
  const highCount = Array.from({ length: config.frameworks }, (_, i) => i).filter((i) => i % 10 === 0).length;
  const frameworks: SimFramework[] = [];
  const frameworksById = new Map<string, SimFramework>();
  for (let i = 0; i < config.frameworks; i++) {
    const namespace = namespaces[i % 4];
    if (namespace === undefined) throw new Error('four namespaces');
    const priority = i % 10 === 0 ? 60 : i % 10 === 9 ? 40 : 50;
    const taskCpuMillis = [500, 1000, 2000, 4000][random.int(0, 4)] ?? 1000;
    const framework: SimFramework = {
      id: `fw-${String(i).padStart(3, '0')}`,
      role: namespace.name,
      weight: namespace.weight,
      priority,
      taskCpuMillis,
      taskMemoryBytes: (taskCpuMillis / 1000) * memoryBytesPerCore,
      declineShare: [0.05, 0.1, 0.2][random.int(0, 3)] ?? 0.1,
      cpuMillisCap: priority === 60 ? Math.floor((highPriorityShare * totalCpuMillis) / highCount) : null,
      cpuMillisHeld: 0,
      memoryBytesHeld: 0,
      suppressed: false,
      held: new Set(),
      taskSeq: 0,
      shareMean: 0,
    };
    frameworks.push(framework);
    frameworksById.set(framework.id, framework);
    book.subscribe({ id: framework.id, info: { role: framework.role, priority } });
    timed('suppressReviveMs', () => book.revive(framework.id, shapeOf(framework)));
  }

  // Built-in arrivals: a Poisson stream holding builtInLoadShare of the CPU on average.
  const builtInShapes = [1000, 2000, 4000];
  const builtInCpuMillisMean = builtInShapes.reduce((sum, cpu) => sum + cpu, 0) / builtInShapes.length;
  const taskDurationMsMean = (taskDurationMsMin + taskDurationMsMax) / 2;
  const arrivalsPerMs = (builtInLoadShare * totalCpuMillis) / (builtInCpuMillisMean * taskDurationMsMean);
  const nextArrivalMs = (nowMs: number): number =>
    nowMs + Math.round(-Math.log(1 - random.next()) / arrivalsPerMs);
  const pendingBuiltIn: PendingBuiltIn[] = [];
  queue.push(nextArrivalMs(0), { type: 'arrival' });
  const duration = (): number => random.int(taskDurationMsMin, taskDurationMsMax + 1);

  // Freeings pending on each node: when, and the rounds' measured time so far then.
  const freeings: { atMs: number; roundMsBefore: number }[][] = Array.from(
    { length: config.nodes },
    () => [],
  );
  const freedSimulatedMs: number[] = [];
  const freedWithLeaderMs: number[] = [];
  let freeingsTakenByBuiltIn = 0;

  let offers = 0;
  let accepts = 0;
  let acceptsRefused = 0;
  let declines = 0;
  /** Of the declines: the offer held no room for one task, or the framework was at its cap. */
  let declinesUnfit = 0;
  let rescinds = 0;
  let frameworkTasks = 0;
  let builtInTasks = 0;
  const builtInWaitMs: number[] = [];
  const roundMs: number[] = [];
  // Sampled before each round; averaged over the second half of the rounds run.
  const utilisationSamples: number[] = [];
  const builtInShareSamples: number[] = [];
  const shareSamples: Float64Array[] = [];
  let builtInCpuHeld = 0;

  const start = (task: Task, nowMs: number, durationOfTaskMs: number): void => {
    cpuUsed[task.nodeIndex] = (cpuUsed[task.nodeIndex] ?? 0) + task.cpuMillis;
    memoryUsed[task.nodeIndex] = (memoryUsed[task.nodeIndex] ?? 0) + task.memoryBytes;
    if ((cpuUsed[task.nodeIndex] ?? 0) > nodeCapacity.cpuMillis)
      throw new Error(`node ${nodeIds[task.nodeIndex]} holds more CPU than it has`);
    if ((memoryUsed[task.nodeIndex] ?? 0) > nodeCapacity.memoryBytes)
      throw new Error(`node ${nodeIds[task.nodeIndex]} holds more memory than it has`);
    if (task.framework) {
      task.framework.cpuMillisHeld += task.cpuMillis;
      task.framework.memoryBytesHeld += task.memoryBytes;
    } else builtInCpuHeld += task.cpuMillis;
    queue.push(nowMs + durationOfTaskMs, { type: 'end', task });
  };

  const end = (task: Task, nowMs: number): void => {
    cpuUsed[task.nodeIndex] = (cpuUsed[task.nodeIndex] ?? 0) - task.cpuMillis;
    memoryUsed[task.nodeIndex] = (memoryUsed[task.nodeIndex] ?? 0) - task.memoryBytes;
    freeings[task.nodeIndex]?.push({ atMs: nowMs, roundMsBefore: leader.roundMs });
    const framework = task.framework;
    if (!framework) {
      builtInCpuHeld -= task.cpuMillis;
      return;
    }
    framework.cpuMillisHeld -= task.cpuMillis;
    framework.memoryBytesHeld -= task.memoryBytes;
    if (
      framework.suppressed &&
      framework.cpuMillisCap !== null &&
      framework.cpuMillisHeld <= reviveBelowCapShare * framework.cpuMillisCap
    ) {
      framework.suppressed = false;
      timed('suppressReviveMs', () => book.revive(framework.id, shapeOf(framework)));
    }
  };

  const decline = (
    framework: SimFramework,
    offer: Offer,
    refuseMs: number | undefined,
    nowMs: number,
  ): void => {
    timed('declineMs', () => book.decline(framework.id, [offer.id], refuseMs, nowMs));
    declines++;
  };

  const suppressAtCap = (framework: SimFramework): void => {
    if (framework.cpuMillisCap === null || framework.suppressed) return;
    if (framework.cpuMillisHeld + framework.taskCpuMillis <= framework.cpuMillisCap) return;
    framework.suppressed = true;
    timed('suppressReviveMs', () => book.suppress(framework.id));
  };

  const answer = (framework: SimFramework, offered: readonly Offer[], nowMs: number): void => {
    for (const offer of offered) {
      if (!framework.held.delete(offer.id)) continue;
      if (random.next() < framework.declineShare) {
        decline(framework, offer, random.int(declineRefuseMsMin, declineRefuseMsMax + 1), nowMs);
        continue;
      }
      let count = Math.min(
        Math.floor(offer.resources.cpuMillis / framework.taskCpuMillis),
        Math.floor(offer.resources.memoryBytes / framework.taskMemoryBytes),
      );
      if (framework.cpuMillisCap !== null)
        count = Math.min(
          count,
          Math.floor((framework.cpuMillisCap - framework.cpuMillisHeld) / framework.taskCpuMillis),
        );
      if (count <= 0) {
        decline(framework, offer, undefined, nowMs);
        declinesUnfit++;
        suppressAtCap(framework);
        continue;
      }
      const tasks: LaunchTask<null>[] = [];
      for (let i = 0; i < count; i++)
        tasks.push({
          taskId: `t${++framework.taskSeq}`,
          nodeId: offer.nodeId,
          resources: { cpuMillis: framework.taskCpuMillis, memoryBytes: framework.taskMemoryBytes },
          spec: null,
        });
      const acceptStart = performance.now();
      const result = book.accept({ frameworkId: framework.id, offerIds: [offer.id], tasks }, nowMs);
      const acceptMs = performance.now() - acceptStart;
      leader.acceptMs += acceptMs;
      if (!result.ok) {
        acceptsRefused++;
        continue;
      }
      accepts++;
      // The launch command commits in this same turn (Raft is not simulated), then the book lets go.
      const settleStart = performance.now();
      book.settle(result.acceptId);
      const settleMs = performance.now() - settleStart;
      leader.settleMs += settleMs;
      const nodeIndex = Number(offer.nodeId.slice('node-'.length));
      for (const launch of result.launches) {
        start(
          {
            nodeIndex,
            framework,
            cpuMillis: launch.resources.cpuMillis,
            memoryBytes: launch.resources.memoryBytes,
          },
          nowMs,
          duration(),
        );
        frameworkTasks++;
      }
      const pending = freeings[nodeIndex] ?? [];
      for (const freeing of pending) {
        freedSimulatedMs.push(nowMs - freeing.atMs);
        freedWithLeaderMs.push(
          nowMs - freeing.atMs + (leader.roundMs - freeing.roundMsBefore) + acceptMs + settleMs,
        );
      }
      pending.length = 0;
      suppressAtCap(framework);
    }
  };

  const advance = (untilMs: number): void => {
    for (let due = queue.popDue(untilMs); due !== null; due = queue.popDue(untilMs)) {
      const event = due.event;
      switch (event.type) {
        case 'end':
          end(event.task, due.atMs);
          break;
        case 'answer':
          answer(event.framework, event.offers, due.atMs);
          break;
        case 'arrival': {
          const cpuMillis = builtInShapes[random.int(0, builtInShapes.length)] ?? 1000;
          pendingBuiltIn.push({
            cpuMillis,
            memoryBytes: (cpuMillis / 1000) * memoryBytesPerCore,
            durationMs: duration(),
            submittedAtMs: due.atMs,
          });
          queue.push(nextArrivalMs(due.atMs), { type: 'arrival' });
          placeBuiltIn(due.atMs);
          break;
        }
      }
    }
  };

  const view = (): OfferView => {
    const nodes: OfferNode[] = nodeIds.map((id, i) => ({
      id,
      capacity: nodeCapacity,
      free: {
        cpuMillis: nodeCapacity.cpuMillis - (cpuUsed[i] ?? 0),
        memoryBytes: nodeCapacity.memoryBytes - (memoryUsed[i] ?? 0),
      },
      up: true,
      schedulable: true,
    }));
    const namespaceUsage = new Map<string, Resources>([
      [
        builtInNamespace,
        { cpuMillis: builtInCpuHeld, memoryBytes: (builtInCpuHeld / 1000) * memoryBytesPerCore },
      ],
    ]);
    const frameworkUsage = new Map<string, Resources>();
    for (const framework of frameworks) {
      const held = namespaceUsage.get(framework.role) ?? { cpuMillis: 0, memoryBytes: 0 };
      namespaceUsage.set(framework.role, {
        cpuMillis: held.cpuMillis + framework.cpuMillisHeld,
        memoryBytes: held.memoryBytes + framework.memoryBytesHeld,
      });
      frameworkUsage.set(framework.id, {
        cpuMillis: framework.cpuMillisHeld,
        memoryBytes: framework.memoryBytesHeld,
      });
    }
    const shapes = new Map<number, BuiltInDemand>();
    for (const work of pendingBuiltIn)
      if (!shapes.has(work.cpuMillis))
        shapes.set(work.cpuMillis, {
          priority: builtInPriority,
          namespace: builtInNamespace,
          request: { cpuMillis: work.cpuMillis, memoryBytes: work.memoryBytes },
        });
    return { nodes, namespaces, namespaceUsage, frameworkUsage, builtIn: [...shapes.values()] };
  };

  /**
   * The built-in allocator: first fit (from a rotating node) on free less heldOn, when work arrives and
   * before each round, so a round is passed only the work that fits nowhere (its last plan's waiting tasks).
   */
  let placementCursor = 0;
  const placeBuiltIn = (nowMs: number): void => {
    if (pendingBuiltIn.length === 0) return;
    const heldCpu = new Map<number, number>();
    const heldMemory = new Map<number, number>();
    const roomOf = (i: number): { cpuMillis: number; memoryBytes: number } => {
      if (!heldCpu.has(i)) {
        const held = timed('heldOnMs', () => book.heldOn(nodeIds[i] ?? ''));
        heldCpu.set(i, held.cpuMillis);
        heldMemory.set(i, held.memoryBytes);
      }
      return {
        cpuMillis: nodeCapacity.cpuMillis - (cpuUsed[i] ?? 0) - (heldCpu.get(i) ?? 0),
        memoryBytes: nodeCapacity.memoryBytes - (memoryUsed[i] ?? 0) - (heldMemory.get(i) ?? 0),
      };
    };
    let failedCpuMillis = Infinity;
    const kept: PendingBuiltIn[] = [];
    for (const work of pendingBuiltIn) {
      let placed = false;
      if (work.cpuMillis < failedCpuMillis)
        for (let k = 0; k < config.nodes && !placed; k++) {
          const i = (placementCursor + k) % config.nodes;
          // Cheap test first: only nodes whose free room fits are asked what the book holds there.
          if (nodeCapacity.cpuMillis - (cpuUsed[i] ?? 0) < work.cpuMillis) continue;
          const room = roomOf(i);
          if (room.cpuMillis < work.cpuMillis || room.memoryBytes < work.memoryBytes) continue;
          start(
            { nodeIndex: i, framework: null, cpuMillis: work.cpuMillis, memoryBytes: work.memoryBytes },
            nowMs,
            work.durationMs,
          );
          builtInTasks++;
          builtInWaitMs.push(nowMs - work.submittedAtMs);
          freeingsTakenByBuiltIn += freeings[i]?.length ?? 0;
          if (freeings[i]) freeings[i].length = 0;
          placed = true;
          placementCursor = (i + 1) % config.nodes;
        }
      if (!placed) {
        failedCpuMillis = Math.min(failedCpuMillis, work.cpuMillis);
        kept.push(work);
      }
    }
    pendingBuiltIn.splice(0, pendingBuiltIn.length, ...kept);
  };

  const wallStart = performance.now();
  let round = 0;
  let simulatedMs = durationMs;
  for (let nowMs = 0; nowMs < durationMs; nowMs += config.roundIntervalMs, round++) {
    advance(nowMs);
    {
      let cpuHeld = builtInCpuHeld;
      const shares = new Float64Array(frameworks.length);
      frameworks.forEach((framework, i) => {
        cpuHeld += framework.cpuMillisHeld;
        shares[i] = Math.max(
          framework.cpuMillisHeld / totalCpuMillis,
          framework.memoryBytesHeld / totalMemoryBytes,
        );
      });
      shareSamples.push(shares);
      utilisationSamples.push(cpuHeld / totalCpuMillis);
      builtInShareSamples.push(builtInCpuHeld / totalCpuMillis);
    }
    placeBuiltIn(nowMs);
    const roundView = view();
    const roundStart = performance.now();
    const events = book.offerRound(roundView, nowMs);
    const took = performance.now() - roundStart;
    leader.roundMs += took;
    roundMs.push(took);
    for (const event of events) {
      if (event.type === 'RESCIND') {
        rescinds++;
        frameworksById.get(event.frameworkId)?.held.delete(event.offerId);
      }
      if (event.type !== 'OFFERS') continue;
      const framework = frameworksById.get(event.frameworkId);
      if (!framework) throw new Error(`offers to unknown framework ${event.frameworkId}`);
      offers += event.offers.length;
      for (const offer of event.offers) framework.held.add(offer.id);
      queue.push(nowMs + random.int(answerDelayMsMin, answerDelayMsMax + 1), {
        type: 'answer',
        framework,
        offers: event.offers,
      });
    }
    if (performance.now() - wallStart > config.wallLimitMs) {
      simulatedMs = nowMs + config.roundIntervalMs;
      round++;
      break;
    }
  }
  advance(simulatedMs);
  const wallMs = performance.now() - wallStart;
  const freeingsNeverReused = freeings.reduce((sum, pending) => sum + pending.length, 0);
  const secondHalf = Math.floor(shareSamples.length / 2);
  const mean = (values: readonly number[]): number =>
    values.slice(secondHalf).reduce((sum, value) => sum + value, 0) / Math.max(1, values.length - secondHalf);
  frameworks.forEach((framework, i) => {
    framework.shareMean = mean(shareSamples.map((shares) => shares[i] ?? 0));
  });
  return {
    config,
    simulatedMs,
    wallMs,
    offers,
    rounds: round,
    roundMs,
    leader,
    accepts,
    acceptsRefused,
    declines,
    declinesUnfit,
    rescinds,
    frameworkTasks,
    builtInTasks,
    builtInWaitMs,
    freedSimulatedMs,
    freedWithLeaderMs,
    freeingsTakenByBuiltIn,
    freeingsNeverReused,
    utilisation: mean(utilisationSamples),
    builtInShare: mean(builtInShareSamples),
    frameworks,
    invariantProblems: book.checkInvariants(view()),
  };
}

// ---- the weighted-fair target ---------------------------------------------------------------------------

/** Splits `amount` equally among claimants, none above its cap; what no one can take is left over. */
function fillEqually(amount: number, caps: readonly number[]): number[] {
  const given = caps.map(() => 0);
  let left = amount;
  let open = caps.map((_, i) => i);
  while (left > 1e-12 && open.length > 0) {
    const each = left / open.length;
    const next: number[] = [];
    for (const i of open) {
      const take = Math.min(each, (caps[i] ?? 0) - (given[i] ?? 0));
      given[i] = (given[i] ?? 0) + take;
      left -= take;
      if ((given[i] ?? 0) < (caps[i] ?? 0) - 1e-12) next.push(i);
    }
    if (next.length === open.length && left <= 1e-12) break;
    open = next;
  }
  return given;
}

/**
 * Each framework's dominant share under the book's order, given `total` (the share actually held): strict
 * priority, high first; within a priority, weighted DRF across namespaces counting what each holds from
 * higher priorities (as the book's namespace key does), water-filled up to each one's demand (greedy
 * frameworks: unbounded; capped ones and built-in work: the share they held); within a namespace,
 * equal shares. Shapes follow the nodes' ratio, so shares add up.
 */
function weightedFairTargets(result: Result): Map<string, number> {
  const targets = new Map<string, number>();
  interface Claimant {
    readonly id: string;
    readonly role: string;
    readonly priority: number;
    readonly demand: number;
  }
  const claimants: Claimant[] = [
    ...result.frameworks.map((framework) => ({
      id: framework.id,
      role: framework.role,
      priority: framework.priority,
      // A capped framework's demand is what it held: it revives only below 90 % of its cap.
      demand: framework.cpuMillisCap === null ? Infinity : framework.shareMean,
    })),
    { id: 'built-in', role: builtInNamespace, priority: builtInPriority, demand: result.builtInShare },
  ];
  const namespaceHeld = new Map<string, number>();
  let left = result.utilisation;
  for (const priority of [...new Set(claimants.map((claimant) => claimant.priority))].sort((a, b) => b - a)) {
    const tier = claimants.filter((claimant) => claimant.priority === priority);
    const roles = [...new Set(tier.map((claimant) => claimant.role))];
    const weightOf = (role: string): number => namespaces.find((policy) => policy.name === role)?.weight ?? 1;
    const floorOf = (role: string): number => namespaceHeld.get(role) ?? 0;
    const demandOf = (role: string): number =>
      tier.filter((claimant) => claimant.role === role).reduce((sum, claimant) => sum + claimant.demand, 0);
    const extraAt = (level: number, role: string): number =>
      Math.min(Math.max(level * weightOf(role), floorOf(role)), floorOf(role) + demandOf(role)) -
      floorOf(role);
    const taken = (level: number): number => roles.reduce((sum, role) => sum + extraAt(level, role), 0);
    let low = 0;
    let high = 1e6;
    for (let i = 0; i < 200; i++) {
      const middle = (low + high) / 2;
      if (taken(middle) < left) low = middle;
      else high = middle;
    }
    for (const role of roles) {
      const extra = extraAt(high, role);
      const members = tier.filter((claimant) => claimant.role === role);
      const given = fillEqually(
        extra,
        members.map((member) => member.demand),
      );
      members.forEach((member, i) => targets.set(member.id, given[i] ?? 0));
      namespaceHeld.set(role, floorOf(role) + extra);
      left -= extra;
    }
    left = Math.max(0, left);
  }
  return targets;
}

// ---- printing -------------------------------------------------------------------------------------------

const count = (value: number): string => Math.round(value).toLocaleString('en-US');
const pct = (share: number): string => `${(100 * share).toFixed(1)} %`;
const msText = (value: number): string => `${value.toFixed(value < 10 ? 2 : 0)} ms`;
const sorted = (values: readonly number[]): number[] => [...values].sort((a, b) => a - b);
/** One row: what, the figure, and the anchor's figure beside it when there is one. */
const line = (name: string, value: string, anchor = ''): void =>
  console.log(`  ${name.padEnd(56)} ${anchor === '' ? value : `${value.padEnd(24)} ${anchor}`}`);
const mesosScale = 'Mesos: 200 frameworks, 50,000 agents';
const mesosLatency = 'Mesos: < 1 s added per job at 50,000';

function print(result: Result): void {
  const { config, leader } = result;
  const seconds = result.simulatedMs / 1000;
  const otherMs = leader.declineMs + leader.suppressReviveMs + leader.heldOnMs;
  const insideMs = leader.roundMs + leader.acceptMs + leader.settleMs + otherMs;
  const rounds = sorted(result.roundMs);
  const stopped =
    result.simulatedMs < config.seconds * 1000
      ? ` (STOPPED by the ${config.wallLimitMs / 1000} s wall limit; ${config.seconds} s asked)`
      : '';
  console.log(
    `${count(config.nodes)} nodes × ${count(config.frameworks)} frameworks + built-in work, ` +
      `${seconds.toFixed(1)} s simulated${stopped}, rounds every ${config.roundIntervalMs} ms, ` +
      `seed ${config.seed}, ${(result.wallMs / 1000).toFixed(1)} s wall`,
  );
  line(
    'offers made / per second of simulated time',
    `${count(result.offers)} / ${count(result.offers / seconds)}/s`,
    mesosScale,
  );
  line('offers per second of leader CPU (in OfferBook)', `${count(result.offers / (insideMs / 1000))}/s`);
  line(
    '  time in OfferBook: rounds / accept / settle / other',
    [leader.roundMs, leader.acceptMs, leader.settleMs, otherMs].map(msText).join(' / '),
  );
  line(
    'one offerRound: mean / p99 / max',
    `${msText(leader.roundMs / Math.max(1, rounds.length))} / ${msText(percentile(rounds, 99))} / ` +
      msText(rounds.at(-1) ?? NaN),
  );
  line(
    'accepts ok / refused; declines (none fit); rescinds',
    `${count(result.accepts)} / ${count(result.acceptsRefused)}; ${count(result.declines)} ` +
      `(${count(result.declinesUnfit)}); ${count(result.rescinds)}`,
  );
  line(
    'tasks launched: frameworks / built-in',
    `${count(result.frameworkTasks)} / ${count(result.builtInTasks)}`,
  );
  const simulated = sorted(result.freedSimulatedMs);
  const withLeader = sorted(result.freedWithLeaderMs);
  line(
    `freed → launched, simulated: p50 / p99 (${count(simulated.length)})`,
    `${msText(percentile(simulated, 50))} / ${msText(percentile(simulated, 99))}`,
    mesosLatency,
  );
  line(
    'freed → launched, + leader CPU: p50 / p99',
    `${msText(percentile(withLeader, 50))} / ${msText(percentile(withLeader, 99))}`,
    mesosLatency,
  );
  line(
    '  freeings taken by built-in / unused at the end',
    `${count(result.freeingsTakenByBuiltIn)} / ${count(result.freeingsNeverReused)}`,
  );
  const waits = sorted(result.builtInWaitMs);
  line(
    'built-in work, submitted → placed: p50 / p99',
    `${msText(percentile(waits, 50))} / ${msText(percentile(waits, 99))}`,
  );
  line('CPU held by tasks (second half)', pct(result.utilisation));
  if (result.invariantProblems.length > 0)
    line('OfferBook.checkInvariants at the end', result.invariantProblems.slice(0, 3).join('; '));
  printShares(result);
}

function printShares(result: Result): void {
  const targets = weightedFairTargets(result);
  console.log('  dominant share (second half) vs its weighted-DRF target:');
  if (result.frameworks.length <= 12) {
    for (const framework of result.frameworks) {
      const decline = `${Math.round(100 * framework.declineShare)} %`;
      line(
        `  ${framework.id} ${framework.role} w${framework.weight} p${framework.priority}, ` +
          `${framework.taskCpuMillis / 1000}-core tasks, ${decline} declined` +
          (framework.cpuMillisCap === null ? '' : ', cap'),
        `${pct(framework.shareMean)} vs ${pct(targets.get(framework.id) ?? 0)}`,
      );
    }
  } else {
    const groups = new Map<string, SimFramework[]>();
    for (const framework of result.frameworks) {
      const key = `${framework.role} w${framework.weight} p${framework.priority}`;
      groups.set(key, [...(groups.get(key) ?? []), framework]);
    }
    for (const [key, members] of groups) {
      const held = members.map((member) => member.shareMean);
      const target = members.reduce((sum, member) => sum + (targets.get(member.id) ?? 0), 0) / members.length;
      line(
        `  ${members.length} in ${key}, each (min–max)`,
        `${pct(Math.min(...held))}–${pct(Math.max(...held))} vs ${pct(target)}`,
      );
    }
  }
  line(
    `  built-in: ${builtInNamespace} w1 p${builtInPriority}`,
    `${pct(result.builtInShare)} (= its target: its demand)`,
  );
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((value) => value.toFixed(1))
    .join(' ');
}

function main(): void {
  const common = {
    seconds: positive('seconds', args.seconds, 60),
    roundIntervalMs: positive('round-interval-ms', args['round-interval-ms'], 100),
    seed: positive('seed', args.seed, 1),
    wallLimitMs: positive('wall-limit-s', args['wall-limit-s'], 60) * 1000,
  };
  const configs: Config[] =
    args.nodes === undefined && args.frameworks === undefined
      ? [
          { ...common, nodes: 1000, frameworks: 10 },
          { ...common, nodes: 5000, frameworks: 200 },
        ]
      : [
          {
            ...common,
            nodes: positive('nodes', args.nodes, 1000),
            frameworks: positive('frameworks', args.frameworks, 10),
          },
        ];
  console.log(
    'shoal offer benchmark: the OfferBook in process (real), all else simulated; nodes 16 cores, 64 GiB; ' +
      `node ${process.version}; load average ${loadAverage()} on ${os.availableParallelism()} cores`,
  );
  for (const config of configs) print(run(config));
  console.log(
    'anchors: Mesos (NSDI 2011): offers to 200 frameworks on 50,000 emulated agents; ' +
      '< 1 s added to a job at 50,000 nodes',
  );
}

main();
