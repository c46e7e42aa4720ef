/**
 * The runtime's upkeep on a node without Docker (the first-hour complaint): the docker driver is unavailable
 * (a real driver pointed at a socket where no engine listens), and garbage collection of an exec task's
 * leftovers logs no warning about the engine. Without the filter on available drivers it does, which is
 * what this test would catch coming back.
 */
import { mkdirSync, mkdtempSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Task, TaskDriver, TaskSpec } from '../../src/cluster/index.ts';
import {
  Agent,
  Upkeep,
  createDockerDriver,
  taskDirRetentionMsDefault,
  type Driver,
} from '../../src/runtime/index.ts';
import { createLogger } from '../../src/shared/index.ts';

const spec: TaskSpec = {
  name: 'gc',
  driver: 'exec',
  command: ['true'],
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  priority: 50,
  env: {},
  constraints: {},
};

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** An exec driver that holds nothing (the task's process is long gone). */
const execDriver: Driver = {
  name: 'exec',
  health: () => Promise.resolve({ healthy: true, detail: 'ok' }),
  start: () => Promise.reject(new Error('not in this test')),
  wait: () => Promise.reject(new Error('not in this test')),
  stop: () => Promise.resolve(),
  destroy: () => Promise.resolve(),
  recover: () => Promise.resolve(false),
  collect: () => Promise.resolve(false),
};

function setUp(): { upkeep: Upkeep; agent: Agent; lines: string[]; taskDir: string } {
  const dataDir = mkdtempSync(join(tmpdir(), 'shoal-upkeep-test-'));
  dirs.push(dataDir);
  const lines: string[] = [];
  const logger = createLogger({ level: 'info', write: (line) => lines.push(line) });
  const nowMs = Date.now();
  const ended: Task = {
    id: 'aaaaaaaaaaaa',
    spec,
    submitIndex: 1,
    submittedAtMs: 0,
    desired: 'run',
    state: 'finished',
    nodeId: 'me',
    attempt: 0,
    notBeforeMs: null,
    exitCode: 0,
    reason: 'exit code 0',
    updatedAtMs: nowMs - 2 * taskDirRetentionMsDefault,
    events: [],
  };
  const drivers = new Map<TaskDriver, Driver>([
    ['exec', execDriver],
    ['docker', createDockerDriver({ logger, socketPath: join(dataDir, 'no-engine.sock'), nodeId: 'me' })],
  ]);
  const agent = new Agent({
    nodeId: 'me',
    dataDir,
    drivers,
    logger,
    assignedTasks: () => [],
    task: (id) => (id === ended.id ? ended : undefined),
    report: () => Promise.resolve(),
    leaseExpired: () => false,
    leaseReason: 'lease',
    lease: { file: join(dataDir, 'lease.json'), durationMs: 10_000 },
  });
  const taskDir = agent.taskDir(ended.id);
  mkdirSync(taskDir, { recursive: true });
  const old = ended.updatedAtMs / 1000;
  utimesSync(taskDir, old, old);
  const upkeep = new Upkeep({
    drivers,
    agent,
    logger,
    onDriversChecked: () => undefined,
    stateCurrent: () => Promise.resolve(),
  });
  return { upkeep, agent, lines, taskDir };
}

describe('upkeep on a node without Docker', () => {
  it('says once that the docker driver is unavailable, and collects an exec task without a warning', async () => {
    const { upkeep, lines } = setUp();
    expect(await upkeep.checkDrivers()).toEqual(['exec']);
    expect(await upkeep.checkDrivers()).toEqual(['exec']);
    for (let pass = 0; pass < 3; pass++) {
      const report = await upkeep.collectOnce();
      expect(report?.removedDirs ?? []).toEqual(pass === 0 ? ['aaaaaaaaaaaa'] : []);
    }
    expect(lines.filter((line) => line.includes('the docker driver is unavailable'))).toHaveLength(1);
    expect(lines.filter((line) => /WARN|ERROR/.test(line))).toEqual([]);
  });

  it('would warn if every driver were asked, as before', async () => {
    const { agent, lines } = setUp();
    // A task the cluster has forgotten is asked of every driver given: here, the unreachable engine too.
    mkdirSync(agent.taskDir('bbbbbbbbbbbb'), { recursive: true });
    await agent.collectGarbage();
    expect(lines.some((line) => line.includes('garbage collection failed'))).toBe(true);
  });
});
