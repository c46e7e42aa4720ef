/**
 * The API's routes: one table that the server dispatches and validates on, the client builds its requests
 * from, and the OpenAPI document is generated from (openapi.ts), so a path, a parameter or a shape is
 * written once. Each route names its method, its path (`:name` marks a parameter), its query parameters
 * and body (schemas the server validates with), and the view it answers with (views.ts).
 */
import * as z from 'zod/mini';
import {
  accessorIdPattern,
  deploymentActions,
  jobSpecSchema,
  backupFileBytesMax,
  backupFileSchema,
  namespacePolicySchema,
  replicasMax,
  taskIdPattern,
  taskSpecSchema,
  tokenRoles,
  tokenTtlMsMax,
  type Access,
} from '../cluster/index.ts';
import { whole } from '../shared/schema.ts';
import {
  clusterCaViewSchema,
  clusterKeyViewSchema,
  deploymentViewSchema,
  serviceViewSchema,
  drainAnswerSchema,
  healthViewSchema,
  newTokenAnswerSchema,
  revokeAnswerSchema,
  restoreAnswerSchema,
  jobApplyAnswerSchema,
  jobDetailViewSchema,
  jobPlanAnswerSchema,
  jobVersionViewSchema,
  jobViewSchema,
  tokenViewSchema,
  killAnswerSchema,
  leaveAnswerSchema,
  memberViewSchema,
  eventFrameSchema,
  frameworkDetailViewSchema,
  frameworkViewSchema,
  namespaceListSchema,
  namespaceViewSchema,
  statusViewSchema,
  submitAnswerSchema,
  taskDetailViewSchema,
  taskLogsViewSchema,
  taskViewSchema,
} from './views.ts';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'DELETE';

/** A query parameter: its schema (integers and booleans are converted from the string first) and meaning. */
export interface QueryParameter {
  readonly schema: z.ZodMiniType;
  readonly description: string;
}

export interface Route {
  readonly method: HttpMethod;
  readonly path: string;
  readonly summary: string;
  /** The least role a token needs (see cluster/tokens.ts); `public`: none. */
  readonly access: Access;
  /**
   * Where the namespace a deploy right is checked in comes from: the submitted spec, the task named by
   * the path, the job in the body, or the `namespace` query parameter (default "default"). Absent: the
   * route acts on no namespace.
   */
  readonly namespaceFrom?: 'spec' | 'task' | 'job' | 'query' | 'deployment';
  /** Path parameters, by name: checked like query parameters. */
  readonly params?: Readonly<Record<string, QueryParameter>>;
  readonly query?: Readonly<Record<string, QueryParameter>>;
  /** The request body's schema; absent: the route reads no body. */
  readonly body?: z.ZodMiniType;
  /** The largest body this route reads, in bytes (default requestBytesMax, in server.ts). */
  readonly bodyBytesMax?: number;
  /** The answer's schema (200, or 201 when `created`). */
  readonly answer: z.ZodMiniType;
  readonly created?: boolean;
  /** The answer is text of this content type (the answer schema: a string), not JSON. */
  readonly textType?: string;
  /**
   * The answer as a stream of newline-delimited JSON frames: when the query parameter `when` is true, or
   * always when `when` is absent (then `answer` is the frame's schema too).
   */
  readonly stream?: { readonly when?: string; readonly frame: z.ZodMiniType; readonly description: string };
}

const taskParam = {
  task: {
    schema: z.string().check(z.regex(taskIdPattern, 'a task id is 12 lowercase hex digits')),
    description: 'A task id (12 hex digits), from `shoal ps`',
  },
};
const nameParam = (description: string): QueryParameter => ({
  schema: z.string().check(z.minLength(1), z.maxLength(256)),
  description,
});

const frameworkParam: QueryParameter = {
  schema: z.string().check(z.minLength(1), z.maxLength(128)),
  description: 'A framework id (fw- and 16 hex digits), from `shoal framework ls`',
};

const deploymentParam: QueryParameter = {
  schema: z.string().check(z.regex(/^d[0-9]{1,16}$/, 'a deployment id is d and digits')),
  description: 'The deployment id (d and digits)',
};

const jobNamespaceQuery = {
  namespace: nameParam('The job\'s namespace (default "default")'),
};

/** One frame of a followed task's output (see shared/log-frames.ts). */
const logFrameSchema = z.union([
  z.object({ stream: z.enum(['stdout', 'stderr']), data: z.string() }),
  z.object({ end: z.string() }),
  z.object({ heartbeat: z.literal(true) }),
  z.object({ error: z.object({ code: z.string(), message: z.string() }) }),
]);

/** One line of a scheduler stream (its fields per type: src/api/scheduler.ts, docs/api.md). */
const schedulerEventFrameSchema = z.looseObject({
  type: z.enum(['SUBSCRIBED', 'OFFERS', 'RESCIND', 'UPDATE', 'FAILURE', 'ERROR', 'HEARTBEAT']),
});

/** The most tasks one page of GET /v1/tasks holds. */
export const tasksPageMax = 10_000;
/** The answer's header that names the next page of GET /v1/tasks (absent on the last page). */
export const nextPageHeader = 'shoal-next-page';
/** A page cursor: the submission index and id of the last task of the page before. */
export const tasksPageCursorPattern = /^\d{1,15}\..{1,128}$/s;

export const routes = {
  scheduler: {
    method: 'POST',
    path: '/v1/scheduler',
    access: 'framework',
    summary:
      "Frameworks (Mesos's v1 scheduler API): SUBSCRIBE opens a stream of offers and task updates; every other call (ACCEPT, DECLINE, REVIVE, SUPPRESS, KILL, ACKNOWLEDGE, RECONCILE, TEARDOWN) names that stream in the shoal-stream-id header and is answered 202",
    body: z.looseObject({ type: z.string() }),
    answer: schedulerEventFrameSchema,
    stream: {
      frame: schedulerEventFrameSchema,
      description:
        'SUBSCRIBE: newline-delimited JSON events, SUBSCRIBED first (with the framework id and the heartbeat interval), then OFFERS, RESCIND, UPDATE, FAILURE and a HEARTBEAT every interval, until the client goes away; ERROR and the end when the subscription is replaced, torn down, or the leader changes. The answer carries the shoal-stream-id header. Other calls: 202 with {}',
    },
  },
  frameworks: {
    method: 'GET',
    path: '/v1/frameworks',
    access: 'read',
    summary: 'The frameworks the cluster knows: connected, or disconnected within their failover timeout',
    answer: z.array(frameworkViewSchema),
  },
  framework: {
    method: 'GET',
    path: '/v1/frameworks/:framework',
    access: 'read',
    summary: 'One framework, with its live tasks',
    params: { framework: frameworkParam },
    answer: frameworkDetailViewSchema,
  },
  teardownFramework: {
    method: 'DELETE',
    path: '/v1/frameworks/:framework',
    access: 'operator',
    summary: 'Tears a framework down, as its TEARDOWN call would: its tasks are killed and its record goes',
    params: { framework: frameworkParam },
    answer: z.object({ id: z.string(), tornDown: z.literal(true) }),
  },
  health: {
    method: 'GET',
    path: '/v1/health',
    access: 'public',
    summary: 'Whether this node serves the API (no leader or quorum needed)',
    answer: healthViewSchema,
  },
  openapi: {
    method: 'GET',
    path: '/v1/openapi.json',
    access: 'public',
    summary: 'This document: the API described in OpenAPI 3.1',
    answer: z.record(z.string(), z.unknown()),
  },
  status: {
    method: 'GET',
    path: '/v1/status',
    access: 'read',
    summary: "This node's view of Raft: role, leader, term, voters, commit index",
    answer: statusViewSchema,
  },
  members: {
    method: 'GET',
    path: '/v1/members',
    access: 'read',
    summary: 'The cluster members as this node sees them',
    answer: z.array(memberViewSchema),
  },
  drainNode: {
    method: 'POST',
    path: '/v1/nodes/:node/drain',
    access: 'operator',
    summary: 'Drain a node: no new tasks there, and its tasks move elsewhere ({"drain": false} cancels)',
    params: { node: nameParam('A node name or id, from `shoal members`') },
    body: z.strictObject({ drain: z.exactOptional(z.boolean()) }),
    answer: drainAnswerSchema,
  },
  namespaces: {
    method: 'GET',
    path: '/v1/namespaces',
    access: 'read',
    summary: "Namespaces' share weights and quotas",
    answer: namespaceListSchema,
  },
  setNamespace: {
    method: 'PUT',
    path: '/v1/namespaces/:namespace',
    access: 'operator',
    summary: "Set a namespace's share weight and quota",
    params: { namespace: nameParam('The namespace') },
    body: z.omit(namespacePolicySchema, { name: true }),
    answer: namespaceViewSchema,
  },
  leave: {
    method: 'POST',
    path: '/v1/agent/leave',
    access: 'operator',
    summary: 'Drain this node, hand over leadership, and stop its agent',
    body: z.strictObject({}),
    answer: leaveAnswerSchema,
  },
  tasks: {
    method: 'GET',
    path: '/v1/tasks',
    access: 'read',
    summary:
      'Every task, in submission order; with limit, one page of them, and the shoal-next-page header names the next page while there is one',
    query: {
      limit: {
        schema: whole(1, tasksPageMax),
        description: `At most this many tasks (default: all). A cluster of hundreds of thousands of tasks is read in pages: one answer of them all holds the node's event loop for seconds`,
      },
      after: {
        schema: z
          .string()
          .check(z.regex(tasksPageCursorPattern, 'after must be the shoal-next-page header of an answer')),
        description: 'The page after the one whose answer carried this shoal-next-page header',
      },
    },
    answer: z.array(taskViewSchema),
  },
  submit: {
    method: 'POST',
    path: '/v1/tasks',
    access: 'deploy',
    namespaceFrom: 'spec',
    summary: 'Submit a task, or replicas of it as one job; answers once a quorum has committed it',
    query: {
      id: {
        schema: z.string().check(z.regex(taskIdPattern, 'id must be 12 lowercase hex digits')),
        description: "The (first) task's id, so a retried submission is not a second task; default random",
      },
      replicas: {
        schema: whole(1, replicasMax),
        description: 'How many tasks of this spec to create, as one job (default 1)',
      },
      gang: { schema: z.boolean(), description: 'The replicas start together or not at all' },
    },
    body: taskSpecSchema,
    answer: submitAnswerSchema,
    created: true,
  },
  queue: {
    method: 'GET',
    path: '/v1/queue',
    access: 'read',
    summary:
      'The pending tasks in the order the allocator takes them: strict priority, then namespaces in turn by weighted dominant share, then FIFO; each with why it waits',
    answer: z.array(taskViewSchema),
  },
  task: {
    method: 'GET',
    path: '/v1/tasks/:task',
    access: 'read',
    summary: 'One task and its recent events',
    params: taskParam,
    answer: taskDetailViewSchema,
  },
  taskLogs: {
    method: 'GET',
    path: '/v1/tasks/:task/logs',
    access: 'deploy',
    namespaceFrom: 'task',
    summary: "A task's stdout and stderr, from any node",
    params: taskParam,
    query: {
      tail: { schema: whole(0), description: 'At most this many bytes of each stream, from the end' },
      follow: { schema: z.boolean(), description: 'Stream the output until the task ends' },
    },
    answer: taskLogsViewSchema,
    stream: {
      when: 'follow',
      frame: logFrameSchema,
      description:
        'With follow=true: newline-delimited JSON frames, {"stream","data" (base64)} as output comes, then {"end"} (or {"error"})',
    },
  },
  killTask: {
    method: 'POST',
    path: '/v1/tasks/:task/kill',
    access: 'deploy',
    namespaceFrom: 'task',
    summary: 'Stop a task',
    params: taskParam,
    body: z.strictObject({}),
    answer: killAnswerSchema,
  },
  events: {
    method: 'GET',
    path: '/v1/events',
    access: 'read',
    summary:
      'Task, node and leader changes as they happen, from a Raft index on: resumable, so clients need not poll',
    query: {
      index: {
        schema: whole(0),
        description:
          'Send every event after this Raft index first (the index of the last event or heartbeat read); default: from now on',
      },
      task: { ...taskParam.task, description: "Only this task's events" },
      namespace: nameParam('Only the events of tasks in this namespace'),
    },
    answer: eventFrameSchema,
    stream: {
      frame: eventFrameSchema,
      description:
        'Newline-delimited JSON, one {"index", "type", …} per line in index order: the retained events after index (after {"type":"reset"} if some are gone), a {"type":"heartbeat"} once caught up and every 10 s when quiet, then new events until the client goes away; {"type":"error"} ends it',
    },
  },
  createToken: {
    method: 'POST',
    path: '/v1/acl/tokens',
    access: 'admin',
    summary: 'Make a token; the answer holds its secret, shown this once (the cluster keeps only a hash)',
    body: z.strictObject({
      name: z.string().check(z.minLength(1), z.maxLength(128)),
      role: z.enum(tokenRoles),
      namespaces: z.exactOptional(
        z.array(z.string().check(z.minLength(1), z.maxLength(64))).check(z.minLength(1), z.maxLength(64)),
      ),
      ttlSeconds: z.exactOptional(whole(1, tokenTtlMsMax / 1000)),
    }),
    answer: newTokenAnswerSchema,
    created: true,
  },
  tokens: {
    method: 'GET',
    path: '/v1/acl/tokens',
    access: 'admin',
    summary: 'Every token, without secrets',
    answer: z.array(tokenViewSchema),
  },
  revokeToken: {
    method: 'DELETE',
    path: '/v1/acl/tokens/:accessor',
    access: 'admin',
    summary: 'Revoke a token: it is refused on every node once the revocation is committed',
    params: {
      accessor: {
        schema: z.string().check(z.regex(accessorIdPattern, 'an accessor id is 12 lowercase hex digits')),
        description: "The token's accessor id, from `shoal acl token list`",
      },
    },
    answer: revokeAnswerSchema,
  },
  clusterCa: {
    method: 'GET',
    path: '/v1/ca',
    access: 'public',
    summary:
      "The cluster CA's certificate (PEM), which signs each node's API certificate under --tls auto; check it by its SHA-256 fingerprint before trusting it (shoal login does)",
    answer: clusterCaViewSchema,
  },
  clusterKey: {
    method: 'GET',
    path: '/v1/cluster/key',
    access: 'admin',
    summary: 'The cluster key, a secret: another node joins with it (shoal key show)',
    answer: clusterKeyViewSchema,
  },
  snapshot: {
    method: 'GET',
    path: '/v1/snapshot',
    access: 'admin',
    summary:
      'A consistent, checksummed backup of the replicated state (shoal snapshot save): tasks, namespaces, token hashes, the sealed CA',
    answer: backupFileSchema,
  },
  restoreSnapshot: {
    method: 'POST',
    path: '/v1/snapshot/restore',
    access: 'admin',
    summary:
      "Restore a backup into a cluster that has no tasks yet; tasks that ran on the old cluster's nodes come back lost, queued again by their restart policy",
    body: backupFileSchema,
    bodyBytesMax: backupFileBytesMax,
    answer: restoreAnswerSchema,
  },
  jobs: {
    method: 'GET',
    path: '/v1/jobs',
    access: 'read',
    summary: 'Every job, with its version and its instances by state',
    query: { namespace: nameParam('Only the jobs of this namespace') },
    answer: z.array(jobViewSchema),
  },
  applyJob: {
    method: 'PUT',
    path: '/v1/jobs',
    access: 'deploy',
    namespaceFrom: 'job',
    summary:
      'Apply a job (shoal job apply): a new version if it changed, then the cluster keeps it at its shape; idempotent',
    body: z.strictObject({
      job: jobSpecSchema,
      checkIndex: z.exactOptional(whole(0)),
    }),
    answer: jobApplyAnswerSchema,
  },
  planJob: {
    method: 'POST',
    path: '/v1/jobs/plan',
    access: 'deploy',
    namespaceFrom: 'job',
    summary:
      "A dry run of applying a job on the cluster's current state: the diff, the instances it would start and stop, where they would go",
    body: z.strictObject({ job: jobSpecSchema }),
    answer: jobPlanAnswerSchema,
  },
  job: {
    method: 'GET',
    path: '/v1/jobs/:job',
    access: 'read',
    summary: 'One job: its spec, status and instances',
    params: { job: nameParam('The job name') },
    query: jobNamespaceQuery,
    answer: jobDetailViewSchema,
  },
  jobVersions: {
    method: 'GET',
    path: '/v1/jobs/:job/versions',
    access: 'read',
    summary: "A job's versions kept, oldest first",
    params: { job: nameParam('The job name') },
    query: jobNamespaceQuery,
    answer: z.array(jobVersionViewSchema),
  },
  revertJob: {
    method: 'POST',
    path: '/v1/jobs/:job/revert',
    access: 'deploy',
    namespaceFrom: 'query',
    summary: "Apply one of a job's earlier versions again (as a new version)",
    params: { job: nameParam('The job name') },
    query: jobNamespaceQuery,
    body: z.strictObject({ version: whole(1), checkIndex: z.exactOptional(whole(0)) }),
    answer: jobApplyAnswerSchema,
  },
  stopJob: {
    method: 'POST',
    path: '/v1/jobs/:job/stop',
    access: 'deploy',
    namespaceFrom: 'query',
    summary: "Stop a job's instances; purge also forgets the job",
    params: { job: nameParam('The job name') },
    query: jobNamespaceQuery,
    body: z.strictObject({ purge: z.exactOptional(z.boolean()) }),
    answer: jobApplyAnswerSchema,
  },
  jobDeployments: {
    method: 'GET',
    path: '/v1/jobs/:job/deployments',
    access: 'read',
    summary: "A job's deployments kept, oldest first (the last one is the newest)",
    params: { job: nameParam('The job name') },
    query: jobNamespaceQuery,
    answer: z.array(deploymentViewSchema),
  },
  promoteJob: {
    method: 'POST',
    path: '/v1/jobs/:job/promote',
    access: 'deploy',
    namespaceFrom: 'query',
    summary:
      "Promote the canaries of a job's running deployment: the rest of its instances are then replaced",
    params: { job: nameParam('The job name') },
    query: jobNamespaceQuery,
    answer: deploymentViewSchema,
  },
  deployment: {
    method: 'GET',
    path: '/v1/deployments/:deployment',
    access: 'read',
    summary: 'One deployment by id',
    params: { deployment: deploymentParam },
    answer: deploymentViewSchema,
  },
  controlDeployment: {
    method: 'POST',
    path: '/v1/deployments/:deployment/:action',
    access: 'deploy',
    namespaceFrom: 'deployment',
    summary:
      'Pause, resume, promote or fail a running deployment (fail reverts the job to its stable version when its policy says autoRevert)',
    params: {
      deployment: deploymentParam,
      action: { schema: z.enum(deploymentActions), description: 'pause, resume, promote or fail' },
    },
    answer: deploymentViewSchema,
  },
  services: {
    method: 'GET',
    path: '/v1/services',
    access: 'read',
    summary: 'Every service (a job, or replicas run under one name) with its instances that answer now',
    query: { namespace: nameParam('Only the services of this namespace') },
    answer: z.array(serviceViewSchema),
  },
  service: {
    method: 'GET',
    path: '/v1/services/:service',
    access: 'read',
    summary:
      "One service's instances that answer now: running, and healthy when they have checks (what DNS gives)",
    params: { service: nameParam('The service: a job name') },
    query: jobNamespaceQuery,
    answer: serviceViewSchema,
  },
  jobSchema: {
    method: 'GET',
    path: '/v1/schema/job.json',
    access: 'public',
    summary: "The job file's JSON Schema, generated from the schema the server validates with (for editors)",
    answer: z.record(z.string(), z.unknown()),
  },
  ui: {
    method: 'GET',
    path: '/ui',
    access: 'public',
    summary: 'The dashboard (it asks for a token, and uses it for every API call)',
    answer: z.string(),
    textType: 'text/html; charset=utf-8',
  },
  uiScript: {
    method: 'GET',
    path: '/ui/app.js',
    access: 'public',
    summary: "The dashboard's script, embedded in the binary",
    answer: z.string(),
    textType: 'text/javascript; charset=utf-8',
  },
  metrics: {
    method: 'GET',
    path: '/metrics',
    access: 'read',
    summary:
      "This node's metrics in the Prometheus text format (Raft, membership, allocator, tasks, nodes, the API); any token may scrape",
    answer: z.string(),
    textType: 'text/plain; version=0.0.4; charset=utf-8',
  },
} as const satisfies Record<string, Route>;

export type RouteName = keyof typeof routes;

/** What `POST /v1/acl/tokens` asks for. */
export type TokenRequest = z.infer<(typeof routes)['createToken']['body']>;

/** The view a route answers with. */
export type Answer<R extends RouteName> = z.infer<(typeof routes)[R]['answer']>;

/** A route's path with its parameters filled in (each one URI-encoded). */
export function routePath(name: RouteName, params: Readonly<Record<string, string>> = {}): string {
  return routes[name].path.replace(/:([a-z]+)/g, (_, key: string) => {
    const value = params[key];
    if (value === undefined) throw new Error(`route ${name} needs the parameter ${key}`);
    return encodeURIComponent(value);
  });
}

/** The route a request is for, and its decoded parameters; null when none matches. */
export function matchRoute(
  method: string,
  pathname: string,
): { readonly name: RouteName; readonly params: Record<string, string> } | null {
  const parts = pathname.split('/').filter(Boolean);
  for (const [name, route] of Object.entries(routes) as [RouteName, Route][]) {
    if (route.method !== method) continue;
    const pattern = route.path.split('/').filter(Boolean);
    if (pattern.length !== parts.length) continue;
    const params: Record<string, string> = {};
    const matches = pattern.every((segment, index) => {
      const part = parts[index] ?? '';
      if (!segment.startsWith(':')) return segment === part;
      try {
        params[segment.slice(1)] = decodeURIComponent(part);
        return true;
      } catch {
        return false;
      }
    });
    if (matches) return { name, params };
  }
  return null;
}

/** Whether any route serves this path with another method (a 405, not a 404). */
export function pathKnown(pathname: string): boolean {
  return (['GET', 'POST', 'PUT', 'DELETE'] as const).some((method) => matchRoute(method, pathname) !== null);
}
