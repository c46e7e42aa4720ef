/**
 * Task events and live logs across nodes: `shoal run` shows a task's events until it runs, `shoal inspect`
 * lists them, `GET /v1/events` streams them with their Raft indexes (and resumes from one), and `shoal logs
 * -f` on a node that does not run the task streams its output as it is written and ends when the task ends.
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, binaryPath, buildBinary, waitFor, type TestAgent } from '../helpers/cluster.ts';
import { ShoalClient, type EventFrame, type TaskView } from '../../src/api/index.ts';

type TaskRow = TaskView;

describe('task events and shoal logs -f across nodes', { timeout: 180_000 }, () => {
  const cluster = new TestCluster();
  let first: TestAgent;
  let second: TestAgent;

  beforeAll(async () => {
    await buildBinary();
    first = await cluster.agent({ name: 'l1', cpu: 1, labels: { role: 'front' } });
    const key = await waitFor('the cluster key', () =>
      Promise.resolve(/--key ([0-9a-f]{64})/.exec(first.log())?.[1] ?? null),
    );
    second = await cluster.agent({
      name: 'l2',
      cpu: 1,
      join: first.address,
      key,
      labels: { role: 'worker' },
    });
    await waitFor(
      'both nodes up',
      async () => {
        const members = await first.json<{ name: string; state: string }[]>(['members']);
        return members.filter((m) => m.state === 'alive').length === 2;
      },
      90_000,
    );
  }, 180_000);

  afterAll(async () => {
    await cluster.stop();
  }, 60_000);

  it('shoal run waits for the task to run, printing its events; shoal inspect lists them', async () => {
    const result = await first.runAttached(['--constraint', 'role=worker', '--', 'sleep', '300']);
    expect(result.code, result.stderr).toBe(0);
    const id = result.stdout.trim();
    expect(id).toMatch(/^[0-9a-f]{12}$/);
    expect(result.stderr).toMatch(/committed by a quorum: task [0-9a-f]{12}/);
    expect(result.stderr).toMatch(/submitted/);
    expect(result.stderr).toMatch(/assigned to l2/);
    expect(result.stderr).toMatch(new RegExp(`task ${id} is running on l2`));
    const inspect = await first.cli(['inspect', id]);
    expect(inspect.code, inspect.stderr).toBe(0);
    expect(inspect.stdout).toMatch(/state: +running/);
    expect(inspect.stdout).toMatch(/assigned to l2/);
    expect((await first.cli(['kill', id])).code).toBe(0);
    const killed = await waitFor('the kill to show', async () => {
      const detail = await first.json<{ state: string; events: { message: string }[] }>(['inspect', id]);
      return detail.state === 'killed' ? detail : null;
    });
    expect(killed.events.map((e) => e.message)).toContain('kill requested');
  });

  it('streams a task submitted, assigned, running and finished; resumed from an index, only what came after', async () => {
    const client = new ShoalClient({ address: first.socket });
    try {
      const signal = AbortSignal.timeout(60_000);
      const stream = client.events({ signal })[Symbol.asyncIterator]();
      // Open once the first heartbeat comes: from then on nothing is missed.
      expect((await stream.next()).value).toMatchObject({ type: 'heartbeat' });
      const submitted = await first.cli(['run', '--constraint', 'role=worker', '--', 'sleep', '1']);
      expect(submitted.code, submitted.stderr).toBe(0);
      const id = submitted.stdout.trim();
      const seen: EventFrame[] = [];
      for (;;) {
        const next = await stream.next();
        if (next.done === true) throw new Error('the event stream ended');
        const frame = next.value;
        if (!('taskId' in frame) || frame.taskId !== id) continue;
        seen.push(frame);
        if (frame.type === 'task:state' && frame.state === 'finished') break;
      }
      await stream.return(undefined);
      const label = (frame: EventFrame): string =>
        frame.type === 'task:state' ? frame.state : frame.type.replace('task:', '');
      const milestones = ['submitted', 'assigned', 'running', 'finished'].map((step) => {
        const frame = seen.find((candidate) => label(candidate) === step);
        if (frame === undefined || !('index' in frame))
          throw new Error(`no ${step} event: ${JSON.stringify(seen)}`);
        return frame;
      });
      const indexes = milestones.map((frame) => ('index' in frame ? frame.index : 0));
      expect(indexes).toEqual([...indexes].sort((a, b) => a - b));
      expect(new Set(indexes).size).toBe(4);
      expect(milestones[1]).toMatchObject({ type: 'task:assigned', node: 'l2', name: 'sleep' });
      expect(milestones[3]).toMatchObject({ node: 'l2', exitCode: 0 });
      // Resumed from the assignment: the events after it, as the first stream saw them, then a heartbeat.
      const from = indexes[1] ?? 0;
      const resumed: EventFrame[] = [];
      for await (const frame of client.events({ index: from, task: id, signal })) {
        if (frame.type === 'heartbeat') break;
        resumed.push(frame);
      }
      expect(resumed).toEqual(seen.filter((frame) => 'index' in frame && frame.index > from));
      expect(resumed.map(label)).toContain('running');
    } finally {
      client.close();
    }
  });

  it('shoal run ends non-zero with the reason when the command does not exist', async () => {
    const result = await first.runAttached(['--', 'no-such-command-shoal']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/failed: command not found: no-such-command-shoal/);
  });

  it('follows a task on another node live, and the stream ends when the task ends', async () => {
    const submitted = await first.cli([
      'run',
      '--constraint',
      'role=worker',
      '--',
      'sh',
      '-c',
      'for i in 1 2 3 4 5 6; do echo line $i; sleep 1; done; echo done >&2',
    ]);
    expect(submitted.code, submitted.stderr).toBe(0);
    const id = submitted.stdout.trim();
    const follower = spawn(binaryPath, ['logs', '--addr', first.socket, '-f', id]);
    const seen: { line: string; state: string | undefined }[] = [];
    let stdout = '';
    let stderr = '';
    follower.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => follower.on('exit', (code) => resolve(code)));
    follower.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      for (const line of chunk.toString().split('\n').filter(Boolean)) seen.push({ line, state: undefined });
    });
    // The first line shows while the task still runs (on l2, followed through l1).
    await waitFor('the first line', () => Promise.resolve(stdout.includes('line 1')), 60_000);
    const row = (await first.json<TaskRow[]>(['ps'])).find((t) => t.id === id);
    expect(row).toMatchObject({ state: 'running', node: 'l2' });
    expect(stdout).not.toContain('line 6');
    const code = await Promise.race([
      exited,
      new Promise<string>((resolve) => setTimeout(() => resolve('still running'), 60_000)),
    ]);
    expect(code, stderr).toBe(0);
    expect(stdout).toBe('line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n');
    expect(stderr).toContain('done\n');
    expect(stderr).toMatch(/shoal logs: task finished/);
    expect(seen.length).toBeGreaterThan(0);
  });

  it('a follower that goes away stops following on both nodes', async () => {
    const submitted = await first.cli([
      'run',
      '--constraint',
      'role=worker',
      '--',
      'sh',
      '-c',
      'while true; do echo tick; sleep 0.2; done',
    ]);
    const id = submitted.stdout.trim();
    const follower = spawn(binaryPath, ['logs', '--addr', first.socket, '-f', id]);
    let stdout = '';
    follower.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    await waitFor('ticks', () => Promise.resolve(stdout.includes('tick')), 60_000);
    // l2 reads the task's log for the follower on l1; that ends once the follower is gone.
    const readers = (): number => openFilesOf(second, `${id}/stdout.log`);
    expect(readers()).toBeGreaterThan(0);
    follower.kill('SIGKILL');
    await waitFor('l2 to stop reading the log', () => Promise.resolve(readers() === 0), 30_000);
    // Both agents keep serving; a new follower gets the output again.
    // Over TCP this time, as a remote client: with the cluster's first token.
    const token = readFileSync(join(first.dataDir, 'management.token'), 'utf8').trim();
    const again = spawn(binaryPath, ['logs', '--addr', first.api, '-f', '--tail', '0', id], {
      env: { ...process.env, SHOAL_TOKEN: token },
    });
    let more = '';
    again.stdout.on('data', (chunk: Buffer) => (more += chunk.toString()));
    await waitFor('ticks again', () => Promise.resolve(more.includes('tick')), 60_000);
    expect((await first.cli(['kill', id])).code).toBe(0);
    const code = await new Promise<number | null>((resolve) => again.on('exit', (c) => resolve(c)));
    expect(code).toBe(0);
    expect((await second.cli(['status'])).code).toBe(0);
  });
});

/** How many descriptors the agent's process holds on files whose path ends with `suffix`. */
function openFilesOf(agent: TestAgent, suffix: string): number {
  const pid = agent.process?.pid;
  if (pid === undefined) return 0;
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).endsWith(suffix)) count++;
    } catch {
      // closed meanwhile
    }
  }
  return count;
}
