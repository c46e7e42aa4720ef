import { describe, expect, it } from 'vitest';
import { isShoalError } from '../shared/errors.ts';
import {
  applyResultSchema,
  decodeCommand,
  encodeCommand,
  reportReasonsLengthMax,
  reportsPerCommandMax,
  validateCommand,
  type Command,
  type TaskReportRecord,
} from './command.ts';
import { taskLimitsBefore } from './limits.ts';
import { expandSubmission } from './submission.ts';
import type { TaskSpec } from './task.ts';

const spec: TaskSpec = {
  name: 'web',
  driver: 'exec',
  command: ['sh', '-c', 'sleep 1'],
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  priority: 50,
  env: { A: 'b' },
  constraints: {},
};

const commands: Command[] = [
  { type: 'submitTask', id: 'aaaaaaaaaaaa', spec, atMs: 1 },
  { type: 'submitTasks', tasks: [{ id: 'aaaaaaaaaaaa', spec }], atMs: 1 },
  {
    type: 'assignTasks',
    term: 3,
    assignments: [{ taskId: 'aaaaaaaaaaaa', nodeId: 'n1' }],
    preemptions: [{ taskId: 'bbbbbbbbbbbb', nodeId: 'n1', forTaskId: 'aaaaaaaaaaaa' }],
    preemptionPriorityGap: 10,
    waiting: [{ taskId: 'cccccccccccc', reason: 'no node has room' }],
    atMs: 2,
  },
  {
    type: 'reportTask',
    nodeId: 'n1',
    taskId: 'aaaaaaaaaaaa',
    attempt: 0,
    state: 'failed',
    exitCode: 3,
    reason: 'exit code 3',
    atMs: 3,
  },
  {
    type: 'taskEvents',
    nodeId: 'n1',
    taskId: 'aaaaaaaaaaaa',
    attempt: 0,
    events: [{ atMs: 4, message: 'pulled' }],
  },
  { type: 'killTask', taskId: 'aaaaaaaaaaaa', atMs: 5 },
  {
    type: 'upsertNode',
    node: {
      id: 'n1',
      name: 'n1',
      address: '127.0.0.1:4700',
      capacity: { cpuMillis: 1000, memoryBytes: 1 << 30, diskBytes: 1 << 30, devices: { gpu: 2 } },
      labels: { zone: 'a' },
      drivers: ['exec'],
    },
    atMs: 6,
  },
  { type: 'nodeDown', nodeId: 'n1', reason: 'gone', atMs: 7 },
  { type: 'drainNode', nodeId: 'n1', drain: true, atMs: 8 },
  { type: 'setNamespace', policy: { name: 'team', weight: 2, quota: null }, atMs: 9 },
  {
    type: 'reportTasks',
    nodeId: 'n1',
    reports: [
      { taskId: 'aaaaaaaaaaaa', attempt: 0, state: 'running', exitCode: null, reason: null },
      { taskId: 'bbbbbbbbbbbb', attempt: 2, state: 'failed', exitCode: 3, reason: 'exit code 3' },
    ],
    atMs: 10,
  },
  { type: 'setTaskLimits', limits: { ...taskLimitsBefore, terminalTaskRetentionMs: 3_600_000 }, atMs: 11 },
];

const report = (reason: string | null = null): TaskReportRecord => ({
  taskId: 'aaaaaaaaaaaa',
  attempt: 0,
  state: 'finished',
  exitCode: 0,
  reason,
});

function corruptError(index: number, data: string): string {
  try {
    decodeCommand(index, data);
  } catch (error) {
    expect(isShoalError(error, 'CORRUPT_DATA')).toBe(true);
    return (error as Error).message;
  }
  throw new Error('decoded a corrupt entry');
}

describe('the command codec', () => {
  it('decodes every command it encodes, unchanged', () => {
    for (const command of commands) expect(decodeCommand(1, encodeCommand(command))).toEqual(command);
  });

  it('refuses an entry that is not JSON, naming its index', () => {
    expect(corruptError(42, '{"type":"submitTask",')).toMatch(/^log entry 42 is not JSON/);
  });

  it('refuses an unknown command type, naming the index and the type', () => {
    expect(corruptError(7, '{"type":"formatDisk","atMs":1}')).toMatch(
      /^log entry 7 is not a command this version of shoal knows \(type "formatDisk"\)/,
    );
  });

  it('refuses a known command with a missing or mistyped field, naming the field', () => {
    expect(corruptError(9, JSON.stringify({ type: 'killTask', atMs: 1 }))).toMatch(/taskId/);
    expect(
      corruptError(10, JSON.stringify({ type: 'drainNode', nodeId: 'n1', drain: 'yes', atMs: 1 })),
    ).toMatch(/drain/);
    expect(corruptError(11, JSON.stringify({ ...commands[0], spec: { ...spec, cpuMillis: -1 } }))).toMatch(
      /spec\.cpuMillis/,
    );
  });

  it('still reads a reportTask of one report, as older logs hold', () => {
    const data =
      '{"type":"reportTask","nodeId":"n1","taskId":"aaaaaaaaaaaa","attempt":0,"state":"running","exitCode":null,"reason":null,"atMs":3}';
    expect(decodeCommand(1, data)).toMatchObject({
      type: 'reportTask',
      taskId: 'aaaaaaaaaaaa',
      state: 'running',
    });
  });

  it('bounds a batch of reports: at least one, at most reportsPerCommandMax, their reasons together', () => {
    const batch = (reports: TaskReportRecord[]): string =>
      JSON.stringify({ type: 'reportTasks', nodeId: 'n1', reports, atMs: 1 });
    expect(corruptError(13, batch([]))).toMatch(/reports/);
    const full = Array.from({ length: reportsPerCommandMax }, () => report());
    expect(decodeCommand(14, batch(full))).toMatchObject({ type: 'reportTasks' });
    expect(corruptError(15, batch([...full, report()]))).toMatch(/reports/);
    // Each reason within the codec's bound, but together too much for one entry.
    const long = 'x'.repeat(60 * 1024);
    const count = Math.floor(reportReasonsLengthMax / long.length) + 1;
    expect(corruptError(16, batch(Array.from({ length: count }, () => report(long))))).toMatch(
      /the reasons of a batch hold at most/,
    );
    // A proposal forwarded by another node is checked the same way.
    expect(() => validateCommand(JSON.parse(batch([])))).toThrow(/not a command/);
  });

  it('refuses task limits out of their bounds', () => {
    const limits = (changes: object): string =>
      JSON.stringify({ type: 'setTaskLimits', limits: { ...taskLimitsBefore, ...changes }, atMs: 1 });
    expect(corruptError(17, limits({ liveTasksMax: 0 }))).toMatch(/liveTasksMax/);
    expect(corruptError(18, limits({ terminalTasksRetainedMax: 0 }))).toMatch(/terminalTasksRetainedMax/);
    expect(corruptError(19, limits({ terminalTaskRetentionMs: 1.5 }))).toMatch(/terminalTaskRetentionMs/);
    expect(decodeCommand(20, limits({ terminalTaskRetentionMs: null }))).toMatchObject({
      type: 'setTaskLimits',
    });
  });

  it('refuses fields it does not know (a newer version wrote the entry)', () => {
    expect(corruptError(12, JSON.stringify({ ...commands[5], force: true }))).toMatch(/force/);
  });
});

describe('an apply result from another node', () => {
  it('keeps the result of each report of a batch', () => {
    const result = {
      ok: true,
      results: [{ ok: true }, { ok: false, code: 'NOT_FOUND', message: 'no task x' }],
    };
    expect(applyResultSchema.parse(result)).toEqual(result);
    expect(applyResultSchema.safeParse({ ok: true, results: [{ ok: false, code: 'GONE' }] }).success).toBe(
      false,
    );
  });
});

describe('a submission', () => {
  it('keeps one task as it is', () => {
    expect(expandSubmission(spec, { replicas: 1, gang: false }, 'aaaaaaaaaaaa')).toEqual([
      { id: 'aaaaaaaaaaaa', spec },
    ]);
  });

  it('makes replicas one job with ids derived from the first, the same on a retry', () => {
    const tasks = expandSubmission(spec, { replicas: 11, gang: true }, 'aaaaaaaaaaaa');
    expect(tasks).toHaveLength(11);
    expect(tasks[0]?.id).toBe('aaaaaaaaaaaa');
    expect(new Set(tasks.map((t) => t.id)).size).toBe(11);
    expect(tasks.every((t) => /^[0-9a-f]{12}$/.test(t.id))).toBe(true);
    expect(tasks.map((t) => t.spec.name).slice(9)).toEqual(['web-9', 'web-10']);
    expect(tasks.every((t) => t.spec.job === 'web' && t.spec.group === 'gang-aaaaaaaaaaaa')).toBe(true);
    expect(expandSubmission(spec, { replicas: 11, gang: true }, 'aaaaaaaaaaaa')).toEqual(tasks);
  });
});
