import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createTaskCgroup, parseCgroupMountInfo, readOomKills } from '../../src/runtime/drivers/cgroups.ts';

const hybrid = `22 1 0:21 / / rw,relatime - overlay overlay rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
`;

const pureV2 = `25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`;

describe('parseCgroupMountInfo', () => {
  it('finds v1 controllers, combined mounts included, and the v2 mount of a hybrid host', () => {
    expect(parseCgroupMountInfo(hybrid)).toEqual({
      v1: {
        cpu: '/sys/fs/cgroup/cpu,cpuacct',
        cpuacct: '/sys/fs/cgroup/cpu,cpuacct',
        memory: '/sys/fs/cgroup/memory',
        pids: '/sys/fs/cgroup/pids',
      },
      v2MountPoint: '/sys/fs/cgroup/unified',
    });
  });

  it('finds the one hierarchy of a pure v2 host, and unescapes mount points', () => {
    expect(parseCgroupMountInfo(pureV2)).toEqual({ v1: {}, v2MountPoint: '/sys/fs/cgroup' });
    expect(parseCgroupMountInfo('1 2 0:1 / /mnt/my\\040cgroups rw - cgroup2 none rw\n').v2MountPoint).toBe(
      '/mnt/my cgroups',
    );
    expect(parseCgroupMountInfo('garbage\n\n')).toEqual({ v1: {}, v2MountPoint: null });
  });
});

describe('createTaskCgroup on stand-in hierarchies', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });
  const fakeRoot = async (): Promise<string> => {
    const dir = await mkdtemp(join(tmpdir(), 'shoal-cgroup-test-'));
    dirs.push(dir);
    return dir;
  };

  it('writes v2 limits (cpu.max, memory.max, no swap) into one cgroup that also tracks the processes', async () => {
    const root = await fakeRoot();
    const { cgroup, warnings } = createTaskCgroup(
      { v1: {}, v2: { mountPoint: root, controllers: ['cpu', 'memory', 'pids'] } },
      'shoal',
      'task-1',
      { cpuMillis: 1500, memoryBytes: 64 * 1024 * 1024 },
    );
    const dir = join(root, 'shoal', 'task-1');
    expect(warnings).toEqual([]);
    expect(cgroup).toMatchObject({
      paths: [dir],
      procsFiles: [join(dir, 'cgroup.procs')],
      trackingProcsFile: join(dir, 'cgroup.procs'),
      oomFile: join(dir, 'memory.events'),
      cpuEnforced: true,
      memoryEnforced: true,
    });
    expect(await readFile(join(dir, 'cpu.max'), 'utf8')).toBe('150000 100000');
    expect(await readFile(join(dir, 'memory.max'), 'utf8')).toBe(String(64 * 1024 * 1024));
    expect(await readFile(join(dir, 'memory.swap.max'), 'utf8')).toBe('0');
    expect(await readFile(join(root, 'shoal', 'cgroup.subtree_control'), 'utf8')).toMatch(/^\+(cpu|memory)$/);
  });

  it('hands the v2 controllers down through every level of a nested parent', async () => {
    const root = await fakeRoot();
    const { cgroup, warnings } = createTaskCgroup(
      { v1: {}, v2: { mountPoint: root, controllers: ['cpu', 'memory'] } },
      'shoal/node-a',
      'task-1',
      { cpuMillis: 500, memoryBytes: 32 * 1024 * 1024 },
    );
    expect(warnings).toEqual([]);
    expect(cgroup.paths).toEqual([join(root, 'shoal', 'node-a', 'task-1')]);
    for (const dir of [root, join(root, 'shoal'), join(root, 'shoal', 'node-a')]) {
      expect(await readFile(join(dir, 'cgroup.subtree_control'), 'utf8')).toMatch(/^\+(cpu|memory)$/);
    }
  });

  it('writes v1 limits per hierarchy, tracks in pids, and never asks the kernel for less than 1 ms of CPU', async () => {
    const root = await fakeRoot();
    const mounts = { cpu: join(root, 'cpu'), memory: join(root, 'memory'), pids: join(root, 'pids') };
    for (const mountPoint of Object.values(mounts)) await mkdir(mountPoint);
    const { cgroup, warnings } = createTaskCgroup({ v1: mounts, v2: null }, 'shoal', 't', {
      cpuMillis: 1,
      memoryBytes: 8 * 1024 * 1024,
    });
    expect(warnings).toEqual([]);
    expect(cgroup.paths).toEqual([
      join(mounts.cpu, 'shoal', 't'),
      join(mounts.memory, 'shoal', 't'),
      join(mounts.pids, 'shoal', 't'),
    ]);
    expect(cgroup.trackingProcsFile).toBe(join(mounts.pids, 'shoal', 't', 'cgroup.procs'));
    expect(await readFile(join(mounts.cpu, 'shoal', 't', 'cpu.cfs_quota_us'), 'utf8')).toBe('1000');
    expect(await readFile(join(mounts.memory, 'shoal', 't', 'memory.limit_in_bytes'), 'utf8')).toBe(
      String(8 * 1024 * 1024),
    );
    expect(cgroup.oomFile).toBe(join(mounts.memory, 'shoal', 't', 'memory.oom_control'));
  });

  it('reads OOM kills from memory.oom_control and memory.events alike', async () => {
    const root = await fakeRoot();
    await writeFile(join(root, 'memory.oom_control'), 'oom_kill_disable 0\nunder_oom 0\noom_kill 2\n');
    await writeFile(
      join(root, 'memory.events'),
      'low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n',
    );
    expect(await readOomKills(join(root, 'memory.oom_control'))).toBe(2);
    expect(await readOomKills(join(root, 'memory.events'))).toBe(1);
    expect(await readOomKills(join(root, 'missing'))).toBe(null);
  });
});
