/**
 * The queue as the allocator takes it, for people (`GET /v1/queue`, the dashboard's Queue page): strict
 * priority, high first; within a priority, namespaces take turns by weighted Dominant Resource Fairness —
 * the namespace whose weighted dominant share is lowest goes next, ties by name — each turn counting the
 * task it took as placed; within a namespace, FIFO by submission. The allocator applies the same policy as
 * it places (allocator.ts); it may still take a later task first when an earlier one cannot fit anywhere
 * (backfill) or its namespace is at its quota, and the reasons say why those wait. Pure.
 */
import { compareIds } from './order.ts';
import type { Resources } from './types.ts';

export interface QueuedTask {
  readonly id: string;
  readonly priority: number;
  readonly submitIndex: number;
  readonly namespace: string;
  readonly request: Resources;
}

export interface QueueNamespace {
  /** Its share weight (> 0; default 1). */
  readonly weight: number;
  /** What its placed tasks hold now. */
  readonly usage: Resources;
}

/** The ids of `pending` in the order the allocator's policy takes them. */
export function placementOrder(
  pending: readonly QueuedTask[],
  namespaces: ReadonlyMap<string, QueueNamespace>,
  capacity: Resources,
): string[] {
  const usage = new Map<string, Resources>();
  const share = (namespace: string): number => {
    const used = usage.get(namespace) ?? namespaces.get(namespace)?.usage ?? emptyResources;
    const weight = namespaces.get(namespace)?.weight ?? 1;
    return dominantShare(used, capacity) / weight;
  };
  const byPriority = new Map<number, Map<string, QueuedTask[]>>();
  for (const task of pending) {
    const level = byPriority.get(task.priority) ?? new Map<string, QueuedTask[]>();
    byPriority.set(task.priority, level);
    const queue = level.get(task.namespace) ?? [];
    level.set(task.namespace, queue);
    queue.push(task);
  }
  const order: string[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => b - a)) {
    const level = byPriority.get(priority) ?? new Map<string, QueuedTask[]>();
    const queues = [...level.entries()]
      .sort(([a], [b]) => compareIds(a, b))
      .map(([namespace, tasks]) => ({
        namespace,
        tasks: tasks.sort((a, b) => a.submitIndex - b.submitIndex || compareIds(a.id, b.id)),
        next: 0,
      }));
    for (;;) {
      let best: (typeof queues)[number] | null = null;
      let bestShare = Infinity;
      for (const queue of queues) {
        if (queue.next >= queue.tasks.length) continue;
        const candidate = share(queue.namespace);
        if (candidate < bestShare) {
          best = queue;
          bestShare = candidate;
        }
      }
      if (best === null) break;
      const task = best.tasks[best.next++];
      if (!task) break;
      order.push(task.id);
      usage.set(
        best.namespace,
        add(
          usage.get(best.namespace) ?? namespaces.get(best.namespace)?.usage ?? emptyResources,
          task.request,
        ),
      );
    }
  }
  return order;
}

const emptyResources: Resources = { cpuMillis: 0, memoryBytes: 0 };

/** The largest fraction of the cluster's capacity the usage takes, over every resource the cluster has. */
export function dominantShare(usage: Resources, capacity: Resources): number {
  let share = 0;
  const dimension = (used: number, total: number): void => {
    if (total > 0) share = Math.max(share, used / total);
  };
  dimension(usage.cpuMillis, capacity.cpuMillis);
  dimension(usage.memoryBytes, capacity.memoryBytes);
  dimension(usage.diskBytes ?? 0, capacity.diskBytes ?? 0);
  for (const [kind, total] of Object.entries(capacity.devices ?? {}))
    dimension(usage.devices?.[kind] ?? 0, total);
  return share;
}

function add(a: Resources, b: Resources): Resources {
  const devices: Record<string, number> = { ...a.devices };
  for (const [kind, count] of Object.entries(b.devices ?? {})) devices[kind] = (devices[kind] ?? 0) + count;
  return {
    cpuMillis: a.cpuMillis + b.cpuMillis,
    memoryBytes: a.memoryBytes + b.memoryBytes,
    diskBytes: (a.diskBytes ?? 0) + (b.diskBytes ?? 0),
    devices,
  };
}
