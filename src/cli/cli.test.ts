import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import {
  matchRoute,
  type EventFrame,
  type MemberView,
  type StatusView,
  type TaskDetailView,
} from '../api/index.ts';
import { globalUsage, main } from './cli.ts';
import { commands } from './commands/index.ts';
import { announceSubmission } from './commands/run.ts';
import { asksForHelp } from './flags.ts';
import { formatMembers, formatStatus } from './format.ts';

/** Runs `shoal ARGS…` in-process and collects what it writes. */
async function shoal(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stdout += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    stderr += String(chunk);
    return true;
  });
  try {
    const code = await main(args);
    return { code, stdout, stderr };
  } finally {
    vi.restoreAllMocks();
  }
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('the command table', () => {
  it('lists every command, with its summary, in the global usage', () => {
    const usage = globalUsage();
    for (const command of commands) {
      expect(usage).toContain(`  ${command.name}`);
      expect(usage).toContain(command.summary);
      expect(command.summary).not.toContain('\n');
    }
    expect(usage).toContain('--addr HOST:PORT');
  });

  it("documents every flag a command accepts in that command's usage", () => {
    for (const command of commands) {
      for (const [name, spec] of Object.entries(command.options)) {
        const flag = new RegExp(`(^|[\\s\\[])--${name}(?![\\w-])`, 'm');
        expect(command.usage, `shoal ${command.name} --${name}`).toMatch(flag);
        if (spec.short !== undefined)
          expect(command.usage, `shoal ${command.name} -${spec.short}`).toContain(
            `-${spec.short}, --${name}`,
          );
      }
    }
    expect(commands.find((command) => command.name === 'logs')?.usage).toContain('--tail BYTES');
  });

  it("prints a command's usage for --help, -h and shoal help COMMAND, and exits 0", async () => {
    for (const command of commands) {
      for (const args of [
        [command.name, '--help'],
        [command.name, '-h'],
        ['help', command.name],
        ['--help', command.name],
      ]) {
        const result = await shoal(args);
        expect(result, args.join(' ')).toEqual({ code: 0, stdout: command.usage, stderr: '' });
      }
    }
    // After --, -h belongs to the task's command.
    expect(asksForHelp(['--cpu', '1', '--', 'ls', '-h'])).toBe(false);
    expect(asksForHelp(['--cpu', '1', '-h', '--', 'ls'])).toBe(true);
  });

  it('prints the global usage for help and --help (exit 0) and for nothing (exit 2)', async () => {
    expect(await shoal(['help'])).toEqual({ code: 0, stdout: globalUsage(), stderr: '' });
    expect(await shoal(['--help'])).toEqual({ code: 0, stdout: globalUsage(), stderr: '' });
    expect(await shoal([])).toEqual({ code: 2, stdout: globalUsage(), stderr: '' });
  });

  it('answers an unknown command or flag with one line and exit 2', async () => {
    const unknown = await shoal(['frobnicate']);
    expect(unknown).toMatchObject({ code: 2, stdout: '' });
    expect(unknown.stderr).toBe('shoal: unknown command "frobnicate"; see shoal help\n');
    const help = await shoal(['help', 'frobnicate']);
    expect(help).toMatchObject({
      code: 2,
      stderr: 'shoal help: unknown command "frobnicate"; see shoal help\n',
    });
    const flag = await shoal(['ps', '--bogus']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toMatch(/^shoal ps: Unknown option '--bogus'.*; see shoal ps --help\n$/);
    const leading = await shoal(['--json', 'ps']);
    expect(leading.code).toBe(2);
    expect(leading.stderr).toMatch(/^shoal: --json is not a global flag/);
  });
});

describe('global flags before or after the command, against an API', () => {
  const member: MemberView = {
    id: '12D3KooWexample',
    name: 'n1',
    address: '127.0.0.1:4700',
    state: 'alive',
    cpuMillis: 1500,
    memoryBytes: 512 * 1024 * 1024 + 1000,
    labels: { zone: 'a' },
    drivers: ['exec'],
    incarnation: 3,
    lastHeardMsAgo: 250,
    draining: false,
  };
  const status: StatusView = {
    id: '12D3KooWexample',
    name: 'n1',
    role: 'leader',
    leader: { id: '12D3KooWexample', name: 'n1' },
    term: 2,
    voters: [{ id: '12D3KooWexample', name: 'n1' }],
    learners: [],
    commitIndex: 7,
    appliedIndex: 7,
    eventLoopStallMsMax: 3,
    warning: 'one voter: the cluster stops if n1 is lost',
  };
  const at = '2025-01-02T03:04:05.678Z';
  const task = { taskId: 'aaaaaaaaaaaa', name: 'web', namespace: 'default', job: null, attempt: 0 };
  const frames: EventFrame[] = [
    { type: 'reset', index: 4 },
    { index: 5, type: 'task:submitted', at, ...task, state: 'pending' },
    { index: 6, type: 'task:assigned', at, ...task, state: 'assigned', nodeId: 'p1', node: 'n1' },
    { type: 'heartbeat', index: 6 },
    {
      index: 7,
      type: 'task:state',
      at,
      ...task,
      state: 'failed',
      nodeId: 'p1',
      node: 'n1',
      reason: 'oops',
      exitCode: 3,
    },
    { index: 8, type: 'node:down', at, nodeId: 'p1', node: 'n1', reason: 'gone quiet' },
    { index: 8, type: 'leader:elected', at, term: 3, leaderId: 'p2', leader: 'n2' },
  ];
  let eventsQuery = '';
  let server: Server;
  let address: string;

  beforeAll(async () => {
    server = createServer((request, response) => {
      const url = new URL(request.url ?? '/', 'http://x');
      const route = matchRoute(request.method ?? 'GET', url.pathname);
      if (route?.name === 'events') {
        // The stream, then the connection drops, as when the node goes away.
        eventsQuery = url.search;
        response.writeHead(200, { 'content-type': 'application/x-ndjson' });
        response.end(frames.map((frame) => `${JSON.stringify(frame)}\n`).join(''));
        return;
      }
      const body = route?.name === 'members' ? [member] : route?.name === 'status' ? status : null;
      response.writeHead(body === null ? 404 : 200, { 'content-type': 'application/json' });
      response.end(
        JSON.stringify(body ?? { error: { code: 'NOT_FOUND', message: 'no such route in this test' } }),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('reaches the node --addr names wherever --addr stands', async () => {
    const before = await shoal(['--addr', address, 'members']);
    const after = await shoal(['members', '--addr', address]);
    const equals = await shoal([`--addr=${address}`, 'members']);
    for (const result of [before, after, equals]) {
      expect(result).toEqual({ code: 0, stdout: formatMembers([member]), stderr: '' });
    }
    expect(before.stdout).toMatch(
      /^NAME +ADDRESS +STATE +CPU +MEMORY +DRIVERS +INCARNATION +LAST HEARD +LABELS$/m,
    );
    expect(before.stdout).toMatch(/n1 +127\.0\.0\.1:4700 +alive +1\.5 +512 MiB +exec +3 +0\.3s ago +zone=a/);
    const json = await shoal(['--addr', address, 'members', '--json']);
    expect(JSON.parse(json.stdout)).toEqual([member]);
  });

  it('prints the status warning last, and the whole view with --json', async () => {
    const result = await shoal(['status', '--addr', address]);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(formatStatus(status));
    expect(result.stdout.trimEnd().split('\n').at(-1)).toBe(
      'warning:      one voter: the cluster stops if n1 is lost',
    );
    expect(formatStatus({ ...status, warning: null })).not.toContain('warning');
    expect(JSON.parse((await shoal(['--addr', address, 'status', '--json'])).stdout)).toEqual(status);
  });

  it('prints events one a line, and says where to go on from when the stream ends', async () => {
    const result = await shoal(['events', '--addr', address, '--index', '2', '--task', 'aaaaaaaaaaaa']);
    expect(eventsQuery).toBe('?index=2&task=aaaaaaaaaaaa');
    expect(result.code).toBe(1);
    expect(result.stdout).toBe(
      '4  reset: earlier events are gone from this node; what happened up to here is in shoal ps\n' +
        '5  03:04:05.678  task:submitted  aaaaaaaaaaaa web  namespace default\n' +
        '6  03:04:05.678  task:assigned  aaaaaaaaaaaa web  to n1\n' +
        '7  03:04:05.678  task:state  aaaaaaaaaaaa web  failed on n1: oops (exit code 3)\n' +
        '8  03:04:05.678  node:down  n1  gone quiet\n' +
        '8  03:04:05.678  leader:elected  n2  term 3\n',
    );
    // Index 8 may not have come whole: the last index read in full is 7.
    expect(result.stderr).toBe(
      `shoal events: the event stream from ${address} ended; go on with --index 7\n`,
    );
    const json = await shoal(['events', '--addr', address, '--json']);
    expect(
      json.stdout
        .trimEnd()
        .split('\n')
        .map((line) => JSON.parse(line) as unknown),
    ).toEqual(frames);
    expect(eventsQuery).toBe('');
  });

  it('says in one line which node it could not reach, and exits 1', async () => {
    const result = await shoal(['--addr', '127.0.0.1:1', 'ps']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/^shoal ps: cannot reach shoal at 127\.0\.0\.1:1 .*\n$/);
  });
});

describe('what shoal run prints once a task is committed', () => {
  const one = { ids: ['3ee74bd98a28'], job: 'sh' };
  const three = { ids: ['aaaaaaaaaaaa', 'bbbbbbbbbbbb', 'cccccccccccc'], job: 'web' };

  it('gives scripts exactly the ids on stdout', () => {
    expect(announceSubmission({ ...one, terminal: false, quiet: false })).toEqual({
      stdout: '3ee74bd98a28\n',
      stderr: 'committed by a quorum: task 3ee74bd98a28\n',
    });
    expect(announceSubmission({ ...three, terminal: false, quiet: false }).stdout).toBe(
      'aaaaaaaaaaaa\nbbbbbbbbbbbb\ncccccccccccc\n',
    );
  });

  it('tells a terminal once, on stdout', () => {
    expect(announceSubmission({ ...one, terminal: true, quiet: false })).toEqual({
      stdout: 'task 3ee74bd98a28 committed by a quorum\n',
      stderr: '',
    });
    expect(announceSubmission({ ...three, terminal: true, quiet: false })).toEqual({
      stdout: '3 tasks of job web committed by a quorum:\naaaaaaaaaaaa\nbbbbbbbbbbbb\ncccccccccccc\n',
      stderr: '',
    });
  });

  it('prints only the ids with --quiet, terminal or not', () => {
    for (const terminal of [true, false]) {
      expect(announceSubmission({ ...one, terminal, quiet: true })).toEqual({
        stdout: '3ee74bd98a28\n',
        stderr: '',
      });
    }
  });
});

describe('shoal run watches its task until it runs', () => {
  const id = 'aaaaaaaaaaaa';
  const at = '2025-01-02T03:04:05.678Z';
  let streams = true;
  let reads = 0;
  let eventQueries: string[] = [];
  let server: Server;
  let address: string;

  /** The task: pending at the first read, running from the second on. */
  function detail(): TaskDetailView {
    const running = reads > 1;
    return {
      id,
      name: 'true',
      state: running ? 'running' : 'pending',
      node: running ? 'n1' : null,
      nodeId: running ? 'p1' : null,
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
      command: ['true'],
      image: null,
      desired: 'run',
      submittedAt: at,
      updatedAt: at,
      ports: [],
      health: null,
      framework: null,
      user: null,
      pidsMax: null,
      diskBytes: 0,
      devices: {},
      events: [
        { at, message: 'submitted' },
        ...(running
          ? [
              { at, message: 'assigned to n1' },
              { at, message: 'running' },
            ]
          : []),
      ],
    };
  }

  beforeAll(async () => {
    server = createServer((request, response) => {
      const url = new URL(request.url ?? '/', 'http://x');
      const route = matchRoute(request.method ?? 'GET', url.pathname);
      const json = (status: number, body: unknown): void => {
        response.writeHead(status, { 'content-type': 'application/json' });
        response.end(JSON.stringify(body));
      };
      if (route?.name === 'submit') return json(201, { id, ids: [id] });
      if (route?.name === 'task') {
        reads++;
        return json(200, detail());
      }
      if (route?.name === 'events' && streams) {
        // Open until the client goes: a heartbeat once subscribed, then the task's change a little later.
        eventQueries.push(url.search);
        response.writeHead(200, { 'content-type': 'application/x-ndjson' });
        response.write(`${JSON.stringify({ type: 'heartbeat', index: 9 })}\n`);
        const change: EventFrame = {
          index: 10,
          type: 'task:state',
          at,
          taskId: id,
          name: 'true',
          namespace: 'default',
          job: null,
          state: 'running',
          attempt: 0,
          nodeId: 'p1',
          node: 'n1',
          reason: null,
          exitCode: null,
        };
        const timer = setTimeout(() => response.write(`${JSON.stringify(change)}\n`), 50);
        response.on('close', () => clearTimeout(timer));
        return;
      }
      return json(404, { error: { code: 'NOT_FOUND', message: 'no such route in this test' } });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  const expected = (): string =>
    `submitting true to ${address}…\n` +
    `committed by a quorum: task ${id}\n` +
    '  03:04:05.678  submitted\n' +
    '  03:04:05.678  assigned to n1\n' +
    '  03:04:05.678  running\n' +
    `task ${id} is running on n1\n`;

  it('reads the task again when its event stream says it changed', async () => {
    streams = true;
    reads = 0;
    eventQueries = [];
    const result = await shoal(['run', '--addr', address, '--', 'true']);
    expect(result).toEqual({ code: 0, stdout: `${id}\n`, stderr: expected() });
    // Once when the stream opened, once for the change.
    expect(reads).toBe(2);
    expect(eventQueries).toEqual([`?task=${id}`]);
  });

  it('polls the task when the node has no event stream', async () => {
    streams = false;
    reads = 0;
    const result = await shoal(['run', '--addr', address, '--', 'true']);
    expect(result).toEqual({ code: 0, stdout: `${id}\n`, stderr: expected() });
    expect(reads).toBe(2);
  });
});
