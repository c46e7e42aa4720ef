import { describe, expect, it } from 'vitest';
import {
  asksForRoot,
  dockerBridgeLabel,
  execRootLabel,
  taskConstraints,
  taskSpecSchema,
  type TaskSpec,
} from './task.ts';

const base: TaskSpec = {
  name: 't',
  driver: 'exec',
  command: ['true'],
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  priority: 50,
  env: {},
  constraints: { zone: 'a' },
};

describe('what a task needs of its node', () => {
  it('asks for root-capable nodes when an exec task names root or uid 0', () => {
    for (const user of ['root', '0', '0:0', 'root:staff']) {
      expect(asksForRoot({ ...base, user })).toBe(true);
      expect(taskConstraints({ ...base, user })).toEqual({ zone: 'a', [execRootLabel]: 'true' });
    }
    for (const user of [undefined, 'nobody', '1000', '10:0', 'rooted']) {
      const spec = user === undefined ? base : { ...base, user };
      expect(asksForRoot(spec)).toBe(false);
      expect(taskConstraints(spec)).toEqual({ zone: 'a' });
    }
  });

  it('asks for a bridge for a docker task with ports on the bridge', () => {
    const docker: TaskSpec = { ...base, driver: 'docker', image: 'x', dynamicPorts: ['http'] };
    expect(taskConstraints(docker)).toEqual({ zone: 'a', [dockerBridgeLabel]: 'true' });
  });
});

describe('user and pids in a spec', () => {
  it('takes NAME, UID and UID:GID, and a pids limit of at least 8', () => {
    for (const user of ['nobody', 'www-data', '1000', '1000:1000', 'app:staff'])
      expect(taskSpecSchema.safeParse({ ...base, user, pidsMax: 64 }).success).toBe(true);
  });

  it('refuses malformed users and tiny pids limits, saying why; a docker task may name its user', () => {
    const issues = (spec: object): string[] =>
      taskSpecSchema.safeParse(spec).error?.issues.map((issue) => issue.message) ?? [];
    expect(issues({ ...base, user: 'a b' })).toEqual([
      'a user is NAME, UID or UID:GID (e.g. nobody, 1000 or 1000:1000)',
    ]);
    expect(issues({ ...base, pidsMax: 2 })).toHaveLength(1);
    expect(issues({ ...base, driver: 'docker', image: 'x', user: '1000:1000' })).toEqual([]);
    expect(issues({ ...base, network: 'none' })).toEqual([]);
    expect(issues({ ...base, network: 'bridge' })).toEqual([
      'exec tasks use the host network (or none): bridge and port targets are for docker',
    ]);
  });
});
