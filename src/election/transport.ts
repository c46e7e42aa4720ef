/**
 * Raft messages on a direct libp2p protocol (not gossipsub: Raft talks to specific peers). One long-lived
 * outbound stream per peer carries that peer's messages in order; a broken stream is dropped and reopened
 * on the next send. Raft tolerates loss, so a full queue drops rather than blocks.
 */
import type { Libp2p, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { jsonStream } from '../shared/wire.ts';
import type { RaftMessage } from './types.ts';

export const raftProtocol = '/shoal/raft/1.0.0';
/** Messages waiting for one peer's stream; beyond this they are dropped (Raft retries). */
export const raftQueueLengthMax = 1024;

export interface RaftTransport {
  send(message: RaftMessage): void;
  start(onMessage: (message: RaftMessage) => void): Promise<void>;
  stop(): void;
}

interface Outbound {
  queue: RaftMessage[];
  flushing: boolean;
  io: ReturnType<typeof jsonStream> | null;
  stream: Stream | null;
}

export class Libp2pRaftTransport implements RaftTransport {
  private readonly libp2p: Libp2p;
  private readonly logger: Logger;
  private readonly outbound = new Map<string, Outbound>();
  private stopped = false;

  constructor(libp2p: Libp2p, logger: Logger) {
    this.libp2p = libp2p;
    this.logger = logger;
  }

  async start(onMessage: (message: RaftMessage) => void): Promise<void> {
    await this.libp2p.handle(
      raftProtocol,
      async (stream, connection) => {
        const io = jsonStream(stream);
        const from = connection.remotePeer.toString();
        try {
          while (!this.stopped) {
            const message = (await io.read()) as RaftMessage;
            // The sender is whoever holds the connection's key, whatever the message claims.
            if (message.from !== from) throw new Error(`message claims to be from ${message.from}`);
            onMessage(message);
          }
        } catch (error) {
          this.logger.debug('raft stream closed', { peer: from, error: errorMessage(error) });
          stream.abort(new Error('closed'));
        }
      },
      { maxInboundStreams: 8 },
    );
  }

  send(message: RaftMessage): void {
    if (this.stopped) return;
    let out = this.outbound.get(message.to);
    if (!out) {
      out = { queue: [], flushing: false, io: null, stream: null };
      this.outbound.set(message.to, out);
    }
    if (out.queue.length >= raftQueueLengthMax) return;
    out.queue.push(message);
    if (!out.flushing) void this.flush(message.to, out);
  }

  stop(): void {
    this.stopped = true;
    for (const out of this.outbound.values()) out.stream?.abort(new Error('stopping'));
    this.outbound.clear();
  }

  private async flush(peer: string, out: Outbound): Promise<void> {
    out.flushing = true;
    try {
      while (out.queue.length > 0 && !this.stopped) {
        if (!out.io) {
          const stream = await this.libp2p.dialProtocol(peerIdFromString(peer), raftProtocol, {
            signal: AbortSignal.timeout(2000),
          });
          out.stream = stream;
          out.io = jsonStream(stream);
        }
        const batch = out.queue.splice(0, out.queue.length);
        for (const message of batch) await out.io.write(message, { signal: AbortSignal.timeout(5000) });
      }
    } catch (error) {
      // Drop what was queued: Raft resends from its own state on the next heartbeat.
      this.logger.debug('raft send failed', { peer, error: errorMessage(error) });
      out.queue.length = 0;
      out.stream?.abort(new Error('send failed'));
      out.stream = null;
      out.io = null;
    } finally {
      out.flushing = false;
    }
  }
}
