/**
 * The allocator through the whole system: three agents with one CPU each, filled; tasks of mixed
 * priorities queued; capacity freed one task at a time, and the order in which the queue starts checked.
 * Then preemption, label rules with their reasons, replicas on distinct nodes, and an all-or-nothing gang.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';
import type { TaskView } from '../../src/api/index.ts';

type TaskRow = TaskView;

const cluster = new TestCluster();
let agents: TestAgent[] = [];

async function tasks(): Promise<TaskRow[]> {
  return agents[1]!.json<TaskRow[]>(['ps']);
}

async function run(args: string[]): Promise<string[]> {
  const result = await agents[1]!.cli(['run', ...args]);
  expect(result.code, result.stderr).toBe(0);
  const ids = result.stdout.trim().split('\n');
  for (const id of ids) expect(id).toMatch(/^[0-9a-f]{12}$/);
  return ids;
}

async function runOne(args: string[]): Promise<string> {
  const [id] = await run(args);
  return id!;
}

async function stateOf(id: string): Promise<TaskRow | undefined> {
  return (await tasks()).find((t) => t.id === id);
}

async function kill(id: string): Promise<void> {
  const result = await agents[1]!.cli(['kill', id]);
  expect(result.code, result.stderr).toBe(0);
  await waitFor(`${id} to end`, async () => (await stateOf(id))?.state === 'killed', 180_000);
}

describe('the allocator in a three-node cluster', { timeout: 600_000 }, () => {
  beforeAll(async () => {
    await buildBinary();
    const first = await cluster.agent({ name: 'a1', cpu: 1, memoryMiB: 1024, labels: { zone: 'a' } });
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(first.log())?.[1] ?? null),
    );
    const second = await cluster.agent({
      name: 'a2',
      cpu: 1,
      memoryMiB: 1024,
      join: first.address,
      key,
      labels: { zone: 'a' },
    });
    const third = await cluster.agent({
      name: 'a3',
      cpu: 1,
      memoryMiB: 1024,
      join: first.address,
      key,
      labels: { zone: 'b' },
    });
    agents = [first, second, third];
    await waitFor(
      'three nodes registered',
      async () => {
        const members = await first.json<{ state: string }[]>(['members']);
        return members.filter((m) => m.state === 'alive').length === 3;
      },
      180_000,
    );
  }, 300_000);

  afterAll(async () => {
    await cluster.stop();
  }, 120_000);

  it('starts queued tasks strictly by priority, then submission order, as capacity frees', async () => {
    const fillers: string[] = [];
    for (let i = 0; i < 3; i++) {
      fillers.push(
        await runOne(['--name', `fill${i}`, '--cpu', '1', '--not-preemptible', '--', 'sleep', '600']),
      );
    }
    await waitFor(
      'the fillers to run on all three nodes',
      async () => {
        const rows = await tasks();
        const nodes = new Set(
          fillers
            .map((id) => rows.find((t) => t.id === id))
            .filter((t) => t?.state === 'running')
            .map((t) => t?.node),
        );
        return nodes.size === 3;
      },
      180_000,
    );
    // Queued in this order; they must start as p70 (first), p70 (second), p40, p20.
    const queued = [
      await runOne(['--name', 'p20', '--cpu', '1', '--priority', '20', '--', 'sleep', '600']),
      await runOne(['--name', 'p70-first', '--cpu', '1', '--priority', '70', '--', 'sleep', '600']),
      await runOne(['--name', 'p40', '--cpu', '1', '--priority', '40', '--', 'sleep', '600']),
      await runOne(['--name', 'p70-second', '--cpu', '1', '--priority', '70', '--', 'sleep', '600']),
    ];
    await waitFor(
      'all four to wait, saying why',
      async () => {
        const rows = await tasks();
        return queued.every((id) => {
          const row = rows.find((t) => t.id === id);
          return row?.state === 'pending' && /no node has 1 CPU/.test(row.reason ?? '');
        });
      },
      180_000,
    );
    const started: string[] = [];
    const frees = [fillers[0]!, fillers[1]!, fillers[2]!];
    for (const free of frees) {
      await kill(free);
      const next = await waitFor(
        'one more queued task to start',
        async () => {
          const rows = await tasks();
          const running = queued.filter(
            (id) => !started.includes(id) && rows.find((t) => t.id === id)?.state === 'running',
          );
          return running.length > 0 ? running : null;
        },
        180_000,
      );
      expect(next, 'one task per freed CPU').toHaveLength(1);
      started.push(next[0]!);
    }
    const names = new Map((await tasks()).map((t) => [t.id, t.name]));
    expect(started.map((id) => names.get(id))).toEqual(['p70-first', 'p70-second', 'p40']);
    expect((await stateOf(queued[0]!))?.state).toBe('pending');
  });

  it('preempts the lowest priority for a task at least 10 higher, and nothing for one less than 10 higher', async () => {
    // Now running: p70-first, p70-second, p40 (preemptible); pending: p20.
    const rows = await tasks();
    const p40 = rows.find((t) => t.name === 'p40' && t.state === 'running');
    expect(p40).toBeDefined();
    // 45 is not 10 above 40: it waits.
    const near = await runOne(['--name', 'p45', '--cpu', '1', '--priority', '45', '--', 'sleep', '600']);
    const urgent = await runOne(['--name', 'urgent', '--cpu', '1', '--priority', '95', '--', 'sleep', '600']);
    await waitFor('urgent to run', async () => (await stateOf(urgent))?.state === 'running', 180_000);
    const victim = await stateOf(p40!.id);
    expect(victim?.state).toBe('killed');
    expect(victim?.reason).toMatch(/preempted by urgent/);
    expect((await stateOf(near))?.state).toBe('pending');
    for (const name of ['p70-first', 'p70-second']) {
      expect((await tasks()).find((t) => t.name === name)?.state).toBe('running');
    }
    // The CPU freed by the urgent task goes to the highest waiting task.
    await kill(urgent);
    await waitFor(
      'p45 to take the freed CPU',
      async () => (await stateOf(near))?.state === 'running',
      180_000,
    );
  });

  it('explains what label rules exclude, and never places against them', async () => {
    const mars = await runOne(['--name', 'mars', '--cpu', '0.1', '--constraint', 'zone=mars', '--', 'true']);
    const notAB = await runOne([
      '--name',
      'nowhere',
      '--cpu',
      '0.1',
      '--constraint',
      'zone notin a,b',
      '--',
      'true',
    ]);
    await waitFor(
      'both to wait with the rule named',
      async () => {
        const rows = await tasks();
        return (
          /zone=mars/.test(rows.find((t) => t.id === mars)?.reason ?? '') &&
          /zone not ?in/i.test(rows.find((t) => t.id === notAB)?.reason ?? '')
        );
      },
      180_000,
    );
    expect((await stateOf(mars))?.state).toBe('pending');
  });

  it('spreads replicas over distinct nodes, and starts a gang whole or not at all', async () => {
    // Free the cluster first.
    for (const row of await tasks()) {
      if (!['finished', 'failed', 'killed', 'lost'].includes(row.state)) {
        const result = await agents[1]!.cli(['kill', row.id]);
        expect(result.code, result.stderr).toBe(0);
      }
    }
    await waitFor(
      'everything to end',
      async () => (await tasks()).every((t) => ['finished', 'failed', 'killed', 'lost'].includes(t.state)),
      180_000,
    );
    const replicas = await run([
      '--name',
      'web',
      '--replicas',
      '3',
      '--distinct-nodes',
      '--cpu',
      '0.2',
      '--',
      'sleep',
      '600',
    ]);
    expect(replicas).toHaveLength(3);
    const placed = await waitFor(
      'three replicas running',
      async () => {
        const rows = (await tasks()).filter((t) => replicas.includes(t.id));
        return rows.every((t) => t.state === 'running') ? rows : null;
      },
      180_000,
    );
    expect(new Set(placed.map((t) => t.node)).size).toBe(3);
    // 0.8 CPU free on each node: four 0.5-CPU members fit only three at a time, so none may start.
    const gang = await run([
      '--name',
      'gang',
      '--replicas',
      '4',
      '--gang',
      '--cpu',
      '0.5',
      '--',
      'sleep',
      '600',
    ]);
    await waitFor(
      'the gang to wait as a group',
      async () => {
        const rows = (await tasks()).filter((t) => gang.includes(t.id));
        return rows.length === 4 && rows.every((t) => t.state === 'pending' && /group/.test(t.reason ?? ''));
      },
      180_000,
    );
    // Free one node's worth: now all four fit (two on it), and all four start.
    await kill(replicas[0]!);
    await kill(replicas[1]!);
    await waitFor(
      'the whole gang to run',
      async () => (await tasks()).filter((t) => gang.includes(t.id)).every((t) => t.state === 'running'),
      180_000,
    );
  });
});
