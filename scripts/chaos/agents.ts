/**
 * The agents of a chaos run: real `shoal agent` processes from a copy of dist/shoal, each on its own
 * loopback address, in its own cgroup (so the network can tell them apart and a machine crash can kill
 * the agent with every task it started), with its data dir on a size-capped tmpfs (so its disk can fill).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { ChaosEngine } from './engines.ts';
import { killCgroup, killProcessesUnder, processesUnder, runCommand } from './network.ts';
import { ShoalClient, type Delivery, type RouteName, type SendOptions } from '../../src/api/index.ts';

export interface AgentConfig {
  readonly name: string;
  readonly address: string;
  readonly nodeDir: string;
  readonly cgroupDir: string;
  readonly binary: string;
  readonly cpu: number;
  readonly memoryMiB: number;
  readonly compactEntries: number;
  /** Its own Docker engine (docker runs); absent: the docker driver has none to talk to. */
  readonly engine?: ChaosEngine;
}

/** A port free on `host` now (the agent binds it a moment later; a clash shows as a start failure). */
export function freePort(host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export class ChaosAgent {
  readonly config: AgentConfig;
  readonly dataDir: string;
  readonly logPath: string;
  readonly fillerPath: string;
  listenPort = 0;
  apiPort = 0;
  /** 1 after the first start, +1 per restart: observations are compared within one life. */
  life = 0;
  private child: ChildProcess | null = null;
  /** Set when the harness stops the process, so its exit is not reported as a crash. */
  private expectingExit = false;
  paused = false;
  onUnexpectedExit: ((code: number | null, signal: string | null) => void) | null = null;

  constructor(config: AgentConfig) {
    this.config = config;
    this.dataDir = join(config.nodeDir, 'data');
    this.fillerPath = join(config.nodeDir, 'filler');
    this.logPath = join(config.nodeDir, '..', `${config.name}.log`);
  }

  get name(): string {
    return this.config.name;
  }

  get address(): string {
    return this.config.address;
  }

  get joinAddress(): string {
    return `${this.config.address}:${this.listenPort}`;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  get pid(): number | null {
    return this.running ? (this.child?.pid ?? null) : null;
  }

  /** Mounts the size-capped tmpfs for the data dir and picks ports. */
  async prepare(tmpfsMiB: number): Promise<void> {
    mkdirSync(this.config.nodeDir, { recursive: true });
    const mounted = await runCommand('mount', [
      '-t',
      'tmpfs',
      '-o',
      `size=${tmpfsMiB}m,mode=0755`,
      'tmpfs',
      this.config.nodeDir,
    ]);
    if (mounted.code !== 0)
      throw new Error(`cannot mount a tmpfs on ${this.config.nodeDir}: ${mounted.stderr}`);
    mkdirSync(this.dataDir, { recursive: true });
    this.listenPort = await freePort(this.config.address);
    this.apiPort = await freePort(this.config.address);
  }

  /** Starts the agent inside its cgroup: the wrapper shell joins the cgroup, then execs the binary. */
  start(seeds: readonly string[], key: string | null): void {
    if (this.running) throw new Error(`${this.name} is already running`);
    const args = [
      'agent',
      '--name',
      this.name,
      '--data-dir',
      this.dataDir,
      '--listen',
      this.joinAddress,
      '--api',
      `${this.config.address}:${this.apiPort}`,
      '--cpu',
      String(this.config.cpu),
      '--memory',
      String(this.config.memoryMiB),
      '--docker-socket',
      this.config.engine?.socketPath ?? '/nonexistent/docker.sock',
      '--raft-compact-entries',
      String(this.config.compactEntries),
      // The workload writes its heartbeats to the harness's runs.log, outside its task directory, which an
      // isolated task cannot reach; the chaos run is about faults, not isolation (isolation.test.ts is).
      '--isolation',
      'off',
      ...seeds.flatMap((seed) => ['--join', seed]),
      ...(key === null ? [] : ['--key', key]),
    ];
    const log = openSync(this.logPath, 'a');
    writeSync(log, `\n==== chaos harness: start ${this.life + 1} at ${new Date().toISOString()}\n`);
    const child = spawn(
      'sh',
      [
        '-c',
        'echo $$ > "$0" && exec "$@"',
        join(this.config.cgroupDir, 'cgroup.procs'),
        this.config.binary,
        ...args,
      ],
      // Its own process group: a Ctrl-C in the harness's terminal must not reach the agents.
      { stdio: ['ignore', log, log], detached: true },
    );
    closeSync(log);
    this.child = child;
    this.life++;
    this.expectingExit = false;
    this.paused = false;
    child.once('exit', (code, signal) => {
      if (this.child !== child) return;
      if (!this.expectingExit) this.onUnexpectedExit?.(code, signal);
    });
  }

  /**
   * SIGKILLs the agent; with `withTasks`, every process of the node too (the machine crashed): first the
   * agent's cgroup at once (the agent and what stayed in its cgroup, like exec shims), then every process
   * working in the node's data dir (tasks, which the runtime may have moved into cgroups of their own).
   */
  async kill(withTasks: boolean): Promise<void> {
    const child = this.child;
    this.expectingExit = true;
    if (withTasks) {
      killCgroup(this.config.cgroupDir);
      await killProcessesUnder(this.config.nodeDir);
    }
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    if (!withTasks) child.kill('SIGKILL');
    if (this.paused) child.kill('SIGCONT');
    await new Promise<void>((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) resolve();
      else child.once('exit', () => resolve());
    });
    this.paused = false;
  }

  pause(): void {
    if (!this.child || !this.running) return;
    this.child.kill('SIGSTOP');
    this.paused = true;
  }

  resume(): void {
    if (!this.child || !this.running) return;
    this.child.kill('SIGCONT');
    this.paused = false;
  }

  /** Processes still alive in this node's task dirs (tasks, their children, their supervisors). */
  taskPids(): number[] {
    return processesUnder(join(this.dataDir, 'tasks')).map((p) => p.pid);
  }

  /** How many distinct tasks have a live process on this node. */
  liveTasks(): number {
    const tasksDir = join(this.dataDir, 'tasks');
    const ids = new Set(processesUnder(tasksDir).map((p) => p.cwd.slice(tasksDir.length + 1).split('/')[0]));
    return ids.size;
  }

  /** How many tasks run on this node: exec tasks by their processes, docker tasks by their containers. */
  async runningTasks(): Promise<number> {
    return this.liveTasks() + ((await this.config.engine?.runningTasks()) ?? 0);
  }

  /** Fills the tmpfs until ENOSPC. Returns the bytes written. */
  fillDisk(): number {
    const fd = openSync(this.fillerPath, 'a');
    const block = Buffer.alloc(1 << 20);
    let written = 0;
    try {
      for (;;) written += writeSync(fd, block);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
    } finally {
      closeSync(fd);
    }
    // A partial last block is written whole or not at all; fill the remainder byte by byte-ish.
    const fdSmall = openSync(this.fillerPath, 'a');
    const small = Buffer.alloc(4096);
    try {
      for (;;) written += writeSync(fdSmall, small);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOSPC') throw error;
    } finally {
      closeSync(fdSmall);
    }
    return written;
  }

  freeDisk(): void {
    rmSync(this.fillerPath, { force: true });
  }

  diskFilledBytes(): number {
    return existsSync(this.fillerPath) ? statSync(this.fillerPath).size : 0;
  }

  logTail(lines: number): string {
    try {
      const text = readFileSync(this.logPath, 'utf8');
      return text.trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /**
   * One call to this agent's API on a fresh connection (no keep-alive: a paused agent must not hold a
   * pooled socket), with what came of it: an answer, not delivered, or unknown.
   */
  send(route: RouteName, options: SendOptions): Promise<Delivery> {
    // The agent's Unix socket: the harness may do anything there, and partitions never cut it off.
    const address = `unix:${join(this.dataDir, 'api.sock')}`;
    return new ShoalClient({ address, keepAlive: false }).send(route, options);
  }

  /** Unmounts the tmpfs (processes must be gone). */
  async unmount(): Promise<void> {
    await runCommand('umount', ['-l', this.config.nodeDir]);
  }
}
