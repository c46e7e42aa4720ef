/**
 * Membership's libp2p plumbing. Probe traffic is datagram-like: one long-lived stream per peer (either
 * side may open it; both use it), length-prefixed JSON frames, dropped rather than queued when a stream
 * is congested or still opening, as UDP would. A message on a stream over a noise-authenticated
 * connection is known to come from the connection's peer. A new stream costs ~2 ms of CPU and a new
 * connection ~12 ms (pnet + noise), a frame on an open stream ~0.2 ms, so streams and connections are
 * kept, up to peerConnectionsMax connections; beyond that the least recently used idle ones are closed.
 */
import type { Connection, Libp2p, PeerId, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { LengthPrefixedDecoder } from '@libp2p/utils';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { swimMessageBytesMax, swimMessageSchema, swimProtocol, type SwimMessage } from './messages.ts';

/** Frames waiting for a stream to open; beyond it new ones are dropped (datagram semantics). */
export const pendingFramesPerPeerMax = 64;
/** Bytes a stream may hold unsent before frames are dropped instead of queued. */
export const streamBacklogBytesMax = 256 * 1024;
/** Inbound and outbound SWIM streams per connection. */
export const swimStreamsPerConnectionMax = 16;

export interface SwimTransportInit {
  readonly libp2p: Libp2p;
  readonly logger: Logger;
  readonly dialTimeoutMs: number;
  readonly peerConnectionsMax: number;
  readonly addressesOf: (id: string) => readonly string[];
  /** The peer that hosts a member (its signed record's `via`), or undefined for a member that is its own peer. */
  readonly viaOf: (id: string) => string | undefined;
  readonly onMessage: (from: string, message: SwimMessage) => void;
  /**
   * On a host of members (the fleet simulator): whether `member` is one of its own, and what to do with
   * a frame from `from` addressed to it. Absent on a real node, which hosts no one.
   */
  readonly hosted?: {
    readonly hosts: (member: string) => boolean;
    readonly onMessage: (from: string, member: string, message: SwimMessage) => void;
  };
  readonly onUnreachable: (peer: string) => void;
  readonly nowMs: () => number;
}

export interface TransportStats {
  bytesSent: number;
  bytesReceived: number;
  framesSent: number;
  framesReceived: number;
  framesDropped: number;
  framesMalformed: number;
  /** Frames naming a member whose record does not name the sending peer as its host. */
  framesRefused: number;
  dials: number;
  dialFailures: number;
  connectionsClosed: number;
}

interface Channel {
  stream: Stream | null;
  opening: boolean;
  pending: Uint8Array[];
  lastUsedMs: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class SwimTransport {
  readonly stats: TransportStats = {
    bytesSent: 0,
    bytesReceived: 0,
    framesSent: 0,
    framesReceived: 0,
    framesDropped: 0,
    framesMalformed: 0,
    framesRefused: 0,
    dials: 0,
    dialFailures: 0,
    connectionsClosed: 0,
  };
  private readonly init: SwimTransportInit;
  private readonly channels = new Map<string, Channel>();
  /** Peers whose connections this node closed itself, so their disconnect is no news. */
  private readonly pruned = new Set<string>();
  private stopped = false;

  constructor(init: SwimTransportInit) {
    this.init = init;
  }

  async start(): Promise<void> {
    await this.init.libp2p.handle(
      swimProtocol,
      (stream, connection) => {
        const peer = connection.remotePeer.toString();
        const channel = this.channel(peer);
        if (!isWritable(channel.stream)) {
          channel.stream = stream;
          this.flushPending(peer, channel);
        }
        void this.readLoop(peer, stream);
      },
      {
        maxInboundStreams: swimStreamsPerConnectionMax,
        maxOutboundStreams: swimStreamsPerConnectionMax,
      },
    );
  }

  stop(): void {
    this.stopped = true;
    for (const channel of this.channels.values()) channel.stream?.abort(new Error('membership stopped'));
    this.channels.clear();
  }

  /**
   * Sends one message to `to`, opening a stream (and a connection) if needed. Never blocks. A hosted
   * member's messages go to its host, naming the member.
   */
  send(to: string, message: SwimMessage): void {
    if (this.stopped) return;
    const via = this.init.viaOf(to);
    const peer = via ?? to;
    const body = encoder.encode(JSON.stringify(via === undefined ? message : { ...message, member: to }));
    if (body.length > swimMessageBytesMax) {
      // The state machine packs updates far below the limit; a larger message is a bug, not traffic.
      this.init.logger.error('dropped an oversized membership message', { to, bytes: body.length });
      return;
    }
    const frame = concat(varint(body.length), body);
    const channel = this.channel(peer);
    channel.lastUsedMs = this.init.nowMs();
    if (isWritable(channel.stream)) {
      this.write(peer, channel, channel.stream, frame);
      return;
    }
    if (channel.pending.length >= pendingFramesPerPeerMax) {
      this.stats.framesDropped++;
      return;
    }
    channel.pending.push(frame);
    if (!channel.opening) void this.open(peer, to, channel);
  }

  /** True (once) if this node itself closed its connection to `peer`. */
  forgetPruned(peer: string): boolean {
    return this.pruned.delete(peer);
  }

  /** Bytes written but not yet sent, across all streams (a leave waits for it to drain). */
  backlogBytes(): number {
    let total = 0;
    for (const channel of this.channels.values()) {
      total += channel.stream?.writeBufferLength ?? 0;
      for (const frame of channel.pending) total += frame.length;
    }
    return total;
  }

  /** Peers with an open connection. */
  connectedPeers(): Set<string> {
    const peers = new Set<string>();
    for (const connection of this.init.libp2p.getConnections()) peers.add(connection.remotePeer.toString());
    return peers;
  }

  /**
   * Closes the least recently used connections beyond peerConnectionsMax, sparing any that carry
   * streams of other protocols (Raft, control): membership may only give up what it alone uses.
   */
  prune(): void {
    const connections = this.init.libp2p.getConnections();
    let excess = connections.length - this.init.peerConnectionsMax;
    if (excess <= 0) return;
    const lastUsed = (connection: Connection): number =>
      this.channels.get(connection.remotePeer.toString())?.lastUsedMs ?? 0;
    const candidates = connections
      .filter((connection) => connection.streams.every((stream) => stream.protocol === swimProtocol))
      .sort((a, b) => lastUsed(a) - lastUsed(b));
    for (const connection of candidates) {
      if (excess-- <= 0) break;
      this.stats.connectionsClosed++;
      this.channels.delete(connection.remotePeer.toString());
      if (this.pruned.size < this.init.peerConnectionsMax * 4)
        this.pruned.add(connection.remotePeer.toString());
      void connection.close().catch(() => connection.abort(new Error('pruned')));
    }
  }

  private channel(peer: string): Channel {
    let channel = this.channels.get(peer);
    if (!channel) {
      channel = { stream: null, opening: false, pending: [], lastUsedMs: this.init.nowMs() };
      this.channels.set(peer, channel);
    }
    return channel;
  }

  private write(peer: string, channel: Channel, stream: Stream, frame: Uint8Array): void {
    if (stream.writeBufferLength > streamBacklogBytesMax) {
      this.stats.framesDropped++;
      return;
    }
    try {
      stream.send(frame);
      this.stats.framesSent++;
      this.stats.bytesSent += frame.length;
    } catch (error) {
      this.stats.framesDropped++;
      if (channel.stream === stream) channel.stream = null;
      this.init.logger.debug('membership stream write failed', { peer, error: errorMessage(error) });
    }
  }

  /** Opens a stream to `peer`, dialling the addresses in `member`'s record (its own, or its host's). */
  private async open(peer: string, member: string, channel: Channel): Promise<void> {
    channel.opening = true;
    try {
      const target = this.dialTarget(peer, member);
      if (target === null) throw new Error('no known address');
      this.stats.dials++;
      const stream = await this.init.libp2p.dialProtocol(target, swimProtocol, {
        signal: AbortSignal.timeout(this.init.dialTimeoutMs),
      });
      if (this.stopped) {
        stream.abort(new Error('membership stopped'));
        return;
      }
      if (!isWritable(channel.stream)) channel.stream = stream;
      void this.readLoop(peer, stream);
      this.flushPending(peer, channel);
    } catch (error) {
      this.stats.dialFailures++;
      this.stats.framesDropped += channel.pending.length;
      channel.pending.length = 0;
      this.init.logger.debug('membership dial failed', { peer, error: errorMessage(error) });
      if (!this.stopped) this.init.onUnreachable(member);
    } finally {
      channel.opening = false;
    }
  }

  private flushPending(peer: string, channel: Channel): void {
    const stream = channel.stream;
    if (!isWritable(stream)) return;
    for (const frame of channel.pending.splice(0)) this.write(peer, channel, stream, frame);
  }

  /** An existing connection if there is one, else the addresses from the member's record. */
  private dialTarget(peer: string, member: string): PeerId | Multiaddr[] | null {
    let peerId: PeerId;
    try {
      peerId = peerIdFromString(peer);
    } catch {
      return null;
    }
    if (this.init.libp2p.getConnections(peerId).length > 0) return peerId;
    const addresses: Multiaddr[] = [];
    for (const address of this.init.addressesOf(member)) {
      try {
        addresses.push(multiaddr(address));
      } catch {
        // A malformed address in a (signed) record: skip it, try the others.
      }
    }
    return addresses.length > 0 ? addresses : null;
  }

  private async readLoop(peer: string, stream: Stream): Promise<void> {
    const frames = new LengthPrefixedDecoder({ maxDataLength: swimMessageBytesMax });
    try {
      for await (const chunk of stream) {
        for (const frame of frames.decode(chunk)) {
          this.stats.framesReceived++;
          this.stats.bytesReceived += frame.byteLength + varint(frame.byteLength).length;
          const parsed = parseMessage(frame.subarray());
          if (parsed === null) {
            this.stats.framesMalformed++;
            continue;
          }
          const channel = this.channels.get(peer);
          if (channel) channel.lastUsedMs = this.init.nowMs();
          if (parsed.member === undefined) {
            this.init.onMessage(peer, parsed);
          } else if (this.init.viaOf(parsed.member) === peer) {
            // A hosted member speaking through its host: believed because its signed record names the host.
            const { member, ...message } = parsed;
            this.init.onMessage(member, message);
          } else if (this.init.hosted?.hosts(parsed.member) === true) {
            const { member, ...message } = parsed;
            this.init.hosted.onMessage(peer, member, message);
          } else {
            this.stats.framesRefused++;
          }
        }
      }
    } catch (error) {
      this.init.logger.debug('membership stream closed', { peer, error: errorMessage(error) });
      stream.abort(error instanceof Error ? error : new Error(String(error)));
    } finally {
      const channel = this.channels.get(peer);
      if (channel?.stream === stream) channel.stream = null;
    }
  }
}

function parseMessage(bytes: Uint8Array): SwimMessage | null {
  try {
    const parsed = swimMessageSchema.safeParse(JSON.parse(decoder.decode(bytes)));
    return parsed.success ? parsed.data : null;
  } catch {
    return null;
  }
}

function isWritable(stream: Stream | null): stream is Stream {
  return stream !== null && stream.status === 'open' && stream.writeStatus === 'writable';
}

function varint(value: number): Uint8Array {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  bytes.push(rest);
  return Uint8Array.from(bytes);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
