/**
 * A private network of Linux network namespaces for multi-process membership tests and benchmarks:
 * one bridge in the root namespace, one namespace per host with a veth pair to the bridge, addresses in
 * a /24. A host's link is cut by setting its bridge-side veth down (packets vanish, no reset), and
 * restored by setting it up. Its bridge-side receive counter is what the host sent on the wire.
 *
 * Everything is named after the creating process (`shl-<pid36>-…`), so a later run can remove what a
 * crashed one left behind (cleanupStale). Needs root and iproute2.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

/** Hosts one network may hold (a /24, with .254 for the bridge). */
export const netnsHostsMax = 250;

export interface NetnsHost {
  readonly index: number;
  readonly namespace: string;
  readonly address: string;
  readonly hostVeth: string;
}

let networksCreated = 0;

/** Why namespaces cannot be used here, or null if they can. */
export function netnsUnavailableReason(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'network namespaces need root (run as root, as CI does)';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'the ip command (iproute2) is missing';
  }
  return null;
}

function ip(args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function quietly(action: () => unknown): void {
  try {
    action();
  } catch {
    // Tearing down: what is already gone stays gone.
  }
}

function processAlive(pid: number): boolean {
  return existsSync(`/proc/${pid}`);
}

/** Kills whatever still runs in a namespace, then deletes it. */
function removeNamespace(name: string): void {
  quietly(() => {
    for (const pid of ip(['netns', 'pids', name]).split('\n').filter(Boolean)) {
      quietly(() => process.kill(Number(pid), 'SIGKILL'));
    }
  });
  quietly(() => ip(['netns', 'del', name]));
}

/** Removes namespaces and bridges left by runs whose process is gone. */
export function cleanupStale(): void {
  for (const line of ip(['netns', 'list']).split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const match = /^shl-([0-9a-z]+)-\d+-\d+$/.exec(name);
    if (match?.[1] !== undefined && !processAlive(parseInt(match[1], 36)))
      quietly(() => ip(['netns', 'del', name]));
  }
  for (const line of ip(['-o', 'link', 'show', 'type', 'bridge']).split('\n')) {
    const name = /^\d+: ([^:@]+)/.exec(line)?.[1] ?? '';
    const match = /^s([0-9a-z]+)b\d+$/.exec(name);
    if (match?.[1] !== undefined && !processAlive(parseInt(match[1], 36)))
      quietly(() => ip(['link', 'del', name]));
  }
}

export class NetnsNetwork {
  readonly hosts: NetnsHost[] = [];
  readonly bridge: string;
  readonly bridgeAddress: string;
  private readonly tag: string;
  private readonly subnet: string;
  private created = false;

  constructor(hostCount: number) {
    if (hostCount < 1 || hostCount > netnsHostsMax) {
      throw new RangeError(`a network holds 1 to ${netnsHostsMax} hosts, not ${hostCount}`);
    }
    const run = networksCreated++;
    this.tag = process.pid.toString(36);
    // A subnet per process and network, so concurrent runs do not collide.
    this.subnet = `10.${100 + (process.pid % 100)}.${run % 250}`;
    this.bridge = `s${this.tag}b${run}`;
    this.bridgeAddress = `${this.subnet}.254`;
    for (let index = 1; index <= hostCount; index++) {
      this.hosts.push({
        index,
        namespace: `shl-${this.tag}-${run}-${index}`,
        address: `${this.subnet}.${index}`,
        hostVeth: `s${this.tag}h${run}x${index}`,
      });
    }
    for (const host of this.hosts)
      if (host.hostVeth.length > 15) throw new RangeError(`${host.hostVeth} is too long`);
  }

  /** Creates the bridge and every host; on failure removes whatever it made, and throws. */
  setUp(): void {
    this.created = true;
    try {
      ip(['link', 'add', this.bridge, 'type', 'bridge']);
      ip(['addr', 'add', `${this.bridgeAddress}/24`, 'dev', this.bridge]);
      ip(['link', 'set', this.bridge, 'up']);
      for (const host of this.hosts) {
        const peer = `${host.hostVeth.slice(0, -1 - String(host.index).length)}p${host.index}`;
        ip(['netns', 'add', host.namespace]);
        ip(['link', 'add', host.hostVeth, 'type', 'veth', 'peer', 'name', peer]);
        ip(['link', 'set', peer, 'netns', host.namespace]);
        ip(['-n', host.namespace, 'link', 'set', peer, 'name', 'eth0']);
        ip(['-n', host.namespace, 'addr', 'add', `${host.address}/24`, 'dev', 'eth0']);
        ip(['-n', host.namespace, 'link', 'set', 'eth0', 'up']);
        ip(['-n', host.namespace, 'link', 'set', 'lo', 'up']);
        ip(['link', 'set', host.hostVeth, 'master', this.bridge]);
        ip(['link', 'set', host.hostVeth, 'up']);
      }
    } catch (error) {
      this.tearDown();
      throw error;
    }
  }

  /** Cuts a host off: its packets vanish both ways (no resets), as when a cable is pulled. */
  cut(host: NetnsHost): void {
    ip(['link', 'set', host.hostVeth, 'down']);
  }

  restore(host: NetnsHost): void {
    ip(['link', 'set', host.hostVeth, 'up']);
  }

  /** Bytes the host has sent on its link (all protocols, with IP and TCP headers). */
  txBytes(host: NetnsHost): number {
    const path = `/sys/class/net/${host.hostVeth}/statistics/rx_bytes`;
    return Number(readFileSync(path, 'utf8').trim());
  }

  /** The command and arguments that run `command` inside the host's namespace. */
  wrap(host: NetnsHost, command: string, args: readonly string[]): [string, string[]] {
    return ['ip', ['netns', 'exec', host.namespace, command, ...args]];
  }

  /** Removes every namespace (and with it the veth pairs) and the bridge. Safe to call twice. */
  tearDown(): void {
    if (!this.created) return;
    this.created = false;
    for (const host of this.hosts) removeNamespace(host.namespace);
    quietly(() => ip(['link', 'del', this.bridge]));
  }
}
