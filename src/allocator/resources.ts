/**
 * Resources as dense vectors: [cpuMillis, memoryBytes, diskBytes, device kinds in name order]. Vectors let
 * the node index compare every dimension in one loop; the name order of device kinds keeps sums (and so
 * tie-breaks) the same whatever order the kinds were first seen in.
 */
import { assert } from '../shared/assert.ts';
import { gibibyte, mebibyte } from '../shared/units.ts';
import type { Resources } from './types.ts';
import { deviceKindsMax } from '../shared/devices.ts';

/** Distinct device kinds the allocator tracks (a limit so vectors stay short); see shared/devices.ts. */
export { deviceKindsMax };

export const cpuDimension = 0;
export const memoryDimension = 1;
export const diskDimension = 2;
const fixedDimensions = 3;

export type Vector = Float64Array;

export class ResourceLayout {
  /** Device kinds, sorted by name. */
  readonly kinds: readonly string[];
  readonly size: number;
  private readonly kindIndex: ReadonlyMap<string, number>;

  constructor(kinds: readonly string[] = []) {
    this.kinds = [...new Set(kinds)].sort();
    assert(this.kinds.length <= deviceKindsMax, `at most ${deviceKindsMax} device kinds`);
    this.size = fixedDimensions + this.kinds.length;
    this.kindIndex = new Map(this.kinds.map((kind, i) => [kind, fixedDimensions + i]));
  }

  /** Device kinds named in `resources` that this layout lacks. */
  missingKinds(resources: Partial<Resources> | undefined): string[] {
    const missing: string[] = [];
    for (const kind of Object.keys(resources?.devices ?? {}))
      if (!this.kindIndex.has(kind)) missing.push(kind);
    return missing;
  }

  encode(resources: Resources): Vector {
    const vector = new Float64Array(this.size);
    vector[cpuDimension] = resources.cpuMillis;
    vector[memoryDimension] = resources.memoryBytes;
    vector[diskDimension] = resources.diskBytes ?? 0;
    for (const [kind, count] of Object.entries(resources.devices ?? {})) {
      const index = this.kindIndex.get(kind);
      assert(index !== undefined, `device kind ${kind} is in the layout`);
      vector[index] = count;
    }
    for (const value of vector) assert(Number.isFinite(value), 'resource amounts are finite');
    return vector;
  }

  /** A limit: absent dimensions (and device kinds) are unlimited. */
  encodeLimit(limit: Partial<Resources> | undefined): Vector {
    const vector = new Float64Array(this.size).fill(Infinity);
    if (!limit) return vector;
    if (limit.cpuMillis !== undefined) vector[cpuDimension] = limit.cpuMillis;
    if (limit.memoryBytes !== undefined) vector[memoryDimension] = limit.memoryBytes;
    if (limit.diskBytes !== undefined) vector[diskDimension] = limit.diskBytes;
    for (const [kind, count] of Object.entries(limit.devices ?? {})) {
      const index = this.kindIndex.get(kind);
      if (index !== undefined) vector[index] = count;
    }
    return vector;
  }

  /** Copies `vector` (laid out by `from`) into this layout; new dimensions get `fill`. */
  remap(vector: Vector, from: ResourceLayout, fill: number): Vector {
    const out = new Float64Array(this.size).fill(fill);
    for (let d = 0; d < fixedDimensions; d++) out[d] = vector[d] ?? 0;
    from.kinds.forEach((kind, i) => {
      const index = this.kindIndex.get(kind);
      if (index !== undefined) out[index] = vector[fixedDimensions + i] ?? fill;
    });
    return out;
  }

  dimensionName(d: number): string {
    if (d === cpuDimension) return 'CPU';
    if (d === memoryDimension) return 'memory';
    if (d === diskDimension) return 'disk';
    return this.kinds[d - fixedDimensions] ?? `dimension ${d}`;
  }

  /** A human amount of one dimension: "1.5 CPU", "512 MiB", "2 gpu". */
  formatAmount(d: number, amount: number): string {
    if (d === cpuDimension) return `${amount / 1000} CPU`;
    if (d === memoryDimension || d === diskDimension) return formatBytes(amount);
    return `${amount} ${this.dimensionName(d)}`;
  }
}

/** `a` fits in `room` on every dimension. */
export function fits(room: Vector, a: Vector): boolean {
  for (let d = 0; d < a.length; d++) if ((room[d] ?? 0) < (a[d] ?? 0)) return false;
  return true;
}

/** `room` + `extra` fits `a`, without allocating. */
export function fitsWith(room: Vector, extra: Vector, a: Vector): boolean {
  for (let d = 0; d < a.length; d++) if ((room[d] ?? 0) + (extra[d] ?? 0) < (a[d] ?? 0)) return false;
  return true;
}

export function addInto(target: Vector, a: Vector, sign: 1 | -1): void {
  for (let d = 0; d < a.length; d++) target[d] = (target[d] ?? 0) + sign * (a[d] ?? 0);
}

/** Equal length and equal on every dimension. */
export function sameVector(a: Vector, b: Vector): boolean {
  if (a.length !== b.length) return false;
  for (let d = 0; d < a.length; d++) if (a[d] !== b[d]) return false;
  return true;
}

export function formatBytes(bytes: number): string {
  if (bytes >= gibibyte && bytes % gibibyte === 0) return `${bytes / gibibyte} GiB`;
  return `${Math.ceil(bytes / mebibyte)} MiB`;
}

/** "1 CPU and 100 MiB", then disk and devices when asked for: how reasons name a request. */
export function formatRequest(request: Resources): string {
  let text = `${request.cpuMillis / 1000} CPU and ${formatBytes(request.memoryBytes)}`;
  if (request.diskBytes !== undefined && request.diskBytes > 0)
    text += `, ${formatBytes(request.diskBytes)} disk`;
  for (const kind of Object.keys(request.devices ?? {}).sort()) {
    const count = request.devices?.[kind] ?? 0;
    if (count > 0) text += `, ${count} ${kind}`;
  }
  return text;
}
