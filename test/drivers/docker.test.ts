/**
 * The docker driver against a real engine. Needs two environment variables, else the engine tests are skipped:
 *   SHOAL_TEST_DOCKER_SOCKET  the engine's unix socket (e.g. /tmp/shoal-dockerd/docker.sock)
 *   SHOAL_TEST_DOCKER_IMAGE   a local busybox image with sh, sleep, echo, cat, true, false and /bin/busybox
 * The "engine down" tests need no engine and always run.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { access, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Docker from 'dockerode';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import { createPullProgress } from '../../src/runtime/drivers/docker.ts';
import {
  containerNamePrefix,
  createDockerDriver,
  dockerSocketPathFromEnv,
  managedLabel,
  readTaskLogs,
  taskLabel,
  type DockerDriverInit,
  type Driver,
  type TaskEvent,
  type TaskHandle,
} from '../../src/runtime/drivers/index.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  driverCompliance,
  engineSkipReason,
  taskTestTimeoutMs,
  testDockerImage,
  testDockerSocket,
  uniqueTaskId,
  waitUntil,
  type DriverTestInit,
  type SpecInput,
} from './compliance.ts';
import { isolationCompliance } from './isolation-compliance.ts';

const socketPath = testDockerSocket;
const image = testDockerImage;
const skipReason = await engineSkipReason();

const mebibyte = 1024 * 1024;
/** Stands for the agent's data directory in the isolation cases: what containers must not see. */
const agentDataDir = mkdtempSync(join(tmpdir(), 'shoal-docker-agent-'));
writeFileSync(join(agentDataDir, 'cluster.key'), 'secret\n', { mode: 0o600 });
afterAll(() => rmSync(agentDataDir, { recursive: true, force: true }));

const makeSpec = ({ command, env }: SpecInput): TaskSpec => ({
  name: 'docker-test',
  driver: 'docker',
  image,
  command,
  cpuMillis: 500,
  memoryBytes: 64 * mebibyte,
  priority: 50,
  env,
  constraints: {},
});

const makeDriver = (init: DriverTestInit & Partial<DockerDriverInit> = {}): Driver =>
  createDockerDriver({ logger: silentLogger, socketPath, ...init });

/**
 * A stand-in for the engine's socket that forwards to the real one, and can make the engine disappear
 * (kill: sockets closed, socket file gone) or hang (freeze: connections stay open and nothing more answers).
 */
interface EngineProxy {
  socketPath: string;
  kill(): Promise<void>;
  freeze(): void;
  /** Listens again on the same path after kill(). */
  revive(): Promise<void>;
}

async function startEngineProxy(targetSocketPath: string): Promise<EngineProxy> {
  const dir = await mkdtemp(join(tmpdir(), 'shoal-engine-proxy-'));
  const proxySocketPath = join(dir, 'docker.sock');
  const pairs = new Set<{ client: Socket; upstream: Socket | null }>();
  let frozen = false;
  let server: Server | null = null;
  const listen = async (): Promise<void> => {
    frozen = false;
    const next = createServer((client) => {
      const pair: { client: Socket; upstream: Socket | null } = { client, upstream: null };
      pairs.add(pair);
      client.on('error', () => undefined);
      client.on('close', () => {
        pair.upstream?.destroy();
        pairs.delete(pair);
      });
      if (frozen) return; // accepted, never answered
      const upstream = connect(targetSocketPath);
      pair.upstream = upstream;
      upstream.on('error', () => client.destroy());
      upstream.on('close', () => client.destroy());
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => next.listen(proxySocketPath, resolve));
    server = next;
  };
  await listen();
  return {
    socketPath: proxySocketPath,
    async kill() {
      const closing = server;
      server = null;
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream?.destroy();
      }
      await new Promise<void>((resolve) => (closing === null ? resolve() : closing.close(() => resolve())));
    },
    freeze() {
      frozen = true;
      for (const pair of pairs) {
        pair.client.unpipe();
        pair.upstream?.unpipe();
        pair.upstream?.pause();
        pair.client.pause();
      }
    },
    revive: listen,
  };
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      probe.close(() => resolve(typeof address === 'object' && address !== null ? address.port : 0));
    });
  });
}

const registryBinary = '/usr/bin/docker-registry';
const registryInstalled = await access(registryBinary).then(
  () => true,
  () => false,
);

describe('docker driver with its engine down', { timeout: taskTestTimeoutMs }, () => {
  const missingSocket = join('/tmp', `shoal-no-engine-${process.pid}`, 'docker.sock');
  const downDriver = (): Driver => createDockerDriver({ logger: silentLogger, socketPath: missingSocket });
  const tasks = createTaskTracker(makeSpec, 'down');
  afterEach(() => tasks.cleanup());

  it('reports itself unhealthy, naming the socket', async () => {
    const health = await downDriver().health();
    expect(health.healthy).toBe(false);
    expect(health.detail).toContain(`docker engine unreachable at ${missingSocket}`);
  });

  it('fails a start fast with DRIVER_UNAVAILABLE', async () => {
    const startedMs = Date.now();
    const start = downDriver().start({
      taskId: uniqueTaskId('down'),
      spec: { ...makeSpec({ command: ['true'], env: {} }), image: 'busybox:1' },
      taskDir: await tasks.dir(),
    });
    await expect(start).rejects.toSatisfy(
      (error) =>
        isShoalError(error, 'DRIVER_UNAVAILABLE') &&
        error.message.startsWith(`docker engine unreachable at ${missingSocket}:`),
    );
    // The engine check waits 2 s at most; the rest is slack for a loaded machine.
    expect(Date.now() - startedMs).toBeLessThan(10_000);
  });

  it('rejects recover() with DRIVER_UNAVAILABLE: an engine that is down says nothing about the task', async () => {
    const handle: TaskHandle = {
      taskId: uniqueTaskId('down'),
      driver: 'docker',
      state: {
        containerId: 'c0ffee',
        containerName: 'shoal-x',
        image: 'busybox:1',
        taskDir: await tasks.dir(),
      },
    };
    await expect(downDriver().recover(handle)).rejects.toSatisfy((error) =>
      isShoalError(error, 'DRIVER_UNAVAILABLE'),
    );
  });

  it('turns pull progress into lines, each layer at most once a second unless its status changes', () => {
    let nowMs = 0;
    const line = createPullProgress(() => nowMs);
    expect(line({ status: 'Pulling from shoal/busybox', id: '1' })).toBe('1: Pulling from shoal/busybox');
    expect(
      line({ status: 'Downloading', id: 'abc', progressDetail: { current: 1_200_000, total: 2_000_000 } }),
    ).toBe('abc: Downloading 1.2 MB / 2.0 MB');
    nowMs = 500;
    expect(
      line({ status: 'Downloading', id: 'abc', progressDetail: { current: 1_500_000, total: 2_000_000 } }),
    ).toBe(null);
    expect(line({ status: 'Download complete', id: 'abc' })).toBe('abc: Download complete');
    nowMs = 2000;
    expect(line({ status: 'Status: Downloaded newer image for x' })).toBe(
      'Status: Downloaded newer image for x',
    );
    expect(line({ error: 'boom' })).toBe(null);
    expect(line('not an event')).toBe(null);
  });

  it('finds its socket in DOCKER_HOST', () => {
    expect(dockerSocketPathFromEnv({ DOCKER_HOST: 'unix:///run/user/1000/docker.sock' })).toBe(
      '/run/user/1000/docker.sock',
    );
    expect(dockerSocketPathFromEnv({ DOCKER_HOST: 'tcp://10.0.0.1:2375' })).toBe('/var/run/docker.sock');
    expect(dockerSocketPathFromEnv({})).toBe('/var/run/docker.sock');
  });
});

describe.skipIf(skipReason !== null)(
  `docker driver on a real engine${skipReason === null ? '' : ` (skipped: ${skipReason})`}`,
  { timeout: taskTestTimeoutMs },
  () => {
    driverCompliance('docker', makeDriver, makeSpec, { socketPath });
    isolationCompliance('docker', makeDriver, makeSpec, { hiddenDir: agentDataDir });

    describe('docker extras', () => {
      const tasks = createTaskTracker(makeSpec, 'docker');
      afterEach(() => tasks.cleanup());
      const engine = new Docker({ socketPath });

      it('names, labels and limits the container, and removes it on destroy', async () => {
        const driver = makeDriver();
        const spec = {
          ...makeSpec({ command: ['sleep', '1000'], env: {} }),
          cpuMillis: 250,
          memoryBytes: 32 * mebibyte,
          pidsMax: 64,
        };
        const taskId = uniqueTaskId('limits');
        const handle = await driver.start({ taskId, spec, taskDir: await tasks.dir() });
        tasks.track(driver, handle);
        const containerId = handle.state['containerId'];
        expect(typeof containerId).toBe('string');
        const info = await engine.getContainer(String(containerId)).inspect();
        expect(info.Name).toBe(`/${containerNamePrefix}${taskId}`);
        expect(info.Config.Labels).toMatchObject({ [taskLabel]: taskId, [managedLabel]: 'true' });
        expect(info.HostConfig).toMatchObject({
          Memory: 32 * mebibyte,
          NanoCpus: 250_000_000,
          PidsLimit: 64,
          NetworkMode: 'none',
        });
        expect(info.Config).toMatchObject({ NetworkDisabled: true });
        await driver.destroy(handle);
        await expect(engine.getContainer(String(containerId)).inspect()).rejects.toMatchObject({
          statusCode: 404,
        });
      });

      it('gives the container a network namespace of its own with only loopback, where localhost resolves', async () => {
        const driver = makeDriver();
        const taskDir = await tasks.dir();
        const script =
          'ls /sys/class/net; readlink /proc/self/ns/net; ping -c 1 -W 5 localhost >/dev/null && echo up';
        const handle = await driver.start({
          taskId: uniqueTaskId('network'),
          spec: makeSpec({ command: ['sh', '-c', script], env: {} }),
          taskDir,
        });
        tasks.track(driver, handle);
        expect((await driver.wait(handle)).succeeded).toBe(true);
        const [interfaces, namespace, ping] = (await readTaskLogs(taskDir)).stdout
          .toString('utf8')
          .split('\n');
        expect(interfaces).toBe('lo');
        expect(namespace).toMatch(/^net:\[\d+\]$/);
        expect(namespace).not.toBe(readlinkSync('/proc/self/ns/net'));
        expect(ping).toBe('up');
      });

      it('reports a task that runs out of memory as OOM-killed', async () => {
        const driver = makeDriver();
        const spec = {
          ...makeSpec({
            // Builds a 50 MB shell variable in a container allowed 8 MiB.
            command: ['sh', '-c', 'x=$(busybox head -c 50000000 /dev/zero | busybox tr "\\0" a); echo ${#x}'],
            env: {},
          }),
          memoryBytes: 8 * mebibyte,
        };
        const handle = await driver.start({
          taskId: uniqueTaskId('oom'),
          spec,
          taskDir: await tasks.dir(),
        });
        tasks.track(driver, handle);
        expect(await driver.wait(handle)).toEqual({
          exitCode: 137,
          signal: null,
          oomKilled: true,
          reason: 'OOM-killed',
          succeeded: false,
        });
      });

      it('rejects an image that is not there and cannot be pulled', async () => {
        const missing = `local/shoal-no-such-image:${process.pid}`;
        const start = makeDriver().start({
          taskId: uniqueTaskId('noimage'),
          spec: { ...makeSpec({ command: ['true'], env: {} }), image: missing },
          taskDir: await tasks.dir(),
        });
        await expect(start).rejects.toSatisfy(
          (error) =>
            isShoalError(error, 'INVALID_ARGUMENT') &&
            error.message.startsWith(`image not found: ${missing}`),
        );
      });

      it('rejects a command the image does not have, and leaves no container behind', async () => {
        const taskId = uniqueTaskId('nocmd');
        const start = makeDriver().start({
          taskId,
          spec: makeSpec({ command: ['shoal-no-such-command'], env: {} }),
          taskDir: await tasks.dir(),
        });
        await expect(start).rejects.toSatisfy(
          (error) =>
            isShoalError(error, 'INVALID_ARGUMENT') &&
            error.message === 'command not found: shoal-no-such-command',
        );
        await expect(engine.getContainer(containerNamePrefix + taskId).inspect()).rejects.toMatchObject({
          statusCode: 404,
        });
      });

      it('replaces a leftover container of the same task', async () => {
        const driver = makeDriver();
        const taskId = uniqueTaskId('leftover');
        const first = await driver.start({
          taskId,
          spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
          taskDir: await tasks.dir(),
        });
        tasks.track(driver, first);
        // An agent that died between create and persisting the handle leaves such a container.
        const second = await makeDriver().start({
          taskId,
          spec: makeSpec({ command: ['true'], env: {} }),
          taskDir: await tasks.dir(),
        });
        tasks.track(driver, second);
        expect(second.state['containerId']).not.toBe(first.state['containerId']);
        expect((await driver.wait(second)).succeeded).toBe(true);
      });

      const lossInit = { engineCheckIntervalMs: 200, pingTimeoutMs: 500 };

      it('ends a task whose engine disappears with a clear reason, not a hang', async () => {
        const proxy = await startEngineProxy(socketPath);
        const driver = makeDriver({ ...lossInit, socketPath: proxy.socketPath, engineLossGraceMs: 1500 });
        const handle = await driver.start({
          taskId: uniqueTaskId('gone'),
          spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
          taskDir: await tasks.dir(),
        });
        // The container outlives the proxy: clean it up through the real engine.
        tasks.track(makeDriver(), handle);
        const exit = driver.wait(handle);
        await sleep(300);
        const lostMs = Date.now();
        await proxy.kill();
        const result = await exit;
        expect(result).toMatchObject({ exitCode: null, succeeded: false });
        expect(result.reason).toMatch(
          /^docker engine unreachable while the task ran: .* \(no answer from .* for 2 s\)$/,
        );
        expect(Date.now() - lostMs).toBeLessThan(15_000);
      });

      it('ends a task whose engine hangs with the same reason', async () => {
        const proxy = await startEngineProxy(socketPath);
        const driver = makeDriver({ ...lossInit, socketPath: proxy.socketPath, engineLossGraceMs: 1500 });
        const handle = await driver.start({
          taskId: uniqueTaskId('hung'),
          spec: makeSpec({ command: ['sleep', '1000'], env: {} }),
          taskDir: await tasks.dir(),
        });
        tasks.track(makeDriver(), handle);
        const exit = driver.wait(handle);
        await sleep(300);
        proxy.freeze();
        const result = await exit;
        expect(result.reason).toMatch(/^docker engine unreachable while the task ran: /);
        await proxy.kill();
      });

      it('rides out an engine that comes back within the grace period', async () => {
        const proxy = await startEngineProxy(socketPath);
        const driver = makeDriver({ ...lossInit, socketPath: proxy.socketPath, engineLossGraceMs: 30_000 });
        const handle = await driver.start({
          taskId: uniqueTaskId('back'),
          spec: makeSpec({
            command: ['sh', '-c', 'trap "exit 9" TERM; while true; do sleep 0.1; done'],
            env: {},
          }),
          taskDir: await tasks.dir(),
        });
        // Cleaned up through the real engine: the proxy is gone by then.
        tasks.track(makeDriver(), handle);
        const exit = driver.wait(handle);
        await sleep(500);
        await proxy.kill();
        await sleep(1500);
        await proxy.revive();
        await driver.stop(handle, { graceMs: 10_000 });
        expect(await exit).toMatchObject({ exitCode: 9, reason: 'exit code 9' });
        await proxy.kill();
      });

      describe.skipIf(!registryInstalled)(
        `pulling from a registry${registryInstalled ? '' : ` (skipped: ${registryBinary} not installed)`}`,
        () => {
          let registry: ChildProcess | null = null;
          let registryDir: string | null = null;
          afterEach(async () => {
            registry?.kill('SIGTERM');
            registry = null;
            if (registryDir !== null) await rm(registryDir, { recursive: true, force: true });
            registryDir = null;
          });

          it('pulls a missing image, sending its progress as task events', async () => {
            registryDir = await mkdtemp(join(tmpdir(), 'shoal-registry-'));
            const port = await freePort();
            await writeFile(
              join(registryDir, 'config.yml'),
              `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${registryDir}/data\nhttp:\n  addr: 127.0.0.1:${port}\n`,
            );
            registry = spawn(registryBinary, ['serve', join(registryDir, 'config.yml')], { stdio: 'ignore' });
            await waitUntil('the registry answers', async () => {
              const answer = await fetch(`http://127.0.0.1:${port}/v2/`).catch(() => null);
              return answer?.ok === true;
            });
            // The test image, pushed under a name of its own and then removed here: the driver must pull it.
            const source = engine.getImage(image);
            if ((await source.inspect().catch(() => null)) === null) {
              await new Promise((resolve, reject) => {
                void engine.pull(image).then((stream) => {
                  engine.modem.followProgress(stream, (error) => (error ? reject(error) : resolve(null)));
                }, reject);
              });
            }
            const repo = `127.0.0.1:${port}/shoal-test/busybox`;
            const tag = String(process.pid);
            const reference = `${repo}:${tag}`;
            await source.tag({ repo, tag });
            // The engine insists on credentials, even empty ones for a registry that needs none.
            const pushed = await engine
              .getImage(reference)
              .push({ authconfig: { serveraddress: `127.0.0.1:${port}` } });
            await new Promise((resolve, reject) => {
              engine.modem.followProgress(pushed, (error, output: unknown[]) => {
                const failed = output.find(
                  (line) => typeof line === 'object' && line !== null && 'error' in line,
                );
                if (error || failed) reject(error ?? new Error(JSON.stringify(failed)));
                else resolve(null);
              });
            });
            await engine.getImage(reference).remove();

            const events: TaskEvent[] = [];
            const driver = makeDriver();
            const handle = await driver.start({
              taskId: uniqueTaskId('pull'),
              spec: { ...makeSpec({ command: ['true'], env: {} }), image: reference },
              taskDir: await tasks.dir(),
              onEvent: (event) => events.push(event),
            });
            tasks.track(driver, handle);
            expect((await driver.wait(handle)).succeeded).toBe(true);
            expect(events[0]).toEqual({ type: 'image:pull', message: `pulling image ${reference}` });
            expect(events.filter((event) => event.type === 'image:pull').length).toBeGreaterThan(2);
            expect(events.map((event) => event.message)).toContainEqual(
              expect.stringMatching(
                /Pulling from shoal-test\/busybox|Pull complete|Already exists/,
              ) as unknown,
            );
            const last = events.at(-1);
            expect(last?.type).toBe('image:pulled');
            expect(last?.message).toMatch(
              new RegExp(`^pulled image ${reference.replace(/[.:]/g, '\\$&')} in \\d+\\.\\d s$`),
            );
            await driver.destroy(handle);
            await engine
              .getImage(reference)
              .remove()
              .catch(() => undefined);
          });
        },
      );
    });
  },
);
