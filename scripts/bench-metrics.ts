/**
 * bench:metrics — what one scrape of GET /metrics costs the leader of a 10,000-task cluster: the node's
 * metrics (src/node/metrics.ts) over a replicated state of --tasks tasks on --nodes nodes, built through
 * the state machine. Raft and membership are absent (their gauges read a handful of numbers); the cost is
 * in walking the tasks and nodes and writing the exposition. Prints the exposition's size and the time per
 * scrape, p50 and p99 of --scrapes.
 *
 *   node_modules/.bin/node scripts/bench-metrics.ts [--tasks 10000] [--nodes 100] [--scrapes 200]
 */
import { parseArgs } from 'node:util';
import { ClusterState, nodeIdLabel } from '../src/cluster/index.ts';
import { NodeMetrics } from '../src/node/index.ts';
import { percentile } from './lib/bench.ts';

const { values: args } = parseArgs({
  options: {
    tasks: { type: 'string', default: '10000' },
    nodes: { type: 'string', default: '100' },
    scrapes: { type: 'string', default: '200' },
  },
});
const taskCount = Number(args.tasks);
const nodeCount = Number(args.nodes);
const scrapes = Number(args.scrapes);
const MiB = 1024 * 1024;

const state = new ClusterState();
let index = 0;
for (let i = 0; i < nodeCount; i++) {
  const id = `node-${i}`;
  state.apply(++index, {
    type: 'upsertNode',
    node: {
      id,
      name: id,
      address: '10.0.0.1:4700',
      capacity: { cpuMillis: 64_000, memoryBytes: 256 * 1024 * MiB },
      labels: { [nodeIdLabel]: id },
      drivers: ['exec'],
    },
    atMs: 0,
  });
}
const namespaces = ['default', 'team-a', 'team-b', 'batch'];
for (let i = 0; i < taskCount; i++) {
  const id = i.toString(16).padStart(12, '0');
  state.apply(++index, {
    type: 'submitTask',
    id,
    spec: {
      name: `t${i}`,
      driver: 'exec',
      command: ['sleep', '600'],
      cpuMillis: 100,
      memoryBytes: 64 * MiB,
      priority: i % 100,
      env: {},
      constraints: {},
      namespace: namespaces[i % namespaces.length] ?? 'default',
    },
    atMs: 0,
  });
  // Four in five run; the rest wait.
  if (i % 5 !== 0)
    state.apply(++index, {
      type: 'assignTasks',
      term: 1,
      assignments: [{ taskId: id, nodeId: `node-${i % nodeCount}` }],
      waiting: [],
      atMs: 1,
    });
}
const metrics = new NodeMetrics({
  state,
  raft: () => null,
  membership: () => null,
  nameOf: (id) => id,
  eventLoopStallMsMax: () => 12,
});
for (let i = 0; i < 200; i++) metrics.apiRequest(i % 2 === 0 ? 'tasks' : 'submit', 200, 0.002);
const times: number[] = [];
let bytes = 0;
for (let i = 0; i < scrapes; i++) {
  const started = performance.now();
  const text = await metrics.text();
  times.push(performance.now() - started);
  bytes = text.length;
}
times.sort((a, b) => a - b);
console.log(
  `/metrics on a state of ${taskCount} tasks on ${nodeCount} nodes: ${bytes} bytes; per scrape p50 ${percentile(times, 50).toFixed(2)} ms, p99 ${percentile(times, 99).toFixed(2)} ms (${scrapes} scrapes; target ≤ 20 ms)`,
);
