/**
 * Drain and leave with real agents: draining a node moves its tasks to another node; `shoal leave` on
 * the drained node makes it leave cleanly (announced, never mistaken for a failure).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';
import type { TaskView } from '../../src/api/index.ts';

type TaskRow = TaskView;

describe('drain and leave', { timeout: 600_000 }, () => {
  const cluster = new TestCluster();
  afterAll(async () => {
    await cluster.stop();
  }, 180_000);

  it('moves a drained node’s tasks elsewhere, and lets it leave', async () => {
    await buildBinary();
    const first: TestAgent = await cluster.agent({ name: 'd1', cpu: 2 });
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(first.log())?.[1] ?? null),
    );
    await waitFor('d1 ready', async () => (await first.cli(['status'])).code === 0);
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const result = await first.cli(['run', '--cpu', '0.5', '--', 'sleep', '300']);
      expect(result.code, result.stderr).toBe(0);
      ids.push(result.stdout.trim());
    }
    const tasks = async (): Promise<TaskRow[]> => first.json<TaskRow[]>(['ps']);
    await waitFor('both running on d1', async () =>
      (await tasks()).every((t) => t.state === 'running' && t.node === 'd1'),
    );
    const second = await cluster.agent({ name: 'd2', cpu: 2, join: first.address, key });
    await waitFor('d2 to take tasks', async () => {
      const members = await first.json<{ name: string; state: string }[]>(['members']);
      return members.some((m) => m.name === 'd2' && m.state === 'alive');
    });

    const drained = await second.cli(['drain', 'd1']);
    expect(drained.code, drained.stderr).toBe(0);
    await waitFor(
      'the tasks to run on d2',
      async () => {
        const rows = (await second.json<TaskRow[]>(['ps'])).filter((t) => ids.includes(t.id));
        return (
          rows.length === 2 && rows.every((t) => t.state === 'running' && t.node === 'd2' && t.attempt === 1)
        );
      },
      180_000,
    );
    const members = await second.json<{ name: string; draining: boolean }[]>(['members']);
    expect(members.find((m) => m.name === 'd1')?.draining).toBe(true);

    const left = await first.cli(['leave']);
    expect(left.code, left.stderr).toBe(0);
    expect(await first.exited(30_000)).toBe(0);
    await waitFor('d1 to be seen as left', async () => {
      const rows = await second.json<{ name: string; state: string }[]>(['members']);
      return rows.find((m) => m.name === 'd1')?.state === 'left';
    });
    // The tasks kept running on d2 through the leave.
    const rows = (await second.json<TaskRow[]>(['ps'])).filter((t) => ids.includes(t.id));
    expect(rows.every((t) => t.state === 'running' && t.node === 'd2')).toBe(true);
  });
});
