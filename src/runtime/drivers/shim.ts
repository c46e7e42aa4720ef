/**
 * The exec shim: a small supervisor process, one per exec task, between the agent and the task. The agent
 * starts it and may die or restart at any time; the shim stays. It
 *   - starts the task in its own session and process group, inside the task's cgroups (joined by a /bin/sh
 *     wrapper before it execs the command, so not even the task's first fork escapes them),
 *   - copies the task's stdout and stderr into size-capped, rotated files in the task directory,
 *   - writes the task's pid (task.json) once it runs, and its exit status (exit.json: code, signal, OOM kill)
 *     when its leader exits, each atomically, so an agent that restarts still learns how the task ended,
 *   - then keeps copying output until every process holding the task's pipes is gone, and exits.
 *
 * It runs as `<shoal binary> __shim LAUNCH_FILE` inside the single binary, and as `node shim-main.ts LAUNCH_FILE`
 * from the sources; the exec driver picks one (shimCommandDefault). It reads only the launch file the driver
 * wrote: the task's environment (which may hold secrets) never appears on a command line.
 *
 * Imports only node built-ins and modules that do the same: every task pays for what the shim loads.
 */
import { spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { errorMessage, ShoalError } from '../../shared/errors.ts';
import { writeFileAtomic } from '../../shared/files.ts';
import { readOomKills, type TaskCgroup } from './cgroups.ts';
import {
  readTaskLogs,
  RotatingLogFile,
  stderrLogFileName,
  stdoutLogFileName,
  type LogRotation,
} from './logs.ts';
import { isolatedCommand, isolatedExit, isolationFailurePrefix, type IsolationPlan } from './isolation.ts';
import { identify, signalGroup } from './process.ts';

/** The hidden first argument that makes the shoal binary run as a shim: `shoal __shim LAUNCH_FILE`. */
export const shimArgument = '__shim';

/** The task directory's subdirectory for the shim's and the driver's own files. */
export const runtimeDirName = '.shoal';
export const launchFileName = 'launch.json';
export const taskFileName = 'task.json';
export const exitFileName = 'exit.json';
export const shimLogFileName = 'shim.log';

/** How long after its leader exits the shim waits for the pipes to drain before it records the exit. */
const exitDrainMsMax = 250;
/** Exit status of the cgroup-join wrapper when the task cannot join its cgroup. */
export const cgroupJoinFailedExitCode = 125;

/** What the exec driver tells the shim to run. Written by the driver, read once by the shim. */
export interface ShimLaunch {
  taskId: string;
  /** As the user typed it; looked up in env.PATH. */
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** Where stdout.log and stderr.log go. */
  logDir: string;
  logRotation: LogRotation;
  /** The task's cgroups (it joins cgroup.procsFiles before its command runs), or null to run without. */
  cgroup: TaskCgroup | null;
  /** See StartRequest.lease; absent or null: the shim never stops the task on its own. */
  lease?: { file: string; durationMs: number } | null;
  /** Run the task in namespaces of its own, as another user (isolation.ts); absent or null: as the shim. */
  isolation?: IsolationPlan | null;
}

/** task.json: the task's leader, once the shim has started it. */
export interface TaskRecord {
  pid: number;
  procStartTicks: number | null;
  startedAtMs: number;
}

/** exit.json: how the task's leader ended. */
export interface ExitRecord {
  exitCode: number | null;
  signal: string | null;
  /** The cgroup counted an OOM kill while the task ran. */
  oomKilled: boolean;
  /** Set when the command could not be started at all: a reason for the user, e.g. "command not found: x". */
  startError: string | null;
  /** The shim killed the task because the node's lease ran out (absent in records from older shims). */
  leaseExpired?: boolean;
  finishedAtMs: number;
}

/**
 * A /bin/sh wrapper that writes its own pid into each cgroup.procs named before "--", then execs the command:
 * the task is in its cgroups before its first instruction. Arguments: FILE… -- COMMAND ARG…
 */
const cgroupJoinScript = [
  'while [ "$#" -gt 0 ] && [ "$1" != -- ]; do',
  `  echo $$ > "$1" || { echo "shoal: cannot join cgroup $1" >&2; exit ${cgroupJoinFailedExitCode}; }`,
  '  shift',
  'done',
  'shift',
  'exec "$@"',
].join('\n');

/** Runs the shim for the launch file in args[0]; exits the process when done. Never rejects. */
export async function runShim(args: readonly string[]): Promise<void> {
  const launchPath = args[0];
  if (launchPath === undefined) {
    process.stderr.write(
      `usage: shoal ${shimArgument} LAUNCH_FILE (started by the exec driver, not by hand)\n`,
    );
    process.exit(2);
  }
  // The shim's log is on the task's disk: a full disk must not turn a log line into an uncaught error.
  process.stderr.on('error', () => undefined);
  process.on('uncaughtException', (error) => fail(error));
  try {
    await supervise(launchPath);
    process.exit(0);
  } catch (error) {
    fail(error);
  }
}

/** Set once the task runs: what a shim that fails must do before it exits (kill the task). */
let fatalCleanup: (() => void) | null = null;

function fail(error: unknown): never {
  fatalCleanup?.();
  try {
    process.stderr.write(`${new Date().toISOString()} shoal shim: ${errorMessage(error)}\n`);
  } catch {
    // Nowhere left to say it.
  }
  process.exit(1);
}

async function supervise(launchPath: string): Promise<void> {
  const launch = parseLaunch(readFileSync(launchPath, 'utf8'), launchPath);
  const runtimeDir = dirname(launchPath);
  // The task runs in its own process group and session; signals meant for it must never end its supervisor,
  // and nor must the hang-up of a terminal the agent was started from.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
    process.on(signal, () => process.stderr.write(`shoal shim: ignored ${signal}\n`));
  }
  const stdoutFile = openLog(join(launch.logDir, stdoutLogFileName), launch.logRotation, 'stdout');
  const stderrFile = openLog(join(launch.logDir, stderrLogFileName), launch.logRotation, 'stderr');

  const procsFiles = launch.cgroup?.procsFiles ?? [];
  const isolation = launch.isolation ?? null;
  const [command, commandArgs] =
    isolation === null
      ? [launch.command, launch.args]
      : isolatedCommand(isolation, launch.command, launch.args);
  const [file, argv] =
    procsFiles.length === 0
      ? [command, commandArgs]
      : [
          '/bin/sh',
          ['-c', cgroupJoinScript, 'shoal-cgroup-join', ...procsFiles, '--', command, ...commandArgs],
        ];
  const child = spawn(file, argv, {
    cwd: launch.cwd,
    env: launch.env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', reject);
    });
  } catch (error) {
    writeExit(runtimeDir, {
      exitCode: null,
      signal: null,
      oomKilled: false,
      startError: startErrorReason(launch.command, error),
      finishedAtMs: Date.now(),
    });
    stdoutFile.end();
    stderrFile.end();
    return;
  }
  const pid = child.pid;
  if (pid === undefined) throw new Error('a spawned task has no pid');
  // From here on the task runs. A shim that cannot go on (task.json or exit.json cannot be written: a full
  // disk) must not leave it behind: nobody could find it (its pid may be unrecorded), stop it, or learn how
  // it ended, and the cluster, told its status is unknown, runs it again elsewhere — twice at once.
  fatalCleanup = () => signalGroup(pid, 'SIGKILL');
  const identity = identify(pid);
  writeFileAtomic(
    join(runtimeDir, taskFileName),
    JSON.stringify({ ...identity, startedAtMs: Date.now() } satisfies TaskRecord),
  );
  child.on('error', (error) =>
    process.stderr.write(`shoal shim: task process error: ${errorMessage(error)}\n`),
  );

  // Each file ends when its pipe closes: when the last process holding the pipe is gone.
  const copied = Promise.all([copyOutput(child.stdout, stdoutFile), copyOutput(child.stderr, stderrFile)]);
  const leaseWatch = launch.lease ? watchLease(launch.lease, pid) : null;
  const ended = await exited;
  const { code, signal } = isolation === null ? ended : isolatedExit(ended.code, ended.signal);
  const leaseExpired = leaseWatch?.stop() ?? false;
  // What the leader wrote just before it exited is still in the pipes: let it reach the files first, so whoever
  // reads exit.json finds the output complete. Background children that keep the pipes open cut this short.
  await Promise.race([copied, sleep(exitDrainMsMax)]);
  const oomFile = launch.cgroup?.oomFile ?? null;
  const oomKills = oomFile === null ? null : await readOomKills(oomFile);
  writeExit(runtimeDir, {
    exitCode: code,
    signal,
    oomKilled: oomKills !== null && oomKills > 0 && code !== 0,
    startError:
      code === cgroupJoinFailedExitCode && (procsFiles.length > 0 || isolation !== null)
        ? await joinFailure(launch)
        : null,
    ...(leaseExpired ? { leaseExpired: true } : {}),
    finishedAtMs: Date.now(),
  });
  await copied;
}

/**
 * The shim looks at the lease file just after the lease would run out (its mtime plus the lease), not on a
 * fixed tick: an agent renews it every second, so one look per lease period is enough, and a hundred idle
 * tasks do not cost their node several percent of a core in stat calls. Looks are at most this far apart
 * (a file time in the future, a clock that moved), and at least leaseCheckDelayMsMin.
 */
const leaseCheckDelayMsMax = 10_000;
const leaseCheckDelayMsMin = 20;

/**
 * Enforces the node's task lease on the task even when no agent is alive to do it (SIGKILLed, frozen):
 * once the lease file's time is older than the lease, the whole process group is killed at once. A file
 * that cannot be read counts as never renewed since the last good read.
 */
export function watchLease(
  lease: { file: string; durationMs: number },
  groupId: number,
): { stop: () => boolean } {
  // The file's time, not the shim's start: the lease runs from the agent's last confirmed renewal, and
  // the leader may replace the task 1 s after it ends. Only a missing file starts the count now.
  let confirmedMs: number;
  try {
    confirmedMs = statSync(lease.file).mtimeMs;
  } catch {
    confirmedMs = Date.now();
  }
  let expired = false;
  let timer: NodeJS.Timeout | null = null;
  const check = (): void => {
    try {
      confirmedMs = Math.max(confirmedMs, statSync(lease.file).mtimeMs);
    } catch {
      // Keep the last time we saw.
    }
    const leftMs = confirmedMs + lease.durationMs - Date.now();
    if (leftMs >= 0) {
      // Just past the moment the lease would end if it is not renewed meanwhile.
      const delayMs = Math.min(leaseCheckDelayMsMax, Math.max(leaseCheckDelayMsMin, leftMs + 1));
      timer = setTimeout(check, delayMs);
      return;
    }
    expired = true;
    timer = null;
    process.stderr.write(
      `${new Date().toISOString()} shoal shim: the node's lease ran out (last confirmed ${new Date(confirmedMs).toISOString()}); killing the task\n`,
    );
    signalGroup(groupId, 'SIGKILL');
  };
  check();
  return {
    stop: () => {
      if (timer !== null) clearTimeout(timer);
      timer = null;
      return expired;
    },
  };
}

/** A task's log file, whose write errors are reported once in the shim's log (copyOutput then drops output). */
function openLog(path: string, rotation: LogRotation, name: string): RotatingLogFile {
  const file = new RotatingLogFile(path, rotation);
  file.once('error', (error) => {
    process.stderr.write(
      `shoal shim: cannot write the task's ${name} (${errorMessage(error)}); dropping it\n`,
    );
  });
  return file;
}

/**
 * Copies a pipe into its log file until the pipe closes. If the file cannot be written (disk full, directory
 * removed), the rest is read and dropped: a pipe nobody reads would block the task, and one with no reader at
 * all would kill it with SIGPIPE.
 */
function copyOutput(source: Readable, file: RotatingLogFile): Promise<void> {
  const sourceClosed = new Promise<void>((resolve) => source.once('close', () => resolve()));
  const fileClosed = file.closed
    ? Promise.resolve()
    : new Promise<void>((resolve) => file.once('close', () => resolve()));
  const drop = (): void => {
    source.unpipe(file);
    source.resume();
  };
  if (file.destroyed) drop();
  else {
    file.once('error', drop);
    source.pipe(file);
  }
  return Promise.all([sourceClosed, fileClosed]).then(() => undefined);
}

/** The join wrapper or isolation's setup printed why on the task's stderr; 125 from the task itself is just an exit code. */
async function joinFailure(launch: ShimLaunch): Promise<string | null> {
  const { stderr } = await readTaskLogs(launch.logDir, { tailBytes: 4096 }).catch(() => ({
    stderr: Buffer.alloc(0),
  }));
  const line = stderr
    .toString('utf8')
    .split('\n')
    .findLast(
      (text) => text.startsWith('shoal: cannot join cgroup') || text.startsWith(isolationFailurePrefix),
    );
  return line === undefined ? null : line.replace(/^shoal: /, '');
}

function writeExit(runtimeDir: string, record: ExitRecord): void {
  writeFileAtomic(join(runtimeDir, exitFileName), JSON.stringify(record));
}

function startErrorReason(command: string, error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return `command not found: ${command}`;
  if (code === 'EACCES') return `command not executable (permission denied): ${command}`;
  return `could not start ${command}: ${errorMessage(error)}`;
}

export function parseLaunch(text: string, path: string): ShimLaunch {
  const value: unknown = JSON.parse(text);
  const launch = value as Partial<ShimLaunch> | null;
  const ok =
    launch !== null &&
    typeof launch === 'object' &&
    typeof launch.taskId === 'string' &&
    typeof launch.command === 'string' &&
    Array.isArray(launch.args) &&
    typeof launch.env === 'object' &&
    typeof launch.cwd === 'string' &&
    typeof launch.logDir === 'string' &&
    typeof launch.logRotation === 'object' &&
    (launch.cgroup === null ||
      (typeof launch.cgroup === 'object' && Array.isArray(launch.cgroup.procsFiles)));
  if (!ok) throw new ShoalError('CORRUPT_DATA', `${path} is not a shim launch file`);
  return launch as ShimLaunch;
}

/** Reads task.json or exit.json; null while it does not exist (or is from a writer that died mid-rename). */
export async function readRuntimeRecord<T>(runtimeDir: string, fileName: string): Promise<T | null> {
  let text: string;
  try {
    text = await readFile(join(runtimeDir, fileName), 'utf8');
  } catch {
    return null;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    return null;
  }
}

/** The last non-empty line of the shim's own log, to explain a shim that died. */
export async function lastShimLogLine(runtimeDir: string): Promise<string | null> {
  const text = await readFile(join(runtimeDir, shimLogFileName), 'utf8').catch(() => '');
  const line = text
    .split('\n')
    .map((entry) => entry.trim())
    .findLast((entry) => entry !== '');
  return line ?? null;
}

/** Removes the runtime directory: the launch file holds the task's environment, which must not linger. */
export async function removeRuntimeDir(runtimeDir: string): Promise<void> {
  await rm(runtimeDir, { recursive: true, force: true });
}
