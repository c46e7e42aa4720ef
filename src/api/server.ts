/**
 * The HTTP API the CLI talks to. Bound to 127.0.0.1 by default: anyone who can reach it can run tasks.
 * Any node accepts any request; writes are forwarded to the leader by the node.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import {
  describeIssues,
  namespacePolicySchema,
  taskSpecSchema,
  type NamespacePolicySpec,
  type TaskSpec,
} from '../cluster/index.ts';
import { ShoalError, errorMessage, type ShoalErrorCode } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { frameToJson, type LogFrame } from '../shared/log-frames.ts';

/** The largest request body the API reads. */
export const requestBytesMax = 1024 * 1024;

/** What the API needs from a node: the node implements it; tests may too. */
/** Most replicas one submission may create. */
export const replicasMax = 10_000;

export interface SubmitOptions {
  /** How many tasks of this spec to create, as one job (default 1). */
  readonly replicas: number;
  /** The replicas start together or not at all. */
  readonly gang: boolean;
  /** The (first) task's id, chosen by the client so it can retry safely; default random. */
  readonly id?: string;
}

/** Task ids: 12 lowercase hex digits. */
export const taskIdPattern = /^[0-9a-f]{12}$/;

export interface ApiBackend {
  /** Submits one task, or `replicas` of them as one job; returns their ids. */
  submit(spec: TaskSpec, options: SubmitOptions): Promise<string[]>;
  namespaces(): Promise<NamespacePolicySpec[]>;
  setNamespace(policy: NamespacePolicySpec): Promise<void>;
  kill(taskId: string): Promise<void>;
  tasks(): Promise<unknown[]>;
  task(taskId: string): Promise<unknown>;
  logs(taskId: string, tailBytes: number): Promise<{ stdout: string; stderr: string }>;
  /** Checks the task exists (rejecting before any output), then streams its output until it ends or signal aborts. */
  followLogs(taskId: string, tailBytes: number, signal: AbortSignal): Promise<AsyncIterable<LogFrame>>;
  status(): unknown;
  members(): unknown[];
  drain(node: string, drain: boolean): Promise<void>;
  leaveCluster(): Promise<void>;
}

const httpStatus: Record<ShoalErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  TOO_LARGE: 413,
  NOT_LEADER: 503,
  NO_LEADER: 503,
  UNAVAILABLE: 503,
  DRIVER_UNAVAILABLE: 503,
  TIMEOUT: 504,
  CORRUPT_DATA: 500,
  INTERNAL: 500,
};

export async function startApiServer(
  backend: ApiBackend,
  host: string,
  port: number,
  logger: Logger,
): Promise<Server> {
  const server = createServer((request, response) => {
    route(backend, request, response).catch((error: unknown) => {
      const shoalError =
        error instanceof ShoalError ? error : new ShoalError('INTERNAL', errorMessage(error));
      if (shoalError.code === 'INTERNAL')
        logger.error('request failed', { url: request.url, error: shoalError.message });
      send(response, httpStatus[shoalError.code], {
        error: { code: shoalError.code, message: shoalError.message },
      });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(
        new ShoalError(
          'UNAVAILABLE',
          `cannot serve the API on ${host}:${port}: ${errorMessage(error)}; pick another --api`,
        ),
      ),
    );
    server.listen(port, host, () => resolve());
  });
  return server;
}

async function route(backend: ApiBackend, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const url = new URL(request.url ?? '/', 'http://shoal');
  const parts = url.pathname.split('/').filter(Boolean);
  const method = request.method ?? 'GET';
  if (parts[0] !== 'v1')
    throw new ShoalError('NOT_FOUND', `no API at ${url.pathname}; the API lives under /v1`);
  const [, resource, id, action] = parts;
  if (method === 'GET' && resource === 'status' && id === undefined)
    return send(response, 200, backend.status());
  if (method === 'GET' && resource === 'members' && id === undefined)
    return send(response, 200, backend.members());
  if (method === 'POST' && resource === 'nodes' && id !== undefined && action === 'drain') {
    const body = (await readBody(request)) as { drain?: unknown } | null;
    const drain = body?.drain ?? true;
    if (typeof drain !== 'boolean') throw new ShoalError('INVALID_ARGUMENT', 'drain must be true or false');
    await backend.drain(decodeURIComponent(id), drain);
    return send(response, 200, { node: id, draining: drain });
  }
  if (resource === 'namespaces') {
    if (method === 'GET' && id === undefined) return send(response, 200, await backend.namespaces());
    if (method === 'PUT' && id !== undefined && action === undefined) {
      const body = await readBody(request);
      const parsed = namespacePolicySchema.safeParse({
        ...(typeof body === 'object' && body !== null ? body : {}),
        name: decodeURIComponent(id),
      });
      if (!parsed.success)
        throw new ShoalError('INVALID_ARGUMENT', `invalid namespace: ${describeIssues(parsed.error)}`);
      await backend.setNamespace(parsed.data);
      return send(response, 200, parsed.data);
    }
  }
  if (method === 'POST' && resource === 'agent' && id === 'leave') {
    await backend.leaveCluster();
    return send(response, 200, { leaving: true });
  }
  if (resource === 'tasks') {
    if (method === 'GET' && id === undefined) return send(response, 200, await backend.tasks());
    if (method === 'POST' && id === undefined) {
      const spec = parseSpec(await readBody(request));
      const replicas = Number(url.searchParams.get('replicas') ?? 1);
      if (!Number.isInteger(replicas) || replicas < 1 || replicas > replicasMax)
        throw new ShoalError('INVALID_ARGUMENT', `replicas must be a whole number from 1 to ${replicasMax}`);
      const gang = url.searchParams.get('gang') === 'true';
      const id = url.searchParams.get('id');
      if (id !== null && !taskIdPattern.test(id))
        throw new ShoalError('INVALID_ARGUMENT', 'id must be 12 lowercase hex digits');
      const ids = await backend.submit(spec, { replicas, gang, ...(id === null ? {} : { id }) });
      return send(response, 201, { id: ids[0], ids });
    }
    if (id !== undefined && method === 'GET' && action === undefined)
      return send(response, 200, await backend.task(id));
    if (id !== undefined && method === 'GET' && action === 'logs') {
      const tail = Number(url.searchParams.get('tail') ?? 1024 * 1024);
      if (!Number.isInteger(tail) || tail < 0)
        throw new ShoalError('INVALID_ARGUMENT', 'tail must be a whole number of bytes');
      const follow = url.searchParams.get('follow');
      if (follow === '1' || follow === 'true') return streamLogs(backend, id, tail, request, response);
      return send(response, 200, await backend.logs(id, tail));
    }
    if (id !== undefined && method === 'POST' && action === 'kill') {
      await backend.kill(id);
      return send(response, 200, { id, desired: 'kill' });
    }
  }
  throw new ShoalError('NOT_FOUND', `no route ${method} ${url.pathname}`);
}

/**
 * Streams a task's output as newline-delimited JSON frames (see LogFrameJson), chunked, until the task ends or
 * the client goes away; a failure after the headers went out is the last frame, {"error": …}.
 */
async function streamLogs(
  backend: ApiBackend,
  taskId: string,
  tailBytes: number,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const gone = new AbortController();
  response.on('close', () => gone.abort());
  const frames = await backend.followLogs(taskId, tailBytes, gone.signal);
  response.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  // The status line now, so a client knows the follow began even if the task is quiet.
  response.flushHeaders();
  try {
    for await (const frame of frames) {
      if (gone.signal.aborted) break;
      if (!response.write(`${JSON.stringify(frameToJson(frame))}\n`)) {
        await new Promise((resolve) => {
          response.once('drain', resolve);
          response.once('close', resolve);
        });
      }
    }
  } catch (error) {
    const code = error instanceof ShoalError ? error.code : 'INTERNAL';
    if (!gone.signal.aborted)
      response.write(`${JSON.stringify({ error: { code, message: errorMessage(error) } })}\n`);
  }
  response.end();
  request.resume();
}

function parseSpec(body: unknown): TaskSpec {
  const parsed = taskSpecSchema.safeParse(body);
  if (!parsed.success)
    throw new ShoalError('INVALID_ARGUMENT', `invalid task: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

async function readBody(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > requestBytesMax)
      throw new ShoalError('TOO_LARGE', `the request body exceeds ${requestBytesMax} bytes`);
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new ShoalError('INVALID_ARGUMENT', 'the request body is not valid JSON');
  }
}

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  response.end(text);
}
