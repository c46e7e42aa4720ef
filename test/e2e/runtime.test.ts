/**
 * The runtime through a real agent: restart policies with backoff, and an agent SIGKILLed while its task
 * runs, which re-attaches on restart instead of starting the task twice.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';
import { ShoalClient, type TaskView } from '../../src/api/index.ts';

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
    // Still one instance of the task, never a second start (the task's own shell: its isolation's
    // unshare and process-1 shell name the command too).
    const running = execFileSync('pgrep', ['-fc', `^sh -c sleep 3; echo ${marker}`], {
      encoding: 'utf8',
    }).trim();
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

  it('serves /metrics in the Prometheus text format: promtool reads it, every family typed, histograms add up', async () => {
    const client = new ShoalClient({ address: agent.socket });
    let text: string;
    try {
      text = await client.metrics();
    } finally {
      client.close();
    }
    for (const [family, type] of [
      ['shoal_build_info', 'gauge'],
      ['shoal_raft_is_leader', 'gauge'],
      ['shoal_raft_term', 'gauge'],
      ['shoal_raft_commit_index', 'gauge'],
      ['shoal_raft_leader_last_contact_seconds', 'gauge'],
      ['shoal_raft_leader_changes_total', 'counter'],
      ['shoal_raft_commit_duration_seconds', 'histogram'],
      ['shoal_members', 'gauge'],
      ['shoal_membership_suspicions_total', 'counter'],
      ['shoal_membership_probe_round_trip_seconds', 'histogram'],
      ['shoal_tasks', 'gauge'],
      ['shoal_tasks_pending', 'gauge'],
      ['shoal_tasks_pending_oldest_seconds', 'gauge'],
      ['shoal_allocator_plan_duration_seconds', 'histogram'],
      ['shoal_allocator_placements_total', 'counter'],
      ['shoal_task_start_duration_seconds', 'histogram'],
      ['shoal_task_restarts_total', 'counter'],
      ['shoal_node_cpu_cores', 'gauge'],
      ['shoal_node_memory_allocated_bytes', 'gauge'],
      ['shoal_api_requests_total', 'counter'],
      ['shoal_api_request_duration_seconds', 'histogram'],
      ['shoal_event_loop_stall_seconds_max', 'gauge'],
    ] as const)
      expect(text, family).toContain(`# TYPE ${family} ${type}\n`);
    // This agent has run tasks and restarted some (the tests above).
    expect(Number(/^shoal_task_restarts_total (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
    expect(Number(/^shoal_task_start_duration_seconds_count (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
    expect(text).toMatch(/^shoal_tasks\{state="running"\} \d+$/m);
    expect(text).not.toMatch(/="[0-9a-f]{12}"/); // no task ids in labels
    // Histograms: buckets never decrease, and +Inf is the count.
    const buckets = new Map<string, number[]>();
    const counts = new Map<string, number>();
    for (const line of text.split('\n')) {
      const bucket = /^(\w+)_bucket\{(.*)\} (\S+)$/.exec(line);
      if (bucket) {
        // The series without its le label: the labels the _count line has.
        const labels = (bucket[2] ?? '')
          .split(',')
          .filter((label) => !label.startsWith('le='))
          .join(',');
        const key = `${bucket[1]}{${labels}}`;
        buckets.set(key, [...(buckets.get(key) ?? []), Number(bucket[3])]);
        continue;
      }
      const count = /^(\w+)_count(?:\{(.*)\})? (\S+)$/.exec(line);
      if (count) counts.set(`${count[1]}{${count[2] ?? ''}}`, Number(count[3]));
    }
    expect(buckets.size).toBeGreaterThan(3);
    for (const [key, values] of buckets) {
      for (let i = 1; i < values.length; i++)
        expect(values[i], key).toBeGreaterThanOrEqual(values[i - 1] ?? 0);
      expect(values.at(-1), key).toBe(counts.get(key));
    }
    // The real parser: Prometheus's own promtool (CI installs Debian's prometheus package).
    const promtool = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    if (promtool.error !== undefined) {
      console.log('promtool not installed: the exposition was checked by this test only');
      return;
    }
    expect(promtool.status, `${promtool.stdout}${promtool.stderr}`).toBe(0);
  });
});
