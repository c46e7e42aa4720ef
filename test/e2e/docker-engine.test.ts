/**
 * A Docker engine that dies and comes back, through a real agent. The test runs its own private dockerd (so
 * it can kill it) and needs root, dockerd and busybox; without them it is skipped with the reason.
 *
 * While the engine is gone: the node stops advertising the docker driver (within a few seconds), a docker task
 * submitted meanwhile waits with a reason that says why, and a docker task that was running ends with a clear
 * reason while the agent keeps running. Once the engine is back: the driver is advertised again, the waiting
 * task runs, and a restarted agent removes the container the dead task left behind.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TestCluster, buildBinary, freePort, waitFor, type TestAgent } from '../helpers/cluster.ts';
import type { TaskView } from '../../src/api/index.ts';

function which(program: string): string | null {
  try {
    return execFileSync('sh', ['-c', `command -v ${program}`], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
}

const dockerd = which('dockerd');
const registryBinary = which('docker-registry');
const busybox = which('busybox');
const skipReason =
  process.getuid?.() !== 0
    ? 'needs root to run a private dockerd'
    : dockerd === null || which('docker') === null
      ? 'needs dockerd and docker (apt-get install docker.io)'
      : busybox === null
        ? 'needs busybox (apt-get install busybox-static) for the test image'
        : null;
if (skipReason !== null) console.warn(`docker engine e2e skipped: ${skipReason}`);

type TaskRow = TaskView;

/** A private engine: its socket, data and exec roots live in one directory. */
class PrivateEngine {
  readonly dir = mkdtempSync('/tmp/shoal-e2e-dockerd-');
  readonly socket = join(this.dir, 'docker.sock');
  private process: ChildProcess | null = null;

  docker(args: string[]): string {
    return execFileSync('docker', ['-H', `unix://${this.socket}`, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
  }

  async start(): Promise<void> {
    this.process = spawn(
      dockerd ?? 'dockerd',
      [
        '--host',
        `unix://${this.socket}`,
        '--data-root',
        join(this.dir, 'data'),
        '--exec-root',
        join(this.dir, 'exec'),
        '--pidfile',
        join(this.dir, 'pid'),
        '--bridge=none',
        '--iptables=false',
        '--ip6tables=false',
      ],
      { stdio: 'ignore' },
    );
    await waitFor(
      'the private dockerd to answer',
      () => {
        try {
          this.docker(['info']);
          return Promise.resolve(true);
        } catch {
          return Promise.resolve(false);
        }
      },
      60_000,
    );
  }

  /** The engine disappears at once, as in a crash: no chance to stop its containers. */
  async kill(): Promise<void> {
    const child = this.process;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  async stop(): Promise<void> {
    const child = this.process;
    if (child && child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 20_000))]);
      child.kill('SIGKILL');
    }
    // Mounts an engine leaves (its data root, container mounts) would keep the directory from being removed.
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .map((line) => line.split(' ')[1] ?? '')
      .filter((path) => path.startsWith(`${this.dir}/`))
      .reverse();
    for (const path of mounts) execFileSync('umount', ['-l', path], { stdio: 'ignore' });
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** A busybox image built from the host's busybox, as .ci/run does. */
  importBusybox(name: string): void {
    const rootfs = join(this.dir, 'rootfs');
    mkdirSync(join(rootfs, 'bin'), { recursive: true });
    copyFileSync(busybox ?? '', join(rootfs, 'bin', 'busybox'));
    for (const applet of execFileSync(busybox ?? '', ['--list'], { encoding: 'utf8' }).split('\n')) {
      if (applet !== '' && applet !== 'busybox') symlinkSync('busybox', join(rootfs, 'bin', applet));
    }
    execFileSync(
      'sh',
      ['-c', `tar -C '${rootfs}' -c . | docker -H 'unix://${this.socket}' import - ${name}`],
      {
        stdio: 'ignore',
      },
    );
  }
}

describe.skipIf(skipReason !== null)('a docker engine that dies and comes back', { timeout: 300_000 }, () => {
  const cluster = new TestCluster();
  const engine = new PrivateEngine();
  const image = 'local/busybox:1';
  let agent: TestAgent;

  const members = async (): Promise<{ drivers: string[] }[]> => agent.json(['members']);
  const task = async (id: string): Promise<TaskRow | undefined> =>
    (await agent.json<TaskRow[]>(['ps'])).find((t) => t.id === id);
  const dockerRun = async (command: string[]): Promise<string> => {
    const result = await agent.cli([
      'run',
      '--driver',
      'docker',
      '--image',
      image,
      '--memory',
      '32',
      '--',
      ...command,
    ]);
    expect(result.code, result.stderr).toBe(0);
    return result.stdout.trim();
  };

  beforeAll(async () => {
    await buildBinary();
    await engine.start();
    engine.importBusybox(image);
    agent = await cluster.agent({ name: 'e1', cpu: 2, dockerSocket: engine.socket });
    await waitFor(
      'docker to be advertised',
      async () => (await members())[0]?.drivers.includes('docker'),
      60_000,
    );
  }, 180_000);

  afterAll(async () => {
    await cluster.stop();
    await engine.stop();
  }, 120_000);

  it.skipIf(registryBinary === null)(
    'shoal run shows the image pull as it happens, then the task state (needs docker-registry)',
    async () => {
      const port = await freePort();
      const registryDir = join(engine.dir, 'registry');
      mkdirSync(registryDir);
      writeFileSync(
        join(registryDir, 'config.yml'),
        `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${registryDir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`,
      );
      const registry = spawn(registryBinary ?? '', ['serve', join(registryDir, 'config.yml')], {
        stdio: 'ignore',
      });
      try {
        const reference = `127.0.0.1:${port}/shoal/busybox:pull`;
        engine.docker(['tag', image, reference]);
        await waitFor('the push', () => {
          try {
            engine.docker(['push', reference]);
            return Promise.resolve(true);
          } catch {
            return Promise.resolve(false);
          }
        });
        engine.docker(['rmi', reference]);
        const result = await agent.runAttached(['--driver', 'docker', '--image', reference, '--', 'true']);
        expect(result.code, result.stderr).toBe(0);
        const id = result.stdout.trim();
        const lines = result.stderr.split('\n');
        const pulling = lines.findIndex((line) => line.includes(`pulling image ${reference}`));
        const pulled = lines.findIndex((line) => line.includes(`pulled image ${reference}`));
        const ended = lines.findIndex((line) => new RegExp(`task ${id} (is running|finished)`).test(line));
        expect(pulling, result.stderr).toBeGreaterThan(0);
        expect(pulled, result.stderr).toBeGreaterThan(pulling);
        expect(ended, result.stderr).toBeGreaterThan(pulled);
        const detail = await agent.json<{ events: { message: string }[] }>(['inspect', id]);
        expect(detail.events.map((e) => e.message)).toContain(`pulling image ${reference}`);
      } finally {
        registry.kill('SIGTERM');
      }
    },
  );

  it('stops advertising docker while the engine is gone, ends its running task clearly, and recovers', async () => {
    const before = await dockerRun(['sleep', '300']);
    await waitFor('the container to run', async () => (await task(before))?.state === 'running', 60_000);

    await engine.kill();
    const goneMs = Date.now();
    await waitFor(
      'docker to stop being advertised',
      async () => !(await members())[0]?.drivers.includes('docker'),
      30_000,
    );
    // A few seconds: the health check runs every 2 s, then the membership record spreads.
    expect(Date.now() - goneMs).toBeLessThan(15_000);

    const waiting = await dockerRun(['sleep', '300']);
    const pending = await waitFor(
      'the new task to wait for a docker node',
      async () => {
        const row = await task(waiting);
        return row?.state === 'pending' && /no node has a healthy docker driver/.test(row.reason ?? '')
          ? row
          : null;
      },
      30_000,
    );
    expect(pending.reason).toMatch(/no node has a healthy docker driver/);

    const ended = await waitFor(
      'the running task to end',
      async () => {
        const row = await task(before);
        return row?.state === 'failed' ? row : null;
      },
      90_000,
    );
    expect(ended.reason).toMatch(
      /^docker engine unreachable while the task ran: .*no answer from .*docker\.sock for 30 s/,
    );
    expect((await agent.cli(['status'])).code).toBe(0);
    // The agent keeps running exec tasks meanwhile.
    const exec = await agent.cli(['run', '--', 'true']);
    expect(exec.code, exec.stderr).toBe(0);
    await waitFor(
      'the exec task to finish',
      async () => (await task(exec.stdout.trim()))?.state === 'finished',
      60_000,
    );

    await engine.start();
    await waitFor(
      'docker to be advertised again',
      async () => (await members())[0]?.drivers.includes('docker'),
      30_000,
    );
    await waitFor('the waiting task to run', async () => (await task(waiting))?.state === 'running', 60_000);

    // The dead task's container outlived the engine (its removal failed while the engine was gone). Garbage
    // collection removes it, and only it: the periodic pass may already have; else the first pass of the
    // restarted agent does.
    const containersOf = (id: string): string =>
      engine.docker(['ps', '-aq', '--filter', `label=io.shoal.task=${id}`]).trim();
    agent.kill('SIGKILL');
    await agent.exited(10_000);
    agent.start();
    await waitFor(
      'the leftover container to be removed',
      () => Promise.resolve(containersOf(before) === ''),
      60_000,
    );
    expect(agent.log()).toMatch(new RegExp(`collected garbage .*freed=${before}`));
    expect(containersOf(waiting)).not.toBe('');
    expect((await task(waiting))?.state).toBe('running');
  });
});
