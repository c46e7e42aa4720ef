/**
 * Exec tasks in an image's root, without a Docker engine: an image built here (busybox-static, an
 * os-release, a user of its own) is pushed to Debian's docker-registry, and the exec driver pulls it and
 * runs the task in it — the image's entrypoint, command, env, user and working directory; writes land in
 * the task's directory, never in the store's copy. Needs root (namespaces, overlayfs), docker-registry and
 * a static busybox.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskSpec } from '../../src/cluster/task.ts';
import {
  createExecDriver,
  readTaskLogs,
  type Driver,
  type TaskEvent,
} from '../../src/runtime/drivers/index.ts';
import { ImageStore } from '../../src/runtime/images/index.ts';
import { isShoalError, silentLogger } from '../../src/shared/index.ts';
import { createTaskTracker, taskTestTimeoutMs, uniqueTaskId } from './compliance.ts';
import {
  buildImage,
  registrySkipReason,
  startRegistry,
  which,
  type TarEntry,
  type TestRegistry,
} from '../helpers/registry.ts';

const isRoot = process.getuid?.() === 0;
const busybox = which('busybox');
/** ldd fails on a static executable ("not a dynamic executable"): one that runs in any root. */
function isStatic(path: string): boolean {
  try {
    execFileSync('ldd', [path], { stdio: 'ignore' });
    return false;
  } catch {
    return true;
  }
}
const staticBusybox = busybox !== null && isStatic(busybox);
const skipReason = !isRoot
  ? 'needs root'
  : (registrySkipReason ??
    (staticBusybox ? null : 'needs a static busybox (apt-get install busybox-static)'));

const mebibyte = 1024 * 1024;
const work = mkdtempSync(join(tmpdir(), 'shoal-exec-image-'));
const agentDataDir = join(work, 'agent');
afterAll(() => rmSync(work, { recursive: true, force: true }));

const spec = (image: string, command: string[] = []): TaskSpec => ({
  name: 'in-image',
  driver: 'exec',
  image,
  command,
  cpuMillis: 100,
  memoryBytes: 64 * mebibyte,
  priority: 50,
  env: { FROM_TASK: 'task' },
  constraints: {},
});

describe.skipIf(skipReason !== null)(
  `exec tasks in an image${skipReason === null ? '' : ` (skipped: ${skipReason})`}`,
  { timeout: taskTestTimeoutMs },
  () => {
    let registry: TestRegistry | null = null;
    let ref = '';
    let bareRef = '';
    const tasks = createTaskTracker(() => spec(ref), 'image');
    afterAll(async () => {
      await tasks.cleanup();
      registry?.stop();
    });

    beforeAll(async () => {
      registry = await startRegistry(work);
      const applets = ['sh', 'cat', 'id', 'pwd', 'echo', 'ls', 'grep', 'sleep'];
      // /bin: the static busybox and its applets as links to it.
      const busyboxEntries: TarEntry[] = [
        { name: 'bin/', type: 'directory', mode: 0o755 },
        { name: 'bin/busybox', content: readFileSync(busybox ?? ''), mode: 0o755 },
        ...applets.map((applet) => ({
          name: `bin/${applet}`,
          type: 'symlink' as const,
          linkname: 'busybox',
        })),
      ];
      const image = await buildImage(
        [
          [
            ...busyboxEntries,
            { name: 'etc/', type: 'directory', mode: 0o755 },
            { name: 'etc/os-release', content: 'ID=shoalimage\n', mode: 0o644 },
            { name: 'etc/passwd', content: 'root:x:0:0::/:/bin/sh\napp:x:1000:1001::/work:/bin/sh\n' },
            { name: 'etc/group', content: 'root:x:0:\napp:x:1001:\n' },
            { name: 'work/', type: 'directory', mode: 0o777 },
          ],
        ],
        {
          Entrypoint: ['/bin/sh', '-c'],
          Cmd: ['echo from the image'],
          Env: ['A=1', 'PATH=/bin'],
          User: 'app',
          WorkingDir: '/work',
        },
      );
      await registry.push('shoal/exec-image', 'v1', image);
      ref = `${registry.host}/shoal/exec-image:v1`;
      // Busybox alone, as CI's image is: no /etc, no user, no entrypoint.
      const bare = await buildImage([[...busyboxEntries]], { Env: ['PATH=/bin'] });
      await registry.push('shoal/bare', 'v1', bare);
      bareRef = `${registry.host}/shoal/bare:v1`;
    });

    const makeDriver = (): Driver =>
      createExecDriver({
        logger: silentLogger,
        isolation: { enabled: true, hiddenDir: agentDataDir, allowRootTasks: false },
        images: new ImageStore({ dir: join(agentDataDir, 'images'), logger: silentLogger }),
      });

    it("runs the task in the image's root, with its entrypoint, env, user and working directory", async () => {
      const driver = makeDriver();
      const taskDir = await tasks.dir();
      const events: TaskEvent[] = [];
      const handle = await driver.start({
        taskId: uniqueTaskId('image'),
        spec: spec(ref, [
          'cat /etc/os-release; id -u; id -g; pwd; echo "A=$A $FROM_TASK $SHOAL_TASK_DIR"; ls /proc | grep -c "^[0-9]"; ' +
            'echo x > /work/written && echo image-writable; echo z > /etc/x 2>/dev/null || echo etc-refused; echo y > /shoal/task/out && echo dir-writable',
        ]),
        taskDir,
        env: { SHOAL_TASK_DIR: taskDir },
        onEvent: (event) => events.push(event),
      });
      tasks.track(driver, handle);
      const result = await driver.wait(handle);
      const logs = await readTaskLogs(taskDir);
      expect(result.exitCode, logs.stderr.toString('utf8')).toBe(0);
      expect(logs.stdout.toString('utf8').split('\n')).toEqual([
        'ID=shoalimage',
        '1000',
        '1001',
        '/work',
        'A=1 task /shoal/task',
        expect.stringMatching(/^[1-6]$/),
        'image-writable',
        'etc-refused',
        'dir-writable',
        '',
      ]);
      // The task's writes: its directory, and its own layer over the image; the store's copy is untouched.
      expect(readFileSync(join(taskDir, 'out'), 'utf8')).toBe('y\n');
      expect(existsSync(join(taskDir, '.image', 'upper', 'work', 'written'))).toBe(true);
      const roots = readdirSync(join(agentDataDir, 'images', 'rootfs'));
      expect(roots).toHaveLength(1);
      expect(existsSync(join(agentDataDir, 'images', 'rootfs', roots[0] ?? '', 'work', 'written'))).toBe(
        false,
      );
      expect(events.map((event) => event.type)).toContain('image:pulled');
      expect(events.map((event) => event.message)).toContainEqual(
        expect.stringMatching(/^runs as app \(uid 1000, gid 1001\) .* in its image's root/),
      );
    });

    it("runs the image's own command when the task gives none", async () => {
      const driver = makeDriver();
      const taskDir = await tasks.dir();
      const handle = await driver.start({ taskId: uniqueTaskId('image'), spec: spec(ref), taskDir });
      tasks.track(driver, handle);
      expect((await driver.wait(handle)).exitCode).toBe(0);
      expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('from the image\n');
    });

    it("runs an exec check in the image's root, as the task's user, where the task sees its files", async () => {
      const driver = makeDriver();
      const taskDir = await tasks.dir();
      const handle = await driver.start({
        taskId: uniqueTaskId('image'),
        spec: spec(ref, ['echo ready > /tmp/ready; exec sleep 1000']),
        taskDir,
      });
      tasks.track(driver, handle);
      const check = async (): Promise<{ exitCode: number | null; output: string }> =>
        (await driver.execCheck?.(handle, {
          command: ['sh', '-c', 'cat /tmp/ready && cat /etc/os-release && id -u && pwd'],
          env: { PATH: '/bin' },
          cwd: taskDir,
          timeoutMs: 10_000,
        })) ?? { exitCode: null, output: 'no execCheck' };
      let result = await check();
      for (let attempt = 0; attempt < 100 && result.exitCode !== 0; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        result = await check();
      }
      expect(result).toEqual({ exitCode: 0, output: 'ready\nID=shoalimage\n1000\n/work\n', timedOut: false });
      await driver.stop(handle, { graceMs: 0 });
    });

    it("pivots the task's namespace to a root that holds the image and the host's programs, and nothing else of the host", async () => {
      const driver = makeDriver();
      const taskDir = await tasks.dir();
      const handle = await driver.start({
        taskId: uniqueTaskId('image'),
        spec: spec(ref, ['exec sleep 31337']),
        taskDir,
      });
      tasks.track(driver, handle);
      let sleeper = '';
      for (let attempt = 0; attempt < 100 && sleeper === ''; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        try {
          sleeper = execFileSync('pgrep', ['-f', '^sleep 31337$'], { encoding: 'utf8' }).trim();
        } catch {
          // pgrep exits 1 until the task runs.
        }
      }
      // Its parent is the namespace's process 1 (the setup shell): its root is the namespace's root.
      const parent = readFileSync(`/proc/${sleeper}/stat`, 'utf8').split(') ')[1]?.split(' ')[1] ?? '';
      const root = `/proc/${parent}/root`;
      expect(readdirSync(root).sort()).toEqual(expect.arrayContaining(['dev', 'etc', 'rootfs', 'usr']));
      for (const hostOnly of ['home', 'root', 'var', 'tmp', 'proc', 'run'])
        expect(readdirSync(root)).not.toContain(hostOnly);
      expect(readdirSync(join(root, 'etc'))).toEqual(['ld.so.cache']);
      expect(readdirSync(join(root, 'dev'))).toEqual(['null']);
      expect(readFileSync(join(root, 'rootfs', 'etc', 'os-release'), 'utf8')).toBe('ID=shoalimage\n');
      // The task's own root is the image.
      expect(readFileSync(`/proc/${sleeper}/root/etc/os-release`, 'utf8')).toBe('ID=shoalimage\n');
      await driver.stop(handle, { graceMs: 0 });
    });

    it('runs an image that names no user, and has no passwd, as nobody’s ids', async () => {
      const driver = makeDriver();
      const taskDir = await tasks.dir();
      const handle = await driver.start({
        taskId: uniqueTaskId('image'),
        spec: spec(bareRef, ['sh', '-c', 'id -u; id -g; pwd']),
        taskDir,
      });
      tasks.track(driver, handle);
      expect((await driver.wait(handle)).exitCode).toBe(0);
      expect((await readTaskLogs(taskDir)).stdout.toString('utf8')).toBe('65534\n65534\n/\n');
    });

    it('refuses an image task as root where root tasks are refused, and holds no image for it', async () => {
      const images = new ImageStore({ dir: join(agentDataDir, 'refused-images'), logger: silentLogger });
      const driver = createExecDriver({
        logger: silentLogger,
        isolation: { enabled: true, hiddenDir: agentDataDir, allowRootTasks: false },
        images,
      });
      await expect(
        driver.start({
          taskId: uniqueTaskId('image'),
          spec: { ...spec(ref, ['id']), user: 'root' },
          taskDir: await tasks.dir(),
        }),
      ).rejects.toSatisfy((error) => isShoalError(error, 'PERMISSION_DENIED'));
      expect((await images.list()).map((image) => image.users)).toEqual([[]]);
    });

    it('gives back the image of a task an earlier agent process never destroyed, when garbage is collected', async () => {
      const dir = join(agentDataDir, 'restart-images');
      const before = createExecDriver({
        logger: silentLogger,
        isolation: { enabled: true, hiddenDir: agentDataDir, allowRootTasks: false },
        images: new ImageStore({ dir, logger: silentLogger }),
      });
      const taskId = uniqueTaskId('image');
      const taskDir = await tasks.dir();
      const handle = await before.start({ taskId, spec: spec(ref, ['true']), taskDir });
      await before.wait(handle);
      // The agent "restarts": a new driver and store over the same directory, no handles.
      const images = new ImageStore({ dir, logger: silentLogger });
      const after = createExecDriver({
        logger: silentLogger,
        isolation: { enabled: true, hiddenDir: agentDataDir, allowRootTasks: false },
        images,
      });
      expect((await images.list()).map((image) => image.users)).toEqual([[taskId]]);
      expect(await after.leftovers?.()).toEqual([taskId]);
      expect(await after.collect?.({ taskId, taskDir })).toBe(true);
      expect((await images.list()).map((image) => image.users)).toEqual([[]]);
      expect(await after.leftovers?.()).toEqual([]);
    });

    it('refuses an image its registry does not have, in one line', async () => {
      const driver = makeDriver();
      const missing = `${registry?.host ?? ''}/shoal/none:v1`;
      await expect(
        driver.start({ taskId: uniqueTaskId('image'), spec: spec(missing), taskDir: await tasks.dir() }),
      ).rejects.toSatisfy((error) => isShoalError(error, 'NOT_FOUND') && !error.message.includes('\n'));
    });
  },
);
