/**
 * The one client of the HTTP API, used by the CLI, the benchmarks and the tests. Requests are built from
 * the route table and answers are checked against their views' schemas, so a server of another version
 * fails with a clear message rather than a missing field later. Errors come back as ShoalError with the
 * server's code and message.
 */
import {
  Agent,
  request,
  type ClientRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
} from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { assert } from '../shared/assert.ts';
import { ShoalError, errorMessage, isShoalErrorCode } from '../shared/errors.ts';
import type { LogFrameJson } from '../shared/log-frames.ts';
import {
  describeIssues,
  type BackupFile,
  type DeploymentAction,
  type JobSpec,
  type NamespacePolicySpec,
  type SubmitOptions,
  type TaskSpec,
} from '../cluster/index.ts';
import {
  nextPageHeader,
  routePath,
  routes,
  type Answer,
  type RouteName,
  type TokenRequest,
} from './routes.ts';
import { eventFrameSchema, type EventFrame } from './views.ts';

export interface ClientInit {
  /**
   * host:port of a node's API, https://host:port for one that speaks TLS (http://host:port: plain, as a
   * bare host:port without `ca`), or unix:PATH for its Unix socket (on that node, as the agent's user).
   */
  readonly address: string;
  /**
   * The CA certificate (PEM) the server's certificate must chain to; given, the client speaks HTTPS and
   * trusts only this CA. An https:// address without it trusts the system's CAs.
   */
  readonly ca?: string;
  /**
   * HTTPS that accepts any server certificate: only to fetch the cluster CA's certificate, which the caller
   * then checks against a fingerprint it was given (`shoal login`). Never with a token.
   */
  readonly unverified?: true;
  /** The token's secret, sent as `Authorization: Bearer …` (the Unix socket needs none). */
  readonly token?: string;
  /** How long a request may take, connection included (streams: only until the answer begins). */
  readonly timeoutMs?: number;
  /** The local address to send from (the chaos harness gives each agent's traffic its own). */
  readonly localAddress?: string;
  /** Reuse connections between requests (default true). */
  readonly keepAlive?: boolean;
}

export const clientTimeoutMsDefault = 30_000;
/** An address that names a Unix socket: unix:/var/lib/shoal/api.sock. */
export const unixAddressPrefix = 'unix:';
/** An address of an API that speaks TLS: https://10.0.0.1:4701. */
export const httpsAddressPrefix = 'https://';
const httpAddressPrefix = 'http://';
/** The largest answer the client reads (a `ps` of a full cluster is far below it). */
export const answerBytesMax = 256 * 1024 * 1024;

/** What became of one request, for callers that must tell "not delivered" from "no answer". */
export type Delivery =
  | {
      readonly kind: 'answer';
      readonly status: number;
      readonly body: unknown;
      /** The answer's headers (absent where a delivery is made up, as in tests). */
      readonly headers?: IncomingHttpHeaders;
    }
  /** Nothing was delivered: the connection was refused or never made. */
  | { readonly kind: 'undelivered'; readonly error: string }
  /** The request may have been delivered, but no answer came (timeout, reset). */
  | { readonly kind: 'unknown'; readonly error: string };

export interface SendOptions {
  readonly params?: Readonly<Record<string, string>>;
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>>;
  readonly body?: unknown;
  readonly timeoutMs?: number;
}

export class ShoalClient {
  readonly address: string;
  private readonly host: string;
  private readonly port: number;
  private readonly socketPath: string | null;
  /** Speaks HTTPS, with these TLS options (null: plain HTTP). */
  private readonly tls: { readonly ca?: string; readonly rejectUnauthorized: boolean } | null;
  private readonly token: string | undefined;
  private readonly timeoutMs: number;
  private readonly localAddress: string | undefined;
  private readonly agent: Agent | false;

  constructor(init: ClientInit) {
    assert(
      init.unverified === undefined || init.token === undefined,
      'no token goes to an unverified server',
    );
    this.address = init.address;
    this.token = init.token;
    let hostPort = init.address;
    let secure = init.ca !== undefined || init.unverified === true;
    if (init.address.startsWith(unixAddressPrefix)) {
      this.socketPath = init.address.slice(unixAddressPrefix.length);
      this.host = 'localhost';
      this.port = 0;
      secure = false;
    } else {
      this.socketPath = null;
      if (hostPort.startsWith(httpsAddressPrefix)) {
        hostPort = hostPort.slice(httpsAddressPrefix.length);
        secure = true;
      } else if (hostPort.startsWith(httpAddressPrefix)) {
        hostPort = hostPort.slice(httpAddressPrefix.length);
      }
      hostPort = hostPort.replace(/\/+$/, '');
      const at = hostPort.lastIndexOf(':');
      this.host = hostPort.slice(0, at).replace(/^\[|\]$/g, '');
      this.port = Number(hostPort.slice(at + 1));
    }
    this.tls = secure
      ? { ...(init.ca === undefined ? {} : { ca: init.ca }), rejectUnauthorized: init.unverified !== true }
      : null;
    this.timeoutMs = init.timeoutMs ?? clientTimeoutMsDefault;
    this.localAddress = init.localAddress;
    this.agent =
      init.keepAlive === false
        ? false
        : this.tls === null
          ? new Agent({ keepAlive: true })
          : new HttpsAgent({ keepAlive: true, ...this.tls });
  }

  /** Closes idle kept-alive connections, so a short-lived process can exit at once. */
  close(): void {
    if (this.agent) this.agent.destroy();
  }

  status(): Promise<Answer<'status'>> {
    return this.call('status');
  }

  members(): Promise<Answer<'members'>> {
    return this.call('members');
  }

  tasks(): Promise<Answer<'tasks'>> {
    return this.call('tasks');
  }

  /**
   * One page of the task list: at most `limit` tasks after the cursor `after` (null: the first page), and
   * the cursor of the next page (null on the last). How a big cluster's tasks are read.
   */
  async tasksPage(
    limit: number,
    after: string | null = null,
  ): Promise<{ readonly tasks: Answer<'tasks'>; readonly next: string | null }> {
    const query = { limit, ...(after === null ? {} : { after }) };
    const delivery = await this.send('tasks', { query });
    const tasks = this.answerOf('tasks', delivery);
    const header = delivery.kind === 'answer' ? delivery.headers?.[nextPageHeader] : undefined;
    return { tasks, next: typeof header === 'string' ? header : null };
  }

  task(taskId: string): Promise<Answer<'task'>> {
    return this.call('task', { params: { task: taskId } });
  }

  /** Submits a task (or replicas); resolves once a quorum has committed it. */
  submit(spec: TaskSpec, options: Partial<SubmitOptions> = {}): Promise<Answer<'submit'>> {
    return this.call('submit', {
      body: spec,
      query: {
        id: options.id,
        replicas: options.replicas !== undefined && options.replicas > 1 ? options.replicas : undefined,
        gang: options.gang === true ? true : undefined,
      },
    });
  }

  kill(taskId: string): Promise<Answer<'killTask'>> {
    return this.call('killTask', { params: { task: taskId }, body: {} });
  }

  logs(taskId: string, tailBytes?: number): Promise<Answer<'taskLogs'>> {
    return this.call('taskLogs', { params: { task: taskId }, query: { tail: tailBytes } });
  }

  drain(node: string, drain: boolean): Promise<Answer<'drainNode'>> {
    return this.call('drainNode', { params: { node }, body: { drain } });
  }

  namespaces(): Promise<Answer<'namespaces'>> {
    return this.call('namespaces');
  }

  setNamespace(policy: NamespacePolicySpec): Promise<Answer<'setNamespace'>> {
    const { name, ...rest } = policy;
    return this.call('setNamespace', { params: { namespace: name }, body: rest });
  }

  createToken(request: TokenRequest): Promise<Answer<'createToken'>> {
    return this.call('createToken', { body: request });
  }

  tokens(): Promise<Answer<'tokens'>> {
    return this.call('tokens');
  }

  revokeToken(accessorId: string): Promise<Answer<'revokeToken'>> {
    return this.call('revokeToken', { params: { accessor: accessorId } });
  }

  leave(): Promise<Answer<'leave'>> {
    return this.call('leave', { body: {} });
  }

  /** The cluster CA's certificate (public: check it by its fingerprint before trusting it). */
  clusterCa(): Promise<Answer<'clusterCa'>> {
    return this.call('clusterCa');
  }

  /** The cluster key (admin). */
  clusterKey(): Promise<Answer<'clusterKey'>> {
    return this.call('clusterKey');
  }

  /** The node's metrics, in the Prometheus text format. */
  metrics(): Promise<string> {
    return this.call('metrics');
  }

  /** A backup of the cluster's state (admin). */
  snapshot(): Promise<Answer<'snapshot'>> {
    return this.call('snapshot');
  }

  jobs(namespace?: string): Promise<Answer<'jobs'>> {
    return this.call('jobs', { query: { namespace } });
  }

  job(name: string, namespace?: string): Promise<Answer<'job'>> {
    return this.call('job', { params: { job: name }, query: { namespace } });
  }

  jobVersions(name: string, namespace?: string): Promise<Answer<'jobVersions'>> {
    return this.call('jobVersions', { params: { job: name }, query: { namespace } });
  }

  /** Applies a job; with checkIndex, only if the job's modify index is still that. */
  applyJob(job: JobSpec, checkIndex?: number): Promise<Answer<'applyJob'>> {
    return this.call('applyJob', { body: { job, ...(checkIndex === undefined ? {} : { checkIndex }) } });
  }

  planJob(job: JobSpec): Promise<Answer<'planJob'>> {
    return this.call('planJob', { body: { job } });
  }

  revertJob(name: string, version: number, namespace?: string): Promise<Answer<'revertJob'>> {
    return this.call('revertJob', { params: { job: name }, query: { namespace }, body: { version } });
  }

  stopJob(name: string, purge: boolean, namespace?: string): Promise<Answer<'stopJob'>> {
    return this.call('stopJob', { params: { job: name }, query: { namespace }, body: { purge } });
  }

  jobDeployments(name: string, namespace?: string): Promise<Answer<'jobDeployments'>> {
    return this.call('jobDeployments', { params: { job: name }, query: { namespace } });
  }

  /** Promotes the canaries of the job's running deployment. */
  promoteJob(name: string, namespace?: string): Promise<Answer<'promoteJob'>> {
    return this.call('promoteJob', { params: { job: name }, query: { namespace } });
  }

  deployment(id: string): Promise<Answer<'deployment'>> {
    return this.call('deployment', { params: { deployment: id } });
  }

  controlDeployment(id: string, action: DeploymentAction): Promise<Answer<'controlDeployment'>> {
    return this.call('controlDeployment', { params: { deployment: id, action } });
  }

  services(namespace?: string): Promise<Answer<'services'>> {
    return this.call('services', { query: { namespace } });
  }

  service(name: string, namespace?: string): Promise<Answer<'service'>> {
    return this.call('service', { params: { service: name }, query: { namespace } });
  }

  /** Restores a backup into a cluster with no tasks (admin). */
  restoreSnapshot(file: BackupFile): Promise<Answer<'restoreSnapshot'>> {
    return this.call('restoreSnapshot', { body: file });
  }

  /** A task's output as it comes (`logs -f`): each frame as it arrives, until the task ends. */
  async *followLogs(
    taskId: string,
    options: { readonly tailBytes?: number; readonly signal?: AbortSignal } = {},
  ): AsyncGenerator<LogFrameJson, void, undefined> {
    const request = { params: { task: taskId }, query: { follow: 1, tail: options.tailBytes } };
    for await (const frame of this.lines('taskLogs', request, options.signal)) yield frame as LogFrameJson;
  }

  /**
   * The cluster's events as this node applies them (`GET /v1/events`): every one after `index` that it
   * still holds (absent: from now on), then new ones, until the caller stops reading or `signal` aborts.
   * To resume, pass the index of the last heartbeat or reset read, or of the last event once one with a
   * higher index has followed it (one entry's events may be cut apart when a connection breaks).
   */
  async *events(
    options: {
      readonly index?: number;
      readonly task?: string;
      readonly namespace?: string;
      readonly signal?: AbortSignal;
    } = {},
  ): AsyncGenerator<EventFrame, void, undefined> {
    const { index, task, namespace } = options;
    for await (const line of this.lines('events', { query: { index, task, namespace } }, options.signal)) {
      const parsed = eventFrameSchema.safeParse(line);
      if (!parsed.success) {
        throw new ShoalError(
          'INTERNAL',
          `${this.address} sent an event this client does not understand (${describeIssues(parsed.error)}); are the CLI and the agent the same version?`,
        );
      }
      yield parsed.data;
    }
  }

  /**
   * A streaming route's answer (see Route.stream): each newline-delimited JSON line as it arrives, with no
   * overall timeout once the answer has begun. An error answer before the stream throws like the calls.
   */
  private async *lines(
    name: RouteName,
    options: SendOptions,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<unknown, void, undefined> {
    const response = await this.open(routes[name].method, this.pathOf(name, options), undefined, signal);
    if (response.statusCode !== 200) {
      const text = await readAll(response);
      throw this.failure({ kind: 'answer', status: response.statusCode ?? 0, body: parseJson(text) });
    }
    const decoder = new TextDecoder();
    let buffered = '';
    try {
      for await (const chunk of response as AsyncIterable<Buffer>) {
        buffered += decoder.decode(chunk, { stream: true });
        let newline = buffered.indexOf('\n');
        while (newline >= 0) {
          const line = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          if (line !== '') yield JSON.parse(line) as unknown;
          newline = buffered.indexOf('\n');
        }
      }
    } finally {
      // Left early: close the connection, which ends the stream on the server.
      response.destroy();
    }
  }

  /** One request, whatever comes of it; never throws (see Delivery). */
  send(name: RouteName, options: SendOptions = {}): Promise<Delivery> {
    const route = routes[name];
    return this.deliver(route.method, this.pathOf(name, options), options.body, options.timeoutMs);
  }

  /** A route's answer, checked against its schema; anything else throws ShoalError. */
  async call<R extends RouteName>(name: R, options: SendOptions = {}): Promise<Answer<R>> {
    return this.answerOf(name, await this.send(name, options));
  }

  private answerOf<R extends RouteName>(name: R, delivery: Delivery): Answer<R> {
    if (delivery.kind !== 'answer' || delivery.status < 200 || delivery.status >= 300) {
      throw this.failure(delivery);
    }
    const schema = routes[name].answer;
    const parsed = schema.safeParse(delivery.body);
    if (!parsed.success) {
      throw new ShoalError(
        'INTERNAL',
        `${this.address} answered ${routes[name].method} ${routes[name].path} with something this client does not understand (${describeIssues(parsed.error)}); are the CLI and the agent the same version?`,
      );
    }
    return parsed.data as Answer<R>;
  }

  private pathOf(name: RouteName, options: SendOptions): string {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) query.set(key, String(value));
    }
    const search = query.toString();
    return `${routePath(name, options.params)}${search === '' ? '' : `?${search}`}`;
  }

  private deliver(method: string, path: string, body: unknown, timeoutMs?: number): Promise<Delivery> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve) => {
      let connected = false;
      let settled = false;
      const done = (delivery: Delivery): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(delivery);
      };
      const req = this.request(method, path, payload, (response) => {
        readAll(response).then(
          (text) =>
            done({
              kind: 'answer',
              status: response.statusCode ?? 0,
              body: parseJson(text),
              headers: response.headers,
            }),
          (error: unknown) => done({ kind: 'unknown', error: errorMessage(error) }),
        );
      });
      const timer = setTimeout(() => {
        req.destroy(new Error(`no answer within ${(timeoutMs ?? this.timeoutMs) / 1000} s`));
      }, timeoutMs ?? this.timeoutMs);
      req.on('socket', (socket) => {
        if (!socket.connecting) connected = true;
        else socket.once('connect', () => (connected = true));
      });
      req.on('error', (error) => {
        const cause = causeOf(error);
        // A certificate this client refuses ends the handshake: the request was never sent.
        done({ kind: connected && !certificateRefused(cause) ? 'unknown' : 'undelivered', error: cause });
      });
      req.end(payload);
    });
  }

  /** Opens a streaming request: resolves with the answer's head once it arrives. */
  private open(method: string, path: string, body: unknown, signal?: AbortSignal): Promise<IncomingMessage> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = this.request(method, path, payload, (response) => {
        clearTimeout(timer);
        resolve(response);
      });
      const timer = setTimeout(() => req.destroy(new Error('no answer in time')), this.timeoutMs);
      const abort = (): void => {
        req.destroy(new Error('aborted'));
      };
      signal?.addEventListener('abort', abort, { once: true });
      req.on('close', () => signal?.removeEventListener('abort', abort));
      req.on('error', (error) => {
        clearTimeout(timer);
        reject(this.failure({ kind: 'undelivered', error: causeOf(error) }));
      });
      req.end(payload);
    });
  }

  private request(
    method: string,
    path: string,
    payload: string | undefined,
    onResponse: (response: IncomingMessage) => void,
  ): ClientRequest {
    const headers: Record<string, string | number> =
      payload === undefined
        ? {}
        : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) };
    if (this.token !== undefined) headers['authorization'] = `Bearer ${this.token}`;
    const options = {
      ...(this.socketPath === null ? { host: this.host, port: this.port } : { socketPath: this.socketPath }),
      method,
      path,
      agent: this.agent,
      ...(this.localAddress === undefined ? {} : { localAddress: this.localAddress }),
      headers,
    };
    return this.tls === null
      ? request(options, onResponse)
      : httpsRequest({ ...options, ...this.tls }, onResponse);
  }

  private failure(delivery: Delivery): ShoalError {
    if (delivery.kind === 'undelivered' && certificateRefused(delivery.error)) {
      return new ShoalError(
        'UNAVAILABLE',
        `refusing shoal at ${this.address}: its TLS certificate is not one this client trusts (${delivery.error}); log in again with shoal login ADDR --ca-fingerprint SHA256, or give --ca FILE`,
      );
    }
    if (delivery.kind === 'undelivered') {
      return new ShoalError(
        'UNAVAILABLE',
        `cannot reach shoal at ${this.address} (${delivery.error}); is \`shoal agent\` running there? Point at a node with --addr HOST:PORT or SHOAL_ADDR`,
      );
    }
    if (delivery.kind === 'unknown') {
      // A TLS listener answers plain HTTP with a TLS alert or by hanging up; say what is the likely cause.
      const hint =
        this.tls === null && this.socketPath === null
          ? '; if that node serves its API over TLS, use https://HOST:PORT, --ca FILE or shoal login'
          : '';
      return new ShoalError(
        'UNAVAILABLE',
        `no answer from shoal at ${this.address}: ${delivery.error}${hint}`,
      );
    }
    const error = (delivery.body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
    if (isShoalErrorCode(error?.code) && typeof error.message === 'string') {
      return new ShoalError(error.code, error.message);
    }
    return new ShoalError(
      'INTERNAL',
      `${this.address} answered ${delivery.status} with something that is not shoal's JSON`,
    );
  }

  /**
   * A POST with headers of the caller's, its answer read as it comes: the scheduler API's calls
   * (scheduler-client.ts), whose SUBSCRIBE answers with a stream id header and then streams, and whose other
   * calls send that id back. Resolves with a 2xx answer once its head arrives (no timeout after that:
   * destroy it to hang up). Anything else throws ShoalError as the calls do, its `cause` the Delivery (so
   * "not delivered" can be told from "no answer", and an answer's HTTP status read). `timeoutMs` bounds the
   * wait for the head; `signal` aborts the whole exchange.
   */
  async post(
    path: string,
    body: unknown,
    options: {
      readonly headers?: Readonly<Record<string, string>>;
      readonly timeoutMs?: number;
      readonly signal?: AbortSignal;
    } = {},
  ): Promise<IncomingMessage> {
    const payload = JSON.stringify(body);
    const fail = (delivery: Delivery): ShoalError => {
      const error = this.failure(delivery);
      return new ShoalError(error.code, error.message, { cause: delivery });
    };
    const response = await new Promise<IncomingMessage>((resolve, reject) => {
      let connected = false;
      const timeoutMs = options.timeoutMs ?? this.timeoutMs;
      const req = this.request('POST', path, payload, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      for (const [name, value] of Object.entries(options.headers ?? {})) req.setHeader(name, value);
      const timer = setTimeout(() => {
        req.destroy(new Error(`no answer within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const abort = (): void => {
        req.destroy(new Error('aborted'));
      };
      if (options.signal?.aborted === true) abort();
      options.signal?.addEventListener('abort', abort, { once: true });
      req.on('close', () => options.signal?.removeEventListener('abort', abort));
      req.on('socket', (socket) => {
        if (!socket.connecting) connected = true;
        else socket.once('connect', () => (connected = true));
      });
      req.on('error', (error) => {
        clearTimeout(timer);
        const cause = causeOf(error);
        reject(
          fail({ kind: connected && !certificateRefused(cause) ? 'unknown' : 'undelivered', error: cause }),
        );
      });
      req.end(payload);
    });
    const status = response.statusCode ?? 0;
    if (status >= 200 && status < 300) return response;
    let text: string;
    try {
      text = await readAll(response);
    } catch (error) {
      throw fail({ kind: 'unknown', error: errorMessage(error) });
    }
    throw fail({ kind: 'answer', status, body: parseJson(text) });
  }
}

async function readAll(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > answerBytesMax) {
      response.destroy();
      throw new Error(`the answer exceeds ${answerBytesMax} bytes`);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** A JSON answer's value; a text answer (GET /metrics) as its text; nothing as null. */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text === '' ? null : text;
  }
}

/** Node's codes for a server certificate the client does not accept. */
const certificateErrorCodes = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
]);

function certificateRefused(cause: string): boolean {
  return certificateErrorCodes.has(cause.split(':')[0] ?? '');
}

function causeOf(error: Error): string {
  const code = (error as { code?: unknown }).code;
  return typeof code === 'string' ? `${code}: ${error.message}` : error.message;
}
