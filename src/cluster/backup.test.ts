import { describe, expect, it } from 'vitest';
import { isShoalError } from '../shared/errors.ts';
import {
  backupStateBytesMax,
  backupVersion,
  makeBackupFile,
  openBackupFile,
  parseBackupFile,
  type BackupFile,
} from './backup.ts';
import { decodeCommand, encodeCommand, type Command } from './command.ts';
import { ClusterState } from './state.ts';
import type { Task, TaskSpec } from './task.ts';
import type { TokenRecord } from './tokens.ts';

const MiB = 1024 * 1024;
const spec = (name: string, restart?: TaskSpec['restart']): TaskSpec => ({
  name,
  driver: 'exec',
  command: ['sleep', '60'],
  cpuMillis: 100,
  memoryBytes: 64 * MiB,
  priority: 50,
  env: {},
  constraints: {},
  ...(restart === undefined ? {} : { restart }),
});
const token = (accessorId: string, hashDigit: string): TokenRecord => ({
  accessorId,
  name: `token-${accessorId}`,
  role: 'admin',
  namespaces: null,
  secretHash: hashDigit.repeat(64),
  createdAtMs: 0,
  expiresAtMs: null,
});

/** A state applied through the commands a cluster would commit, at increasing indexes. */
function stateWith(nodeId: string): { state: ClusterState; apply: (command: Command) => void } {
  const state = new ClusterState();
  let index = 0;
  const apply = (command: Command): void => {
    // Through the codec, as every node applies a command: what the state takes, the log can carry.
    const result = state.apply(++index, decodeCommand(index, encodeCommand(command)));
    if (!result.ok) throw new Error(result.message);
  };
  apply({
    type: 'upsertNode',
    node: {
      id: nodeId,
      name: nodeId,
      address: 'h:1',
      capacity: { cpuMillis: 4000, memoryBytes: 4096 * MiB },
      labels: {},
      drivers: ['exec'],
    },
    atMs: 0,
  });
  return { state, apply };
}

/** An old cluster: a running service that restarts, a running one-shot, a waiting task, a finished one. */
function oldCluster(): ClusterState {
  const { state, apply } = stateWith('old-node');
  const always = { policy: 'always' as const, maxRestarts: null, delayMs: 1000 };
  apply({ type: 'submitTask', id: 'aaaaaaaaaaa1', spec: spec('service', always), atMs: 1 });
  apply({
    type: 'submitTask',
    id: 'aaaaaaaaaaa2',
    spec: { ...spec('one-shot'), reschedule: 'never' },
    atMs: 1,
  });
  apply({ type: 'submitTask', id: 'aaaaaaaaaaa4', spec: spec('done'), atMs: 1 });
  apply({
    type: 'assignTasks',
    term: 1,
    assignments: ['aaaaaaaaaaa1', 'aaaaaaaaaaa2', 'aaaaaaaaaaa4'].map((taskId) => ({
      taskId,
      nodeId: 'old-node',
    })),
    waiting: [],
    atMs: 2,
  });
  apply({ type: 'submitTask', id: 'aaaaaaaaaaa3', spec: spec('waiting'), atMs: 3 });
  for (const taskId of ['aaaaaaaaaaa1', 'aaaaaaaaaaa2', 'aaaaaaaaaaa4'])
    apply({
      type: 'reportTask',
      nodeId: 'old-node',
      taskId,
      attempt: 0,
      state: 'running',
      exitCode: null,
      reason: null,
      atMs: 4,
    });
  apply({
    type: 'reportTask',
    nodeId: 'old-node',
    taskId: 'aaaaaaaaaaa4',
    attempt: 0,
    state: 'finished',
    exitCode: 0,
    reason: null,
    atMs: 5,
  });
  apply({ type: 'setNamespace', policy: { name: 'team', weight: 3, quota: null }, atMs: 6 });
  apply({ type: 'createToken', token: token('00000000000a', '1'), atMs: 6 });
  return state;
}

function backupOf(state: ClusterState): BackupFile {
  return makeBackupFile(state.toSnapshot(), {
    index: state.appliedIndex,
    tasks: state.tasks.size,
    atMs: 0,
    shoalVersion: '0.1.0',
  });
}

function refusal(run: () => unknown): string {
  try {
    run();
  } catch (error) {
    if (isShoalError(error)) return `${error.code}: ${error.message}`;
    throw error;
  }
  throw new Error('expected a refusal');
}

describe('the backup file', () => {
  it('round-trips through its text, checksum and all', () => {
    const file = backupOf(oldCluster());
    const { file: read, state } = openBackupFile(parseBackupFile(JSON.stringify(file), 'f.json'), 'f.json');
    expect(read).toEqual(file);
    expect(state.tasks).toHaveLength(4);
    expect(file).toMatchObject({ format: 'shoal-snapshot', version: backupVersion, tasks: 4 });
  });

  it.each([
    [
      'not JSON',
      (text: string) => text.slice(0, 40),
      /^INVALID_ARGUMENT: f\.json is not a shoal snapshot: it is not JSON/,
    ],
    ['foreign JSON', () => '{"header":{},"kvs":[]}', /is not a shoal snapshot \(it has no "format"/],
    [
      'a newer version',
      (text: string) => text.replace(`"version":${backupVersion}`, '"version":99'),
      /written by a newer shoal \(snapshot version 99; this one reads 1\)/,
    ],
    [
      'a changed byte of state',
      (text: string) => text.replace('one-shot', 'one-shoT'),
      /^CORRUPT_DATA: f\.json is corrupt: its state does not match its SHA-256 checksum/,
    ],
    [
      'a missing field',
      (text: string) => text.replace('"sha256"', '"sha512"'),
      /^CORRUPT_DATA: f\.json is damaged: /,
    ],
  ])('refuses %s with the reason', (_what, damage, message) => {
    const text = JSON.stringify(backupOf(oldCluster()));
    expect(refusal(() => openBackupFile(parseBackupFile(damage(text), 'f.json'), 'f.json'))).toMatch(message);
  });

  it('refuses a well-checksummed state this version cannot restore, and one too large to replicate', () => {
    const odd = makeBackupFile(JSON.stringify({ appliedIndex: 1, tasks: [{ id: 'x' }], terminalOrder: [] }), {
      index: 1,
      tasks: 1,
      atMs: 0,
      shoalVersion: '0.1.0',
    });
    expect(refusal(() => openBackupFile(odd, 'the snapshot'))).toMatch(
      /^CORRUPT_DATA: the snapshot holds a state this version cannot restore: tasks\.0\./,
    );
    const huge = makeBackupFile('x'.repeat(backupStateBytesMax + 1), {
      index: 1,
      tasks: 0,
      atMs: 0,
      shoalVersion: '0.1.0',
    });
    expect(refusal(() => openBackupFile(huge, 'the snapshot'))).toMatch(
      /^TOO_LARGE: .* this version restores at most/,
    );
  });
});

describe('restoring a backup into a cluster', () => {
  function restored(keepClusterCa = false): ClusterState {
    const { state: backup } = openBackupFile(backupOf(oldCluster()), 'f');
    const { state, apply } = stateWith('new-node');
    apply({ type: 'createToken', token: token('00000000000b', '2'), atMs: 7 });
    apply({ type: 'restoreBackup', backup, keepClusterCa, atMs: 10_000 });
    return state;
  }

  it('keeps waiting tasks waiting and ended ones ended; tasks that ran come back lost, queued again by policy', () => {
    const state = restored();
    const task = (id: string): Task | undefined => state.tasks.get(id);
    expect(task('aaaaaaaaaaa3')).toMatchObject({ state: 'pending', nodeId: null });
    expect(task('aaaaaaaaaaa4')).toMatchObject({ state: 'finished', exitCode: 0 });
    expect(task('aaaaaaaaaaa2')).toMatchObject({ state: 'lost', nodeId: null });
    expect(task('aaaaaaaaaaa2')?.reason).toBe(
      'restored from a snapshot; its node old-node is not in this cluster',
    );
    // The service restarts by its policy: pending again, a new attempt, at once (its node was lost; it
    // did not fail).
    expect(task('aaaaaaaaaaa1')).toMatchObject({ state: 'pending', attempt: 1, notBeforeMs: 10_000 });
    expect(state.pendingTasks().map((t) => t.id)).toEqual(['aaaaaaaaaaa1', 'aaaaaaaaaaa3']);
    // Nothing is held on the new node, and the old node is not this cluster's.
    expect(state.freeOn('new-node')).toMatchObject({ cpuMillis: 4000, memoryBytes: 4096 * MiB });
    expect([...state.nodes.keys()]).toEqual(['new-node']);
  });

  it("adds the backup's namespaces and tokens to this cluster's, which win where both have one", () => {
    const state = restored();
    expect(state.namespaces.get('team')).toEqual({ name: 'team', weight: 3, quota: null });
    expect([...state.tokens.keys()].sort()).toEqual(['00000000000a', '00000000000b']);
    expect(state.tokenBySecretHash('1'.repeat(64))?.accessorId).toBe('00000000000a');
  });

  it('places a restored task, and accounts for it, like any other', () => {
    const state = restored();
    state.apply(state.appliedIndex + 1, {
      type: 'assignTasks',
      term: 1,
      assignments: [{ taskId: 'aaaaaaaaaaa3', nodeId: 'new-node' }],
      waiting: [],
      atMs: 10_001,
    });
    expect(state.tasks.get('aaaaaaaaaaa3')).toMatchObject({ state: 'assigned', nodeId: 'new-node' });
    expect(state.freeOn('new-node')).toMatchObject({ cpuMillis: 3900 });
  });

  it('survives a Raft snapshot of its own: the restored state serializes and restores whole', () => {
    const state = restored();
    const copy = new ClusterState();
    copy.restore(state.toSnapshot());
    expect(copy.toSnapshot()).toBe(state.toSnapshot());
  });

  it('refuses a cluster that has tasks, and changes nothing', () => {
    const { state: backup } = openBackupFile(backupOf(oldCluster()), 'f');
    const { state, apply } = stateWith('new-node');
    apply({ type: 'submitTask', id: 'bbbbbbbbbbb1', spec: spec('mine'), atMs: 1 });
    const before = state.toSnapshot();
    const result = state.apply(state.appliedIndex + 1, {
      type: 'restoreBackup',
      backup,
      keepClusterCa: false,
      atMs: 2,
    });
    expect(result).toMatchObject({ ok: false, code: 'CONFLICT' });
    expect(JSON.parse(state.toSnapshot())).toEqual({
      ...JSON.parse(before),
      appliedIndex: state.appliedIndex,
    });
  });
});
