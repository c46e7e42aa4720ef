/**
 * The allocator: a pure function from a snapshot of the cluster to a plan. No I/O, no clock; the same
 * input always gives the same plan. The leader runs it and commits the plan through the log, where each
 * placement is checked again against the state it lands on.
 *
 * Policy: pending tasks are considered strictly by priority (high first), then by submission order.
 * Each goes to the feasible node it fills best (bin-packing). A task that fits on some node's capacity
 * but finds no room reserves the node closest to fitting it, so lower-priority tasks cannot take the room
 * it is waiting for; they may still use other nodes (backfill).
 */
export interface Resources {
  readonly cpuMillis: number;
  readonly memoryBytes: number;
}

export interface AllocatorNode {
  readonly id: string;
  readonly capacity: Resources;
  readonly free: Resources;
  readonly labels: Readonly<Record<string, string>>;
  readonly drivers: readonly string[];
}

export interface AllocatorTask {
  readonly id: string;
  readonly priority: number;
  readonly submitIndex: number;
  readonly driver: string;
  readonly request: Resources;
  /** Labels the node must carry, key = value. */
  readonly constraints: Readonly<Record<string, string>>;
}

export interface Placement {
  readonly taskId: string;
  readonly nodeId: string;
}

export interface Waiting {
  readonly taskId: string;
  readonly reason: string;
}

export interface Plan {
  readonly placements: Placement[];
  readonly waiting: Waiting[];
}

export interface AllocatorInput {
  readonly nodes: readonly AllocatorNode[];
  readonly pending: readonly AllocatorTask[];
  /** Stop after this many placements so one plan stays a bounded log entry. */
  readonly placementsMax: number;
}

const mebibyte = 1024 * 1024;

export function formatRequest(request: Resources): string {
  return `${request.cpuMillis / 1000} CPU and ${Math.ceil(request.memoryBytes / mebibyte)} MiB`;
}

export function comparePending(a: AllocatorTask, b: AllocatorTask): number {
  return b.priority - a.priority || a.submitIndex - b.submitIndex || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

export function allocate(input: AllocatorInput): Plan {
  const nodes = [...input.nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const free = new Map(nodes.map((node) => [node.id, { ...node.free }]));
  const reserved = new Set<string>();
  const placements: Placement[] = [];
  const waiting: Waiting[] = [];
  const pending = [...input.pending].sort(comparePending);

  for (const task of pending) {
    if (placements.length >= input.placementsMax) {
      waiting.push({ taskId: task.id, reason: 'waiting for the next allocation round' });
      continue;
    }
    const eligible = nodes.filter(
      (node) => node.drivers.includes(task.driver) && matches(node.labels, task.constraints),
    );
    if (eligible.length === 0) {
      waiting.push({ taskId: task.id, reason: describeIneligible(nodes, task) });
      continue;
    }
    const bigEnough = eligible.filter((node) => fits(node.capacity, task.request));
    if (bigEnough.length === 0) {
      waiting.push({
        taskId: task.id,
        reason: `no node has ${formatRequest(task.request)} in total (${eligible.length} eligible)`,
      });
      continue;
    }
    let best: AllocatorNode | null = null;
    let bestScore = Infinity;
    for (const node of bigEnough) {
      const room = free.get(node.id);
      if (!room || reserved.has(node.id) || !fits(room, task.request)) continue;
      // Best fit: the node left with the least spare capacity, as a share of its size, packs tightest.
      const score =
        (room.cpuMillis - task.request.cpuMillis) / node.capacity.cpuMillis +
        (room.memoryBytes - task.request.memoryBytes) / node.capacity.memoryBytes;
      if (score < bestScore) {
        best = node;
        bestScore = score;
      }
    }
    if (best) {
      const room = free.get(best.id);
      if (room) {
        room.cpuMillis -= task.request.cpuMillis;
        room.memoryBytes -= task.request.memoryBytes;
      }
      placements.push({ taskId: task.id, nodeId: best.id });
      continue;
    }
    // No room now: hold back the node nearest to fitting it from lower-priority work.
    let nearest: AllocatorNode | null = null;
    let nearestShortfall = Infinity;
    for (const node of bigEnough) {
      const room = free.get(node.id);
      if (!room || reserved.has(node.id)) continue;
      const shortfall =
        Math.max(0, task.request.cpuMillis - room.cpuMillis) / node.capacity.cpuMillis +
        Math.max(0, task.request.memoryBytes - room.memoryBytes) / node.capacity.memoryBytes;
      if (shortfall < nearestShortfall) {
        nearest = node;
        nearestShortfall = shortfall;
      }
    }
    if (nearest) reserved.add(nearest.id);
    waiting.push({
      taskId: task.id,
      reason: `no node has ${formatRequest(task.request)} free (${bigEnough.length} large enough, all busy)`,
    });
  }
  return { placements, waiting };
}

function fits(room: Resources, request: Resources): boolean {
  return room.cpuMillis >= request.cpuMillis && room.memoryBytes >= request.memoryBytes;
}

function matches(
  labels: Readonly<Record<string, string>>,
  constraints: Readonly<Record<string, string>>,
): boolean {
  for (const [key, value] of Object.entries(constraints)) if (labels[key] !== value) return false;
  return true;
}

function describeIneligible(nodes: readonly AllocatorNode[], task: AllocatorTask): string {
  if (nodes.length === 0) return 'no nodes are up';
  const withDriver = nodes.filter((node) => node.drivers.includes(task.driver));
  if (withDriver.length === 0) return `no node has a healthy ${task.driver} driver`;
  const failing = Object.entries(task.constraints)
    .map(
      ([key, value]) =>
        `${withDriver.filter((node) => node.labels[key] !== value).length} nodes fail ${key}=${value}`,
    )
    .join('; ');
  return `no node matches the constraints (${failing})`;
}
