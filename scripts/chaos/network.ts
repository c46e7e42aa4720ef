/**
 * Cutting links between agents on one host, with iptables, on loopback addresses.
 *
 * Each agent listens on its own 127.0.0.x, but an outgoing TCP connection on loopback gets the source
 * address 127.0.0.1 whoever opens it, so a rule "from A to B" would never match A's dials. So each agent
 * runs in its own cgroup (v2), and a SNAT rule gives connections opened from that cgroup the agent's own
 * address. Then every packet between two agents carries both agents' addresses somewhere on its way:
 *   - A's packets on a connection A opened: SNAT rewrites the source in POSTROUTING, so INPUT sees A → B;
 *   - B's answers on it: B's socket sends to A's address; the nat table un-does the SNAT in OUTPUT (at
 *     priority -100), so the mangle table's OUTPUT (at -150) still sees B → A.
 * Rules therefore live in the mangle table, in a chain of our own jumped to from mangle INPUT and OUTPUT:
 * `-s A -d B -j DROP` there drops every packet from A to B. The harness's own API traffic comes from
 * 127.0.0.1 and is never touched. Everything is removed at the end (and by `--cleanup` after a crash).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Chain names are the prefix plus the harness's pid, so a later run can tell a dead run's leftovers. */
export const chainPrefix = 'SHOAL-CHAOS-';
export const cgroupPrefix = 'shoal-chaos-';

export interface CommandResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export function runCommand(command: string, args: readonly string[], input?: string): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(command, args, { maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
    if (input !== undefined) child.stdin?.end(input);
  });
}

async function must(command: string, args: readonly string[], input?: string): Promise<string> {
  const result = await runCommand(command, args, input);
  if (result.code !== 0)
    throw new Error(`${command} ${args.join(' ')} failed (${result.code}): ${result.stderr.trim()}`);
  return result.stdout;
}

/** The cgroup2 mount point, or null if this host has none. */
export function cgroup2Root(): string | null {
  let text: string;
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    // … MOUNT_POINT … - FSTYPE SOURCE OPTIONS
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined || !right.startsWith('cgroup2 ')) continue;
    const fields = left.split(' ');
    // The root of the hierarchy (field 4 is "/"): paths in `-m cgroup --path` are relative to it.
    if (fields[3] === '/' && fields[4] !== undefined) return fields[4];
  }
  return null;
}

/** Why a chaos run cannot run here, or null if it can. */
export async function preflight(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'the chaos harness needs root (iptables, cgroups, tmpfs mounts)';
  const iptables = await runCommand('iptables', ['-w', '-t', 'mangle', '-S', 'OUTPUT']);
  if (iptables.code !== 0)
    return `iptables does not work here (${iptables.stderr.trim() || 'not installed'}); apt-get install -y iptables`;
  if (cgroup2Root() === null) return 'no cgroup2 hierarchy is mounted (needed to tell the agents apart)';
  return null;
}

export interface Link {
  readonly from: string;
  readonly to: string;
  /** Drop every packet (null) or this share of them. */
  readonly probability: number | null;
}

export class ChaosNetwork {
  readonly chain: string;
  readonly cgroupDir: string;
  private readonly cgroupRelative: string;
  /** The rules in force per fault tag, to delete exactly them. */
  private readonly rules = new Map<string, string[]>();
  private installed = false;

  constructor(tag: string) {
    const root = cgroup2Root();
    if (root === null) throw new Error('no cgroup2 hierarchy is mounted');
    this.chain = `${chainPrefix}${tag}`;
    this.cgroupRelative = `${cgroupPrefix}${tag}`;
    this.cgroupDir = join(root, this.cgroupRelative);
  }

  async install(): Promise<void> {
    // A chain of this name can only be a leftover of a SIGKILLed run whose pid we now reuse.
    await removeChains(this.chain);
    await must('iptables', ['-w', '-t', 'mangle', '-N', this.chain]);
    await must('iptables', ['-w', '-t', 'nat', '-N', this.chain]);
    this.installed = true;
    await must('iptables', ['-w', '-t', 'mangle', '-I', 'INPUT', '-j', this.chain]);
    await must('iptables', ['-w', '-t', 'mangle', '-I', 'OUTPUT', '-j', this.chain]);
    await must('iptables', ['-w', '-t', 'nat', '-I', 'POSTROUTING', '-j', this.chain]);
  }

  /** A cgroup for one agent, and the SNAT rule that gives its connections its address. */
  async addNode(name: string, address: string): Promise<string> {
    const dir = join(this.cgroupDir, name);
    await must('mkdir', ['-p', dir]);
    await must('iptables', [
      '-w',
      '-t',
      'nat',
      '-A',
      this.chain,
      '-m',
      'cgroup',
      '--path',
      `${this.cgroupRelative}/${name}`,
      '-j',
      'SNAT',
      '--to-source',
      address,
    ]);
    return dir;
  }

  /** Drops packets on the given links, tagged so heal(tag) removes exactly these rules. */
  async cut(tag: string, links: readonly Link[]): Promise<void> {
    const rules = links.map((link) =>
      [
        `-s ${link.from}/32 -d ${link.to}/32`,
        link.probability === null ? '' : ` -m statistic --mode random --probability ${link.probability}`,
        ` -m comment --comment ${tag} -j DROP`,
      ].join(''),
    );
    if (rules.length === 0) return;
    this.rules.set(tag, [...(this.rules.get(tag) ?? []), ...rules]);
    await this.restore(rules.map((rule) => `-A ${this.chain} ${rule}`));
  }

  async heal(tag: string): Promise<void> {
    const rules = this.rules.get(tag) ?? [];
    this.rules.delete(tag);
    if (rules.length > 0) await this.restore(rules.map((rule) => `-D ${this.chain} ${rule}`));
  }

  async healAll(): Promise<void> {
    this.rules.clear();
    if (this.installed) await must('iptables', ['-w', '-t', 'mangle', '-F', this.chain]);
  }

  /** All of a batch or none of it: iptables-restore commits a table at once. */
  private async restore(lines: readonly string[]): Promise<void> {
    await must('iptables-restore', ['-w', '--noflush'], `*mangle\n${lines.join('\n')}\nCOMMIT\n`);
  }

  /** Removes every rule, chain and cgroup of this run. Processes in the cgroups must be gone. */
  async uninstall(): Promise<void> {
    await removeChains(this.chain);
    removeCgroupTree(this.cgroupDir);
    this.installed = false;
  }
}

async function removeChains(chain: string): Promise<void> {
  for (const [table, parents] of [
    ['mangle', ['INPUT', 'OUTPUT']],
    ['nat', ['POSTROUTING']],
  ] as const) {
    for (const parent of parents) {
      // Delete every jump (a crashed run could have left more than one).
      for (let i = 0; i < 10; i++) {
        const result = await runCommand('iptables', ['-w', '-t', table, '-D', parent, '-j', chain]);
        if (result.code !== 0) break;
      }
    }
    await runCommand('iptables', ['-w', '-t', table, '-F', chain]);
    await runCommand('iptables', ['-w', '-t', table, '-X', chain]);
  }
}

/** Kills every process in a cgroup and its children (cgroup.kill, else SIGKILL each). */
export function killCgroup(dir: string): void {
  if (!existsSync(dir)) return;
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1');
    return;
  } catch {
    // Kernels before 5.14 have no cgroup.kill.
  }
  for (const pid of cgroupPids(dir)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * Processes whose working directory is `dir` or below it. A node's tasks run in their task dirs under its
 * data dir (and may sit in cgroups of their own, away from the agent's), so this is how a node's processes
 * are found whatever the runtime does with cgroups.
 */
export function processesUnder(dir: string): { pid: number; cwd: string }[] {
  const found: { pid: number; cwd: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let cwd: string;
    try {
      cwd = readlinkSync(`/proc/${entry}/cwd`);
    } catch {
      continue; // gone, or a zombie (no cwd)
    }
    if (cwd === dir || cwd.startsWith(`${dir}/`)) found.push({ pid: Number(entry), cwd });
  }
  return found;
}

/** SIGKILLs every process working under `dir`, again until none is left (one may fork while we look). */
export async function killProcessesUnder(dir: string): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const found = processesUnder(dir);
    if (found.length === 0) return;
    for (const { pid } of found) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Pids in a cgroup (not its children). */
export function cgroupPids(dir: string): number[] {
  try {
    return readFileSync(join(dir, 'cgroup.procs'), 'utf8')
      .split('\n')
      .filter((line) => line !== '')
      .map(Number);
  } catch {
    return [];
  }
}

function removeCgroupTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeCgroupTree(join(dir, entry.name));
  }
  killCgroup(dir);
  // rmdir fails while a killed process is still exiting: try for a moment.
  for (let i = 0; i < 100; i++) {
    try {
      rmdirSync(dir);
      return;
    } catch {
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes chains, cgroups and tmpfs mounts left by chaos runs whose harness is no longer alive. */
export async function cleanupStale(log: (line: string) => void): Promise<void> {
  const dead = (tag: string): boolean => {
    const pid = Number(tag);
    return Number.isInteger(pid) && pid > 0 && pid !== process.pid && !alive(pid);
  };
  for (const table of ['mangle', 'nat']) {
    const listing = await runCommand('iptables', ['-w', '-t', table, '-S']);
    for (const match of listing.stdout.matchAll(new RegExp(`^-N ${chainPrefix}(\\d+)$`, 'gm'))) {
      const tag = match[1];
      if (tag === undefined || !dead(tag)) continue;
      log(`removing iptables chain ${chainPrefix}${tag} (${table}) left by a dead run`);
      await removeChains(`${chainPrefix}${tag}`);
    }
  }
  const mounts = readFileSync('/proc/self/mounts', 'utf8');
  for (const match of mounts.matchAll(/^tmpfs (\S*\/shoal-chaos-(\d+)-[^/\s]+\/nodes\/[^/\s]+) tmpfs/gm)) {
    const [, path, tag] = match;
    if (path === undefined || tag === undefined || !dead(tag)) continue;
    log(`unmounting ${path} left by a dead run`);
    const root = cgroup2Root();
    if (root !== null) killCgroup(join(root, `${cgroupPrefix}${tag}`, path.split('/').pop() ?? ''));
    await killProcessesUnder(path);
    await runCommand('umount', ['-l', path]);
  }
  const root = cgroup2Root();
  if (root === null) return;
  for (const entry of readdirSync(root)) {
    const tag = entry.startsWith(cgroupPrefix) ? entry.slice(cgroupPrefix.length) : null;
    if (tag === null || !dead(tag)) continue;
    log(`removing cgroup ${entry} (and its processes) left by a dead run`);
    removeCgroupTree(join(root, entry));
  }
}
