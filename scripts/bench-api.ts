/**
 * bench:api — what the API's protections cost: three real agents (dist/shoal), 64 concurrent clients
 * submitting through the leader for `--seconds` each way, in the same run:
 *   1. the leader's Unix socket: no token, no TLS (the baseline);
 *   2. TCP on loopback with a token (the ACL check on every request);
 *   3. TLS (--tls auto, the cluster CA) with a token: a second cluster of three, started with TLS.
 * Then the anchor, when Debian's etcd is installed: three etcd members, the same clients putting keys over
 * plain HTTP and over TLS with a client certificate (what `etcdctl --cert` sets up), in the same slices.
 * Prints submissions/s and per-submission p50/p99, and each way's cost against the baseline. Every
 * submission is one log entry, committed by a quorum and fsynced before it is answered; the tasks are
 * constrained to a label no node has, so none runs.
 *
 *   npm run build && npm run bench:api [-- --seconds 10 --concurrency 64]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ShoalClient } from '../src/api/index.ts';
import type { TaskSpec } from '../src/cluster/index.ts';
import { closeClients, managementToken, percentile, requireBinary } from './lib/bench.ts';
import { benchTaskSpec, cluster, leaderOf, stopAll } from './lib/cluster.ts';
import { EtcdPutClient, etcdAvailable, startEtcd } from './lib/etcd.ts';

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

/** Each submission is one log entry, and no task ever runs. */
const spec = (name: string): TaskSpec => benchTaskSpec(name, { bench: 'never' });

interface Figures {
  readonly perSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

/** One client of a way: it writes once per call, on a connection it keeps. */
interface WayClient {
  write(name: string): Promise<unknown>;
  close(): void;
}

/** A way to write: a label and a client factory. */
interface Way {
  readonly label: string;
  readonly makeClient: () => WayClient;
}

/** A shoal API client as a way's client: each write submits a task. */
function submitter(client: ShoalClient): WayClient {
  return { write: (name) => client.submit(spec(name)), close: () => client.close() };
}

/** How many slices each way's time is cut into, alternating with the other's. */
const slices = 5;

/**
 * `concurrency` clients per way, submitting as fast as they are answered. The ways take turns in short
 * slices: every submission adds a (pending) task, and a larger state commits more slowly, so a way
 * measured after another would pay for the other's tasks.
 */
async function compare(ways: readonly Way[]): Promise<Figures[]> {
  const latencies = ways.map(() => [] as number[]);
  const sliceMs = (seconds * 1000) / slices;
  // Each way keeps its clients (and their kept-alive connections) from slice to slice, as a real client would.
  const clientsByWay = ways.map((way) => Array.from({ length: concurrency }, way.makeClient));
  for (let slice = 0; slice < slices; slice++) {
    for (const [index, way] of ways.entries()) {
      const clients = clientsByWay[index] ?? [];
      const deadline = performance.now() + sliceMs;
      await Promise.all(
        clients.map(async (client, worker) => {
          let n = 0;
          while (performance.now() < deadline) {
            const started = performance.now();
            await client.write(`${way.label}-${slice}-${worker}-${n++}`);
            latencies[index]?.push(performance.now() - started);
          }
        }),
      );
    }
  }
  for (const client of clientsByWay.flat()) client.close();
  return latencies.map((samples) => {
    samples.sort((a, b) => a - b);
    return {
      perSecond: samples.length / seconds,
      p50Ms: percentile(samples, 50),
      p99Ms: percentile(samples, 99),
    };
  });
}

function line(
  label: string,
  figures: Figures,
  baseline: Figures | null,
  baselineName = 'the socket',
  unit = 'submissions',
): void {
  const cost =
    baseline === null
      ? ''
      : `; ${((1 - figures.perSecond / baseline.perSecond) * 100).toFixed(1)} % fewer/s than ${baselineName}`;
  console.log(
    `${label}: ${figures.perSecond.toFixed(0)} ${unit}/s, p50 ${figures.p50Ms.toFixed(1)} ms, p99 ${figures.p99Ms.toFixed(1)} ms${cost}`,
  );
}

/** An etcd client as a way's client: each write puts a key. */
function putter(client: EtcdPutClient): WayClient {
  return { write: (name) => client.put(`bench/${name}`, 'x'), close: () => client.close() };
}

function etcdVersion(): string {
  return /etcd Version: (\S+)/.exec(execFileSync('etcd', ['--version']).toString())?.[1] ?? '?';
}

function fail(): never {
  throw new Error('no figures');
}

const workDir = mkdtempSync(join(tmpdir(), 'shoal-bench-api-'));
try {
  const agents = await cluster(binary, 3, workDir);
  const leader = await leaderOf(agents);
  const first = agents[0];
  if (!first) throw new Error('no agents');
  const token = await managementToken(first.dataDir);
  console.log(
    `3 voters, ${concurrency} clients through the leader, ${seconds} s each way in ${slices} alternating slices:`,
  );
  const socket = `unix:${join(leader.dataDir, 'api.sock')}`;
  const plain = await compare([
    { label: 'socket', makeClient: () => submitter(new ShoalClient({ address: socket })) },
    { label: 'tcp', makeClient: () => submitter(new ShoalClient({ address: leader.api, token })) },
  ]);
  line('  unix socket, no token, no TLS', plain[0] ?? fail(), null);
  line('  TCP on loopback with a token', plain[1] ?? fail(), plain[0] ?? fail());
  await stopAll(agents);

  const secure = await cluster(binary, 3, join(workDir, 'tls'), { tls: true });
  const secureLeader = await leaderOf(secure);
  const secureFirst = secure[0];
  if (!secureFirst) throw new Error('no agents');
  const ca = (
    await new ShoalClient({ address: `unix:${join(secureFirst.dataDir, 'api.sock')}` }).call('clusterCa')
  ).certificatePem;
  const secureToken = await managementToken(secureFirst.dataDir);
  const secureSocket = `unix:${join(secureLeader.dataDir, 'api.sock')}`;
  const tls = await compare([
    { label: 'socket2', makeClient: () => submitter(new ShoalClient({ address: secureSocket })) },
    {
      label: 'tls',
      makeClient: () =>
        submitter(new ShoalClient({ address: `https://${secureLeader.api}`, token: secureToken, ca })),
    },
  ]);
  console.log('a second cluster of three, with --tls auto:');
  line('  unix socket, no token, no TLS', tls[0] ?? fail(), null);
  line('  TLS (the cluster CA) with a token', tls[1] ?? fail(), tls[0] ?? fail());
  await stopAll(secure);

  if (!etcdAvailable()) {
    console.log(
      'etcd anchor: skipped (needs etcd, etcdctl and openssl: apt install etcd-server etcd-client)',
    );
  } else {
    const etcd = await startEtcd(mkdtempSync(join(workDir, 'etcd-')));
    try {
      const anchor = await compare([
        { label: 'etcd-http', makeClient: () => putter(new EtcdPutClient(etcd.plainUrl, null)) },
        { label: 'etcd-tls', makeClient: () => putter(new EtcdPutClient(etcd.tlsUrl, etcd.tls)) },
      ]);
      console.log(
        `anchor: etcd ${etcdVersion()}, 3 members, ${concurrency} clients putting through the leader's JSON gateway (/v3/kv/put):`,
      );
      line('  plain HTTP', anchor[0] ?? fail(), null, 'plain HTTP', 'puts');
      line(
        '  TLS with a client certificate (etcdctl --cert)',
        anchor[1] ?? fail(),
        anchor[0] ?? fail(),
        'plain HTTP',
        'puts',
      );
    } finally {
      etcd.stop();
    }
  }
} finally {
  closeClients();
  rmSync(workDir, { recursive: true, force: true });
}
