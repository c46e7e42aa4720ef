/**
 * The agent: runs on every node and brings what runs here in line with what the log assigns here.
 * Reconciliation is idempotent: it can run any number of times, after a lost message, a new leader or an
 * agent restart, and it converges. Handles of running tasks are kept in the data dir so a restarted agent
 * re-attaches instead of starting anything twice.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  isTerminal,
  taskEventsPerCommandMax,
  type Task,
  type TaskDriver,
  type TaskEventRecord,
  type TaskHealth,
  type TaskState,
  portNames,
} from '../cluster/index.ts';
import { ShoalError, errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { DiskMonitor } from './disk.ts';
import type { Driver, ExitResult, StartRequest, TaskEvent, TaskHandle } from './drivers/index.ts';
import { HealthMonitor } from './health.ts';
import { innerPort, taskDeviceFiles, taskEnvironment, type TaskNode } from './task-env.ts';
import { writeFileAtomic } from '../shared/files.ts';

export const handlesFileName = 'handles.json';
/** How long a task gets to stop after SIGTERM before SIGKILL. */
export const stopGraceMsDefault = 10_000;
/**
 * Grace for tasks stopped because the lease ran out: the leader may place them elsewhere once the lease
 * is over by replaceGraceMs (1 s, in src/node/lease.ts), so they must be gone well before that.
 */
export const leaseStopGraceMs = 500;
/**
 * A task's events go to the log at most this often: pull progress can come many times a second, and every
 * batch is a replicated command. Lines in between are coalesced (the newest progress line wins).
 */
export const eventsFlushIntervalMs = 2000;
/**
 * Garbage collection keeps the directory (the logs) of a task that ended this long after it ended, so `shoal
 * logs` still answers; a task the cluster has forgotten loses its directory once the directory is this old.
 */
export const taskDirRetentionMsDefault = 24 * 60 * 60_000;
/** What one garbage collection pass looks at, at most: a bound on its work after a long outage. */
export const garbageTasksPerPassMax = 1000;

/** What a garbage collection pass did, for logs and tests. */
export interface GarbageReport {
  /** Tasks whose leftovers (processes, cgroups, containers) were freed. */
  readonly collected: string[];
  /** Tasks whose directories were removed. */
  readonly removedDirs: string[];
}

/** Events an agent wants on a task's record in the replicated state. */
export interface TaskEventsBatch {
  readonly taskId: string;
  readonly attempt: number;
  readonly events: readonly TaskEventRecord[];
}

export interface TaskReport {
  readonly taskId: string;
  /** Which run of the task the report is about. */
  readonly attempt: number;
  readonly state: TaskState;
  readonly exitCode: number | null;
  readonly reason: string | null;
}

/** A task's health as its checks judge it, for the task's record in the replicated state. */
export interface TaskHealthReport {
  readonly taskId: string;
  readonly attempt: number;
  readonly health: TaskHealth;
}

export interface AgentInit {
  readonly nodeId: string;
  /** The node's name and the address tasks' ports are published on (SHOAL_ADDR_*, health checks). */
  readonly node?: TaskNode;
  /** Sends a task's health to its record; rejects if it could not be committed (it is sent again). */
  readonly reportHealth?: (report: TaskHealthReport) => Promise<void>;
  readonly dataDir: string;
  readonly drivers: ReadonlyMap<TaskDriver, Driver>;
  readonly logger: Logger;
  /** The tasks the replicated state assigns to this node (non-terminal), and any task by id. */
  readonly assignedTasks: () => Task[];
  readonly task: (id: string) => Task | undefined;
  /** Sends a state change to the leader; rejects if it could not be committed (it is retried). */
  readonly report: (report: TaskReport) => Promise<void>;
  /**
   * True when this node has not confirmed contact with a leader for its lease period: the cluster may
   * already have placed its tasks elsewhere, so they must stop here (no task runs on two nodes at once).
   */
  readonly leaseExpired: () => boolean;
  /** The reason given for tasks stopped because the lease ran out. */
  readonly leaseReason: string;
  /** Passed to drivers, so a task is stopped when the lease runs out even if this agent is not alive. */
  readonly lease: { readonly file: string; readonly durationMs: number };
  /** Sends events to the task's record; rejects if they could not be committed (they are then dropped). */
  readonly recordEvents?: (batch: TaskEventsBatch) => Promise<void>;
  /** How often task directories are measured against their disk requests; see diskCheckIntervalMsDefault. */
  readonly diskCheckIntervalMs?: number;
  /** The clock events are stamped with; Date.now by default (tests inject one). */
  readonly nowMs?: () => number;
  /** See taskDirRetentionMsDefault. */
  readonly taskDirRetentionMs?: number;
}

interface LocalTask {
  readonly taskId: string;
  readonly attempt: number;
  handle: TaskHandle | null;
  /** Set once the task has exited (or failed to start). */
  exit: ExitResult | null;
  stopping: boolean;
  /** Stopped because the node lost contact with the cluster: reported as lost, not as its exit. */
  leaseStopped: boolean;
  /** What we last got committed, so reports are not repeated. */
  reported: TaskState | null;
  reporting: boolean;
  /** Events not yet sent; `progress` marks a line a newer progress line may replace. */
  events: { event: TaskEventRecord; progress: boolean }[];
  eventsFlushedMs: number;
  eventsTimer: NodeJS.Timeout | null;
  /** Its checks are being run. */
  healthWatched: boolean;
  /** What its checks say now, and whether that is on its way to the log. */
  health: TaskHealth | null;
  healthReporting: boolean;
  /**
   * Stopped by this agent as failed, with this reason: its checks failed restartAfterFailures times, or it
   * used more disk than it asked for.
   */
  failureReason: string | null;
  /** Its directory's usage is being measured against its disk request. */
  diskWatched: boolean;
}

export class Agent {
  private readonly init: AgentInit;
  private readonly local = new Map<string, LocalTask>();
  private timer: NodeJS.Timeout | null = null;
  private scheduled = false;
  private running = false;
  /** A save of handles.json failed (full disk): retried on every reconcile. */
  private handlesUnsaved = false;
  private readonly health: HealthMonitor;
  private readonly disk: DiskMonitor;
  private readonly handlesPath: string;

  constructor(init: AgentInit) {
    this.init = init;
    const runtimeDir = join(init.dataDir, 'runtime');
    mkdirSync(runtimeDir, { recursive: true });
    mkdirSync(join(init.dataDir, 'tasks'), { recursive: true });
    this.handlesPath = join(runtimeDir, handlesFileName);
    this.health = new HealthMonitor({
      logger: init.logger.child('health'),
      ...(init.nowMs === undefined ? {} : { nowMs: init.nowMs }),
      onHealth: (taskId, attempt, health) => {
        const local = this.local.get(taskId);
        if (local?.attempt !== attempt) return;
        local.health = health;
        this.init.logger.info(health.status === 'healthy' ? 'task healthy' : 'task unhealthy', {
          task: taskId,
          ...(health.message === '' ? {} : { reason: health.message }),
        });
        this.schedule();
      },
      onRestart: (taskId, attempt, reason) => {
        const local = this.local.get(taskId);
        if (local?.attempt !== attempt || local.exit !== null) return;
        local.failureReason = reason;
        this.init.logger.warn('stopping an unhealthy task', { task: taskId, reason });
        this.stopTask(local);
      },
    });
    this.disk = this.createDiskMonitor();
  }

  private createDiskMonitor(): DiskMonitor {
    return new DiskMonitor({
      logger: this.init.logger.child('disk'),
      ...(this.init.diskCheckIntervalMs === undefined ? {} : { intervalMs: this.init.diskCheckIntervalMs }),
      onExceeded: (taskId, attempt, reason) => {
        const local = this.local.get(taskId);
        if (local?.attempt !== attempt || local.exit !== null) return;
        local.failureReason = reason;
        this.init.logger.warn('stopping a task over its disk request', { task: taskId, reason });
        this.stopTask(local);
      },
    });
  }

  taskDir(taskId: string): string {
    return join(this.init.dataDir, 'tasks', taskId);
  }

  /** Re-attaches to what an earlier agent process left running, then reconciles every second. */
  async start(): Promise<void> {
    for (const { attempt, handle } of this.loadHandles()) {
      const driver = this.init.drivers.get(handle.driver);
      const local: LocalTask = {
        taskId: handle.taskId,
        attempt,
        handle,
        exit: null,
        stopping: false,
        leaseStopped: false,
        reported: null,
        reporting: false,
        events: [],
        eventsFlushedMs: 0,
        eventsTimer: null,
        healthWatched: false,
        health: null,
        healthReporting: false,
        failureReason: null,
        diskWatched: false,
      };
      this.local.set(handle.taskId, local);
      let alive = false;
      try {
        alive = driver !== undefined && (await driver.recover(handle));
      } catch (error) {
        this.init.logger.warn('could not re-attach to a task', {
          task: handle.taskId,
          error: errorMessage(error),
        });
      }
      if (alive && driver) {
        this.init.logger.info('re-attached to a running task', { task: handle.taskId });
        this.watch(driver, local);
      } else {
        local.exit = {
          exitCode: null,
          signal: null,
          oomKilled: false,
          succeeded: false,
          reason: 'exited while the agent was down',
        };
      }
    }
    this.timer = setInterval(() => this.schedule(), 1000);
    this.schedule();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.health.close();
    this.disk.close();
    for (const local of this.local.values()) {
      if (local.eventsTimer !== null) clearTimeout(local.eventsTimer);
      local.eventsTimer = null;
    }
  }

  /**
   * Stops every task running here and waits for them (a node that leaves must not leave tasks behind that
   * the cluster will place elsewhere). Used on graceful shutdown.
   */
  async stopAll(graceMs: number): Promise<void> {
    this.stop();
    const stops: Promise<void>[] = [];
    for (const local of this.local.values()) {
      const driver = local.handle ? this.init.drivers.get(local.handle.driver) : undefined;
      if (!driver || !local.handle || local.exit !== null) continue;
      stops.push(driver.stop(local.handle, { graceMs }).catch(() => undefined));
    }
    await Promise.all(stops);
  }

  /** Runs a reconciliation soon (coalesced); call whenever the replicated state changed. */
  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      if (this.running) {
        this.schedule();
        return;
      }
      this.running = true;
      try {
        this.reconcile();
      } finally {
        this.running = false;
      }
    });
  }

  private reconcile(): void {
    if (this.handlesUnsaved) this.saveHandles();
    if (this.init.leaseExpired()) {
      // Cut off from the leader for a whole lease: stop everything, start nothing, report when back.
      for (const local of this.local.values()) {
        // `--on-disconnect keep`: the user accepts it may run twice rather than stop.
        if (this.init.task(local.taskId)?.spec.onDisconnect === 'keep') continue;
        if (local.exit === null && local.handle !== null) {
          local.leaseStopped = true;
          this.stopTask(local, leaseStopGraceMs);
        }
      }
      return;
    }
    const assigned = new Map(this.init.assignedTasks().map((task) => [task.id, task]));
    const current = (taskId: string): Task | undefined => assigned.get(taskId) ?? this.init.task(taskId);
    // An earlier run of a task that has since been restarted is history once it has stopped.
    for (const local of [...this.local.values()]) {
      const task = current(local.taskId);
      if (task && task.attempt !== local.attempt) {
        if (local.exit === null) this.stopTask(local);
        else this.forget(local);
      }
    }
    for (const task of assigned.values()) {
      const local = this.local.get(task.id);
      if (local && local.attempt !== task.attempt) continue; // its earlier run is still stopping
      if (!local) {
        if (task.desired !== 'run') {
          const record = this.track(task.id, task.attempt);
          record.exit = failure('killed before it started');
        } else if (task.state === 'assigned') {
          this.startTask(task);
        } else {
          const record = this.track(task.id, task.attempt);
          record.exit = failure('the agent has no record of this task (its handle was lost)');
          this.sendReport(record, 'lost', null, record.exit.reason);
        }
        continue;
      }
      if (task.desired !== 'run' && local.exit === null) this.stopTask(local);
    }
    for (const local of this.local.values()) {
      const task = current(local.taskId);
      if (task && task.attempt !== local.attempt) continue;
      if (!task || isTerminal(task.state)) {
        // Replaced, lost or forgotten by the cluster while it ran here: it must not keep running.
        if (local.exit === null) {
          this.stopTask(local);
          continue;
        }
        this.forget(local);
        continue;
      }
      if (local.exit !== null) {
        const killed = task.desired !== 'run';
        if (local.leaseStopped && !killed) {
          this.sendReport(local, 'lost', null, this.init.leaseReason);
          continue;
        }
        this.unwatchHealth(local);
        const failedHere = local.failureReason !== null && !killed;
        const state: TaskState = killed
          ? 'killed'
          : failedHere
            ? 'failed'
            : local.exit.succeeded
              ? 'finished'
              : 'failed';
        const reason =
          killed && local.handle !== null
            ? 'killed by request'
            : failedHere
              ? (local.failureReason ?? 'failed')
              : local.exit.reason;
        this.sendReport(local, state, local.exit.exitCode, reason);
      } else if (local.handle !== null && task.state !== 'running') {
        // A limit the node could not enforce shows on the task, plainly.
        this.sendReport(local, 'running', null, local.handle.warnings?.join('; ') ?? null);
      } else if (local.handle !== null && task.state === 'running' && task.desired === 'run') {
        this.watchHealth(task, local);
        this.watchDisk(task, local);
        this.sendHealth(task, local);
      }
    }
  }

  /** Starts running a task's health checks once it runs here (once per attempt). */
  private watchHealth(task: Task, local: LocalTask): void {
    const handle = local.handle;
    const checks = task.spec.checks ?? [];
    if (local.healthWatched || handle === null || checks.length === 0) return;
    const driver = this.init.drivers.get(handle.driver);
    local.healthWatched = true;
    const taskDir = this.taskDir(task.id);
    const env = { ...task.spec.env, ...this.environment(task, taskDir) };
    this.health.watch({
      taskId: task.id,
      attempt: local.attempt,
      checks,
      host: this.init.node?.host ?? '127.0.0.1',
      hostPorts: task.hostPorts ?? {},
      startedAtMs: (this.init.nowMs ?? Date.now)(),
      exec: async (command, timeoutMs) => {
        if (driver?.execCheck === undefined)
          return {
            exitCode: null,
            output: `the ${handle.driver} driver cannot run exec checks`,
            timedOut: false,
          };
        return driver.execCheck(handle, { command, env, cwd: taskDir, timeoutMs });
      },
    });
  }

  private unwatchHealth(local: LocalTask): void {
    if (local.diskWatched) {
      local.diskWatched = false;
      this.disk.unwatch(local.taskId);
    }
    if (!local.healthWatched) return;
    local.healthWatched = false;
    this.health.unwatch(local.taskId);
  }

  /**
   * Measures its directory, and where else its driver says it writes, against its disk request once it runs
   * here (once per attempt).
   */
  private watchDisk(task: Task, local: LocalTask): void {
    const limitBytes = task.spec.diskBytes ?? 0;
    const handle = local.handle;
    if (local.diskWatched || handle === null || limitBytes <= 0) return;
    local.diskWatched = true;
    const watch = (otherDirs: readonly string[]): void => {
      // Unwatched meanwhile (it ended): nothing to measure.
      if (!local.diskWatched || local.handle !== handle) return;
      this.disk.watch({
        taskId: task.id,
        attempt: local.attempt,
        dir: this.taskDir(task.id),
        otherDirs,
        limitBytes,
      });
    };
    const driver = this.init.drivers.get(handle.driver);
    if (driver?.diskPaths === undefined) return watch([]);
    driver.diskPaths(handle).then(watch, (error: unknown) => {
      this.init.logger.warn('cannot tell where a task writes; its disk limit counts its directory only', {
        task: task.id,
        error: errorMessage(error),
      });
      watch([]);
    });
  }

  /** Sends what the checks say when the task's record says otherwise (and again, until it does). */
  private sendHealth(task: Task, local: LocalTask): void {
    const health = local.health;
    const report = this.init.reportHealth;
    if (health === null || report === undefined || local.healthReporting) return;
    if (task.health?.status === health.status && task.health.message === health.message) return;
    local.healthReporting = true;
    report({ taskId: local.taskId, attempt: local.attempt, health })
      .catch((error: unknown) =>
        this.init.logger.debug('health report failed; will retry', {
          task: local.taskId,
          error: errorMessage(error),
        }),
      )
      .finally(() => {
        local.healthReporting = false;
      });
  }

  /** The cluster's variables for a task here (task-env.ts). */
  private environment(task: Task, taskDir: string): Record<string, string> {
    return taskEnvironment(task, this.init.node ?? { name: this.init.nodeId, host: '127.0.0.1' }, taskDir);
  }

  /** The host ports a task holds here, for its driver. */
  private portsOf(task: Task): NonNullable<StartRequest['ports']> {
    const bindings = portNames(task.spec).flatMap((name) => {
      const hostPort = task.hostPorts?.[name];
      const inner = innerPort(task, name);
      return hostPort === undefined || inner === undefined ? [] : [{ name, hostPort, innerPort: inner }];
    });
    return { host: this.init.node?.host ?? '127.0.0.1', bindings };
  }

  private track(taskId: string, attempt: number): LocalTask {
    const local: LocalTask = {
      taskId,
      attempt,
      handle: null,
      exit: null,
      stopping: false,
      leaseStopped: false,
      reported: null,
      reporting: false,
      events: [],
      eventsFlushedMs: 0,
      eventsTimer: null,
      healthWatched: false,
      health: null,
      healthReporting: false,
      failureReason: null,
      diskWatched: false,
    };
    this.local.set(taskId, local);
    return local;
  }

  private startTask(task: Task): void {
    const local = this.track(task.id, task.attempt);
    const driver = this.init.drivers.get(task.spec.driver);
    if (!driver) {
      local.exit = failure(`the ${task.spec.driver} driver is not available on this node`);
      this.schedule();
      return;
    }
    const taskDir = this.taskDir(task.id);
    mkdirSync(taskDir, { recursive: true });
    this.init.logger.info('starting task', { task: task.id, name: task.spec.name, driver: task.spec.driver });
    driver
      .start({
        taskId: task.id,
        spec: task.spec,
        taskDir,
        env: this.environment(task, taskDir),
        ...(task.hostPorts === undefined ? {} : { ports: this.portsOf(task) }),
        ...(task.deviceSlots === undefined
          ? {}
          : {
              devices: taskDeviceFiles(task, this.init.node ?? { name: this.init.nodeId, host: '127.0.0.1' }),
            }),
        ...(task.spec.onDisconnect === 'keep' ? {} : { lease: this.init.lease }),
        onEvent: (event) => {
          this.init.logger.info(event.message, { task: task.id, event: event.type });
          this.addEvent(local, event);
        },
      })
      .then((handle) => {
        for (const warning of handle.warnings ?? []) {
          this.init.logger.warn('task limit not enforced', { task: task.id, warning });
        }
        local.handle = handle;
        this.saveHandles();
        this.watch(driver, local);
      })
      .catch((error: unknown) => {
        local.exit = failure(
          error instanceof ShoalError ? error.message : `start failed: ${errorMessage(error)}`,
        );
        this.init.logger.warn('task failed to start', { task: task.id, reason: local.exit.reason });
      })
      .finally(() => this.schedule());
  }

  private watch(driver: Driver, local: LocalTask): void {
    const handle = local.handle;
    if (!handle) return;
    driver
      .wait(handle)
      .then((exit) => {
        local.exit = exit;
      })
      .catch((error: unknown) => {
        local.exit = failure(`lost track of the task: ${errorMessage(error)}`);
      })
      .finally(() => {
        this.init.logger.info('task exited', { task: local.taskId, reason: local.exit?.reason });
        this.schedule();
      });
  }

  private stopTask(local: LocalTask, graceMs = stopGraceMsDefault): void {
    if (local.stopping || local.handle === null) return;
    const driver = this.init.drivers.get(local.handle.driver);
    if (!driver) return;
    local.stopping = true;
    this.init.logger.info('stopping task', { task: local.taskId });
    driver
      .stop(local.handle, { graceMs })
      .catch((error: unknown) =>
        this.init.logger.warn('stop failed', { task: local.taskId, error: errorMessage(error) }),
      )
      .finally(() => {
        local.stopping = false;
        this.schedule();
      });
  }

  /**
   * Frees what tasks the log no longer assigns here left behind: containers and processes (with their cgroups)
   * of tasks that are unknown, ended, or placed elsewhere, which a failed destroy or lost handles left; and
   * directories of tasks that ended long ago or that the cluster forgot. Never touches a task the log assigns
   * here or one this agent still tracks. The caller must make sure the replicated state is current first (a
   * state still replaying the log would make live tasks look unknown). Only available drivers are asked
   * (default: all), and about a task the state still knows only the driver that ran it: an engine that is
   * not there is no error for an exec task.
   */
  async collectGarbage(
    options: { readonly available?: ReadonlySet<TaskDriver> } = {},
  ): Promise<GarbageReport> {
    const nowMs = (this.init.nowMs ?? Date.now)();
    const retentionMs = this.init.taskDirRetentionMs ?? taskDirRetentionMsDefault;
    const live = new Set(this.init.assignedTasks().map((task) => task.id));
    const protectedTask = (taskId: string): boolean => {
      if (live.has(taskId) || this.local.has(taskId)) return true;
      const task = this.init.task(taskId);
      return task !== undefined && !isTerminal(task.state) && task.nodeId === this.init.nodeId;
    };
    const tasksDir = join(this.init.dataDir, 'tasks');
    const dirs = new Set(await readdir(tasksDir).catch(() => [] as string[]));
    const candidates = new Set([...dirs].filter((id) => !protectedTask(id)));
    const drivers = [...this.init.drivers.values()].filter(
      (driver) => options.available === undefined || options.available.has(driver.name),
    );
    for (const driver of drivers) {
      try {
        for (const id of (await driver.leftovers?.()) ?? []) if (!protectedTask(id)) candidates.add(id);
      } catch (error) {
        this.init.logger.debug('cannot list leftovers', { driver: driver.name, error: errorMessage(error) });
      }
    }
    const report: GarbageReport = { collected: [], removedDirs: [] };
    for (const taskId of [...candidates].slice(0, garbageTasksPerPassMax)) {
      // Checked again: the task may have been assigned here while this pass awaited.
      if (protectedTask(taskId)) continue;
      const taskDir = this.taskDir(taskId);
      let freed = false;
      const ranBy = this.init.task(taskId)?.spec.driver;
      // Its driver is away (an engine down): keep the directory until that driver can be asked too.
      let failed = ranBy !== undefined && !drivers.some((driver) => driver.name === ranBy);
      for (const driver of drivers) {
        if (ranBy !== undefined && driver.name !== ranBy) continue;
        try {
          if ((await driver.collect?.({ taskId, taskDir })) === true) freed = true;
        } catch (error) {
          failed = true;
          this.init.logger.warn('garbage collection failed', { task: taskId, error: errorMessage(error) });
        }
      }
      if (freed) report.collected.push(taskId);
      if (failed || !dirs.has(taskId) || protectedTask(taskId)) continue;
      const task = this.init.task(taskId);
      const endedMs =
        task === undefined ? (await stat(taskDir).catch(() => null))?.mtimeMs : task.updatedAtMs;
      if (endedMs === undefined || nowMs - endedMs < retentionMs) continue;
      if (task !== undefined && !isTerminal(task.state)) continue; // lives elsewhere: its logs here may still be asked for
      await rm(taskDir, { recursive: true, force: true });
      report.removedDirs.push(taskId);
    }
    return report;
  }

  /** Queues a driver's event for the task's record, sent at most every eventsFlushIntervalMs. */
  private addEvent(local: LocalTask, event: TaskEvent): void {
    if (!this.init.recordEvents) return;
    // A pull's per-layer byte counts are progress; its first line ("pulling image x") and the rest are not.
    const progress = event.type === 'image:pull' && !event.message.startsWith('pulling image');
    const record = { atMs: (this.init.nowMs ?? Date.now)(), message: event.message };
    const last = local.events.at(-1);
    if (progress && last?.progress === true)
      local.events[local.events.length - 1] = { event: record, progress };
    else local.events.push({ event: record, progress });
    // Bounded even if the log is unreachable for long: the oldest unsent lines go first.
    if (local.events.length > taskEventsPerCommandMax) local.events.splice(0, 1);
    if (local.eventsTimer !== null) return;
    const waitMs = local.eventsFlushedMs + eventsFlushIntervalMs - (this.init.nowMs ?? Date.now)();
    if (waitMs <= 0) {
      this.flushEvents(local);
      return;
    }
    local.eventsTimer = setTimeout(() => {
      local.eventsTimer = null;
      this.flushEvents(local);
    }, waitMs);
  }

  /** Sends what is queued now (before a state report, so the record reads in order). */
  private flushEvents(local: LocalTask): void {
    if (local.eventsTimer !== null) {
      clearTimeout(local.eventsTimer);
      local.eventsTimer = null;
    }
    if (local.events.length === 0 || !this.init.recordEvents) return;
    const events = local.events.map((queued) => queued.event);
    local.events = [];
    local.eventsFlushedMs = (this.init.nowMs ?? Date.now)();
    this.init.recordEvents({ taskId: local.taskId, attempt: local.attempt, events }).catch((error: unknown) =>
      // Events explain; they are not state. One lost batch is not worth a retry queue.
      this.init.logger.debug('task events not recorded', { task: local.taskId, error: errorMessage(error) }),
    );
  }

  private forget(local: LocalTask): void {
    this.unwatchHealth(local);
    this.flushEvents(local);
    this.local.delete(local.taskId);
    this.saveHandles();
    if (local.handle) {
      const driver = this.init.drivers.get(local.handle.driver);
      void driver
        ?.destroy(local.handle)
        .catch((error: unknown) =>
          this.init.logger.warn('destroy failed', { task: local.taskId, error: errorMessage(error) }),
        );
    }
  }

  private sendReport(
    local: LocalTask,
    state: TaskState,
    exitCode: number | null,
    reason: string | null,
  ): void {
    if (local.reporting || local.reported === state) return;
    this.flushEvents(local);
    local.reporting = true;
    this.init
      .report({ taskId: local.taskId, attempt: local.attempt, state, exitCode, reason })
      .then(() => {
        local.reported = state;
      })
      .catch((error: unknown) => {
        this.init.logger.debug('report failed; will retry', {
          task: local.taskId,
          state,
          error: errorMessage(error),
        });
      })
      .finally(() => {
        local.reporting = false;
        if (isTerminal(state) && local.reported === state) this.schedule();
      });
  }

  private loadHandles(): SavedHandle[] {
    if (!existsSync(this.handlesPath)) return [];
    try {
      const parsed = JSON.parse(readFileSync(this.handlesPath, 'utf8')) as { tasks: SavedHandle[] };
      return parsed.tasks;
    } catch (error) {
      throw new ShoalError(
        'CORRUPT_DATA',
        `${this.handlesPath} is not valid JSON (${errorMessage(error)}); fix or remove it`,
      );
    }
  }

  /**
   * Saves every handle, so a restarted agent re-attaches. A write that fails (a full disk) is logged and
   * retried on every reconcile until it succeeds; the old file stays whole meanwhile (atomic rename).
   */
  private saveHandles(): void {
    const tasks: SavedHandle[] = [...this.local.values()].flatMap((local) =>
      local.handle ? [{ attempt: local.attempt, handle: local.handle }] : [],
    );
    try {
      // Not flushed to disk: it guards against the agent dying, and the page cache outlives the agent. A
      // machine that loses power loses the tasks with it, and an older list then only reports as lost
      // what is lost anyway. A flush here cost each task start ~14 ms (two per task, bench:start).
      writeFileAtomic(this.handlesPath, JSON.stringify({ tasks }), { durable: false });
      if (this.handlesUnsaved) this.init.logger.info('task handles saved again');
      this.handlesUnsaved = false;
    } catch (error) {
      if (!this.handlesUnsaved) {
        this.init.logger.warn('cannot save task handles; retrying', { error: errorMessage(error) });
      }
      this.handlesUnsaved = true;
    }
  }
}

/** What handles.json keeps per running task. */
interface SavedHandle {
  readonly attempt: number;
  readonly handle: TaskHandle;
}

function failure(reason: string): ExitResult {
  return { exitCode: null, signal: null, oomKilled: false, succeeded: false, reason };
}
