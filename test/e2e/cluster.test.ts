/**
 * End to end, as a user would: the built binary, three agents on loopback with real libp2p, tasks
 * submitted through a follower, a full cluster that queues by priority, the leader SIGKILLed, and the
 * killed node restarted from its data dir.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, shoal, waitFor, type TestAgent } from '../helpers/cluster.ts';
import type { MemberView, StatusView, TaskView } from '../../src/api/index.ts';

type TaskRow = TaskView;
type MemberRow = MemberView;
type StatusRow = StatusView;

const cluster = new TestCluster();
let agents: TestAgent[] = [];
let key = '';

async function leaderOf(among: TestAgent[]): Promise<TestAgent> {
  return waitFor(
    'a leader all of them agree on',
    async () => {
      const statuses = await Promise.all(among.map((a) => a.json<StatusRow>(['status'])));
      const leader = statuses[0]?.leader?.name;
      if (leader === undefined || !statuses.every((s) => s.leader?.name === leader)) return null;
      return among.find((a) => a.name === leader) ?? null;
    },
    30_000,
  );
}

async function taskOn(agent: TestAgent, id: string): Promise<TaskRow | undefined> {
  return (await agent.json<TaskRow[]>(['ps'])).find((t) => t.id === id);
}

/** Submits a task that stays lost with its node (this file checks the loss itself; rescheduling is jobs.test.ts's). */
async function run(agent: TestAgent, args: string[]): Promise<string> {
  const result = await agent.cli(['run', '--reschedule', 'never', ...args]);
  expect(result.code, result.stderr).toBe(0);
  const id = result.stdout.trim();
  expect(id).toMatch(/^[0-9a-f]{12}$/);
  return id;
}

describe('a three-node cluster, end to end', { timeout: 180_000 }, () => {
  beforeAll(async () => {
    await buildBinary();
    const first = await cluster.agent({ name: 'n1', cpu: 1, memoryMiB: 1024, labels: { zone: 'a' } });
    key = await waitFor('the cluster key', () => {
      const match = /--key ([0-9a-f]{64})/.exec(first.log());
      return Promise.resolve(match?.[1] ?? null);
    });
    expect(readFileSync(join(first.dataDir, 'cluster.key'), 'utf8').trim()).toBe(key);
    const second = await cluster.agent({ name: 'n2', cpu: 1, memoryMiB: 1024, join: first.address, key });
    const third = await cluster.agent({
      name: 'n3',
      cpu: 1,
      memoryMiB: 1024,
      join: first.address,
      key,
      labels: { zone: 'b' },
    });
    agents = [first, second, third];
  }, 240_000);

  afterAll(async () => {
    await cluster.stop();
  }, 120_000);

  it('joins three nodes: every node lists every member alive, and one leader with three voters', async () => {
    for (const agent of agents) {
      await waitFor(`${agent.name} to see 3 alive members`, async () => {
        const members = await agent.json<MemberRow[]>(['members']);
        return members.filter((m) => m.state === 'alive').length === 3 ? members : null;
      });
    }
    const members = await agents[2]!.json<MemberRow[]>(['members']);
    expect(members.map((m) => [m.name, m.cpuMillis, m.memoryBytes / 1024 / 1024])).toEqual([
      ['n1', 1000, 1024],
      ['n2', 1000, 1024],
      ['n3', 1000, 1024],
    ]);
    expect(members.find((m) => m.name === 'n3')?.labels).toEqual({ zone: 'b' });
    expect(members.find((m) => m.name === 'n2')?.address).toBe(agents[1]!.address);
    await waitFor('three voters', async () => {
      const status = await agents[0]!.json<StatusRow>(['status']);
      return status.voters.length === 3 && status.leader !== null;
    });
    await leaderOf(agents);
  });

  it('refuses a node with the wrong cluster key within seconds, naming the key from the first failure', async () => {
    const startedMs = Date.now();
    const intruder = await cluster.agent({
      name: 'intruder',
      join: agents[0]!.address,
      key: 'ab'.repeat(32),
    });
    const code = await intruder.exited(60_000);
    // The join gives up within 4.5 s (src/membership/join.ts); the rest is start-up, with a margin for a
    // loaded CI box. It took 2 to 18 s, after warnings that blamed the address.
    expect(Date.now() - startedMs).toBeLessThan(8000);
    expect(code).not.toBe(0);
    const log = intruder.log();
    expect(log).toMatch(/the handshake failed \(wrong cluster key\?\)/);
    expect(log).toMatch(/refused: the handshake failed, which means the cluster key does not match/);
    expect(log).not.toMatch(/no answer within/);
    const members = await agents[0]!.json<MemberRow[]>(['members']);
    expect(members.map((m) => m.name)).not.toContain('intruder');
  });

  it('runs a task submitted through a follower; its exit code and logs are visible from a third node', async () => {
    const leader = await leaderOf(agents);
    const follower = agents.find((a) => a !== leader)!;
    const third = agents.find((a) => a !== leader && a !== follower)!;
    const id = await run(follower, [
      '--name',
      'hello',
      '--cpu',
      '0.1',
      '--',
      'sh',
      '-c',
      'echo hello from shoal; echo oops >&2; exit 3',
    ]);
    // Read-your-writes: the task is listed at once on another node.
    expect((await taskOn(third, id))?.name).toBe('hello');
    const done = await waitFor('the task to fail with exit code 3', async () => {
      const task = await taskOn(third, id);
      return task?.state === 'failed' ? task : null;
    });
    expect(done.exitCode).toBe(3);
    expect(done.reason).toMatch(/exit code 3/);
    const logs = await third.cli(['logs', id]);
    expect(logs.stdout).toBe('hello from shoal\n');
    expect(logs.stderr).toBe('oops\n');
  });

  it('queues what does not fit and starts it, highest priority first, when room frees', async () => {
    const via = agents[1]!;
    const sleepers: string[] = [];
    for (let i = 0; i < 3; i++)
      sleepers.push(
        // Not preemptible: this test is about queueing; preemption has its own (test/e2e/allocator.test.ts).
        await run(via, ['--name', `filler${i}`, '--cpu', '1', '--not-preemptible', '--', 'sleep', '300']),
      );
    await waitFor('three fillers running', async () => {
      const tasks = await via.json<TaskRow[]>(['ps']);
      return sleepers.every((id) => tasks.find((t) => t.id === id)?.state === 'running');
    });
    const low = await run(via, ['--name', 'low', '--cpu', '1', '--priority', '10', '--', 'sleep', '300']);
    const high = await run(via, ['--name', 'high', '--cpu', '1', '--priority', '90', '--', 'sleep', '300']);
    const waiting = await waitFor('both to wait with a reason', async () => {
      const tasks = await via.json<TaskRow[]>(['ps']);
      const rows = [tasks.find((t) => t.id === low), tasks.find((t) => t.id === high)];
      return rows.every((t) => t?.state === 'pending' && /no node has 1 CPU/.test(t.reason ?? ''))
        ? rows
        : null;
    });
    expect(waiting).toHaveLength(2);
    const killed = await via.cli(['kill', sleepers[0]!]);
    expect(killed.code, killed.stderr).toBe(0);
    await waitFor(
      'the high-priority task to run',
      async () => (await taskOn(via, high))?.state === 'running',
    );
    expect((await taskOn(via, low))?.state).toBe('pending');
    expect((await taskOn(via, sleepers[0]!))?.state).toBe('killed');
  });

  it('survives SIGKILL of the leader: a new leader, writes accepted, nothing acknowledged lost; the node comes back', async () => {
    const before = await agents[0]!.json<TaskRow[]>(['ps']);
    const leader = await leaderOf(agents);
    const survivors = agents.filter((a) => a !== leader);
    const oldStatus = await leader.json<StatusRow>(['status']);
    const leaderId = oldStatus.leader!.id;
    leader.kill('SIGKILL');
    await leader.exited(10_000);

    const newLeader = await leaderOf(survivors);
    expect(newLeader).not.toBe(leader);
    const id = await run(survivors[0]!, ['--name', 'after-failover', '--', 'true']);
    // The survivors are full, so it waits; it is acknowledged and listed everywhere all the same.
    expect((await taskOn(survivors[1]!, id))?.state).toBe('pending');
    const after = await survivors[1]!.json<TaskRow[]>(['ps']);
    for (const task of before) expect(after.map((t) => t.id)).toContain(task.id);

    // Membership declares the killed node dead; what ran there becomes lost, with the reason.
    await waitFor('the killed node to be seen dead', async () => {
      const members = await survivors[0]!.json<MemberRow[]>(['members']);
      return members.find((m) => m.name === leader.name)?.state === 'dead';
    });
    const ranThere = before.filter((t) => t.node === leader.name && t.state === 'running').map((t) => t.id);
    expect(ranThere.length).toBeGreaterThan(0);
    await waitFor('its tasks to be lost', async () => {
      const tasks = await survivors[0]!.json<TaskRow[]>(['ps']);
      return ranThere.every((taskId) => {
        const task = tasks.find((t) => t.id === taskId);
        return (
          task?.state === 'lost' &&
          new RegExp(`node ${leader.name} unreachable since`).test(task.reason ?? '')
        );
      });
    });

    // Restart from the same data dir: same identity, a higher incarnation, and the state caught up.
    leader.start();
    await waitFor(
      'the restarted node to be alive again',
      async () => {
        const members = await survivors[0]!.json<MemberRow[]>(['members']);
        const member = members.find((m) => m.name === leader.name);
        return member?.state === 'alive' && member.id === leaderId && member.incarnation === 2;
      },
      60_000,
    );
    await waitFor(
      'the restarted node to list every task',
      async () => {
        const tasks = await leader.json<TaskRow[]>(['ps']);
        return [...before.map((t) => t.id), id].every((taskId) => tasks.some((t) => t.id === taskId));
      },
      60_000,
    );
    // Back with free room, it runs what queued: the priority-50 task first, then the priority-10 one.
    await waitFor(
      'the task submitted after failover to finish',
      async () => (await taskOn(survivors[0]!, id))?.state === 'finished',
    );
    const low = before.find((t) => t.name === 'low')!;
    await waitFor('the queued low-priority task to run on the returned node', async () => {
      const task = await taskOn(survivors[0]!, low.id);
      return task?.state === 'running' && task.node === leader.name;
    });
  });

  it('answers bad input with one line that says what to fix', async () => {
    const via = agents[1]!;
    const cases: [string[], RegExp][] = [
      [['run', '--cpu=-1', '--', 'true'], /--cpu "-1" must be a positive number of cores/],
      [['run', '--cpu', '-1', '--', 'true'], /Option '--cpu' argument is ambiguous.*use '--cpu=-XYZ'/],
      [['run', '--driver', 'vm', '--', 'true'], /--driver "vm" is unknown; use exec or docker/],
      [['run'], /the exec driver needs a command/],
      [['run', '--priority', '101', '--', 'true'], /--priority "101" must be a whole number from 0 to 100/],
      [['run', '--bogus', '--', 'true'], /Unknown option '--bogus'/],
      [['logs', 'feedfeedfeed'], /no task feedfeedfeed/],
      [['kill', 'feedfeedfeed'], /no task feedfeedfeed/],
    ];
    for (const [args, pattern] of cases) {
      const result = await via.cli(args);
      expect(result.code, args.join(' ')).not.toBe(0);
      expect(result.stderr.trim().split('\n')).toHaveLength(
        1 + (args[0] === 'run' && result.stderr.includes('submitting') ? 1 : 0),
      );
      expect(result.stderr).toMatch(pattern);
    }
    const down = await shoal(['ps', '--addr', '127.0.0.1:1']);
    expect(down.code).toBe(1);
    expect(down.stderr).toMatch(/cannot reach shoal at 127.0.0.1:1 .*is `shoal agent` running there\?/);
    const unreachableJoin = await cluster.agent({ name: 'lonely', join: '127.0.0.1:1', key, extraArgs: [] });
    // It keeps retrying for a while and says why; it must not crash before that.
    await waitFor(
      'a clear join error',
      () => Promise.resolve(/nothing listens there/.test(unreachableJoin.log())),
      30_000,
    );
    unreachableJoin.kill('SIGKILL');
  });
});
