/**
 * Creates the node's libp2p host: TCP, pnet (the cluster key), noise, yamux. Nothing else: membership
 * runs its own SWIM protocol and learns peers from signed records, so neither gossipsub (its mesh
 * heartbeats cost bytes on every link) nor identify (~3 ms of CPU and a few KB per new connection,
 * telling us addresses the records already carry) earns its place.
 */
import type { ConnectionProtector, Libp2p, PrivateKey } from '@libp2p/interface';
import { noise } from '@libp2p/noise';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { yamux } from '@libp2p/yamux';
import { StreamState, YamuxStream } from '@libp2p/yamux/stream';
import { createLibp2p } from 'libp2p';
import { pnetKey } from './identity.ts';
import { finalizeCiphersOnClose, pnetCipherRepaired } from './pnet-cipher.ts';

/** Hard cap on open connections; beyond it libp2p refuses inbound ones (membership keeps far fewer). */
export const connectionsMax = 300;
/**
 * New inbound connections accepted per second from one IP address. libp2p's default (5) is an anti-flood
 * guard for public networks; here pnet already shuts out strangers, and nodes sharing one host (tests,
 * benchmarks) each dial their probe targets.
 */
export const inboundConnectionsPerHostPerSecondMax = 200;
/** Connections being handshaked at once; more are refused until some finish. */
export const inboundPendingConnectionsMax = 64;

/**
 * @libp2p/yamux 8 answers every data frame with a window-update frame, so each small message (a SWIM
 * ping, a Raft heartbeat) costs two encrypted frames and two socket writes each way. Go's yamux (and
 * hashicorp/yamux, its origin) only send an update once half the receive window is consumed; doing the
 * same here cut the CPU per request/response round trip by ~25 % (0.20 → 0.15 ms, measured on this
 * machine). Flow control is unchanged: the sender may still have a whole window in flight, and is
 * topped up at half. Streams not yet established (whose update carries SYN/ACK flags) are left alone.
 * Applied once, to the class every yamux stream in this process uses; skipped if yamux's internals no
 * longer look as expected.
 */
export const yamuxWindowUpdatesBatched = batchYamuxWindowUpdates();

function batchYamuxWindowUpdates(): boolean {
  const prototype = YamuxStream.prototype as YamuxStream & { readonly batched?: true };
  if (prototype.batched === true) return true;
  // Called below with the stream as `this`, as yamux itself calls it.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const original = prototype.sendWindowUpdate;
  if (typeof original !== 'function') return false;
  prototype.sendWindowUpdate = function (this: YamuxStream): void {
    // Private fields of YamuxStream (checked below before use).
    const window = this as unknown as { recvWindow?: unknown; recvWindowCapacity?: unknown };
    const { recvWindow, recvWindowCapacity } = window;
    if (
      this.state === StreamState.Established &&
      typeof recvWindow === 'number' &&
      typeof recvWindowCapacity === 'number' &&
      recvWindow - recvWindowCapacity < recvWindow / 2
    ) {
      return;
    }
    original.call(this);
  };
  Object.defineProperty(prototype, 'batched', { value: true });
  return true;
}

/** Gives membership the node's private key, to sign its records. */
export interface NodeKeyService {
  readonly privateKey: PrivateKey;
}

export type ShoalLibp2p = Libp2p<{ nodeKey: NodeKeyService }>;

/** How long libp2p keeps a member's address: for good (see createP2p). */
export const addressAgeMaxMs = Number.MAX_SAFE_INTEGER;

export interface P2pInit {
  readonly privateKey: PrivateKey;
  readonly listenMultiaddr: string;
  readonly clusterKey: string;
}

export async function createP2p(init: P2pInit): Promise<ShoalLibp2p> {
  return createLibp2p({
    privateKey: init.privateKey,
    addresses: { listen: [init.listenMultiaddr] },
    connectionManager: {
      maxConnections: connectionsMax,
      inboundConnectionThreshold: inboundConnectionsPerHostPerSecondMax,
      maxIncomingPendingConnections: inboundPendingConnectionsMax,
    },
    // Members' addresses come from their signed membership records (membership puts them in the address
    // book once). libp2p forgets an address an hour after it was added, expecting peer routing to fetch it
    // again; we have none, so a dial by id (Raft, logs) to a member with no open connection would fail with
    // "no valid addresses" in a cluster older than an hour. Addresses leave with their member instead.
    peerStore: { maxAddressAge: addressAgeMaxMs },
    transports: [tcp()],
    connectionProtector: repairedPreSharedKey(pnetKey(init.clusterKey)),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      nodeKey: (components: { privateKey: PrivateKey }): NodeKeyService => ({
        privateKey: components.privateKey,
      }),
    },
  });
}

/** pnet, with each connection's ciphers freed when it closes (see pnet-cipher.ts). */
function repairedPreSharedKey(psk: Uint8Array): () => ConnectionProtector {
  const make = preSharedKey({ psk });
  return () => {
    const protector = make();
    if (!pnetCipherRepaired) return protector;
    return {
      protect: async (connection, options) => {
        const protectedConnection = await protector.protect(connection, options);
        finalizeCiphersOnClose(protectedConnection);
        return protectedConnection;
      },
    };
  };
}
