/**
 * The driver contract: how the agent starts, watches, stops and re-attaches to tasks, whatever runs them.
 * After Nomad's plugins/drivers: the handle carries opaque, JSON-serialisable driver state so an agent that
 * restarts can find its tasks again. Every driver passes the same compliance suite (test/drivers/compliance.ts).
 */
import type { TaskDriver, TaskSpec } from '../../cluster/index.ts';
import { ShoalError } from '../../shared/index.ts';

export interface TaskHandle {
  readonly taskId: string;
  readonly driver: TaskDriver;
  /** JSON-serialisable driver state so a restarted agent can re-attach (pid, containerId…) */
  readonly state: Readonly<Record<string, string | number | boolean | null>>;
  /**
   * Resource limits of the spec that the driver could not enforce, one line each, e.g. "memory limit not
   * enforced: no memory cgroup controller on this node (…)". Absent when every limit holds. The task runs
   * anyway; show these with the task (its events, and its reason in `shoal ps`).
   */
  readonly warnings?: readonly string[];
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
  /** docker: whether the engine has a usable bridge network (tasks on the bridge go only where it does). */
  bridge?: boolean;
}

/** A named port of a task: the host port it holds, and the port to publish it to inside (docker bridge). */
export interface PortBinding {
  readonly name: string;
  readonly hostPort: number;
  readonly innerPort: number;
}

/**
 * Something worth showing a user while a task starts:
 * - image:pull — a line of the engine's pull progress ("pulling image x", "a3ed95caeb02: Downloading 1.2 MB / 2.0 MB");
 * - image:pulled — the image is now on the node;
 * - limit:unenforced — a limit the node cannot enforce (the same lines as TaskHandle.warnings);
 * - isolation — who the task runs as and in what ("runs as nobody (uid 65534) in namespaces of its own…").
 */
export type TaskEventType = 'image:pull' | 'image:pulled' | 'limit:unenforced' | 'isolation';

export interface TaskEvent {
  type: TaskEventType;
  /** One line for a human. */
  message: string;
}

export interface StartRequest {
  taskId: string;
  spec: TaskSpec;
  /** directory owned by this task: stdout.log and stderr.log live here */
  taskDir: string;
  /** The cluster's variables for the task (SHOAL_TASK_ID, SHOAL_PORT_HTTP…); they override the spec's env. */
  env?: Readonly<Record<string, string>>;
  /**
   * The host ports the task holds and the node address they are published on. docker on the bridge
   * publishes each hostPort on host to innerPort in the container; exec and docker host networking bind
   * the host ports themselves. Absent: no ports.
   */
  ports?: { readonly host: string; readonly bindings: readonly PortBinding[] };
  /**
   * Receives progress while start() runs, never after it settles. Called synchronously from the driver: keep it
   * quick; what it throws is logged and otherwise ignored. Pull progress comes at most about once a second per
   * image layer.
   */
  onEvent?: (event: TaskEvent) => void;
  /**
   * The device files the task holds (its slots of the node's --device files): an isolated exec task may
   * open only these besides the usual /dev/null and the like; a docker task gets them in its container.
   */
  devices?: readonly { readonly kind: string; readonly path: string }[];
  /**
   * The node's task lease: the file whose modification time is when the node last confirmed contact with
   * a leader. A driver whose tasks outlive the agent (exec, through its shim) kills the task once that time
   * is older than durationMs, since the cluster may then run it elsewhere. Absent: the task is kept.
   */
  lease?: { readonly file: string; readonly durationMs: number };
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
  /** Frees what the task held (container, cgroups, processes left behind). Logs in taskDir stay. Idempotent. */
  destroy(handle: TaskHandle): Promise<void>;
  /**
   * Re-attaches to a task started by an earlier agent process, from its handle. True when the driver can still
   * report on the task: it runs, or it ended while no agent watched and its exit status is known; wait() then
   * answers (at once for a task that already ended). False when nothing of it is left (destroyed, or never
   * started); then wait() is not called. Rejects with DRIVER_UNAVAILABLE when it cannot tell (engine down).
   */
  recover(handle: TaskHandle): Promise<boolean>;
  /**
   * Garbage collection: ids of the tasks this driver still holds something for on this node (containers,
   * stopped ones included; images the exec driver's store keeps for them), found without handles.
   */
  leftovers?(): Promise<string[]>;
  /**
   * Garbage collection: frees whatever a task left on this node when no handle for it is known (an agent that
   * lost its handles, a destroy that failed while the engine was down): kills its processes, removes its
   * cgroups or its container. Logs in taskDir stay. Idempotent. The agent calls it only for tasks the log no
   * longer assigns here. True when something was freed.
   */
  collect?(orphan: { taskId: string; taskDir: string }): Promise<boolean>;
  /**
   * Where the task's writes land outside its directory (a container's writable layer), for its disk limit.
   * Absent, or [], when they all land in its directory. Rejects with DRIVER_UNAVAILABLE when the engine is down.
   */
  diskPaths?(handle: TaskHandle): Promise<string[]>;
  /**
   * Runs a health check's command in the task's environment (inside its container for docker); never throws
   * for the command's own failure. exitCode is null when the command could not run (output says why) or was
   * killed; output is stdout and stderr together, its first 4 KiB. Rejects with DRIVER_UNAVAILABLE when the
   * driver's engine is down. Absent: the driver cannot run exec checks.
   */
  execCheck?(
    handle: TaskHandle,
    request: {
      readonly command: readonly string[];
      readonly env: Readonly<Record<string, string>>;
      /** On the host: the task's directory. The docker driver runs the command in the container's own. */
      readonly cwd: string;
      readonly timeoutMs: number;
    },
  ): Promise<{ readonly exitCode: number | null; readonly output: string; readonly timedOut: boolean }>;
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
