/**
 * bench:raft — Raft commit throughput with three voters: three RaftService instances in one process over
 * real libp2p connections (TCP, pnet, noise, yamux) and real fsynced WALs, with `--inflight` proposals
 * outstanding. Prints committed proposals per second and the commit latency at that load.
 *
 *   npm run bench:raft [-- --seconds 10 --inflight 1024 --bytes 200]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { noise } from '@libp2p/noise';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { yamux } from '@libp2p/yamux';
import { multiaddr } from '@multiformats/multiaddr';
import { createLibp2p, type Libp2p } from 'libp2p';
import { Libp2pRaftTransport, RaftService, defaultRaftTimings } from '../src/election/index.ts';
import { silentLogger } from '../src/shared/log.ts';
import { seededRandom } from '../src/shared/random.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    inflight: { type: 'string', default: '1024' },
    bytes: { type: 'string', default: '200' },
  },
});
const seconds = Number(values.seconds);
const inflight = Number(values.inflight);
const payload = 'x'.repeat(Number(values.bytes));
const psk = new TextEncoder().encode(`/key/swarm/psk/1.0.0/\n/base16/\n${'ab'.repeat(32)}`);

const root = mkdtempSync(join(tmpdir(), 'shoal-bench-raft-'));
const hosts: Libp2p[] = [];
const services: RaftService[] = [];
try {
  for (let i = 0; i < 3; i++) {
    hosts.push(
      await createLibp2p({
        privateKey: await generateKeyPair('Ed25519'),
        addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
        transports: [tcp()],
        connectionProtector: preSharedKey({ psk }),
        connectionEncrypters: [noise()],
        streamMuxers: [yamux()],
      }),
    );
  }
  const addresses = hosts.map((host) => host.getMultiaddrs()[0]?.toString() ?? '');
  for (const a of hosts) {
    for (const [j, b] of hosts.entries()) if (a !== b) await a.dial(multiaddr(addresses[j] ?? ''));
  }
  const ids = hosts.map((h) => h.peerId.toString());
  for (const [i, host] of hosts.entries()) {
    const service = new RaftService({
      id: ids[i] ?? '',
      walDir: join(root, `n${i}`),
      transport: new Libp2pRaftTransport(host, silentLogger),
      timings: defaultRaftTimings,
      random: seededRandom(i + 1),
      logger: silentLogger,
      apply: () => undefined,
      snapshotState: () => '{}',
      restoreState: () => undefined,
    });
    services.push(service);
  }
  const [leader] = services;
  const [n0 = '', n1 = '', n2 = ''] = ids;
  if (!leader) throw new Error('no services');
  // n0 bootstraps alone, then adds the others as voters one at a time.
  leader.bootstrap();
  for (const service of services) await service.start();
  while (!leader.isReadyLeader()) await new Promise((r) => setTimeout(r, 10));
  await leader.proposeConfig({ voters: [n0], learners: [n1] }, 5000);
  await leader.proposeConfig({ voters: [n0, n1], learners: [] }, 5000);
  await leader.proposeConfig({ voters: [n0, n1], learners: [n2] }, 5000);
  await leader.proposeConfig({ voters: [n0, n1, n2], learners: [] }, 5000);

  let committed = 0;
  const latencies: number[] = [];
  const deadline = performance.now() + seconds * 1000;
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const started = performance.now();
      await leader.propose(payload, 10_000);
      latencies.push(performance.now() - started);
      committed++;
    }
  };
  const startedMs = performance.now();
  await Promise.all(Array.from({ length: inflight }, worker));
  const elapsedS = (performance.now() - startedMs) / 1000;
  latencies.sort((a, b) => a - b);
  const p = (q: number): string =>
    (latencies[Math.min(latencies.length - 1, Math.ceil(q * latencies.length) - 1)] ?? NaN).toFixed(1);
  console.log(
    `raft commit throughput (3 voters, one process, libp2p over TCP, fsynced WALs, ${inflight} in flight, ${payload.length}-byte entries): ${(committed / elapsedS).toFixed(0)} commits/s; commit latency p50=${p(0.5)} ms p99=${p(0.99)} ms`,
  );
} finally {
  for (const service of services) service.stop();
  for (const host of hosts) await host.stop();
  rmSync(root, { recursive: true, force: true });
}
