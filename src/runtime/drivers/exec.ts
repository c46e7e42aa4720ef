/**
 * The exec driver: runs a task as a plain process tree on this host.
 *
 * Each task leads its own session and process group (`detached: true`), so stop() can signal the whole tree
 * with `process.kill(-pid, sig)`. stdout/stderr go straight to files in the task's directory through file
 * descriptors the child inherits: no pipe runs through the agent, so output keeps flowing if the agent dies and
 * the task keeps running for a later agent to recover().
 *
 * No resource limits yet (cgroups come later): spec.cpuMillis and spec.memoryBytes are only used by the
 * allocator for now.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, open, readdir, readFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { assert, errorMessage, ShoalError, type Logger } from '../../shared/index.ts';
import {
  checkHandleDriver,
  isErrnoException,
  stderrLogFileName,
  stdoutLogFileName,
  type Driver,
  type DriverHealth,
  type ExitResult,
  type StartRequest,
  type TaskHandle,
} from './driver.ts';

export interface ExecDriverInit {
  /** Used as given: pass one named for the driver, e.g. logger.child('exec'). */
  logger: Logger;
}

/** The PATH a task gets unless its spec sets one: the usual system directories, nothing from the agent's env. */
export const execPathDefault = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** A re-attached task is not our child, so no exit event arrives: poll its pid at this pace. */
const recoveredPollIntervalMs = 200;
/** How often stop() looks whether the process group is gone while it waits out the grace period. */
const stopPollIntervalMs = 50;
/** After SIGKILL a group normally vanishes at once; a process stuck in the kernel (state D) may take longer. */
const killWaitMsMax = 10_000;

export const exitedWhileAgentDownReason = 'exited while the agent was down';

/** What handle.state holds for an exec task. */
interface ExecState {
  pid: number;
  startedAtMs: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks after boot): tells the same process from a later one with a reused pid. null without /proc. */
  procStartTicks: number | null;
}

interface Attached {
  state: ExecState;
  /** The child process when this driver instance started the task; null for a recovered one. */
  child: ChildProcess | null;
  /** Settles when the task's leader exits. Made on the first call and shared by later ones. */
  exited: () => Promise<ExitResult>;
}

// /proc is where Linux tells one process from a later one with the same pid; elsewhere we fall back to kill(pid, 0).
const procAvailable = existsSync('/proc/self/stat');

export function createExecDriver(init: ExecDriverInit): Driver {
  const logger = init.logger;
  const attached = new Map<string, Attached>();

  const health = (): Promise<DriverHealth> =>
    Promise.resolve({
      healthy: true,
      detail: procAvailable ? 'exec driver ready' : 'exec driver ready (no /proc: pid reuse goes undetected)',
    });

  const start = async (request: StartRequest): Promise<TaskHandle> => {
    const { taskId, spec, taskDir } = request;
    if (spec.driver !== 'exec') {
      throw new ShoalError('INVALID_ARGUMENT', `task ${taskId} asks for the ${spec.driver} driver, not exec`);
    }
    const [command, ...args] = spec.command;
    if (command === undefined || command === '') {
      throw new ShoalError('INVALID_ARGUMENT', 'the exec driver needs a command (shoal run -- CMD ARGS…)');
    }
    const previous = attached.get(taskId);
    if (previous !== undefined && processStatus(previous.state) === 'running') {
      throw new ShoalError('CONFLICT', `task ${taskId} is already running on this agent`);
    }
    await mkdir(taskDir, { recursive: true });

    let stdoutFile: FileHandle | null = null;
    let stderrFile: FileHandle | null = null;
    try {
      // O_APPEND: a restarted task, or one sharing the file with a leftover child, adds to the log, never overwrites it.
      stdoutFile = await open(join(taskDir, stdoutLogFileName), 'a');
      stderrFile = await open(join(taskDir, stderrLogFileName), 'a');
      const child = spawn(command, args, {
        cwd: taskDir,
        // Only what the task asked for: the agent's own environment (tokens, keys) must not leak into tasks.
        env: { PATH: execPathDefault, HOME: taskDir, ...spec.env },
        detached: true,
        stdio: ['ignore', stdoutFile.fd, stderrFile.fd],
      });
      // Read the start time now, synchronously: the child cannot have been reaped before we return to the event loop.
      const procStartTicks = child.pid === undefined ? null : (readProcStat(child.pid)?.startTicks ?? null);
      const exited = new Promise<ExitResult>((resolve) => {
        child.once('exit', (code, signal) => resolve(exitResultOf(code, signal)));
      });
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      }).catch((error: unknown) => {
        throw spawnError(command, error);
      });
      // Later errors (a failed kill) must not crash the agent as unhandled 'error' events.
      child.on('error', (error) =>
        logger.warn('child process error', { taskId, error: errorMessage(error) }),
      );
      // A task must not keep the agent alive; wait() refs the child again while someone waits for it.
      child.unref();
      const pid = child.pid;
      assert(pid !== undefined, 'a spawned child has a pid');
      const state: ExecState = { pid, startedAtMs: Date.now(), procStartTicks };
      attached.set(taskId, { state, child, exited: () => exited });
      logger.info('task started', { taskId, pid, command });
      return { taskId, driver: 'exec', state: { ...state } };
    } finally {
      // The child holds its own copies of the descriptors.
      await stdoutFile?.close();
      await stderrFile?.close();
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
    entry.child?.ref();
    try {
      return await entry.exited();
    } finally {
      entry.child?.unref();
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
    const state = attached.get(handle.taskId)?.state ?? parseState(handle);
    // A pid now held by an unrelated process means our leader is long gone. Our group cannot outlive its id
    // (Linux keeps a pid allocated while a group uses it), so there is nothing of ours left to signal.
    if (processStatus(state) === 'reused') return;
    const signal = options.signal ?? 'SIGTERM';
    if (!signalGroup(state.pid, signal)) return;
    logger.info('stopping task', { taskId: handle.taskId, pid: state.pid, signal, graceMs });
    if (await waitGroupGone(state.pid, graceMs)) return;
    logger.info('task outlived its grace period, killing it', { taskId: handle.taskId, pid: state.pid });
    if (!signalGroup(state.pid, 'SIGKILL')) return;
    if (!(await waitGroupGone(state.pid, killWaitMsMax))) {
      logger.warn('process group still alive after SIGKILL', { taskId: handle.taskId, pid: state.pid });
    }
  };

  const destroy = async (handle: TaskHandle): Promise<void> => {
    checkHandleDriver(handle, 'exec');
    const state = attached.get(handle.taskId)?.state ?? parseState(handle);
    // What an exec task holds is its processes: anything of its group still running is killed, leftovers included.
    if (processStatus(state) !== 'reused' && signalGroup(state.pid, 'SIGKILL')) {
      await waitGroupGone(state.pid, killWaitMsMax);
    }
    attached.delete(handle.taskId);
  };

  const recoverNow = (handle: TaskHandle): boolean => {
    checkHandleDriver(handle, 'exec');
    const existing = attached.get(handle.taskId);
    const state = parseState(handle);
    if (existing !== undefined && existing.state.pid === state.pid) {
      return processStatus(state) === 'running';
    }
    if (processStatus(state) !== 'running') return false;
    // Not our child: no exit event and no exit status will come. Poll until the process is gone, from the
    // first wait() on, so a recovered task nobody waits for costs no timer.
    let polling: Promise<ExitResult> | null = null;
    const poll = async (): Promise<ExitResult> => {
      while (processStatus(state) === 'running') await sleep(recoveredPollIntervalMs);
      return {
        exitCode: null,
        signal: null,
        oomKilled: false,
        reason: exitedWhileAgentDownReason,
        succeeded: false,
      };
    };
    attached.set(handle.taskId, { state, child: null, exited: () => (polling ??= poll()) });
    logger.info('task recovered', { taskId: handle.taskId, pid: state.pid });
    return true;
  };
  // Nothing to await (the checks read /proc), but a bad handle must still reject rather than throw.
  const recover = (handle: TaskHandle): Promise<boolean> =>
    new Promise((resolve) => resolve(recoverNow(handle)));

  return { name: 'exec', health, start, wait, stop, destroy, recover };
}

function exitResultOf(code: number | null, signal: NodeJS.Signals | null): ExitResult {
  if (code !== null) {
    return {
      exitCode: code,
      signal: null,
      oomKilled: false,
      reason: `exit code ${code}`,
      succeeded: code === 0,
    };
  }
  assert(signal !== null, 'a child exits with a code or a signal');
  return { exitCode: null, signal, oomKilled: false, reason: `killed by ${signal}`, succeeded: false };
}

function spawnError(command: string, error: unknown): ShoalError {
  if (isErrnoException(error)) {
    if (error.code === 'ENOENT') return new ShoalError('INVALID_ARGUMENT', `command not found: ${command}`);
    if (error.code === 'EACCES') {
      return new ShoalError('INVALID_ARGUMENT', `command not executable (permission denied): ${command}`);
    }
  }
  return new ShoalError('INTERNAL', `could not start ${command}: ${errorMessage(error)}`, { cause: error });
}

function parseState(handle: TaskHandle): ExecState {
  const { pid, startedAtMs } = handle.state;
  // Absent in handles written without /proc: then only liveness can be checked.
  const procStartTicks = handle.state['procStartTicks'] ?? null;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 1) {
    throw new ShoalError('INVALID_ARGUMENT', `exec handle for task ${handle.taskId} has no valid pid`);
  }
  if (typeof startedAtMs !== 'number') {
    throw new ShoalError('INVALID_ARGUMENT', `exec handle for task ${handle.taskId} has no startedAtMs`);
  }
  if (procStartTicks !== null && typeof procStartTicks !== 'number') {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `exec handle for task ${handle.taskId} has a bad procStartTicks`,
    );
  }
  return { pid, startedAtMs, procStartTicks };
}

interface ProcStat {
  /** R, S, D, Z (zombie), X (dead)… */
  processState: string;
  /** Process group id. */
  groupId: number;
  startTicks: number;
}

/**
 * Parses /proc/<pid>/stat, or returns null when there is no such process. Synchronous on purpose: it is a
 * small in-memory kernel file, and start() must read it before the event loop can reap the child.
 */
function readProcStat(pid: number): ProcStat | null {
  if (!procAvailable) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (error) {
    if (isErrnoException(error) && (error.code === 'ENOENT' || error.code === 'ESRCH')) return null;
    throw error;
  }
  return parseProcStat(text);
}

/** `pid (comm) state ppid pgrp … starttime …`; comm may hold spaces and parentheses, so split after the last ")". */
function parseProcStat(text: string): ProcStat | null {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const processState = fields[0];
  const groupId = Number(fields[2]);
  const startTicks = Number(fields[19]);
  if (processState === undefined || !Number.isSafeInteger(groupId) || !Number.isSafeInteger(startTicks))
    return null;
  return { processState, groupId, startTicks };
}

function isDead(processState: string): boolean {
  return processState === 'Z' || processState === 'X';
}

/**
 * Whether the task's leader still runs. 'reused' means its pid now names another process. A zombie counts as
 * exited: on hosts whose init does not reap orphans, a dead task's zombie can linger for good.
 */
function processStatus(state: ExecState): 'running' | 'exited' | 'reused' {
  if (procAvailable) {
    const stat = readProcStat(state.pid);
    if (stat === null) return 'exited';
    if (state.procStartTicks !== null && stat.startTicks !== state.procStartTicks) return 'reused';
    return isDead(stat.processState) ? 'exited' : 'running';
  }
  try {
    process.kill(state.pid, 0);
    return 'running';
  } catch (error) {
    if (isErrnoException(error) && error.code === 'EPERM') return 'running';
    return 'exited';
  }
}

/** Signals every process of the group; false when the group has no process left. */
function signalGroup(groupId: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-groupId, signal);
    return true;
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ESRCH') return false;
    // EPERM: the group holds a process we may not signal (it changed user); it still exists.
    if (isErrnoException(error) && error.code === 'EPERM') return true;
    throw error;
  }
}

/** Whether any process of the group is alive. Zombies do not count, though kill(-pgid, 0) still finds them. */
async function groupAlive(groupId: number): Promise<boolean> {
  if (!signalGroup(groupId, 0)) return false;
  if (!procAvailable) return true;
  const entries = await readdir('/proc');
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let text: string;
    try {
      text = await readFile(`/proc/${entry}/stat`, 'latin1');
    } catch {
      continue; // exited while we looked
    }
    const stat = parseProcStat(text);
    if (stat !== null && stat.groupId === groupId && !isDead(stat.processState)) return true;
  }
  return false;
}

/** Polls until the group has no live process (true) or timeoutMs passes (false). */
async function waitGroupGone(groupId: number, timeoutMs: number): Promise<boolean> {
  const deadlineMs = Date.now() + timeoutMs;
  for (;;) {
    if (!(await groupAlive(groupId))) return true;
    const leftMs = deadlineMs - Date.now();
    if (leftMs <= 0) return false;
    await sleep(Math.min(stopPollIntervalMs, leftMs));
  }
}
