/**
 * The agent's task events: a driver's events reach the task's record in few batches (at most one per task
 * every eventsFlushIntervalMs, pull progress coalesced to the newest line), and what is queued goes out before
 * the task's state report, so the record reads in order.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import type { Task } from '../../src/cluster/task.ts';
import { Agent, type TaskEventsBatch, type TaskReport } from '../../src/runtime/agent.ts';
import type { Driver } from '../../src/runtime/drivers/index.ts';
import { silentLogger } from '../../src/shared/index.ts';
import { waitUntil } from '../drivers/compliance.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

it('batches and coalesces a pull’s events, and sends them before the running report', async () => {
  const task: Task = {
    id: 't1',
    spec: {
      name: 'pull',
      driver: 'exec',
      command: ['true'],
      cpuMillis: 100,
      memoryBytes: 64 * 1024 * 1024,
      priority: 50,
      env: {},
      constraints: {},
    },
    submitIndex: 1,
    submittedAtMs: 0,
    desired: 'run',
    state: 'assigned',
    nodeId: 'me',
    attempt: 0,
    notBeforeMs: null,
    exitCode: null,
    reason: null,
    updatedAtMs: 0,
    events: [],
  };
  const calls: (TaskEventsBatch | TaskReport)[] = [];
  const driver: Driver = {
    name: 'exec',
    health: () => Promise.resolve({ healthy: true, detail: '' }),
    start: (request) => {
      request.onEvent?.({ type: 'image:pull', message: 'pulling image x' });
      for (let i = 1; i <= 50; i++)
        request.onEvent?.({ type: 'image:pull', message: `layer: ${i} MB / 50 MB` });
      request.onEvent?.({ type: 'image:pulled', message: 'pulled image x in 0.1 s' });
      return Promise.resolve({ taskId: 't1', driver: 'exec', state: {} });
    },
    wait: () => new Promise(() => undefined),
    stop: () => Promise.resolve(),
    destroy: () => Promise.resolve(),
    recover: () => Promise.resolve(false),
  };
  const dataDir = mkdtempSync(join(tmpdir(), 'shoal-events-test-'));
  dirs.push(dataDir);
  const agent = new Agent({
    nodeId: 'me',
    dataDir,
    drivers: new Map([['exec', driver]]),
    logger: silentLogger,
    assignedTasks: () => [task],
    task: () => task,
    report: (report) => {
      calls.push(report);
      task.state = report.state;
      return Promise.resolve();
    },
    recordEvents: (batch) => {
      calls.push(batch);
      return Promise.resolve();
    },
    leaseExpired: () => false,
    leaseReason: 'lease',
    lease: { file: join(dataDir, 'lease.json'), durationMs: 10_000 },
  });
  await agent.start();
  try {
    await waitUntil('the running report', () => Promise.resolve(calls.some((c) => 'state' in c)));
    const shown = calls.map((c) => ('state' in c ? `report ${c.state}` : c.events.map((e) => e.message)));
    expect(shown).toEqual([
      ['pulling image x'],
      ['layer: 50 MB / 50 MB', 'pulled image x in 0.1 s'],
      'report running',
    ]);
  } finally {
    agent.stop();
  }
});
