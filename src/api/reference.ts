/**
 * docs/api.md, rendered from the OpenAPI document: a page a person reads, with every route, its
 * parameters, its body and its answer as JSON Schema. scripts/api-docs.ts writes it; a test checks the
 * committed page is what this renders.
 */
import { openApiDocument } from './openapi.ts';

interface Operation {
  readonly operationId: string;
  readonly summary: string;
  readonly description: string;
  readonly parameters?: readonly {
    name: string;
    in: string;
    description: string;
    schema: unknown;
  }[];
  readonly requestBody?: { content: Record<string, { schema: unknown }> };
  readonly responses: Record<string, { description: string; content?: Record<string, { schema: unknown }> }>;
}

export function renderApiReference(): string {
  const document = openApiDocument() as {
    info: { version: string };
    paths: Record<string, Record<string, Operation>>;
  };
  const lines: string[] = [
    '# API reference',
    '',
    '<!-- Rendered from the OpenAPI document by `npm run docs:api`; do not edit by hand. -->',
    '',
    `Every node serves this API (version ${document.info.version}) under \`/v1\`, and the OpenAPI 3.1`,
    'document it is rendered from at `GET /v1/openapi.json`. Any node accepts any request: writes are',
    "forwarded to the Raft leader, reads answer from the node's state after a read barrier. Bodies are",
    'JSON; quantities carry their unit in their name (`cpuMillis`, `memoryBytes`). An error is',
    '`{"error": {"code", "message"}}` with the status below; unknown query parameters and body fields are',
    'refused with 400.',
    '',
    'Over TCP every route but `health` and `openapi.json` needs a token, sent as `Authorization: Bearer',
    'SECRET`: roles `read` < `deploy` < `operator` < `admin`, each allowing what the ones before it do, a',
    "`deploy` token limited to namespaces only there. The node's Unix socket (`DATA_DIR/api.sock`, mode",
    "0600) needs none: whoever can open it runs as the agent's user anyway.",
    '',
    '| status | meaning |',
    '| --- | --- |',
  ];
  const firstOperation = Object.values(Object.values(document.paths)[0] ?? {})[0];
  for (const [status, answer] of Object.entries(firstOperation?.responses ?? {})) {
    if (status.startsWith('2')) continue;
    lines.push(`| ${status} | ${answer.description} |`);
  }
  lines.push('', '## Routes', '');
  for (const [path, methods] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      lines.push(
        `- [\`${method.toUpperCase()} ${path}\`](#${operation.operationId.toLowerCase()}) — ${operation.summary}`,
      );
    }
  }
  for (const [path, methods] of Object.entries(document.paths)) {
    for (const [method, operation] of Object.entries(methods)) {
      lines.push(
        '',
        `### ${operation.operationId}`,
        '',
        `\`${method.toUpperCase()} ${path}\` — ${operation.summary}. ${operation.description}`,
      );
      if (operation.parameters && operation.parameters.length > 0) {
        lines.push('', '| parameter | in | schema | meaning |', '| --- | --- | --- | --- |');
        for (const parameter of operation.parameters) {
          lines.push(
            `| \`${parameter.name}\` | ${parameter.in} | \`${JSON.stringify(parameter.schema)}\` | ${parameter.description} |`,
          );
        }
      }
      const body = operation.requestBody?.content['application/json']?.schema;
      if (body !== undefined) lines.push('', 'Body:', '', '```json', JSON.stringify(body, null, 2), '```');
      for (const [status, answer] of Object.entries(operation.responses)) {
        if (!status.startsWith('2')) continue;
        for (const [type, content] of Object.entries(answer.content ?? {})) {
          lines.push(
            '',
            `Answer ${status} (\`${type}\`):`,
            '',
            '```json',
            JSON.stringify(content.schema, null, 2),
            '```',
          );
        }
      }
    }
  }
  return `${lines.join('\n')}\n`;
}
