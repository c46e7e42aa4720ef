/**
 * Resources as offers and launches count them: the allocator's `Resources` (CPU, memory, disk, devices) and
 * host ports as ranges. `Amounts` is the normal form (every field present, no zero device counts, ports
 * sorted, disjoint and merged) that the offer book adds and subtracts. Pure arithmetic: never mutates an
 * argument. In: Resources, port lists. Out: new amounts, comparisons, and the shortfall named for a refusal.
 */
import { formatRequest, type Resources } from '../allocator/index.ts';
import { assert } from '../shared/assert.ts';

/** Host ports `begin`–`end`, both included. */
export interface PortRange {
  readonly begin: number;
  readonly end: number;
}

/** What an offer holds: resources and, when the node offers them, host ports. */
export interface OfferResources extends Resources {
  /** Sorted, disjoint ranges. Absent: none. */
  readonly ports?: readonly PortRange[];
}

/** What one task asks for: resources and, optionally, particular host ports of the offer's node. */
export interface TaskResources extends Resources {
  /** Distinct ports 1–65535. Absent: none. */
  readonly ports?: readonly number[];
}

export interface Amounts {
  readonly cpuMillis: number;
  readonly memoryBytes: number;
  readonly diskBytes: number;
  /** Kinds with a positive count only. */
  readonly devices: Readonly<Record<string, number>>;
  readonly ports: readonly PortRange[];
}

export const portMin = 1;
export const portMax = 65_535;

export const noAmounts: Amounts = { cpuMillis: 0, memoryBytes: 0, diskBytes: 0, devices: {}, ports: [] };

/** Amounts from resources whose numbers are already known to be finite and non-negative. */
export function amountsOf(resources: OfferResources): Amounts {
  const devices: Record<string, number> = {};
  if (resources.devices)
    for (const [kind, count] of Object.entries(resources.devices)) if (count > 0) devices[kind] = count;
  return {
    cpuMillis: resources.cpuMillis,
    memoryBytes: resources.memoryBytes,
    diskBytes: resources.diskBytes ?? 0,
    devices,
    ports: normalizeRanges(resources.ports ?? []),
  };
}

/** A task's ask as amounts: its ports become one-port ranges. */
export function amountsOfTask(resources: TaskResources): Amounts {
  return amountsOf({
    ...resources,
    ports: (resources.ports ?? []).map((port) => ({ begin: port, end: port })),
  });
}

/** The public form: optional fields present only when non-empty. */
export function toOfferResources(amounts: Amounts): OfferResources {
  return {
    cpuMillis: amounts.cpuMillis,
    memoryBytes: amounts.memoryBytes,
    ...(amounts.diskBytes > 0 ? { diskBytes: amounts.diskBytes } : {}),
    ...(Object.keys(amounts.devices).length > 0 ? { devices: { ...amounts.devices } } : {}),
    ...(amounts.ports.length > 0 ? { ports: amounts.ports.map((range) => ({ ...range })) } : {}),
  };
}

export function plus(a: Amounts, b: Amounts): Amounts {
  const devices: Record<string, number> = { ...a.devices };
  for (const kind in b.devices) devices[kind] = (devices[kind] ?? 0) + (b.devices[kind] ?? 0);
  return {
    cpuMillis: a.cpuMillis + b.cpuMillis,
    memoryBytes: a.memoryBytes + b.memoryBytes,
    diskBytes: a.diskBytes + b.diskBytes,
    devices,
    ports: a.ports.length + b.ports.length === 0 ? [] : normalizeRanges([...a.ports, ...b.ports]),
  };
}

/** `a` − `b`, each dimension at least 0; ports in `a` and not in `b`. */
export function minus(a: Amounts, b: Amounts): Amounts {
  const devices: Record<string, number> = {};
  for (const kind in a.devices) {
    const left = (a.devices[kind] ?? 0) - (b.devices[kind] ?? 0);
    if (left > 0) devices[kind] = left;
  }
  return {
    cpuMillis: Math.max(0, a.cpuMillis - b.cpuMillis),
    memoryBytes: Math.max(0, a.memoryBytes - b.memoryBytes),
    diskBytes: Math.max(0, a.diskBytes - b.diskBytes),
    devices,
    ports: subtractRanges(a.ports, b.ports),
  };
}

/**
 * `need` fits in `room` on every dimension, every port of `need` included: `shortOf(need, room) === null`
 * without building its answer (an offer round asks this for every node and contender; it allocates nothing).
 */
export function fitsIn(need: Amounts, room: Amounts): boolean {
  if (
    need.cpuMillis > room.cpuMillis ||
    need.memoryBytes > room.memoryBytes ||
    need.diskBytes > room.diskBytes
  )
    return false;
  for (const kind in need.devices) if ((need.devices[kind] ?? 0) > (room.devices[kind] ?? 0)) return false;
  return need.ports.length === 0 || coversRanges(room.ports, need.ports);
}

/** The first dimension where `need` exceeds `room` ("CPU", "memory", "disk", a device kind, "port 8080"), or null. */
export function shortOf(need: Amounts, room: Amounts): string | null {
  if (need.cpuMillis > room.cpuMillis) return 'CPU';
  if (need.memoryBytes > room.memoryBytes) return 'memory';
  if (need.diskBytes > room.diskBytes) return 'disk';
  for (const kind of Object.keys(need.devices).sort())
    if ((need.devices[kind] ?? 0) > (room.devices[kind] ?? 0)) return kind;
  const missing = subtractRanges(need.ports, room.ports)[0];
  if (missing) return `port ${missing.begin}`;
  return null;
}

/**
 * `room` cut to what a limit leaves once `used` is counted: a namespace's quota. Absent dimensions and device
 * kinds of the limit are unlimited; ports are never limited.
 */
export function withinLimit(room: Amounts, limit: Partial<Resources> | undefined, used: Amounts): Amounts {
  if (!limit) return room;
  const cut = (amount: number, max: number | undefined, held: number): number =>
    max === undefined ? amount : Math.max(0, Math.min(amount, max - held));
  const devices: Record<string, number> = {};
  for (const [kind, count] of Object.entries(room.devices)) {
    const left = cut(count, limit.devices?.[kind], used.devices[kind] ?? 0);
    if (left > 0) devices[kind] = left;
  }
  return {
    cpuMillis: cut(room.cpuMillis, limit.cpuMillis, used.cpuMillis),
    memoryBytes: cut(room.memoryBytes, limit.memoryBytes, used.memoryBytes),
    diskBytes: cut(room.diskBytes, limit.diskBytes, used.diskBytes),
    devices,
    ports: room.ports,
  };
}

/** The allocator's view of amounts (for dominant shares and messages); ports do not count there. */
export function toResources(amounts: Amounts): Resources {
  return {
    cpuMillis: amounts.cpuMillis,
    memoryBytes: amounts.memoryBytes,
    diskBytes: amounts.diskBytes,
    devices: amounts.devices,
  };
}

/** "2 CPU and 4 GiB, 1 gpu" (the allocator's wording), then the port count when there are ports. */
export function formatAmounts(amounts: Amounts): string {
  const ports = portCount(amounts.ports);
  const text = formatRequest(toResources(amounts));
  return ports === 0 ? text : `${text}, ${ports} port${ports === 1 ? '' : 's'}`;
}

// ---- port ranges --------------------------------------------------------------------------------------

/** Sorted, merged (overlapping and adjacent ranges joined) ranges; each range asserted valid. */
export function normalizeRanges(ranges: readonly PortRange[]): PortRange[] {
  if (ranges.length === 0) return [];
  for (const range of ranges)
    assert(
      Number.isInteger(range.begin) &&
        Number.isInteger(range.end) &&
        range.begin >= portMin &&
        range.end <= portMax &&
        range.begin <= range.end,
      `port ranges lie within ${portMin}–${portMax}, begin ≤ end`,
    );
  const sorted = [...ranges].sort((a, b) => a.begin - b.begin || a.end - b.end);
  const merged: PortRange[] = [];
  for (const range of sorted) {
    const last = merged[merged.length - 1];
    if (last && range.begin <= last.end + 1)
      merged[merged.length - 1] = { begin: last.begin, end: Math.max(last.end, range.end) };
    else merged.push({ begin: range.begin, end: range.end });
  }
  return merged;
}

/** Ports in `a` and not in `b`; both normalized. */
export function subtractRanges(a: readonly PortRange[], b: readonly PortRange[]): PortRange[] {
  const out: PortRange[] = [];
  let j = 0;
  for (const range of a) {
    let begin = range.begin;
    while (j < b.length && (b[j]?.end ?? 0) < begin) j++;
    let k = j;
    while (begin <= range.end) {
      const cut = b[k];
      if (!cut || cut.begin > range.end) {
        out.push({ begin, end: range.end });
        break;
      }
      if (cut.begin > begin) out.push({ begin, end: cut.begin - 1 });
      begin = Math.max(begin, cut.end + 1);
      k++;
    }
  }
  return out;
}

/** Every port of `b` is in `a` (`subtractRanges(b, a)` is empty); both normalized. Allocates nothing. */
export function coversRanges(a: readonly PortRange[], b: readonly PortRange[]): boolean {
  let j = 0;
  for (const range of b) {
    let begin = range.begin;
    while (j < a.length && (a[j]?.end ?? 0) < begin) j++;
    for (let k = j; begin <= range.end; k++) {
      const cover = a[k];
      if (!cover || cover.begin > begin) return false;
      begin = Math.max(begin, cover.end + 1);
    }
  }
  return true;
}

export function portCount(ranges: readonly PortRange[]): number {
  let count = 0;
  for (const range of ranges) count += range.end - range.begin + 1;
  return count;
}
