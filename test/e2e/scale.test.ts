/**
 * The scale run, small (issue #19's proof in CI): three real voters, 200 simulated nodes from the fleet
 * simulator (scripts/fleet: real membership records, probes, leases and batched reports), 20 jobs of 1,000
 * tasks submitted through the API. Checks correctness only, never speed: every task placed once and
 * running, none lost, no task assigned while another node still ran it, and the leader's view of every task
 * equal to each voter's.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShoalClient, type TaskView } from '../../src/api/index.ts';
import { TestCluster, buildBinary, repoRoot, waitFor, type TestAgent } from '../helpers/cluster.ts';

const simulatedNodes = 200;
const jobs = 20;
const tasksPerJob = 1000;
const total = jobs * tasksPerJob;

describe('the fleet simulator against three real voters', { timeout: 600_000 }, () => {
  const cluster = new TestCluster();
  const voters: TestAgent[] = [];
  let fleet: ChildProcess | null = null;
  let fleetStats: Record<string, number> = {};

  const api = (agent: TestAgent): ShoalClient =>
    new ShoalClient({ address: agent.socket, timeoutMs: 60_000 });

  beforeAll(async () => {
    await buildBinary();
    const first = await cluster.agent({ name: 'v1' });
    await waitFor('the first voter', async () => (await first.cli(['status'])).code === 0);
    const key = readFileSync(join(first.dataDir, 'cluster.key'), 'utf8').trim();
    voters.push(first);
    for (const name of ['v2', 'v3']) voters.push(await cluster.agent({ name, join: first.address, key }));
    await cluster.explain(
      waitFor('three voters', async () => (await api(first).status()).voters.length === 3, 60_000),
    );
    fleet = spawn(
      process.execPath,
      [
        join(repoRoot, 'scripts', 'fleet', 'main.ts'),
        '--nodes',
        String(simulatedNodes),
        '--seeds',
        voters.map((voter) => voter.address).join(','),
        '--events-api',
        voters.map((voter) => voter.socket).join(','),
        '--key-file',
        join(first.dataDir, 'cluster.key'),
        '--seed',
        '19',
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    createInterface({ input: fleet.stdout ?? process.stdin }).on('line', (line) => {
      const parsed = JSON.parse(line) as { stats?: Record<string, number> };
      if (parsed.stats !== undefined) fleetStats = parsed.stats;
    });
    await cluster.explain(
      waitFor(
        `${simulatedNodes} simulated nodes alive`,
        async () =>
          (await api(first).members()).filter(
            (member) => member.labels['fleet'] === 'simulated' && member.state === 'alive',
          ).length === simulatedNodes,
        120_000,
      ),
    );
  }, 240_000);

  afterAll(async () => {
    fleet?.kill('SIGTERM');
    await cluster.stop();
  });

  it('places every task once, runs all of them, loses none, and every voter agrees', async () => {
    const first = voters[0];
    if (first === undefined) throw new Error('no voters');
    for (let index = 0; index < jobs; index++) {
      await api(voters[index % voters.length] ?? first).applyJob({
        name: `scale-${index}`,
        type: 'batch',
        count: tasksPerJob,
        constraints: { fleet: 'simulated', ...(index % 5 === 0 ? { rack: 'r0' } : {}) },
        task: { driver: 'exec', command: ['sleep', '86400'], cpuMillis: 10, memoryMiB: 16 },
      });
    }
    await cluster.explain(
      waitFor(
        `${total} tasks running`,
        async () => {
          const list = await api(first).jobs();
          const running = list.reduce((sum, job) => sum + (job.states['running'] ?? 0), 0);
          return running === total;
        },
        300_000,
      ),
    );
    await waitFor(
      'the fleet to count them',
      () => Promise.resolve(fleetStats['tasksRunning'] === total),
      30_000,
    );

    const views = await Promise.all(voters.map(async (voter) => api(voter).tasks()));
    const status = await api(first).status();
    const leaderIndex = voters.findIndex((voter) => voter.name === status.leader?.name);
    const leaderView = views[leaderIndex] ?? [];
    const scaleTasks = (tasks: readonly TaskView[]): TaskView[] =>
      tasks.filter((task) => task.name.startsWith('scale-'));
    const tasks = scaleTasks(leaderView);
    expect(tasks).toHaveLength(total);
    expect(new Set(tasks.map((task) => task.id)).size).toBe(total);
    // Every one placed once and running: first attempt, on a simulated node, none lost or failed.
    expect(tasks.filter((task) => task.state !== 'running')).toEqual([]);
    expect(tasks.filter((task) => task.attempt !== 0)).toEqual([]);
    expect(tasks.filter((task) => !(task.node ?? '').startsWith('sim-'))).toEqual([]);
    // The constrained fifth ran only on rack r0's nodes (names sim-000, sim-005, …: index % 5 === 0).
    const rackOf = (node: string | null): number => Number((node ?? '').slice(4)) % 5;
    const constrained = tasks.filter((task) => /^scale-(0|5|10|15)\./.test(task.name));
    expect(constrained).toHaveLength(4 * tasksPerJob);
    expect(constrained.filter((task) => rackOf(task.node) !== 0)).toEqual([]);
    expect(fleetStats['assignedTwice']).toBe(0);
    expect(fleetStats['reportsFailed']).toBe(0);

    // The leader's view equals each voter's: same tasks, states and nodes.
    const shape = (list: readonly TaskView[]): string[] =>
      scaleTasks(list)
        .map((task) => `${task.id} ${task.state} ${task.nodeId ?? '-'} ${task.attempt}`)
        .sort();
    const expected = shape(leaderView);
    for (const view of views) expect(shape(view)).toEqual(expected);
  });
});
