import { describe, expect, it } from 'vitest';
import { isShoalError } from '../shared/errors.ts';
import { decodeCommand, encodeCommand, type Command } from './command.ts';
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
];

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

  it('refuses fields it does not know (a newer version wrote the entry)', () => {
    expect(corruptError(12, JSON.stringify({ ...commands[5], force: true }))).toMatch(/force/);
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
