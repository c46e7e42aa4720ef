/**
 * Renders docs/api.md from the API's OpenAPI document (the route table and its schemas), so the reference
 * is never written by hand:  npm run docs:api   (a test fails while docs/api.md is out of date).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { format, resolveConfig } from 'prettier';
import { renderApiReference } from '../src/api/index.ts';

const path = join(import.meta.dirname, '..', 'docs', 'api.md');
const options = (await resolveConfig(path)) ?? {};
writeFileSync(path, await format(renderApiReference(), { ...options, parser: 'markdown' }));
console.log(`wrote ${path}`);
