/**
 * Five real agents; the leader is SIGKILLed and restarted again and again while tasks are submitted
 * through random survivors. Every acknowledged task must survive, the log must be compacted into
 * snapshots as it grows (a restarted node recovers from its snapshot, a lagging one receives the
 * leader's), and a leader stopped gracefully hands over leadership.
 */
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';
import type { StatusView } from '../../src/api/index.ts';

type StatusRow = StatusView;

const compactEntries = 40;
const cluster = new TestCluster();
const agents: TestAgent[] = [];

async function agreedLeader(among: TestAgent[]): Promise<TestAgent> {
  return waitFor(
    'a leader all of them agree on',
    async () => {
      const statuses = await Promise.all(among.map((a) => a.json<StatusRow>(['status'])));
      const name = statuses[0]?.leader?.name;
      if (name === undefined || !statuses.every((s) => s.leader?.name === name)) return null;
      return among.find((a) => a.name === name) ?? null;
    },
    90_000,
  );
}

describe('five agents under repeated leader failure', { timeout: 900_000 }, () => {
  beforeAll(async () => {
    await buildBinary();
    const extraArgs = ['--raft-compact-entries', String(compactEntries)];
    const first = await cluster.agent({ name: 'e1', cpu: 4, extraArgs });
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(first.log())?.[1] ?? null),
    );
    agents.push(first);
    for (let i = 2; i <= 5; i++) {
      agents.push(await cluster.agent({ name: `e${i}`, cpu: 4, join: first.address, key, extraArgs }));
    }
    await waitFor(
      'five voters',
      async () => (await first.json<StatusRow>(['status'])).voters.length === 5,
      180_000,
    );
  }, 240_000);

  afterAll(async () => {
    await cluster.stop();
  }, 120_000);

  it('loses no acknowledged task while the leader is killed and restarted four times', async () => {
    const acknowledged: string[] = [];
    for (let round = 0; round < 4; round++) {
      const leader = await agreedLeader(agents);
      leader.kill('SIGKILL');
      await leader.exited(10_000);
      const survivors = agents.filter((a) => a !== leader);
      // Submit through every survivor in turn while the cluster elects a new leader.
      for (let i = 0; i < 12; i++) {
        const via = survivors[i % survivors.length]!;
        const result = await via.cli(['run', '--name', `r${round}-${i}`, '--cpu', '0.01', '--', 'true']);
        expect(result.code, result.stderr).toBe(0);
        acknowledged.push(result.stdout.trim());
      }
      leader.start();
      await waitFor(
        `${leader.name} back`,
        async () => (await leader.json<StatusRow>(['status'])).leader !== null,
        180_000,
      );
    }
    for (const agent of agents) {
      await waitFor(
        `${agent.name} to list every acknowledged task`,
        async () => {
          const ids = new Set((await agent.json<{ id: string }[]>(['ps'])).map((t) => t.id));
          return acknowledged.every((id) => ids.has(id));
        },
        180_000,
      );
    }
    // A node that fell behind the leader's snapshot received it (InstallSnapshot).
    expect(agents.some((a) => /installed a snapshot from the leader/.test(a.log()))).toBe(true);
    // The log was compacted: snapshots exist and the WALs stay small.
    const withSnapshots = agents.filter((a) => existsSync(join(a.dataDir, 'raft', 'snapshot.bin')));
    expect(withSnapshots.length).toBeGreaterThanOrEqual(3);
    for (const agent of withSnapshots) {
      expect(statSync(join(agent.dataDir, 'raft', 'raft.wal')).size).toBeLessThan(2 * 1024 * 1024);
    }
  });

  it('a leader stopped with SIGTERM hands leadership over instead of leaving the cluster to time out', async () => {
    const leader = await agreedLeader(agents);
    const before = (await leader.json<StatusRow>(['status'])).term;
    leader.kill('SIGTERM');
    expect(await leader.exited(30_000)).toBe(0);
    expect(leader.log()).toMatch(/handed leadership over/);
    const survivors = agents.filter((a) => a !== leader);
    const next = await agreedLeader(survivors);
    expect((await next.json<StatusRow>(['status'])).term).toBeGreaterThan(before);
    const result = await survivors[0]!.cli(['run', '--', 'true']);
    expect(result.code, result.stderr).toBe(0);
  });
});
