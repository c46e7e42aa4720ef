/**
 * The Raft transport between two real libp2p hosts in one process (TCP on loopback, pnet, noise, yamux):
 * a snapshot far above the frame limit goes as a header and chunks and arrives whole, before what was sent
 * after it; small messages stay one frame, as before; a receiver refuses a chunked snapshot that is too
 * big or whose chunks overrun it, and closes the stream.
 */
import { generateKeyPair } from '@libp2p/crypto/keys';
import type { Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { afterEach, describe, expect, it } from 'vitest';
import { createP2p, type ShoalLibp2p } from '../node/p2p.ts';
import { silentLogger } from '../shared/log.ts';
import { decodeJson, encodeJson, wireMessageBytesMax } from '../shared/wire.ts';
import {
  Libp2pRaftTransport,
  raftProtocol,
  snapshotChunkLengthMax,
  snapshotDataLengthMax,
} from './transport.ts';
import type { RaftMessage } from './types.ts';

const clusterKey = 'ab'.repeat(32);

const hosts: ShoalLibp2p[] = [];
const transports: Libp2pRaftTransport[] = [];

afterEach(async () => {
  for (const transport of transports.splice(0)) transport.stop();
  for (const libp2p of hosts.splice(0)) await libp2p.stop();
});

async function host(): Promise<ShoalLibp2p> {
  const libp2p = await createP2p({
    privateKey: await generateKeyPair('Ed25519'),
    listenMultiaddr: '/ip4/127.0.0.1/tcp/0',
    clusterKey,
  });
  hosts.push(libp2p);
  return libp2p;
}

/** Two hosts; `a` knows `b`'s address (membership puts it in the address book in a real node). */
async function pair(): Promise<{ a: ShoalLibp2p; b: ShoalLibp2p; from: string; to: string }> {
  const a = await host();
  const b = await host();
  await a.peerStore.merge(b.peerId, { multiaddrs: b.getMultiaddrs() });
  return { a, b, from: a.peerId.toString(), to: b.peerId.toString() };
}

function transport(libp2p: ShoalLibp2p): Libp2pRaftTransport {
  const created = new Libp2pRaftTransport(libp2p, silentLogger);
  transports.push(created);
  return created;
}

/** What arrives, taken one at a time in arrival order. */
class Inbox<T> {
  private readonly items: T[] = [];
  private readonly waiting: ((item: T) => void)[] = [];

  readonly push = (item: T): void => {
    const waiter = this.waiting.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  };

  next(): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve(item);
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  get length(): number {
    return this.items.length;
  }
}

/** Length-prefixed JSON frames on a raw stream, as the transport frames them. */
function frames(stream: Stream): {
  read: () => Promise<unknown>;
  write: (value: unknown) => Promise<void>;
} {
  const lp = lpStream(stream, { maxDataLength: wireMessageBytesMax, maxBufferSize: 2 * wireMessageBytesMax });
  return {
    read: async () => decodeJson((await lp.read()).subarray()),
    write: async (value) => {
      await lp.write(encodeJson(value));
    },
  };
}

function closed(stream: Stream): Promise<void> {
  if (stream.status !== 'open') return Promise.resolve();
  return new Promise((resolve) => stream.addEventListener('close', () => resolve(), { once: true }));
}

function installSnapshot(from: string, to: string, data: string, index = 40_000): RaftMessage {
  return {
    type: 'installSnapshot',
    from,
    to,
    term: 3,
    snapshot: { index, term: 2, config: { voters: [from, to], learners: [] }, data },
  };
}

function appendEntries(from: string, to: string, prevLogIndex = 40_000): RaftMessage {
  return {
    type: 'appendEntries',
    from,
    to,
    term: 3,
    prevLogIndex,
    prevLogTerm: 2,
    entries: [{ index: prevLogIndex + 1, term: 3, kind: 'command', data: '{"op":"submit","name":"ü"}' }],
    leaderCommit: prevLogIndex,
    readSeq: 5,
  };
}

/**
 * `length` characters of state-machine-like JSON: quotes and backslashes (escaped on the wire), other
 * scripts, and an emoji (a surrogate pair) split by the first chunk boundary.
 */
function snapshotData(length: number): string {
  const head = 'x'.repeat(snapshotChunkLengthMax - 1) + '🦈';
  let body = '';
  for (let i = 0; body.length < length - head.length; i++) {
    body += `{"id":"task-${i}","name":"größe \\"${i}\\"","path":"C:\\\\shoal\\\\${i}","emoji":"🐟"},`;
  }
  return (head + body).slice(0, length);
}

/** Compares without printing megabytes on failure. */
function expectSameMessage(actual: RaftMessage, expected: RaftMessage): void {
  if (actual.type !== 'installSnapshot' || expected.type !== 'installSnapshot') {
    expect(actual).toEqual(expected);
    return;
  }
  expect(actual.snapshot.data.length).toBe(expected.snapshot.data.length);
  expect(actual.snapshot.data === expected.snapshot.data).toBe(true);
  expect({ ...actual, snapshot: { ...actual.snapshot, data: '' } }).toEqual({
    ...expected,
    snapshot: { ...expected.snapshot, data: '' },
  });
}

describe('the Raft transport over libp2p', () => {
  it('delivers a 20 MiB snapshot, above the frame limit, whole and before the append sent after it', async () => {
    const { a, b, from, to } = await pair();
    const inbox = new Inbox<RaftMessage>();
    await transport(a).start(() => undefined);
    await transport(b).start(inbox.push);
    const snapshot = installSnapshot(from, to, snapshotData(20 * 1024 * 1024));
    expect(snapshot.type === 'installSnapshot' && snapshot.snapshot.data.length).toBeGreaterThan(
      wireMessageBytesMax,
    );
    const append = appendEntries(from, to);

    transports[0]!.send(snapshot);
    transports[0]!.send(append);

    expectSameMessage(await inbox.next(), snapshot);
    expectSameMessage(await inbox.next(), append);
  });

  it('sends a small message as one frame, as before, and a big snapshot as a header and chunks', async () => {
    const { a, b, from, to } = await pair();
    const received = new Inbox<unknown>();
    await b.handle(raftProtocol, async (stream) => {
      const io = frames(stream);
      try {
        for (;;) received.push(await io.read());
      } catch {
        // The test is over.
      }
    });
    const sender = transport(a);
    const append = appendEntries(from, to);
    const smallSnapshot = installSnapshot(from, to, snapshotData(1000), 30_000);
    const data = snapshotData(2 * snapshotChunkLengthMax + 1234);
    const bigSnapshot = installSnapshot(from, to, data);

    sender.send(append);
    sender.send(smallSnapshot);
    sender.send(bigSnapshot);
    sender.send(appendEntries(from, to, 40_001));

    expect(await received.next()).toEqual(append);
    expect(await received.next()).toEqual(smallSnapshot);
    const { snapshot } = bigSnapshot as Extract<RaftMessage, { type: 'installSnapshot' }>;
    expect(await received.next()).toEqual({
      chunkedSnapshot: { dataLength: data.length, chunkLength: snapshotChunkLengthMax },
      message: {
        ...bigSnapshot,
        snapshot: { index: snapshot.index, term: snapshot.term, config: snapshot.config },
      },
    });
    const chunks = [await received.next(), await received.next(), await received.next()];
    expect(chunks.map((chunk) => (typeof chunk === 'string' ? chunk.length : chunk))).toEqual([
      snapshotChunkLengthMax,
      snapshotChunkLengthMax,
      1234,
    ]);
    expect(chunks.join('') === data).toBe(true);
    expect(await received.next()).toEqual(appendEntries(from, to, 40_001));
  });

  it('sends a snapshot once while the same one is still queued or on its way', async () => {
    const { a, b, from, to } = await pair();
    const inbox = new Inbox<RaftMessage>();
    await transport(b).start(inbox.push);
    const sender = transport(a);
    const snapshot = installSnapshot(from, to, snapshotData(3 * snapshotChunkLengthMax));
    const newer = installSnapshot(from, to, snapshotData(3 * snapshotChunkLengthMax), 41_000);

    // The leader offers a lagging follower its snapshot again on every election timeout.
    sender.send(snapshot);
    sender.send(snapshot);
    sender.send(newer);
    sender.send(snapshot);
    sender.send(appendEntries(from, to));

    expectSameMessage(await inbox.next(), snapshot);
    expectSameMessage(await inbox.next(), newer);
    expectSameMessage(await inbox.next(), appendEntries(from, to));
  });

  it('refuses a chunked snapshot that is too big or overruns its length, and closes the stream', async () => {
    const { a, b, from, to } = await pair();
    const inbox = new Inbox<RaftMessage>();
    await transport(b).start(inbox.push);
    const open = async (): Promise<{ stream: Stream; io: ReturnType<typeof frames> }> => {
      const stream = await a.dialProtocol(b.peerId, raftProtocol);
      return { stream, io: frames(stream) };
    };
    const header = (dataLength: number): unknown => ({
      chunkedSnapshot: { dataLength, chunkLength: 65_536 },
      message: {
        ...installSnapshot(from, to, ''),
        snapshot: { index: 1, term: 1, config: { voters: [], learners: [] } },
      },
    });

    // A message without the marker is read as before, even a snapshot.
    const plain = installSnapshot(from, to, 'state');
    const first = await open();
    await first.io.write(plain);
    expect(await inbox.next()).toEqual(plain);

    const tooBig = await open();
    await tooBig.io.write(header(snapshotDataLengthMax + 1));
    await closed(tooBig.stream);

    const overrun = await open();
    await overrun.io.write(header(100_000));
    await overrun.io.write('y'.repeat(65_536));
    await overrun.io.write('y'.repeat(40_000));
    await closed(overrun.stream);

    // Neither reached Raft: the next message to arrive is this one.
    const after = appendEntries(from, to);
    await (await open()).io.write(after);
    expect(await inbox.next()).toEqual(after);
    expect(inbox.length).toBe(0);
  });
});
