import { describe, expect, it, vi } from 'vitest';
import {
  ClusterState,
  decodeCommand,
  liveTasksRefusal,
  taskLimitsBefore,
  type Command,
  type TaskLimits,
  type TaskSpec,
} from '../cluster/index.ts';
import { isShoalError } from '../shared/index.ts';
import { NodeBackend, type BackendInit } from './backend.ts';

const spec: TaskSpec = {
  name: 't',
  driver: 'exec',
  command: ['true'],
  cpuMillis: 1,
  memoryBytes: 1024 * 1024,
  priority: 50,
  env: {},
  constraints: {},
};
const mine: TaskLimits = { liveTasksMax: 3, terminalTasksRetainedMax: 100, terminalTaskRetentionMs: 60_000 };

/**
 * A backend over a state of its own: proposals through `control` are applied to it, as the leader would;
 * `raft` is this node as the ready leader (or not), its proposals applied the same way.
 */
function backend(options: { readonly leader?: boolean } = {}): {
  backend: NodeBackend;
  state: ClusterState;
  proposed: Command[];
  barriers: () => number;
} {
  const state = new ClusterState();
  const proposed: Command[] = [];
  let barriers = 0;
  const apply = (command: Command): ReturnType<ClusterState['apply']> => {
    proposed.push(command);
    return state.apply(state.appliedIndex + 1, command);
  };
  const control = {
    readBarrier: vi.fn(() => {
      barriers++;
      return Promise.resolve();
    }),
    readIndexOnce: vi.fn(() => Promise.resolve()),
    proposeOrThrow: vi.fn((command: Command) => {
      const result = apply(command);
      return result.ok ? Promise.resolve() : Promise.reject(new Error(result.message));
    }),
  };
  const raft = {
    isReadyLeader: () => options.leader ?? true,
    propose: vi.fn((data: string) => Promise.resolve(apply(decodeCommand(state.appliedIndex + 1, data)))),
  };
  // Only what submission and the limits use: the rest of a node is not needed here.
  const init = { state, control, raft, taskLimits: mine } as unknown as BackendInit;
  return { backend: new NodeBackend(init), state, proposed, barriers: () => barriers };
}

describe('admission of submissions', () => {
  it('proposes while the cluster has room, without a read barrier', async () => {
    const { backend: node, state, barriers } = backend();
    state.apply(1, { type: 'setTaskLimits', limits: mine, atMs: 0 });
    await node.submit(spec, { replicas: 3, gang: false });
    expect(state.liveTaskCount).toBe(3);
    expect(barriers()).toBe(0);
  });

  it('refuses a submission the cluster is too full for, after a read barrier, before it costs an entry', async () => {
    const { backend: node, state, proposed, barriers } = backend();
    state.apply(1, { type: 'setTaskLimits', limits: mine, atMs: 0 });
    await node.submit(spec, { replicas: 2, gang: false });
    proposed.length = 0;
    let error: unknown = null;
    try {
      await node.submit(spec, { replicas: 2, gang: false });
    } catch (caught) {
      error = caught;
    }
    expect(isShoalError(error, 'CONFLICT')).toBe(true);
    expect((error as Error).message).toBe(liveTasksRefusal(2, 2, mine));
    expect(proposed).toEqual([]);
    expect(barriers()).toBe(1);
  });

  it('lets a retried submission the cluster holds through, full or not (ids are idempotent)', async () => {
    const { backend: node, state, proposed } = backend();
    state.apply(1, { type: 'setTaskLimits', limits: { ...mine, liveTasksMax: 1 }, atMs: 0 });
    const [id] = await node.submit(spec, { replicas: 1, gang: false, id: 'aaaaaaaaaaaa' });
    expect(id).toBe('aaaaaaaaaaaa');
    expect(await node.submit(spec, { replicas: 1, gang: false, id: 'aaaaaaaaaaaa' })).toEqual([id]);
    expect(proposed.map((command) => command.type)).toEqual(['submitTask', 'submitTask']);
  });
});

describe('the leader’s task limits', () => {
  it('become the cluster’s when they differ, proposed by the ready leader itself', async () => {
    const { backend: node, state, proposed } = backend();
    expect(state.taskLimits).toEqual(taskLimitsBefore);
    await node.adoptTaskLimits();
    expect(state.taskLimits).toEqual(mine);
    expect(proposed.map((command) => command.type)).toEqual(['setTaskLimits']);
    // The same again: nothing to propose.
    await node.adoptTaskLimits();
    expect(proposed).toHaveLength(1);
  });

  it('are not proposed by a node that is no longer the leader', async () => {
    const { backend: node, state, proposed } = backend({ leader: false });
    await node.adoptTaskLimits();
    expect(proposed).toEqual([]);
    expect(state.taskLimits).toEqual(taskLimitsBefore);
  });
});
