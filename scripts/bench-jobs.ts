/**
 * bench:jobs — the jobs control plane on a simulated fleet, in one process: the replicated state machine
 * (every command through the log's codec, as every node applies it), the leader's allocator (Scheduler),
 * and simulated agents that report each placed task running at once. Measures:
 *   1. a service job of --tasks instances on --nodes nodes: from apply to all running (placements/s), and
 *      the reconciliation's CPU inside the apply;
 *   2. a system job on --system-nodes nodes: from apply to one running instance per node;
 *   3. the reconciler's CPU per change on the full cluster: a count change, a lost node, a spec change
 *      (every instance replaced), a node joining a system job.
 * Not included: Raft commits (one per plan here; bench:api measures a commit) and process start-up.
 *
 *   node_modules/.bin/node scripts/bench-jobs.ts [--tasks 1000] [--nodes 100] [--system-nodes 100]
 */
import { parseArgs } from 'node:util';
import {
  ClusterState,
  decodeCommand,
  encodeCommand,
  nodeIdLabel,
  preemptionPriorityGapOff,
  Scheduler,
  type Command,
  type JobSpec,
} from '../src/cluster/index.ts';

const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: '1000' },
    nodes: { type: 'string', default: '100' },
    'system-nodes': { type: 'string', default: '100' },
  },
});
const taskCount = Number(args.tasks);
const nodeCount = Number(args.nodes);
const systemNodeCount = Number(args['system-nodes']);
const MiB = 1024 * 1024;

/** A fleet in a state machine, with the leader's allocator kept in step and agents that start at once. */
class Fleet {
  readonly state = new ClusterState();
  readonly scheduler: Scheduler;
  private index = 0;
  private nowMs = Date.parse('2026-12-05T00:00:00Z');
  plans = 0;

  constructor() {
    this.scheduler = new Scheduler(this.state, {
      preemptionPriorityGap: preemptionPriorityGapOff,
      isAlive: () => true,
      rebuildIntervalMs: 3_600_000,
    });
    this.state.observer = this.scheduler;
  }

  /** Applies a command as a node does: encoded, decoded and validated, then applied. */
  apply(command: Command): void {
    const index = ++this.index;
    const result = this.state.apply(index, decodeCommand(index, encodeCommand(command)));
    if (!result.ok) throw new Error(`${command.type}: ${result.message}`);
  }

  addNode(id: string): void {
    this.apply({
      type: 'upsertNode',
      node: {
        id,
        name: id,
        address: '10.0.0.1:4700',
        capacity: { cpuMillis: 16_000, memoryBytes: 64 * 1024 * MiB },
        labels: { zone: `z${id.length % 3}`, [nodeIdLabel]: id },
        drivers: ['exec'],
      },
      atMs: this.nowMs,
    });
  }

  /** Plans, commits and starts until nothing is pending; returns the plans it took. */
  settle(): number {
    let plans = 0;
    for (;;) {
      this.nowMs += 1;
      const plan = this.scheduler.plan(this.nowMs, 2000);
      if (plan.placements.length === 0) return plans;
      plans++;
      this.apply({
        type: 'assignTasks',
        term: 1,
        assignments: plan.placements,
        waiting: [],
        atMs: this.nowMs,
      });
      for (const { taskId, nodeId } of plan.placements) {
        const task = this.state.tasks.get(taskId);
        if (!task) continue;
        this.apply({
          type: 'reportTask',
          nodeId,
          taskId,
          attempt: task.attempt,
          state: 'running',
          exitCode: null,
          reason: null,
          atMs: this.nowMs,
        });
      }
    }
  }

  /** Reports every task being stopped as killed (its agent did it). */
  finishKills(): void {
    for (const task of [...this.state.tasks.values()]) {
      if (task.desired !== 'kill' || task.state !== 'running' || task.nodeId === null) continue;
      this.apply({
        type: 'reportTask',
        nodeId: task.nodeId,
        taskId: task.id,
        attempt: task.attempt,
        state: 'killed',
        exitCode: null,
        reason: 'stopped',
        atMs: this.nowMs,
      });
    }
  }

  running(job: string): number {
    return this.state
      .jobTasks('default', job)
      .filter((task) => task.state === 'running' && task.desired === 'run').length;
  }

  get now(): number {
    return this.nowMs;
  }
}

/** Wall and CPU milliseconds of fn. */
function timed<T>(fn: () => T): { value: T; wallMs: number; cpuMs: number } {
  const cpu = process.cpuUsage();
  const started = performance.now();
  const value = fn();
  const used = process.cpuUsage(cpu);
  return { value, wallMs: performance.now() - started, cpuMs: (used.user + used.system) / 1000 };
}

function service(count: number, sleep = '600'): JobSpec {
  return {
    name: 'web',
    type: 'service',
    count,
    task: { driver: 'exec', command: ['sleep', sleep], cpuMillis: 500, memoryMiB: 256 },
  };
}

const fleet = new Fleet();
for (let i = 0; i < nodeCount; i++) fleet.addNode(`n${String(i).padStart(5, '0')}`);
console.log(`service: ${taskCount} instances on ${nodeCount} nodes (16 cores each), in one process:`);
const applyService = timed(() => fleet.apply({ type: 'putJob', job: service(taskCount), atMs: fleet.now }));
const settleService = timed(() => fleet.settle());
const serviceMs = applyService.wallMs + settleService.wallMs;
if (fleet.running('web') !== taskCount) throw new Error(`only ${fleet.running('web')} running`);
console.log(
  `  apply → all running: ${serviceMs.toFixed(0)} ms (${((taskCount / serviceMs) * 1000).toFixed(0)} placements/s; ${settleService.value} plans); the apply with its reconciliation: ${applyService.cpuMs.toFixed(1)} ms CPU`,
);

const change = (label: string, fn: () => void): void => {
  const result = timed(fn);
  console.log(`  ${label}: ${result.cpuMs.toFixed(2)} ms CPU (${result.wallMs.toFixed(2)} ms wall)`);
};
console.log('reconciler per change, on the full cluster (the apply of the one command that triggers it):');
change(`count ${taskCount} → ${taskCount + 1}`, () =>
  fleet.apply({ type: 'putJob', job: service(taskCount + 1), atMs: fleet.now }),
);
fleet.settle();
const victim = fleet.state.jobTasks('default', 'web').find((task) => task.state === 'running')?.nodeId ?? '';
const onVictim = fleet.state.liveTasksOn(victim).length;
change(`a node with ${onVictim} instances lost`, () =>
  fleet.apply({ type: 'nodeDown', nodeId: victim, reason: 'bench', atMs: fleet.now }),
);
fleet.settle();
change(`the task changed: ${taskCount + 1} instances replaced`, () =>
  fleet.apply({ type: 'putJob', job: service(taskCount + 1, '601'), atMs: fleet.now }),
);
fleet.finishKills();
const replaced = timed(() => fleet.settle());
console.log(`  …and the replacements placed and running in ${replaced.wallMs.toFixed(0)} ms`);

const systemFleet = new Fleet();
for (let i = 0; i < systemNodeCount; i++) systemFleet.addNode(`s${String(i).padStart(5, '0')}`);
const system: JobSpec = {
  name: 'agent',
  type: 'system',
  task: { driver: 'exec', command: ['sleep', '600'], cpuMillis: 100, memoryMiB: 64 },
};
console.log(`system: one instance on each of ${systemNodeCount} nodes:`);
const applySystem = timed(() => systemFleet.apply({ type: 'putJob', job: system, atMs: systemFleet.now }));
const settleSystem = timed(() => systemFleet.settle());
if (systemFleet.running('agent') !== systemNodeCount) throw new Error('system job not everywhere');
console.log(
  `  apply → all running: ${(applySystem.wallMs + settleSystem.wallMs).toFixed(0)} ms; the apply with its reconciliation: ${applySystem.cpuMs.toFixed(1)} ms CPU`,
);
change('a node joins (its instance made)', () => systemFleet.addNode('s-new'));
console.log(
  'anchor: Nomad C1M placed 1,000 jobs × 1,000 tasks at ~3,750 placements/s (5,000 nodes, published)',
);
