/** How quantities read on the dashboard: CPU in cores, memory in binary units, times as ages. */
import type { TaskView } from '../api/index.ts';

export function cpu(millis: number): string {
  if (millis % 1000 === 0) return `${millis / 1000} CPU`;
  return millis < 1000 ? `${millis}m CPU` : `${(millis / 1000).toFixed(2)} CPU`;
}

export function bytes(count: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const digits = value >= 100 || Number.isInteger(value) ? 0 : 1;
  return `${value.toFixed(digits)} ${units[unit] ?? 'B'}`;
}

/** "12 s ago", "3 min ago", … from an ISO 8601 time. */
export function age(iso: string, now = Date.now()): string {
  const ms = now - Date.parse(iso);
  if (!Number.isFinite(ms)) return iso;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

/** The local time of an ISO 8601 time, with seconds. */
export function clock(iso: string): string {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleTimeString(undefined, { hour12: false });
}

export const taskStates = [
  'pending',
  'assigned',
  'starting',
  'running',
  'finished',
  'failed',
  'killed',
  'lost',
] as const satisfies readonly TaskView['state'][];

const liveStates: ReadonlySet<string> = new Set(['pending', 'assigned', 'starting', 'running']);

/** A task that has not ended (pending ones included). */
export function isLive(task: Pick<TaskView, 'state'>): boolean {
  return liveStates.has(task.state);
}

/** A task that holds resources on a node: live and placed. */
export function holdsNode(task: Pick<TaskView, 'state' | 'nodeId'>): boolean {
  return task.state !== 'pending' && task.nodeId !== null && liveStates.has(task.state);
}

export function shortId(id: string): string {
  return id.length > 12 ? id.slice(0, 12) : id;
}
