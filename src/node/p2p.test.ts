import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { generateClusterKey } from './identity.ts';
import { createP2p } from './p2p.ts';

describe('the libp2p node', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it("keeps a member's address in its address book past libp2p's one-hour default", async () => {
    const libp2p = await createP2p({
      privateKey: await generateKeyPair('Ed25519'),
      listenMultiaddr: '/ip4/127.0.0.1/tcp/0',
      clusterKey: generateClusterKey(),
    });
    try {
      const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
      await libp2p.peerStore.merge(peer, { multiaddrs: [multiaddr('/ip4/127.0.0.2/tcp/4700')] });
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 25 * 60 * 60_000);
      const addresses = (await libp2p.peerStore.get(peer)).addresses.map((a) => a.multiaddr.toString());
      expect(addresses).toEqual(['/ip4/127.0.0.2/tcp/4700']);
    } finally {
      vi.useRealTimers();
      await libp2p.stop();
    }
  });
});
