/**
 * Raft messages on a direct libp2p protocol (not gossipsub: Raft talks to specific peers). One long-lived
 * outbound stream per peer carries that peer's messages in order; a broken stream is dropped and reopened
 * on the next send. Raft tolerates loss, so a full queue drops rather than blocks.
 *
 * Each message is one length-prefixed JSON frame (as shared/wire.ts frames them), except an
 * installSnapshot whose data is longer than snapshotChunkLengthMax: a state machine's snapshot outgrows
 * any sane frame (15 MiB with 20,000 tasks). It goes as a header frame, `{ chunkedSnapshot: { dataLength,
 * chunkLength }, message }` (the message without `snapshot.data`), then the data as JSON string frames of
 * chunkLength characters each (the last one shorter), in order, on the same stream; the receiver joins them
 * and hands Raft the whole message. A frame without the header's marker is a whole message, as before. A
 * receiver that predates chunking refuses the header (it claims no sender) and closes the stream, so it
 * never sees a snapshot without its data.
 */
import { constants } from 'node:buffer';
import type { AbortOptions, Libp2p, Stream } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import { lpStream } from '@libp2p/utils';
import { errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { decodeJson, encodeJson, wireMessageBytesMax } from '../shared/wire.ts';
import type { RaftMessage, Snapshot } from './types.ts';

export const raftProtocol = '/shoal/raft/1.0.0';
/** Messages waiting for one peer's stream; beyond this they are dropped (Raft retries). */
export const raftQueueLengthMax = 1024;
/**
 * Characters (UTF-16 code units) of snapshot data per chunk frame; longer snapshots are chunked. A chunk
 * of JSON text encodes to 1-3 MiB (quotes and backslashes take two bytes, other scripts up to three),
 * never above 6 MiB (control characters as `\u00XX`), so always within wireMessageBytesMax.
 */
export const snapshotChunkLengthMax = 1024 * 1024;
/**
 * The longest snapshot a receiver accepts, in characters: the longest string V8 can hold (~512 Mi
 * characters). A header declaring more is refused and its stream closed.
 */
export const snapshotDataLengthMax = constants.MAX_STRING_LENGTH;
/** The shortest chunk a receiver accepts (but the last): many tiny strings would cost more than the data. */
export const snapshotChunkLengthMin = 64 * 1024;
/** Each frame must be handed to the connection within this; a big snapshot gets it per chunk. */
export const frameWriteTimeoutMs = 5000;
/**
 * While a chunked snapshot arrives, each next chunk must come within this, or the partial snapshot is
 * dropped and the stream closed (the sender gives up on a chunk after frameWriteTimeoutMs). Between
 * messages a stream may idle indefinitely.
 */
export const snapshotChunkWaitMsMax = 30_000;
/**
 * Received bytes buffered before they are read: one frame of the largest size and what follows it in the
 * same delivery. (libp2p's default, 4 MiB, cuts the stream on any frame above it, well under the frame
 * limit.)
 */
const readBufferBytesMax = 2 * wireMessageBytesMax;

export interface RaftTransport {
  send(message: RaftMessage): void;
  start(onMessage: (message: RaftMessage) => void): Promise<void>;
  stop(): void;
}

type InstallSnapshot = Extract<RaftMessage, { type: 'installSnapshot' }>;

/** The frame that opens a chunked snapshot: `dataLength` characters follow, `chunkLength` per frame. */
interface SnapshotHeader {
  readonly chunkedSnapshot: { readonly dataLength: number; readonly chunkLength: number };
  readonly message: Omit<InstallSnapshot, 'snapshot'> & { readonly snapshot: Omit<Snapshot, 'data'> };
}

/** Length-prefixed JSON frames, byte for byte those of wire.ts's jsonStream, with room to read big ones. */
interface FrameStream {
  read(options?: AbortOptions): Promise<unknown>;
  write(value: unknown, options?: AbortOptions): Promise<void>;
}

function frameStream(stream: Stream): FrameStream {
  const lp = lpStream(stream, { maxDataLength: wireMessageBytesMax, maxBufferSize: readBufferBytesMax });
  return {
    read: async (options) => decodeJson((await lp.read(options)).subarray()),
    write: async (value, options) => {
      await lp.write(encodeJson(value), options);
    },
  };
}

interface Outbound {
  queue: RaftMessage[];
  flushing: boolean;
  /** The message being written, if any. */
  current: RaftMessage | null;
  io: FrameStream | null;
  stream: Stream | null;
}

/** The same snapshot for the same term: sending it again while one copy is still on its way is waste. */
function sameSnapshot(a: RaftMessage | null, b: InstallSnapshot): boolean {
  return (
    a?.type === 'installSnapshot' &&
    a.term === b.term &&
    a.snapshot.index === b.snapshot.index &&
    a.snapshot.term === b.snapshot.term
  );
}

/** A frame that opens a chunked snapshot, as far as its marker goes (readChunkedSnapshot checks the rest). */
type UncheckedHeader = { readonly [K in keyof SnapshotHeader]?: unknown } & {
  readonly chunkedSnapshot: unknown;
};

function isSnapshotHeader(frame: unknown): frame is UncheckedHeader {
  return typeof frame === 'object' && frame !== null && 'chunkedSnapshot' in frame;
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
        const io = frameStream(stream);
        const from = connection.remotePeer.toString();
        try {
          while (!this.stopped) {
            // No deadline: the stream idles between messages for as long as the peer has nothing to say.
            const frame = await io.read();
            const message = isSnapshotHeader(frame)
              ? await readChunkedSnapshot(io, frame, from)
              : (frame as RaftMessage);
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
      out = { queue: [], flushing: false, current: null, io: null, stream: null };
      this.outbound.set(message.to, out);
    }
    if (out.queue.length >= raftQueueLengthMax) return;
    // The leader offers a lagging peer its snapshot again every election timeout; a big one takes longer
    // than that to send, and each copy would be sent whole, delaying everything behind it.
    if (
      message.type === 'installSnapshot' &&
      (sameSnapshot(out.current, message) || out.queue.some((queued) => sameSnapshot(queued, message)))
    ) {
      return;
    }
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
          out.io = frameStream(stream);
        }
        const message = out.queue.shift();
        if (!message) break;
        out.current = message;
        await writeMessage(out.io, message);
        out.current = null;
      }
    } catch (error) {
      // Drop what was queued: Raft resends from its own state on the next heartbeat.
      this.logger.debug('raft send failed', { peer, error: errorMessage(error) });
      out.queue.length = 0;
      out.stream?.abort(new Error('send failed'));
      out.stream = null;
      out.io = null;
    } finally {
      out.current = null;
      out.flushing = false;
    }
  }
}

/** Writes one message: one frame, or a big snapshot as a header and chunks; each frame has its deadline. */
async function writeMessage(io: FrameStream, message: RaftMessage): Promise<void> {
  if (message.type !== 'installSnapshot' || message.snapshot.data.length <= snapshotChunkLengthMax) {
    await io.write(message, { signal: AbortSignal.timeout(frameWriteTimeoutMs) });
    return;
  }
  const { data, ...snapshot } = message.snapshot;
  const header: SnapshotHeader = {
    chunkedSnapshot: { dataLength: data.length, chunkLength: snapshotChunkLengthMax },
    message: { ...message, snapshot },
  };
  await io.write(header, { signal: AbortSignal.timeout(frameWriteTimeoutMs) });
  // Slices share the snapshot's memory; only the chunk being written is encoded. A slice may end between
  // the halves of a surrogate pair: JSON escapes the lone half (\udXXX) and the receiver's join restores it.
  for (let start = 0; start < data.length; start += snapshotChunkLengthMax) {
    const chunk = data.slice(start, start + snapshotChunkLengthMax);
    await io.write(chunk, { signal: AbortSignal.timeout(frameWriteTimeoutMs) });
  }
}

/** Reads the chunks a header announced and returns the whole message; throws on anything malformed. */
async function readChunkedSnapshot(
  io: FrameStream,
  header: UncheckedHeader,
  from: string,
): Promise<RaftMessage> {
  // Checked before reading (and holding) any data. Frames are untrusted JSON: check shapes, not types.
  const { dataLength, chunkLength } = (header.chunkedSnapshot ?? {}) as Partial<Record<string, unknown>>;
  const message = header.message as Partial<SnapshotHeader['message']> | null | undefined;
  if (typeof dataLength !== 'number' || !Number.isSafeInteger(dataLength) || dataLength <= 0) {
    throw new Error('a chunked snapshot with no valid length');
  }
  if (dataLength > snapshotDataLengthMax) {
    throw new Error(`a snapshot of ${dataLength} characters exceeds the ${snapshotDataLengthMax} limit`);
  }
  if (
    typeof chunkLength !== 'number' ||
    !Number.isSafeInteger(chunkLength) ||
    chunkLength < snapshotChunkLengthMin
  ) {
    throw new Error(`a chunked snapshot with chunks of ${String(chunkLength)} characters`);
  }
  if (message?.type !== 'installSnapshot' || typeof message.snapshot !== 'object') {
    throw new Error('a chunked snapshot header without an installSnapshot message');
  }
  if (message.from !== from) throw new Error(`message claims to be from ${String(message.from)}`);
  const chunks: string[] = [];
  let received = 0;
  while (received < dataLength) {
    const chunk = await io.read({ signal: AbortSignal.timeout(snapshotChunkWaitMsMax) });
    if (typeof chunk !== 'string') throw new Error('expected a snapshot chunk');
    if (received + chunk.length > dataLength) {
      throw new Error(`snapshot chunks exceed the ${dataLength} characters announced`);
    }
    const expected = Math.min(chunkLength, dataLength - received);
    if (chunk.length !== expected) {
      throw new Error(`a snapshot chunk of ${chunk.length} characters, not ${expected}`);
    }
    received += chunk.length;
    chunks.push(chunk);
  }
  // One join: the chunks and the whole are held together only for this line.
  const data = chunks.join('');
  chunks.length = 0;
  return { ...(message as SnapshotHeader['message']), snapshot: { ...message.snapshot, data } };
}
