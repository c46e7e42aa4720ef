/**
 * The fault schedule: which faults hit which nodes, when and for how long, drawn from a seed. Pure: the
 * same seed, node count, duration and options give the same schedule, so a failing run replays exactly
 * (the cluster's own timing still varies; the faults do not).
 *
 * Nodes are indices 0…N-1 (named n1…nN by the harness). A target of 'leader' or 'busiest' is resolved
 * when the fault fires (the node most agents name as leader then; the node running the most task
 * processes), falling back to `fallback` when there is none.
 */
import { seededRandom, type Random } from '../../src/shared/random.ts';

export const faultKinds = [
  'crash',
  'pause',
  'isolate',
  'split',
  'one-way',
  'bridge',
  'loss',
  'disk-full',
  'restart-all',
] as const;
export type FaultKind = (typeof faultKinds)[number];

export type NodeTarget =
  | { readonly node: number }
  | { readonly leader: true; readonly fallback: number }
  /** The node running the most task processes when the fault fires: where a fault hurts most. */
  | { readonly busiest: true; readonly fallback: number };

export type Fault =
  /** SIGKILL the agent, start it again after the fault's duration. `die`: its tasks die too (the machine crashed). */
  | { readonly kind: 'crash'; readonly target: NodeTarget; readonly tasks: 'die' | 'survive' }
  /** SIGSTOP the agent (its tasks keep running), SIGCONT after the duration. */
  | { readonly kind: 'pause'; readonly target: NodeTarget }
  /** Cut one node off from every other, both ways. */
  | { readonly kind: 'isolate'; readonly target: NodeTarget }
  /** Cut a minority off from the majority, both ways. */
  | { readonly kind: 'split'; readonly minority: readonly number[] }
  /** Drop packets from `from` to `to` only (TCP then fails both ways, but the cut is the kernel's, one-way). */
  | { readonly kind: 'one-way'; readonly from: readonly number[]; readonly to: readonly number[] }
  /** Two sides that cannot see each other, and a bridge node that sees both. */
  | {
      readonly kind: 'bridge';
      readonly left: readonly number[];
      readonly right: readonly number[];
      readonly bridge: number;
    }
  /** Drop a share of the packets on every link between agents. */
  | { readonly kind: 'loss'; readonly probability: number }
  /** Fill the node's data dir (a size-capped tmpfs) until writes fail with ENOSPC. */
  | { readonly kind: 'disk-full'; readonly target: NodeTarget }
  /** SIGKILL every agent (tasks keep running) and start them all again after the duration. */
  | { readonly kind: 'restart-all' };

export interface ScheduledFault {
  readonly id: number;
  /** From the start of the fault phase. */
  readonly atMs: number;
  readonly durationMs: number;
  readonly fault: Fault;
}

export interface Schedule {
  readonly seed: number;
  readonly nodes: number;
  /** Length of the fault phase; every fault heals before it ends. */
  readonly durationMs: number;
  readonly faults: readonly ScheduledFault[];
}

export interface ScheduleOptions {
  readonly kinds: readonly FaultKind[];
  /** Quiet time before the first fault, so the cluster forms and tasks start. */
  readonly warmUpMs: number;
  readonly faultMsMin: number;
  readonly faultMsMax: number;
  readonly quietMsMin: number;
  readonly quietMsMax: number;
  /** Share of node-targeted faults aimed at whichever node leads when the fault fires. */
  readonly leaderShare: number;
  /** Share aimed at whichever node runs the most tasks then. */
  readonly busiestShare: number;
}

export const defaultScheduleOptions: ScheduleOptions = {
  kinds: faultKinds,
  warmUpMs: 8_000,
  faultMsMin: 4_000,
  faultMsMax: 20_000,
  quietMsMin: 3_000,
  quietMsMax: 10_000,
  leaderShare: 0.3,
  busiestShare: 0.3,
};

/** How often each kind is drawn, relative to the others. Crashes and partitions are what racks see most. */
const kindWeights: Record<FaultKind, number> = {
  crash: 4,
  pause: 2,
  isolate: 3,
  split: 2,
  'one-way': 2,
  bridge: 1,
  loss: 2,
  'disk-full': 1,
  'restart-all': 1,
};

/** Which kinds make sense for N nodes: a bridge needs two sides and a third node. */
export function kindsFor(nodes: number, kinds: readonly FaultKind[]): FaultKind[] {
  return kinds.filter((kind) => {
    if (nodes < 2)
      return kind === 'crash' || kind === 'pause' || kind === 'disk-full' || kind === 'restart-all';
    if (kind === 'bridge') return nodes >= 3;
    return true;
  });
}

export function generateSchedule(
  seed: number,
  nodes: number,
  durationMs: number,
  options: ScheduleOptions = defaultScheduleOptions,
): Schedule {
  if (!Number.isInteger(nodes) || nodes < 1)
    throw new Error(`a schedule needs at least one node, got ${nodes}`);
  if (options.faultMsMin <= 0 || options.faultMsMax < options.faultMsMin)
    throw new Error('fault durations must be positive, min ≤ max');
  if (options.quietMsMin < 0 || options.quietMsMax < options.quietMsMin)
    throw new Error('quiet periods must be ≥ 0, min ≤ max');
  const random = seededRandom(seed);
  const kinds = kindsFor(nodes, options.kinds);
  const faults: ScheduledFault[] = [];
  let atMs = options.warmUpMs;
  while (kinds.length > 0) {
    const kind = pickWeighted(random, kinds);
    const lengthMs = between(random, options.faultMsMin, options.faultMsMax);
    // Every fault heals inside the phase, so the run's end is quiet and convergence can be judged.
    if (atMs + lengthMs > durationMs) break;
    faults.push({
      id: faults.length + 1,
      atMs,
      durationMs: lengthMs,
      fault: drawFault(random, kind, nodes, options),
    });
    atMs += lengthMs + between(random, options.quietMsMin, options.quietMsMax);
  }
  return { seed, nodes, durationMs, faults };
}

function between(random: Random, min: number, max: number): number {
  return Math.round(min + random.next() * (max - min));
}

function pickWeighted(random: Random, kinds: readonly FaultKind[]): FaultKind {
  const total = kinds.reduce((sum, kind) => sum + kindWeights[kind], 0);
  let roll = random.next() * total;
  for (const kind of kinds) {
    roll -= kindWeights[kind];
    if (roll < 0) return kind;
  }
  const last = kinds[kinds.length - 1];
  if (last === undefined) throw new Error('no fault kinds to draw from');
  return last;
}

/** A random permutation of 0…n-1 (Fisher–Yates). */
function shuffled(random: Random, n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = random.int(0, i + 1);
    const a = order[i];
    const b = order[j];
    if (a === undefined || b === undefined) continue;
    order[i] = b;
    order[j] = a;
  }
  return order;
}

function target(random: Random, nodes: number, options: ScheduleOptions): NodeTarget {
  const node = random.int(0, nodes);
  const roll = random.next();
  if (roll < options.leaderShare) return { leader: true, fallback: node };
  if (roll < options.leaderShare + options.busiestShare) return { busiest: true, fallback: node };
  return { node };
}

function drawFault(random: Random, kind: FaultKind, nodes: number, options: ScheduleOptions): Fault {
  switch (kind) {
    case 'crash':
      return { kind, target: target(random, nodes, options), tasks: random.next() < 0.6 ? 'die' : 'survive' };
    case 'pause':
    case 'isolate':
    case 'disk-full':
      return { kind, target: target(random, nodes, options) };
    case 'split': {
      // A strict minority: 1 … ⌈N/2⌉-1 nodes (at least one, so two nodes split 1|1).
      const size = Math.max(1, random.int(1, Math.ceil(nodes / 2)));
      return { kind, minority: sorted(shuffled(random, nodes).slice(0, size)) };
    }
    case 'one-way': {
      const order = shuffled(random, nodes);
      const size = Math.max(1, random.int(1, Math.ceil(nodes / 2)));
      return { kind, from: sorted(order.slice(0, size)), to: sorted(order.slice(size)) };
    }
    case 'bridge': {
      const order = shuffled(random, nodes);
      const [bridge = 0, ...rest] = order;
      const leftSize = Math.max(1, Math.floor(rest.length / 2));
      return { kind, bridge, left: sorted(rest.slice(0, leftSize)), right: sorted(rest.slice(leftSize)) };
    }
    case 'loss':
      return { kind, probability: Math.round((0.05 + random.next() * 0.25) * 100) / 100 };
    case 'restart-all':
      return { kind };
  }
}

function sorted(values: number[]): number[] {
  return [...values].sort((a, b) => a - b);
}

/** One line per fault, for the run's report and for a human reading a replay. */
export function describeFault(fault: Fault, name: (node: number) => string): string {
  const names = (nodes: readonly number[]): string => nodes.map(name).join(',');
  const who = (t: NodeTarget): string =>
    'node' in t
      ? name(t.node)
      : 'leader' in t
        ? `the leader (else ${name(t.fallback)})`
        : `the busiest node (else ${name(t.fallback)})`;
  switch (fault.kind) {
    case 'crash':
      return `SIGKILL ${who(fault.target)}${fault.tasks === 'die' ? ' and its tasks (machine crash)' : ' (its tasks keep running)'}, then restart it`;
    case 'pause':
      return `SIGSTOP ${who(fault.target)}, then SIGCONT`;
    case 'isolate':
      return `isolate ${who(fault.target)} from every other node`;
    case 'split':
      return `split ${names(fault.minority)} from the rest`;
    case 'one-way':
      return `drop packets from ${names(fault.from)} to ${names(fault.to)} (one way)`;
    case 'bridge':
      return `partition ${names(fault.left)} | ${names(fault.right)}, bridged by ${name(fault.bridge)}`;
    case 'loss':
      return `drop ${Math.round(fault.probability * 100)} % of packets on every link`;
    case 'disk-full':
      return `fill the data disk of ${who(fault.target)}`;
    case 'restart-all':
      return 'SIGKILL every agent (tasks keep running), then restart them all';
  }
}

/** Checks a schedule read from a file: the harness replays it as given. */
export function parseSchedule(text: string): Schedule {
  const value = JSON.parse(text) as Partial<Schedule>;
  if (
    typeof value.seed !== 'number' ||
    typeof value.nodes !== 'number' ||
    typeof value.durationMs !== 'number' ||
    !Array.isArray(value.faults)
  ) {
    throw new Error(
      'a schedule file holds {seed, nodes, durationMs, faults: [{id, atMs, durationMs, fault}]}',
    );
  }
  const faults: readonly Partial<ScheduledFault>[] = value.faults;
  for (const entry of faults) {
    const kind: unknown = entry.fault?.kind;
    if (!faultKinds.some((k) => k === kind)) throw new Error(`unknown fault kind ${String(kind)}`);
    if (
      typeof entry.atMs !== 'number' ||
      typeof entry.durationMs !== 'number' ||
      entry.atMs < 0 ||
      entry.durationMs <= 0
    )
      throw new Error(`fault ${String(entry.id)} has a bad time`);
  }
  return value as Schedule;
}
