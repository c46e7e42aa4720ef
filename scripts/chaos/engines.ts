/**
 * A Docker engine per chaos agent, as on real machines: one engine shared by every agent would hide what
 * the docker runs are for (two containers of one task cannot share a name on one engine, so a task could
 * never be seen running twice). Each engine is Debian's dockerd with its own socket, data and exec roots,
 * no bridge and no iptables (the tasks run with network none), outside the agent's cgroup and its size-capped
 * tmpfs: the faults that matter here hit the agent (SIGKILL, SIGSTOP) while its engine and containers go on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runCommand } from './network.ts';

const engineStartTimeoutMs = 60_000;
const engineStopTimeoutMs = 15_000;

export class ChaosEngine {
  readonly dir: string;
  readonly socketPath: string;
  private child: ChildProcess | null = null;

  constructor(dir: string) {
    this.dir = dir;
    this.socketPath = join(dir, 'docker.sock');
  }

  /** Starts dockerd and waits until it answers; then pulls `image` into it, so no task waits on a pull. */
  async start(image: string): Promise<void> {
    mkdirSync(this.dir, { recursive: true });
    const log = openSync(join(this.dir, 'dockerd.log'), 'a');
    this.child = spawn(
      'dockerd',
      [
        '--host',
        `unix://${this.socketPath}`,
        '--data-root',
        join(this.dir, 'data'),
        '--exec-root',
        join(this.dir, 'exec'),
        '--pidfile',
        join(this.dir, 'dockerd.pid'),
        '--bridge=none',
        '--iptables=false',
        '--ip6tables=false',
      ],
      { stdio: ['ignore', log, log], detached: true },
    );
    closeSync(log);
    const deadlineMs = Date.now() + engineStartTimeoutMs;
    while ((await this.docker(['info'])).code !== 0) {
      if (this.child.exitCode !== null || Date.now() > deadlineMs)
        throw new Error(`the engine in ${this.dir} did not start:\n${this.logTail()}`);
      await sleep(200);
    }
    const pulled = await this.docker(['pull', '--quiet', image]);
    if (pulled.code !== 0)
      throw new Error(`the engine in ${this.dir} cannot pull ${image}: ${pulled.stderr}`);
  }

  /** Containers of shoal's tasks running on this engine now. */
  async runningTasks(): Promise<number> {
    const listed = await this.docker(['ps', '--quiet', '--filter', 'label=io.shoal.managed=true']);
    return listed.code === 0 ? listed.stdout.split('\n').filter((line) => line !== '').length : 0;
  }

  /** Removes every container, stops the engine, and lets go of what it mounted. */
  async stop(): Promise<void> {
    const child = this.child;
    if (child === null) return;
    const all = await this.docker(['ps', '--all', '--quiet']);
    const ids = all.stdout.split('\n').filter((line) => line !== '');
    if (ids.length > 0) await this.docker(['rm', '--force', ...ids]);
    // Narrowing does not know the fields change while we sleep: ask through a function.
    const alive = (): boolean => child.exitCode === null && child.signalCode === null;
    if (alive()) {
      child.kill('SIGTERM');
      const deadlineMs = Date.now() + engineStopTimeoutMs;
      while (alive() && Date.now() < deadlineMs) await sleep(100);
      if (alive()) child.kill('SIGKILL');
    }
    this.child = null;
    // Mounts the engine left (its exec root's netns files, a container's overlay after a SIGKILL).
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .map((line) => line.split(' ')[4] ?? '')
      .filter((point) => point.startsWith(`${this.dir}/`))
      .sort((a, b) => b.length - a.length);
    for (const point of mounts) await runCommand('umount', ['-l', point]);
  }

  logTail(lines = 20): string {
    const path = join(this.dir, 'dockerd.log');
    if (!existsSync(path)) return '(no log)';
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  }

  private docker(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    return runCommand('docker', ['--host', `unix://${this.socketPath}`, ...args]);
  }
}
