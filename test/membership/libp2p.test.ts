/**
 * Membership's shell on real libp2p hosts in one process (TCP on loopback, pnet, noise, yamux): join
 * through a seed, a crashed host declared dead, a graceful leave, and the yamux window-update batching
 * that p2p.ts applies (flow control must still work for large transfers).
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import { lpStream } from '@libp2p/utils';
import { afterEach, describe, expect, it } from 'vitest';
import {
  MembershipService,
  defaultMembershipConfig,
  type MembershipConfig,
} from '../../src/membership/index.ts';
import { createP2p, yamuxWindowUpdatesBatched, type ShoalLibp2p } from '../../src/node/p2p.ts';
import { silentLogger, type Logger } from '../../src/shared/log.ts';
import { waitUntil } from '../../scripts/lib/membership-agents.ts';

const clusterKey = 'cd'.repeat(32);

interface Host {
  readonly name: string;
  readonly libp2p: ShoalLibp2p;
  readonly membership: MembershipService;
}

const hosts: Host[] = [];

async function host(
  name: string,
  config: MembershipConfig = defaultMembershipConfig,
  options: { key?: string; listen?: string; logger?: Logger } = {},
): Promise<Host> {
  const libp2p = await createP2p({
    privateKey: await generateKeyPair('Ed25519'),
    listenMultiaddr: options.listen ?? '/ip4/127.0.0.1/tcp/0',
    clusterKey: options.key ?? clusterKey,
  });
  const membership = new MembershipService({
    libp2p,
    self: {
      name,
      address: '127.0.0.1:0',
      cpuMillis: 1000,
      memoryBytes: 1 << 30,
      labels: { name },
      drivers: ['exec'],
      version: 'test',
      incarnation: 1,
    },
    config,
    logger: options.logger ?? silentLogger,
    onTransition: () => undefined,
  });
  await membership.start();
  const created = { name, libp2p, membership };
  hosts.push(created);
  return created;
}

function seedAddress(seed: Host): string {
  return (seed.libp2p.getMultiaddrs()[0]?.toString() ?? '').replace(/\/p2p\/.*$/, '');
}

function stateIn(observer: Host, subject: Host): string | undefined {
  return observer.membership.member(subject.membership.selfId)?.state;
}

afterEach(async () => {
  for (const h of hosts.splice(0)) {
    h.membership.stop();
    try {
      await h.libp2p.stop();
    } catch {
      // Already stopped by the test.
    }
  }
});

describe('membership over libp2p, in one process', () => {
  it('a seed that fails one handshake (bug 5: it was going down) is retried; a wrong key is named within 5 s', async () => {
    // What a wrong key looks like to the dialler, at the seed's address: then the right cluster there.
    const impostor = await host('impostor', defaultMembershipConfig, { key: 'ef'.repeat(32) });
    const address = seedAddress(impostor);
    const joiner = await host('joiner');
    const joined = joiner.membership.join([address], 15_000);
    // One refused handshake (the join retries half a second later), then the seed is a cluster member.
    await new Promise((resolve) => setTimeout(resolve, 300));
    impostor.membership.stop();
    await impostor.libp2p.stop();
    const seed = await host('seed', defaultMembershipConfig, { listen: address });
    await joined;
    await waitUntil('the joiner to see the seed', () => stateIn(joiner, seed) === 'alive', 10_000, 20);

    // A seed that keeps failing the handshake holds another key: named from the first failure, and the
    // join gives up within 5 s (join.ts: 4.5 s at worst, when the first dial stalls), not after its timeout.
    const wrong = await host('wrong', defaultMembershipConfig, { key: 'ab'.repeat(32) });
    const warnings: string[] = [];
    const lonely = await host('lonely', defaultMembershipConfig, {
      logger: { ...silentLogger, warn: (message) => warnings.push(message) },
    });
    const startedMs = Date.now();
    await expect(lonely.membership.join([seedAddress(wrong)], 40_000)).rejects.toThrow(
      /refused: the handshake failed, which means the cluster key does not match/,
    );
    // 5 s, and a margin for a loaded machine.
    expect(Date.now() - startedMs).toBeLessThan(6500);
    expect(warnings).toEqual([expect.stringMatching(/the handshake failed \(wrong cluster key\?\)/)]);
  }, 120_000);

  it('joins through a seed, declares a crashed host dead, and a leaving host "left"', async () => {
    // Members here are seconds old: without the grace for fresh starts, the test stays short.
    const config = { ...defaultMembershipConfig, joinGraceMs: 0 };
    const [a, b, c, d] = [
      await host('a', config),
      await host('b', config),
      await host('c', config),
      await host('d', config),
    ];
    for (const joiner of [b, c, d]) await joiner.membership.join([seedAddress(a)], 10_000);
    const all = [a, b, c, d];
    await waitUntil(
      'everyone to see everyone alive',
      () => all.every((x) => all.every((y) => stateIn(x, y) === 'alive')),
      10_000,
      20,
    );
    // Records are the signed ones each host published: labels travelled intact.
    expect(a.membership.member(d.membership.selfId)?.record.labels).toEqual({ name: 'd' });

    // d's process "crashes": its connections close at once, which prompts an immediate probe.
    d.membership.stop();
    await d.libp2p.stop();
    const crashedAt = Date.now();
    await waitUntil('d to be seen dead', () => [a, b, c].every((x) => stateIn(x, d) === 'dead'), 15_000, 20);
    expect(Date.now() - crashedAt).toBeLessThan(5000);

    // c leaves gracefully: "left" everywhere, never "dead", even after it stops.
    await c.membership.leave();
    c.membership.stop();
    await c.libp2p.stop();
    await waitUntil('c to be seen left', () => [a, b].every((x) => stateIn(x, c) === 'left'), 5000, 20);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    expect([a, b].map((x) => stateIn(x, c))).toEqual(['left', 'left']);
    expect(a.membership.stats().badSignatures).toBe(0);
  }, 60_000);

  it('batches yamux window updates without breaking flow control on large transfers', async () => {
    expect(yamuxWindowUpdatesBatched).toBe(true);
    const [a, b] = [await host('a'), await host('b')];
    const chunk = new Uint8Array(16 * 1024).fill(7);
    const totalBytes = 4 * 1024 * 1024;
    let received = 0;
    await b.libp2p.handle('/shoal/test/sink/1.0.0', async (stream) => {
      const io = lpStream(stream, { maxDataLength: chunk.length });
      while (received < totalBytes) received += (await io.read()).byteLength;
      await io.write(new Uint8Array([1]));
    });
    await a.libp2p.dial(b.libp2p.getMultiaddrs());
    const stream = await a.libp2p.dialProtocol(b.libp2p.peerId, '/shoal/test/sink/1.0.0');
    const io = lpStream(stream, { maxDataLength: chunk.length });
    // Several windows' worth (256 KB each) one way: the sender must keep being topped up.
    for (let sent = 0; sent < totalBytes; sent += chunk.length) await io.write(chunk);
    expect((await io.read({ signal: AbortSignal.timeout(10_000) })).byteLength).toBe(1);
    expect(received).toBe(totalBytes);
  }, 30_000);
});
