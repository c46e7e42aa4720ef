/**
 * The disk limit of running tasks, after Mesos's posix/disk isolator: the agent measures each task
 * directory's usage every so often and stops a task whose usage is over what it asked for (its diskBytes),
 * as failed, with the reason "disk limit exceeded: …". Polling, not a filesystem quota: it works on any
 * filesystem, at the price of a task overshooting by what it writes in one interval.
 *
 * What counts: the blocks the task's files take (as du counts them), in its directory and its tmp/ (the
 * task's /tmp when isolated; an image task's own layer), and a container's writable layer. What does not: its stdout and stderr logs, capped and rotated by the driver,
 * and the driver's own runtime files.
 */
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { errorMessage, type Logger } from '../shared/index.ts';

/** How often each task directory is measured unless the agent says otherwise. */
export const diskCheckIntervalMsDefault = 5000;
/** Top-level names in a task directory that are the node's, not the task's. */
const notTheTasks = /^(?:\.shoal|stdout\.log(?:\.\d+)?|stderr\.log(?:\.\d+)?)$/;

/** The reason a task over its disk request is stopped with, or null while it is within it. */
export function diskLimitVerdict(usedBytes: number, limitBytes: number): string | null {
  if (limitBytes <= 0 || usedBytes <= limitBytes) return null;
  return `disk limit exceeded: ${formatMebibytes(usedBytes)} used of the ${formatMebibytes(limitBytes)} it asked for`;
}

function formatMebibytes(bytes: number): string {
  const mebibytes = bytes / (1024 * 1024);
  return `${mebibytes < 10 ? mebibytes.toFixed(1) : Math.round(mebibytes)} MiB`;
}

/**
 * The bytes the files under `dir` take on disk (allocated blocks, so a sparse file counts what it holds),
 * without following symbolic links, less the node's own files at the top. A file that goes away while it
 * is measured counts as nothing.
 */
export async function directoryUsageBytes(dir: string): Promise<number> {
  let total = 0;
  const pending: { path: string; top: boolean }[] = [{ path: dir, top: true }];
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    const entries = await readdir(next.path, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      if (next.top && notTheTasks.test(entry.name)) continue;
      const path = join(next.path, entry.name);
      const stats = await lstat(path).catch(() => null);
      if (stats === null) continue;
      total += stats.blocks * 512;
      if (stats.isDirectory()) pending.push({ path, top: false });
    }
  }
  return total;
}

export interface DiskWatch {
  readonly taskId: string;
  readonly attempt: number;
  /** Its task directory (measured less the node's own files), then where else its writes land. */
  readonly dir: string;
  /** Measured whole: a container's writable layer. */
  readonly otherDirs?: readonly string[];
  readonly limitBytes: number;
}

export interface DiskMonitorInit {
  readonly logger: Logger;
  readonly intervalMs?: number;
  /** Called once per watch, when the task's usage is first seen over its limit. */
  readonly onExceeded: (taskId: string, attempt: number, reason: string) => void;
  /** Default directoryUsageBytes. */
  readonly measure?: (dir: string) => Promise<number>;
}

/** Measures the watched task directories (and where else tasks write) one after another, every intervalMs. */
export class DiskMonitor {
  private readonly init: DiskMonitorInit;
  private readonly watches = new Map<string, DiskWatch>();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(init: DiskMonitorInit) {
    this.init = init;
  }

  watch(watch: DiskWatch): void {
    if (this.closed || watch.limitBytes <= 0) return;
    this.watches.set(watch.taskId, watch);
    this.timer ??= setTimeout(() => void this.round(), this.init.intervalMs ?? diskCheckIntervalMsDefault);
  }

  unwatch(taskId: string): void {
    this.watches.delete(taskId);
  }

  close(): void {
    this.closed = true;
    this.watches.clear();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }

  private async round(): Promise<void> {
    const measure = this.init.measure ?? directoryUsageBytes;
    // One directory at a time: a walk is I/O the task's own work competes with.
    for (const watch of [...this.watches.values()]) {
      if (this.closed || this.watches.get(watch.taskId) !== watch) continue;
      let usedBytes = 0;
      try {
        usedBytes = await measure(watch.dir);
        for (const dir of watch.otherDirs ?? []) usedBytes += await measure(dir);
      } catch (error) {
        this.init.logger.warn('cannot measure a task directory', {
          task: watch.taskId,
          error: errorMessage(error),
        });
        continue;
      }
      const reason = diskLimitVerdict(usedBytes, watch.limitBytes);
      if (reason === null || this.watches.get(watch.taskId) !== watch) continue;
      this.watches.delete(watch.taskId);
      this.init.onExceeded(watch.taskId, watch.attempt, reason);
    }
    this.timer = null;
    if (!this.closed && this.watches.size > 0) {
      this.timer = setTimeout(() => void this.round(), this.init.intervalMs ?? diskCheckIntervalMsDefault);
    }
  }
}
