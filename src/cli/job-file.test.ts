import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  formatJobFileProblems,
  jobFileBytesMax,
  jobToYaml,
  parseJobFile,
  type JobFileProblem,
} from './job-file.ts';
import { instanceTaskSpec, jobGroups, taskSpecSchema, type JobSpec } from '../cluster/index.ts';

const examplesDir = join(import.meta.dirname, '..', '..', 'examples', 'jobs');

function parse(
  text: string,
  env: Record<string, string> = {},
  fileName = 'job.yaml',
): ReturnType<typeof parseJobFile> {
  return parseJobFile(text, { fileName, env });
}

/** The job of a file that must validate. */
function job(text: string, env: Record<string, string> = {}, fileName = 'job.yaml'): unknown {
  const result = parse(text, env, fileName);
  if (!result.ok) throw new Error(formatJobFileProblems(fileName, result.problems));
  return result.job;
}

/** The problems of a file that must not validate. */
function problems(
  text: string,
  env: Record<string, string> = {},
  fileName = 'job.yaml',
): readonly JobFileProblem[] {
  const result = parse(text, env, fileName);
  if (result.ok) throw new Error(`${fileName} validated: ${JSON.stringify(result.job)}`);
  return result.problems;
}

const lines = (found: readonly JobFileProblem[]): (number | null)[] => found.map((problem) => problem.line);

const task = 'task: {driver: exec, command: [sh], cpuMillis: 100, memoryMiB: 32}';

describe('the examples', () => {
  const files = readdirSync(examplesDir).filter((file) => file.endsWith('.yaml'));

  it('has the seven examples', () => {
    expect(files.sort()).toEqual([
      'batch.yaml',
      'periodic.yaml',
      'service.yaml',
      'system.yaml',
      'web-docker.yaml',
      'web-groups.yaml',
      'web-service.yaml',
    ]);
  });

  it.each(files)('%s validates and round-trips through jobToYaml', (file) => {
    const parsed = job(readFileSync(join(examplesDir, file), 'utf8'), {}, file);
    const yaml = jobToYaml(parsed as Parameters<typeof jobToYaml>[0]);
    expect(job(yaml)).toEqual(parsed);
    expect(yaml).not.toContain('undefined');
  });

  it('shows what each says it shows', () => {
    const read = (file: string): Record<string, unknown> =>
      job(readFileSync(join(examplesDir, file), 'utf8'), {}, file) as Record<string, unknown>;
    expect(read('batch.yaml')).toMatchObject({ type: 'batch', count: 3, task: { driver: 'exec' } });
    expect(read('service.yaml')).toMatchObject({
      type: 'service',
      count: 3,
      reschedule: { policy: 'always' },
      task: { restart: { policy: 'on-failure' } },
    });
    // "$${n}" is the shell's own ${n}.
    expect(JSON.stringify(read('service.yaml'))).toContain('echo \\"tick ${n}\\"');
    expect(read('system.yaml')).toMatchObject({ type: 'system' });
    expect(read('system.yaml')).not.toHaveProperty('count');
    expect(read('periodic.yaml')).toMatchObject({
      type: 'periodic',
      periodic: { cron: '*/5 * * * *', timezone: 'Europe/Berlin', prohibitOverlap: true, missed: 'run' },
    });
    expect(read('web-groups.yaml')).toMatchObject({
      groups: [
        {
          tasks: [
            { name: 'server', driver: 'docker', image: 'busybox:latest', ports: { http: 8080 } },
            { name: 'shipper', driver: 'exec' },
          ],
        },
        { task: { driver: 'exec' } },
      ],
    });
  });
});

describe('ports, checks and rolling updates', () => {
  it('reads dynamic, static and published ports, checks with their defaults, and an update policy', () => {
    const parsed = job(
      'name: web\ntype: service\ncount: 2\nupdate: {maxParallel: 2, canary: 1}\ntask:\n  driver: docker\n' +
        '  image: x\n  cpuMillis: 100\n  memoryMiB: 32\n  ports: {http: {to: 80}, admin: 9000, dns: {static: 53, to: 5353}}\n' +
        '  checks:\n    - {type: http, port: http, path: /health}\n    - {type: exec, command: ["true"], intervalMs: 500}\n',
    ) as JobSpec;
    const group = jobGroups(parsed)[0];
    if (!group) throw new Error('no group');
    const spec = instanceTaskSpec(parsed, group, { group: group.name, slot: 0 });
    expect(spec).toMatchObject({
      ports: { admin: 9000, dns: 53 },
      dynamicPorts: ['http'],
      portTargets: { http: 80, dns: 5353 },
    });
    expect(spec.checks).toEqual([
      {
        type: 'http',
        port: 'http',
        path: '/health',
        intervalMs: 10_000,
        timeoutMs: 2000,
        graceMs: 0,
        failuresBeforeUnhealthy: 3,
        successesBeforeHealthy: 1,
      },
      {
        type: 'exec',
        command: ['true'],
        intervalMs: 500,
        timeoutMs: 500,
        graceMs: 0,
        failuresBeforeUnhealthy: 3,
        successesBeforeHealthy: 1,
      },
    ]);
    expect(taskSpecSchema.safeParse(spec).success).toBe(true);
    expect(job(jobToYaml(parsed))).toEqual(parsed);
  });

  it('refuses checks on ports the task lacks, ports on network none, and update on a batch job, each on its line', () => {
    const found = problems(
      'name: web\ntype: batch\nupdate: {maxParallel: 2}\ntask:\n  driver: exec\n  command: [x]\n  cpuMillis: 100\n' +
        '  memoryMiB: 32\n  network: none\n  ports: {http: {}}\n  checks:\n    - {type: tcp, port: grpc}\n    - {type: exec}\n',
    );
    expect(found.map((problem) => `${problem.line}: ${problem.message}`)).toEqual([
      '3: update is for service jobs (this job is batch: its instances are replaced at once)',
      '9: a task with network none cannot have ports',
      "12: port grpc is not one of the task's ports",
      '13: an exec check needs a command',
    ]);
  });
});

describe('schema problems', () => {
  const fiveMistakes = [
    '# A nightly job with five mistakes, one a line.',
    'name: nightly',
    'type: periodic',
    'priority: 1000',
    'periodic:',
    "  cron: '61 * * * *'",
    'task:',
    '  driver: exec',
    "  user: 'a user'",
    '  cpuMillis: 100',
    '  memoryMiB: 64',
    '  onDisconect: keep',
    '',
  ].join('\n');

  it('reports all five mistakes of a file, each on its line, in line order', () => {
    const found = problems(fiveMistakes);
    expect(lines(found)).toEqual([4, 6, 7, 9, 12]);
    const output = formatJobFileProblems('nightly.yaml', found).split('\n');
    expect(output).toHaveLength(5);
    expect(output[0]).toBe('nightly.yaml: priority: must be at most 100, got 1000 (line 4)');
    expect(output[1]).toMatch(
      /^nightly\.yaml: periodic\.cron: not a cron schedule croner reads: .*\(line 6\)$/,
    );
    expect(output[2]).toBe(
      'nightly.yaml: task.command: the exec driver needs a command (or an image to take it from) (line 7)',
    );
    expect(output[3]).toBe(
      'nightly.yaml: task.user: a user is NAME, UID or UID:GID (e.g. nobody, 1000 or 1000:1000), got "a user" (line 9)',
    );
    expect(output[4]).toBe(
      'nightly.yaml: task: unknown field "onDisconect" (did you mean "onDisconnect"?) (line 12)',
    );
  });

  it('words type, range, choice and format mistakes for people, with the value the file has', () => {
    const found = problems(
      [
        'name: a.b',
        'type: batchy',
        'count: 0.5',
        'task:',
        '  driver: exec',
        '  command: [x]',
        '  cpuMillis: "100"',
        '  memoryMiB: 0',
        '  ports: {"x y": 80}',
        'labelConstraints:',
        '  - {key: zone, operator: inn, values: [a]}',
        '  - {key: zone, operator: in, values: []}',
      ].join('\n'),
    );
    expect(formatJobFileProblems('j.yaml', found).split('\n')).toEqual([
      'j.yaml: name: a job name may hold letters, digits, "_" and "-", got "a.b" (line 1)',
      'j.yaml: type: expected one of "batch", "service", "system", "periodic", got "batchy" (did you mean "batch"?) (line 2)',
      'j.yaml: count: expected a whole number, got 0.5 (line 3)',
      'j.yaml: task.cpuMillis: expected a whole number, got "100" (write numbers without quotes) (line 7)',
      'j.yaml: task.memoryMiB: memoryMiB must be at least 1, got 0 (line 8)',
      'j.yaml: task.ports["x y"]: bad key: a port name may hold letters, digits, ".", "_", "/" and "-", got "x y" (line 9)',
      'j.yaml: labelConstraints[0].operator: expected one of "=", "!=", "in", "notIn", "regex", got "inn" (did you mean "in"?) (line 11)',
      'j.yaml: labelConstraints[1].values: must have at least 1 item, got 0 (line 12)',
    ]);
  });

  it('puts a missing key on the line of the map that lacks it', () => {
    const found = problems(
      ['name: a', 'type: batch', 'task:', '  driver: exec', '  command: [x]', '  memoryMiB: 1'].join('\n'),
    );
    expect(found).toEqual([
      { path: 'task.cpuMillis', line: 3, message: 'missing (expected a whole number)' },
    ]);
    expect(problems('type: batch\nname: a\n')).toContainEqual({
      path: 'job',
      line: 1,
      message: 'give either groups, or a single task (with count) under the job',
    });
  });

  it('names each unknown key on its own line, with a suggestion when one is near', () => {
    const found = problems(
      [
        'name: a',
        'type: batch',
        'task:',
        '  driver: exec',
        '  command: [x]',
        '  cpu: 100',
        '  memroy: 32',
        '  colour: red',
      ].join('\n'),
    );
    expect(found).toContainEqual({
      path: 'task',
      line: 6,
      message: 'unknown field "cpu" (did you mean "cpuMillis"?)',
    });
    expect(found).toContainEqual({
      path: 'task',
      line: 7,
      message: 'unknown field "memroy" (did you mean "memoryMiB"?)',
    });
    expect(found).toContainEqual({ path: 'task', line: 8, message: 'unknown field "colour"' });
    expect(problems(`name: a\ntype: batch\nreschedul: {policy: always}\n${task}\n`)).toEqual([
      { path: 'job', line: 3, message: 'unknown field "reschedul" (did you mean "reschedule"?)' },
    ]);
  });

  it('writes paths into groups with their index', () => {
    const text = [
      'name: a',
      'type: service',
      'groups:',
      '  - name: web',
      '    task: {driver: exec, command: [x], cpuMillis: 100, memoryMiB: 32}',
      '  - name: db',
      '    task:',
      '      driver: exec',
      '      command: [x]',
      '      cpuMillis: 100',
      '      memoryMiB: -1',
    ].join('\n');
    expect(problems(text)).toEqual([
      { path: 'groups[1].task.memoryMiB', line: 11, message: 'memoryMiB must be at least 1, got -1' },
    ]);
  });

  it('refuses a file that is not a map, and an empty one', () => {
    expect(problems('- a\n- b\n')).toEqual([{ path: 'job', line: 1, message: 'expected a map, got a list' }]);
    expect(problems('# nothing\n')).toEqual([{ path: 'job', line: null, message: 'the file holds no job' }]);
  });
});

describe('syntax problems', () => {
  it('reports every syntax error with its line, not just the first', () => {
    const found = problems(
      ['name: a', 'name: b', 'task:', '\tdriver: exec', '  command: "sh', 'type: batch', ''].join('\n'),
    );
    expect(found).toEqual([
      { path: '', line: 2, message: 'duplicate key "name" (first on line 1)' },
      { path: '', line: 4, message: 'tabs are not allowed as indentation: indent with spaces' },
      { path: '', line: 5, message: 'the string that starts on this line has no closing "' },
    ]);
  });

  it('reports bad indentation', () => {
    const found = problems(
      ['name: a', 'type: batch', 'task:', '  driver: exec', ' cpuMillis: 1', ''].join('\n'),
    );
    expect(lines(found)).toEqual([5]);
    expect(found[0]?.message).toMatch(/same column/);
  });

  it('refuses more than one YAML document', () => {
    const text = `name: a\ntype: batch\n${task}\n---\nname: b\ntype: batch\n${task}\n`;
    expect(problems(text)).toEqual([
      { path: '', line: 4, message: 'one job per file: a second YAML document starts here' },
    ]);
    // A stray `---` at the end starts no job.
    expect(job(`name: a\ntype: batch\n${task}\n---\n`)).toMatchObject({ name: 'a' });
  });

  it('refuses a file over 1 MiB with one problem', () => {
    const text = `name: a\ntype: batch\n${task}\n# ${'x'.repeat(jobFileBytesMax)}\n`;
    const found = problems(text);
    expect(found).toHaveLength(1);
    expect(found[0]).toMatchObject({ line: null, path: '' });
    expect(formatJobFileProblems('big.yaml', found)).toMatch(
      /^big\.yaml: the file is \d+ bytes; a job file may be at most 1 MiB$/,
    );
  });
});

describe('JSON job files', () => {
  const jsonJob = (memoryMiB: string): string =>
    [
      '{',
      '  "name": "a",',
      '  "type": "batch",',
      '  "task": {',
      '    "driver": "exec",',
      '    "command": ["sh", "-c", "echo ${GREETING}"],',
      '    "cpuMillis": 100,',
      `    "memoryMiB": ${memoryMiB}`,
      '  }',
      '}',
    ].join('\n');

  it('reads JSON, variables included', () => {
    expect(job(jsonJob('32'), { GREETING: 'hi' }, 'job.json')).toMatchObject({
      task: { command: ['sh', '-c', 'echo hi'], memoryMiB: 32 },
    });
  });

  it('gives a schema problem its line', () => {
    expect(problems(jsonJob('0'), { GREETING: 'hi' }, 'job.json')).toEqual([
      { path: 'task.memoryMiB', line: 8, message: 'memoryMiB must be at least 1, got 0' },
    ]);
  });

  it('gives a JSON syntax error its line, and refuses what only YAML allows', () => {
    const trailingComma = problems(jsonJob('32,'), { GREETING: 'hi' }, 'job.json');
    expect(trailingComma).toEqual([
      { path: '', line: 9, message: 'not valid JSON: expected double-quoted property name' },
    ]);
    const singleQuotes = problems(jsonJob("'32'"), { GREETING: 'hi' }, 'job.json');
    expect(lines(singleQuotes)).toEqual([8]);
    expect(singleQuotes[0]?.message).toMatch(/^not valid JSON: /);
    // The same text is YAML when the file is not named *.json.
    expect(lines(problems(jsonJob("'32'"), { GREETING: 'hi' }, 'job.yaml'))).toEqual([8]);
    expect(problems(jsonJob("'32'"), { GREETING: 'hi' }, 'job.yaml')[0]?.message).toMatch(/whole number/);
  });
});

describe('${NAME} substitution', () => {
  const withTask = (lines: readonly string[]): string =>
    ['name: a', 'type: batch', 'task:', '  driver: exec', ...lines].join('\n');

  it('substitutes set variables in string values', () => {
    const parsed = job(
      withTask(['  command: [sh, -c, "echo ${GREETING}, ${WHO}!"]', '  cpuMillis: 100', '  memoryMiB: 32']),
      { GREETING: 'hello', WHO: 'world' },
    );
    expect(parsed).toMatchObject({ task: { command: ['sh', '-c', 'echo hello, world!'] } });
  });

  it('reports each unset variable on its line', () => {
    const found = problems(
      withTask(['  command: [sh, -c, "echo ${GREETING}"]', '  cpuMillis: ${CPU}', '  memoryMiB: 32']),
    );
    expect(found).toEqual([
      { path: 'task.command[2]', line: 5, message: '${GREETING} is not set' },
      { path: 'task.cpuMillis', line: 6, message: '${CPU} is not set' },
    ]);
  });

  it('reads $${ as a literal ${ and refuses a ${ that names no variable', () => {
    const parsed = job(
      withTask(['  command: [sh, -c, "echo $${HOME} $$HOME"]', '  cpuMillis: 100', '  memoryMiB: 32']),
    );
    expect(parsed).toMatchObject({ task: { command: ['sh', '-c', 'echo ${HOME} $$HOME'] } });
    expect(
      problems(withTask(['  command: [sh, -c, "echo ${HOME:-/}"]', '  cpuMillis: 100', '  memoryMiB: 32']), {
        HOME: '/root',
      }),
    ).toEqual([
      {
        path: 'task.command[2]',
        line: 5,
        message: '"${" must start a ${NAME} (write "$${" for a literal "${")',
      },
    ]);
  });

  it('gives an unquoted value the type its text has, and keeps a quoted one a string', () => {
    const env = { CPU: '250', MEM: '64', GANG: 'true', LABEL: 'a: b' };
    const text = [
      'name: a',
      'type: batch',
      'constraints:',
      '  zone: ${LABEL}',
      'groups:',
      '  - name: g',
      '    gang: ${GANG}',
      '    task:',
      '      driver: exec',
      '      command: [x]',
      '      cpuMillis: ${CPU}',
      '      memoryMiB: ${MEM}0',
    ].join('\n');
    expect(job(text, env)).toMatchObject({
      constraints: { zone: 'a: b' },
      groups: [{ gang: true, task: { cpuMillis: 250, memoryMiB: 640 } }],
    });
    const quoted = problems(withTask(['  command: [x]', '  cpuMillis: "${CPU}"', '  memoryMiB: 32']), env);
    expect(quoted).toEqual([
      {
        path: 'task.cpuMillis',
        line: 6,
        message: 'expected a whole number, got "250" (write numbers without quotes)',
      },
    ]);
  });

  it('says why a string field got a number from an unquoted variable', () => {
    expect(problems(`name: \${JOB}\ntype: batch\n${task}\n`, { JOB: '2' })).toEqual([
      {
        path: 'name',
        line: 1,
        message:
          'expected a string, got 2 (unquoted, the variable\'s value reads as YAML: write "${NAME}" in quotes)',
      },
    ]);
    expect(job(`name: "\${JOB}"\ntype: batch\n${task}\n`, { JOB: '2' })).toMatchObject({ name: '2' });
  });

  it('explains that an unquoted ${NAME} inside [ ] or { } is a YAML syntax error', () => {
    const found = problems(withTask(['  command: [sh, -c, ${CMD}]', '  cpuMillis: 100', '  memoryMiB: 32']), {
      CMD: 'true',
    });
    expect(lines(found)).toEqual([5]);
    expect(found[0]?.message).toMatch(
      /\(inside \[ \] or \{ \}, write "\$\{NAME\}" in quotes, or use block style\)$/,
    );
  });

  it('leaves keys alone', () => {
    expect(job(`name: a\ntype: batch\nconstraints: {"\${ZONE}": a}\n${task}\n`, { ZONE: 'z' })).toMatchObject(
      {
        constraints: { '${ZONE}': 'a' },
      },
    );
  });
});

describe('jobToYaml', () => {
  it('writes keys in the schema order, leaves absent fields out, and escapes ${', () => {
    const yaml = jobToYaml({
      task: {
        memoryMiB: 32,
        cpuMillis: 100,
        command: ['sh', '-c', 'echo ${HOME} $${x}'],
        driver: 'exec',
        restart: { delayMs: 1000, maxRestarts: null, policy: 'always' },
      },
      type: 'service',
      name: 'a',
    });
    expect(yaml.split('\n').filter((line) => !line.startsWith('    '))).toEqual([
      'name: a',
      'type: service',
      'task:',
      '  driver: exec',
      '  command:',
      '  cpuMillis: 100',
      '  memoryMiB: 32',
      '  restart:',
      '',
    ]);
    expect(yaml).toContain('policy: always\n    maxRestarts: null\n    delayMs: 1000');
    expect(job(yaml, { HOME: '/root' })).toMatchObject({
      task: { command: ['sh', '-c', 'echo ${HOME} $${x}'] },
    });
  });
});

describe('formatJobFileProblems', () => {
  it('writes one line per problem, in line order, without a line or path when there is none', () => {
    expect(
      formatJobFileProblems('j.yaml', [
        { path: 'task', line: 9, message: 'b' },
        { path: '', line: 2, message: 'a' },
        { path: 'job', line: null, message: 'c\nd' },
      ]),
    ).toBe('j.yaml: job: c d\nj.yaml: a (line 2)\nj.yaml: task: b (line 9)');
  });
});
