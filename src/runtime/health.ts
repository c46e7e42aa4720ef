/**
 * Health checks of running tasks, run by the agent of their node (after Nomad's service checks and Docker's
 * HEALTHCHECK): `http` (a GET on one of the task's host ports), `tcp` (a connection to one is accepted) and
 * `exec` (a command in the task's environment, through its driver's execCheck).
 *
 * Two parts. A pure tracker turns results into verdicts: a check's thresholds and grace period, the task's
 * verdict over all of its checks, and the one restart a failing check may ask for. It reads no clock, so its
 * rules are tested result by result. HealthMonitor is the shell around it: it runs each check on its timer,
 * bounds every run by the check's timeout, and reports each change of a task's verdict to the agent.
 */
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import type { HealthCheckSpec, TaskHealth } from '../cluster/index.ts';
import { assert, errorMessage, type Logger } from '../shared/index.ts';

/** An exec check's message quotes at most this much of the command's first line of output. */
export const checkOutputLineLengthMax = 120;
/**
 * How long a check's next run waits for its previous one, past its timeout, to be over. Drivers end an exec
 * check's command at its timeout, and http and tcp probes are cut at once; this bound only keeps a run that
 * never ends from stopping its check for good.
 */
const lateRunWaitMsMax = 30_000;

// ---------------------------------------------------------------------------------------------------------
// The tracker: pure.

/** What one check says so far: nothing yet (pending), or the verdict its last results in a row reached. */
export type CheckVerdict = 'pending' | 'healthy' | 'unhealthy';

/** The outcome of one run of a check; message is empty when it passed. */
export interface CheckResult {
  readonly ok: boolean;
  readonly message: string;
}

export interface CheckState {
  readonly verdict: CheckVerdict;
  readonly successesInRow: number;
  /** Failures in a row that counted: those within the grace period do not. */
  readonly failuresInRow: number;
  /** The message of the last failure that counted; empty before any. */
  readonly lastFailure: string;
}

/** The fields of a check that the tracker reads. */
export type CheckThresholds = Pick<
  HealthCheckSpec,
  'graceMs' | 'successesBeforeHealthy' | 'failuresBeforeUnhealthy'
>;

export function createCheckState(): CheckState {
  return { verdict: 'pending', successesInRow: 0, failuresInRow: 0, lastFailure: '' };
}

/**
 * The state after one more result. A failure within graceMs of startedAtMs is ignored altogether (it neither
 * counts nor breaks a run of passes): a task that is still starting up is not failing. The verdict turns
 * healthy after successesBeforeHealthy passes in a row, unhealthy after failuresBeforeUnhealthy failures.
 */
export function recordCheckResult(
  state: CheckState,
  check: CheckThresholds,
  result: CheckResult,
  atMs: number,
  startedAtMs: number,
): CheckState {
  if (result.ok) {
    const successesInRow = state.successesInRow + 1;
    const verdict = successesInRow >= check.successesBeforeHealthy ? 'healthy' : state.verdict;
    return { ...state, verdict, successesInRow, failuresInRow: 0 };
  }
  if (atMs < startedAtMs + check.graceMs) return state;
  const failuresInRow = state.failuresInRow + 1;
  const verdict = failuresInRow >= check.failuresBeforeUnhealthy ? 'unhealthy' : state.verdict;
  return { verdict, successesInRow: 0, failuresInRow, lastFailure: result.message };
}

/** A task's verdict from its checks' states. */
export interface TaskVerdict {
  readonly status: TaskHealth['status'];
  /** The first unhealthy check's last failure; empty when healthy. */
  readonly message: string;
}

/**
 * Healthy when every check is; unhealthy as soon as one is (the first of them gives the message); null
 * otherwise: some check has no verdict yet, and none is failing. No checks, no verdict.
 */
export function taskVerdict(states: readonly CheckState[]): TaskVerdict | null {
  const unhealthy = states.find((state) => state.verdict === 'unhealthy');
  if (unhealthy !== undefined) return { status: 'unhealthy', message: unhealthy.lastFailure };
  if (states.length > 0 && states.every((state) => state.verdict === 'healthy')) {
    return { status: 'healthy', message: '' };
  }
  return null;
}

/** What one result changed for its task. */
export interface HealthUpdate {
  /** The task's new verdict when this result changed it, else null. */
  readonly health: TaskHealth | null;
  /** Set once per tracker, when a check reached its restartAfterFailures: why the task is to be restarted. */
  readonly restart: string | null;
}

/**
 * The health of one attempt of a task: its checks' states, the verdict last reported, and whether a restart
 * was asked for. A new attempt gets a new tracker, so it may ask for its own restart.
 *
 * A task whose verdict was given keeps it while the checks have none (one recovered, another is still
 * pending): it changes only to the other verdict.
 */
export class TaskHealthTracker {
  private readonly checks: readonly HealthCheckSpec[];
  private readonly startedAtMs: number;
  private readonly states: CheckState[];
  private reported: TaskHealth | null = null;
  private restartAsked = false;

  constructor(checks: readonly HealthCheckSpec[], startedAtMs: number) {
    this.checks = checks;
    this.startedAtMs = startedAtMs;
    this.states = checks.map(() => createCheckState());
  }

  record(checkIndex: number, result: CheckResult, atMs: number): HealthUpdate {
    const check = this.checks[checkIndex];
    const state = this.states[checkIndex];
    assert(check !== undefined && state !== undefined, `no health check #${checkIndex}`);
    const next = recordCheckResult(state, check, result, atMs, this.startedAtMs);
    this.states[checkIndex] = next;
    let health: TaskHealth | null = null;
    const verdict = taskVerdict(this.states);
    if (verdict !== null && verdict.status !== this.reported?.status) {
      health = { status: verdict.status, sinceMs: atMs, message: verdict.message };
      this.reported = health;
    }
    let restart: string | null = null;
    const restartAfter = check.restartAfterFailures;
    if (!this.restartAsked && restartAfter !== undefined && next.failuresInRow >= restartAfter) {
      this.restartAsked = true;
      restart = `unhealthy: ${next.lastFailure} (${next.failuresInRow} failed checks in a row)`;
    }
    return { health, restart };
  }

  /** The verdict last reported; null before the first. */
  health(): TaskHealth | null {
    return this.reported;
  }

  checkStates(): readonly CheckState[] {
    return [...this.states];
  }
}

// ---------------------------------------------------------------------------------------------------------
// The monitor: runs the checks.

export interface HealthTarget {
  readonly taskId: string;
  readonly attempt: number;
  readonly checks: readonly HealthCheckSpec[];
  /** The address the task's host ports listen on (the node's IPv4 address). */
  readonly host: string;
  readonly hostPorts: Readonly<Record<string, number>>;
  /** When the task was seen running (grace counts from here). */
  readonly startedAtMs: number;
  /** Runs an exec check's command in the task's environment (the driver's execCheck, bound by the caller). */
  readonly exec: (
    command: readonly string[],
    timeoutMs: number,
  ) => Promise<{ exitCode: number | null; output: string; timedOut: boolean }>;
}

export interface HealthMonitorInit {
  /** Every change of the task's verdict (healthy ⇄ unhealthy), with the agent's clock. */
  readonly onHealth: (taskId: string, attempt: number, health: TaskHealth) => void;
  /** A check reached restartAfterFailures: the agent stops the task as failed with this reason (once per attempt). */
  readonly onRestart: (taskId: string, attempt: number, reason: string) => void;
  readonly logger: Logger;
  readonly nowMs?: () => number;
}

/** One watched attempt of a task. */
interface Watch {
  readonly target: HealthTarget;
  readonly tracker: TaskHealthTracker;
  /** Aborted by unwatch: pending timers are cleared, runs in flight are cut short and their results ignored. */
  readonly stopped: AbortController;
  readonly timers: Set<NodeJS.Timeout>;
}

/**
 * Runs the checks of the tasks it watches. Each check runs at once, then every intervalMs from the start of
 * its previous run, never two runs of one check at a time; a run that takes longer than timeoutMs fails.
 * Its timers do not keep the process alive.
 */
export class HealthMonitor {
  private readonly init: HealthMonitorInit;
  private readonly nowMs: () => number;
  private readonly watches = new Map<string, Watch>();
  private closed = false;

  constructor(init: HealthMonitorInit) {
    this.init = init;
    this.nowMs = init.nowMs ?? Date.now;
  }

  /** Starts checking the task, in place of any earlier watch of it (an earlier attempt's results are dropped). */
  watch(target: HealthTarget): void {
    this.unwatch(target.taskId);
    if (this.closed) {
      this.init.logger.debug('health monitor closed; task not watched', { taskId: target.taskId });
      return;
    }
    if (target.checks.length === 0) return;
    const watch: Watch = {
      target,
      tracker: new TaskHealthTracker(target.checks, target.startedAtMs),
      stopped: new AbortController(),
      timers: new Set(),
    };
    this.watches.set(target.taskId, watch);
    target.checks.forEach((_check, index) => this.run(watch, index));
  }

  unwatch(taskId: string): void {
    const watch = this.watches.get(taskId);
    if (watch === undefined) return;
    this.watches.delete(taskId);
    watch.stopped.abort();
    for (const timer of watch.timers) clearTimeout(timer);
    watch.timers.clear();
  }

  /** Stops every watch; later watch() calls are ignored. */
  close(): void {
    this.closed = true;
    for (const taskId of [...this.watches.keys()]) this.unwatch(taskId);
  }

  /** How many tasks are watched. */
  watching(): number {
    return this.watches.size;
  }

  /** One run of check #index, then the next one scheduled. */
  private run(watch: Watch, index: number): void {
    const check = watch.target.checks[index];
    assert(check !== undefined, `no health check #${index}`);
    const startedMs = performance.now();
    const { result, done } = runCheck(check, watch.target, watch.stopped.signal);
    void result.then((outcome) => {
      if (!this.active(watch)) return;
      this.record(watch, index, outcome);
      // A listener may have ended the watch (the agent stops the task it asked to restart).
      if (!this.active(watch)) return;
      const delayMs = Math.max(0, startedMs + check.intervalMs - performance.now());
      const timer = setTimeout(() => {
        watch.timers.delete(timer);
        // A run that timed out may still be going (an exec command its driver has not ended yet): the next
        // one waits for it rather than pile up beside it.
        void settleWithin(done, lateRunWaitMsMax).then(() => {
          if (this.active(watch)) this.run(watch, index);
        });
      }, delayMs);
      timer.unref();
      watch.timers.add(timer);
    });
  }

  /** False once the watch was ended or replaced: its results are then ignored. */
  private active(watch: Watch): boolean {
    return this.watches.get(watch.target.taskId) === watch;
  }

  private record(watch: Watch, index: number, result: CheckResult): void {
    const { taskId, attempt } = watch.target;
    const { health, restart } = watch.tracker.record(index, result, this.nowMs());
    if (health !== null) {
      if (health.status === 'healthy') this.init.logger.info('task healthy', { taskId, attempt });
      else this.init.logger.warn('task unhealthy', { taskId, attempt, message: health.message });
      this.callListener('onHealth', taskId, () => this.init.onHealth(taskId, attempt, health));
    }
    if (restart !== null) {
      this.init.logger.warn('restarting an unhealthy task', { taskId, attempt, reason: restart });
      this.callListener('onRestart', taskId, () => this.init.onRestart(taskId, attempt, restart));
    }
  }

  /** A listener that throws must not stop the checks: its error is logged. */
  private callListener(name: string, taskId: string, call: () => void): void {
    try {
      call();
    } catch (error) {
      this.init.logger.error(`health ${name} listener threw`, { taskId, error: errorMessage(error) });
    }
  }
}

/** One run of a check, bounded by its timeout and by `stopped`. Never rejects. */
/**
 * One run of a check. `result` comes within the check's timeout (a failure when the probe has not answered
 * by then), or earlier when `stopped` aborts; `done` when the probe itself is over. Neither rejects.
 */
function runCheck(
  check: HealthCheckSpec,
  target: HealthTarget,
  stopped: AbortSignal,
): { result: Promise<CheckResult>; done: Promise<void> } {
  const abort = new AbortController();
  const onStopped = (): void => abort.abort();
  stopped.addEventListener('abort', onStopped, { once: true });
  const probe = probeCheck(check, target, abort.signal).catch((error: unknown) =>
    fail(`${check.type} check failed: ${oneLine(errorMessage(error))}`),
  );
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CheckResult>((resolve) => {
    timer = setTimeout(() => resolve(fail(timeoutMessage(check, target))), check.timeoutMs);
    timer.unref();
  });
  const result = Promise.race([probe, timeout]).finally(() => {
    clearTimeout(timer);
    // Whatever is still open (a socket that got no answer) is closed now that the run has its result.
    abort.abort();
    stopped.removeEventListener('abort', onStopped);
  });
  return { result, done: probe.then(() => undefined) };
}

/** Waits for `promise` at most timeoutMs; the caller goes on either way. */
async function settleWithin(promise: Promise<void>, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
    timer.unref();
  });
  try {
    await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function probeCheck(check: HealthCheckSpec, target: HealthTarget, signal: AbortSignal): Promise<CheckResult> {
  switch (check.type) {
    case 'http':
    case 'tcp': {
      const port = check.port === undefined ? undefined : target.hostPorts[check.port];
      if (port === undefined) {
        return Promise.resolve(
          fail(
            check.port === undefined ? `a ${check.type} check needs a port` : `no port named ${check.port}`,
          ),
        );
      }
      return check.type === 'http'
        ? probeHttp(target.host, port, check.path ?? '/', check.expectStatus, signal)
        : probeTcp(target.host, port, signal);
    }
    case 'exec':
      return probeExec(check, target);
  }
}

/** Passes on expectStatus, or on any 2xx without one. Redirects are not followed. */
function probeHttp(
  host: string,
  port: number,
  path: string,
  expectStatus: number | undefined,
  signal: AbortSignal,
): Promise<CheckResult> {
  return new Promise((resolve) => {
    // No agent: a fresh connection each time, closed after, as a client arriving from elsewhere would make.
    const request = httpRequest(
      {
        host,
        port,
        path,
        method: 'GET',
        agent: false,
        signal,
        headers: { 'user-agent': 'shoal-health-check' },
      },
      (response) => {
        const status = response.statusCode ?? 0;
        // The body says nothing the status does not: the connection goes without reading it.
        request.destroy();
        const passed = expectStatus === undefined ? status >= 200 && status <= 299 : status === expectStatus;
        resolve(passed ? pass : fail(`GET ${path} returned ${status}`));
      },
    );
    request.on('error', (error) => resolve(fail(`GET ${path}: ${socketProblem(error)}`)));
    request.end();
  });
}

function probeTcp(host: string, port: number, signal: AbortSignal): Promise<CheckResult> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const onAbort = (): void => {
      socket.destroy();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const settle = (result: CheckResult): void => {
      signal.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(result);
    };
    socket.once('connect', () => settle(pass));
    socket.once('error', (error) => settle(fail(`tcp ${host}:${port}: ${socketProblem(error)}`)));
  });
}

async function probeExec(check: HealthCheckSpec, target: HealthTarget): Promise<CheckResult> {
  if (check.command === undefined) return fail('an exec check needs a command');
  const { exitCode, output, timedOut } = await target.exec(check.command, check.timeoutMs);
  if (timedOut) return fail(`exec check timed out after ${formatSeconds(check.timeoutMs)}`);
  if (exitCode === 0) return pass;
  const line = firstLine(output);
  const detail = line === '' ? '' : `: ${line}`;
  // null: it did not run (the output says why), or a signal ended it.
  return fail(exitCode === null ? `exec check failed${detail}` : `exec check exited ${exitCode}${detail}`);
}

const pass: CheckResult = { ok: true, message: '' };

function fail(message: string): CheckResult {
  return { ok: false, message };
}

function timeoutMessage(check: HealthCheckSpec, target: HealthTarget): string {
  const after = `timed out after ${formatSeconds(check.timeoutMs)}`;
  switch (check.type) {
    case 'http':
      return `GET ${check.path ?? '/'}: ${after}`;
    case 'tcp': {
      const port = check.port === undefined ? undefined : target.hostPorts[check.port];
      return `tcp ${target.host}:${port ?? check.port ?? '?'}: ${after}`;
    }
    case 'exec':
      return `exec check ${after}`;
  }
}

/** Socket errors as a few words: "connection refused" rather than "connect ECONNREFUSED 127.0.0.1:20001". */
function socketProblem(error: Error): string {
  const code = 'code' in error && typeof error.code === 'string' ? error.code : '';
  switch (code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ECONNRESET':
      return 'connection reset';
    case 'EHOSTUNREACH':
      return 'host unreachable';
    case 'ENETUNREACH':
      return 'network unreachable';
    case 'ETIMEDOUT':
      return 'timed out';
    case 'EADDRNOTAVAIL':
      return 'address not available';
    default:
      return oneLine(error.message);
  }
}

/** 2000 → "2 s", 1500 → "1.5 s", 50 → "0.05 s". */
function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

/** The output's first line that says something, trimmed to checkOutputLineLengthMax characters. */
function firstLine(output: string): string {
  const line = output
    .split('\n')
    .map((text) => text.trim())
    .find((text) => text !== '');
  if (line === undefined) return '';
  if (line.length <= checkOutputLineLengthMax) return line;
  // Not cutting a character in half (a surrogate pair), as a plain slice might.
  const cut = line.slice(0, checkOutputLineLengthMax - 1).replace(/[\uD800-\uDBFF]$/, '');
  return `${cut}…`;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}
