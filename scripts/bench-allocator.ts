/**
 * Allocator benchmark (issue 4): 10,000 nodes, 100,000 pending tasks of mixed sizes, a fifth of them
 * constrained. Prints placements per second, the time per decision, peak memory, and the time to react to
 * one task ending on the full cluster.
 *
 *   node_modules/.bin/node scripts/bench-allocator.ts [--nodes 10000] [--tasks 100000] [--reactions 2000] [--seed 1]
 *
 * One process, one thread: the allocator is synchronous, so it uses one core (the garbage collector may
 * borrow a helper thread). Times are given as this thread's CPU time, which a loaded machine barely
 * moves, and as wall time, which it does.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import {
  Allocator,
  allocate,
  type AllocatorNode,
  type AllocatorTask,
  type Plan,
} from '../src/allocator/index.ts';
import { seededRandom, type Random } from '../src/shared/random.ts';

const { values: args } = parseArgs({
  options: {
    nodes: { type: 'string', default: '10000' },
    tasks: { type: 'string', default: '100000' },
    reactions: { type: 'string', default: '2000' },
    seed: { type: 'string', default: '1' },
  },
});
const nodeCount = Number(args.nodes);
const taskCount = Number(args.tasks);
const reactionCount = Number(args.reactions);
const random = seededRandom(Number(args.seed));
const GiB = 1024 ** 3;
const zones = ['z1', 'z2', 'z3', 'z4'];

function pick<T>(items: readonly T[], r: Random = random): T {
  const item = items[r.int(0, items.length)];
  if (item === undefined) throw new Error('empty list');
  return item;
}

// ---- the cluster and the queue ----------------------------------------------------------------------

function makeNodes(): AllocatorNode[] {
  const nodes: AllocatorNode[] = [];
  for (let i = 0; i < nodeCount; i++) {
    const cores = pick([8, 16, 16, 32, 32]);
    const gpus = i % 20 === 0 ? 4 : 0;
    const capacity = {
      cpuMillis: cores * 1000,
      memoryBytes: cores * 4 * GiB,
      diskBytes: cores * 25 * GiB,
      ...(gpus > 0 ? { devices: { gpu: gpus } } : {}),
    };
    nodes.push({
      id: `node-${String(i).padStart(5, '0')}`,
      capacity,
      free: capacity,
      labels: {
        zone: zones[i % zones.length] ?? 'z1',
        rack: `r${i % 200}`,
        ...(gpus > 0 ? { gpu: 'true' } : {}),
      },
      drivers: i % 10 === 5 ? ['exec'] : ['exec', 'docker'],
    });
  }
  return nodes;
}

/** Shapes seen in real clusters: many small, some large, some memory- or CPU-heavy. */
const shapes: readonly { cpuMillis: number; memoryGiB: number; weight: number }[] = [
  { cpuMillis: 250, memoryGiB: 0.5, weight: 20 },
  { cpuMillis: 500, memoryGiB: 1, weight: 20 },
  { cpuMillis: 1000, memoryGiB: 2, weight: 15 },
  { cpuMillis: 1000, memoryGiB: 8, weight: 8 },
  { cpuMillis: 2000, memoryGiB: 4, weight: 10 },
  { cpuMillis: 2000, memoryGiB: 16, weight: 5 },
  { cpuMillis: 4000, memoryGiB: 2, weight: 8 },
  { cpuMillis: 4000, memoryGiB: 16, weight: 6 },
  { cpuMillis: 8000, memoryGiB: 32, weight: 5 },
  { cpuMillis: 16000, memoryGiB: 64, weight: 3 },
];
const shapeWeights = shapes.reduce((sum, s) => sum + s.weight, 0);

function randomShape(): (typeof shapes)[number] {
  let roll = random.int(0, shapeWeights);
  for (const shape of shapes) {
    roll -= shape.weight;
    if (roll < 0) return shape;
  }
  return shapes[0] ?? { cpuMillis: 250, memoryGiB: 0.5, weight: 1 };
}

let submitted = 0;
/** Tasks come in jobs of 1–200 replicas sharing a shape, a priority, a namespace and constraints. */
function makeTasks(count: number): AllocatorTask[] {
  const tasks: AllocatorTask[] = [];
  while (tasks.length < count) {
    const job = `job-${submitted}`;
    const replicas = Math.min(count - tasks.length, pick([1, 1, 5, 10, 20, 50, 200]));
    const shape = randomShape();
    const priority = pick([40, 45, 50, 55]);
    const namespace = pick(['search', 'ads', 'batch', 'infra']);
    const constrained = random.next() < 0.2;
    const kind = random.int(0, 4);
    const base = {
      priority,
      driver: random.next() < 0.7 ? 'docker' : 'exec',
      request: { cpuMillis: shape.cpuMillis, memoryBytes: shape.memoryGiB * GiB },
      constraints: constrained && kind === 0 ? { zone: pick(zones) } : {},
      namespace,
      job,
    };
    for (let r = 0; r < replicas; r++) {
      const task: AllocatorTask = {
        ...base,
        id: `${job}-${r}`,
        submitIndex: submitted++,
        ...(constrained && kind === 1
          ? {
              labelConstraints: [
                { key: 'zone', operator: 'in' as const, values: [zones[0] ?? 'z1', zones[1] ?? 'z2'] },
              ],
            }
          : {}),
        ...(constrained && kind === 2
          ? { labelConstraints: [{ key: 'rack', operator: 'regex' as const, pattern: '^r1[0-9]*$' }] }
          : {}),
        ...(constrained && kind === 3
          ? { constraints: { gpu: 'true' }, request: { ...base.request, devices: { gpu: 1 } } }
          : {}),
      };
      tasks.push(task);
    }
  }
  return tasks;
}

// ---- measuring ---------------------------------------------------------------------------------------

let rssMaxBytes = 0;
let heapMaxBytes = 0;
function sampleMemory(): void {
  const usage = process.memoryUsage();
  rssMaxBytes = Math.max(rssMaxBytes, usage.rss);
  heapMaxBytes = Math.max(heapMaxBytes, usage.heapUsed);
}

function percentile(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
}

const ms = (value: number): string => `${value.toFixed(value < 1 ? 3 : 1)} ms`;
const us = (valueMs: number): string => `${(valueMs * 1000).toFixed(1)} µs`;
const rate = (count: number, elapsedMs: number): string =>
  `${Math.round(count / (elapsedMs / 1000)).toLocaleString('en-US')}/s`;
const line = (name: string, value: string): void => console.log(`${name.padEnd(58)} ${value}`);

/** Commits a plan the way the leader would: placements start; victims exit; preemptors wait on their node. */
function commit(allocator: Allocator, plan: Plan, running: string[]): void {
  for (const p of plan.placements) {
    allocator.taskPlaced(p.taskId, p.nodeId);
    running.push(p.taskId);
  }
  for (const p of plan.preemptions) {
    allocator.setTerminating(p.taskId);
    allocator.nominate(p.forTaskId, p.nodeId);
    allocator.taskEnded(p.taskId);
  }
}

/** This thread's CPU time: what "one core" spends, unlike wall time on a shared, loaded machine. */
function cpuNowMs(): number {
  const usage = process.threadCpuUsage();
  return (usage.user + usage.system) / 1000;
}

/** Wall and CPU time of `work`. */
function timed<T>(work: () => T): { result: T; wallMs: number; cpuMs: number } {
  const wall = performance.now();
  const cpu = cpuNowMs();
  const result = work();
  return { result, wallMs: performance.now() - wall, cpuMs: cpuNowMs() - cpu };
}

const both = (t: { wallMs: number; cpuMs: number }): string => `${ms(t.cpuMs)} CPU, ${ms(t.wallMs)} wall`;

function main(): void {
  const nodes = makeNodes();
  const pending = makeTasks(taskCount);
  const constrained = pending.filter(
    (t) => Object.keys(t.constraints).length > 0 || (t.labelConstraints?.length ?? 0) > 0,
  ).length;
  console.log(
    `shoal allocator benchmark: ${nodeCount.toLocaleString('en-US')} nodes, ` +
      `${taskCount.toLocaleString('en-US')} pending tasks (${constrained.toLocaleString('en-US')} constrained), ` +
      `node ${process.version}, one thread; load average ${loadAverage()}`,
  );
  sampleMemory();

  // 1. The pure function on a snapshot (what a new leader's first plan costs, indexes included).
  const snapshot = timed(() => allocate({ nodes, pending, placementsMax: Number.MAX_SAFE_INTEGER }));
  sampleMemory();
  const snapshotPlaced = snapshot.result.placements.length;
  line('allocate(snapshot): placements', snapshotPlaced.toLocaleString('en-US'));
  line('allocate(snapshot): time (index build + plan)', both(snapshot));
  line('allocate(snapshot): placements per second of CPU', rate(snapshotPlaced, snapshot.cpuMs));
  line('allocate(snapshot): placements per second of wall time', rate(snapshotPlaced, snapshot.wallMs));

  // 2. The incremental allocator: build once, then plan; time every decision.
  const allocator = new Allocator();
  const build = timed(() => {
    for (const node of nodes) allocator.addNode(node);
    for (const task of pending) allocator.addPending(task);
  });
  // A plan that may place nothing builds the node indexes, so decisions are timed on their own.
  const index = timed(() => allocator.plan({ placementsMax: 0, waiting: 'changed' }));
  const decisionMs: number[] = [];
  let last = performance.now();
  const planned = timed(() =>
    allocator.plan({
      placementsMax: Number.MAX_SAFE_INTEGER,
      waiting: 'changed',
      onDecision: () => {
        const now = performance.now();
        decisionMs.push(now - last);
        last = now;
        if (decisionMs.length % 5000 === 0) sampleMemory();
      },
    }),
  );
  const plan = planned.result;
  sampleMemory();
  decisionMs.sort((a, b) => a - b);
  line('Allocator: add 10k nodes and 100k tasks', both(build));
  line('Allocator: build the node indexes (first plan)', both(index));
  line('Allocator.plan(): placements', plan.placements.length.toLocaleString('en-US'));
  line('Allocator.plan(): time', both(planned));
  line('Allocator.plan(): placements per second of CPU', rate(plan.placements.length, planned.cpuMs));
  line('Allocator.plan(): placements per second of wall time', rate(plan.placements.length, planned.wallMs));
  line(
    `time per decision (wall, ${decisionMs.length.toLocaleString('en-US')} decisions): p50`,
    us(percentile(decisionMs, 0.5)),
  );
  line('time per decision (wall): p99', us(percentile(decisionMs, 0.99)));
  line('time per decision (wall): max', us(decisionMs[decisionMs.length - 1] ?? NaN));

  // 3. Reaction on the full cluster: commit, queue more, settle, then end one task at a time.
  const running: string[] = [];
  commit(allocator, plan, running);
  for (const task of makeTasks(Math.round(taskCount / 5))) allocator.addPending(task);
  let rounds = 0;
  for (; rounds < 100; rounds++) {
    const settle = allocator.plan({ placementsMax: Number.MAX_SAFE_INTEGER, waiting: 'changed' });
    if (settle.placements.length === 0 && settle.preemptions.length === 0) break;
    commit(allocator, settle, running);
  }
  sampleMemory();
  // Wall time per end (CPU time per thread is counted in scheduler ticks: too coarse for one end, fine
  // for the loop as a whole).
  const reactionWallMs: number[] = [];
  let placedByReactions = 0;
  const loopCpuMs = cpuNowMs();
  for (let i = 0; i < reactionCount; i++) {
    const at = random.int(0, running.length);
    const ended = running[at];
    if (ended === undefined) break;
    running[at] = running[running.length - 1] ?? ended;
    running.pop();
    const start = performance.now();
    allocator.taskEnded(ended);
    const reaction = allocator.plan({ placementsMax: 2000, waiting: 'changed' });
    reactionWallMs.push(performance.now() - start);
    placedByReactions += reaction.placements.length;
    commit(allocator, reaction, running);
  }
  const perEndCpuMs = (cpuNowMs() - loopCpuMs) / reactionWallMs.length;
  sampleMemory();
  reactionWallMs.sort((a, b) => a - b);
  console.log(
    `(${reactionWallMs.length} ends after ${rounds} settling plans; ${(placedByReactions / reactionWallMs.length).toFixed(2)} queued tasks placed per end)`,
  );
  line('reaction to one task ending, full cluster: p50', ms(percentile(reactionWallMs, 0.5)));
  line('reaction to one task ending, full cluster: p99', ms(percentile(reactionWallMs, 0.99)));
  line(
    'reaction to one task ending, full cluster: max',
    ms(reactionWallMs[reactionWallMs.length - 1] ?? NaN),
  );
  const withinTarget = reactionWallMs.filter((value) => value <= 1).length / reactionWallMs.length;
  line('reaction to one task ending: share within 1 ms', `${(100 * withinTarget).toFixed(1)} %`);
  line('reaction loop: CPU per end, with committing the plan', ms(perEndCpuMs));

  // 4. High-priority arrivals on the full cluster: what does not fit in free room preempts.
  const urgentCount = 100;
  for (let i = 0; i < urgentCount; i++)
    allocator.addPending({
      id: `urgent-${i}`,
      priority: 100,
      submitIndex: submitted++,
      driver: 'exec',
      request: { cpuMillis: 8000, memoryBytes: 16 * GiB },
      constraints: {},
    });
  const urgent = timed(() => allocator.plan({ placementsMax: 2000, waiting: 'changed' }));
  const preemptors = new Set(urgent.result.preemptions.map((p) => p.forTaskId)).size;
  line(`${urgentCount} priority-100 arrivals on the full cluster: one plan`, both(urgent));
  line(
    '  placed in free room / preempting / victims',
    `${urgent.result.placements.length} / ${preemptors} / ${urgent.result.preemptions.length}`,
  );

  line('peak memory: rss', `${Math.round(rssMaxBytes / 1024 / 1024)} MiB`);
  line('peak memory: heapUsed', `${Math.round(heapMaxBytes / 1024 / 1024)} MiB`);
  console.log(`load average at the end ${loadAverage()} (on ${os.availableParallelism()} cores)`);
  console.log('targets: ≥ 100,000 placements/s; reaction ≤ 1 ms');
  console.log('anchors: Nomad C1M ~3,750 placements/s (5,000 hosts); Kubernetes scheduler 100–1,000 pods/s');
}

function loadAverage(): string {
  return os
    .loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
}

main();
