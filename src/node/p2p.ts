/** Creates the node's libp2p host: TCP, pnet (the cluster key), noise, yamux, identify, gossipsub. */
import { gossipsub, type GossipSub } from '@libp2p/gossipsub';
import { identify } from '@libp2p/identify';
import type { Libp2p, PrivateKey } from '@libp2p/interface';
import { noise } from '@libp2p/noise';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { yamux } from '@libp2p/yamux';
import { createLibp2p } from 'libp2p';
import { pnetKey } from './identity.ts';

export type ShoalLibp2p = Libp2p<{ pubsub: GossipSub; identify: ReturnType<ReturnType<typeof identify>> }>;

export interface P2pInit {
  readonly privateKey: PrivateKey;
  readonly listenMultiaddr: string;
  readonly clusterKey: string;
}

export async function createP2p(init: P2pInit): Promise<ShoalLibp2p> {
  return createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: [init.listenMultiaddr] },
    transports: [tcp()],
    connectionProtector: preSharedKey({ psk: pnetKey(init.clusterKey) }),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false }),
    },
  });
}
