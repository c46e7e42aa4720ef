/**
 * bench:metrics — what one scrape of GET /metrics costs the leader of a 10,000-task cluster, two ways:
 *   1. in-process: the node's metrics (src/node/metrics.ts) over a replicated state of --tasks tasks on
 *      --nodes nodes, built through the state machine (the cost of walking the state and writing the text);
 *   2. a real agent (dist/shoal, when built): a cluster of three holding --tasks tasks (pending, one
 *      submission of replicas), its leader scraped over TCP with a token, as Prometheus would.
 * Prints the exposition's size and the time per scrape, p50 and p99 of --scrapes.
 *
 *   npm run build && npm run bench:metrics [-- --tasks 10000 --nodes 100 --scrapes 200]
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ClusterState, nodeIdLabel } from '../src/cluster/index.ts';
import { NodeMetrics } from '../src/node/index.ts';
import { client, closeClients, percentile } from './lib/bench.ts';
import { benchTaskSpec, cluster, leaderOf, stopAll } from './lib/cluster.ts';

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

const binary = join(resolve(import.meta.dirname, '..'), 'dist', 'shoal');
if (!existsSync(binary)) {
  console.log('real leader: skipped (npm run build first)');
} else {
  const workDir = mkdtempSync(join(tmpdir(), 'shoal-bench-metrics-'));
  try {
    const agents = await cluster(binary, 3, workDir);
    const leader = await leaderOf(agents);
    const api = client(leader.api, 120_000);
    // One submission of replicas, all pending (no node has the label): the state holds them all.
    await api.submit(benchTaskSpec('metrics', { bench: 'never' }), { replicas: taskCount, gang: false });
    const real: number[] = [];
    let realBytes = 0;
    for (let i = 0; i < scrapes; i++) {
      const started = performance.now();
      const text = await api.metrics();
      real.push(performance.now() - started);
      realBytes = text.length;
    }
    real.sort((a, b) => a - b);
    console.log(
      `/metrics from the leader of 3 agents holding ${taskCount} tasks, over TCP with a token: ${realBytes} bytes; per scrape p50 ${percentile(real, 50).toFixed(2)} ms, p99 ${percentile(real, 99).toFixed(2)} ms`,
    );
    await stopAll(agents);
  } finally {
    closeClients();
    rmSync(workDir, { recursive: true, force: true });
  }
}
