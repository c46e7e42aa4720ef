/**
 * Lease renewals on the control protocol: who may renew whose lease. Two Controls talk over in-memory
 * stream pairs (no network): the caller's dial reaches the leader's handler with the caller's peer id
 * as the connection's remote peer, as an authenticated libp2p connection would.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Connection, PeerId, StreamHandler } from '@libp2p/interface';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import { streamPair } from '@libp2p/utils';
import { describe, expect, it } from 'vitest';
import type { RaftService } from '../election/index.ts';
import { ShoalError, silentLogger } from '../shared/index.ts';
import { Control, controlProtocol, renewalNodesMax } from './control.ts';
import type { ShoalLibp2p } from './p2p.ts';

const newPeer = async (): Promise<PeerId> => peerIdFromPrivateKey(await generateKeyPair('Ed25519'));

const leaderPeer = await newPeer();
const hostPeer = await newPeer();
const otherHostPeer = await newPeer();
const [n1, n2, n3] = [
  (await newPeer()).toString(),
  (await newPeer()).toString(),
  (await newPeer()).toString(),
];
/** n1 and n2 are hosted by hostPeer, n3 by otherHostPeer. */
const hostOf = new Map([
  [n1, hostPeer.toString()],
  [n2, hostPeer.toString()],
  [n3, otherHostPeer.toString()],
]);

/** Handlers registered on the leader's libp2p, by protocol. */
type Handlers = Map<string, StreamHandler>;

function control(libp2p: Partial<ShoalLibp2p>, renewed: string[][] = []): Control {
  return new Control({
    libp2p: libp2p as ShoalLibp2p,
    // Lease renewals never reach Raft here (the leader side is renewLease).
    raft: {} as unknown as RaftService,
    logger: silentLogger,
    isStopped: () => false,
    quorumHint: () => '',
    renewLease: (nodeIds) => {
      renewed.push([...nodeIds]);
      return Promise.resolve();
    },
    hostOf: (nodeId) => hostOf.get(nodeId),
    localLogs: () => Promise.resolve({ stdout: '', stderr: '' }),
    logsTailBytesMax: 1024,
  });
}

/** A libp2p that only records the handlers registered on it. */
function registering(handlers: Handlers): Partial<ShoalLibp2p> {
  return {
    handle: (protocol, handler) => {
      for (const name of [protocol].flat()) handlers.set(name, handler);
      return Promise.resolve();
    },
  };
}

/** A leader Control, and a caller Control on `callerPeer` whose calls reach it. */
async function pair(callerPeer: PeerId): Promise<{ caller: Control; renewed: string[][] }> {
  const handlers: Handlers = new Map();
  const renewed: string[][] = [];
  const leader = control(registering(handlers), renewed);
  await leader.start();
  const caller = control({
    dialProtocol: async (peer: PeerId, protocol: string | string[]) => {
      expect(peer.equals(leaderPeer)).toBe(true);
      const handler = handlers.get([protocol].flat()[0] ?? '');
      if (handler === undefined) throw new Error('protocol not supported');
      const [outbound, inbound] = await streamPair();
      void handler(inbound, { remotePeer: callerPeer } as Connection);
      return outbound;
    },
  });
  return { caller, renewed };
}

async function denial(promise: Promise<unknown>): Promise<ShoalError> {
  const error: unknown = await promise.then(
    () => null,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(ShoalError);
  return error as ShoalError;
}

describe('lease renewal over the control protocol', () => {
  it('registers the control protocol', async () => {
    const handlers: Handlers = new Map();
    await control(registering(handlers)).start();
    expect([...handlers.keys()]).toEqual([controlProtocol]);
  });

  it("renews a node's own lease when it names no nodes", async () => {
    const { caller, renewed } = await pair(hostPeer);
    await caller.renewWithLeader(leaderPeer.toString(), 5000);
    expect(renewed).toEqual([[hostPeer.toString()]]);
  });

  it('lets a host renew the nodes whose records name it, and itself', async () => {
    const { caller, renewed } = await pair(hostPeer);
    await caller.renewHostedWithLeader(leaderPeer.toString(), [n1, n2], 5000);
    await caller.renewHostedWithLeader(leaderPeer.toString(), [hostPeer.toString(), n2], 5000);
    expect(renewed).toEqual([
      [n1, n2],
      [hostPeer.toString(), n2],
    ]);
  });

  it('refuses a renewal naming a node another peer hosts, or an unknown one, renewing none of the batch', async () => {
    const { caller, renewed } = await pair(hostPeer);
    const leader = leaderPeer.toString();
    for (const nodes of [[n1, n3], [n3], [n1, otherHostPeer.toString()], [n2, leader]]) {
      const error = await denial(caller.renewHostedWithLeader(leader, nodes, 5000));
      expect(error.code).toBe('PERMISSION_DENIED');
      expect(error.message).toContain(`peer ${hostPeer.toString()} may not renew the lease of node`);
    }
    // A real node (no hosted records name it) may renew only itself.
    const other = await pair(otherHostPeer);
    expect((await denial(other.caller.renewHostedWithLeader(leader, [n1], 5000))).code).toBe(
      'PERMISSION_DENIED',
    );
    await other.caller.renewHostedWithLeader(leader, [n3], 5000);
    expect(renewed).toEqual([]);
    expect(other.renewed).toEqual([[n3]]);
  });

  it('rejects a malformed renewal before looking at who asks', async () => {
    const { caller, renewed } = await pair(hostPeer);
    const leader = leaderPeer.toString();
    for (const nodes of [[], Array.from({ length: renewalNodesMax + 1 }, () => n1), ['']]) {
      const error = await denial(caller.renewHostedWithLeader(leader, nodes, 5000));
      expect(error.code).toBe('INVALID_ARGUMENT');
    }
    expect(renewed).toEqual([]);
  });
});
