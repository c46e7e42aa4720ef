/**
 * The runtime through a real agent: restart policies with backoff, and an agent SIGKILLed while its task
 * runs, which re-attaches on restart instead of starting the task twice.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';
import type { TaskView } from '../../src/api/index.ts';

type TaskRow = TaskView;

describe('the runtime through a real agent', { timeout: 120_000 }, () => {
  const cluster = new TestCluster();
  let agent: TestAgent;

  beforeAll(async () => {
    await buildBinary();
    agent = await cluster.agent({ name: 'rt', cpu: 2 });
    await waitFor('the agent', async () => (await agent.cli(['status'])).code === 0);
  }, 120_000);

  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  async function task(id: string): Promise<TaskRow | undefined> {
    return (await agent.json<TaskRow[]>(['ps'])).find((t) => t.id === id);
  }

  async function run(args: string[]): Promise<string> {
    const result = await agent.cli(['run', ...args]);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.trim();
  }

  it('on-failure restarts with backoff up to the limit, then reports the last failure', async () => {
    const id = await run([
      '--restart',
      'on-failure',
      '--max-restarts',
      '2',
      '--restart-delay',
      '0.2',
      '--',
      'sh',
      '-c',
      'echo try; exit 7',
    ]);
    const done = await waitFor('the task to fail for good', async () => {
      const row = await task(id);
      return row?.state === 'failed' ? row : null;
    });
    expect(done).toMatchObject({ attempt: 2, exitCode: 7, reason: 'exit code 7' });
    expect((await agent.cli(['logs', id])).stdout).toBe('try\ntry\ntry\n');
  });

  it('always restarts a task that exits cleanly, until it is killed', async () => {
    const id = await run(['--restart', 'always', '--restart-delay', '0.1', '--', 'true']);
    await waitFor('a few restarts', async () => ((await task(id))?.attempt ?? 0) >= 3);
    expect((await agent.cli(['kill', id])).code).toBe(0);
    await waitFor('the task to be killed', async () => (await task(id))?.state === 'killed');
  });

  it('re-attaches to a running task after the agent is SIGKILLed, and starts nothing twice', async () => {
    const marker = `shoal-reattach-${process.pid}`;
    const id = await run(['--', 'sh', '-c', `sleep 3; echo ${marker}`]);
    await waitFor('the task to run', async () => (await task(id))?.state === 'running');
    agent.kill('SIGKILL');
    await agent.exited(10_000);
    agent.start();
    await waitFor('the agent to answer again', async () => (await agent.cli(['status'])).code === 0, 60_000);
    // Still one instance of the task, never a second start.
    const running = execFileSync('pgrep', ['-fc', `echo ${marker}`], { encoding: 'utf8' }).trim();
    expect(Number(running)).toBeLessThanOrEqual(1);
    const done = await waitFor(
      'the task to end',
      async () => {
        const row = await task(id);
        return row !== undefined && ['finished', 'failed'].includes(row.state) ? row : null;
      },
      60_000,
    );
    expect(done.attempt).toBe(0);
    // The exec shim recorded the exit status while no agent watched: the real code is reported.
    expect(done).toMatchObject({ state: 'finished', exitCode: 0 });
    expect((await agent.cli(['logs', id])).stdout).toBe(`${marker}\n`);
  });
});
