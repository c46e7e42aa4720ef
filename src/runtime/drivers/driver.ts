/**
 * The driver contract: how the agent starts, watches, stops and re-attaches to tasks, whatever runs them.
 * After Nomad's plugins/drivers: the handle carries opaque, JSON-serialisable driver state so an agent that
 * restarts can find its tasks again. Every driver passes the same compliance suite (test/drivers/compliance.ts).
 */
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { TaskDriver, TaskSpec } from '../../cluster/task.ts';
import { ShoalError } from '../../shared/index.ts';

export interface TaskHandle {
  readonly taskId: string;
  readonly driver: TaskDriver;
  /** JSON-serialisable driver state so a restarted agent can re-attach (pid, containerId…) */
  readonly state: Readonly<Record<string, string | number | boolean | null>>;
}

export interface ExitResult {
  exitCode: number | null;
  signal: string | null;
  oomKilled: boolean;
  /** one-line human reason: "exit code 3", "killed by SIGKILL", "OOM-killed", "command not found: foo", "image not found: x" */
  reason: string;
  /** true when the task ran to a normal exit with code 0 */
  succeeded: boolean;
}

export interface DriverHealth {
  healthy: boolean;
  detail: string;
}

export interface StartRequest {
  taskId: string;
  spec: TaskSpec;
  /** directory owned by this task: stdout.log and stderr.log live here */
  taskDir: string;
}

export interface Driver {
  readonly name: TaskDriver;
  health(): Promise<DriverHealth>;
  /** Starts the task. Rejects with ShoalError for things that make the start impossible (command not found, image not found, engine down), with a reason a user can read. */
  start(request: StartRequest): Promise<TaskHandle>;
  /** Resolves once when the task exits (can be called once per handle; also works on a recovered handle). */
  wait(handle: TaskHandle): Promise<ExitResult>;
  /** Sends `signal` (default SIGTERM), waits up to graceMs, then SIGKILL. Idempotent; fine if it already exited. */
  stop(handle: TaskHandle, options: { graceMs: number; signal?: NodeJS.Signals }): Promise<void>;
  /** Frees what the task held (container removal). Logs in taskDir stay. Idempotent. */
  destroy(handle: TaskHandle): Promise<void>;
  /** Re-attaches to a task started by an earlier agent process from its handle: returns false if it no longer runs (then wait() is not called). */
  recover(handle: TaskHandle): Promise<boolean>;
}

/** File names inside a task's taskDir. Every driver appends there, so logs outlive the agent and the container. */
export const stdoutLogFileName = 'stdout.log';
export const stderrLogFileName = 'stderr.log';

/**
 * How much of each log readTaskLogs returns when the caller names no limit: the tail a user usually wants,
 * and small enough to send in one API answer.
 */
export const logsLimitBytesDefault = 1024 * 1024;

export interface ReadTaskLogsOptions {
  /** Return at most the last tailBytes of each stream; defaults to logsLimitBytesDefault. */
  tailBytes?: number;
}

export interface TaskLogs {
  stdout: Buffer;
  stderr: Buffer;
}

/** Reads the tail of a task's stdout.log and stderr.log. A file not written yet reads as empty. */
export async function readTaskLogs(taskDir: string, options: ReadTaskLogsOptions = {}): Promise<TaskLogs> {
  const tailBytes = options.tailBytes ?? logsLimitBytesDefault;
  if (!Number.isSafeInteger(tailBytes) || tailBytes < 0) {
    throw new ShoalError('INVALID_ARGUMENT', `tailBytes must be a non-negative integer, got ${tailBytes}`);
  }
  const [stdout, stderr] = await Promise.all([
    readTail(join(taskDir, stdoutLogFileName), tailBytes),
    readTail(join(taskDir, stderrLogFileName), tailBytes),
  ]);
  return { stdout, stderr };
}

async function readTail(path: string, tailBytes: number): Promise<Buffer> {
  let file;
  try {
    file = await open(path, 'r');
  } catch (error) {
    if (isErrnoException(error) && error.code === 'ENOENT') return Buffer.alloc(0);
    throw error;
  }
  try {
    const sizeBytes = (await file.stat()).size;
    // A running task may still append: read the size once and return exactly that window.
    const lengthBytes = Math.min(sizeBytes, tailBytes);
    const buffer = Buffer.alloc(lengthBytes);
    let readBytes = 0;
    while (readBytes < lengthBytes) {
      const { bytesRead } = await file.read(
        buffer,
        readBytes,
        lengthBytes - readBytes,
        sizeBytes - lengthBytes + readBytes,
      );
      if (bytesRead === 0) break; // truncated under us: return what was there
      readBytes += bytesRead;
    }
    return buffer.subarray(0, readBytes);
  } finally {
    await file.close();
  }
}

/** Node's system errors carry a string `code` (ENOENT, ESRCH…). */
export function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string';
}

/** The driver a handle belongs to must be the one it is given to: mixing them up is a caller's mistake. */
export function checkHandleDriver(handle: TaskHandle, driver: TaskDriver): void {
  if (handle.driver !== driver) {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `task ${handle.taskId} was started by the ${handle.driver} driver, not ${driver}`,
    );
  }
}
