/**
 * Services in the replicated state: dynamic ports picked when a task is placed and given back when it
 * ends, health committed from agents, deployments that roll a service job out a few instances at a time,
 * fail on an unhealthy one and revert, and the index discovery reads.
 */
import { describe, expect, it } from 'vitest';
import { decodeCommand, encodeCommand, type Command } from './command.ts';
import { deploymentProgress } from './deployment.ts';
import { nodeIdLabel, type JobSpec } from './job.ts';
import { ClusterState, type ApplyResult } from './state.ts';
import { isTerminal, type Task, type TaskSpec } from './task.ts';

const MiB = 1024 * 1024;

interface TestCluster {
  readonly state: ClusterState;
  readonly apply: (command: Command) => ApplyResult;
  readonly tick: (ms: number) => number;
  readonly now: () => number;
}

function cluster(nodeIds: readonly string[], dynamicPorts?: { min: number; max: number }): TestCluster {
  const state = new ClusterState();
  let index = 0;
  let nowMs = 1000;
  const apply = (command: Command): ApplyResult =>
    state.apply(++index, decodeCommand(index, encodeCommand(command)));
  for (const id of nodeIds)
    apply({
      type: 'upsertNode',
      node: {
        id,
        name: id,
        address: `10.0.0.${nodeIds.indexOf(id) + 1}:4700`,
        capacity: { cpuMillis: 64_000, memoryBytes: 64_000 * MiB },
        labels: { [nodeIdLabel]: id },
        drivers: ['exec'],
        ...(dynamicPorts === undefined ? {} : { dynamicPorts }),
      },
      atMs: 0,
    });
  const tick = (ms: number): number => (nowMs += ms);
  return { state, apply, tick, now: () => nowMs };
}

const spec = (name: string, extra: Partial<TaskSpec> = {}): TaskSpec => ({
  name,
  driver: 'exec',
  command: ['sleep', '60'],
  cpuMillis: 100,
  memoryBytes: 32 * MiB,
  priority: 50,
  env: {},
  constraints: {},
  ...extra,
});

function place(apply: (command: Command) => ApplyResult, taskIds: readonly string[], nodeId: string): void {
  apply({
    type: 'assignTasks',
    term: 1,
    assignments: taskIds.map((taskId) => ({ taskId, nodeId })),
    waiting: [],
    atMs: 1,
  });
}

function report(
  apply: (command: Command) => ApplyResult,
  task: Task,
  state: Task['state'],
  atMs: number,
  reason: string | null = null,
): void {
  apply({
    type: 'reportTask',
    nodeId: task.nodeId ?? '',
    taskId: task.id,
    attempt: task.attempt,
    state,
    exitCode: state === 'failed' ? 1 : null,
    reason,
    atMs,
  });
}

describe('dynamic ports', () => {
  it('gives each task free ports of its node range, different from every other live task, static ones included', () => {
    const { state, apply } = cluster(['n1'], { min: 30_000, max: 30_019 });
    apply({
      type: 'submitTasks',
      tasks: Array.from({ length: 9 }, (_, i) => ({
        id: `a0000000000${i}`,
        spec: spec(`t${i}`, {
          dynamicPorts: ['http', 'admin'],
          ...(i === 0 ? { ports: { fixed: 30_005 } } : {}),
        }),
      })),
      atMs: 1,
    });
    place(apply, [...state.tasks.keys()], 'n1');
    const held = [...state.tasks.values()].flatMap((task) => Object.values(task.hostPorts ?? {}));
    expect(held).toHaveLength(19);
    expect(new Set(held).size).toBe(19);
    for (const port of held) expect(port >= 30_000 && port <= 30_019).toBe(true);
    expect(state.tasks.get('a00000000000')?.hostPorts?.['fixed']).toBe(30_005);
    expect(state.dynamicPortsHeldOn('n1')).toBe(18);
  });

  it('does not place a task whose node range has no free port left, and gives ports back when tasks end', () => {
    const { state, apply } = cluster(['n1'], { min: 30_000, max: 30_003 });
    const ids = ['b00000000000', 'b00000000001', 'b00000000002'];
    apply({
      type: 'submitTasks',
      tasks: ids.map((id) => ({ id, spec: spec(id, { dynamicPorts: ['a', 'b'] }) })),
      atMs: 1,
    });
    place(apply, ids, 'n1');
    expect(ids.map((id) => state.tasks.get(id)?.state)).toEqual(['assigned', 'assigned', 'pending']);
    const first = state.tasks.get(ids[0] ?? '');
    if (!first) throw new Error('no task');
    report(apply, first, 'finished', 2);
    expect(state.dynamicPortsHeldOn('n1')).toBe(2);
    place(apply, [ids[2] ?? ''], 'n1');
    expect(state.tasks.get(ids[2] ?? '')?.state).toBe('assigned');
  });

  it('never hands one port of a node to two live tasks through 1,000 placements with churn', () => {
    const { state, apply } = cluster(['n1', 'n2'], { min: 40_000, max: 40_099 });
    const live = new Set<string>();
    let serial = 0;
    for (let round = 0; round < 100; round++) {
      const ids = Array.from({ length: 10 }, () => `c${String(serial++).padStart(11, '0')}`);
      apply({
        type: 'submitTasks',
        tasks: ids.map((id) => ({ id, spec: spec(id, { dynamicPorts: ['p'] }) })),
        atMs: round,
      });
      place(apply, ids.slice(0, 5), 'n1');
      place(apply, ids.slice(5), 'n2');
      for (const id of ids) live.add(id);
      // End about half of what runs, so ports are reused.
      for (const id of [...live].filter((_, i) => i % 2 === 0)) {
        const task = state.tasks.get(id);
        if (task && !isTerminal(task.state)) report(apply, task, 'finished', round);
        live.delete(id);
      }
      for (const node of ['n1', 'n2']) {
        const ports = state.liveTasksOn(node).flatMap((task) => Object.values(task.hostPorts ?? {}));
        expect(new Set(ports).size).toBe(ports.length);
      }
    }
    expect(serial).toBe(1000);
  });

  it('keeps the ports of a placed task through a snapshot, and a restored state counts them', () => {
    const { state, apply } = cluster(['n1'], { min: 30_000, max: 30_009 });
    apply({ type: 'submitTask', id: 'd00000000000', spec: spec('x', { dynamicPorts: ['http'] }), atMs: 1 });
    place(apply, ['d00000000000'], 'n1');
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    expect(copy.tasks.get('d00000000000')?.hostPorts).toEqual(state.tasks.get('d00000000000')?.hostPorts);
    expect(copy.dynamicPortsHeldOn('n1')).toBe(1);
  });
});

describe('health and discovery', () => {
  it("commits an agent's health for the attempt it runs, and lists running instances that answer", () => {
    const { state, apply } = cluster(['n1']);
    const check = {
      type: 'tcp' as const,
      port: 'http',
      intervalMs: 1000,
      timeoutMs: 500,
      graceMs: 0,
      failuresBeforeUnhealthy: 1,
      successesBeforeHealthy: 1,
    };
    apply({
      type: 'submitTasks',
      tasks: ['e00000000000', 'e00000000001'].map((id) => ({
        id,
        spec: spec(id, { job: 'web', dynamicPorts: ['http'], checks: [check] }),
      })),
      atMs: 1,
    });
    place(apply, ['e00000000000', 'e00000000001'], 'n1');
    for (const task of state.tasks.values()) report(apply, task, 'running', 5);
    expect(state.serviceTasks('default', 'web')).toHaveLength(2);
    expect(state.serviceTasks('default', 'nope')).toBeNull();
    const [a, b] = [...state.tasks.values()];
    if (!a || !b) throw new Error('no tasks');
    const health = (task: Task, status: 'healthy' | 'unhealthy', attempt = task.attempt): ApplyResult =>
      apply({
        type: 'taskHealth',
        nodeId: 'n1',
        taskId: task.id,
        attempt,
        health: { status, sinceMs: 6, message: status === 'healthy' ? '' : 'connection refused' },
        atMs: 6,
      });
    health(a, 'healthy');
    health(b, 'unhealthy');
    health(b, 'healthy', b.attempt + 1); // about another run: ignored
    expect(a.health?.status).toBe('healthy');
    expect(b.health).toMatchObject({ status: 'unhealthy', message: 'connection refused' });
    expect(b.events.at(-1)?.message).toBe('unhealthy: connection refused');
    report(apply, a, 'finished', 7);
    expect(state.serviceTasks('default', 'web')?.map((task) => task.id)).toEqual([b.id]);
  });
});

describe('deployments', () => {
  const job = (command: string[], update: JobSpec['update'] = {}): JobSpec => ({
    name: 'web',
    type: 'service',
    count: 4,
    update: { maxParallel: 2, minHealthyTimeMs: 100, ...update },
    task: { driver: 'exec', command, cpuMillis: 100, memoryMiB: 32 },
  });

  /** Places what waits, reports new tasks running, and lets the watcher judge as the leader would. */
  function step(c: TestCluster, outcome: (task: Task) => 'running' | 'failed'): void {
    const { state, apply, tick } = c;
    const pending = state.pendingTasks();
    if (pending.length > 0)
      place(
        apply,
        pending.map((task) => task.id),
        'n1',
      );
    for (const task of state.liveTasksOn('n1')) {
      if (task.desired !== 'run' && task.state !== 'running') continue;
      if (task.desired === 'kill') report(apply, task, 'killed', tick(1));
      else if (task.state === 'assigned') report(apply, task, outcome(task), tick(1), 'exit code 1');
    }
    tick(200);
    for (const deployment of state.deployments.values()) {
      if (deployment.status !== 'running') continue;
      const progress = deploymentProgress(deployment, state.deploymentTasks(deployment), c.now());
      if (progress.healthy.length + progress.unhealthy.length === 0 && progress.status === null) continue;
      apply({
        type: 'deploymentProgress',
        deploymentId: deployment.id,
        healthy: progress.healthy,
        unhealthy: progress.unhealthy,
        status: progress.status,
        atMs: c.now(),
      });
    }
  }

  const versions = (state: ClusterState): number[] =>
    state
      .jobTasks('default', 'web')
      .filter((task) => !isTerminal(task.state) && task.desired === 'run')
      .map((task) => task.instance?.version ?? 0)
      .sort();

  it('rolls a new version out at most maxParallel at a time, and marks it stable when all are healthy', () => {
    const c = cluster(['n1']);
    c.apply({ type: 'putJob', job: job(['sleep', '1']), atMs: c.now() });
    for (let i = 0; i < 5; i++) step(c, () => 'running');
    const first = c.state.deploymentsOf('default', 'web');
    expect(first.map((deployment) => deployment.status)).toEqual(['successful']);
    expect(c.state.jobs.get('default/web')?.stableVersion).toBe(1);

    c.apply({ type: 'putJob', job: job(['sleep', '2']), atMs: c.now() });
    // Stop-first: two old ones stop, two new ones start; the next two go once those are healthy.
    const runningSeen: number[] = [];
    for (let i = 0; i < 10; i++) {
      step(c, () => 'running');
      runningSeen.push(
        c.state
          .jobTasks('default', 'web')
          .filter((task) => task.state === 'running' && task.desired === 'run').length,
      );
    }
    expect(Math.min(...runningSeen)).toBeGreaterThanOrEqual(2);
    expect(versions(c.state)).toEqual([2, 2, 2, 2]);
    expect(c.state.deploymentsOf('default', 'web').at(-1)?.status).toBe('successful');
    expect(c.state.jobs.get('default/web')?.stableVersion).toBe(2);
  });

  it('fails on an instance that does not run, and reverts to the stable version, replacing only the new ones', () => {
    const c = cluster(['n1']);
    c.apply({ type: 'putJob', job: job(['sleep', '1']), atMs: c.now() });
    for (let i = 0; i < 5; i++) step(c, () => 'running');
    const stableIds = new Set(
      c.state
        .jobTasks('default', 'web')
        .filter((task) => task.state === 'running')
        .map((task) => task.id),
    );
    c.apply({ type: 'putJob', job: job(['false']), atMs: c.now() });
    for (let i = 0; i < 12; i++) step(c, (task) => (task.spec.command[0] === 'false' ? 'failed' : 'running'));
    const [, failed, revert] = c.state.deploymentsOf('default', 'web');
    expect(failed?.status).toBe('failed');
    expect(failed?.statusReason).toMatch(/failed.*reverted to version 1 \(as version 3\)/);
    expect(revert).toMatchObject({ jobVersion: 3, status: 'successful' });
    const running = c.state.jobTasks('default', 'web').filter((task) => task.state === 'running');
    expect(running).toHaveLength(4);
    // Two of the old instances were never touched: the revert replaced only what version 2 had replaced.
    expect(running.filter((task) => stableIds.has(task.id))).toHaveLength(2);
    expect(running.every((task) => task.spec.command[0] === 'sleep')).toBe(true);
  });

  it('goes on with a deployment when a version mid-way changes only the count or the policy', () => {
    const c = cluster(['n1']);
    c.apply({ type: 'putJob', job: job(['sleep', '1']), atMs: c.now() });
    for (let i = 0; i < 5; i++) step(c, () => 'running');
    c.apply({ type: 'putJob', job: job(['sleep', '2']), atMs: c.now() });
    step(c, () => 'running');
    const rolling = c.state.activeDeployment('default', 'web');
    // Version 3: the count down to 3 and one at a time, nothing else.
    c.apply({ type: 'putJob', job: { ...job(['sleep', '2'], { maxParallel: 1 }), count: 3 }, atMs: c.now() });
    expect(c.state.activeDeployment('default', 'web')).toBe(rolling);
    expect(rolling?.policy.maxParallel).toBe(1);
    expect(rolling?.groups['web']?.desiredTotal).toBe(3);
    for (let i = 0; i < 10; i++) step(c, () => 'running');
    expect(rolling?.status).toBe('successful');
    expect(c.state.deploymentsOf('default', 'web')).toHaveLength(2);
    expect(versions(c.state)).toHaveLength(3);
    expect(c.state.jobs.get('default/web')?.stableVersion).toBe(3);
  });

  it('pauses, resumes and fails on request; a count change alone starts no deployment', () => {
    const c = cluster(['n1']);
    c.apply({ type: 'putJob', job: job(['sleep', '1']), atMs: c.now() });
    for (let i = 0; i < 5; i++) step(c, () => 'running');
    c.apply({ type: 'putJob', job: { ...job(['sleep', '1']), count: 6 }, atMs: c.now() });
    expect(c.state.deploymentsOf('default', 'web')).toHaveLength(1);
    c.apply({ type: 'putJob', job: { ...job(['sleep', '3']), count: 6 }, atMs: c.now() });
    const id = c.state.activeDeployment('default', 'web')?.id ?? '';
    expect(c.apply({ type: 'controlDeployment', deploymentId: id, action: 'pause', atMs: c.now() })).toEqual({
      ok: true,
    });
    for (let i = 0; i < 5; i++) step(c, () => 'running');
    // Paused after its first two: the others still run version 1 (well, version 2 is count only).
    expect(versions(c.state).filter((version) => version === 3)).toHaveLength(2);
    c.apply({ type: 'controlDeployment', deploymentId: id, action: 'resume', atMs: c.now() });
    c.apply({ type: 'controlDeployment', deploymentId: id, action: 'fail', atMs: c.now() });
    expect(c.state.deployments.get(id)?.status).toBe('failed');
    expect(
      c.apply({ type: 'controlDeployment', deploymentId: id, action: 'pause', atMs: c.now() }),
    ).toMatchObject({
      ok: false,
      code: 'CONFLICT',
    });
  });
});

describe('device slots', () => {
  it("gives each task distinct slots of its node's devices, and gives them back when it ends", () => {
    const state = new ClusterState();
    let index = 0;
    const apply = (command: Command): ApplyResult =>
      state.apply(++index, decodeCommand(index, encodeCommand(command)));
    apply({
      type: 'upsertNode',
      node: {
        id: 'g1',
        name: 'g1',
        address: '10.0.0.9:4700',
        capacity: { cpuMillis: 64_000, memoryBytes: 64_000 * MiB, devices: { gpu: 4 } },
        labels: { [nodeIdLabel]: 'g1' },
        drivers: ['exec'],
      },
      atMs: 0,
    });
    const ids = ['d00000000000', 'd00000000001', 'd00000000002'];
    apply({
      type: 'submitTasks',
      tasks: ids.map((id, i) => ({ id, spec: spec(id, { devices: { gpu: i === 0 ? 1 : 2 } }) })),
      atMs: 1,
    });
    place(apply, ids, 'g1');
    const slots = (id: string): number[] | undefined => state.tasks.get(id)?.deviceSlots?.['gpu'];
    expect(ids.map(slots)).toEqual([[0], [1, 2], undefined]);
    expect(state.tasks.get(ids[2] ?? '')?.state).toBe('pending');
    const first = state.tasks.get(ids[0] ?? '');
    if (!first) throw new Error('no task');
    report(apply, first, 'finished', 2);
    place(apply, [ids[2] ?? ''], 'g1');
    // Slot 0 came back; 3 was free all along.
    expect(slots(ids[2] ?? '')).toEqual([0, 3]);
  });
});
