/**
 * Runs real `shoal` processes for integration tests: each agent with its own ports and data dir on
 * loopback, talking real libp2p. Uses the built binary (dist/shoal), building it once if missing.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync, closeSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const repoRoot = resolve(import.meta.dirname, '../..');
export const binaryPath = join(repoRoot, 'dist', 'shoal');

/** Builds dist/shoal unless SHOAL_TEST_SKIP_BUILD is set and a binary exists. */
export async function buildBinary(): Promise<void> {
  if (process.env['SHOAL_TEST_SKIP_BUILD'] !== undefined && existsSync(binaryPath)) return;
  await new Promise<void>((done, fail) => {
    execFile(
      process.execPath,
      [join(repoRoot, 'scripts', 'build.mjs')],
      { cwd: repoRoot, maxBuffer: 64 << 20 },
      (error, _stdout, stderr) => (error ? fail(new Error(`build failed: ${stderr}`)) : done()),
    );
  });
}

export async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function shoal(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<CliResult> {
  return new Promise((done) => {
    execFile(
      binaryPath,
      args,
      { env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 16 << 20 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        done({ code, stdout, stderr });
      },
    );
  });
}

export interface AgentOptions {
  name: string;
  join?: string;
  key?: string;
  cpu?: number;
  memoryMiB?: number;
  labels?: Record<string, string>;
  /** A Docker engine socket; by default none, so only the exec driver is healthy. */
  dockerSocket?: string;
  /** The host the API listens on (default 127.0.0.1). */
  apiHost?: string;
  /** The host the cluster listener binds, which is the node's address (default 127.0.0.1; any 127.x.y.z works). */
  host?: string;
  extraArgs?: string[];
}

export class TestAgent {
  readonly name: string;
  readonly dataDir: string;
  readonly listenPort: number;
  readonly apiPort: number;
  readonly logPath: string;
  private readonly options: AgentOptions;
  process: ChildProcess | null = null;

  constructor(options: AgentOptions, dataDir: string, listenPort: number, apiPort: number) {
    this.options = options;
    this.name = options.name;
    this.dataDir = dataDir;
    this.listenPort = listenPort;
    this.apiPort = apiPort;
    this.logPath = join(dataDir, '..', `${options.name}.log`);
  }

  get api(): string {
    return `${this.options.apiHost ?? '127.0.0.1'}:${this.apiPort}`;
  }

  get address(): string {
    return `${this.options.host ?? '127.0.0.1'}:${this.listenPort}`;
  }

  start(): void {
    const args = [
      'agent',
      '--name',
      this.name,
      '--data-dir',
      this.dataDir,
      '--listen',
      this.address,
      '--api',
      this.api,
      '--cpu',
      String(this.options.cpu ?? 1),
      '--memory',
      String(this.options.memoryMiB ?? 1024),
      '--docker-socket',
      this.options.dockerSocket ?? '/nonexistent/docker.sock',
      ...Object.entries(this.options.labels ?? {}).flatMap(([k, v]) => ['--label', `${k}=${v}`]),
      ...(this.options.join === undefined ? [] : ['--join', this.options.join]),
      ...(this.options.key === undefined ? [] : ['--key', this.options.key]),
      ...(this.options.extraArgs ?? []),
    ];
    const log = openSync(this.logPath, 'a');
    this.process = spawn(binaryPath, args, { stdio: ['ignore', log, log] });
    closeSync(log);
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  kill(signal: NodeJS.Signals): void {
    this.process?.kill(signal);
  }

  async exited(timeoutMs: number): Promise<number | null> {
    const child = this.process;
    if (!child) return null;
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    return new Promise((done, fail) => {
      const timer = setTimeout(
        () => fail(new Error(`${this.name} did not exit within ${timeoutMs} ms`)),
        timeoutMs,
      );
      child.once('exit', (code) => {
        clearTimeout(timer);
        done(code);
      });
    });
  }

  /**
   * Runs `shoal COMMAND --addr unix:SOCKET ARGS…` (the address goes first so it never lands after `--`). `run` gets
   * --detach: tests poll the task themselves, and some submit tasks that stay pending on purpose. Use
   * runAttached() for `shoal run` as a user sees it.
   */
  cli(args: string[]): Promise<CliResult> {
    const [command = 'help', ...rest] = args;
    return shoal([command, '--addr', this.socket, ...(command === 'run' ? ['--detach'] : []), ...rest]);
  }

  /** The agent's Unix socket, as --addr takes it: the CLI needs no token there. */
  get socket(): string {
    return `unix:${join(this.dataDir, 'api.sock')}`;
  }

  /** `shoal run` without --detach: it waits for the task to run or end, printing its events. */
  runAttached(args: string[], timeoutMs = 60_000): Promise<CliResult> {
    return shoal(['run', '--addr', this.socket, ...args], {}, timeoutMs);
  }

  async json<T>(args: string[]): Promise<T> {
    const result = await this.cli([...args, '--json']);
    if (result.code !== 0)
      throw new Error(`shoal ${args.join(' ')} on ${this.name} failed: ${result.stderr}`);
    return JSON.parse(result.stdout) as T;
  }
}

export class TestCluster {
  readonly root = mkdtempSync(join(tmpdir(), 'shoal-e2e-'));
  readonly agents: TestAgent[] = [];

  async agent(options: AgentOptions): Promise<TestAgent> {
    const agent = new TestAgent(options, join(this.root, options.name), await freePort(), await freePort());
    this.agents.push(agent);
    agent.start();
    return agent;
  }

  /** Awaits `wait`; if it fails, the error carries the tail of every agent's log, which is what explains it. */
  async explain<T>(wait: Promise<T>, lines = 25): Promise<T> {
    try {
      return await wait;
    } catch (error) {
      const tails = this.agents.map(
        (agent) =>
          `--- ${agent.name} (last ${lines} lines):\n${agent.log().trimEnd().split('\n').slice(-lines).join('\n')}`,
      );
      throw new Error(`${error instanceof Error ? error.message : String(error)}\n${tails.join('\n')}`, {
        cause: error,
      });
    }
  }

  /** Stops every agent (SIGTERM, so they stop their tasks), then kills stragglers. */
  async stop(): Promise<void> {
    for (const agent of this.agents)
      if (agent.process?.exitCode === null && agent.process.signalCode === null) agent.kill('SIGTERM');
    for (const agent of this.agents) {
      try {
        await agent.exited(20_000);
      } catch {
        agent.kill('SIGKILL');
      }
    }
    if (process.env['SHOAL_TEST_KEEP'] === undefined) rmSync(this.root, { recursive: true, force: true });
  }
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== null && value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError instanceof Error ? `: ${lastError.message}` : ''}`,
  );
}
