/**
 * bench:snapshot — what a Raft snapshot of a big cluster costs a voter, in one process with no network:
 * builds the replicated state the way the log does (upsertNode, putJob, assignTasks, reportTasks), then
 * times each step of a compaction (the state machine's snapshot, saveSnapshot's encoding, checksum and
 * fsynced write) and of a restart (loadSnapshot, restore), and prints the heap the state holds per task.
 *
 *   npm run bench:snapshot [-- --tasks 500000 --nodes 5000 --tasks-per-job 1000]
 *
 * bench:scale runs the same work through real voters; this one isolates the snapshot, which stalls the
 * voter's event loop for as long as the steps it prints, added up.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { ClusterState, jobSpecSchema, type Command } from '../src/cluster/index.ts';
import { loadSnapshot, saveSnapshot, writeSnapshotAside } from '../src/election/index.ts';

const { values } = parseArgs({
  options: {
    tasks: { type: 'string', default: '500000' },
    nodes: { type: 'string', default: '5000' },
    'tasks-per-job': { type: 'string', default: '1000' },
  },
});
const taskCount = Number(values.tasks);
const nodeCount = Number(values.nodes);
const tasksPerJob = Number(values['tasks-per-job']);
for (const [flag, value] of [
  ['--tasks', taskCount],
  ['--nodes', nodeCount],
  ['--tasks-per-job', tasksPerJob],
] as const) {
  if (!Number.isInteger(value) || value <= 0) throw new Error(`${flag} takes a positive integer`);
}

const mebibyte = 1024 * 1024;
const gc = (globalThis as { gc?: () => void }).gc;
function heapBytes(): number {
  gc?.();
  return process.memoryUsage().heapUsed;
}
function timed<T>(what: string, run: () => T): T {
  const startedMs = performance.now();
  const result = run();
  console.log(`  ${what.padEnd(44)} ${(performance.now() - startedMs).toFixed(0).padStart(7)} ms`);
  return result;
}

const heapBeforeBytes = heapBytes();
const state = new ClusterState();
let index = 0;
const apply = (command: Command): void => {
  state.apply(++index, command);
};
const atMs = Date.now();
state.apply(++index, {
  type: 'setTaskLimits',
  limits: { liveTasksMax: taskCount * 2, terminalTasksRetainedMax: 10_000, terminalTaskRetentionMs: null },
  atMs,
});
const nodeIds: string[] = [];
for (let n = 0; n < nodeCount; n++) {
  // Peer ids are 52 characters; the simulated fleet's labels.
  const id = `12D3KooW${String(n).padStart(44, 'x')}`;
  nodeIds.push(id);
  apply({
    type: 'upsertNode',
    node: {
      id,
      name: `sim-${n}`,
      address: `/ip4/127.0.0.1/tcp/4700/p2p/${id}`,
      capacity: { cpuMillis: 64_000, memoryBytes: 256 * 1024 * mebibyte },
      labels: { rack: `r${n % 5}`, fleet: 'simulated' },
      drivers: ['exec'],
    },
    atMs,
  });
}
const buildStartedMs = performance.now();
const jobCount = Math.ceil(taskCount / tasksPerJob);
for (let j = 0; j < jobCount; j++) {
  const job = jobSpecSchema.parse({
    name: `scale-${String(j).padStart(5, '0')}`,
    type: 'batch',
    count: Math.min(tasksPerJob, taskCount - j * tasksPerJob),
    constraints: { fleet: 'simulated' },
    task: { driver: 'exec', command: ['sleep', '86400'], cpuMillis: 10, memoryMiB: 16 },
  });
  apply({ type: 'putJob', job, atMs });
}
const pending = [...state.tasks.values()].filter((task) => task.state === 'pending').map((task) => task.id);
let next = 0;
const byNode = new Map<string, string[]>();
for (let from = 0; from < pending.length; from += 1000) {
  const assignments = pending.slice(from, from + 1000).map((taskId) => {
    const nodeId = nodeIds[next++ % nodeIds.length] ?? '';
    let mine = byNode.get(nodeId);
    if (mine === undefined) byNode.set(nodeId, (mine = []));
    mine.push(taskId);
    return { taskId, nodeId };
  });
  apply({ type: 'assignTasks', term: 1, assignments, waiting: [], atMs });
}
for (const [nodeId, taskIds] of byNode) {
  for (let from = 0; from < taskIds.length; from += 256) {
    const reports = taskIds
      .slice(from, from + 256)
      .map((taskId) => ({ taskId, attempt: 0, state: 'running' as const, exitCode: null, reason: null }));
    apply({ type: 'reportTasks', nodeId, reports, atMs });
  }
}
const running = [...state.tasks.values()].filter((task) => task.state === 'running').length;
const heapAfterBytes = heapBytes();
console.log(
  `bench:snapshot: ${nodeCount} nodes, ${jobCount} jobs, ${state.tasks.size} tasks (${running} running), built in ${((performance.now() - buildStartedMs) / 1000).toFixed(1)} s through ${index} log entries`,
);
console.log(
  `heap the state holds: ${((heapAfterBytes - heapBeforeBytes) / mebibyte).toFixed(0)} MiB, ${((heapAfterBytes - heapBeforeBytes) / state.tasks.size).toFixed(0)} bytes a task${gc === undefined ? ' (run with --expose-gc for exact figures)' : ''}`,
);

const dir = mkdtempSync(join(tmpdir(), 'shoal-bench-snapshot-'));
try {
  console.log('compaction (on the voter’s main thread):');
  const compactionStartedMs = performance.now();
  const data = timed('the state machine’s snapshot (toSnapshot)', () => state.toSnapshot());
  const snapshot = { index, term: 1, config: { voters: ['a', 'b', 'c'], learners: [] }, data };
  // What the service does: encode and checksum on the main thread, write and fsync off it.
  const delay = monitorEventLoopDelay({ resolution: 10 });
  delay.enable();
  const asideStartedMs = performance.now();
  const writing = writeSnapshotAside(dir, snapshot);
  const encodeMs = performance.now() - asideStartedMs;
  const putInPlace = await writing;
  const asideMs = performance.now() - asideStartedMs;
  delay.disable();
  timed('put in place (rename, fsync the directory)', putInPlace);
  console.log(
    `  writeSnapshotAside: encode and checksum ${encodeMs.toFixed(0)} ms on the main thread, then write and fsync off it (the main thread held at most ${(delay.max / 1e6).toFixed(0)} ms at a time); ${asideMs.toFixed(0)} ms in all`,
  );
  const compactionMs = performance.now() - compactionStartedMs;
  const fileBytes = statSync(join(dir, 'snapshot.bin')).size;
  console.log(
    `  = ${compactionMs.toFixed(0)} ms until in place; snapshot ${(data.length / mebibyte).toFixed(0)} Mi characters (${(data.length / state.tasks.size).toFixed(0)} a task), file ${(fileBytes / mebibyte).toFixed(0)} MiB`,
  );
  timed('saveSnapshot (all on the main thread, as on install)', () => saveSnapshot(dir, snapshot));
  console.log('restart (before the node can vote):');
  const restartStartedMs = performance.now();
  const loaded = timed('loadSnapshot (read, checksum, decode)', () => loadSnapshot(dir));
  const restored = new ClusterState();
  timed('restore', () => restored.restore(loaded?.data ?? ''));
  console.log(`  = ${(performance.now() - restartStartedMs).toFixed(0)} ms; ${restored.tasks.size} tasks`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
