/**
 * The workload's task script, run by a real shell the way the exec driver runs it (its own process group,
 * cwd = the task's dir): the lines it writes are the checker's evidence of every run.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildRuns, parseRunLine } from '../../scripts/chaos/check.ts';
import { bootTimeMs, dockerTaskScript, taskScript } from '../../scripts/chaos/workload.ts';

const root = mkdtempSync(join(tmpdir(), 'shoal-chaos-workload-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function startTask(beats: number, runsPath: string): ReturnType<typeof spawn> {
  const dir = join(root, 'nodes', 'n7', 'data', 'tasks', 'abc123def456');
  mkdirSync(dir, { recursive: true });
  return spawn('sh', ['-c', taskScript(beats)], {
    cwd: dir,
    env: { PATH: '/usr/bin:/bin', CHAOS_NONCE: '00042', CHAOS_RUNS: runsPath },
    detached: true,
    stdio: 'ignore',
  });
}

function exited(child: ReturnType<typeof spawn>): Promise<number | null> {
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('the task script', () => {
  it('writes a start, a heartbeat a second and an end, naming its node and task through its cwd', async () => {
    const runsPath = join(root, 'runs-a.log');
    const child = startTask(1, runsPath);
    expect(await exited(child)).toBe(0);
    const lines = readFileSync(runsPath, 'utf8').trim().split('\n').map(parseRunLine);
    expect(lines.map((l) => l?.mark)).toEqual(['S', 'H', 'E']);
    expect(lines[0]).toMatchObject({ nonce: '00042', node: 'n7', taskId: 'abc123def456', pid: child.pid });
    const [run] = buildRuns(lines.filter((l) => l !== null));
    expect(run?.endMark).toBe('E');
    expect(run!.lastMs - run!.startMs).toBeGreaterThanOrEqual(900);
  });

  it('says so when it is stopped with SIGTERM to its process group, as the agent stops tasks', async () => {
    const runsPath = join(root, 'runs-b.log');
    const child = startTask(30, runsPath);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    process.kill(-child.pid!, 'SIGTERM');
    expect(await exited(child)).toBe(143);
    const marks = readFileSync(runsPath, 'utf8')
      .trim()
      .split('\n')
      .map((text) => parseRunLine(text)?.mark);
    expect(marks[0]).toBe('S');
    expect(marks[marks.length - 1]).toBe('T');
  });
});

describe("a docker task's script", () => {
  it("names its node and task from the agent's variables, and tells the time from the uptime", async () => {
    const taskDir = mkdtempSync(join(root, 'docker-'));
    // busybox's sh where there is one, as in the image; else the host's.
    const child = spawn('sh', ['-c', dockerTaskScript(1)], {
      env: {
        PATH: '/usr/bin:/bin',
        CHAOS_NONCE: '00043',
        CHAOS_BOOT_MS: String(bootTimeMs()),
        SHOAL_NODE: 'n3',
        SHOAL_TASK_ID: 'fedcba987654',
        SHOAL_TASK_DIR: taskDir,
      },
      stdio: 'ignore',
    });
    const beforeMs = Date.now();
    expect(await exited(child)).toBe(0);
    const lines = readFileSync(join(taskDir, 'chaos-runs'), 'utf8').trim().split('\n').map(parseRunLine);
    expect(lines.map((l) => l?.mark)).toEqual(['S', 'H', 'E']);
    expect(lines[0]).toMatchObject({ nonce: '00043', node: 'n3', taskId: 'fedcba987654' });
    // The uptime has 10 ms steps, and the boot time was reckoned from it: within a few of the wall clock.
    expect(Math.abs((lines[0]?.atMs ?? 0) - beforeMs)).toBeLessThan(500);
  });
});
