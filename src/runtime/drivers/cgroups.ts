/**
 * Control groups for exec tasks: each task gets its own cgroup (one per v1 hierarchy it uses, or one on a pure
 * cgroup v2 host) that caps its CPU and memory, counts its OOM kills and lists every process it started, even
 * ones that left its process group. Hosts vary: v1 controllers mounted one per directory under /sys/fs/cgroup,
 * a pure v2 hierarchy at /sys/fs/cgroup, or a hybrid of both (v1 controllers plus a v2 mount at
 * /sys/fs/cgroup/unified, as on these machines). Each resource uses whichever hierarchy offers its controller.
 *
 * Process tracking prefers a v2 cgroup wherever a v2 hierarchy is mounted, controllers or not: its cgroup.kill
 * (Linux 5.14+) ends every process at once, which no loop over cgroup.procs can promise against a task that forks.
 *
 * Imports only node built-ins and shared/errors.ts: the exec shim loads this file.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage } from '../../shared/errors.ts';

/** The cgroup hierarchies of a host, as read from /proc/self/mountinfo. */
export interface CgroupMounts {
  /** v1 hierarchies: controller name (cpu, memory, pids…) → mount point. */
  v1: Readonly<Record<string, string>>;
  /** The cgroup v2 mount and the controllers its root offers to children, or null. */
  v2: { mountPoint: string; controllers: readonly string[] } | null;
}

/** One task's cgroups, as created. JSON-serialisable: the exec driver keeps it in the task's launch file. */
export interface TaskCgroup {
  /** Every cgroup directory made for the task, to remove on destroy. */
  paths: string[];
  /** The cgroup.procs files the task joins before it runs its command. */
  procsFiles: string[];
  /** The cgroup.procs file that lists every process of the task, or null when none tracks them. */
  trackingProcsFile: string | null;
  /** cgroup.kill of the tracking cgroup (v2, Linux 5.14+), or null. */
  killFile: string | null;
  /** Where OOM kills are counted: memory.oom_control (v1) or memory.events (v2); both hold "oom_kill N". */
  oomFile: string | null;
  cpuEnforced: boolean;
  memoryEnforced: boolean;
  /** Absent in launch files from before the pids limit. */
  pidsEnforced?: boolean;
  /** Device access restricted to TaskLimits.devices; absent when not asked for. */
  devicesEnforced?: boolean;
}

export interface TaskLimits {
  cpuMillis: number;
  memoryBytes: number;
  /** Most processes and threads at once; absent: no pids limit. */
  pidsMax?: number;
  /** devices cgroup allow rules ("c 1:3 rwm"); everything else is denied. Absent: devices unrestricted. */
  devices?: readonly string[];
}

/** The CFS period shoal uses: the scheduler's default. The quota is cpuMillis/1000 of it. */
export const cpuPeriodMicroseconds = 100_000;
/** The kernel refuses a CFS quota below 1 ms. */
const cpuQuotaMicrosecondsMin = 1000;
/** How long removal waits for a cgroup's last processes to leave it (rmdir says EBUSY until then). */
const removeWaitMsMax = 5000;
const removePollIntervalMs = 50;

/** Reads the cgroup hierarchies mounted on this host. */
export async function detectCgroupMounts(mountInfoPath = '/proc/self/mountinfo'): Promise<CgroupMounts> {
  let text: string;
  try {
    text = await readFile(mountInfoPath, 'utf8');
  } catch {
    return { v1: {}, v2: null };
  }
  const parsed = parseCgroupMountInfo(text);
  if (parsed.v2MountPoint === null) return { v1: parsed.v1, v2: null };
  const controllers = await readFile(join(parsed.v2MountPoint, 'cgroup.controllers'), 'utf8').catch(() => '');
  return {
    v1: parsed.v1,
    v2: { mountPoint: parsed.v2MountPoint, controllers: controllers.trim().split(/\s+/).filter(Boolean) },
  };
}

/** Non-controller options of a v1 cgroup mount. */
const v1MountOptions = new Set([
  'rw',
  'ro',
  'noprefix',
  'clone_children',
  'xattr',
  'cpuset_v2_mode',
  'favordynmods',
]);

/**
 * Finds the cgroup mounts in /proc/<pid>/mountinfo text. A line reads
 * `36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory`: the mount point is the
 * fifth field, the filesystem type and its options follow the " - " separator.
 */
export function parseCgroupMountInfo(text: string): {
  v1: Record<string, string>;
  v2MountPoint: string | null;
} {
  const v1: Record<string, string> = {};
  let v2MountPoint: string | null = null;
  for (const line of text.split('\n')) {
    const separator = line.indexOf(' - ');
    if (separator === -1) continue;
    const mountPoint = line.slice(0, separator).split(' ')[4];
    const [fsType, , superOptions = ''] = line.slice(separator + 3).split(' ');
    if (mountPoint === undefined) continue;
    const path = unescapeMountPath(mountPoint);
    if (fsType === 'cgroup2') {
      v2MountPoint ??= path;
    } else if (fsType === 'cgroup') {
      for (const option of superOptions.split(',')) {
        if (option === '' || v1MountOptions.has(option) || option.includes('=')) continue;
        v1[option] ??= path;
      }
    }
  }
  return { v1, v2MountPoint };
}

/** mountinfo writes space, tab, newline and backslash as octal escapes (\040…). */
function unescapeMountPath(path: string): string {
  return path.replace(/\\([0-7]{3})/g, (_match, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** What createTaskCgroup made, and one line per limit it could not enforce. */
export interface TaskCgroupResult {
  cgroup: TaskCgroup;
  warnings: string[];
}

/**
 * Creates the task's cgroups under `parent` (a path relative to each hierarchy's root, e.g. "shoal") and writes
 * its limits. Never throws for what the host lacks or forbids: a limit that cannot be set is left out and
 * reported in warnings, and the task runs without it.
 *
 * Synchronous on purpose: a dozen mkdir and write calls on cgroupfs, each a few microseconds in the kernel,
 * where a round trip through libuv's thread pool would cost more than the call and sits on every task's start.
 */
export function createTaskCgroup(
  mounts: CgroupMounts,
  parent: string,
  taskId: string,
  limits: TaskLimits,
): TaskCgroupResult {
  const warnings: string[] = [];
  const cgroup: TaskCgroup = {
    paths: [],
    procsFiles: [],
    trackingProcsFile: null,
    killFile: null,
    oomFile: null,
    cpuEnforced: false,
    memoryEnforced: false,
  };
  const v2 = mounts.v2;
  const v2Offers = (controller: string): boolean => v2 !== null && v2.controllers.includes(controller);
  const cpuV1 = mounts.v1['cpu'];
  const memoryV1 = mounts.v1['memory'];
  const pidsV1 = mounts.v1['pids'];
  const pidsWanted = limits.pidsMax !== undefined;

  // The v2 cgroup first: it also tracks the task's processes when it can be made.
  let v2Path: string | null = null;
  const v2Wanted = [
    ...(cpuV1 === undefined && v2Offers('cpu') ? ['cpu'] : []),
    ...(memoryV1 === undefined && v2Offers('memory') ? ['memory'] : []),
    ...(pidsWanted && pidsV1 === undefined && v2Offers('pids') ? ['pids'] : []),
  ];
  if (v2 !== null) {
    const path = join(v2.mountPoint, parent, taskId);
    try {
      makeDirs(v2.mountPoint, parent);
      // Children get a controller only if every ancestor's subtree_control names it. The root is exempt from
      // the rule that a cgroup with processes cannot hand controllers down; shoal's parent holds none.
      // The root and every level of the parent, down to the task's own parent.
      const parts = parent.split('/');
      const handingDown = parts.map((_, depth) => join(v2.mountPoint, ...parts.slice(0, depth + 1)));
      for (const controller of v2Wanted) {
        for (const dir of [v2.mountPoint, ...handingDown]) {
          try {
            writeFileSync(join(dir, 'cgroup.subtree_control'), `+${controller}`);
          } catch {
            // already enabled, or refused: the limit's own write below reports what it costs
          }
        }
      }
      makeDirs(v2.mountPoint, join(parent, taskId));
      v2Path = path;
      cgroup.paths.push(path);
      cgroup.procsFiles.push(join(path, 'cgroup.procs'));
      cgroup.trackingProcsFile = join(path, 'cgroup.procs');
      if (existsSync(join(path, 'cgroup.kill'))) cgroup.killFile = join(path, 'cgroup.kill');
    } catch {
      // Without it tracking falls back to v1, and a limit that needed it is reported below.
      v2Path = null;
    }
  }

  const v1Cgroup = (mountPoint: string): string => {
    const path = join(mountPoint, parent, taskId);
    makeDirs(mountPoint, join(parent, taskId));
    if (!cgroup.paths.includes(path)) {
      cgroup.paths.push(path);
      cgroup.procsFiles.push(join(path, 'cgroup.procs'));
    }
    return path;
  };

  // CPU: a CFS quota of cpuMillis/1000 of each period, as Docker's --cpus sets it.
  const quotaMicroseconds = Math.max(
    cpuQuotaMicrosecondsMin,
    Math.round((limits.cpuMillis * cpuPeriodMicroseconds) / 1000),
  );
  if (cpuV1 !== undefined) {
    attempt(warnings, 'cpu', () => {
      const path = v1Cgroup(cpuV1);
      writeFileSync(join(path, 'cpu.cfs_period_us'), String(cpuPeriodMicroseconds));
      writeFileSync(join(path, 'cpu.cfs_quota_us'), String(quotaMicroseconds));
      cgroup.cpuEnforced = true;
    });
  } else if (v2Offers('cpu') && v2Path !== null) {
    const path = v2Path;
    attempt(warnings, 'cpu', () => {
      writeFileSync(join(path, 'cpu.max'), `${quotaMicroseconds} ${cpuPeriodMicroseconds}`);
      cgroup.cpuEnforced = true;
    });
  } else {
    warnings.push(`cpu limit not enforced: ${missingControllerDetail('cpu', mounts, v2Path)}`);
  }

  // Memory: a hard limit, and no swap on top, so the allocator's reservation is all the task gets.
  if (memoryV1 !== undefined) {
    attempt(warnings, 'memory', () => {
      const path = v1Cgroup(memoryV1);
      writeFileSync(join(path, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      // memsw exists only when the kernel accounts swap; it must not be below limit_in_bytes.
      writeOptional(join(path, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
      cgroup.oomFile = join(path, 'memory.oom_control');
      cgroup.memoryEnforced = true;
    });
  } else if (v2Offers('memory') && v2Path !== null) {
    const path = v2Path;
    attempt(warnings, 'memory', () => {
      writeFileSync(join(path, 'memory.max'), String(limits.memoryBytes));
      writeOptional(join(path, 'memory.swap.max'), '0');
      cgroup.oomFile = join(path, 'memory.events');
      cgroup.memoryEnforced = true;
    });
  } else {
    warnings.push(`memory limit not enforced: ${missingControllerDetail('memory', mounts, v2Path)}`);
  }

  // Pids: processes and threads at once, so a fork bomb stops at the task's own limit.
  const pidsMax = limits.pidsMax;
  if (pidsMax !== undefined) {
    if (pidsV1 !== undefined) {
      attempt(warnings, 'pids', () => {
        writeFileSync(join(v1Cgroup(pidsV1), 'pids.max'), String(pidsMax));
        cgroup.pidsEnforced = true;
      });
    } else if (v2Offers('pids') && v2Path !== null) {
      const path = v2Path;
      attempt(warnings, 'pids', () => {
        writeFileSync(join(path, 'pids.max'), String(pidsMax));
        cgroup.pidsEnforced = true;
      });
    } else {
      warnings.push(`pids limit not enforced: ${missingControllerDetail('pids', mounts, v2Path)}`);
    }
  }

  // Devices: deny all, then allow the rules (cgroup v1; v2 needs an eBPF program, which shoal does not load).
  const deviceRules = limits.devices;
  const devicesV1 = mounts.v1['devices'];
  if (deviceRules !== undefined) {
    if (devicesV1 !== undefined) {
      attempt(warnings, 'device', () => {
        const path = v1Cgroup(devicesV1);
        writeFileSync(join(path, 'devices.deny'), 'a');
        for (const rule of deviceRules) writeFileSync(join(path, 'devices.allow'), rule);
        cgroup.devicesEnforced = true;
      });
    } else {
      warnings.push(
        'device limit not enforced: no cgroup v1 devices controller on this node (under cgroup v2 it takes an eBPF program, which shoal does not load)',
      );
    }
  }

  // Without a v2 cgroup, a v1 hierarchy lists the task's processes: pids is the natural one.
  if (cgroup.trackingProcsFile === null) {
    const trackingMount = pidsV1;
    if (trackingMount !== undefined) {
      try {
        cgroup.trackingProcsFile = join(v1Cgroup(trackingMount), 'cgroup.procs');
      } catch {
        // tracking falls back to a limit's hierarchy below
      }
    }
    cgroup.trackingProcsFile ??= cgroup.procsFiles[0] ?? null;
  }
  return { cgroup, warnings };
}

/**
 * Creates root/relative one level at a time. Not mkdir's `recursive`: where a filesystem answers ENOENT for a
 * directory it cannot make (procfs does), Node's recursive mkdir retries the parent forever.
 */
function makeDirs(root: string, relative: string): void {
  let path = root;
  for (const part of relative.split('/').filter((entry) => entry !== '' && entry !== '.')) {
    path = join(path, part);
    try {
      mkdirSync(path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
}

/** Writes a file that only some kernels have (memsw, swap.max). */
function writeOptional(path: string, value: string): void {
  try {
    writeFileSync(path, value);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT' && code !== 'EACCES') throw error;
  }
}

function attempt(warnings: string[], resource: string, action: () => void): void {
  try {
    action();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const hint = code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? ' (cgroups need root)' : '';
    warnings.push(`${resource} limit not enforced: ${errorMessage(error)}${hint}`);
  }
}

function missingControllerDetail(controller: string, mounts: CgroupMounts, v2Path: string | null): string {
  if (mounts.v2 !== null && mounts.v2.controllers.includes(controller) && v2Path === null) {
    return `cannot create a cgroup under ${mounts.v2.mountPoint}`;
  }
  return `no ${controller} cgroup controller on this node (neither a cgroup v1 ${controller} mount nor ${controller} in cgroup v2)`;
}

/** The pids in a cgroup.procs file; empty when the cgroup is gone. */
export async function cgroupPids(procsFile: string): Promise<number[]> {
  let text: string;
  try {
    text = await readFile(procsFile, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map(Number)
    .filter((pid) => Number.isSafeInteger(pid) && pid > 0);
}

/** OOM kills counted in memory.oom_control (v1) or memory.events (v2); null when the file says nothing. */
export async function readOomKills(oomFile: string): Promise<number | null> {
  const text = await readFile(oomFile, 'utf8').catch(() => null);
  if (text === null) return null;
  const match = /^oom_kill (\d+)$/m.exec(text);
  return match?.[1] === undefined ? null : Number(match[1]);
}

/** Kills every process of the cgroup at once through cgroup.kill; false when there is no such file. */
export async function killCgroup(cgroup: TaskCgroup): Promise<boolean> {
  if (cgroup.killFile === null) return false;
  try {
    await writeFile(cgroup.killFile, '1');
    return true;
  } catch {
    return false;
  }
}

/** Removes the task's cgroups, waiting a little for processes on their way out. Gone already is fine. */
export async function removeTaskCgroup(cgroup: TaskCgroup): Promise<string[]> {
  const failures: string[] = [];
  for (const path of cgroup.paths) {
    const deadlineMs = Date.now() + removeWaitMsMax;
    for (;;) {
      try {
        await rmdir(path);
        break;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        if (code !== 'EBUSY' || Date.now() >= deadlineMs) {
          failures.push(`${path}: ${errorMessage(error)}`);
          break;
        }
        await sleep(removePollIntervalMs);
      }
    }
  }
  return failures;
}
