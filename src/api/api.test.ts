/**
 * The API's contract against the server: every route is in the OpenAPI document and in docs/api.md, every
 * answer matches its route's schema, and bad requests get a clear status. A real HTTP server on loopback
 * with a backend made of fixed views (no cluster).
 */
import { readFileSync } from 'node:fs';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { format, resolveConfig } from 'prettier';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ShoalError, silentLogger } from '../shared/index.ts';
import {
  backupFileBytesMax,
  makeBackupFile,
  type ClusterEvent,
  type EventFilter,
  type JobSpec,
  type TaskSpec,
  type TokenRecord,
} from '../cluster/index.ts';
import { ShoalClient } from './client.ts';
import { openApiDocument } from './openapi.ts';
import { renderApiReference } from './reference.ts';
import { routes, type Route, type RouteName } from './routes.ts';
import { requestBytesMax, startApiServer, type ApiBackend, type ApiServers } from './server.ts';
import type { DeploymentView, FrameworkView, JobView, TaskView } from './views.ts';

const task: TaskView = {
  id: 'aaaaaaaaaaaa',
  name: 'web',
  state: 'running',
  node: 'n1',
  nodeId: 'peer1',
  exitCode: null,
  reason: null,
  attempt: 0,
  restart: 'never',
  priority: 50,
  namespace: 'default',
  job: null,
  driver: 'exec',
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  command: ['sleep', '60'],
  image: null,
  desired: 'run',
  submittedAt: new Date(0).toISOString(),
  updatedAt: new Date(0).toISOString(),
  ports: [],
  health: null,
  framework: null,
};

const frameworkSample: FrameworkView = {
  id: 'fw-0123456789abcdef',
  name: 'batch',
  role: 'team',
  user: 'nobody',
  priority: 50,
  failoverTimeoutSeconds: 3600,
  connected: true,
  registeredAt: new Date(0).toISOString(),
  disconnectedAt: null,
  expiresAt: null,
  tasks: 1,
  pendingUpdates: 0,
};

const deploymentSample: DeploymentView = {
  id: 'd12',
  namespace: 'default',
  job: 'web',
  jobVersion: 2,
  stableVersion: 1,
  status: 'running',
  statusReason: 'rolling out version 2',
  policy: {
    maxParallel: 1,
    order: 'stop-first',
    minHealthyTimeMs: 10_000,
    healthyDeadlineMs: 300_000,
    progressDeadlineMs: 600_000,
    autoRevert: true,
    canary: 0,
  },
  groups: [],
  createdAt: new Date(0).toISOString(),
  updatedAt: new Date(0).toISOString(),
  progressDeadlineAt: null,
  revertedToVersion: null,
};

const submitted: { spec: TaskSpec; replicas: number; gang: boolean; id?: string }[] = [];
const eventsAsked: { index: number | null; filter: EventFilter }[] = [];
const assigned: ClusterEvent = {
  index: 4,
  type: 'task:assigned',
  at: new Date(0).toISOString(),
  taskId: task.id,
  name: 'web',
  namespace: 'default',
  job: null,
  state: 'assigned',
  attempt: 0,
  nodeId: 'peer1',
  node: 'n1',
};

/** One token per role, one restricted to a namespace, one expired; their secrets are the keys. */
const tokens = new Map<string, TokenRecord>(
  (
    [
      ['read', 'read', null, null],
      ['deploy', 'deploy', null, null],
      ['deploy-team', 'deploy', ['team'], null],
      ['operator', 'operator', null, null],
      ['admin', 'admin', null, null],
      ['framework-team', 'framework', ['team'], null],
      ['expired', 'admin', null, 1],
    ] as const
  ).map(([secret, role, namespaces, expiresAtMs], index) => [
    `shoal_${secret}`,
    {
      accessorId: `00000000000${index}`,
      name: secret,
      role,
      namespaces: namespaces === null ? null : [...namespaces],
      secretHash: '0'.repeat(64),
      createdAtMs: 0,
      expiresAtMs,
    },
  ]),
);

const jobSpecSample: JobSpec = {
  name: 'web',
  type: 'service',
  task: { driver: 'exec', command: ['sleep', '60'], cpuMillis: 100, memoryMiB: 32 },
  count: 2,
};
const jobSample: JobView = {
  namespace: 'default',
  name: 'web',
  type: 'service',
  version: 1,
  status: 'running',
  modifyIndex: 5,
  createIndex: 5,
  updatedAt: new Date(0).toISOString(),
  states: { running: 2 },
  groups: [{ name: 'web', count: 2, states: { running: 2 } }],
  nextLaunchAt: null,
  lastLaunchAt: null,
  parent: null,
};

const backupSample = makeBackupFile(
  JSON.stringify({ appliedIndex: 4, nodes: [], tasks: [], terminalOrder: [] }),
  { index: 4, tasks: 0, atMs: 0, shoalVersion: '0.1.0' },
);

const backend: ApiBackend = {
  health: () => ({ status: 'ok', node: 'n1', version: '0.1.0' }),
  authenticate: (secret) => {
    return Promise.resolve().then(() => {
      const token = tokens.get(secret);
      if (!token) throw new ShoalError('UNAUTHENTICATED', 'the cluster knows no such token');
      if (token.expiresAtMs !== null) throw new ShoalError('UNAUTHENTICATED', `token ${token.name} expired`);
      return token;
    });
  },
  taskNamespace: (taskId) =>
    taskId === task.id
      ? Promise.resolve('default')
      : Promise.reject(new ShoalError('NOT_FOUND', `no task ${taskId}`)),
  createToken: (request) =>
    Promise.resolve({
      accessorId: '0000000000aa',
      name: request.name,
      role: request.role,
      namespaces: request.namespaces ?? null,
      createdAt: new Date(0).toISOString(),
      expiresAt: null,
      expired: false,
      secret: 'shoal_new',
    }),
  tokens: () =>
    Promise.resolve(
      [...tokens.values()].map((token) => ({
        accessorId: token.accessorId,
        name: token.name,
        role: token.role,
        namespaces: token.namespaces,
        createdAt: new Date(0).toISOString(),
        expiresAt: null,
        expired: token.expiresAtMs !== null,
      })),
    ),
  revokeToken: () => Promise.resolve(),
  submit: (spec, options) => {
    submitted.push({ spec, ...options });
    return Promise.resolve([options.id ?? 'bbbbbbbbbbbb']);
  },
  namespaces: () => Promise.resolve([{ name: 'default', weight: 1, quota: null }]),
  setNamespace: () => Promise.resolve(),
  kill: (id) =>
    id === task.id ? Promise.resolve() : Promise.reject(new ShoalError('NOT_FOUND', `no task ${id}`)),
  // Two pages of one task each when asked for pages of one: the task, then nothing.
  tasks: (page) =>
    Promise.resolve(
      page === undefined
        ? { tasks: [task], next: null }
        : page.after === null
          ? { tasks: [task], next: `1.${task.id}` }
          : { tasks: [], next: null },
    ),
  queue: () => Promise.resolve([task]),
  task: () =>
    Promise.resolve({
      ...task,
      user: null,
      pidsMax: null,
      diskBytes: 0,
      devices: {},
      events: [{ at: new Date(0).toISOString(), message: 'submitted' }],
    }),
  logs: () => Promise.resolve({ stdout: 'out', stderr: '' }),
  // A short stream that ends at once, so every request of it finishes.
  subscribeFramework: () =>
    Promise.resolve({
      streamId: 's1',
      events: (async function* () {
        yield await Promise.resolve({
          type: 'SUBSCRIBED' as const,
          subscribed: { framework_id: { value: 'fw-1' }, heartbeat_interval_seconds: 15 },
        });
      })(),
    }),
  schedulerCall: () => Promise.resolve(),
  frameworks: () => Promise.resolve([frameworkSample]),
  framework: (id) =>
    id === frameworkSample.id
      ? Promise.resolve({ ...frameworkSample, liveTasks: [task] })
      : Promise.reject(new ShoalError('NOT_FOUND', `no framework ${id}`)),
  teardownFramework: () => Promise.resolve(),
  events: (index, filter) => {
    eventsAsked.push({ index, filter });
    return Promise.resolve(
      (async function* () {
        yield await Promise.resolve({ type: 'reset' as const, index: 3 });
        yield assigned;
        yield { type: 'heartbeat' as const, index: 4 };
      })(),
    );
  },
  followLogs: () =>
    Promise.resolve(
      (async function* () {
        yield await Promise.resolve({ stream: 'stdout' as const, data: Buffer.from('hi\n') });
        yield { end: 'task finished' };
      })(),
    ),
  status: () => ({
    id: 'peer1',
    name: 'n1',
    role: 'leader',
    leader: { id: 'peer1', name: 'n1' },
    term: 2,
    voters: [{ id: 'peer1', name: 'n1' }],
    learners: [],
    commitIndex: 5,
    appliedIndex: 5,
    eventLoopStallMsMax: 3,
    warning: null,
  }),
  members: () => [
    {
      id: 'peer1',
      name: 'n1',
      address: '127.0.0.1:4700',
      state: 'alive',
      cpuMillis: 1000,
      memoryBytes: 1 << 30,
      labels: {},
      drivers: ['exec'],
      incarnation: 1,
      lastHeardMsAgo: 0,
      draining: false,
    },
  ],
  drain: () => Promise.resolve(),
  leaveCluster: () => Promise.resolve(),
  clusterCa: () => ({ certificatePem: '-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----\n' }),
  clusterKey: () => ({ key: 'ab'.repeat(32) }),
  snapshot: () => Promise.resolve(backupSample),
  metrics: () => Promise.resolve('# HELP shoal_up 1\n# TYPE shoal_up gauge\nshoal_up 1\n'),
  jobs: () => Promise.resolve([jobSample]),
  job: () => Promise.resolve({ ...jobSample, spec: jobSpecSample, instances: [] }),
  jobVersions: () =>
    Promise.resolve([{ version: 1, at: new Date(0).toISOString(), index: 3, spec: jobSpecSample }]),
  applyJob: (job) =>
    Promise.resolve({ namespace: 'default', name: job.name, version: 1, modifyIndex: 5, changed: true }),
  planJob: (job) =>
    Promise.resolve({
      namespace: 'default',
      name: job.name,
      modifyIndex: 0,
      version: 0,
      nextVersion: 1,
      changed: true,
      diff: [{ path: 'job', after: job }],
      start: [{ group: 'web', slot: 0, reason: 'new instance', node: 'n1', waits: null }],
      stop: [],
    }),
  revertJob: (_namespace, name) =>
    Promise.resolve({ namespace: 'default', name, version: 2, modifyIndex: 6, changed: true }),
  stopJob: (_namespace, name) =>
    Promise.resolve({ namespace: 'default', name, version: 1, modifyIndex: 7, changed: true }),
  jobDeployments: () => Promise.resolve([deploymentSample]),
  promoteJob: () => Promise.resolve(deploymentSample),
  deployment: () => Promise.resolve(deploymentSample),
  controlDeployment: () => Promise.resolve(deploymentSample),
  deploymentNamespace: () => Promise.resolve('default'),
  services: () => Promise.resolve([]),
  service: (namespace, name) => Promise.resolve({ namespace, name, running: 0, instances: [] }),
  restoreSnapshot: (file) =>
    Promise.resolve({
      index: 9,
      snapshotIndex: file.index,
      tasks: file.tasks,
      waiting: 0,
      requeued: 0,
      lost: 0,
      namespaces: 0,
      tokens: 0,
      clusterCaKept: false,
    }),
};

let servers: ApiServers;
let address = '';
let socketDir = '';
let client: ShoalClient;
let local: ShoalClient;

beforeAll(async () => {
  socketDir = mkdtempSync(join(tmpdir(), 'shoal-api-test-'));
  servers = await startApiServer({
    backend,
    logger: silentLogger,
    tcp: { host: '127.0.0.1', port: 0 },
    unixSocket: join(socketDir, 'api.sock'),
  });
  address = `127.0.0.1:${servers.tcpPort ?? 0}`;
  client = new ShoalClient({ address, token: 'shoal_admin' });
  local = new ShoalClient({ address: `unix:${join(socketDir, 'api.sock')}` });
});

afterAll(() => {
  client.close();
  local.close();
  servers.close();
  rmSync(socketDir, { recursive: true, force: true });
});

async function raw(
  method: string,
  path: string,
  body?: string,
  token: string | null = 'shoal_admin',
): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token !== null) headers['authorization'] = `Bearer ${token}`;
  const response = await fetch(`http://${address}${path}`, {
    method,
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const text = await response.text();
  try {
    // An error answer: its message, as a person reads it.
    const parsed = JSON.parse(text) as { error?: { message?: string } };
    return { status: response.status, text: parsed.error?.message ?? text };
  } catch {
    return { status: response.status, text };
  }
}

/** Every frame of a stream, once it ends. */
async function collect<T>(stream: AsyncIterable<T>): Promise<T[]> {
  const frames: T[] = [];
  for await (const frame of stream) frames.push(frame);
  return frames;
}

const spec: TaskSpec = {
  name: 'web',
  driver: 'exec',
  command: ['sleep', '1'],
  cpuMillis: 100,
  memoryBytes: 64 * 1024 * 1024,
  priority: 50,
  env: {},
  constraints: {},
};

describe('the OpenAPI document', () => {
  it('describes every route of the table, with its answer', () => {
    const document = openApiDocument() as { paths: Record<string, Record<string, { operationId: string }>> };
    const described = Object.values(document.paths).flatMap((methods) =>
      Object.values(methods).map((operation) => operation.operationId),
    );
    expect(described.sort()).toEqual(Object.keys(routes).sort());
  });

  it('is what GET /v1/openapi.json serves', async () => {
    expect(await client.call('openapi')).toEqual(JSON.parse(JSON.stringify(openApiDocument())));
  });

  it('is rendered in docs/api.md, which is up to date (npm run docs:api)', async () => {
    const path = join(import.meta.dirname, '..', '..', 'docs', 'api.md');
    const options = (await resolveConfig(path)) ?? {};
    const rendered = await format(renderApiReference(), { ...options, parser: 'markdown' });
    expect(readFileSync(path, 'utf8')).toBe(rendered);
  });
});

describe('the server and the client', () => {
  it("answers every route with its view, checked against the route's schema by the client", async () => {
    const answered: RouteName[] = [];
    const check = async (name: RouteName, run: () => Promise<unknown>): Promise<void> => {
      await run();
      answered.push(name);
    };
    await check('scheduler', async () => {
      // SUBSCRIBE opens a stream, whose id comes back in a header; a call on it is answered 202.
      const subscribe = await fetch(`http://${address}/v1/scheduler`, {
        method: 'POST',
        headers: { authorization: 'Bearer shoal_admin', 'content-type': 'application/json' },
        body: samples.scheduler.body ?? '',
      });
      expect(subscribe.status).toBe(200);
      expect(subscribe.headers.get('shoal-stream-id')).toBe('s1');
      expect(subscribe.headers.get('content-type')).toBe('application/x-ndjson');
      expect(JSON.parse((await subscribe.text()).trim())).toMatchObject({ type: 'SUBSCRIBED' });
      const call = await fetch(`http://${address}/v1/scheduler`, {
        method: 'POST',
        headers: { authorization: 'Bearer shoal_admin', 'shoal-stream-id': 's1' },
        body: '{"type":"SUPPRESS","framework_id":{"value":"fw-1"}}',
      });
      expect([call.status, await call.text()]).toEqual([202, '{}']);
    });
    await check('frameworks', () => client.call('frameworks'));
    await check('framework', () => client.call('framework', { params: { framework: frameworkSample.id } }));
    await check('teardownFramework', () =>
      client.call('teardownFramework', { params: { framework: frameworkSample.id } }),
    );
    await check('health', () => client.call('health'));
    await check('openapi', () => client.call('openapi'));
    await check('status', () => client.status());
    await check('members', () => client.members());
    await check('drainNode', () => client.drain('n1', false));
    await check('namespaces', () => client.namespaces());
    await check('setNamespace', () => client.setNamespace({ name: 'team', weight: 2, quota: null }));
    await check('leave', () => client.leave());
    await check('tasks', () => client.tasks());
    await check('queue', () => client.call('queue'));
    await check('submit', () => client.submit(spec, { id: 'cccccccccccc', replicas: 3, gang: true }));
    await check('task', () => client.task(task.id));
    await check('taskLogs', () => client.logs(task.id, 10));
    await check('killTask', () => client.kill(task.id));
    await check('events', () => collect(client.events({ index: 2 })));
    await check('createToken', () => client.createToken({ name: 'ci', role: 'deploy', ttlSeconds: 60 }));
    await check('tokens', () => client.tokens());
    await check('revokeToken', () => client.revokeToken('000000000001'));
    await check('clusterCa', () => client.clusterCa());
    await check('clusterKey', () => client.clusterKey());
    await check('snapshot', () => client.snapshot());
    await check('restoreSnapshot', () => client.restoreSnapshot(backupSample));
    await check('jobs', () => client.jobs());
    await check('applyJob', () => client.applyJob(jobSpecSample, 0));
    await check('planJob', () => client.planJob(jobSpecSample));
    await check('job', () => client.job('web'));
    await check('jobVersions', () => client.jobVersions('web'));
    await check('revertJob', () => client.revertJob('web', 1));
    await check('stopJob', () => client.stopJob('web', true));
    await check('jobDeployments', () => client.jobDeployments('web'));
    await check('promoteJob', () => client.promoteJob('web'));
    await check('deployment', () => client.deployment('d12'));
    await check('controlDeployment', () => client.controlDeployment('d12', 'pause'));
    await check('services', () => client.services());
    await check('service', () => client.service('web'));
    await check('jobSchema', () => client.call('jobSchema'));
    await check('metrics', async () => expect(await client.metrics()).toMatch(/^# HELP/));
    await check('ui', async () => expect(await client.call('ui')).toMatch(/<script src="\/ui\/app.js">/));
    await check('uiScript', async () => expect(await client.call('uiScript')).toMatch(/dashboard/));
    expect(answered.sort()).toEqual(Object.keys(routes).sort());
    expect(submitted.at(-1)).toMatchObject({ replicas: 3, gang: true, id: 'cccccccccccc' });
  });

  it('streams events as frames that match the documented frame schema, filtered as asked', async () => {
    const frames = await collect(client.events({ index: 2, task: task.id, namespace: 'default' }));
    expect(frames).toEqual([{ type: 'reset', index: 3 }, assigned, { type: 'heartbeat', index: 4 }]);
    expect(eventsAsked.at(-1)).toEqual({ index: 2, filter: { task: task.id, namespace: 'default' } });
    await collect(client.events());
    expect(eventsAsked.at(-1)).toEqual({ index: null, filter: {} });
    const answer = await raw('GET', '/v1/events?index=-1');
    expect(answer.status).toBe(400);
    expect((await raw('GET', '/v1/events?task=nope')).status).toBe(400);
  });

  it('streams a follow as frames that match the documented frame schema', async () => {
    const frames = [];
    for await (const frame of client.followLogs(task.id, { tailBytes: 10 })) frames.push(frame);
    expect(frames).toEqual([
      { stream: 'stdout', data: Buffer.from('hi\n').toString('base64') },
      { end: 'task finished' },
    ]);
    for (const frame of frames) expect(routes.taskLogs.stream.frame.safeParse(frame).success).toBe(true);
  });

  it('reads the task list a page at a time, the next page named by a header', async () => {
    const first = await client.tasksPage(1);
    expect(first).toEqual({ tasks: [task], next: `1.${task.id}` });
    expect(await client.tasksPage(1, first.next)).toEqual({ tasks: [], next: null });
    expect((await raw('GET', '/v1/tasks?limit=0')).status).toBe(400);
    expect((await raw('GET', '/v1/tasks?limit=10001')).status).toBe(400);
    const bad = await raw('GET', '/v1/tasks?limit=5&after=nope');
    expect(bad.status).toBe(400);
    expect(bad.text).toMatch(/after must be the shoal-next-page header of an answer/);
  });

  it('takes a POST without a body where the route needs none', async () => {
    expect((await raw('POST', `/v1/tasks/${task.id}/kill`)).status).toBe(200);
  });

  it.each([
    ['an unknown route', 'GET', '/v1/nope', undefined, 404, /no route GET \/v1\/nope/],
    ['a path outside the API', 'GET', '/etc/passwd', undefined, 404, /the API lives under \/v1/],
    ['a known path with the wrong method', 'DELETE', '/v1/tasks', undefined, 404, /does not take DELETE/],
    [
      'an unknown query parameter',
      'GET',
      '/v1/tasks/aaaaaaaaaaaa/logs?tial=5',
      undefined,
      400,
      /unknown query parameter "tial"; use tail, follow/,
    ],
    [
      'a query parameter of the wrong type',
      'GET',
      '/v1/tasks/aaaaaaaaaaaa/logs?tail=lots',
      undefined,
      400,
      /^.*tail: /,
    ],
    [
      'a bad task id to submit',
      'POST',
      '/v1/tasks?id=XYZ',
      JSON.stringify(spec),
      400,
      /12 lowercase hex digits/,
    ],
    ['too many replicas', 'POST', '/v1/tasks?replicas=10001', JSON.stringify(spec), 400, /replicas/],
    ['a body that is not JSON', 'POST', '/v1/tasks', '{"name":', 400, /not valid JSON/],
    [
      'a body with an unknown field',
      'POST',
      '/v1/tasks',
      JSON.stringify({ ...spec, sudo: true }),
      400,
      /sudo/,
    ],
    ['a body with a wrong field', 'POST', '/v1/nodes/n1/drain', '{"drain":"yes"}', 400, /drain/],
    [
      'a traversal in a task id',
      'GET',
      '/v1/tasks/..%2F..%2Fetc/logs',
      undefined,
      400,
      /task: a task id is 12 lowercase hex digits/,
    ],
    ['a body over the limit', 'POST', '/v1/tasks', 'x'.repeat(requestBytesMax + 1), 413, /exceeds/],
    [
      'a snapshot over its own, larger limit',
      'POST',
      '/v1/snapshot/restore',
      'x'.repeat(backupFileBytesMax + 1),
      413,
      /exceeds 16777216 bytes/,
    ],
    [
      'a snapshot body past the usual limit, as far as its JSON',
      'POST',
      '/v1/snapshot/restore',
      ' '.repeat(requestBytesMax + 1),
      400,
      /not a shoal snapshot|request body/,
    ],
  ] as const)('refuses %s with a clear status', async (_what, method, path, body, status, message) => {
    const answer = await raw(method, path, body);
    expect(answer.status).toBe(status);
    expect(answer.text).toMatch(message);
  });
});

/** A valid request for every route, so the matrix below tests access and nothing else. */
const samples: Record<RouteName, { method: string; path: string; body?: string }> = {
  scheduler: {
    method: 'POST',
    path: '/v1/scheduler',
    body: '{"type":"SUBSCRIBE","subscribe":{"framework_info":{"name":"batch","role":"team"}}}',
  },
  frameworks: { method: 'GET', path: '/v1/frameworks' },
  framework: { method: 'GET', path: '/v1/frameworks/fw-0123456789abcdef' },
  teardownFramework: { method: 'DELETE', path: '/v1/frameworks/fw-0123456789abcdef' },
  health: { method: 'GET', path: '/v1/health' },
  openapi: { method: 'GET', path: '/v1/openapi.json' },
  status: { method: 'GET', path: '/v1/status' },
  members: { method: 'GET', path: '/v1/members' },
  drainNode: { method: 'POST', path: '/v1/nodes/n1/drain', body: '{"drain":true}' },
  namespaces: { method: 'GET', path: '/v1/namespaces' },
  setNamespace: { method: 'PUT', path: '/v1/namespaces/team', body: '{"weight":2,"quota":null}' },
  leave: { method: 'POST', path: '/v1/agent/leave', body: '{}' },
  tasks: { method: 'GET', path: '/v1/tasks' },
  queue: { method: 'GET', path: '/v1/queue' },
  submit: { method: 'POST', path: '/v1/tasks', body: JSON.stringify(spec) },
  task: { method: 'GET', path: `/v1/tasks/${task.id}` },
  taskLogs: { method: 'GET', path: `/v1/tasks/${task.id}/logs` },
  killTask: { method: 'POST', path: `/v1/tasks/${task.id}/kill`, body: '{}' },
  events: { method: 'GET', path: '/v1/events?index=0' },
  createToken: { method: 'POST', path: '/v1/acl/tokens', body: '{"name":"x","role":"read"}' },
  tokens: { method: 'GET', path: '/v1/acl/tokens' },
  revokeToken: { method: 'DELETE', path: '/v1/acl/tokens/000000000001' },
  clusterCa: { method: 'GET', path: '/v1/ca' },
  clusterKey: { method: 'GET', path: '/v1/cluster/key' },
  snapshot: { method: 'GET', path: '/v1/snapshot' },
  restoreSnapshot: { method: 'POST', path: '/v1/snapshot/restore', body: JSON.stringify(backupSample) },
  jobs: { method: 'GET', path: '/v1/jobs' },
  applyJob: { method: 'PUT', path: '/v1/jobs', body: JSON.stringify({ job: jobSpecSample }) },
  planJob: { method: 'POST', path: '/v1/jobs/plan', body: JSON.stringify({ job: jobSpecSample }) },
  job: { method: 'GET', path: '/v1/jobs/web' },
  jobVersions: { method: 'GET', path: '/v1/jobs/web/versions' },
  revertJob: { method: 'POST', path: '/v1/jobs/web/revert', body: '{"version":1}' },
  stopJob: { method: 'POST', path: '/v1/jobs/web/stop', body: '{}' },
  jobDeployments: { method: 'GET', path: '/v1/jobs/web/deployments' },
  promoteJob: { method: 'POST', path: '/v1/jobs/web/promote', body: '{}' },
  deployment: { method: 'GET', path: '/v1/deployments/d12' },
  controlDeployment: { method: 'POST', path: '/v1/deployments/d12/pause', body: '{}' },
  services: { method: 'GET', path: '/v1/services' },
  service: { method: 'GET', path: '/v1/services/web' },
  jobSchema: { method: 'GET', path: '/v1/schema/job.json' },
  metrics: { method: 'GET', path: '/metrics' },
  ui: { method: 'GET', path: '/ui' },
  uiScript: { method: 'GET', path: '/ui/app.js' },
};

const roleRank = ['read', 'deploy', 'operator', 'admin'];
/** The credentials tried on every route: none, unknown ones, and one token per role. */
const credentials: { name: string; secret: string | null; rank: number; namespaces: string[] | null }[] = [
  { name: 'no token', secret: null, rank: -1, namespaces: null },
  { name: 'a wrong token', secret: 'shoal_wrong', rank: -1, namespaces: null },
  { name: 'a revoked token', secret: 'shoal_revoked', rank: -1, namespaces: null },
  { name: 'an expired token', secret: 'shoal_expired', rank: -1, namespaces: null },
  { name: 'read', secret: 'shoal_read', rank: 0, namespaces: null },
  { name: 'deploy', secret: 'shoal_deploy', rank: 1, namespaces: null },
  { name: 'deploy in namespace team', secret: 'shoal_deploy-team', rank: 1, namespaces: ['team'] },
  { name: 'operator', secret: 'shoal_operator', rank: 2, namespaces: null },
  { name: 'admin', secret: 'shoal_admin', rank: 3, namespaces: null },
  // Ranks with none of the above: the scheduler API (in its namespaces) and nothing else.
  { name: 'framework in namespace team', secret: 'shoal_framework-team', rank: -2, namespaces: ['team'] },
];

describe('access: every route × every credential', () => {
  const cases = (Object.keys(routes) as RouteName[]).flatMap((name) =>
    credentials.map((credential) => [name, credential.name, credential] as const),
  );
  it.each(cases)('%s with %s', async (name, _what, credential) => {
    const route: Route = routes[name];
    const sample = samples[name];
    const answer = await raw(sample.method, sample.path, sample.body, credential.secret);
    let expected: number;
    // The scheduler API needs a framework token or one that may deploy.
    const needed = route.access === 'framework' ? roleRank.indexOf('deploy') : roleRank.indexOf(route.access);
    if (route.access === 'public') expected = 200;
    else if (credential.rank === -2) expected = route.access === 'framework' ? 200 : 403;
    else if (credential.rank < 0) expected = 401;
    else if (credential.rank < needed) expected = 403;
    else if (route.namespaceFrom !== undefined && credential.namespaces !== null) expected = 403;
    else expected = route.created === true ? 201 : 200;
    expect(answer.status, answer.text).toBe(expected);
  });

  it('lets the Unix socket, mode 0600, do anything without a token', async () => {
    expect(statSync(join(socketDir, 'api.sock')).mode & 0o777).toBe(0o600);
    await local.tokens();
    await local.drain('n1', true);
    expect((await local.submit(spec)).ids).toHaveLength(1);
  });

  it('says what to send when a token is missing, and never echoes one', async () => {
    const missing = await raw('GET', '/v1/tasks', undefined, null);
    expect(missing.text).toMatch(/needs a token: send "Authorization: Bearer SECRET"/);
    const wrong = await raw('GET', '/v1/tasks', undefined, 'shoal_wrong');
    expect(wrong.text).not.toContain('shoal_wrong');
  });
});

describe('hostile and broken clients', () => {
  let hostile: ApiServers;
  let port = 0;

  beforeAll(async () => {
    hostile = await startApiServer({
      backend,
      logger: silentLogger,
      tcp: { host: '127.0.0.1', port: 0 },
      // Short limits, so a test need not wait out the production ones (10 s and 30 s).
      timeouts: { headersTimeoutMs: 500, requestTimeoutMs: 1000, checkIntervalMs: 100 },
    });
    port = hostile.tcpPort ?? 0;
  });

  afterAll(() => {
    hostile.close();
  });

  /** Opens a raw TCP connection, writes `text`, and resolves with all it read until the server closed it. */
  function converse(text: string, closeWithinMs: number): Promise<{ answer: string; closedMs: number }> {
    return new Promise((resolve, reject) => {
      const started = Date.now();
      const socket = connect(port, '127.0.0.1', () => socket.write(text));
      let answer = '';
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
      socket.on('error', () => undefined);
      socket.on('close', () => resolve({ answer, closedMs: Date.now() - started }));
      setTimeout(() => {
        socket.destroy();
        reject(new Error(`the server kept the connection over ${closeWithinMs} ms; it read: ${answer}`));
      }, closeWithinMs);
    });
  }

  const healthy = async (): Promise<void> => {
    const answer = await fetch(`http://127.0.0.1:${port}/v1/health`);
    expect(answer.status).toBe(200);
  };

  it('cuts off a client that never finishes its headers', async () => {
    const { answer } = await converse('GET /v1/health HTTP/1.1\r\nHost: x\r\n', 5000);
    expect(answer).toMatch(/^HTTP\/1.1 408 Request Timeout/);
    await healthy();
  });

  it('cuts off a client that sends less body than it announced', async () => {
    const { answer } = await converse(
      'POST /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer shoal_admin\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"name":',
      5000,
    );
    expect(answer).toMatch(/^HTTP\/1.1 408 Request Timeout/);
    await healthy();
  });

  it('answers a client speaking something that is not HTTP with 400, and closes', async () => {
    const { answer } = await converse('\u0016\u0003\u0001\u0002\u0000garbage that is not HTTP\r\n\r\n', 5000);
    expect(answer).toMatch(/^HTTP\/1.1 400/);
    await healthy();
  });

  it('refuses deeply nested JSON with a clear 400, and stays up', async () => {
    const depth = 200_000;
    const body = `{"name":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const answer = await fetch(`http://127.0.0.1:${port}/v1/tasks`, {
      method: 'POST',
      headers: { authorization: 'Bearer shoal_admin', 'content-type': 'application/json' },
      body,
    });
    expect(answer.status).toBe(400);
    await healthy();
  });

  it('holds 1,000 idle connections and still answers everyone else at once', async () => {
    const sockets = await Promise.all(
      Array.from(
        { length: 1000 },
        () =>
          new Promise<Socket>((resolve, reject) => {
            const socket = connect(port, '127.0.0.1', () => resolve(socket));
            socket.on('error', reject);
          }),
      ),
    );
    try {
      const started = Date.now();
      await Promise.all(Array.from({ length: 20 }, healthy));
      // Generous for a loaded 2-core CI machine; a starved server would wait for the idle ones' timeouts.
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      for (const socket of sockets) socket.destroy();
    }
  });
});
