/**
 * `shoal logs -f` across the cluster. The node that serves the API follows a task's log files itself when the
 * task runs there; otherwise it opens a stream on /shoal/logs/1.0.0 to the node that runs it, which follows
 * them and relays the chunks. Either way the stream ends shortly after the task ends, or when the client goes
 * away (its HTTP connection or libp2p stream closes, which aborts the follower at the other end too).
 */
import type { Libp2p, PeerId, Stream } from '@libp2p/interface';
import { isTerminal, type Task } from '../cluster/index.ts';
import { followTaskLogs } from '../runtime/index.ts';
import { ShoalError, errorMessage } from '../shared/errors.ts';
import { frameToJson, type LogFrame, type LogFrameJson } from '../shared/log-frames.ts';
import { jsonStream } from '../shared/wire.ts';

export const logsProtocol = '/shoal/logs/1.0.0';
/** Log followers one node serves at once, for other nodes; each holds a stream, a watcher and two files. */
export const logFollowersMax = 64;
/**
 * After the task ends, how long the follower keeps reading before it stops: the last output reaches the
 * files before the exit is committed, but the follower only notices new bytes on a change or its next poll.
 */
export const followDrainMs = 1000;
/** How often a follower looks whether its task has ended. */
const followCheckIntervalMs = 250;
/** An idle relay sends this often, so a quiet task's stream is not cut for inactivity and a dead reader is noticed. */
const heartbeatIntervalMs = 10_000;
/** How long the node that runs the task has to answer the follow request. */
const followDialTimeoutMs = 5000;

interface FollowRequest {
  readonly taskId: string;
  readonly tailBytes: number;
}

/** Why the follow ended, for its last frame. */
export function endReason(task: Task | undefined, nodeId: string): string {
  if (!task) return 'the task is gone';
  if (task.nodeId !== nodeId && !isTerminal(task.state)) return `the task left this node (${task.state})`;
  return `task ${task.state}${task.reason === null ? '' : `: ${task.reason}`}`;
}

/**
 * Follows the log files of a task that runs (or ran) on this node until `signal` aborts or the task ends.
 * `current` reads the task from the replicated state.
 */
export async function* followLocalLogs(options: {
  readonly taskDir: string;
  readonly nodeId: string;
  readonly taskId: string;
  readonly tailBytes: number;
  readonly current: (taskId: string) => Task | undefined;
  readonly signal: AbortSignal;
}): AsyncGenerator<LogFrame, void, undefined> {
  const { signal, taskId, nodeId, current } = options;
  const stop = new AbortController();
  const onAbort = (): void => stop.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  // Set by the checker once the task has ended (a holder object: the compiler cannot see closures assign).
  const ending: { reason: string | null; drainTimer: NodeJS.Timeout | null } = {
    reason: null,
    drainTimer: null,
  };
  const check = (): void => {
    const task = current(taskId);
    const ended = !task || isTerminal(task.state) || task.nodeId !== nodeId;
    if (!ended || ending.drainTimer !== null) return;
    ending.reason = endReason(task, nodeId);
    ending.drainTimer = setTimeout(() => stop.abort(), followDrainMs);
  };
  const checker = setInterval(check, followCheckIntervalMs);
  check();
  try {
    for await (const chunk of followTaskLogs(options.taskDir, {
      signal: stop.signal,
      fromBytes: options.tailBytes,
    })) {
      yield { stream: chunk.stream, data: chunk.data };
    }
  } finally {
    clearInterval(checker);
    if (ending.drainTimer !== null) clearTimeout(ending.drainTimer);
    signal.removeEventListener('abort', onAbort);
  }
  if (!signal.aborted) yield { end: ending.reason ?? 'stopped' };
}

/**
 * Serves follow requests from other nodes: each stream gets the frames of followLocal for the task it names,
 * then closes. A reader that goes away aborts the follow.
 */
export async function serveLogs(
  libp2p: Libp2p,
  followLocal: (request: FollowRequest, signal: AbortSignal) => AsyncIterable<LogFrame>,
): Promise<void> {
  await libp2p.handle(
    logsProtocol,
    async (stream) => {
      const io = jsonStream(stream);
      const stop = new AbortController();
      stream.addEventListener('close', () => stop.abort(), { once: true });
      // One write at a time: heartbeats and chunks share the stream.
      let writing: Promise<void> = Promise.resolve();
      const send = (frame: LogFrameJson): Promise<void> => (writing = writing.then(() => io.write(frame)));
      const heartbeat = setInterval(() => {
        send({ heartbeat: true }).catch(() => stop.abort());
      }, heartbeatIntervalMs);
      try {
        const request = parseFollowRequest(
          await io.read({ signal: AbortSignal.timeout(followDialTimeoutMs) }),
        );
        for await (const frame of followLocal(request, stop.signal)) await send(frameToJson(frame));
        await writing;
        await stream.close();
      } catch (error) {
        if (stop.signal.aborted) {
          stream.abort(new Error('the reader went away'));
          return;
        }
        const code = error instanceof ShoalError ? error.code : 'INTERNAL';
        await send({ error: { code, message: errorMessage(error) } })
          .then(() => stream.close())
          .catch(() => stream.abort(new Error('log relay failed')));
      } finally {
        clearInterval(heartbeat);
        stop.abort();
      }
    },
    { maxInboundStreams: logFollowersMax, runOnLimitedConnection: false },
  );
}

function parseFollowRequest(value: unknown): FollowRequest {
  if (typeof value !== 'object' || value === null)
    throw new ShoalError('INVALID_ARGUMENT', 'bad follow request');
  const { taskId, tailBytes } = value as Record<string, unknown>;
  if (typeof taskId !== 'string' || typeof tailBytes !== 'number' || !(tailBytes >= 0)) {
    throw new ShoalError('INVALID_ARGUMENT', 'a follow request needs taskId and tailBytes');
  }
  return { taskId, tailBytes };
}

/** Follows a task's logs on another node, relaying its frames (heartbeats dropped) until it ends or `signal` aborts. */
export async function* followRemoteLogs(
  libp2p: Libp2p,
  peer: PeerId,
  peerName: string,
  request: FollowRequest,
  signal: AbortSignal,
): AsyncGenerator<LogFrame, void, undefined> {
  let stream: Stream;
  try {
    stream = await libp2p.dialProtocol(peer, logsProtocol, {
      signal: AbortSignal.any([signal, AbortSignal.timeout(followDialTimeoutMs)]),
    });
  } catch (error) {
    if (signal.aborted) return;
    throw new ShoalError(
      'UNAVAILABLE',
      `cannot reach ${peerName}, which runs the task: ${errorMessage(error)}`,
    );
  }
  const onAbort = (): void => stream.abort(new Error('the follower went away'));
  signal.addEventListener('abort', onAbort, { once: true });
  const io = jsonStream(stream);
  let ended = false;
  try {
    await io.write(request, { signal });
    for (;;) {
      const frame = (await io.read({ signal })) as LogFrameJson;
      if ('heartbeat' in frame) continue;
      if ('error' in frame) {
        ended = true;
        throw new ShoalError(frame.error.code as ShoalError['code'], frame.error.message);
      }
      if ('end' in frame) {
        ended = true;
        yield frame;
        return;
      }
      yield { stream: frame.stream, data: Buffer.from(frame.data, 'base64') };
    }
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof ShoalError) throw error;
    throw new ShoalError('UNAVAILABLE', `lost the log stream from ${peerName}: ${errorMessage(error)}`);
  } finally {
    signal.removeEventListener('abort', onAbort);
    // Left early (the reader went away, or broke out): reset the stream, which stops the follower there.
    if (!ended) stream.abort(new Error('the follower went away'));
    else await stream.close().catch(() => stream.abort(new Error('close failed')));
  }
}
