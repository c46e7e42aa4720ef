/**
 * bench:start — from `shoal run` (the API call) to the task running, p50 and p99, for the exec driver
 * (isolated, and on a second agent with --isolation off, when run as root; with an image from a registry,
 * SHOAL_BENCH_DOCKER_IMAGE=HOST:PORT/NAME:TAG, also exec in that image without an engine) and,
 * when a Docker engine is given (SHOAL_BENCH_DOCKER_SOCKET, SHOAL_BENCH_DOCKER_IMAGE), the docker driver
 * beside a bare `docker run -d` in the same run. Also prints the agent's idle RSS and the binary's size.
 *
 *   npm run build && npm run bench:start [-- --tasks 200]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { client, closeClients, percentile, requireBinary, startBenchAgent } from './lib/bench.ts';
import type { TaskSpec } from '../src/cluster/index.ts';

const root = resolve(import.meta.dirname, '..');
const binary = join(root, 'dist', 'shoal');
requireBinary(binary);
const { values } = parseArgs({ options: { tasks: { type: 'string', default: '200' } } });
const taskCount = Number(values.tasks);
const dockerSocket = process.env['SHOAL_BENCH_DOCKER_SOCKET'];
const dockerImage = process.env['SHOAL_BENCH_DOCKER_IMAGE'];

function summary(label: string, samples: number[]): void {
  const sorted = [...samples].sort((a, b) => a - b);
  console.log(
    `${label}: n=${sorted.length} p50=${percentile(sorted, 50).toFixed(1)} ms p99=${percentile(sorted, 99).toFixed(1)} ms max=${(sorted.at(-1) ?? NaN).toFixed(1)} ms`,
  );
}

async function measure(address: string, spec: Omit<TaskSpec, 'name'>): Promise<number[]> {
  const samples: number[] = [];
  const ids: string[] = [];
  for (let i = 0; i < taskCount; i++) {
    const started = performance.now();
    const { id } = await client(address).submit({ ...spec, name: `bench${i}` });
    for (;;) {
      const task = await client(address).task(id);
      if (task.state === 'running') break;
      if (task.state !== 'pending' && task.state !== 'assigned' && task.state !== 'starting') {
        throw new Error(`task ${id} ended ${task.state}: ${task.reason ?? ''}`);
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    samples.push(performance.now() - started);
    ids.push(id);
  }
  // Stop them after measuring, so slow stops (docker's grace period) don't load the engine meanwhile.
  for (const id of ids) await client(address).kill(id);
  return samples;
}

const bench = await startBenchAgent({
  binary,
  name: 'start',
  cpu: 1000,
  memoryMiB: 65536,
  dockerSocket: dockerSocket ?? null,
});
const { apiAddress } = bench;
const agent = bench.process;
try {
  await new Promise((r) => setTimeout(r, 5000));
  const rssKiB = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${agent.pid}/status`, 'utf8'))?.[1]);
  console.log(
    `binary: ${(statSync(binary).size / 1e6).toFixed(1)} MB; idle agent RSS: ${(rssKiB / 1024).toFixed(1)} MiB`,
  );
  // Half a core each: a container's own start-up runs inside its CPU limit, so tiny limits slow the start.
  const base = { cpuMillis: 500, memoryBytes: 32 * 1024 * 1024, priority: 50, env: {}, constraints: {} };
  const execSpec = { ...base, driver: 'exec' as const, command: ['sleep', '60'] };
  const isolated = process.getuid?.() === 0;
  summary(
    `exec${isolated ? ' (isolated: nobody, own namespaces)' : ' (not isolated: not root)'}: shoal run -> running`,
    await measure(apiAddress, execSpec),
  );
  if (isolated) {
    // The same tasks on an agent that does not isolate them: what isolation costs a start.
    const plain = await startBenchAgent({
      binary,
      name: 'start-plain',
      cpu: 1000,
      memoryMiB: 65536,
      dockerSocket: null,
      extraArgs: ['--isolation', 'off'],
    });
    try {
      await new Promise((r) => setTimeout(r, 3000));
      summary('exec (--isolation off): shoal run -> running', await measure(plain.apiAddress, execSpec));
    } finally {
      await plain.stop();
    }
  }
  if (dockerImage && isolated && /^[^/]+[:.][^/]*\//.test(dockerImage)) {
    // The same image without an engine: the exec driver pulls it once (the first start), then each task
    // runs in its root under an overlay of its own.
    summary(
      'exec with --image (no engine; isolated): shoal run -> running',
      await measure(apiAddress, { ...execSpec, image: dockerImage }),
    );
  }
  if (dockerSocket && dockerImage) {
    summary(
      'docker: shoal run -> running',
      await measure(apiAddress, { ...base, driver: 'docker', image: dockerImage, command: ['sleep', '60'] }),
    );
    const bare: number[] = [];
    for (let i = 0; i < Math.min(taskCount, 50); i++) {
      const started = performance.now();
      const id = execFileSync('docker', [
        '-H',
        `unix://${dockerSocket}`,
        'run',
        '-d',
        '--network',
        'none',
        '--cpus',
        '0.5',
        '--memory',
        '32m',
        dockerImage,
        'sleep',
        '60',
      ])
        .toString()
        .trim();
      bare.push(performance.now() - started);
      execFileSync('docker', ['-H', `unix://${dockerSocket}`, 'rm', '-f', id], { stdio: 'ignore' });
    }
    summary('anchor: bare docker run -d', bare);
  } else {
    console.log('docker: skipped (set SHOAL_BENCH_DOCKER_SOCKET and SHOAL_BENCH_DOCKER_IMAGE)');
  }
  console.log(
    'anchor: classic Docker Swarm scheduling delay p50 230 ms, p99 400 ms (1,000 nodes, published)',
  );
} finally {
  closeClients();
  await bench.stop();
}
