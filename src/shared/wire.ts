/**
 * JSON messages over libp2p streams, length-prefixed. Every message has a size limit; a peer that sends
 * more is cut off. Request/response calls open one stream per call (about 1.7 ms on loopback).
 */
import type { Libp2p, PeerId, Stream } from '@libp2p/interface';
import { lpStream } from '@libp2p/utils';
import { ShoalError, errorMessage } from './errors.ts';

/** The largest message on any shoal protocol. Raft appends are cut to fit well below it. */
export const wireMessageBytesMax = 8 * 1024 * 1024;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeJson(value: unknown): Uint8Array {
  const bytes = encoder.encode(JSON.stringify(value));
  if (bytes.length > wireMessageBytesMax) {
    throw new ShoalError(
      'TOO_LARGE',
      `a message of ${bytes.length} bytes exceeds the ${wireMessageBytesMax}-byte limit`,
    );
  }
  return bytes;
}

export function decodeJson(bytes: Uint8Array): unknown {
  return JSON.parse(decoder.decode(bytes));
}

export function jsonStream(stream: Stream): {
  read: (options?: { signal?: AbortSignal }) => Promise<unknown>;
  write: (value: unknown, options?: { signal?: AbortSignal }) => Promise<void>;
} {
  // libp2p's read buffer defaults to 4 MiB, which would refuse frames between 4 and 8 MiB that the limit allows.
  const lp = lpStream(stream, { maxDataLength: wireMessageBytesMax, maxBufferSize: 2 * wireMessageBytesMax });
  return {
    read: async (options) => decodeJson((await lp.read(options)).subarray()),
    write: async (value, options) => {
      await lp.write(encodeJson(value), options);
    },
  };
}

/** What an RPC handler answers: a result, or an error with a stable code and a message for the user. */
export type RpcReply = { ok: true; result: unknown } | { ok: false; code: string; message: string };

export type RpcHandler = (request: unknown, remotePeer: PeerId) => Promise<unknown>;

export async function handleRpc(libp2p: Libp2p, protocol: string, handler: RpcHandler): Promise<void> {
  await libp2p.handle(
    protocol,
    async (stream, connection) => {
      const io = jsonStream(stream);
      let reply: RpcReply;
      try {
        const request = await io.read({ signal: AbortSignal.timeout(10_000) });
        reply = { ok: true, result: await handler(request, connection.remotePeer) };
      } catch (error) {
        const code = error instanceof ShoalError ? error.code : 'INTERNAL';
        reply = { ok: false, code, message: errorMessage(error) };
      }
      try {
        await io.write(reply);
        await stream.close();
      } catch {
        stream.abort(new Error('rpc reply failed'));
      }
    },
    { maxInboundStreams: 256, runOnLimitedConnection: false },
  );
}

export async function callRpc(
  libp2p: Libp2p,
  peer: PeerId,
  protocol: string,
  request: unknown,
  timeoutMs: number,
): Promise<unknown> {
  const signal = AbortSignal.timeout(timeoutMs);
  let stream: Stream;
  try {
    stream = await libp2p.dialProtocol(peer, protocol, { signal });
  } catch (error) {
    throw new ShoalError('UNAVAILABLE', `cannot reach node ${peer.toString()}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
  try {
    const io = jsonStream(stream);
    await io.write(request, { signal });
    const reply = (await io.read({ signal })) as RpcReply;
    await stream.close().catch(() => undefined);
    if (reply.ok) return reply.result;
    throw new ShoalError(reply.code as ShoalError['code'], reply.message);
  } catch (error) {
    stream.abort(new Error('rpc failed'));
    if (error instanceof ShoalError) throw error;
    if (signal.aborted)
      throw new ShoalError('TIMEOUT', `node ${peer.toString()} did not answer within ${timeoutMs} ms`);
    throw new ShoalError('UNAVAILABLE', `call to node ${peer.toString()} failed: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}
