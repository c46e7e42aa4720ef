/**
 * The OpenAPI 3.1 document of the API, generated from the route table and the very schemas the server
 * validates requests with and the client checks answers against: there is no second description to
 * drift. Served at /v1/openapi.json; docs/api.md is rendered from it (scripts/api-docs.ts).
 */
import * as z from 'zod/mini';
import { shoalVersion } from '../shared/version.ts';
import { jobSpecSchema } from '../cluster/index.ts';
import { routes, type Route } from './routes.ts';
import { errorBodySchema } from './views.ts';

type JsonSchema = Record<string, unknown>;

/** A schema as JSON Schema 2020-12 (OpenAPI 3.1's dialect), without the $schema line. */
function jsonSchema(schema: z.ZodMiniType, io: 'input' | 'output'): JsonSchema {
  const document: JsonSchema = { ...z.toJSONSchema(schema, { io, unrepresentable: 'any' }) };
  delete document['$schema'];
  return document;
}

/** Error answers every route may give, with the codes behind them. */
const errorAnswers: Record<string, string> = {
  '400': 'INVALID_ARGUMENT: the request is malformed; the message says what to fix',
  '404': 'NOT_FOUND: no such route, task, node or namespace',
  '409': 'CONFLICT: the request conflicts with the state (an id already used)',
  '413': 'TOO_LARGE: the body or the cluster is over a limit',
  '500': 'INTERNAL or CORRUPT_DATA',
  '503': 'NO_LEADER, NOT_LEADER or UNAVAILABLE: retry; the cluster has no reachable leader or engine',
  '504': 'TIMEOUT: the outcome is unknown; resending with the same id is safe',
};

function operation(name: string, route: Route): JsonSchema {
  const parameters = [
    ...Object.entries(route.params ?? {}).map(([param, { schema, description }]) => ({
      name: param,
      in: 'path',
      required: true,
      description,
      schema: jsonSchema(schema, 'input'),
    })),
    ...Object.entries(route.query ?? {}).map(([param, { schema, description }]) => ({
      name: param,
      in: 'query',
      required: false,
      description,
      schema: jsonSchema(schema, 'input'),
    })),
  ];
  // A route that always streams has no plain JSON answer.
  const answerContent: JsonSchema =
    route.stream && route.stream.when === undefined
      ? {}
      : { 'application/json': { schema: jsonSchema(route.answer, 'output') } };
  if (route.stream) {
    answerContent['application/x-ndjson'] = {
      description: route.stream.description,
      schema: jsonSchema(route.stream.frame, 'output'),
    };
  }
  const errorBody = { 'application/json': { schema: jsonSchema(errorBodySchema, 'output') } };
  const access =
    route.access === 'public'
      ? 'No token needed.'
      : `Needs a token of role ${route.access} or above${route.namespaceFrom === undefined ? '' : ` (a token limited to namespaces must cover the task's namespace)`}, or the node's Unix socket.`;
  return {
    operationId: name,
    summary: route.summary,
    description: access,
    security: route.access === 'public' ? [] : [{ bearer: [] }],
    ...(parameters.length === 0 ? {} : { parameters }),
    ...(route.body === undefined
      ? {}
      : {
          requestBody: {
            required: false,
            content: { 'application/json': { schema: jsonSchema(route.body, 'input') } },
          },
        }),
    responses: {
      [route.created === true ? '201' : '200']: { description: route.summary, content: answerContent },
      ...Object.fromEntries(
        Object.entries(errorAnswers).map(([status, description]) => [
          status,
          { description, content: errorBody },
        ]),
      ),
    },
  };
}

let cached: JsonSchema | null = null;

/** The document (built once: the table does not change while the process runs). */
export function openApiDocument(): JsonSchema {
  if (cached) return cached;
  const paths: Record<string, Record<string, JsonSchema>> = {};
  for (const [name, route] of Object.entries(routes) as [string, Route][]) {
    // OpenAPI writes path parameters as {name}.
    const path = route.path.replace(/:([a-z]+)/g, '{$1}');
    paths[path] ??= {};
    paths[path][route.method.toLowerCase()] = operation(name, route);
  }
  cached = {
    openapi: '3.1.0',
    info: {
      title: 'shoal',
      version: shoalVersion,
      description:
        'The HTTP API every shoal node serves. Any node accepts any request; writes are forwarded to the Raft leader.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    paths,
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description:
            'A token secret (shoal_…), from shoal acl token create; the first is DATA_DIR/management.token on the node that created the cluster',
        },
      },
    },
  };
  return cached;
}

/** The job file's JSON Schema (served at /v1/schema/job.json), from the schema the server validates with. */
export function jobJsonSchema(): JsonSchema {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'https://shoal.dev/schema/job.json',
    title: 'shoal job',
    description: 'A shoal job file (YAML or JSON): shoal job validate|plan|apply FILE',
    ...jsonSchema(jobSpecSchema, 'input'),
  };
}
