/**
 * A seeded simulation of rolling updates: one service group of `count` instances, the pure reconciler and
 * deployment watcher driven in a loop against a simulated clock and simulated tasks (placed and running
 * after a random delay, their checks passing or failing after another, by version). What must hold:
 * - a good version ends successful, every instance current and healthy, in a bounded number of steps;
 * - stop-first never has fewer than count − maxParallel healthy instances; start-first never more than
 *   count + maxParallel live ones, nor fewer than count healthy;
 * - a bad version fails having started at most maxParallel instances, and a revert (a new version whose
 *   spec is the old one's) keeps every old instance and replaces only the bad ones;
 * - canaries: exactly `canary` start, nothing else is replaced until promotion, which needs them healthy.
 * No wall time: the clock is the simulation's.
 */
import { describe, expect, it } from 'vitest';
import { seededRandom, type Random } from '../shared/random.ts';
import {
  applyDeploymentProgress,
  deploymentProgress,
  groupRollout,
  needsPromotion,
  promoteDeployment,
  type DeploymentRecord,
  type DeploymentTask,
} from './deployment.ts';
import { updatePolicyDefaults, type UpdatePolicy } from './job.ts';
import { reconcileJob, type ReconcileActions } from './reconcile.ts';
import { isTerminal, type TaskHealth, type TaskState } from './task.ts';

const group = 'web';
const stepsMax = 600;

interface SimTask {
  readonly id: string;
  readonly slot: number;
  readonly version: number;
  state: TaskState;
  desired: 'run' | 'kill' | 'move' | 'preempt';
  readonly createdAtMs: number;
  updatedAtMs: number;
  /** When it will be placed and run. */
  readonly runAtMs: number;
  /** When its checks reach a verdict, once running. */
  readonly verdictAfterMs: number;
  runningSinceMs: number | undefined;
  health: TaskHealth | undefined;
  /** When a stop takes effect, once asked. */
  stopAtMs: number | undefined;
  reason: string | null;
}

interface Sim {
  readonly random: Random;
  readonly count: number;
  readonly policy: UpdatePolicy;
  /** Probability per step that one running task crashes (0: none). */
  readonly crashRate: number;
  nowMs: number;
  nextId: number;
  jobVersion: number;
  specVersion: number;
  currentVersions: number[];
  /** Versions whose checks fail. */
  readonly badVersions: Set<number>;
  tasks: SimTask[];
  deployment: DeploymentRecord | undefined;
  nextDeploymentId: number;
}

interface SimOptions {
  readonly order: UpdatePolicy['order'];
  readonly canary?: number;
  readonly crashRate?: number;
}

function newSim(seed: number, options: SimOptions): Sim {
  const random = seededRandom(seed);
  const count = random.int(4, 13);
  const policy: UpdatePolicy = {
    ...updatePolicyDefaults,
    maxParallel: random.int(1, 4),
    order: options.order,
    minHealthyTimeMs: random.int(0, 5000),
    healthyDeadlineMs: 60_000,
    progressDeadlineMs: 120_000,
    canary: options.canary ?? 0,
  };
  const sim: Sim = {
    random,
    count,
    policy,
    crashRate: options.crashRate ?? 0,
    nowMs: 10_000_000,
    nextId: 0,
    jobVersion: 1,
    specVersion: 1,
    currentVersions: [1],
    badVersions: new Set(),
    tasks: [],
    deployment: undefined,
    nextDeploymentId: 1,
  };
  // Version 1 has run, healthy, for an hour.
  for (let slot = 0; slot < count; slot++) {
    const task = newTask(sim, slot, sim.nowMs - 3_600_000);
    task.state = 'running';
    task.runningSinceMs = task.runAtMs;
    task.health = { status: 'healthy', sinceMs: task.runAtMs + 1000, message: '' };
    sim.tasks.push(task);
  }
  return sim;
}

function newTask(sim: Sim, slot: number, atMs: number, notBeforeMs: number | null = null): SimTask {
  return {
    id: `t${String(sim.nextId++).padStart(5, '0')}`,
    slot,
    version: sim.jobVersion,
    state: 'pending',
    desired: 'run',
    createdAtMs: atMs,
    updatedAtMs: atMs,
    runAtMs: Math.max(atMs, notBeforeMs ?? atMs) + sim.random.int(200, 6000),
    verdictAfterMs: sim.random.int(0, 6000),
    runningSinceMs: undefined,
    health: undefined,
    stopAtMs: undefined,
    reason: null,
  };
}

/** A new job version with a new spec for the group, and its deployment. */
function newVersion(sim: Sim, options: { readonly bad?: boolean; readonly revertTo?: number } = {}): void {
  sim.jobVersion++;
  sim.specVersion = sim.jobVersion;
  sim.currentVersions = [...(options.revertTo === undefined ? [] : [options.revertTo]), sim.jobVersion];
  if (options.bad === true) sim.badVersions.add(sim.jobVersion);
  const canaries = options.revertTo === undefined ? sim.policy.canary : 0;
  sim.deployment = {
    id: `d${sim.nextDeploymentId++}`,
    namespace: 'default',
    job: 'shop',
    jobVersion: sim.jobVersion,
    stableVersion: 1,
    policy: sim.policy,
    status: 'running',
    statusReason: '',
    groups: {
      [group]: {
        desiredTotal: sim.count,
        desiredCanaries: canaries,
        promoted: canaries === 0,
        healthyTaskIds: [],
        unhealthy: [],
        canaryTaskIds: [],
      },
    },
    createdAtMs: sim.nowMs,
    updatedAtMs: sim.nowMs,
    progressDeadlineAtMs: sim.nowMs + sim.policy.progressDeadlineMs,
  };
}

/** Live and not being stopped (reconcile.ts's occupiesSlot, for the simulation's tasks). */
const occupiesSlot = (task: SimTask): boolean => !isTerminal(task.state) && task.desired !== 'kill';
const isCurrent = (sim: Sim, task: SimTask): boolean => sim.currentVersions.includes(task.version);
const healthy = (task: SimTask): boolean =>
  occupiesSlot(task) && task.state === 'running' && task.health?.status === 'healthy';

/** Time passes: tasks run, get their checks' verdict, stop when asked, and maybe crash. */
function advance(sim: Sim, byMs: number): void {
  sim.nowMs += byMs;
  const { nowMs } = sim;
  for (const task of sim.tasks) {
    if (isTerminal(task.state)) continue;
    if (task.desired === 'kill') {
      if (task.stopAtMs !== undefined && task.stopAtMs <= nowMs) {
        task.state = 'killed';
        task.updatedAtMs = nowMs;
      }
      continue;
    }
    if (task.state === 'pending' && task.runAtMs <= nowMs) {
      task.state = 'running';
      task.runningSinceMs = task.runAtMs;
      task.updatedAtMs = nowMs;
    }
    if (task.state === 'running' && task.health === undefined) {
      const verdictAtMs = (task.runningSinceMs ?? nowMs) + task.verdictAfterMs;
      if (verdictAtMs <= nowMs)
        task.health = sim.badVersions.has(task.version)
          ? { status: 'unhealthy', sinceMs: verdictAtMs, message: 'GET /health returned 503' }
          : { status: 'healthy', sinceMs: verdictAtMs, message: '' };
    }
  }
  if (sim.crashRate > 0 && sim.random.next() < sim.crashRate) {
    const running = sim.tasks.filter((task) => task.state === 'running' && task.desired === 'run');
    const victim = running[sim.random.int(0, running.length)];
    if (victim !== undefined) {
      victim.state = 'failed';
      victim.reason = 'exit code 137';
      victim.updatedAtMs = nowMs;
    }
  }
}

function deploymentTasks(sim: Sim): DeploymentTask[] {
  return sim.tasks.map((task) => ({
    id: task.id,
    group,
    current: isCurrent(sim, task),
    state: task.state,
    desired: task.desired,
    hasChecks: true,
    health: task.health,
    runningSinceMs: task.state === 'running' ? task.runningSinceMs : undefined,
    createdAtMs: task.createdAtMs,
    reason: task.reason,
  }));
}

/** The leader's watcher: judges and records, as the state machine would apply it. */
function watch(sim: Sim): void {
  const { deployment } = sim;
  if (deployment === undefined) return;
  const progress = deploymentProgress(deployment, deploymentTasks(sim), sim.nowMs);
  if (progress.nextCheckAtMs !== null && progress.nextCheckAtMs <= sim.nowMs)
    throw new Error(`nextCheckAtMs ${progress.nextCheckAtMs} is not in the future (now ${sim.nowMs})`);
  applyDeploymentProgress(deployment, progress, sim.nowMs);
}

function reconcile(sim: Sim): ReconcileActions {
  const rollout = groupRollout(sim.deployment, group);
  return reconcileJob({
    type: 'service',
    version: sim.jobVersion,
    stopped: false,
    groups: [
      {
        name: group,
        count: sim.count,
        specVersion: sim.specVersion,
        currentVersions: sim.currentVersions,
        eligibleNodeIds: [],
        ...(rollout === undefined ? {} : { rollout }),
      },
    ],
    reschedule: { policy: 'always', attempts: null, delayMs: 1000 },
    tasks: sim.tasks.map((task) => ({
      id: task.id,
      group,
      slot: task.slot,
      version: task.version,
      nodeId: 'n1',
      state: task.state,
      desired: task.desired,
      updatedAtMs: task.updatedAtMs,
    })),
    nowMs: sim.nowMs,
  });
}

function applyActions(sim: Sim, actions: ReconcileActions): void {
  for (const stop of actions.stop) {
    const task = sim.tasks.find((candidate) => candidate.id === stop.taskId);
    if (task === undefined || !occupiesSlot(task)) throw new Error(`stop of ${stop.taskId}: not occupying`);
    task.desired = 'kill';
    task.stopAtMs = sim.nowMs + sim.random.int(0, 3000);
  }
  for (const start of actions.start) {
    const task = newTask(sim, start.slot, sim.nowMs, start.notBeforeMs);
    sim.tasks.push(task);
    if (start.canary === true) sim.deployment?.groups[group]?.canaryTaskIds.push(task.id);
  }
}

/** One step: time, the watcher, the reconciler (whose answer, once applied, must be stable). */
function step(sim: Sim): ReconcileActions {
  advance(sim, sim.random.int(200, 3000));
  watch(sim);
  const actions = reconcile(sim);
  applyActions(sim, actions);
  const again = reconcile(sim);
  if (again.start.length + again.stop.length > 0) throw new Error(`not idempotent: ${JSON.stringify(again)}`);
  return actions;
}

/** Whether the job is at rest: nothing pending, nothing stopping, every live instance current and healthy. */
function settled(sim: Sim): boolean {
  const live = sim.tasks.filter((task) => !isTerminal(task.state));
  return live.length === sim.count && live.every((task) => isCurrent(sim, task) && healthy(task));
}

interface Bounds {
  /** stop-first: healthy instances at least this many. */
  readonly healthyMin: number;
  /** start-first: live (occupying) instances at most this many. */
  readonly liveMax: number;
}

function checkBounds(sim: Sim, bounds: Bounds, where: string): void {
  const occupying = sim.tasks.filter(occupiesSlot);
  const healthyCount = occupying.filter(healthy).length;
  if (healthyCount < bounds.healthyMin)
    throw new Error(`${where}: ${healthyCount} healthy instances, fewer than ${bounds.healthyMin}`);
  if (occupying.length > bounds.liveMax)
    throw new Error(`${where}: ${occupying.length} live instances, more than ${bounds.liveMax}`);
}

function boundsOf(sim: Sim): Bounds {
  const { count, policy } = sim;
  return policy.order === 'stop-first'
    ? { healthyMin: count - policy.maxParallel, liveMax: count }
    : { healthyMin: count, liveMax: count + policy.maxParallel };
}

/** Steps until the deployment ends and the job is at rest; returns the steps taken. */
function runToEnd(sim: Sim, bounds: Bounds | null, label: string): number {
  for (let n = 1; n <= stepsMax; n++) {
    step(sim);
    if (bounds !== null) checkBounds(sim, bounds, `${label} step ${n}`);
    const status = sim.deployment?.status;
    if (status === 'failed') return n;
    if (status === 'successful' && settled(sim)) return n;
  }
  throw new Error(`${label}: no end after ${stepsMax} steps (${sim.deployment?.status ?? 'none'})`);
}

const seeds = Array.from({ length: 40 }, (_, i) => i + 1);
const orders = ['stop-first', 'start-first'] as const;

describe('deployments: rolling a good version', () => {
  for (const order of orders)
    it(`${order}: ends successful, every instance current and healthy, within the bounds (40 seeds)`, () => {
      for (const seed of seeds) {
        const sim = newSim(seed, { order });
        const label = `${order} seed ${seed}`;
        const before = new Set(sim.tasks.map((task) => task.id));
        newVersion(sim);
        runToEnd(sim, boundsOf(sim), label);
        expect(sim.deployment?.status, label).toBe('successful');
        const live = sim.tasks.filter((task) => !isTerminal(task.state));
        expect(
          live.every((task) => task.version === 2 && healthy(task)),
          label,
        ).toBe(true);
        // Every old instance was replaced exactly once.
        expect(sim.tasks.filter((task) => !before.has(task.id)).length, label).toBe(sim.count);
        expect(sim.deployment?.groups[group]?.healthyTaskIds.length, label).toBe(sim.count);
      }
    });

  it('with random crashes: every deployment ends, successful with all current and healthy, or failed by a crash', () => {
    const outcomes = new Map<string, number>();
    for (const order of orders)
      for (const seed of seeds) {
        const sim = newSim(seed, { order, crashRate: 0.15 });
        const label = `${order} seed ${seed} (crashes)`;
        newVersion(sim);
        runToEnd(sim, null, label);
        const deployment = sim.deployment;
        if (deployment === undefined) throw new Error('no deployment');
        outcomes.set(deployment.status, (outcomes.get(deployment.status) ?? 0) + 1);
        if (deployment.status === 'failed')
          expect(deployment.statusReason, label).toMatch(/failed: exit code 137$/);
        else expect(settled(sim), label).toBe(true);
      }
    // Both happen: crashes of old or already healthy instances do not fail a deployment.
    expect(outcomes.get('successful') ?? 0).toBeGreaterThan(0);
    expect(outcomes.get('failed') ?? 0).toBeGreaterThan(0);
  });
});

describe('deployments: a bad version and its revert', () => {
  for (const order of orders)
    it(`${order}: fails after at most maxParallel bad instances; the revert keeps the old ones (40 seeds)`, () => {
      for (const seed of seeds) {
        const sim = newSim(seed, { order });
        const label = `${order} seed ${seed}`;
        newVersion(sim, { bad: true });
        runToEnd(sim, boundsOf(sim), label);
        expect(sim.deployment?.status, label).toBe('failed');
        expect(sim.deployment?.statusReason, label).toMatch(/unhealthy: GET \/health returned 503$/);
        const bad = sim.tasks.filter((task) => task.version === 2);
        expect(bad.length, label).toBeGreaterThan(0);
        expect(bad.length, label).toBeLessThanOrEqual(sim.policy.maxParallel);
        // A failed deployment replaces nothing more.
        for (let n = 0; n < 5; n++) expect(step(sim).start, label).toEqual([]);
        expect(sim.tasks.filter((task) => task.version === 2)).toEqual(bad);

        // Auto-revert: version 3, whose spec is version 1's.
        newVersion(sim, { revertTo: 1 });
        const oldLive = sim.tasks.filter((task) => task.version === 1 && occupiesSlot(task));
        const slotsWithOld = new Set(oldLive.map((task) => task.slot));
        const slotsToRefill = sim.count - slotsWithOld.size;
        runToEnd(sim, boundsOf(sim), `${label} (revert)`);
        expect(sim.deployment?.status, label).toBe('successful');
        expect(oldLive.every(occupiesSlot), `${label}: an old instance was stopped`).toBe(true);
        expect(sim.tasks.filter((task) => task.version === 3).length, label).toBe(slotsToRefill);
        expect(
          sim.tasks.filter((task) => task.version === 2 && !isTerminal(task.state)),
          label,
        ).toEqual([]);
      }
    });
});

describe('deployments: canaries', () => {
  for (const order of orders)
    it(`${order}: starts exactly the canaries, replaces nothing else until promoted, then completes (40 seeds)`, () => {
      for (const seed of seeds) {
        const canary = (seed % 3) + 1;
        const sim = newSim(seed, { order, canary });
        const label = `${order} seed ${seed} (${canary} canaries)`;
        newVersion(sim);
        const deployment = sim.deployment;
        if (deployment === undefined) throw new Error('no deployment');
        const web = deployment.groups[group];
        if (web === undefined) throw new Error('no group');
        const healthyCanaries = (): number =>
          web.canaryTaskIds.filter((id) => web.healthyTaskIds.includes(id)).length;
        let n = 0;
        while (healthyCanaries() < canary) {
          if (++n > stepsMax) throw new Error(`${label}: canaries never healthy`);
          expect(promoteDeployment(deployment, sim.nowMs), label).toMatch(
            /canaries healthy; promote once all are$/,
          );
          const actions = step(sim);
          expect(actions.stop, label).toEqual([]);
          checkBounds(sim, { healthyMin: sim.count, liveMax: sim.count + canary }, label);
        }
        // Waiting for a user, past the progress deadline: nothing moves, nothing fails.
        advance(sim, 2 * sim.policy.progressDeadlineMs);
        for (let wait = 0; wait < 5; wait++)
          expect(step(sim), label).toEqual({ start: [], stop: [], done: [] });
        expect(deployment.status, label).toBe('running');
        expect(needsPromotion(deployment), label).toBe(true);
        const started = sim.tasks.filter((task) => task.version === 2);
        expect(
          started.map((task) => task.id),
          label,
        ).toEqual(web.canaryTaskIds);
        expect(started.length, label).toBe(canary);
        expect(sim.tasks.filter((task) => task.version === 1).every(occupiesSlot), label).toBe(true);

        expect(promoteDeployment(deployment, sim.nowMs), label).toBeNull();
        expect(needsPromotion(deployment), label).toBe(false);
        runToEnd(sim, boundsOf(sim), `${label} (promoted)`);
        expect(deployment.status, label).toBe('successful');
        // The canaries stayed: only the other slots got new instances.
        expect(sim.tasks.filter((task) => task.version === 2).length, label).toBe(sim.count);
        expect(started.every(occupiesSlot), label).toBe(true);
      }
    });
});
