/**
 * Looking at and signalling host processes through /proc and kill(2): how the exec driver and its shim tell a
 * task's process from a later one with the same pid, and find what is left of a process group.
 *
 * Imports only node built-ins: the exec shim loads this file (see logs.ts on why that matters).
 */
import { existsSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** /proc is where Linux tells one process from a later one with the same pid; elsewhere we fall back to kill(pid, 0). */
export const procAvailable = existsSync('/proc/self/stat');

/** How often a wait for processes to go looks again. */
const goneWaitPollIntervalMs = 50;

/** A process as recorded when it started: its pid and, where /proc exists, its start time. */
export interface ProcessIdentity {
  pid: number;
  /** Field 22 of /proc/<pid>/stat (clock ticks after boot): tells the same process from a later one with a reused pid. null without /proc. */
  procStartTicks: number | null;
}

export interface ProcStat {
  /** R, S, D, Z (zombie), X (dead)… */
  processState: string;
  /** Parent process id. */
  parentId: number;
  /** Process group id. */
  groupId: number;
  startTicks: number;
}

/**
 * Parses /proc/<pid>/stat, or returns null when there is no such process. Synchronous on purpose: it is a
 * small in-memory kernel file, and callers read it right after a spawn, before the event loop can reap the child.
 */
export function readProcStat(pid: number): ProcStat | null {
  if (!procAvailable) return null;
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ESRCH') return null;
    throw error;
  }
  return parseProcStat(text);
}

/** `pid (comm) state ppid pgrp … starttime …`; comm may hold spaces and parentheses, so split after the last ")". */
export function parseProcStat(text: string): ProcStat | null {
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const processState = fields[0];
  const parentId = Number(fields[1]);
  const groupId = Number(fields[2]);
  const startTicks = Number(fields[19]);
  if (processState === undefined || !Number.isSafeInteger(groupId) || !Number.isSafeInteger(startTicks))
    return null;
  return { processState, parentId, groupId, startTicks };
}

export function isDead(processState: string): boolean {
  return processState === 'Z' || processState === 'X';
}

/** The identity of a process that runs now (right after spawning it), or a pid-only one without /proc. */
export function identify(pid: number): ProcessIdentity {
  return { pid, procStartTicks: readProcStat(pid)?.startTicks ?? null };
}

/**
 * Whether a recorded process still runs. 'reused' means its pid now names another process. A zombie counts as
 * exited: on hosts whose init does not reap orphans, a dead process's zombie can linger for good.
 */
export function processStatus(recorded: ProcessIdentity): 'running' | 'exited' | 'reused' {
  if (procAvailable) {
    const stat = readProcStat(recorded.pid);
    if (stat === null) return 'exited';
    if (recorded.procStartTicks !== null && stat.startTicks !== recorded.procStartTicks) return 'reused';
    return isDead(stat.processState) ? 'exited' : 'running';
  }
  try {
    process.kill(recorded.pid, 0);
    return 'running';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EPERM') return 'running';
    return 'exited';
  }
}

/** Whether a pid names a live (not zombie) process, whatever process it is. */
export function pidAlive(pid: number): boolean {
  if (procAvailable) {
    const stat = readProcStat(pid);
    return stat !== null && !isDead(stat.processState);
  }
  return signalProcess(pid, 0);
}

/** Signals one process; false when there is no such process. */
export function signalProcess(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ESRCH') return false;
    // EPERM: the process changed user; it still exists.
    if (code === 'EPERM') return true;
    throw error;
  }
}

/** Signals every process of the group; false when the group has no process left. */
export function signalGroup(groupId: number, signal: NodeJS.Signals | 0): boolean {
  return signalProcess(-groupId, signal);
}

/** Whether any process of the group is alive. Zombies do not count, though kill(-pgid, 0) still finds them. */
export async function groupAlive(groupId: number): Promise<boolean> {
  if (!signalGroup(groupId, 0)) return false;
  if (!procAvailable) return true;
  const entries = await readdir('/proc');
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let text: string;
    try {
      text = await readFile(`/proc/${entry}/stat`, 'latin1');
    } catch {
      continue; // exited while we looked
    }
    const stat = parseProcStat(text);
    if (stat !== null && stat.groupId === groupId && !isDead(stat.processState)) return true;
  }
  return false;
}

/** Polls `alive` until it is false (true) or timeoutMs passes (false). */
export async function waitGone(alive: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadlineMs = Date.now() + timeoutMs;
  for (;;) {
    if (!(await alive())) return true;
    const leftMs = deadlineMs - Date.now();
    if (leftMs <= 0) return false;
    await sleep(Math.min(goneWaitPollIntervalMs, leftMs));
  }
}
