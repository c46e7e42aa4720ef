/**
 * The docker driver's lease keeper against a real engine: containers are held to the node's task lease even
 * when the agent that started them is dead. Needs the same environment as docker.test.ts, else skipped:
 *   SHOAL_TEST_DOCKER_SOCKET  the engine's unix socket
 *   SHOAL_TEST_DOCKER_IMAGE   a local busybox image
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import {
  keeperPidFileName,
  leaseKilledDirName,
  leaseKillReason,
  liveKeeper,
} from '../../src/runtime/drivers/lease-keeper.ts';
import { processStatus } from '../../src/runtime/drivers/process.ts';
import {
  createDockerDriver,
  type DockerDriverInit,
  type Driver,
  type StartRequest,
  type TaskHandle,
} from '../../src/runtime/drivers/index.ts';
import { silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  engineSkipReason,
  taskTestTimeoutMs,
  testDockerImage,
  testDockerSocket,
  uniqueTaskId,
  waitUntil,
} from './compliance.ts';

const socketPath = testDockerSocket;
const image = testDockerImage;
const skipReason = await engineSkipReason();

const makeSpec = ({ command, env }: { command: string[]; env: Record<string, string> }): TaskSpec => ({
  name: 'docker-lease-test',
  driver: 'docker',
  image,
  command,
  cpuMillis: 250,
  memoryBytes: 32 * 1024 * 1024,
  priority: 50,
  env,
  constraints: {},
});

/** Sets the lease file's time, as an agent does when a leader confirms a renewal; returns that time. */
function renew(file: string, atMs = Date.now()): number {
  utimesSync(file, atMs / 1000, atMs / 1000);
  return atMs;
}

/** The lease keepers running for a directory: processes with `__lease-keeper DIR` on their command line. */
function keeperProcesses(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    const at = argv.indexOf('__lease-keeper');
    if (
      at !== -1 &&
      argv[at + 1] === dir &&
      processStatus({ pid: Number(entry), procStartTicks: null }) === 'running'
    )
      pids.push(Number(entry));
  }
  return pids;
}

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/**
 * An agent in a process of its own: starts one task with a docker driver made from `init`, prints the
 * handle, and is SIGKILLed here once it has. Returns the handle.
 */
async function startInKilledAgent(
  dir: string,
  init: Partial<DockerDriverInit>,
  request: StartRequest,
): Promise<TaskHandle> {
  const script = join(dir, 'agent.ts');
  writeFileSync(
    script,
    [
      `import { createDockerDriver } from ${JSON.stringify(join(repoRoot, 'src/runtime/drivers/index.ts'))};`,
      `import { silentLogger } from ${JSON.stringify(join(repoRoot, 'src/shared/index.ts'))};`,
      'const input = JSON.parse(process.argv[2]);',
      'const driver = createDockerDriver({ logger: silentLogger, ...input.init });',
      'const handle = await driver.start(input.request);',
      'void driver.wait(handle);',
      "process.stdout.write(JSON.stringify(handle) + '\\n');",
      'setInterval(() => undefined, 60_000);',
    ].join('\n'),
  );
  const agent = spawn(
    process.execPath,
    ['--disable-warning=ExperimentalWarning', script, JSON.stringify({ init, request })],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const exited = new Promise<void>((resolve) => agent.once('exit', () => resolve()));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let text = '';
      agent.stdout.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        const end = text.indexOf('\n');
        if (end !== -1) resolve(text.slice(0, end));
      });
      agent.once('exit', (code) =>
        reject(new Error(`the agent exited (${code}) before it printed a handle`)),
      );
    });
    return JSON.parse(line) as TaskHandle;
  } finally {
    agent.kill('SIGKILL');
    await exited;
  }
}

describe.skipIf(skipReason !== null)(
  `docker lease keeper on a real engine${skipReason === null ? '' : ` (skipped: ${skipReason})`}`,
  { timeout: taskTestTimeoutMs },
  () => {
    const engine = new Docker({ socketPath });
    const tasks = createTaskTracker(makeSpec, 'lease');
    const dirs: string[] = [];
    afterEach(async () => {
      await tasks.cleanup();
      for (const dir of dirs.splice(0)) {
        // A keeper these tests started and that is still there: stop it.
        const keeper = liveKeeper(join(dir, 'keeper'));
        if (keeper !== null) process.kill(keeper.pid, 'SIGTERM');
        rmSync(dir, { recursive: true, force: true });
      }
    });

    /** A private node: its lease file, its keeper directory and its node id. */
    const makeNode = (
      idleMs = 2000,
    ): {
      dir: string;
      leaseFile: string;
      init: Partial<DockerDriverInit> & { leaseKeeperDir: string };
    } => {
      const dir = mkdtempSync(join(tmpdir(), 'shoal-docker-lease-'));
      dirs.push(dir);
      const leaseFile = join(dir, 'lease.json');
      writeFileSync(leaseFile, '{}');
      return {
        dir,
        leaseFile,
        init: {
          socketPath,
          nodeId: uniqueTaskId('node'),
          leaseKeeperDir: join(dir, 'keeper'),
          leaseKeeperIdleMs: idleMs,
        },
      };
    };
    const makeDriver = (init: Partial<DockerDriverInit>): Driver =>
      createDockerDriver({ logger: silentLogger, socketPath, ...init });
    const containerOf = (handle: TaskHandle): Docker.Container =>
      engine.getContainer(String(handle.state['containerId']));

    it(
      'kills a leased container just after the lease runs out although its agent was SIGKILLed, ' +
        'leaves an unleased one alone, and a restarted agent reports why',
      async () => {
        const node = makeNode();
        const durationMs = 2000;
        const lease = { file: node.leaseFile, durationMs };
        const taskId = uniqueTaskId('lease');
        renew(node.leaseFile);
        const handle = await startInKilledAgent(node.dir, node.init, {
          taskId,
          spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
          taskDir: await tasks.dir(),
          lease,
        });
        // The agent is dead: its tasks are cleaned up by a later one.
        const restarted = makeDriver(node.init);
        tasks.track(restarted, handle);
        // `--on-disconnect keep`: the same node's task without a lease.
        const kept = await restarted.start({
          taskId: uniqueTaskId('kept'),
          spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
          taskDir: await tasks.dir(),
        });
        tasks.track(restarted, kept);
        // The agent's last renewal, as if it died right now; nothing renews the lease after it.
        const lastRenewalMs = renew(node.leaseFile);

        await waitUntil(
          'the leased container stops',
          async () => !(await containerOf(handle).inspect()).State.Running,
          durationMs + 10_000,
        );
        const info = await containerOf(handle).inspect();
        const diedAfterMs = Date.parse(info.State.FinishedAt) - lastRenewalMs;
        // Not before the lease ran out, and well before the leader's replacement time (lease + 1 s).
        expect(diedAfterMs).toBeGreaterThanOrEqual(durationMs);
        expect(diedAfterMs).toBeLessThan(durationMs + 1000);
        expect(info.State.ExitCode).toBe(137);
        expect((await containerOf(kept).inspect()).State.Running).toBe(true);
        // The line follows the engine's answer to the kill, which may come after the container is seen dead.
        const killLine = new RegExp(`killed container [0-9a-f]{12} of task ${taskId}: the lease ran out`);
        const keeperLog = (): string => readFileSync(join(node.init.leaseKeeperDir, 'keeper.log'), 'utf8');
        await waitUntil('the keeper logs the kill', () => Promise.resolve(killLine.test(keeperLog())), 5000);
        const log = keeperLog();
        expect(log).not.toContain(String(kept.state['containerId']).slice(0, 12));

        // The agent comes back: the task is found stopped, and why.
        expect(await restarted.recover(handle)).toBe(true);
        expect(await restarted.wait(handle)).toEqual({
          exitCode: 137,
          signal: 'SIGKILL',
          oomKilled: false,
          reason: leaseKillReason,
          succeeded: false,
        });
        await restarted.destroy(handle);
        expect(readdirSync(join(node.init.leaseKeeperDir, leaseKilledDirName))).toEqual([]);
      },
    );

    it('keeps a container whose lease is renewed across several lease periods', async () => {
      const node = makeNode();
      const durationMs = 1000;
      const driver = makeDriver(node.init);
      renew(node.leaseFile);
      const handle = await driver.start({
        taskId: uniqueTaskId('renewed'),
        spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
        taskDir: await tasks.dir(),
        lease: { file: node.leaseFile, durationMs },
      });
      tasks.track(driver, handle);
      const untilMs = Date.now() + 4 * durationMs;
      while (Date.now() < untilMs) {
        renew(node.leaseFile);
        await sleep(200);
      }
      expect((await containerOf(handle).inspect()).State.Running).toBe(true);
      await driver.stop(handle, { graceMs: 0 });
      const exit = await driver.wait(handle);
      expect(exit.reason).not.toBe(leaseKillReason);
    });

    it('runs one keeper per node, which exits by itself once nothing is left to guard', async () => {
      const idleMs = 1500;
      const node = makeNode(idleMs);
      const lease = { file: node.leaseFile, durationMs: 60_000 };
      renew(node.leaseFile);
      const first = makeDriver(node.init);
      const one = await first.start({
        taskId: uniqueTaskId('one'),
        spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
        taskDir: await tasks.dir(),
        lease,
      });
      tasks.track(first, one);
      const keeper = liveKeeper(node.init.leaseKeeperDir);
      if (keeper === null) throw new Error('no keeper runs after a leased start');
      // Another driver of the same node (a restarted agent) finds the keeper and leaves it be.
      const second = makeDriver(node.init);
      const two = await second.start({
        taskId: uniqueTaskId('two'),
        spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
        taskDir: await tasks.dir(),
        lease,
      });
      tasks.track(second, two);
      expect(await second.recover(one)).toBe(true);
      expect(liveKeeper(node.init.leaseKeeperDir)).toEqual(keeper);
      expect(keeperProcesses(node.init.leaseKeeperDir)).toEqual([keeper.pid]);

      // With a container left it stays past the idle time; once none is, it goes.
      await sleep(idleMs * 2);
      expect(processStatus(keeper)).toBe('running');
      await first.destroy(one);
      await second.destroy(two);
      await waitUntil(
        'the keeper exits',
        () => Promise.resolve(processStatus(keeper) !== 'running'),
        idleMs + 5000,
      );
      expect(readdirSync(node.init.leaseKeeperDir)).not.toContain(keeperPidFileName);
      expect(readFileSync(join(node.init.leaseKeeperDir, 'keeper.log'), 'utf8')).toMatch(
        /no container to guard for \d+ s; exiting\n$/,
      );

      // A later start brings one back.
      const three = await first.start({
        taskId: uniqueTaskId('three'),
        spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
        taskDir: await tasks.dir(),
        lease,
      });
      tasks.track(first, three);
      const next = liveKeeper(node.init.leaseKeeperDir);
      expect(next).not.toBe(null);
      expect(next?.pid).not.toBe(keeper.pid);
    });
  },
);
