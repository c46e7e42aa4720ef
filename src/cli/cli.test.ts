import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { matchRoute, type MemberView, type StatusView } from '../api/index.ts';
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
  let server: Server;
  let address: string;

  beforeAll(async () => {
    server = createServer((request, response) => {
      const route = matchRoute(request.method ?? 'GET', new URL(request.url ?? '/', 'http://x').pathname);
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
