/**
 * Job files: a job spec written by hand, in YAML (a file named *.json is read as JSON). Parsing
 * substitutes `${NAME}` from the environment, then checks the result with the cluster's own schema
 * (jobSpecSchema), so the CLI refuses what the leader would; every problem comes back at once, each with
 * the line it is on, for one line of output per problem. Syntax errors come alone (a broken file's values
 * mean little), and zod checks the rules across fields (an exec task needs a command…) only once every
 * value has the right type. jobToYaml writes a job back in the same format. Pure: text in, a job or
 * problems out; reading the file and printing are the caller's.
 */
import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseAllDocuments,
  parseDocument,
  Scalar,
  stringify,
  type Document,
} from 'yaml';
import * as z from 'zod/mini';
import { jobSpecSchema, type JobSpec } from '../cluster/index.ts';
import { mebibyte } from '../shared/index.ts';

/** The largest job file read: a job is a few KiB; more is a mistake (a log, a binary), not a job. */
export const jobFileBytesMax = mebibyte;

/** One thing wrong with a job file. */
export interface JobFileProblem {
  /** Where in the job: `groups[0].task.memoryMiB`, `job` for the whole job, '' for the file's text itself. */
  readonly path: string;
  readonly message: string;
  /** 1-based; null when the problem has no line (the file's size). */
  readonly line: number | null;
}

export type JobFileResult =
  | { readonly ok: true; readonly job: JobSpec }
  | { readonly ok: false; readonly problems: readonly JobFileProblem[] };

type Path = readonly PropertyKey[];
type Env = Readonly<Record<string, string | undefined>>;

/**
 * Parses a job file's text (YAML; JSON is YAML too, but a file named *.json is parsed as JSON, with line
 * numbers), substitutes ${NAME} from env, validates it with jobSpecSchema.
 */
export function parseJobFile(
  text: string,
  options: { readonly fileName: string; readonly env: Env },
): JobFileResult {
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > jobFileBytesMax)
    return fail([
      { path: '', line: null, message: `the file is ${bytes} bytes; a job file may be at most 1 MiB` },
    ]);
  const json = /\.json$/i.test(options.fileName);
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, {
    lineCounter: lines,
    prettyErrors: false,
    uniqueKeys: true,
    ...(json ? { schema: 'json' as const } : {}),
  });
  const lineAt = (offset: number): number => lines.linePos(offset).line;
  const problems: JobFileProblem[] = [];

  if (json) {
    try {
      JSON.parse(text);
    } catch (error) {
      // JSON.parse stops at the first mistake; YAML's parser would accept much that JSON does not.
      return fail([jsonProblem(error instanceof Error ? error.message : String(error), docs, lineAt)]);
    }
  }
  // One problem per line: yaml's further errors on a line mostly follow from its first (a tab, say).
  for (const doc of docs)
    for (const error of doc.errors) {
      const problem = flowVariableHint(syntaxProblem(error, doc, lineAt), text, lines);
      if (!problems.some((other) => other.line === problem.line)) problems.push(problem);
    }
  for (const doc of docs.slice(1)) {
    if (!isEmpty(doc))
      problems.push({
        path: '',
        line: lineAt(doc.range[0]),
        message: 'one job per file: a second YAML document starts here',
      });
  }
  const doc = docs[0];
  if (problems.length > 0 || doc === undefined || isEmpty(doc)) {
    if (problems.length === 0) problems.push({ path: 'job', line: null, message: 'the file holds no job' });
    return fail(problems);
  }

  const { unresolved, retyped } = substituteVariables(doc, options.env, lineAt, problems);
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    return fail([...problems, { path: '', line: null, message: lowerFirst(messageOf(error)) }]);
  }
  const parsed = jobSpecSchema.safeParse(value, { reportInput: true });
  if (parsed.success && problems.length === 0) return { ok: true, job: parsed.data };
  if (!parsed.success) {
    const issues = parsed.error.issues;
    for (const issue of issues) {
      // A value whose variable is unset is already a problem; what the schema thinks of '' adds nothing.
      if (unresolved.has(pathKey(issue.path))) continue;
      if (isRedundant(issue, issues)) continue;
      problems.push(...issueProblems(issue, doc, value, lineAt, retyped.has(pathKey(issue.path))));
    }
  }
  return fail(problems);
}

/** Every problem as one line each: `FILE:LINE: PATH: MESSAGE` (or `FILE: PATH: MESSAGE` without a line), in line order. */
export function formatJobFileProblems(fileName: string, problems: readonly JobFileProblem[]): string {
  return byLine(problems)
    .map((problem) => {
      // `path: message (line L)`, after the file's name so that several files' problems stay apart.
      const line = problem.line === null ? '' : ` (line ${problem.line})`;
      const message = problem.message.replace(/\s*\n\s*/g, ' ');
      return problem.path === ''
        ? `${fileName}: ${message}${line}`
        : `${fileName}: ${problem.path}: ${message}${line}`;
    })
    .join('\n');
}

/** A job as YAML in the file format (keys in the schema's order, no nulls for absent fields), which parseJobFile reads back to an equal job. */
export function jobToYaml(job: JobSpec): string {
  return stringify(inSchemaOrder(job, jobSpecSchema), { lineWidth: 0, aliasDuplicateObjects: false });
}

function fail(problems: readonly JobFileProblem[]): JobFileResult {
  return { ok: false, problems: byLine(problems) };
}

/** Stable: problems on one line keep their order; problems without a line (the whole file) come first. */
function byLine(problems: readonly JobFileProblem[]): JobFileProblem[] {
  return [...problems].sort((a, b) => (a.line ?? 0) - (b.line ?? 0));
}

// ---- syntax ----

type ParsedDocument = ReturnType<typeof parseAllDocuments>[number];
type YamlError = ParsedDocument['errors'][number];

function syntaxProblem(
  error: YamlError,
  doc: ParsedDocument,
  lineAt: (offset: number) => number,
): JobFileProblem {
  const offset = error.pos[0];
  let line = lineAt(offset);
  let message = lowerFirst(error.message);
  if (error.code === 'DUPLICATE_KEY') {
    const duplicate = duplicateKey(doc.contents, offset);
    if (duplicate !== null)
      message = `duplicate key "${duplicate.key}" (first on line ${lineAt(duplicate.firstOffset)})`;
  } else if (error.code === 'TAB_AS_INDENT') {
    message = 'tabs are not allowed as indentation: indent with spaces';
  } else if (error.code === 'MISSING_CHAR' && /quote/.test(error.message)) {
    // yaml reports an unclosed quote where the text ends; the string starts where the mistake is.
    const start = quotedScalarStart(doc.contents, offset);
    const quote = error.message.includes("'") ? "'" : '"';
    if (start !== null) {
      line = lineAt(start);
      message = `the string that starts on this line has no closing ${quote}`;
    }
  }
  return { path: '', line, message };
}

/** An empty document (`---` at the end of a file, say), or one that holds just null. */
function isEmpty(doc: ParsedDocument): boolean {
  return doc.contents === null || (isScalar(doc.contents) && doc.contents.value === null);
}

/**
 * YAML does not allow `{` or `}` in an unquoted value inside `[ ]` or `{ }`: `[sh, ${X}]` is a syntax
 * error where `[sh, "${X}"]` (or block style) is not. A syntax error on such a line says so.
 */
function flowVariableHint(problem: JobFileProblem, text: string, lines: LineCounter): JobFileProblem {
  if (problem.line === null) return problem;
  const source = text
    .slice(lines.lineStarts[problem.line - 1] ?? 0, lines.lineStarts[problem.line] ?? text.length)
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'/g, "''");
  if (!/[[{][^#]*(?<!\$)\$\{/.test(source)) return problem;
  return {
    ...problem,
    message: `${problem.message} (inside [ ] or { }, write "\${NAME}" in quotes, or use block style)`,
  };
}

function jsonProblem(
  message: string,
  docs: readonly ParsedDocument[],
  lineAt: (offset: number) => number,
): JobFileProblem {
  const lineMatch = /\(line (\d+) column \d+\)/.exec(message);
  const positionMatch = /at position (\d+)/.exec(message);
  let line: number | null = null;
  if (lineMatch?.[1] !== undefined) line = Number(lineMatch[1]);
  else if (positionMatch?.[1] !== undefined) line = lineAt(Number(positionMatch[1]));
  else {
    // V8 gives no position for an unexpected token: look for where YAML saw trouble, or for a value
    // JSON does not allow (an unquoted word, a single-quoted string).
    const error = docs.flatMap((doc) => doc.errors)[0];
    const offset =
      error?.pos[0] ?? docs.map((doc) => firstNonJsonScalar(doc.contents)).find((o) => o !== null);
    if (offset !== undefined) line = lineAt(offset);
  }
  const reason = message
    .replace(/ in JSON at position \d+( \(line \d+ column \d+\))?/, '')
    .replace(/, .*is not valid JSON$/s, '');
  return { path: '', line, message: `not valid JSON: ${lowerFirst(reason)}` };
}

/** The key a DUPLICATE_KEY error at offset names, and where the key was first given. */
function duplicateKey(root: unknown, offset: number): { key: string; firstOffset: number } | null {
  for (const node of nodes(root)) {
    if (!isMap(node)) continue;
    const duplicate = node.items.find((pair) => isScalar(pair.key) && pair.key.range?.[0] === offset);
    if (duplicate === undefined) continue;
    const key = keyName(duplicate.key);
    const first = node.items.find((pair) => keyName(pair.key) === key);
    const firstOffset = isScalar(first?.key) ? first.key.range?.[0] : undefined;
    return { key, firstOffset: firstOffset ?? offset };
  }
  return null;
}

/** Where the quoted string that an error at offset is inside begins. */
function quotedScalarStart(root: unknown, offset: number): number | null {
  for (const node of nodes(root)) {
    if (!isScalar(node) || (node.type !== Scalar.QUOTE_DOUBLE && node.type !== Scalar.QUOTE_SINGLE)) continue;
    const range = node.range;
    if (range && range[0] < offset && offset <= range[2]) return range[0];
  }
  return null;
}

/** Where the first value JSON does not allow is: an unquoted word, a single-quoted string. */
function firstNonJsonScalar(root: unknown): number | null {
  for (const node of nodes(root)) {
    if (!isScalar(node) || !node.range) continue;
    if (node.type === Scalar.QUOTE_SINGLE || (node.type === Scalar.PLAIN && typeof node.value === 'string'))
      return node.range[0];
  }
  return null;
}

/** Every node, keys included, in document order. */
function* nodes(node: unknown): Generator {
  if (node === null || node === undefined) return;
  yield node;
  if (isMap(node))
    for (const pair of node.items) {
      yield* nodes(pair.key);
      yield* nodes(pair.value);
    }
  else if (isSeq(node)) for (const item of node.items) yield* nodes(item);
}

// ---- ${NAME} ----

/** `$${` (a literal `${`), `${NAME}`, or a `${` that starts neither (a mistake). */
const variablePattern = /\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{/g;

/**
 * Replaces ${NAME} in every string value (keys stay as written), in place. Unset variables and stray `${`
 * become problems; returns the paths of the values they are in (their value is then ''), and those of the
 * values that became a number or a boolean. The value of a
 * plain (unquoted) scalar is then read as if the variable's text had been written in its place, so
 * `cpuMillis: ${CPU}` with CPU=250 is the number 250, as `cpuMillis: 250` would be, while
 * `cpuMillis: "${CPU}"` stays a string, as `"250"` would. Only a lone number or boolean is taken from the
 * re-read (never a map, a list or a comment): a value cannot change the file's structure.
 */
function substituteVariables(
  doc: Document,
  env: Env,
  lineAt: (offset: number) => number,
  problems: JobFileProblem[],
): { unresolved: Set<string>; retyped: Set<string> } {
  const unresolved = new Set<string>();
  const retyped = new Set<string>();
  const visit = (node: unknown, path: Path): void => {
    if (isMap(node)) {
      for (const pair of node.items) visit(pair.value, [...path, keyName(pair.key)]);
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => visit(item, [...path, index]));
    } else if (isScalar(node) && typeof node.value === 'string' && node.value.includes('${')) {
      const line = node.range ? lineAt(node.range[0]) : null;
      const state = { substituted: false, failed: false };
      const text = node.value.replace(variablePattern, (match: string, name: string | undefined) => {
        if (match === '$${') return '${';
        if (name === undefined) {
          state.failed = true;
          problems.push({
            path: formatPath(path),
            line,
            message: '"${" must start a ${NAME} (write "$${" for a literal "${")',
          });
          return match;
        }
        const value = env[name];
        if (value === undefined) {
          state.failed = true;
          problems.push({ path: formatPath(path), line, message: `\${${name}} is not set` });
          return '';
        }
        state.substituted = true;
        return value;
      });
      if (state.failed) unresolved.add(pathKey(path));
      node.value =
        state.substituted && !state.failed && node.type === Scalar.PLAIN ? plainScalarValue(text) : text;
      if (typeof node.value !== 'string') retyped.add(pathKey(path));
    }
    // Aliases repeat a node substituted where its anchor is.
  };
  visit(doc.contents, []);
  return { unresolved, retyped };
}

/** A plain scalar's text as YAML reads it: a number or boolean when it is one, else the text. */
function plainScalarValue(text: string): string | number | boolean {
  if (/[#\n\r]/.test(text)) return text;
  const lone = parseDocument(text);
  if (lone.errors.length > 0 || !isScalar(lone.contents) || lone.contents.type !== Scalar.PLAIN) return text;
  const value = lone.contents.value;
  return typeof value === 'number' || typeof value === 'boolean' ? value : text;
}

// ---- schema issues ----

type Issue = z.core.$ZodIssue;

/** zod reports a number beyond the safe integers twice; the job's own bound says enough. */
function isRedundant(issue: Issue, issues: readonly Issue[]): boolean {
  if (issue.code !== 'too_big' && issue.code !== 'too_small') return false;
  if (!('note' in issue) || typeof issue.note !== 'string' || !issue.note.includes('safe integer'))
    return false;
  const key = pathKey(issue.path);
  return issues.some((other) => other !== issue && pathKey(other.path) === key);
}

function issueProblems(
  issue: Issue,
  doc: Document,
  value: unknown,
  lineAt: (offset: number) => number,
  retyped: boolean,
): JobFileProblem[] {
  const at = locate(doc, issue.path, lineAt);
  if (issue.code === 'unrecognized_keys') {
    const known = knownKeys(issue.path, value);
    const map = resolveAlias(doc, at.node);
    return issue.keys.map((key) => {
      const pair = isMap(map) ? map.items.find((p) => keyName(p.key) === key) : undefined;
      const offset = isScalar(pair?.key) ? pair.key.range?.[0] : undefined;
      const suggestion = closest(key, known);
      return {
        path: formatPath(issue.path),
        line: offset === undefined ? at.line : lineAt(offset),
        message: `unknown field "${key}"${suggestion === null ? '' : ` (did you mean "${suggestion}"?)`}`,
      };
    });
  }
  // zod names a missing or mistyped whole number just `number`; the schema knows better.
  const whole =
    issue.code === 'invalid_type' &&
    issue.expected === 'number' &&
    isWholeNumber(schemaAt(issue.path, value));
  // `name: ${VERSION}` with VERSION=2 is the number 2, as `name: 2` would be.
  const hint =
    retyped && issue.code === 'invalid_type' && issue.expected === 'string'
      ? ' (unquoted, the variable\'s value reads as YAML: write "${NAME}" in quotes)'
      : '';
  return [{ path: formatPath(issue.path), line: at.line, message: describeIssue(issue, whole) + hint }];
}

/** One issue in words: what was expected, and what the file has. */
function describeIssue(issue: Issue, whole = false): string {
  const input = issue.input;
  const got = describeValue(input);
  const custom = !/^(Too |Invalid )/.test(issue.message);
  switch (issue.code) {
    case 'invalid_type': {
      const expected = expectedNames[whole ? 'int' : issue.expected] ?? issue.expected;
      if (input === undefined) return `missing (expected ${expected})`;
      const quotedNumber =
        (issue.expected === 'number' || issue.expected === 'int') &&
        typeof input === 'string' &&
        input.trim() !== '' &&
        Number.isFinite(Number(input));
      return `expected ${expected}, got ${got}${quotedNumber ? ' (write numbers without quotes)' : ''}`;
    }
    case 'too_small':
    case 'too_big': {
      if (custom) return `${issue.message}, got ${got}`;
      const small = issue.code === 'too_small';
      const bound = String(small ? issue.minimum : issue.maximum);
      if (issue.origin === 'string') {
        if (small && bound === '1') return 'must not be empty';
        return `must have at ${small ? 'least' : 'most'} ${bound} characters, got ${String(input).length}`;
      }
      if (issue.origin === 'array') {
        const count = Array.isArray(input) ? input.length : 0;
        return `must have at ${small ? 'least' : 'most'} ${bound} item${bound === '1' ? '' : 's'}, got ${count}`;
      }
      const relation = small
        ? issue.inclusive === false
          ? 'more than'
          : 'at least'
        : issue.inclusive === false
          ? 'less than'
          : 'at most';
      return `must be ${relation} ${bound}, got ${got}`;
    }
    case 'invalid_format':
      return custom ? `${issue.message}, got ${got}` : `${lowerFirst(issue.message)}, got ${got}`;
    case 'invalid_value':
      return oneOf(
        issue.values.map((v) => String(v)),
        input,
      );
    case 'invalid_union': {
      // A discriminated union (label rules: operator) reports the whole object as its input.
      if ('discriminator' in issue && typeof issue.discriminator === 'string' && isRecord(input)) {
        const options = 'options' in issue && Array.isArray(issue.options) ? issue.options.map(String) : [];
        return oneOf(options, input[issue.discriminator]);
      }
      return `matches none of the forms allowed here, got ${got}`;
    }
    case 'invalid_key':
      return issue.issues.map((inner) => `bad key: ${describeIssue(inner)}`).join('; ');
    case 'not_multiple_of':
      return `must be a multiple of ${String(issue.divisor)}, got ${got}`;
    case 'custom':
    case 'invalid_element':
    case 'unrecognized_keys':
    default:
      return custom ? issue.message : lowerFirst(issue.message);
  }
}

const expectedNames: Readonly<Record<string, string>> = {
  int: 'a whole number',
  number: 'a number',
  string: 'a string',
  boolean: 'true or false',
  object: 'a map',
  record: 'a map',
  array: 'a list',
  null: 'nothing',
};

function oneOf(options: readonly string[], input: unknown): string {
  const list = options.map((option) => JSON.stringify(option)).join(', ');
  const expected = options.length === 1 ? `expected ${list}` : `expected one of ${list}`;
  if (input === undefined) return `missing (${expected})`;
  const suggestion = typeof input === 'string' ? closest(input, options) : null;
  return `${expected}, got ${describeValue(input)}${suggestion === null ? '' : ` (did you mean "${suggestion}"?)`}`;
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'nothing';
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 39)}…` : value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (Array.isArray(value)) return 'a list';
  if (value instanceof Uint8Array) return 'binary data';
  if (typeof value === 'object') return 'a map';
  return typeof value;
}

/**
 * The node an issue's path leads to, or the deepest one on the path that exists (for a missing key: the
 * map that lacks it), and its line: a map's entry is on its key's line (`task:` for the task's map).
 */
function locate(
  doc: Document,
  path: Path,
  lineAt: (offset: number) => number,
): { node: unknown; line: number | null } {
  let node: unknown = doc.contents;
  let line = rangeLine(node, lineAt);
  for (const segment of path) {
    const current = resolveAlias(doc, node);
    if (isMap(current)) {
      const pair = current.items.find((p) => keyName(p.key) === String(segment));
      if (pair === undefined) break;
      line = rangeLine(pair.key, lineAt) ?? rangeLine(pair.value, lineAt) ?? line;
      node = pair.value;
    } else if (isSeq(current) && typeof segment === 'number') {
      const item = current.items[segment];
      if (item === undefined) break;
      line = rangeLine(item, lineAt) ?? line;
      node = item;
    } else break;
  }
  return { node, line };
}

function rangeLine(node: unknown, lineAt: (offset: number) => number): number | null {
  if (isScalar(node) || isMap(node) || isSeq(node) || isAlias(node))
    return node.range ? lineAt(node.range[0]) : null;
  return null;
}

function resolveAlias(doc: Document, node: unknown): unknown {
  return isAlias(node) ? node.resolve(doc) : node;
}

function keyName(key: unknown): string {
  if (isScalar(key)) return String(key.value);
  return String(key);
}

/** `groups[0].task.memoryMiB`; `job` for the job itself; keys that are not plain words in quotes. */
function formatPath(path: Path): string {
  if (path.length === 0) return 'job';
  return path
    .map((segment, index) => {
      if (typeof segment === 'number') return `[${segment}]`;
      const name = String(segment);
      if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(name)) return index === 0 ? name : `.${name}`;
      return `[${JSON.stringify(name)}]`;
    })
    .join('');
}

function pathKey(path: readonly PropertyKey[]): string {
  return JSON.stringify(path.map(String));
}

// ---- the schema's shape ----

/** The schema of the value at path (a union resolved by the value's discriminator), or null. */
function schemaAt(path: Path, value: unknown): z.core.$ZodType | null {
  let schema: z.core.$ZodType | null = unwrap(jobSpecSchema, value);
  let data = value;
  for (const segment of path) {
    if (schema === null) return null;
    data =
      isRecord(data) || Array.isArray(data) ? (data as Record<string, unknown>)[String(segment)] : undefined;
    schema = unwrap(child(schema, segment), data);
  }
  return schema;
}

// By the schemas' def.type, not instanceof z.core classes: a reference to the z.core namespace at run
// time would bundle all of zod's core (+590 KB, every locale) into the binary.

/** The def of a schema, as far as this file reads it. */
interface SchemaDef {
  readonly type: string;
  readonly format?: string;
  readonly shape?: Record<string, z.core.$ZodType>;
  readonly element?: z.core.$ZodType;
  readonly valueType?: z.core.$ZodType;
  readonly innerType?: z.core.$ZodType;
  readonly discriminator?: string;
  readonly options?: readonly z.core.$ZodType[];
}

function defOf(schema: z.core.$ZodType): SchemaDef {
  return schema._zod.def;
}

function isWholeNumber(schema: z.core.$ZodType | null): boolean {
  if (schema === null) return false;
  const def = defOf(schema);
  return def.type === 'number' && def.format !== undefined && def.format.endsWith('int');
}

function objectShape(schema: z.core.$ZodType | null): Record<string, z.core.$ZodType> | null {
  if (schema === null) return null;
  const def = defOf(schema);
  return def.type === 'object' ? (def.shape ?? null) : null;
}

function child(schema: z.core.$ZodType, segment: PropertyKey): z.core.$ZodType | null {
  const def = defOf(schema);
  if (def.type === 'object') return def.shape?.[String(segment)] ?? null;
  if (def.type === 'array') return def.element ?? null;
  if (def.type === 'record') return def.valueType ?? null;
  return null;
}

/** Past optional and nullable wrappers, and to the member of a discriminated union the value picks. */
function unwrap(schema: z.core.$ZodType | null, value: unknown): z.core.$ZodType | null {
  let current = schema;
  for (;;) {
    if (current === null) return null;
    const def = defOf(current);
    if (def.type === 'optional' || def.type === 'nullable') current = def.innerType ?? null;
    else if (def.type === 'union' && def.discriminator !== undefined) {
      const key = def.discriminator;
      const tag = isRecord(value) ? value[key] : undefined;
      current =
        def.options?.find((option) => option._zod.propValues?.[key]?.has(tag as never) === true) ?? null;
    } else return current;
  }
}

function knownKeys(path: Path, value: unknown): string[] {
  const schema = schemaAt(path, value);
  return Object.keys(objectShape(schema) ?? {});
}

/** The value with object keys in the schema's order, undefined left out, and `${` escaped in strings. */
function inSchemaOrder(value: unknown, schema: z.core.$ZodType | null): unknown {
  const type = unwrap(schema, value);
  if (typeof value === 'string') return value.replaceAll('${', () => '$${');
  if (Array.isArray(value))
    return value.map((item) => inSchemaOrder(item, type === null ? null : child(type, 0)));
  if (!isRecord(value)) return value;
  const keys = Object.keys(value);
  const order = Object.keys(objectShape(type) ?? {});
  const sorted = [
    ...order.filter((key) => keys.includes(key)),
    ...keys.filter((key) => !order.includes(key)),
  ];
  const out: Record<string, unknown> = {};
  for (const key of sorted) {
    if (value[key] === undefined) continue;
    out[key] = inSchemaOrder(value[key], type === null ? null : child(type, key));
  }
  return out;
}

// ---- small helpers ----

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The candidate a mistyped word most likely meant: within 2 edits (1 for words of up to 3 letters),
 * ignoring case, of the whole candidate or of its start (`memory` for memoryMiB, `cpu` for cpuMillis).
 */
function closest(word: string, candidates: readonly string[]): string | null {
  const limit = word.length <= 3 ? 1 : 2;
  const lower = word.toLowerCase();
  let best: { candidate: string; distance: number } | null = null;
  for (const candidate of candidates) {
    const whole = levenshtein(lower, candidate.toLowerCase());
    const prefix =
      word.length >= 3 ? levenshtein(lower, candidate.slice(0, word.length).toLowerCase()) + 0.5 : Infinity;
    const distance = Math.min(whole, prefix);
    if (distance <= limit + 0.5 && (best === null || distance < best.distance))
      best = { candidate, distance };
  }
  return best?.candidate ?? null;
}

function levenshtein(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const substitution = (previous[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1);
      row.push(Math.min((previous[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, substitution));
    }
    previous = row;
  }
  return previous[b.length] ?? 0;
}

function lowerFirst(message: string): string {
  return message.charAt(0).toLowerCase() + message.slice(1);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
