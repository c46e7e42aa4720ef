/**
 * The HTTP API the CLI talks to, on TCP (127.0.0.1 by default; every route but the public ones needs a
 * token) and on a Unix socket in the data dir (its owner needs none). The TCP listener speaks HTTPS when
 * given a certificate (an agent serving it off loopback must).
 * Any node accepts any request; writes are forwarded to the leader by the node. Requests are dispatched
 * on the route table (routes.ts); bodies and queries are validated here, before the backend sees them.
 */
import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { SecureContextOptions } from 'node:tls';
import type * as z from 'zod/mini';
import {
  defaultNamespace,
  denial,
  type BackupFile,
  type DeploymentAction,
  type JobSpec,
  describeIssues,
  namespacePolicySchema,
  type Caller,
  type EventFilter,
  type TokenRecord,
  type NamespacePolicySpec,
  type SubmitOptions,
  type TaskSpec,
} from '../cluster/index.ts';
import { assert } from '../shared/assert.ts';
import { ShoalError, errorMessage, type ShoalErrorCode } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { frameToJson, type LogFrame } from '../shared/log-frames.ts';
import { logsLimitBytesDefault } from '../runtime/index.ts';
import { jobJsonSchema, openApiDocument } from './openapi.ts';
import { uiContentSecurityPolicy, uiPage, uiScript } from './ui.ts';
import {
  matchRoute,
  nextPageHeader,
  pathKnown,
  routes,
  type Answer,
  type Route,
  type RouteName,
  type TokenRequest,
} from './routes.ts';
import type { EventFrame } from './views.ts';
import { streamIdHeader, type SchedulerEventJson } from './scheduler.ts';

/** The largest request body the API reads. */
export const requestBytesMax = 1024 * 1024;

/** One page of GET /v1/tasks: at most `limit` tasks after the cursor `after` (null: from the first). */
export interface TasksPageRequest {
  readonly limit: number;
  readonly after: string | null;
}

export interface TasksPage {
  readonly tasks: Answer<'tasks'>;
  /** The cursor of the next page (the shoal-next-page header), or null on the last. */
  readonly next: string | null;
}

/** What the API needs from a node: the node implements it (node/backend.ts); tests may too. */
export interface ApiBackend {
  /**
   * SUBSCRIBE (Mesos's v1 scheduler API, api/scheduler.ts): the stream's id, then its events until signal
   * aborts or the subscription ends. `namespaces`: where the caller may run frameworks (null: anywhere).
   */
  subscribeFramework(
    body: unknown,
    namespaces: readonly string[] | null,
    signal: AbortSignal,
  ): Promise<{ readonly streamId: string; readonly events: AsyncIterable<SchedulerEventJson> }>;
  /** Any other scheduler call, on the stream its SUBSCRIBE opened. */
  schedulerCall(streamId: string, body: unknown, namespaces: readonly string[] | null): Promise<void>;
  frameworks(): Promise<Answer<'frameworks'>>;
  /** NOT_FOUND for a framework the cluster does not know. */
  framework(id: string): Promise<Answer<'framework'>>;
  /** Kills its tasks and forgets it (NOT_FOUND for one the cluster does not know). */
  teardownFramework(id: string): Promise<void>;
  /** Submits one task, or `replicas` of them as one job; returns their ids. */
  submit(spec: TaskSpec, options: SubmitOptions): Promise<string[]>;
  namespaces(): Promise<Answer<'namespaces'>>;
  setNamespace(policy: NamespacePolicySpec): Promise<void>;
  kill(taskId: string): Promise<void>;
  /** Every task in submission order, or the page `page` asks for and the cursor of the next (null: none). */
  tasks(page?: TasksPageRequest): Promise<TasksPage>;
  /** The pending tasks in the allocator's order (see allocator/queue-order.ts). */
  queue(): Promise<Answer<'queue'>>;
  task(taskId: string): Promise<Answer<'task'>>;
  logs(taskId: string, tailBytes: number): Promise<Answer<'taskLogs'>>;
  /** Checks the task exists (rejecting before any output), then streams its output until it ends or signal aborts. */
  followLogs(taskId: string, tailBytes: number, signal: AbortSignal): Promise<AsyncIterable<LogFrame>>;
  /**
   * The events after `index` (null: from now on) that match `filter`, then new ones, until signal aborts;
   * rejects at once (UNAVAILABLE) when the node serves as many streams as it may.
   */
  events(index: number | null, filter: EventFilter, signal: AbortSignal): Promise<AsyncIterable<EventFrame>>;
  health(): Answer<'health'>;
  /** The token a secret belongs to; UNAUTHENTICATED when it is unknown, revoked or expired. */
  authenticate(secret: string): Promise<TokenRecord>;
  /** The namespace of a task (NOT_FOUND when there is none). */
  taskNamespace(taskId: string): Promise<string>;
  createToken(request: TokenRequest): Promise<Answer<'createToken'>>;
  tokens(): Promise<Answer<'tokens'>>;
  revokeToken(accessorId: string): Promise<void>;
  status(): Answer<'status'>;
  members(): Answer<'members'>;
  drain(node: string, drain: boolean): Promise<void>;
  leaveCluster(): Promise<void>;
  /** The cluster CA's certificate; NOT_FOUND while the cluster has none (no node runs --tls auto). */
  clusterCa(): Answer<'clusterCa'>;
  /** The cluster key (admin only: it lets a node join). */
  clusterKey(): Answer<'clusterKey'>;
  /** A backup of the state as of a linearizable read (shoal snapshot save). */
  snapshot(): Promise<Answer<'snapshot'>>;
  /** Restores a backup into a cluster with no tasks (shoal snapshot restore). */
  restoreSnapshot(file: BackupFile): Promise<Answer<'restoreSnapshot'>>;
  /** This node's metrics in the Prometheus text format. */
  metrics(): Promise<string>;
  jobs(namespace: string | null): Promise<Answer<'jobs'>>;
  job(namespace: string, name: string): Promise<Answer<'job'>>;
  jobVersions(namespace: string, name: string): Promise<Answer<'jobVersions'>>;
  applyJob(job: JobSpec, checkIndex: number | null): Promise<Answer<'applyJob'>>;
  planJob(job: JobSpec): Promise<Answer<'planJob'>>;
  revertJob(
    namespace: string,
    name: string,
    version: number,
    checkIndex: number | null,
  ): Promise<Answer<'revertJob'>>;
  stopJob(namespace: string, name: string, purge: boolean): Promise<Answer<'stopJob'>>;
  jobDeployments(namespace: string, name: string): Promise<Answer<'jobDeployments'>>;
  /** Promotes the canaries of the job's running deployment. */
  promoteJob(namespace: string, name: string): Promise<Answer<'promoteJob'>>;
  deployment(id: string): Promise<Answer<'deployment'>>;
  controlDeployment(id: string, action: DeploymentAction): Promise<Answer<'controlDeployment'>>;
  /** The namespace of a deployment's job (NOT_FOUND when there is none). */
  deploymentNamespace(id: string): Promise<string>;
  services(namespace: string | null): Promise<Answer<'services'>>;
  service(namespace: string, name: string): Promise<Answer<'service'>>;
}

const httpStatus: Record<ShoalErrorCode, number> = {
  INVALID_ARGUMENT: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  UNAUTHENTICATED: 401,
  PERMISSION_DENIED: 403,
  TOO_LARGE: 413,
  NOT_LEADER: 503,
  NO_LEADER: 503,
  UNAVAILABLE: 503,
  DRIVER_UNAVAILABLE: 503,
  TIMEOUT: 504,
  CORRUPT_DATA: 500,
  INTERNAL: 500,
};

/** How long a client may take to send a request's headers, and the whole request (slow-client guard). */
export const headersTimeoutMs = 10_000;
export const requestTimeoutMs = 30_000;
/** Idle kept-alive connections are closed after this long. */
export const keepAliveTimeoutMs = 5_000;
/** Connections one listener holds at once; beyond it new ones are refused until some close. */
export const connectionsMax = 4096;

export interface ApiServerInit {
  readonly backend: ApiBackend;
  readonly logger: Logger;
  /** A TCP listener: every route but the public ones needs a token. */
  readonly tcp?: { readonly host: string; readonly port: number };
  /** The TCP listener speaks HTTPS with this certificate (none: plain HTTP, for loopback only). */
  readonly tls?: ApiTlsIdentity;
  /**
   * A Unix socket, made mode 0600 in the (0700) data dir: only its owner (the user who runs the agent) can
   * connect, and may do anything without a token, as that user could anyway.
   */
  readonly unixSocket?: string;
  /** The slow-client limits; tests shorten them (defaults: the constants above). */
  readonly timeouts?: ApiTimeouts;
  /** Hears every answered request: its route (`unknown` when none matched), status and duration. */
  readonly observe?: (route: string, code: number, seconds: number) => void;
}

export interface ApiTimeouts {
  readonly headersTimeoutMs: number;
  readonly requestTimeoutMs: number;
  /** How often the server looks for connections past those limits (Node's default is 30 s). */
  readonly checkIntervalMs: number;
}

export const apiTimeoutsDefault: ApiTimeouts = {
  headersTimeoutMs,
  requestTimeoutMs,
  checkIntervalMs: 1_000,
};

/** A TLS listener's certificate chain (the server's certificate first, then its issuers) and key, PEM. */
export interface ApiTlsIdentity {
  readonly certificatePem: string;
  readonly keyPem: string;
}

/** TLS 1.2 and 1.3 only: every supported client speaks them; older versions have known weaknesses. */
export const tlsVersionMin = 'TLSv1.2';

export interface ApiServers {
  /** The TCP listener's port (the one asked for, or the one given for port 0); null without one. */
  readonly tcpPort: number | null;
  /** Serves a new certificate from the next connection on (a renewal); throws on a listener without TLS. */
  setTls(identity: ApiTlsIdentity): void;
  close(): void;
}

export async function startApiServer(init: ApiServerInit): Promise<ApiServers> {
  const servers: Server[] = [];
  let tcpPort: number | null = null;
  let tlsServer: HttpsServer | null = null;
  try {
    if (init.tcp) {
      const { host, port } = init.tcp;
      const { server, secure } = makeServer(init, 'token', init.tls);
      tlsServer = secure;
      servers.push(server);
      await listen(server, `${host}:${port}`, () => server.listen(port, host));
      const address = server.address();
      tcpPort = typeof address === 'object' && address !== null ? address.port : port;
    }
    if (init.unixSocket !== undefined) {
      const path = init.unixSocket;
      removeStaleSocket(path);
      const { server } = makeServer(init, 'local');
      servers.push(server);
      // Made with no permissions for anyone else from the first instant (umask), then set to 0600.
      const umask = process.umask(0o177);
      try {
        await listen(server, path, () => server.listen(path));
      } finally {
        process.umask(umask);
      }
      chmodSync(path, 0o600);
    }
  } catch (error) {
    for (const server of servers) server.close();
    throw error;
  }
  return {
    tcpPort,
    setTls: (identity) => {
      assert(tlsServer !== null, 'only a TLS listener takes a new certificate');
      tlsServer.setSecureContext(secureContext(identity));
    },
    close: () => {
      for (const server of servers) {
        server.close();
        server.closeAllConnections();
      }
    },
  };
}

function makeServer(
  init: ApiServerInit,
  listener: 'token' | 'local',
  tls?: ApiTlsIdentity,
): { readonly server: Server; readonly secure: HttpsServer | null } {
  const { backend, logger } = init;
  const handle = (request: IncomingMessage, response: ServerResponse): void => {
    const observe = init.observe;
    if (observe) {
      const startedMs = performance.now();
      response.once('close', () => {
        const pathname = (request.url ?? '/').split('?')[0] ?? '/';
        const name = matchRoute(request.method ?? 'GET', pathname)?.name ?? 'unknown';
        observe(name, response.statusCode, (performance.now() - startedMs) / 1000);
      });
    }
    route(backend, listener, request, response).catch((error: unknown) => {
      const shoalError =
        error instanceof ShoalError ? error : new ShoalError('INTERNAL', errorMessage(error));
      // The URL carries no secret (tokens travel in a header), so it may be logged.
      if (shoalError.code === 'INTERNAL')
        logger.error('request failed', { url: request.url, error: shoalError.message });
      if (response.headersSent) {
        response.destroy();
        return;
      }
      send(response, httpStatus[shoalError.code], {
        error: { code: shoalError.code, message: shoalError.message },
      });
    });
  };
  // The handshake gets the headers' time: a client that opens a connection and stays silent is cut off.
  const timeouts = init.timeouts ?? apiTimeoutsDefault;
  const checking = { connectionsCheckingInterval: timeouts.checkIntervalMs };
  const secure =
    tls === undefined
      ? null
      : createHttpsServer(
          { ...secureContext(tls), ...checking, handshakeTimeout: timeouts.headersTimeoutMs },
          handle,
        );
  // An HTTPS server is an HTTP server (node:https's Server extends node:http's), with the same limits below.
  const server: Server = secure ?? createServer(checking, handle);
  server.headersTimeout = timeouts.headersTimeoutMs;
  server.requestTimeout = timeouts.requestTimeoutMs;
  server.keepAliveTimeout = keepAliveTimeoutMs;
  server.maxConnections = connectionsMax;
  // A client too slow with its request gets 408, one speaking something that is not HTTP 400; both are
  // cut off.
  server.on('clientError', (error: NodeJS.ErrnoException, socket) => {
    const status = error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
    if (socket.writable) socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n\r\n`);
    else socket.destroy();
  });
  return { server, secure };
}

function secureContext(identity: ApiTlsIdentity): SecureContextOptions {
  return { cert: identity.certificatePem, key: identity.keyPem, minVersion: tlsVersionMin };
}

function listen(server: Server, where: string, start: () => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('error', (error) =>
      reject(
        new ShoalError(
          'UNAVAILABLE',
          `cannot serve the API on ${where}: ${errorMessage(error)}; pick another --api`,
        ),
      ),
    );
    server.once('listening', () => resolve());
    start();
  });
}

/** A socket file left by an agent that died; anything else at that path is not ours to remove. */
function removeStaleSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Nothing there.
  }
}

/** A request as a handler sees it: its path parameters, and its query and body validated by the route. */
interface Request {
  readonly caller: Caller;
  readonly params: Readonly<Record<string, string>>;
  readonly query: Readonly<Record<string, unknown>>;
  readonly body: unknown;
  readonly http: IncomingMessage;
  readonly response: ServerResponse;
}

type Handler = (backend: ApiBackend, request: Request) => Promise<unknown>;

/** One handler per route; each answers with the route's view, or streams and answers undefined. */
const handlers: Record<RouteName, Handler> = {
  scheduler: async (backend, { caller, body, http, response }) => {
    const namespaces = grantOf(caller);
    const header = http.headers[streamIdHeader];
    const streamId = Array.isArray(header) ? header[0] : header;
    if (streamId === undefined) {
      await streamLines(
        async (signal) => {
          const subscription = await backend.subscribeFramework(body, namespaces, signal);
          response.setHeader(streamIdHeader, subscription.streamId);
          return subscription.events;
        },
        (event) => event,
        (_code, message) => ({ type: 'ERROR', error: { message } }),
        http,
        response,
      );
      return undefined;
    }
    await backend.schedulerCall(streamId, body, namespaces);
    send(response, 202, {});
    return undefined;
  },
  frameworks: (backend) => backend.frameworks(),
  framework: (backend, { params }) => backend.framework(params['framework'] ?? ''),
  teardownFramework: async (backend, { params }) => {
    const id = params['framework'] ?? '';
    await backend.teardownFramework(id);
    return { id, tornDown: true } satisfies Answer<'teardownFramework'>;
  },
  health: (backend) => Promise.resolve(backend.health()),
  openapi: () => Promise.resolve(openApiDocument()),
  status: (backend) => Promise.resolve(backend.status()),
  members: (backend) => Promise.resolve(backend.members()),
  drainNode: async (backend, { params, body }) => {
    const drain = (body as { drain?: boolean }).drain ?? true;
    const node = params['node'] ?? '';
    await backend.drain(node, drain);
    return { node, draining: drain } satisfies Answer<'drainNode'>;
  },
  namespaces: (backend) => backend.namespaces(),
  setNamespace: async (backend, { params, body }) => {
    const parsed = namespacePolicySchema.safeParse({ ...(body as object), name: params['namespace'] });
    if (!parsed.success)
      throw new ShoalError('INVALID_ARGUMENT', `invalid namespace: ${describeIssues(parsed.error)}`);
    await backend.setNamespace(parsed.data);
    return parsed.data satisfies Answer<'setNamespace'>;
  },
  leave: async (backend) => {
    await backend.leaveCluster();
    return { leaving: true } satisfies Answer<'leave'>;
  },
  tasks: async (backend, { query, response }) => {
    const limit = query['limit'] as number | undefined;
    const after = query['after'] as string | undefined;
    const page = await backend.tasks(limit === undefined ? undefined : { limit, after: after ?? null });
    if (page.next !== null) response.setHeader(nextPageHeader, page.next);
    return page.tasks;
  },
  queue: (backend) => backend.queue(),
  submit: async (backend, { query, body }) => {
    const id = query['id'] as string | undefined;
    const ids = await backend.submit(body as TaskSpec, {
      replicas: (query['replicas'] as number | undefined) ?? 1,
      gang: query['gang'] === true,
      ...(id === undefined ? {} : { id }),
    });
    return { id: ids[0] ?? '', ids } satisfies Answer<'submit'>;
  },
  task: (backend, { params }) => backend.task(params['task'] ?? ''),
  taskLogs: async (backend, { params, query, http, response }) => {
    const tail = (query['tail'] as number | undefined) ?? logsLimitBytesDefault;
    const taskId = params['task'] ?? '';
    if (query['follow'] === true) {
      await streamLines(
        (signal) => backend.followLogs(taskId, tail, signal),
        frameToJson,
        (code, message) => ({ error: { code, message } }),
        http,
        response,
      );
      return undefined;
    }
    return backend.logs(taskId, tail);
  },
  events: async (backend, { query, http, response }) => {
    const { index, task, namespace } = query as { index?: number; task?: string; namespace?: string };
    const filter: EventFilter = {
      ...(task === undefined ? {} : { task }),
      ...(namespace === undefined ? {} : { namespace }),
    };
    await streamLines(
      (signal) => backend.events(index ?? null, filter, signal),
      (frame) => frame,
      (code, message): EventFrame => ({ type: 'error', error: { code, message } }),
      http,
      response,
    );
    return undefined;
  },
  createToken: (backend, { body }) => backend.createToken(body as TokenRequest),
  tokens: (backend) => backend.tokens(),
  revokeToken: async (backend, { params }) => {
    const accessorId = params['accessor'] ?? '';
    await backend.revokeToken(accessorId);
    return { accessorId, revoked: true } satisfies Answer<'revokeToken'>;
  },
  killTask: async (backend, { params }) => {
    const id = params['task'] ?? '';
    await backend.kill(id);
    return { id, desired: 'kill' } satisfies Answer<'killTask'>;
  },
  clusterCa: (backend) => Promise.resolve(backend.clusterCa()),
  clusterKey: (backend) => Promise.resolve(backend.clusterKey()),
  snapshot: (backend) => backend.snapshot(),
  jobs: (backend, { query }) => backend.jobs((query['namespace'] as string | undefined) ?? null),
  job: (backend, { params, query }) => backend.job(queryNamespace(query), params['job'] ?? ''),
  jobVersions: (backend, { params, query }) =>
    backend.jobVersions(queryNamespace(query), params['job'] ?? ''),
  applyJob: (backend, { body }) => {
    const { job, checkIndex } = body as { job: JobSpec; checkIndex?: number };
    return backend.applyJob(job, checkIndex ?? null);
  },
  planJob: (backend, { body }) => backend.planJob((body as { job: JobSpec }).job),
  revertJob: (backend, { params, query, body }) => {
    const { version, checkIndex } = body as { version: number; checkIndex?: number };
    return backend.revertJob(queryNamespace(query), params['job'] ?? '', version, checkIndex ?? null);
  },
  stopJob: (backend, { params, query, body }) =>
    backend.stopJob(queryNamespace(query), params['job'] ?? '', (body as { purge?: boolean }).purge === true),
  jobDeployments: (backend, { params, query }) =>
    backend.jobDeployments(queryNamespace(query), params['job'] ?? ''),
  promoteJob: (backend, { params, query }) => backend.promoteJob(queryNamespace(query), params['job'] ?? ''),
  deployment: (backend, { params }) => backend.deployment(params['deployment'] ?? ''),
  controlDeployment: (backend, { params }) =>
    backend.controlDeployment(params['deployment'] ?? '', params['action'] as DeploymentAction),
  services: (backend, { query }) => backend.services((query['namespace'] as string | undefined) ?? null),
  service: (backend, { params, query }) => backend.service(queryNamespace(query), params['service'] ?? ''),
  jobSchema: () => Promise.resolve(jobJsonSchema()),
  metrics: (backend) => backend.metrics(),
  ui: () => Promise.resolve(uiPage()),
  uiScript: () => Promise.resolve(uiScript()),
  restoreSnapshot: (backend, { body }) => backend.restoreSnapshot(body as BackupFile),
};

async function route(
  backend: ApiBackend,
  listener: 'token' | 'local',
  http: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const url = new URL(http.url ?? '/', 'http://shoal');
  const method = http.method ?? 'GET';
  const match = matchRoute(method, url.pathname);
  if (!match) {
    if (!url.pathname.startsWith('/v1/'))
      throw new ShoalError('NOT_FOUND', `no API at ${url.pathname}; the API lives under /v1`);
    throw new ShoalError(
      'NOT_FOUND',
      pathKnown(url.pathname)
        ? `${url.pathname} does not take ${method}`
        : `no route ${method} ${url.pathname}`,
    );
  }
  const route: Route = routes[match.name];
  // Who asks, before anything else is read: an unknown caller costs the node no body to parse.
  const caller: Caller =
    listener === 'local' || route.access === 'public'
      ? { kind: 'local' }
      : { kind: 'token', token: await backend.authenticate(bearerToken(http)) };
  for (const [name, { schema }] of Object.entries(route.params ?? {})) {
    const parsed = schema.safeParse(match.params[name]);
    if (!parsed.success) throw new ShoalError('INVALID_ARGUMENT', `${name}: ${describeIssues(parsed.error)}`);
  }
  const query = parseQuery(route, url.searchParams);
  // A role too low is refused before the body is read (a restore's may be 16 MiB); the namespace check,
  // when the namespace comes from the body, follows once it is read.
  const roleDenied = denial(caller, route.access, null);
  if (roleDenied !== null) throw new ShoalError('PERMISSION_DENIED', roleDenied);
  let body: unknown = undefined;
  if (route.body !== undefined) {
    const parsed = route.body.safeParse(await readBody(http, route.bodyBytesMax ?? requestBytesMax));
    if (!parsed.success)
      throw new ShoalError('INVALID_ARGUMENT', `invalid request body: ${describeIssues(parsed.error)}`);
    body = parsed.data;
  }
  const namespace = await requestNamespace(backend, route, match.params, query, body);
  const denied = denial(caller, route.access, namespace);
  if (denied !== null) throw new ShoalError('PERMISSION_DENIED', denied);
  const answer = await handlers[match.name](backend, {
    caller,
    params: match.params,
    query,
    body,
    http,
    response,
  });
  // A stream has answered already.
  if (answer === undefined) return;
  if (route.textType !== undefined && typeof answer === 'string') {
    response.writeHead(200, {
      'content-type': route.textType,
      'content-length': Buffer.byteLength(answer),
      'content-security-policy': uiContentSecurityPolicy,
      'x-content-type-options': 'nosniff',
      'cache-control': 'no-store',
    });
    response.end(answer);
    return;
  }
  send(response, route.created === true ? 201 : 200, answer);
}

/** The namespaces a caller may run frameworks in; null: all (the local socket, admin, unrestricted tokens). */
function grantOf(caller: Caller): readonly string[] | null {
  if (caller.kind === 'local' || caller.token.role === 'admin') return null;
  return caller.token.namespaces;
}

/** The namespace a request acts in, for the deploy check (see Route.namespaceFrom); null: none. */
async function requestNamespace(
  backend: ApiBackend,
  route: Route,
  params: Readonly<Record<string, string>>,
  query: Readonly<Record<string, unknown>>,
  body: unknown,
): Promise<string | null> {
  switch (route.namespaceFrom) {
    case 'spec':
      return (body as TaskSpec).namespace ?? defaultNamespace;
    case 'task':
      return backend.taskNamespace(params['task'] ?? '');
    case 'job':
      return (body as { job: JobSpec }).job.namespace ?? defaultNamespace;
    case 'query':
      return queryNamespace(query);
    case 'deployment':
      return backend.deploymentNamespace(params['deployment'] ?? '');
    case undefined:
      return null;
  }
  return null;
}

function queryNamespace(query: Readonly<Record<string, unknown>>): string {
  return (query['namespace'] as string | undefined) ?? defaultNamespace;
}

/**
 * The query's parameters, checked against the route's: an unknown one is refused (a typo must not be
 * ignored), integers and booleans are converted from their text, then each is validated.
 */
function parseQuery(route: Route, search: URLSearchParams): Record<string, unknown> {
  const declared = route.query ?? {};
  const values: Record<string, unknown> = {};
  for (const [name, text] of search) {
    const parameter = declared[name];
    if (!parameter) {
      const known = Object.keys(declared);
      throw new ShoalError(
        'INVALID_ARGUMENT',
        `unknown query parameter ${JSON.stringify(name)}; ${known.length === 0 ? 'this route takes none' : `use ${known.join(', ')}`}`,
      );
    }
    const parsed = parameter.schema.safeParse(fromQueryText(parameter.schema, text));
    if (!parsed.success) throw new ShoalError('INVALID_ARGUMENT', `${name}: ${describeIssues(parsed.error)}`);
    values[name] = parsed.data;
  }
  return values;
}

/** The secret of an `Authorization: Bearer …` header; UNAUTHENTICATED without one. */
function bearerToken(http: IncomingMessage): string {
  const header = http.headers.authorization;
  const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
  if (!match?.[1]) {
    throw new ShoalError(
      'UNAUTHENTICATED',
      header === undefined
        ? 'this API needs a token: send "Authorization: Bearer SECRET" (the CLI: SHOAL_TOKEN or --token; the first one is DATA_DIR/management.token on the node that created the cluster)'
        : 'the Authorization header must be "Bearer SECRET"',
    );
  }
  return match[1];
}

function fromQueryText(schema: z.ZodMiniType, text: string): unknown {
  const type = schema._zod.def.type;
  if (type === 'boolean')
    return text === 'true' || text === '1' ? true : text === 'false' || text === '0' ? false : text;
  if (type === 'number' || type === 'int') return text.trim() === '' ? text : Number(text);
  return text;
}

/**
 * Streams frames (a task's output, events) as newline-delimited JSON, chunked, until they end or the client
 * goes away, which aborts the signal `open` gets; a failure after the headers went out is the last line,
 * errorLine(code, message). Written as the client reads: a slow reader holds back the frames, not memory.
 */
async function streamLines<F>(
  open: (signal: AbortSignal) => Promise<AsyncIterable<F>>,
  toJson: (frame: F) => unknown,
  errorLine: (code: ShoalErrorCode, message: string) => unknown,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const gone = new AbortController();
  response.on('close', () => gone.abort());
  const frames = await open(gone.signal);
  response.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  // The status line now, so a client knows the stream began even if nothing comes for a while.
  response.flushHeaders();
  try {
    for await (const frame of frames) {
      if (gone.signal.aborted) break;
      if (!response.write(`${JSON.stringify(toJson(frame))}\n`)) {
        // Both listeners go once either fires: a long stream must not collect them.
        await new Promise<void>((resolve) => {
          const done = (): void => {
            response.off('drain', done);
            response.off('close', done);
            resolve();
          };
          response.once('drain', done);
          response.once('close', done);
        });
      }
    }
  } catch (error) {
    const code = error instanceof ShoalError ? error.code : 'INTERNAL';
    if (!gone.signal.aborted) response.write(`${JSON.stringify(errorLine(code, errorMessage(error)))}\n`);
  }
  response.end();
  request.resume();
}

async function readBody(request: IncomingMessage, bytesMax: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > bytesMax) throw new ShoalError('TOO_LARGE', `the request body exceeds ${bytesMax} bytes`);
    chunks.push(chunk);
  }
  // No body at all reads as an empty object: `curl -X POST …/kill` needs none.
  if (bytes === 0) return {};
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
