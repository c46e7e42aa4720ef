/**
 * The exec driver: runs a task as a plain process tree on this host.
 *
 * Each task runs under its own shim (shim.ts), a small supervisor process that outlives the agent: it starts
 * the task in its own session and process group, inside the task's cgroups where the node has them, copies its
 * output into size-capped, rotated log files, and records its exit status in the task directory. An agent that
 * restarts, even after SIGKILL, re-attaches from the handle and still learns the exit code.
 *
 * Limits: CPU (CFS quota from cpuMillis) and memory (hard limit from memoryBytes, no swap) through cgroup v1
 * or v2, whichever offers the controller (cgroups.ts). What cannot be enforced (no controller, not root) does not
 * stop the task: it is listed in handle.warnings and sent as 'limit:unenforced' events.
 *
 * stop() signals the task's process group and every process in its cgroup (so one that left the group with
 * setsid is reached too), waits out the grace period, then kills them all.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  accessSync,
  chmodSync,
  lstatSync,
  chownSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  watch,
  writeFileSync,
  type FSWatcher,
} from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isSea } from 'node:sea';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pidsMaxDefault, taskUserDefault } from '../../cluster/index.ts';
import { errorMessage, ShoalError, type Logger } from '../../shared/index.ts';
import {
  cgroupPids,
  createTaskCgroup,
  detectCgroupMounts,
  killCgroup,
  removeTaskCgroup,
  type CgroupMounts,
  type TaskCgroup,
} from './cgroups.ts';
import {
  checkHandleDriver,
  type Driver,
  type DriverHealth,
  type ExitResult,
  type StartRequest,
  type TaskEvent,
  type TaskHandle,
} from './driver.ts';
import {
  deviceNumbers,
  deviceRules,
  isolatedCheckCommand,
  isolationPrograms,
  parseUserSpec,
  readOnlyMountPoints,
  resolveUser,
  rootTaskCapabilities,
  taskHostname,
  type IsolationPlan,
  type IsolationProgram,
} from './isolation.ts';
import type { ImageStore, StoredImage } from '../images/index.ts';
import { leaseKillReason } from './lease-keeper.ts';
import { checkLogRotation, logRotationDefault, type LogRotation } from './logs.ts';
import {
  groupAlive,
  identify,
  pidAlive,
  procAvailable,
  processStatus,
  readProcStat,
  signalGroup,
  signalProcess,
  waitGone,
  type ProcessIdentity,
} from './process.ts';
import {
  exitFileName,
  lastShimLogLine,
  launchFileName,
  parseLaunch,
  readRuntimeRecord,
  removeRuntimeDir,
  runtimeDirName,
  shimArgument,
  shimLogFileName,
  taskFileName,
  type ExitRecord,
  type ShimLaunch,
  type TaskRecord,
} from './shim.ts';

export interface ExecDriverInit {
  /** Used as given: pass one named for the driver, e.g. logger.child('exec'). */
  logger: Logger;
  /**
   * The program and leading arguments that run a shim; the driver appends the launch file's path.
   * Default: shimCommandDefault().
   */
  shimCommand?: readonly string[];
  /** Task cgroups go to <hierarchy>/<cgroupParent>/<taskId>. Default "shoal". */
  cgroupParent?: string;
  /**
   * The cgroup hierarchies to use. Default: those in /proc/self/mountinfo, read at the first start. null runs
   * tasks without cgroups (their limits then show as not enforced).
   */
  cgroupMounts?: CgroupMounts | null;
  /** Size cap and number of log files per stream. Default logRotationDefault (10 MiB × 3). */
  logRotation?: LogRotation;
  /**
   * Run tasks isolated (isolation.ts): as their user (default nobody), in namespaces of their own, with the
   * host's filesystems read-only and `hiddenDir` (the agent's data directory) out of sight. Needs root and
   * util-linux; where either is missing tasks run as before, with a warning. Absent: not isolated (library
   * and test use; the agent always passes it).
   */
  isolation?: ExecIsolationInit;
  /** Where tasks with an image (`--driver exec --image REF`) get it; absent: such tasks are refused. */
  images?: ImageStore;
}

export interface ExecIsolationInit {
  /** Off: tasks run as the agent's user with the host's view, as before isolation existed. */
  enabled: boolean;
  /** The agent's data directory, hidden from tasks. */
  hiddenDir: string;
  /** Tasks may run as root (uid 0); refused otherwise. */
  allowRootTasks: boolean;
  /** Where users and groups are looked up. Default /etc/passwd and /etc/group. */
  passwdFile?: string;
  groupFile?: string;
}

/** The PATH a task gets unless its spec sets one: the usual system directories, nothing from the agent's env. */
export const execPathDefault = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const cgroupParentDefault = 'shoal';

/**
 * wait() wakes on the shim's exit (when this agent started it) and on file notifications; the poll is the
 * fallback should one be missed, quick only when neither is there. Every waiting task polls (a missing
 * exit.json costs an open that fails), which is most of what an idle agent with many tasks does (bench:idle).
 */
const waitPollIntervalMs = 1000;
const waitPollIntervalMsWatched = 30_000;
/** How long stop() and destroy() wait for a shim that is starting up to say which process is the task. */
const shimStartWaitMsMax = 10_000;
/** How long destroy() waits for a shim to finish once its task is gone, before it kills the shim. */
const shimExitWaitMsMax = 5000;
/** After SIGKILL a task normally vanishes at once; a process stuck in the kernel (state D) may take longer. */
const killWaitMsMax = 10_000;
const findTargetPollIntervalMs = 20;
/** What an exec check keeps of its command's output: its first line makes the check's message. */
const checkOutputBytesMax = 4096;
/**
 * After a check's command exits, how long its output may still take. Processes it left running (`cmd &`)
 * hold its pipes open; past this they are killed with its process group.
 */
const checkDrainMsMax = 100;
/** After a timed-out check's group was SIGKILLed, how long to wait for its leader's exit before answering anyway. */
const checkKillWaitMsMax = 1000;

/**
 * How to run a shim here. Inside the single binary: the binary itself with the hidden argument. From the
 * sources: node with shim-main.ts (next to this file). From a bundle run by node: that bundle's own entry.
 */
export function shimCommandDefault(): string[] {
  if (isSea()) return [process.execPath, shimArgument];
  const entry = fileURLToPath(new URL('./shim-main.ts', import.meta.url));
  if (existsSync(entry)) return [process.execPath, '--disable-warning=ExperimentalWarning', entry];
  const script = process.argv[1];
  return script === undefined ? [process.execPath, shimArgument] : [process.execPath, script, shimArgument];
}

/** handle.state of an exec task. */
interface ShimState {
  shimPid: number;
  shimStartTicks: number | null;
  startedAtMs: number;
  taskDir: string;
}

/** A task this driver instance is attached to. */
interface ShimTask {
  state: ShimState;
  runtimeDir: string;
  /** The shim when this driver instance started it; null for a recovered task. */
  child: ChildProcess | null;
  childExited: boolean;
  /** Kept once known, so waits still answer after destroy() removed the runtime directory. */
  exit: ExitResult | null;
  /** Called when something a wait() looks at may have changed. */
  wakers: Set<() => void>;
}

/** Which processes are the task: its leader's process group and its cgroup. */
interface Target {
  leader: ProcessIdentity | null;
  cgroup: TaskCgroup | null;
}

export function createExecDriver(init: ExecDriverInit): Driver {
  const logger = init.logger;
  const shimCommand = [...(init.shimCommand ?? shimCommandDefault())];
  const [shimProgram, ...shimArgs] = shimCommand;
  if (shimProgram === undefined) throw new ShoalError('INVALID_ARGUMENT', 'shimCommand must not be empty');
  const cgroupParent = init.cgroupParent ?? cgroupParentDefault;
  // Relative, and never above the hierarchy's root: shoal removes what it makes there.
  if (!/^[A-Za-z0-9_.-]+(\/[A-Za-z0-9_.-]+)*$/.test(cgroupParent) || cgroupParent.split('/').includes('..')) {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `cgroupParent ${JSON.stringify(cgroupParent)} is not a relative path`,
    );
  }
  const logRotation = { ...(init.logRotation ?? logRotationDefault) };
  checkLogRotation(logRotation);
  const attached = new Map<string, ShimTask>();
  let mounts: Promise<CgroupMounts | null> | null = null;
  const cgroupMounts = (): Promise<CgroupMounts | null> =>
    (mounts ??= init.cgroupMounts === undefined ? detectCgroupMounts() : Promise.resolve(init.cgroupMounts));

  const emit = (request: StartRequest, event: TaskEvent): void => {
    try {
      request.onEvent?.(event);
    } catch (error) {
      logger.warn('task event listener threw', { taskId: request.taskId, error: errorMessage(error) });
    }
  };

  const health = async (): Promise<DriverHealth> => {
    const found = await cgroupMounts();
    const limits = found === null ? 'cgroups off: limits not enforced' : `cgroups: ${describeMounts(found)}`;
    const proc = procAvailable ? '' : '; no /proc: pid reuse goes undetected';
    return { healthy: true, detail: `exec driver ready (${limits}${proc})` };
  };

  const placeInCgroups = async (
    taskId: string,
    request: StartRequest,
    devices: readonly string[] | undefined,
  ): Promise<{ cgroup: TaskCgroup | null; warnings: string[] }> => {
    const { cpuMillis, memoryBytes } = request.spec;
    const found = await cgroupMounts();
    const unenforced = (why: string): string[] =>
      ['cpu', 'memory', 'pids'].map((resource) => `${resource} limit not enforced: ${why}`);
    if (found === null) {
      return { cgroup: null, warnings: unenforced('cgroups are turned off for the exec driver') };
    }
    if (!existsSync('/bin/sh')) {
      return { cgroup: null, warnings: unenforced('no /bin/sh to place the task in its cgroups with') };
    }
    const { cgroup, warnings } = createTaskCgroup(found, cgroupParent, taskId, {
      cpuMillis,
      memoryBytes,
      pidsMax: request.spec.pidsMax ?? pidsMaxDefault,
      ...(devices === undefined ? {} : { devices }),
    });
    return { cgroup: cgroup.procsFiles.length === 0 ? null : cgroup, warnings };
  };

  const isolationInit = init.isolation;
  /** Where isolation's programs are on this node (null: not found), looked up at the first start. */
  let isolationProgramPaths: Record<IsolationProgram, string | null> | null = null;
  /**
   * How the task will be isolated, or why not (warnings). Throws for a user that cannot be: unknown here, or
   * root where root tasks are refused. Prepares the task directory for the task's user.
   */
  const isolationFor = (
    request: StartRequest,
    image: StoredImage | null,
  ): { plan: IsolationPlan | null; warnings: string[] } => {
    const { spec, taskDir } = request;
    // An image may name its user (looked up in the image's own files); unnamed, the default is nobody.
    // An image need not have /etc/passwd, let alone nobody in it: there the default is nobody's usual ids.
    const userText =
      spec.user ??
      (image === null ? taskUserDefault : image.config.user !== '' ? image.config.user : imageUserDefault);
    if (isolationInit === undefined || !isolationInit.enabled) {
      const why =
        isolationInit === undefined ? 'isolation is off' : 'isolation is off on this node (--isolation off)';
      return {
        plan: null,
        warnings: spec.user === undefined ? [] : [`user ${userText} not applied: ${why}`],
      };
    }
    if (process.getuid?.() !== 0) {
      return {
        plan: null,
        warnings: [
          "not isolated: the agent does not run as root, so the task runs as the agent's user and sees the host",
        ],
      };
    }
    isolationProgramPaths ??= Object.fromEntries(
      isolationPrograms.map((program) => [program, findProgram(program)]),
    ) as Record<IsolationProgram, string | null>;
    const found = isolationProgramPaths;
    const isolationProgramsMissing = isolationPrograms.filter((program) => found[program] === null);
    if (isolationProgramsMissing.length > 0) {
      return {
        plan: null,
        warnings: [
          `not isolated: ${isolationProgramsMissing.join(', ')} not found on this node (install util-linux and coreutils)`,
        ],
      };
    }
    const user =
      image === null
        ? resolveUser(
            parseUserSpec(userText),
            readFileSync(isolationInit.passwdFile ?? '/etc/passwd', 'utf8'),
            readFileSync(isolationInit.groupFile ?? '/etc/group', 'utf8'),
          )
        : resolveUser(
            parseUserSpec(userText),
            readTextOr(join(image.rootfs, 'etc', 'passwd'), ''),
            readTextOr(join(image.rootfs, 'etc', 'group'), ''),
          );
    if (user.uid === 0 && !isolationInit.allowRootTasks) {
      throw new ShoalError(
        'PERMISSION_DENIED',
        `task ${request.taskId} asks to run as ${userText} (uid 0): this node refuses root tasks; run it as another user, or start the agent with --allow-root-tasks`,
      );
    }
    // The task directory is root's, sticky and open to all, so the task may write there but cannot move
    // what the shim keeps in it (.shoal/, the logs); tmp/ (its /tmp) is the task's own.
    chmodSync(taskDir, 0o1777);
    const tmpDir = join(taskDir, 'tmp');
    mkdirSync(tmpDir, { recursive: true });
    chownSync(tmpDir, user.uid, user.gid);
    chmodSync(tmpDir, 0o1777);
    const hiddenDir = resolve(isolationInit.hiddenDir);
    return {
      plan: {
        uid: user.uid,
        gid: user.gid,
        userName: user.name,
        initGroups: user.known && user.uid !== 0,
        capabilities: user.uid === 0 ? [...rootTaskCapabilities] : [],
        hiddenDir,
        taskDir: resolve(taskDir),
        readOnlyMounts: readOnlyMountPoints(readFileSync('/proc/self/mountinfo', 'utf8'), hiddenDir),
        network: spec.network === 'none' ? 'none' : 'host',
        hostname: taskHostname(spec.name),
        programs: found as Record<IsolationProgram, string>,
        ...(image === null
          ? {}
          : {
              image: {
                digest: image.digest,
                lowerDir: image.rootfs,
                workingDir: image.config.workingDir === '' ? '/' : image.config.workingDir,
              },
            }),
      },
      warnings: [],
    };
  };

  /** Pulls the task's image into the store (progress as the task's events) and marks it in use by the task. */
  const pullImage = async (request: StartRequest, ref: string): Promise<StoredImage> => {
    const images = init.images;
    if (images === undefined) {
      throw new ShoalError(
        'UNAVAILABLE',
        "this node's exec driver has no image store: run the image with --driver docker",
      );
    }
    const image = await images.pull(ref, {
      onProgress: (line) =>
        emit(request, {
          type: line.startsWith('pulled image') ? 'image:pulled' : 'image:pull',
          message: line,
        }),
    });
    await images.acquire(image.digest, request.taskId);
    // Images no task has used for a day go; looked for at most hourly, on a start that pulls.
    const nowMs = Date.now();
    if (nowMs - imagesCollectedMs >= imageCollectIntervalMs) {
      imagesCollectedMs = nowMs;
      images
        .collect(nowMs)
        .catch((error: unknown) =>
          logger.warn('cannot collect unused images', { error: errorMessage(error) }),
        );
    }
    return image;
  };
  let imagesCollectedMs = 0;

  const start = async (request: StartRequest): Promise<TaskHandle> => {
    const { taskId, spec } = request;
    if (spec.driver !== 'exec') {
      throw new ShoalError('INVALID_ARGUMENT', `task ${taskId} asks for the ${spec.driver} driver, not exec`);
    }
    if (!/^[A-Za-z0-9_.-]+$/.test(taskId) || taskId === '.' || taskId === '..') {
      throw new ShoalError('INVALID_ARGUMENT', `task id ${JSON.stringify(taskId)} cannot name a cgroup`);
    }
    const previous = attached.get(taskId);
    if (previous !== undefined && shimRunning(previous)) {
      throw new ShoalError('CONFLICT', `task ${taskId} is already running on this agent`);
    }
    const image = spec.image === undefined ? null : await pullImage(request, spec.image);
    try {
      return await startPulled(request, image);
    } catch (error) {
      // A start that fails holds no image: the store may collect it.
      if (image !== null) await init.images?.release(image.digest, taskId).catch(() => undefined);
      throw error;
    }
  };

  /** start() once the task's image, if it has one, is in the store. */
  const startPulled = async (request: StartRequest, image: StoredImage | null): Promise<TaskHandle> => {
    const { taskId, spec, taskDir } = request;
    const [command, ...args] = image === null ? spec.command : imageCommand(image, spec.command);
    if (command === undefined || command === '') {
      throw new ShoalError(
        'INVALID_ARGUMENT',
        image === null
          ? 'the exec driver needs a command (shoal run -- CMD ARGS…)'
          : `image ${image.ref} names no command: give one (shoal run --image … -- CMD ARGS…)`,
      );
    }
    // Only what the task asked for: the agent's own environment (tokens, keys) must not leak into tasks.
    // An image's environment comes first, the task's overrides it; inside the image the directory is at
    // /shoal/task, as in a docker task.
    const env =
      image === null
        ? { PATH: execPathDefault, HOME: taskDir, ...spec.env, ...request.env }
        : {
            PATH: execPathDefault,
            HOME: '/',
            ...imageEnvironment(image),
            ...spec.env,
            ...request.env,
            ...(request.env === undefined ? {} : { SHOAL_TASK_DIR: imageTaskDir }),
          };
    // The file work up to the spawn is synchronous on purpose: some twenty small calls on local files and
    // cgroupfs, each cheaper than the thread-pool round trip an async call costs, all on the start's critical path.
    mkdirSync(taskDir, { recursive: true });
    // Found here rather than by the shim: start() can then reject at once, with the reason a user needs.
    if (image === null) checkCommand(command, env.PATH, taskDir);
    else checkImageCommand(image, command, env.PATH);
    const runtimeDir = join(taskDir, runtimeDirName);
    mkdirSync(runtimeDir, { recursive: true, mode: 0o700 });
    // A previous run of this task in the same directory must not answer for this one.
    for (const name of [taskFileName, exitFileName]) rmSync(join(runtimeDir, name), { force: true });

    const isolation = isolationFor(request, image);
    if (image !== null && isolation.plan === null) {
      throw new ShoalError(
        'UNAVAILABLE',
        `an exec task with an image runs only isolated, and this node does not isolate: ${isolation.warnings.join('; ') || 'isolation is off'}`,
      );
    }
    // An isolated task opens only the usual devices and those it holds; others keep the host's view.
    const devices = isolation.plan === null ? undefined : deviceRules((request.devices ?? []).map(deviceOf));
    const { cgroup, warnings: limitWarnings } = await placeInCgroups(taskId, request, devices);
    const warnings = [...limitWarnings, ...isolation.warnings];
    for (const warning of warnings) {
      logger.warn('task limit not enforced', { taskId, warning });
      emit(request, { type: 'limit:unenforced', message: warning });
    }
    if (isolation.plan !== null)
      emit(request, { type: 'isolation', message: describeIsolation(isolation.plan) });
    const launch: ShimLaunch = {
      taskId,
      command,
      args,
      env,
      cwd: taskDir,
      logDir: taskDir,
      logRotation,
      cgroup,
      lease: request.lease ?? null,
      isolation: isolation.plan,
    };
    const launchPath = join(runtimeDir, launchFileName);
    let child: ChildProcess;
    let shimIdentity: ProcessIdentity;
    try {
      // 0600: the task's environment may hold secrets.
      writeFileSync(launchPath, JSON.stringify(launch), { mode: 0o600 });
      ({ child, identity: shimIdentity } = await spawnShim(
        shimProgram,
        [...shimArgs, launchPath],
        runtimeDir,
      ));
    } catch (error) {
      if (cgroup !== null) await removeTaskCgroup(cgroup);
      await removeRuntimeDir(runtimeDir);
      throw error;
    }
    const state: ShimState = {
      shimPid: shimIdentity.pid,
      shimStartTicks: shimIdentity.procStartTicks,
      startedAtMs: Date.now(),
      taskDir,
    };
    const entry: ShimTask = {
      state,
      runtimeDir,
      child,
      childExited: false,
      exit: null,
      wakers: new Set(),
    };
    child.once('exit', () => {
      entry.childExited = true;
      wakeAll(entry);
    });
    // Later errors (a failed kill) must not crash the agent as unhandled 'error' events.
    child.on('error', (error) => logger.warn('exec shim error', { taskId, error: errorMessage(error) }));
    // A task must not keep the agent alive; wait() refs the shim again while someone waits for it.
    child.unref();
    attached.set(taskId, entry);
    logger.info('task started', { taskId, shimPid: state.shimPid, command });
    return {
      taskId,
      driver: 'exec',
      state: { ...state },
      ...(warnings.length > 0 ? { warnings } : {}),
    };
  };

  const spawnShim = async (
    program: string,
    programArgs: string[],
    runtimeDir: string,
  ): Promise<{ child: ChildProcess; identity: ProcessIdentity }> => {
    const shimLog = openSync(join(runtimeDir, shimLogFileName), 'a');
    try {
      const child = spawn(program, programArgs, {
        cwd: runtimeDir,
        // The shim needs nothing from the agent's environment; NODE_OPTIONS in particular must not reach it.
        env: { PATH: process.env['PATH'] ?? execPathDefault },
        // Its own session: the agent's terminal, process group and death do not reach it.
        detached: true,
        stdio: ['ignore', shimLog, shimLog],
      });
      // Read the start time now, synchronously: the child cannot have been reaped before we return to the event loop.
      const identity = child.pid === undefined ? null : identify(child.pid);
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      }).catch((error: unknown) => {
        throw new ShoalError(
          'INTERNAL',
          `could not start the exec shim (${[program, ...programArgs].join(' ')}): ${errorMessage(error)}`,
          { cause: error },
        );
      });
      if (identity === null) throw new ShoalError('INTERNAL', 'the exec shim started without a pid');
      return { child, identity };
    } finally {
      // The shim holds its own copy of the descriptor.
      closeSync(shimLog);
    }
  };

  const wait = async (handle: TaskHandle): Promise<ExitResult> => {
    checkHandleDriver(handle, 'exec');
    const entry = attached.get(handle.taskId);
    if (entry === undefined) {
      throw new ShoalError(
        'NOT_FOUND',
        `task ${handle.taskId} is not attached to this exec driver: start() or recover() it first`,
      );
    }
    return waitShim(entry);
  };

  const waitShim = async (entry: ShimTask): Promise<ExitResult> => {
    entry.child?.ref();
    let wake: (() => void) | null = null;
    const waker = (): void => wake?.();
    entry.wakers.add(waker);
    const watcher = watchQuietly(entry.runtimeDir, waker);
    try {
      for (;;) {
        if (entry.exit !== null) return entry.exit;
        const record = await readRuntimeRecord<ExitRecord>(entry.runtimeDir, exitFileName);
        if (record !== null) return (entry.exit = exitResultOf(record));
        if (!shimRunning(entry)) {
          // It may have written the record just before it ended.
          const late = await readRuntimeRecord<ExitRecord>(entry.runtimeDir, exitFileName);
          if (late !== null) return (entry.exit = exitResultOf(late));
          // destroy() may have read it meanwhile, just before it removed the directory.
          return (entry.exit = knownExit(entry) ?? (await shimLostResult(entry.runtimeDir)));
        }
        await new Promise<void>((resolve) => {
          const watched = watcher !== null || (entry.child !== null && !entry.childExited);
          const timer = setTimeout(resolve, watched ? waitPollIntervalMsWatched : waitPollIntervalMs);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = null;
      }
    } finally {
      watcher?.close();
      entry.wakers.delete(waker);
      entry.child?.unref();
    }
  };

  /** The task's processes, once its shim has started them; null when none were ever started. */
  const findTarget = async (entry: ShimTask): Promise<Target | null> => {
    const launch = await readLaunch(entry.runtimeDir);
    const cgroup = launch?.cgroup ?? null;
    const deadlineMs = Date.now() + shimStartWaitMsMax;
    for (;;) {
      const task = await readRuntimeRecord<TaskRecord>(entry.runtimeDir, taskFileName);
      if (task !== null) return { leader: { pid: task.pid, procStartTicks: task.procStartTicks }, cgroup };
      const ended = (await readRuntimeRecord<ExitRecord>(entry.runtimeDir, exitFileName)) !== null;
      if (ended || !shimRunning(entry) || Date.now() >= deadlineMs) {
        return cgroup === null ? null : { leader: null, cgroup };
      }
      await sleep(findTargetPollIntervalMs);
    }
  };

  const stop = async (
    handle: TaskHandle,
    options: { graceMs: number; signal?: NodeJS.Signals },
  ): Promise<void> => {
    checkHandleDriver(handle, 'exec');
    const { graceMs } = options;
    if (!Number.isFinite(graceMs) || graceMs < 0) {
      throw new ShoalError('INVALID_ARGUMENT', `graceMs must be a non-negative number, got ${graceMs}`);
    }
    const signal = options.signal ?? 'SIGTERM';
    const entry = attached.get(handle.taskId) ?? detachedEntry(handle);
    const target = await findTarget(entry);
    if (target === null || !(await targetAlive(target))) return;
    logger.info('stopping task', { taskId: handle.taskId, pid: target.leader?.pid ?? null, signal, graceMs });
    await signalTarget(target, signal);
    if (await waitGone(() => targetAlive(target), graceMs)) return;
    logger.info('task outlived its grace period, killing it', { taskId: handle.taskId });
    await signalTarget(target, 'SIGKILL');
    if (!(await waitGone(() => targetAlive(target), killWaitMsMax))) {
      logger.warn('task processes still alive after SIGKILL', { taskId: handle.taskId });
    }
  };

  const destroy = async (handle: TaskHandle): Promise<void> => {
    checkHandleDriver(handle, 'exec');
    const entry = attached.get(handle.taskId) ?? detachedEntry(handle);
    const launch = await readLaunch(entry.runtimeDir);
    const target = await findTarget(entry);
    if (target !== null) {
      await signalTarget(target, 'SIGKILL');
      await waitGone(() => targetAlive(target), killWaitMsMax);
    }
    // The shim ends once the task's pipes close; it must not write into a directory being removed.
    if (!(await waitGone(() => Promise.resolve(shimRunning(entry)), shimExitWaitMsMax))) {
      logger.warn('exec shim outlived its task, killing it', { taskId: handle.taskId });
      signalProcess(entry.state.shimPid, 'SIGKILL');
    }
    const record = await readRuntimeRecord<ExitRecord>(entry.runtimeDir, exitFileName);
    if (record !== null) entry.exit ??= exitResultOf(record);
    if (launch?.cgroup) {
      const failures = await removeTaskCgroup(launch.cgroup);
      for (const failure of failures)
        logger.warn('cannot remove a task cgroup', { taskId: handle.taskId, failure });
    }
    const imageDigest = launch?.isolation?.image?.digest;
    if (imageDigest !== undefined)
      await init.images
        ?.release(imageDigest, handle.taskId)
        .catch((error: unknown) =>
          logger.warn('cannot release a task image', { taskId: handle.taskId, error: errorMessage(error) }),
        );
    await removeRuntimeDir(entry.runtimeDir);
    wakeAll(entry);
    attached.delete(handle.taskId);
  };

  // Nothing to await (one existsSync), but a bad handle must still reject rather than throw.
  const recover = (handle: TaskHandle): Promise<boolean> =>
    new Promise((resolve) => resolve(recoverNow(handle)));

  const recoverNow = (handle: TaskHandle): boolean => {
    checkHandleDriver(handle, 'exec');
    // Every handle this driver ever wrote names its shim, so one that does not is malformed, not a task of
    // which "nothing is left": the driver cannot tell whether its processes still run, and false would claim it
    // knows. Rejecting (INVALID_ARGUMENT, from parseShimState) gets the handle's fault into the agent's log.
    const state = parseShimState(handle);
    const runtimeDir = join(state.taskDir, runtimeDirName);
    const existing = attached.get(handle.taskId);
    const launched = existsSync(join(runtimeDir, launchFileName));
    if (existing !== undefined && existing.state.shimPid === state.shimPid) {
      return launched || existing.exit !== null;
    }
    // No launch file: destroyed, or never got as far as its shim. Nothing to report on.
    if (!launched) return false;
    const entry: ShimTask = {
      state,
      runtimeDir,
      child: null,
      childExited: false,
      exit: null,
      wakers: new Set(),
    };
    attached.set(handle.taskId, entry);
    logger.info('task recovered', { taskId: handle.taskId, shimPid: state.shimPid });
    return true;
  };

  /** A view of a task this instance never attached to (stop or destroy straight from a persisted handle). */
  const detachedEntry = (handle: TaskHandle): ShimTask => {
    const state = parseShimState(handle);
    return {
      state,
      runtimeDir: join(state.taskDir, runtimeDirName),
      child: null,
      childExited: false,
      exit: null,
      wakers: new Set(),
    };
  };

  const collect = async (orphan: { taskId: string; taskDir: string }): Promise<boolean> => {
    if (attached.has(orphan.taskId)) return false; // this instance watches it: not an orphan
    // An image it still holds (an agent that died before the task's destroy gave it back) can go.
    const releasedImages = await releaseImagesOf(orphan.taskId);
    const runtimeDir = join(orphan.taskDir, runtimeDirName);
    if (!existsSync(runtimeDir)) return releasedImages;
    // No handle, so no shim identity: the task is found from what its shim recorded (pid, cgroup).
    const launch = await readLaunch(runtimeDir);
    const record = await readRuntimeRecord<TaskRecord>(runtimeDir, taskFileName);
    const target: Target = {
      leader: record === null ? null : { pid: record.pid, procStartTicks: record.procStartTicks },
      cgroup: launch?.cgroup ?? null,
    };
    if (await targetAlive(target)) {
      logger.warn('killing the processes of a task this node no longer runs', { taskId: orphan.taskId });
      await signalTarget(target, 'SIGKILL');
      await waitGone(() => targetAlive(target), killWaitMsMax);
    }
    if (launch?.cgroup) {
      for (const failure of await removeTaskCgroup(launch.cgroup))
        logger.warn('cannot remove a task cgroup', { taskId: orphan.taskId, failure });
    }
    // The shim ends once the task's pipes close; give it a moment before its directory goes.
    await sleep(100);
    await removeRuntimeDir(runtimeDir);
    return true;
  };

  // Task directories tell the agent of processes and cgroups; the image store is the one thing they don't.
  const leftovers = async (): Promise<string[]> =>
    init.images === undefined
      ? []
      : [...new Set((await init.images.list()).flatMap((image) => image.users))].filter(
          (taskId) => !attached.has(taskId),
        );

  /** Gives back every image the task holds in the store; true when it held one. */
  const releaseImagesOf = async (taskId: string): Promise<boolean> => {
    const images = init.images;
    if (images === undefined) return false;
    const held = (await images.list()).filter((image) => image.users.includes(taskId));
    for (const image of held) await images.release(image.digest, taskId);
    if (held.length > 0) logger.info('released the images of a task this node no longer runs', { taskId });
    return held.length > 0;
  };

  const execCheck = async (handle: TaskHandle, request: ExecCheckRequest): Promise<ExecCheckResult> => {
    checkHandleDriver(handle, 'exec');
    const entry = attached.get(handle.taskId) ?? detachedEntry(handle);
    const isolation = (await readLaunch(entry.runtimeDir))?.isolation ?? null;
    if (isolation === null) return runCheckCommand(request);
    // An isolated task's check runs in its namespaces, as its user: found through its process 1.
    const task = await readRuntimeRecord<TaskRecord>(entry.runtimeDir, taskFileName);
    const initPid = task === null ? null : await firstChildOf(task.pid);
    if (initPid === null) return { exitCode: null, output: 'the task is not running', timedOut: false };
    return runCheckCommand(request, (command, args) =>
      isolatedCheckCommand(isolation, initPid, command, args),
    );
  };

  return { name: 'exec', health, start, wait, stop, destroy, recover, leftovers, collect, execCheck };
}

type ExecCheckRequest = Parameters<NonNullable<Driver['execCheck']>>[1];
type ExecCheckResult = Awaited<ReturnType<NonNullable<Driver['execCheck']>>>;

/**
 * Runs an exec check's command on the host, as the task's own command runs: the same kind of environment
 * (PATH and HOME unless the check's env sets them, nothing from the agent's) and directory, in a process group
 * of its own so a timeout kills whatever it started. Not inside the task's cgroups: a check is the agent's
 * probe, and must not count against the task's limits nor die with an OOM-kill of it. Never rejects.
 */
function runCheckCommand(
  request: ExecCheckRequest,
  wrap?: (command: string, args: readonly string[]) => [string, string[]],
): Promise<ExecCheckResult> {
  const [command, ...args] = request.command;
  if (command === undefined || command === '') {
    return Promise.resolve({ exitCode: null, output: 'an exec check needs a command', timedOut: false });
  }
  const env = { PATH: execPathDefault, HOME: request.cwd, ...request.env };
  try {
    checkCommand(command, env.PATH, request.cwd);
  } catch (error) {
    return Promise.resolve({ exitCode: null, output: errorMessage(error), timedOut: false });
  }
  return new Promise((resolvePromise) => {
    const chunks: Buffer[] = [];
    let keptBytes = 0;
    const keep = (chunk: Buffer): void => {
      if (keptBytes >= checkOutputBytesMax) return;
      const part = chunk.subarray(0, checkOutputBytesMax - keptBytes);
      chunks.push(part);
      keptBytes += part.length;
    };
    let child: ChildProcess;
    const [program, programArgs] = wrap === undefined ? [command, args] : wrap(command, args);
    try {
      child = spawn(program, programArgs, {
        cwd: request.cwd,
        env,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (error) {
      // Arguments spawn refuses outright (a NUL byte).
      resolvePromise({
        exitCode: null,
        output: `cannot run ${command}: ${errorMessage(error)}`,
        timedOut: false,
      });
      return;
    }
    let exitCode: number | null = null;
    let timedOut = false;
    let spawnError: string | null = null;
    let settled = false;
    const timers: NodeJS.Timeout[] = [];
    const killGroup = (): void => {
      if (child.pid === undefined) return;
      try {
        signalGroup(child.pid, 'SIGKILL');
      } catch {
        // EPERM on a group that changed user: nothing more a check can do about it
      }
    };
    const finish = (): void => {
      if (settled) return;
      settled = true;
      for (const timer of timers) clearTimeout(timer);
      child.stdout?.destroy();
      child.stderr?.destroy();
      const output = spawnError ?? Buffer.concat(chunks).toString('utf8');
      resolvePromise({ exitCode: spawnError === null ? exitCode : null, output, timedOut });
    };
    timers.push(
      setTimeout(() => {
        timedOut = true;
        killGroup();
        // A leader stuck in the kernel may take its time to go: the answer does not wait for it.
        timers.push(setTimeout(finish, checkKillWaitMsMax));
      }, request.timeoutMs),
    );
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    child.once('error', (error) => {
      // It did not start (its directory is gone); once started, errors here are failed kills, already handled.
      if (child.pid === undefined) {
        spawnError = `cannot run ${command}: ${errorMessage(error)}`;
        finish();
      }
    });
    child.once('exit', (code) => {
      exitCode = code;
      timers.push(
        setTimeout(() => {
          killGroup();
          finish();
        }, checkDrainMsMax),
      );
    });
    child.once('close', finish);
  });
}

/**
 * The first child of a process (the isolated task's process 1 is unshare's only child), from
 * /proc/PID/task/PID/children, else from every process's parent in /proc; null if it has none.
 */
async function firstChildOf(pid: number): Promise<number | null> {
  const listed = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => null);
  if (listed !== null) {
    const first = Number(listed.trim().split(/\s+/)[0]);
    return Number.isInteger(first) && first > 0 ? first : null;
  }
  for (const name of await readdir('/proc').catch(() => [] as string[])) {
    if (!/^\d+$/.test(name)) continue;
    if (readProcStat(Number(name))?.parentId === pid) return Number(name);
  }
  return null;
}

/** A device file's type and numbers; rejects what is not a device (the node's --device names files). */
function deviceOf(device: { kind: string; path: string }): { type: 'c' | 'b'; major: number; minor: number } {
  let stats;
  try {
    stats = statSync(device.path);
  } catch (error) {
    throw new ShoalError(
      'UNAVAILABLE',
      `device ${device.kind} ${device.path} is gone from this node: ${errorMessage(error)}`,
    );
  }
  if (!stats.isCharacterDevice() && !stats.isBlockDevice())
    throw new ShoalError('UNAVAILABLE', `device ${device.kind} ${device.path} is not a device file`);
  return { type: stats.isCharacterDevice() ? 'c' : 'b', ...deviceNumbers(stats.rdev) };
}

/** The user of an image task when neither the task nor the image names one: nobody's uid and gid. */
const imageUserDefault = '65534:65534';

/** How often the image store is swept for images no task has used for a day. */
const imageCollectIntervalMs = 60 * 60_000;

/** Where an image task finds its directory (as a docker task does). */
const imageTaskDir = '/shoal/task';

/** What runs: the image's entrypoint, then the task's command, or the image's own when it gives none. */
function imageCommand(image: StoredImage, command: readonly string[]): string[] {
  return [...(image.config.entrypoint ?? []), ...(command.length > 0 ? command : (image.config.cmd ?? []))];
}

/** The image's environment (KEY=VALUE lines) as a record. */
function imageEnvironment(image: StoredImage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of image.config.env) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

/** Finds the command inside the image's root, as execvp there would (links not followed: they point inside). */
function checkImageCommand(image: StoredImage, command: string, searchPath: string): void {
  const exists = (path: string): boolean => {
    try {
      lstatSync(join(image.rootfs, path));
      return true;
    } catch {
      return false;
    }
  };
  if (
    command.includes('/')
      ? exists(command)
      : searchPath.split(':').some((dir) => dir !== '' && exists(join(dir, command)))
  )
    return;
  throw new ShoalError('INVALID_ARGUMENT', `command not found in image ${image.ref}: ${command}`);
}

function readTextOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return fallback;
  }
}

/** One line for the task's events: who it runs as and in what. */
function describeIsolation(plan: IsolationPlan): string {
  const who =
    plan.uid === 0
      ? "runs as root (uid 0; the agent allows root tasks), with Docker's default capabilities less NET_RAW"
      : `runs as ${plan.userName} (uid ${plan.uid}, gid ${plan.gid}) with no capabilities`;
  const network = plan.network === 'none' ? '; no network but loopback' : '';
  if (plan.image !== undefined)
    return `${who}, in pid, mount, ipc and uts namespaces of its own, in its image's root (${plan.image.digest.slice(0, 19)}; writes go to its directory)${network}`;
  return `${who}, in pid, mount, ipc and uts namespaces of its own; host filesystems read-only, its directory and /tmp writable${network}`;
}

/** The absolute path of a program in the agent's PATH, or null. */
function findProgram(program: string): string | null {
  return locateCommand(program, process.env['PATH'] ?? execPathDefault, '/').path;
}

function shimRunning(entry: ShimTask): boolean {
  if (entry.child !== null) return !entry.childExited;
  return (
    processStatus({ pid: entry.state.shimPid, procStartTicks: entry.state.shimStartTicks }) === 'running'
  );
}

/** A function, so the compiler does not assume entry.exit cannot change across an await. */
function knownExit(entry: ShimTask): ExitResult | null {
  return entry.exit;
}

function wakeAll(entry: ShimTask): void {
  for (const wake of entry.wakers) wake();
}

/** Any process of the task still alive: in its cgroup, or in its leader's process group. */
async function targetAlive(target: Target): Promise<boolean> {
  const tracking = target.cgroup?.trackingProcsFile ?? null;
  if (tracking !== null && (await cgroupPids(tracking)).some(pidAlive)) return true;
  if (target.leader === null || processStatus(target.leader) === 'reused') return false;
  return groupAlive(target.leader.pid);
}

/**
 * Signals the task's process group, and every process of its cgroup outside that group (each gets the signal
 * once: some programs read a second SIGTERM as "hurry"). SIGKILL goes through cgroup.kill where there is one.
 */
async function signalTarget(target: Target, signal: NodeJS.Signals): Promise<void> {
  const leader = target.leader !== null && processStatus(target.leader) !== 'reused' ? target.leader : null;
  if (leader !== null) signalGroup(leader.pid, signal);
  const cgroup = target.cgroup;
  if (cgroup === null) return;
  if (signal === 'SIGKILL' && (await killCgroup(cgroup))) return;
  if (cgroup.trackingProcsFile === null) return;
  for (const pid of await cgroupPids(cgroup.trackingProcsFile)) {
    if (leader !== null && readProcStat(pid)?.groupId === leader.pid) continue;
    signalProcess(pid, signal);
  }
}

function exitResultOf(record: ExitRecord): ExitResult {
  const { exitCode, signal } = record;
  if (record.startError !== null) return failure(record.startError);
  if (record.leaseExpired === true) {
    return failure(leaseKillReason);
  }
  if (record.oomKilled) return { exitCode, signal, oomKilled: true, reason: 'OOM-killed', succeeded: false };
  if (exitCode !== null) {
    return {
      exitCode,
      signal: null,
      oomKilled: false,
      reason: `exit code ${exitCode}`,
      succeeded: exitCode === 0,
    };
  }
  if (signal !== null)
    return { exitCode, signal, oomKilled: false, reason: `killed by ${signal}`, succeeded: false };
  return failure('exit status unknown');
}

function failure(reason: string): ExitResult {
  return { exitCode: null, signal: null, oomKilled: false, reason, succeeded: false };
}

async function shimLostResult(runtimeDir: string): Promise<ExitResult> {
  const line = await lastShimLogLine(runtimeDir);
  const detail = line === null ? '' : ` (its log says: ${line})`;
  return failure(`exit status unknown: the task's exec shim ended before it could record one${detail}`);
}

async function readLaunch(runtimeDir: string): Promise<ShimLaunch | null> {
  const path = join(runtimeDir, launchFileName);
  const text = await readFile(path, 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    return parseLaunch(text, path);
  } catch {
    return null;
  }
}

/** Finds the command as execvp would, in PATH (or relative to the task directory when it has a slash). */
function checkCommand(command: string, searchPath: string, cwd: string): void {
  const found = locateCommand(command, searchPath, cwd);
  if (found.path !== null) return;
  throw new ShoalError(
    'INVALID_ARGUMENT',
    found.denied ? `command not executable (permission denied): ${command}` : `command not found: ${command}`,
  );
}

/**
 * Where execvp would find `command` (relative to cwd when it has a slash, else in searchPath): its path,
 * or null, and whether a match was refused for want of the right to execute it.
 */
function locateCommand(
  command: string,
  searchPath: string,
  cwd: string,
): { path: string | null; denied: boolean } {
  const candidates = command.includes('/')
    ? [resolve(cwd, command)]
    : searchPath.split(':').map((dir) => resolve(cwd, dir === '' ? '.' : dir, command));
  let denied = false;
  for (const candidate of candidates) {
    if (!statSync(candidate, { throwIfNoEntry: false })?.isFile()) continue;
    try {
      accessSync(candidate, constants.X_OK);
      return { path: candidate, denied: false };
    } catch {
      denied = true;
    }
  }
  return { path: null, denied };
}

function watchQuietly(dir: string, onChange: () => void): FSWatcher | null {
  try {
    const watcher = watch(dir, { persistent: false });
    watcher.on('change', onChange);
    // Removed directory, exhausted inotify budget: the poll in wait() still sees the change.
    watcher.on('error', () => {
      watcher.close();
      onChange();
    });
    return watcher;
  } catch {
    return null;
  }
}

function describeMounts(mounts: CgroupMounts): string {
  const parts: string[] = [];
  const v1 = ['cpu', 'memory'].filter((controller) => mounts.v1[controller] !== undefined);
  if (v1.length > 0) parts.push(`v1 ${v1.join(', ')}`);
  if (mounts.v2 !== null) {
    const offered = ['cpu', 'memory'].filter((controller) => mounts.v2?.controllers.includes(controller));
    parts.push(`v2 at ${mounts.v2.mountPoint}${offered.length > 0 ? ` with ${offered.join(', ')}` : ''}`);
  }
  return parts.length === 0 ? 'none found, limits not enforced' : parts.join('; ');
}

function parseShimState(handle: TaskHandle): ShimState {
  const { shimPid, shimStartTicks, startedAtMs, taskDir } = handle.state;
  if (typeof shimPid !== 'number' || !Number.isSafeInteger(shimPid) || shimPid <= 1) {
    throw new ShoalError('INVALID_ARGUMENT', `exec handle for task ${handle.taskId} has no valid shimPid`);
  }
  if (shimStartTicks !== null && typeof shimStartTicks !== 'number') {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `exec handle for task ${handle.taskId} has a bad shimStartTicks`,
    );
  }
  if (typeof startedAtMs !== 'number' || typeof taskDir !== 'string' || taskDir === '') {
    throw new ShoalError('INVALID_ARGUMENT', `exec handle for task ${handle.taskId} is incomplete`);
  }
  return { shimPid, shimStartTicks, startedAtMs, taskDir };
}
