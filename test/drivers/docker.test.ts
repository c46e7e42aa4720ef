/**
 * The docker driver against a real engine. Needs two environment variables, else the engine tests are skipped:
 *   SHOAL_TEST_DOCKER_SOCKET  the engine's unix socket (e.g. /tmp/shoal-dockerd/docker.sock)
 *   SHOAL_TEST_DOCKER_IMAGE   a local busybox image with sh, sleep, echo, cat, true, false and /bin/busybox
 * The "engine down" tests need no engine and always run.
 */
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterEach, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import {
  containerNamePrefix,
  createDockerDriver,
  dockerSocketPathFromEnv,
  managedLabel,
  taskLabel,
  type Driver,
} from '../../src/runtime/drivers/index.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import {
  createTaskTracker,
  driverCompliance,
  taskTestTimeoutMs,
  uniqueTaskId,
  type SpecInput,
} from './compliance.ts';

const socketPath = process.env['SHOAL_TEST_DOCKER_SOCKET'] ?? '';
const image = process.env['SHOAL_TEST_DOCKER_IMAGE'] ?? '';

async function engineSkipReason(): Promise<string | null> {
  if (socketPath === '' || image === '') {
    return 'set SHOAL_TEST_DOCKER_SOCKET to an engine socket and SHOAL_TEST_DOCKER_IMAGE to a busybox image';
  }
  const health = await createDockerDriver({ logger: silentLogger, socketPath }).health();
  return health.healthy ? null : `SHOAL_TEST_DOCKER_SOCKET: ${health.detail}`;
}
const skipReason = await engineSkipReason();

const mebibyte = 1024 * 1024;

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

const makeDriver = (): Driver => createDockerDriver({ logger: silentLogger, socketPath });

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
          NetworkMode: 'none',
        });
        await driver.destroy(handle);
        await expect(engine.getContainer(String(containerId)).inspect()).rejects.toMatchObject({
          statusCode: 404,
        });
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
    });
  },
);
