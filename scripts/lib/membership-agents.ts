/**
 * Runs real `shoal agent` processes for membership tests and benchmarks, optionally each in its own
 * network namespace, and reads what membership logged: every state change is one INFO line with a
 * millisecond timestamp ("member n3 is dead"), which lets a test time detection on every node without
 * polling them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, fstatSync, mkdirSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import type { NetnsHost, NetnsNetwork } from './netns.ts';
import { ShoalClient, type MemberView } from '../../src/api/index.ts';

export interface AgentSpec {
  readonly name: string;
  readonly dir: string;
  /** host:port of the cluster listener and of the API. */
  readonly listen: string;
  readonly api: string;
  readonly key: string;
  readonly join?: string;
  /** The shoal binary, or [node, entry script] to run from source. */
  readonly command: readonly string[];
  readonly logLevel?: 'debug' | 'info';
  readonly network?: { readonly net: NetnsNetwork; readonly host: NetnsHost };
}

export interface LoggedTransition {
  readonly atMs: number;
  /** The node that logged it. */
  readonly observer: string;
  readonly subject: string;
  readonly state: string;
}

export interface TrafficSample {
  readonly atMs: number;
  /** SWIM frames and push-pull payload. */
  readonly bytesSent: number;
}

const transitionLine = /^(\S+) INFO\s+\S*members: member (\S+) is (alive|suspect|dead|left)\b/;
const trafficLine = /^(\S+) DEBUG \S*members: membership traffic bytesSent=(\d+) syncBytesSent=(\d+)/;

export class Agent {
  readonly spec: AgentSpec;
  readonly logPath: string;
  process: ChildProcess | null = null;
  spawnedAtMs = 0;
  /** What has been parsed of the log so far: it is read incrementally, as benchmarks poll it often. */
  private readonly parsed = {
    offset: 0,
    partial: '',
    transitions: [] as LoggedTransition[],
    traffic: [] as TrafficSample[],
  };

  constructor(spec: AgentSpec) {
    this.spec = spec;
    mkdirSync(spec.dir, { recursive: true });
    this.logPath = join(spec.dir, 'agent.log');
  }

  get name(): string {
    return this.spec.name;
  }

  start(): void {
    const { spec } = this;
    const [program, ...prefix] = spec.command;
    if (program === undefined) throw new Error('no command to run');
    const args = [
      ...prefix,
      'agent',
      '--name',
      spec.name,
      '--data-dir',
      join(spec.dir, 'data'),
      '--listen',
      spec.listen,
      // On its own loopback (in a network namespace, one of its own): the API is reached through its socket.
      '--api',
      `127.0.0.1:${spec.api.slice(spec.api.lastIndexOf(':') + 1)}`,
      '--cpu',
      '0.1',
      '--memory',
      '64',
      '--docker-socket',
      '/nonexistent/docker.sock',
      '--key',
      spec.key,
      '--log-level',
      spec.logLevel ?? 'info',
      ...(spec.join === undefined ? [] : ['--join', spec.join]),
    ];
    const [command, fullArgs] = spec.network
      ? spec.network.net.wrap(spec.network.host, program, args)
      : [program, args];
    const log = openSync(this.logPath, 'a');
    // Its own session, hence its own scheduling autogroup: with autogroups (Linux's default on desktops
    // and here), a whole test's agents would otherwise share the CPU of one process against any other
    // session's, unlike servers where each agent has its own cgroup.
    this.process = spawn(command, fullArgs, { stdio: ['ignore', log, log], detached: true });
    closeSync(log);
    this.spawnedAtMs = Date.now();
  }

  signal(signal: NodeJS.Signals): void {
    this.process?.kill(signal);
  }

  get running(): boolean {
    const child = this.process;
    return child !== null && child.exitCode === null && child.signalCode === null;
  }

  async exited(timeoutMs: number): Promise<void> {
    const child = this.process;
    if (!child || !this.running) return;
    await new Promise<void>((done, fail) => {
      const timer = setTimeout(
        () => fail(new Error(`${this.name} did not exit within ${timeoutMs} ms`)),
        timeoutMs,
      );
      child.once('exit', () => {
        clearTimeout(timer);
        done();
      });
    });
  }

  /** SIGKILL, then waits for the exit. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.signal('SIGKILL');
    await this.exited(10_000);
  }

  log(): string {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  /** Membership state changes this agent logged, oldest first. */
  transitions(): readonly LoggedTransition[] {
    this.readNewLines();
    return this.parsed.transitions;
  }

  /** Membership's traffic counters, logged every 10 s at debug level. */
  traffic(): readonly TrafficSample[] {
    this.readNewLines();
    return this.parsed.traffic;
  }

  private readNewLines(): void {
    if (!existsSync(this.logPath)) return;
    const fd = openSync(this.logPath, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size <= this.parsed.offset) return;
      const buffer = Buffer.alloc(size - this.parsed.offset);
      const read = readSync(fd, buffer, 0, buffer.length, this.parsed.offset);
      this.parsed.offset += read;
      const text = this.parsed.partial + buffer.subarray(0, read).toString('utf8');
      const lines = text.split('\n');
      this.parsed.partial = lines.pop() ?? '';
      for (const line of lines) {
        const transition = transitionLine.exec(line);
        if (transition?.[1] !== undefined && transition[2] !== undefined && transition[3] !== undefined) {
          this.parsed.transitions.push({
            atMs: Date.parse(transition[1]),
            observer: this.name,
            subject: transition[2],
            state: transition[3],
          });
          continue;
        }
        const traffic = trafficLine.exec(line);
        if (traffic?.[1] !== undefined && traffic[2] !== undefined && traffic[3] !== undefined)
          this.parsed.traffic.push({
            atMs: Date.parse(traffic[1]),
            bytesSent: Number(traffic[2]) + Number(traffic[3]),
          });
      }
    } finally {
      closeSync(fd);
    }
  }

  /** GET /v1/members on this agent's API. */
  members(): Promise<MemberView[]> {
    const address = `unix:${join(this.spec.dir, 'data', 'api.sock')}`;
    return new ShoalClient({ address, timeoutMs: 3000, keepAlive: false }).members();
  }

  /** This agent's view of `subject` (by name), from its API; null if unknown or unreachable. */
  async stateOf(subject: string): Promise<string | null> {
    try {
      return (await this.members()).find((m) => m.name === subject)?.state ?? null;
    } catch {
      return null;
    }
  }
}

/** Polls `probe` every `intervalMs` until it returns a value other than null/false, or throws at timeout. */
export async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | null | false> | T | null | false,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== null && value !== false) return value;
    } catch (error) {
      last = error;
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`,
  );
}
