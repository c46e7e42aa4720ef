/**
 * The allocator's limits and defaults, each in one place: the cluster's task schema and the allocator's
 * own checks read the same numbers (cluster/ imports them through index.ts; nothing here imports cluster/).
 * In: nothing. Out: the limits, the defaults, and the two input checks that apply them to a task
 * (`assertPriority`, `portList`); a failed check is a caller's bug, since the schema enforces the same
 * limits before a task reaches the allocator.
 */
import { assert } from '../shared/assert.ts';

/** Lowest and highest task priority; higher runs first and may preempt lower. */
export const priorityMin = 0;
export const priorityMax = 100;
/** A task may preempt only tasks at least this much lower in priority, unless the caller says otherwise. */
export const preemptionPriorityGapDefault = 10;
/** Nodes held back for blocked tasks in one plan, at most; one per blocked shape. */
export const reservationsMaxDefault = 1000;
/** Soft affinities per task that count; more are ignored (each doubles the node cells searched). */
export const affinitiesMax = 4;
/** Distinct values of a spread label that count; with more, spread is ignored (say, hostnames). */
export const spreadValuesMax = 64;
/** Host ports one task may ask for. */
export const portsPerTaskMax = 64;
/** The highest host port; a task's ports are 1 to this (0 is not a port one can reserve). */
export const portMax = 65_535;
/** The namespace of a task that names none. */
export const defaultNamespace = 'default';

/** Asserts a task's priority is a whole number from `priorityMin` to `priorityMax`. */
export function assertPriority(priority: number): void {
  assert(
    Number.isInteger(priority) && priority >= priorityMin && priority <= priorityMax,
    `priorities are integers ${priorityMin}–${priorityMax}`,
  );
}

const portRangeText = `ports are 1–${portMax}`;

/** A task's ports as a sorted list without repeats, asserted to be at most `portsPerTaskMax` valid ports. */
export function portList(ports: Readonly<Record<string, number>> | undefined): number[] {
  const list = [...new Set(Object.values(ports ?? {}))].sort((a, b) => a - b);
  assert(list.length <= portsPerTaskMax, `a task asks for at most ${portsPerTaskMax} ports`);
  for (const port of list) assert(Number.isInteger(port) && port > 0 && port <= portMax, portRangeText);
  return list;
}
