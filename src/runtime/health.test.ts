/**
 * Health checks: the tracker's rules result by result, and HealthMonitor against real servers on 127.0.0.1
 * and exec functions made here. Intervals are short (50 ms); assertions wait for behaviour by polling with
 * generous limits, never for a time, since CI is a loaded 2-core machine.
 */
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import {
  createServer as createTcpServer,
  type AddressInfo,
  type Server as TcpServer,
  type Socket,
} from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import type { HealthCheckSpec } from '../cluster/index.ts';
import { silentLogger } from '../shared/index.ts';
import {
  createCheckState,
  HealthMonitor,
  recordCheckResult,
  TaskHealthTracker,
  taskVerdict,
  type CheckResult,
  type CheckState,
  type HealthTarget,
} from './health.ts';

type Check = HealthCheckSpec;

const ok: CheckResult = { ok: true, message: '' };
const failed = (message = 'GET /health returned 503'): CheckResult => ({ ok: false, message });

function check(fields: Partial<Check> = {}): Check {
  return {
    type: 'exec',
    command: ['true'],
    intervalMs: 50,
    timeoutMs: 2000,
    graceMs: 0,
    failuresBeforeUnhealthy: 1,
    successesBeforeHealthy: 1,
    ...fields,
  };
}

/** Feeds results to one check's state, all at atMs. */
function feed(
  state: CheckState,
  spec: Check,
  results: CheckResult[],
  atMs = 1000,
  startedAtMs = 0,
): CheckState {
  return results.reduce(
    (current, result) => recordCheckResult(current, spec, result, atMs, startedAtMs),
    state,
  );
}

describe('check state', () => {
  it('stays pending until a threshold is reached, then turns healthy after that many passes in a row', () => {
    const spec = check({ successesBeforeHealthy: 3, failuresBeforeUnhealthy: 3 });
    let state = createCheckState();
    expect(state.verdict).toBe('pending');
    state = feed(state, spec, [ok, ok]);
    expect(state.verdict).toBe('pending');
    // A failure breaks the run of passes: three more are needed.
    state = feed(state, spec, [failed(), ok, ok]);
    expect(state.verdict).toBe('pending');
    state = feed(state, spec, [ok]);
    expect(state).toMatchObject({ verdict: 'healthy', successesInRow: 3, failuresInRow: 0 });
  });

  it('turns unhealthy after failuresBeforeUnhealthy failures in a row, keeping the last message', () => {
    const spec = check({ failuresBeforeUnhealthy: 2 });
    let state = feed(createCheckState(), spec, [ok]);
    expect(state.verdict).toBe('healthy');
    state = feed(state, spec, [failed('first')]);
    expect(state.verdict).toBe('healthy');
    state = feed(state, spec, [ok, failed('a'), failed('b')]);
    expect(state).toEqual({ verdict: 'unhealthy', successesInRow: 0, failuresInRow: 2, lastFailure: 'b' });
    // Back to healthy after successesBeforeHealthy (1) pass.
    expect(feed(state, spec, [ok]).verdict).toBe('healthy');
  });

  it('can turn unhealthy before it was ever healthy', () => {
    const spec = check({ failuresBeforeUnhealthy: 2, successesBeforeHealthy: 2 });
    expect(feed(createCheckState(), spec, [failed(), failed()]).verdict).toBe('unhealthy');
  });

  it('ignores failures within the grace period: they neither count nor break a run of passes', () => {
    const spec = check({ graceMs: 5000, failuresBeforeUnhealthy: 1, successesBeforeHealthy: 2 });
    const startedAtMs = 10_000;
    let state = createCheckState();
    state = recordCheckResult(state, spec, ok, 11_000, startedAtMs);
    state = recordCheckResult(state, spec, failed(), 12_000, startedAtMs);
    expect(state).toMatchObject({ verdict: 'pending', successesInRow: 1, failuresInRow: 0, lastFailure: '' });
    // Passes in the grace period count.
    state = recordCheckResult(state, spec, ok, 13_000, startedAtMs);
    expect(state.verdict).toBe('healthy');
    state = recordCheckResult(state, spec, failed('still starting'), 14_999, startedAtMs);
    expect(state.verdict).toBe('healthy');
    // From startedAtMs + graceMs on, failures count.
    state = recordCheckResult(state, spec, failed('late'), 15_000, startedAtMs);
    expect(state).toMatchObject({ verdict: 'unhealthy', failuresInRow: 1, lastFailure: 'late' });
  });
});

describe('task verdict', () => {
  const healthy: CheckState = { verdict: 'healthy', successesInRow: 1, failuresInRow: 0, lastFailure: '' };
  const pending = createCheckState();
  const unhealthy = (lastFailure: string): CheckState => ({
    verdict: 'unhealthy',
    successesInRow: 0,
    failuresInRow: 3,
    lastFailure,
  });

  it('is healthy when every check is, unhealthy when any is, and none otherwise', () => {
    expect(taskVerdict([healthy, healthy])).toEqual({ status: 'healthy', message: '' });
    expect(taskVerdict([healthy, pending])).toBeNull();
    expect(taskVerdict([pending, unhealthy('tcp 127.0.0.1:1: connection refused')])).toEqual({
      status: 'unhealthy',
      message: 'tcp 127.0.0.1:1: connection refused',
    });
    expect(taskVerdict([healthy, unhealthy('first'), unhealthy('second')])).toEqual({
      status: 'unhealthy',
      message: 'first',
    });
    expect(taskVerdict([])).toBeNull();
  });
});

describe('task health tracker', () => {
  it('reports each change of the task verdict once, with its time', () => {
    const tracker = new TaskHealthTracker([check(), check({ failuresBeforeUnhealthy: 2 })], 0);
    expect(tracker.record(0, ok, 100)).toEqual({ health: null, restart: null });
    expect(tracker.record(1, ok, 200)).toEqual({
      health: { status: 'healthy', sinceMs: 200, message: '' },
      restart: null,
    });
    expect(tracker.record(0, ok, 300).health).toBeNull();
    expect(tracker.record(1, failed('b1'), 400).health).toBeNull();
    expect(tracker.record(1, failed('b2'), 500).health).toEqual({
      status: 'unhealthy',
      sinceMs: 500,
      message: 'b2',
    });
    // Another check failing does not change the verdict: no report.
    expect(tracker.record(0, failed('a'), 600).health).toBeNull();
    expect(tracker.record(1, ok, 700).health).toBeNull();
    expect(tracker.record(0, ok, 800).health).toEqual({ status: 'healthy', sinceMs: 800, message: '' });
    expect(tracker.health()).toEqual({ status: 'healthy', sinceMs: 800, message: '' });
  });

  it('keeps its verdict while the checks have none', () => {
    const tracker = new TaskHealthTracker([check(), check({ successesBeforeHealthy: 5 })], 0);
    expect(tracker.record(0, failed('down'), 100).health?.status).toBe('unhealthy');
    // The failing check recovers, the other has no verdict yet: still unhealthy, as last said.
    expect(tracker.record(0, ok, 200).health).toBeNull();
    expect(tracker.health()).toEqual({ status: 'unhealthy', sinceMs: 100, message: 'down' });
  });

  it('asks for a restart once, when a check reaches restartAfterFailures counted failures in a row', () => {
    const spec = check({ failuresBeforeUnhealthy: 1, restartAfterFailures: 3, graceMs: 1000 });
    const tracker = new TaskHealthTracker([spec], 0);
    // In the grace period: not counted.
    for (const atMs of [100, 200, 300, 400]) expect(tracker.record(0, failed(), atMs).restart).toBeNull();
    expect(tracker.record(0, failed(), 1000).restart).toBeNull();
    expect(tracker.record(0, failed(), 1100).restart).toBeNull();
    expect(tracker.record(0, failed('GET /health returned 500'), 1200).restart).toBe(
      'unhealthy: GET /health returned 500 (3 failed checks in a row)',
    );
    expect(tracker.record(0, failed(), 1300).restart).toBeNull();
    // Even after recovering and failing again: once per attempt.
    tracker.record(0, ok, 1400);
    for (const atMs of [1500, 1600, 1700, 1800]) expect(tracker.record(0, failed(), atMs).restart).toBeNull();
    // A new attempt has a tracker of its own.
    const next = new TaskHealthTracker([spec], 0);
    const restarts = [2000, 2100, 2200].map((atMs) => next.record(0, failed(), atMs).restart);
    expect(restarts).toEqual([null, null, 'unhealthy: GET /health returned 503 (3 failed checks in a row)']);
  });

  it('asks for no restart without restartAfterFailures', () => {
    const tracker = new TaskHealthTracker([check()], 0);
    for (let i = 0; i < 50; i++) expect(tracker.record(0, failed(), i).restart).toBeNull();
  });
});

// ---------------------------------------------------------------------------------------------------------

/** Polls until `condition` holds; fails after timeoutMs (generous: the machine may be loaded). */
async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadlineMs = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadlineMs) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(20);
  }
}

interface Recorded {
  health: { taskId: string; attempt: number; status: string; sinceMs: number; message: string }[];
  restarts: { taskId: string; attempt: number; reason: string }[];
}

const monitors: HealthMonitor[] = [];
const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const monitor of monitors.splice(0)) monitor.close();
  for (const close of closers.splice(0)) await close();
});

function makeMonitor(nowMs?: () => number): { monitor: HealthMonitor; recorded: Recorded } {
  const recorded: Recorded = { health: [], restarts: [] };
  const monitor = new HealthMonitor({
    logger: silentLogger,
    onHealth: (taskId, attempt, health) => recorded.health.push({ taskId, attempt, ...health }),
    onRestart: (taskId, attempt, reason) => recorded.restarts.push({ taskId, attempt, reason }),
    ...(nowMs === undefined ? {} : { nowMs }),
  });
  monitors.push(monitor);
  return { monitor, recorded };
}

function target(fields: Partial<HealthTarget> & Pick<HealthTarget, 'checks'>): HealthTarget {
  return {
    taskId: 'task-1',
    attempt: 1,
    host: '127.0.0.1',
    hostPorts: {},
    startedAtMs: Date.now(),
    exec: () => Promise.resolve({ exitCode: 0, output: '', timedOut: false }),
    ...fields,
  };
}

/** An HTTP server whose answer the test sets; `hang` leaves requests unanswered. */
async function startHttpServer(): Promise<{
  port: number;
  answer: { status: number; hang: boolean };
  requests: string[];
}> {
  const answer = { status: 200, hang: false };
  const requests: string[] = [];
  const server: HttpServer = createHttpServer((request, response) => {
    requests.push(request.url ?? '');
    if (answer.hang) return;
    response.writeHead(answer.status).end('body');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as AddressInfo).port, answer, requests };
}

/** A port nothing listens on (one the system just gave out and took back). */
async function closedPort(): Promise<number> {
  const server = createTcpServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

type ExecResult = Awaited<ReturnType<HealthTarget['exec']>>;

describe('HealthMonitor', { timeout: 60_000 }, () => {
  it('follows an http check between 200 and 503, reporting each change', async () => {
    const server = await startHttpServer();
    // The agent's clock: the report's time comes from it, as does the start the grace counts from.
    const { monitor, recorded } = makeMonitor(() => 123_456);
    monitor.watch(
      target({
        startedAtMs: 100_000,
        checks: [check({ type: 'http', port: 'web', path: '/health' })],
        hostPorts: { web: server.port },
      }),
    );
    expect(monitor.watching()).toBe(1);
    await waitFor('healthy', () => recorded.health.length === 1);
    expect(recorded.health[0]).toEqual({
      taskId: 'task-1',
      attempt: 1,
      status: 'healthy',
      sinceMs: 123_456,
      message: '',
    });
    expect(server.requests[0]).toBe('/health');
    server.answer.status = 503;
    await waitFor('unhealthy', () => recorded.health.length === 2);
    expect(recorded.health[1]).toMatchObject({ status: 'unhealthy', message: 'GET /health returned 503' });
    server.answer.status = 204;
    await waitFor('healthy again', () => recorded.health.length === 3);
    expect(recorded.health[2]).toMatchObject({ status: 'healthy', message: '' });
    // Checks go on, and say nothing while nothing changes.
    const requestsBefore = server.requests.length;
    await waitFor('more requests', () => server.requests.length >= requestsBefore + 3);
    expect(recorded.health).toHaveLength(3);
    expect(recorded.restarts).toEqual([]);
  });

  it('passes an http check only on expectStatus when it has one', async () => {
    const server = await startHttpServer();
    const { monitor, recorded } = makeMonitor();
    monitor.watch(
      target({
        checks: [check({ type: 'http', port: 'web', expectStatus: 204 })],
        hostPorts: { web: server.port },
      }),
    );
    await waitFor('unhealthy', () => recorded.health.length === 1);
    expect(recorded.health[0]).toMatchObject({ status: 'unhealthy', message: 'GET / returned 200' });
    server.answer.status = 204;
    await waitFor('healthy', () => recorded.health.length === 2);
    expect(recorded.health[1]?.status).toBe('healthy');
  });

  it('fails an http check on a refused connection and on a server that does not answer in time', async () => {
    const server = await startHttpServer();
    server.answer.hang = true;
    const port = await closedPort();
    const { monitor, recorded } = makeMonitor();
    monitor.watch(
      target({
        taskId: 'refused',
        checks: [check({ type: 'http', port: 'web', path: '/health' })],
        hostPorts: { web: port },
      }),
    );
    monitor.watch(
      target({
        taskId: 'silent',
        checks: [check({ type: 'http', port: 'web', timeoutMs: 200, intervalMs: 200 })],
        hostPorts: { web: server.port },
      }),
    );
    expect(monitor.watching()).toBe(2);
    await waitFor('both unhealthy', () => recorded.health.length === 2);
    const byTask = Object.fromEntries(recorded.health.map((entry) => [entry.taskId, entry.message]));
    expect(byTask).toEqual({
      refused: 'GET /health: connection refused',
      silent: 'GET /: timed out after 0.2 s',
    });
  });

  it('follows a tcp check: accepted, then refused once the server is closed', async () => {
    const sockets = new Set<Socket>();
    const server: TcpServer = createTcpServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const { monitor, recorded } = makeMonitor();
    monitor.watch(target({ checks: [check({ type: 'tcp', port: 'db' })], hostPorts: { db: port } }));
    await waitFor('healthy', () => recorded.health.length === 1);
    expect(recorded.health[0]?.status).toBe('healthy');
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
    await waitFor('unhealthy', () => recorded.health.length === 2);
    expect(recorded.health[1]).toMatchObject({
      status: 'unhealthy',
      message: `tcp 127.0.0.1:${port}: connection refused`,
    });
  });

  it('fails a check whose port the task does not have', async () => {
    const { monitor, recorded } = makeMonitor();
    monitor.watch(target({ checks: [check({ type: 'tcp', port: 'admin' })], hostPorts: { web: 1 } }));
    await waitFor('unhealthy', () => recorded.health.length === 1);
    expect(recorded.health[0]).toMatchObject({ status: 'unhealthy', message: 'no port named admin' });
  });

  it('runs exec checks through the target, with their command and timeout, and says how they failed', async () => {
    const calls: { command: readonly string[]; timeoutMs: number }[] = [];
    const longLine = 'x'.repeat(300);
    const answers: (ExecResult | Error)[] = [
      { exitCode: 0, output: 'fine', timedOut: false },
      { exitCode: 1, output: '\n  boom  \nmore detail\n', timedOut: false },
      { exitCode: 0, output: '', timedOut: false },
      { exitCode: null, output: '', timedOut: true },
      { exitCode: 0, output: '', timedOut: false },
      { exitCode: 2, output: longLine, timedOut: false },
      { exitCode: 0, output: '', timedOut: false },
      { exitCode: null, output: 'command not found: probe', timedOut: false },
      { exitCode: 0, output: '', timedOut: false },
      new Error('docker engine unreachable at /x.sock: connect ENOENT\n/x.sock'),
      { exitCode: 0, output: '', timedOut: false },
      { exitCode: 7, output: '', timedOut: false },
    ];
    const { monitor, recorded } = makeMonitor();
    monitor.watch(
      target({
        checks: [check({ command: ['probe', '--deep'], timeoutMs: 2000 })],
        exec: (command, timeoutMs) => {
          calls.push({ command, timeoutMs });
          const answer = answers.shift() ?? { exitCode: 0, output: '', timedOut: false };
          return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer);
        },
      }),
    );
    await waitFor('every answer used', () => recorded.health.length === 12);
    expect(calls[0]).toEqual({ command: ['probe', '--deep'], timeoutMs: 2000 });
    expect(
      recorded.health.filter((entry) => entry.status === 'unhealthy').map((entry) => entry.message),
    ).toEqual([
      'exec check exited 1: boom',
      'exec check timed out after 2 s',
      `exec check exited 2: ${'x'.repeat(119)}…`,
      'exec check failed: command not found: probe',
      'exec check failed: docker engine unreachable at /x.sock: connect ENOENT /x.sock',
      'exec check exited 7',
    ]);
  });

  it('fails an exec check that does not answer within its timeout, and runs one at a time', async () => {
    let running = 0;
    let runningMax = 0;
    let calls = 0;
    const { monitor, recorded } = makeMonitor();
    monitor.watch(
      target({
        checks: [check({ timeoutMs: 100, intervalMs: 100 })],
        exec: async () => {
          calls++;
          running++;
          runningMax = Math.max(runningMax, running);
          // Far past the timeout: the monitor stops waiting, and waits out this run before the next.
          await sleep(400);
          running--;
          return { exitCode: 0, output: '', timedOut: false };
        },
      }),
    );
    await waitFor('unhealthy', () => recorded.health.length === 1);
    expect(recorded.health[0]).toMatchObject({
      status: 'unhealthy',
      message: 'exec check timed out after 0.1 s',
    });
    await waitFor('a few runs', () => calls >= 3);
    expect(runningMax).toBe(1);
  });

  it('ignores failures in the grace period, then counts them', async () => {
    let calls = 0;
    let graceOver = false;
    const { monitor, recorded } = makeMonitor();
    const startedAtMs = Date.now();
    monitor.watch(
      target({
        startedAtMs,
        checks: [check({ graceMs: 60_000, restartAfterFailures: 1 })],
        exec: () => {
          calls++;
          return Promise.resolve({ exitCode: 1, output: 'starting', timedOut: false });
        },
      }),
    );
    await waitFor('several failed runs', () => calls >= 5);
    expect(recorded).toEqual({ health: [], restarts: [] });
    // The same task, seen running long ago: its grace is over.
    monitor.watch(
      target({
        startedAtMs: startedAtMs - 120_000,
        checks: [check({ graceMs: 60_000, restartAfterFailures: 1 })],
        exec: () => {
          graceOver = true;
          return Promise.resolve({ exitCode: 1, output: 'down', timedOut: false });
        },
      }),
    );
    await waitFor('unhealthy', () => recorded.health.length === 1);
    expect(graceOver).toBe(true);
    expect(recorded.health[0]?.message).toBe('exec check exited 1: down');
    expect(recorded.restarts).toHaveLength(1);
  });

  it('asks for a restart once per attempt', async () => {
    let calls = 0;
    const { monitor, recorded } = makeMonitor();
    const failing = (attempt: number): HealthTarget =>
      target({
        attempt,
        checks: [check({ failuresBeforeUnhealthy: 2, restartAfterFailures: 3 })],
        exec: () => {
          calls++;
          return Promise.resolve({ exitCode: 1, output: 'boom', timedOut: false });
        },
      });
    monitor.watch(failing(1));
    await waitFor('a restart', () => recorded.restarts.length === 1);
    const callsThen = calls;
    await waitFor('more runs', () => calls >= callsThen + 5);
    expect(recorded.restarts).toEqual([
      {
        taskId: 'task-1',
        attempt: 1,
        reason: 'unhealthy: exec check exited 1: boom (3 failed checks in a row)',
      },
    ]);
    // The agent restarted it: the next attempt may ask again.
    monitor.watch(failing(2));
    await waitFor('a second restart', () => recorded.restarts.length === 2);
    expect(recorded.restarts[1]).toMatchObject({ attempt: 2 });
    expect(recorded.health.map((entry) => [entry.attempt, entry.status])).toEqual([
      [1, 'unhealthy'],
      [2, 'unhealthy'],
    ]);
  });

  it('reports the task unhealthy while any check fails, healthy when all pass', async () => {
    const server = await startHttpServer();
    let execExit = 0;
    const { monitor, recorded } = makeMonitor();
    monitor.watch(
      target({
        checks: [check({ type: 'http', port: 'web' }), check({ type: 'tcp', port: 'web' }), check()],
        hostPorts: { web: server.port },
        exec: () => Promise.resolve({ exitCode: execExit, output: 'nope', timedOut: false }),
      }),
    );
    await waitFor('healthy', () => recorded.health.length === 1);
    expect(recorded.health[0]?.status).toBe('healthy');
    execExit = 1;
    await waitFor('unhealthy', () => recorded.health.length === 2);
    expect(recorded.health[1]).toMatchObject({ status: 'unhealthy', message: 'exec check exited 1: nope' });
    execExit = 0;
    await waitFor('healthy again', () => recorded.health.length === 3);
  });

  it('stops on unwatch and close, and ignores results that arrive after', async () => {
    const pending: ((result: ExecResult) => void)[] = [];
    let calls = 0;
    const { monitor, recorded } = makeMonitor();
    const slow = (taskId: string, attempt = 1): HealthTarget =>
      target({
        taskId,
        attempt,
        checks: [check()],
        exec: () => {
          calls++;
          return new Promise((resolve) => pending.push(resolve));
        },
      });
    monitor.watch(slow('a'));
    await waitFor('a run in flight', () => pending.length === 1);
    monitor.unwatch('a');
    expect(monitor.watching()).toBe(0);
    pending[0]?.({ exitCode: 1, output: 'late', timedOut: false });
    // Another attempt replaces the first while its run is in flight: the first's result is dropped.
    monitor.watch(slow('b', 1));
    await waitFor('b in flight', () => pending.length === 2);
    monitor.watch(slow('b', 2));
    await waitFor('b attempt 2 in flight', () => pending.length === 3);
    expect(monitor.watching()).toBe(1);
    pending[1]?.({ exitCode: 1, output: 'from attempt 1', timedOut: false });
    pending[2]?.({ exitCode: 1, output: 'from attempt 2', timedOut: false });
    await waitFor('attempt 2 unhealthy', () => recorded.health.length === 1);
    expect(recorded.health[0]).toMatchObject({
      taskId: 'b',
      attempt: 2,
      message: 'exec check exited 1: from attempt 2',
    });
    await waitFor('attempt 2 runs again', () => pending.length === 4);
    monitor.close();
    expect(monitor.watching()).toBe(0);
    pending[3]?.({ exitCode: 0, output: '', timedOut: false });
    const callsAtClose = calls;
    await sleep(300);
    expect(calls).toBe(callsAtClose);
    expect(recorded.health).toHaveLength(1);
    // Closed for good.
    monitor.watch(slow('c'));
    expect(monitor.watching()).toBe(0);
  });

  it('stops at once when a listener ends the watch, as the agent does when it restarts the task', async () => {
    let calls = 0;
    const restarts: string[] = [];
    const monitor: HealthMonitor = new HealthMonitor({
      logger: silentLogger,
      onHealth: () => undefined,
      onRestart: (taskId, _attempt, reason) => {
        restarts.push(reason);
        monitor.unwatch(taskId);
      },
    });
    monitors.push(monitor);
    monitor.watch(
      target({
        checks: [check({ restartAfterFailures: 2 })],
        exec: () => {
          calls++;
          return Promise.resolve({ exitCode: 1, output: '', timedOut: false });
        },
      }),
    );
    await waitFor('a restart', () => restarts.length === 1);
    expect(monitor.watching()).toBe(0);
    await sleep(300);
    expect(calls).toBe(2);
  });

  it('goes on checking when a listener throws', async () => {
    let reports = 0;
    let execExit = 1;
    const monitor = new HealthMonitor({
      logger: silentLogger,
      onHealth: () => {
        reports++;
        throw new Error('listener broke');
      },
      onRestart: () => {
        throw new Error('listener broke');
      },
    });
    monitors.push(monitor);
    monitor.watch(
      target({
        checks: [check({ restartAfterFailures: 1 })],
        exec: () => Promise.resolve({ exitCode: execExit, output: '', timedOut: false }),
      }),
    );
    await waitFor('unhealthy reported', () => reports === 1);
    execExit = 0;
    await waitFor('healthy reported', () => reports === 2);
  });
});
