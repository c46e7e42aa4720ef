/**
 * bench:api — what the API's protections cost: three real agents (dist/shoal), 64 concurrent clients
 * submitting through the leader for `--seconds` each way, in the same run:
 *   1. the leader's Unix socket: no token, no TLS (the baseline);
 *   2. TCP on loopback with a token (the ACL check on every request).
 * Prints submissions/s and per-submission p50/p99, and each way's cost against the baseline. Every
 * submission is one log entry, committed by a quorum and fsynced before it is answered; the tasks are
 * constrained to a label no node has, so none runs.
 *
 *   npm run build && npm run bench:api [-- --seconds 10 --concurrency 64]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ShoalClient } from '../src/api/index.ts';
import type { TaskSpec } from '../src/cluster/index.ts';
import { closeClients, managementToken, percentile, requireBinary } from './lib/bench.ts';
import { cluster, leaderOf, stopAll } from './lib/cluster.ts';

const root = resolve(import.meta.dirname, '..');
const binary = join(root, 'dist', 'shoal');
requireBinary(binary);
const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '64' },
  },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);

const spec = (name: string): TaskSpec => ({
  name,
  driver: 'exec',
  command: ['true'],
  cpuMillis: 1,
  memoryBytes: 1024 * 1024,
  priority: 50,
  env: {},
  constraints: { bench: 'never' },
});

interface Figures {
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** `concurrency` clients submitting as fast as they are answered, for `seconds`. */
async function drive(label: string, makeClient: () => ShoalClient): Promise<Figures> {
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const clients = Array.from({ length: concurrency }, makeClient);
  await Promise.all(
    clients.map(async (client, worker) => {
      let n = 0;
      while (performance.now() < deadline) {
        const started = performance.now();
        await client.submit(spec(`${label}-${worker}-${n++}`));
        latencies.push(performance.now() - started);
      }
    }),
  );
  for (const client of clients) client.close();
  latencies.sort((a, b) => a - b);
  return {
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
  };
}

function line(label: string, figures: Figures, baseline: Figures | null): void {
  const cost =
    baseline === null
      ? ''
      : `; ${((1 - figures.perSecond / baseline.perSecond) * 100).toFixed(1)} % fewer/s than the socket`;
  console.log(
    `${label}: ${figures.perSecond.toFixed(0)} submissions/s, p50 ${figures.p50Ms.toFixed(1)} ms, p99 ${figures.p99Ms.toFixed(1)} ms${cost}`,
  );
}

const workDir = mkdtempSync(join(tmpdir(), 'shoal-bench-api-'));
try {
  const agents = await cluster(binary, 3, workDir);
  const leader = await leaderOf(agents);
  const first = agents[0];
  if (!first) throw new Error('no agents');
  const token = await managementToken(first.dataDir);
  console.log(`3 voters, ${concurrency} clients through the leader (${leader.name}), ${seconds} s each:`);
  const socket = `unix:${join(leader.dataDir, 'api.sock')}`;
  // A short warm-up, so neither way pays for the first JIT compilation and connections.
  await drive('warm', () => new ShoalClient({ address: socket }));
  const baseline = await drive('socket', () => new ShoalClient({ address: socket }));
  line('  unix socket, no token, no TLS', baseline, null);
  const tcp = await drive('tcp', () => new ShoalClient({ address: leader.api, token }));
  line('  TCP on loopback with a token', tcp, baseline);
  await stopAll(agents);
} finally {
  closeClients();
  rmSync(workDir, { recursive: true, force: true });
}
