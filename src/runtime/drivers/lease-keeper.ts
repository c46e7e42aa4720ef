/**
 * The docker lease keeper: one small detached process per agent and engine that holds this node's docker
 * containers to the node's task lease when no agent is alive to do it (SIGKILLed, frozen), as each exec task's
 * shim does for its own process group (watchLease in shim.ts). The leader replaces a silent node's tasks
 * replaceGraceMs (1 s) after the lease ends; the keeper looks at the lease file just after the lease would
 * end and SIGKILLs the containers at once, so they are gone well before their replacements start.
 *
 * Protocol, all in one directory the docker driver is given (DockerDriverInit.leaseKeeperDir):
 *   keeper.json  written by the driver (atomically): what to guard (KeeperConfig); re-read at every look, so
 *                a driver may change it under a running keeper;
 *   keeper.pid   written by the keeper: its pid and start time (KeeperPid). Made with link(2), so one keeper
 *                at most holds it; a driver that finds it naming a live process leaves that keeper be;
 *   keeper.log   the keeper's stdout and stderr: its start and exit, one line per kill, engine trouble;
 *   lease-killed/TASK.json  a container the keeper killed for the lease (LeaseKillRecord), written atomically
 *                before the kill ('killing') and after it ('killed'), so the driver's wait() reports the
 *                task with exec's reason, leaseKillReason. destroy() removes it.
 *
 * Lifecycle: the driver starts a keeper (`shoal __lease-keeper DIR`, or shim-main.ts from the sources) when
 * it starts or recovers a container that has a lease and no live keeper is there, and waits until one holds
 * the pid file. The keeper guards the running containers labelled io.shoal.managed=true, io.shoal.lease=true
 * and io.shoal.node=<its node>, on its engine; a container without the lease label (`--on-disconnect keep`)
 * is never touched. Once none has run for idleExitMs, it gives up the pid file, looks once more (a container
 * started meanwhile makes it stay, if no new keeper took over) and exits: a node that runs no docker tasks
 * has no keeper. It also exits after its engine has not answered for engineGoneExitMs, as it can do nothing
 * for containers it cannot reach.
 *
 * Imports only node built-ins and leaf modules that do the same: this file is in the exec shim's small bundle
 * (shim-main.ts dispatches to it), not the agent's.
 */
import { spawn } from 'node:child_process';
import {
  closeSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
} from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { dirname, join } from 'node:path';
import { isSea } from 'node:sea';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { errorMessage } from '../../shared/errors.ts';
import { writeFileAtomic } from '../../shared/files.ts';
import { identify, processStatus, type ProcessIdentity } from './process.ts';

/** The hidden first argument that makes the shoal binary run as a lease keeper: `shoal __lease-keeper DIR`. */
export const leaseKeeperArgument = '__lease-keeper';

/** The labels the engine knows shoal's containers by (the docker driver puts them on each). */
export const taskLabel = 'io.shoal.task';
export const managedLabel = 'io.shoal.managed';
export const nodeLabel = 'io.shoal.node';
/** On containers whose task has a lease (all but `--on-disconnect keep`): the ones the keeper kills. */
export const leaseLabel = 'io.shoal.lease';

/** The reason a task killed for the lease ends with, under either driver. */
export const leaseKillReason =
  'killed by its supervisor: the node lost contact with the leader for the whole lease';

export const keeperConfigFileName = 'keeper.json';
export const keeperPidFileName = 'keeper.pid';
export const keeperLogFileName = 'keeper.log';
export const leaseKilledDirName = 'lease-killed';

/** How long a keeper stays with no container to guard before it exits. */
export const idleExitMsDefault = 60_000;
/** How long a keeper keeps trying an engine that does not answer before it exits. */
export const engineGoneExitMs = 10 * 60_000;
/**
 * Looks at the lease file come just after the lease would end (its time plus the lease), not on a fixed tick,
 * as the exec shim's do; at most this far apart (a file time in the future, a clock that moved) …
 */
const leaseLookDelayMsMax = 10_000;
/** … and at least this far. */
const leaseLookDelayMsMin = 20;
/** While the lease is over, how often the keeper looks for a renewal and for containers still running. */
const leaseOverLookMs = 1000;
/** While the lease is over and the engine does not answer, how soon the keeper tries it again. */
const engineRetryMs = 250;
/** One engine request (a listing, a kill) may take this long before it counts as unanswered. */
const engineRequestTimeoutMs = 2000;
/** The most of an engine answer the keeper reads: a listing of this node's running containers. */
const engineAnswerBytesMax = 16 * 1024 * 1024;
/** The idle check lists containers every idleExitMs / 4, within these bounds. */
const idleListMsMin = 250;
const idleListMsMax = 15_000;
/** A keeper's log is moved aside (keeper.log.1) when a driver starts a keeper and finds it this big. */
const keeperLogBytesMax = 1024 * 1024;
/** How long a driver waits for the keeper it started to hold the pid file. */
const keeperStartWaitMsMax = 10_000;
const keeperStartPollMs = 20;
/** Tries to take the pid file over from dead holders before giving up. */
const pidClaimAttemptsMax = 3;
/** Task ids become file names: only what a container name allows (docker.ts checks the same). */
const taskIdPattern = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
/** Container ids go into request paths: hex only. */
const containerIdPattern = /^[0-9a-f]{12,64}$/;
/** Container states the keeper kills in: the ones whose processes still run. */
const guardedStates: readonly string[] = ['running', 'paused', 'restarting'];

/** keeper.json: what a keeper guards. Written by the driver. */
export interface KeeperConfig {
  /** Containers labelled io.shoal.node with this value are this keeper's. */
  nodeId: string;
  /** The engine's unix socket. */
  socketPath: string;
  /** The node's task lease (StartRequest.lease). */
  lease: { file: string; durationMs: number };
  /** How long the keeper stays with nothing to guard. */
  idleExitMs: number;
}

/** keeper.pid: which process the keeper is. */
export interface KeeperPid extends ProcessIdentity {
  startedAtMs: number;
}

/** lease-killed/TASK.json: a container killed because the lease ran out. */
export interface LeaseKillRecord {
  taskId: string;
  containerId: string;
  /** 'killing' before the kill request, 'killed' once the engine accepted it. */
  state: 'killing' | 'killed';
  /** The lease file's time the keeper had when it killed (the node's last confirmed contact). */
  leaseConfirmedMs: number;
  atMs: number;
}

/** A container the keeper must kill once the lease is over. */
export interface GuardedContainer {
  id: string;
  /** Its io.shoal.task label, when it is one a file can be named after. */
  taskId: string | null;
}

// ---------------------------------------------------------------- decisions (pure)

/** Whether a lease last confirmed at confirmedMs is over at nowMs (the agent's own rule in node/lease.ts). */
export function leaseOver(confirmedMs: number, durationMs: number, nowMs: number): boolean {
  return nowMs - confirmedMs > durationMs;
}

/**
 * How long until the keeper looks at the lease file again: just past the moment the lease ends if it is not
 * renewed meanwhile, and every leaseOverLookMs while it is over.
 */
export function leaseLookDelayMs(confirmedMs: number, durationMs: number, nowMs: number): number {
  if (leaseOver(confirmedMs, durationMs, nowMs)) return leaseOverLookMs;
  const leftMs = confirmedMs + durationMs - nowMs;
  return Math.min(leaseLookDelayMsMax, Math.max(leaseLookDelayMsMin, leftMs + 1));
}

/** How often the keeper lists containers to learn whether anything is left to guard. */
export function idleListIntervalMs(idleExitMs: number): number {
  return Math.min(idleListMsMax, Math.max(idleListMsMin, Math.round(idleExitMs / 4)));
}

/** What the keeper knows, right after it tried to list its containers, to decide whether to exit. */
export interface IdleView {
  nowMs: number;
  idleExitMs: number;
  /** The last time a listing showed a guarded container (or the keeper's start). */
  guardedSeenMs: number;
  /** Since when the engine has failed every request; null when the last one was answered. */
  engineFailingSinceMs: number | null;
}

export type IdleDecision = { type: 'stay' } | { type: 'exit'; why: string };

export function idleDecision(view: IdleView): IdleDecision {
  const { nowMs, idleExitMs, guardedSeenMs, engineFailingSinceMs } = view;
  if (engineFailingSinceMs !== null) {
    return nowMs - engineFailingSinceMs >= engineGoneExitMs
      ? { type: 'exit', why: `the engine has not answered for ${Math.round(engineGoneExitMs / 1000)} s` }
      : { type: 'stay' };
  }
  return nowMs - guardedSeenMs >= idleExitMs
    ? { type: 'exit', why: `no container to guard for ${Math.round((nowMs - guardedSeenMs) / 1000)} s` }
    : { type: 'stay' };
}

/**
 * The containers of an engine listing (GET /containers/json) that the keeper guards: running ones of its node
 * that have a lease. The listing is filtered by label already; it is checked again here, and anything that
 * is not a well-formed entry is skipped, as an engine's answer is not trusted.
 */
export function guardedContainers(listing: unknown, nodeId: string): GuardedContainer[] {
  if (!Array.isArray(listing)) return [];
  const guarded: GuardedContainer[] = [];
  for (const entry of listing as unknown[]) {
    if (typeof entry !== 'object' || entry === null) continue;
    const { Id: id, State: state, Labels: labels } = entry as Record<string, unknown>;
    if (typeof id !== 'string' || !containerIdPattern.test(id)) continue;
    if (typeof state !== 'string' || !guardedStates.includes(state)) continue;
    if (typeof labels !== 'object' || labels === null) continue;
    const label = (name: string): unknown => (labels as Record<string, unknown>)[name];
    if (label(managedLabel) !== 'true' || label(leaseLabel) !== 'true' || label(nodeLabel) !== nodeId)
      continue;
    const taskId = label(taskLabel);
    guarded.push({ id, taskId: typeof taskId === 'string' && taskIdPattern.test(taskId) ? taskId : null });
  }
  return guarded;
}

/**
 * Whether a container ended because the keeper killed it for the lease: its record names that container and
 * says the kill went through, or the kill was under way and the container died of SIGKILL (128 + 9).
 */
export function killedForLease(
  record: LeaseKillRecord | null,
  containerId: string,
  exitCode: number | null,
): boolean {
  if (record === null || record.containerId !== containerId) return false;
  return record.state === 'killed' || exitCode === 137;
}

/** The engine's label filter for a node's leased containers, as the list request's `filters` parameter. */
export function guardedFilter(nodeId: string): string {
  return JSON.stringify({ label: [`${managedLabel}=true`, `${leaseLabel}=true`, `${nodeLabel}=${nodeId}`] });
}

export function parseKeeperConfig(text: string): KeeperConfig | null {
  const value = parseJson(text);
  if (typeof value !== 'object' || value === null) return null;
  const { nodeId, socketPath, lease, idleExitMs } = value as Record<string, unknown>;
  if (typeof nodeId !== 'string' || nodeId === '' || typeof socketPath !== 'string' || socketPath === '')
    return null;
  if (!isPositive(idleExitMs) || typeof lease !== 'object' || lease === null) return null;
  const { file, durationMs } = lease as Record<string, unknown>;
  if (typeof file !== 'string' || file === '' || !isPositive(durationMs)) return null;
  return { nodeId, socketPath, lease: { file, durationMs }, idleExitMs };
}

export function parseKeeperPid(text: string): KeeperPid | null {
  const value = parseJson(text);
  if (typeof value !== 'object' || value === null) return null;
  const { pid, procStartTicks, startedAtMs } = value as Record<string, unknown>;
  if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null;
  if (
    procStartTicks !== null &&
    (typeof procStartTicks !== 'number' || !Number.isSafeInteger(procStartTicks))
  )
    return null;
  if (typeof startedAtMs !== 'number') return null;
  return { pid, procStartTicks, startedAtMs };
}

export function parseLeaseKill(text: string): LeaseKillRecord | null {
  const value = parseJson(text);
  if (typeof value !== 'object' || value === null) return null;
  const { taskId, containerId, state, leaseConfirmedMs, atMs } = value as Record<string, unknown>;
  if (typeof taskId !== 'string' || typeof containerId !== 'string') return null;
  if (state !== 'killing' && state !== 'killed') return null;
  if (typeof leaseConfirmedMs !== 'number' || typeof atMs !== 'number') return null;
  return { taskId, containerId, state, leaseConfirmedMs, atMs };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function isPositive(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}

// ---------------------------------------------------------------- the driver's side

/**
 * How to run a keeper here, as shimCommandDefault (exec.ts) runs a shim. Inside the single binary: the binary
 * with the hidden argument (sea-main.cjs gives it the shim's bundle). From the sources: node with
 * shim-main.ts. From a bundle run by node: the shim bundle next to it (dist/shim.cjs).
 */
export function leaseKeeperCommandDefault(): string[] {
  if (isSea()) return [process.execPath, leaseKeeperArgument];
  const entry = fileURLToPath(new URL('./shim-main.ts', import.meta.url));
  if (existsSync(entry))
    return [process.execPath, '--disable-warning=ExperimentalWarning', entry, leaseKeeperArgument];
  const script = process.argv[1];
  const shimBundle = script === undefined ? null : join(dirname(script), 'shim.cjs');
  if (shimBundle !== null && existsSync(shimBundle))
    return [process.execPath, shimBundle, leaseKeeperArgument];
  return [process.execPath, ...(script === undefined ? [] : [script]), leaseKeeperArgument];
}

/** Writes keeper.json unless it already says the same (a running keeper reads it at its next look). */
export function writeKeeperConfig(dir: string, config: KeeperConfig): void {
  const path = join(dir, keeperConfigFileName);
  const text = JSON.stringify(config);
  let current: string | null = null;
  try {
    current = readFileSync(path, 'utf8');
  } catch {
    // Not written yet.
  }
  if (current !== text) writeFileAtomic(path, text, { durable: false });
}

/** The keeper that holds dir's pid file, if that process still runs; else null. */
export function liveKeeper(dir: string): KeeperPid | null {
  let text: string;
  try {
    text = readFileSync(join(dir, keeperPidFileName), 'utf8');
  } catch {
    return null;
  }
  const holder = parseKeeperPid(text);
  return holder !== null && processStatus(holder) === 'running' ? holder : null;
}

/**
 * Starts a keeper for dir (whose keeper.json must be written) in a session of its own, its output appended
 * to keeper.log, and waits until a keeper holds the pid file: the one started here, or one that won a race
 * with it. Rejects when none does within keeperStartWaitMsMax.
 */
export async function startLeaseKeeper(dir: string, command: readonly string[]): Promise<KeeperPid> {
  const [program, ...programArgs] = command;
  if (program === undefined) throw new Error('the lease keeper command is empty');
  const logPath = join(dir, keeperLogFileName);
  try {
    if (statSync(logPath).size > keeperLogBytesMax) renameSync(logPath, `${logPath}.1`);
  } catch {
    // No log yet.
  }
  const log = openSync(logPath, 'a', 0o600);
  // An object, not a let: the exit handler sets it while the wait below looks.
  const child = { exited: false };
  try {
    const spawned = spawn(program, [...programArgs, dir], {
      cwd: dir,
      // It needs nothing from the agent's environment; NODE_OPTIONS in particular must not reach it.
      env: { PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      // Its own session: the agent's terminal, process group and death do not reach it.
      detached: true,
      stdio: ['ignore', log, log],
    });
    spawned.once('exit', () => (child.exited = true));
    await new Promise<void>((resolve, reject) => {
      spawned.once('spawn', resolve);
      spawned.once('error', reject);
    });
    // Later errors (a failed kill) must not crash the agent as unhandled 'error' events.
    spawned.on('error', () => undefined);
    // It must not keep the agent's event loop alive.
    spawned.unref();
  } finally {
    // The keeper holds its own copy of the descriptor.
    closeSync(log);
  }
  const deadlineMs = Date.now() + keeperStartWaitMsMax;
  for (;;) {
    const holder = liveKeeper(dir);
    if (holder !== null) return holder;
    if (child.exited) throw new Error(`the lease keeper exited at once (see ${logPath})`);
    if (Date.now() >= deadlineMs) {
      throw new Error(`the lease keeper did not start within ${keeperStartWaitMsMax} ms (see ${logPath})`);
    }
    await sleep(keeperStartPollMs);
  }
}

/** The keeper's record of a task's container killed for the lease, or null. */
export async function readLeaseKill(dir: string, taskId: string): Promise<LeaseKillRecord | null> {
  if (!taskIdPattern.test(taskId)) return null;
  const text = await readFile(leaseKillPath(dir, taskId), 'utf8').catch(() => null);
  return text === null ? null : parseLeaseKill(text);
}

export async function removeLeaseKill(dir: string, taskId: string): Promise<void> {
  if (!taskIdPattern.test(taskId)) return;
  await rm(leaseKillPath(dir, taskId), { force: true });
}

function leaseKillPath(dir: string, taskId: string): string {
  return join(dir, leaseKilledDirName, `${taskId}.json`);
}

// ---------------------------------------------------------------- the keeper process

/** Runs the keeper for the directory in args[0]; exits the process when done. Never rejects. */
export async function runLeaseKeeper(args: readonly string[]): Promise<void> {
  const dir = args[0];
  if (dir === undefined || args.length !== 1) {
    process.stderr.write(
      `usage: shoal ${leaseKeeperArgument} DIR (started by the docker driver, not by hand)\n`,
    );
    process.exit(2);
  }
  // Its log may be on a full disk: a log line must not become an uncaught error.
  process.stderr.on('error', () => undefined);
  const keeper = new Keeper(dir);
  process.on('uncaughtException', (error) => {
    log(`stopped by an unexpected error: ${errorMessage(error)}`);
    keeper.release();
    process.exit(1);
  });
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      log(`stopped by ${signal}; the containers are no longer held to the lease`);
      keeper.release();
      process.exit(0);
    });
  }
  for (const signal of ['SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2'] as const) {
    process.on(signal, () => log(`ignored ${signal}`));
  }
  process.exit(await keeper.run());
}

function log(line: string): void {
  try {
    process.stderr.write(`${new Date().toISOString()} shoal lease-keeper[${process.pid}]: ${line}\n`);
  } catch {
    // Nowhere left to say it.
  }
}

/** A request to the engine that got no usable answer. */
class EngineError extends Error {
  override readonly name = 'EngineError';
}

/** One request to the engine over its unix socket: the status and the body, or EngineError. */
function engineCall(
  socketPath: string,
  method: 'GET' | 'POST',
  path: string,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = httpRequest(
      // No connection pool: a fresh connection per request survives an engine restart unnoticed.
      {
        socketPath,
        method,
        path,
        agent: false,
        timeout: engineRequestTimeoutMs,
        headers: { Host: 'docker' },
      },
      (response) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        response.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > engineAnswerBytesMax) {
            request.destroy(new EngineError(`an answer over ${engineAnswerBytesMax} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        response.on('end', () =>
          resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
        );
        response.on('error', (error) => reject(new EngineError(errorMessage(error))));
      },
    );
    request.on('timeout', () =>
      request.destroy(new EngineError(`no answer within ${engineRequestTimeoutMs} ms`)),
    );
    request.on('error', (error) => reject(new EngineError(`${socketPath}: ${errorMessage(error)}`)));
    request.end();
  });
}

/** Whether this keeper holds the pid file, or which one does; 'unwritable': neither (a full disk). */
type Claim = 'claimed' | 'unwritable' | { holderPid: number };

/** The running state of a keeper process: its files, what it has seen, and its loop. */
class Keeper {
  readonly #dir: string;
  readonly #pidPath: string;
  readonly #identity: KeeperPid;
  #config: KeeperConfig | null = null;
  /** The latest lease file time seen: when the node last confirmed contact with a leader. */
  #confirmedMs: number;
  #guardedSeenMs: number;
  #engineFailingSinceMs: number | null = null;
  #nextListMs: number;
  /** Containers killed by this keeper, so a second look does not rewrite their records. */
  #killed = new Set<string>();
  /** The last trouble logged, so one that repeats every look is logged once. */
  #lastTrouble: string | null = null;

  constructor(dir: string) {
    this.#dir = dir;
    this.#pidPath = join(dir, keeperPidFileName);
    const nowMs = Date.now();
    this.#identity = { ...identify(process.pid), startedAtMs: nowMs };
    // A missing lease file starts the count now, as the exec shim's does.
    this.#confirmedMs = nowMs;
    this.#guardedSeenMs = nowMs;
    this.#nextListMs = nowMs;
  }

  /** The keeper's loop; resolves with the process's exit code. */
  async run(): Promise<number> {
    this.#config = this.#readConfig();
    if (this.#config === null) {
      log(`no usable ${keeperConfigFileName} in ${this.#dir}; exiting`);
      return 1;
    }
    const claim = this.#claim();
    // A driver waits for the pid file: without one it reports the keeper failed and does not run the task.
    if (claim === 'unwritable') return 1;
    if (claim !== 'claimed') {
      log(`another keeper (pid ${claim.holderPid}) holds ${this.#pidPath}; exiting`);
      return 0;
    }
    this.#confirmedMs = this.#leaseTime(this.#config) ?? this.#confirmedMs;
    log(
      `guarding node ${this.#config.nodeId}'s containers on ${this.#config.socketPath} ` +
        `(lease ${this.#config.lease.durationMs} ms, file ${this.#config.lease.file})`,
    );
    for (;;) {
      let delayMs: number;
      try {
        const step = await this.#look();
        if (step.type === 'exit') return 0;
        delayMs = step.delayMs;
      } catch (error) {
        // Nothing should throw here; if something does (a full disk), try again soon rather than die.
        this.#trouble(`unexpected error: ${errorMessage(error)}`);
        delayMs = leaseOverLookMs;
      }
      await sleep(delayMs);
    }
  }

  /** Gives up the pid file if it is still ours. */
  release(): void {
    try {
      if (this.#pidFileHolder()?.pid === process.pid) rmSync(this.#pidPath, { force: true });
    } catch (error) {
      this.#trouble(`cannot remove ${this.#pidPath}: ${errorMessage(error)}`);
    }
  }

  async #look(): Promise<{ type: 'exit' } | { type: 'sleep'; delayMs: number }> {
    // Its agent's data directory was removed (a node wiped, a test's cluster gone): nobody is left to ask.
    if (!existsSync(this.#dir)) {
      log(`${this.#dir} is gone; exiting`);
      return { type: 'exit' };
    }
    const config = (this.#config = this.#readConfig() ?? this.#config);
    if (config === null) throw new Error('no config');
    if (this.#pidFileHolder()?.pid !== process.pid) {
      // Unwritable (a full disk): guarding matters more than being found; a driver may start a second keeper.
      const claim = this.#claim();
      if (typeof claim === 'object') {
        log(`another keeper (pid ${claim.holderPid}) holds ${this.#pidPath}; exiting`);
        return { type: 'exit' };
      }
    }
    const { durationMs } = config.lease;
    this.#observeLease(config);
    let nowMs = Date.now();
    let retrySoon = false;
    let listed = false;
    if (leaseOver(this.#confirmedMs, durationMs, nowMs)) {
      retrySoon = !(await this.#enforce(config));
      listed = true;
    } else if (nowMs >= this.#nextListMs) {
      // The idle check: notes whether anything is left to guard.
      await this.#list(config);
      listed = true;
    }
    nowMs = Date.now();
    if (listed) {
      this.#nextListMs = nowMs + idleListIntervalMs(config.idleExitMs);
      const decision = idleDecision({
        nowMs,
        idleExitMs: config.idleExitMs,
        guardedSeenMs: this.#guardedSeenMs,
        engineFailingSinceMs: this.#engineFailingSinceMs,
      });
      if (decision.type === 'exit' && (await this.#leave(config, decision.why))) {
        return { type: 'exit' };
      }
    }
    const leaseDelayMs = retrySoon
      ? engineRetryMs
      : leaseLookDelayMs(this.#confirmedMs, durationMs, Date.now());
    const listDelayMs = Math.max(leaseLookDelayMsMin, this.#nextListMs - Date.now());
    return { type: 'sleep', delayMs: Math.min(leaseDelayMs, listDelayMs) };
  }

  /**
   * The lease is over: kills every guarded container. False when the engine could not be asked (try again
   * soon); true otherwise, also when the lease turned out renewed meanwhile.
   */
  async #enforce(config: KeeperConfig): Promise<boolean> {
    const containers = await this.#list(config);
    if (containers === null) return false;
    // The agent may have renewed while the engine answered: a renewed lease is no reason to kill.
    this.#observeLease(config);
    if (!leaseOver(this.#confirmedMs, config.lease.durationMs, Date.now())) return true;
    const results = await Promise.all(containers.map((container) => this.#kill(config, container)));
    this.#killed = new Set(containers.map((container) => container.id).filter((id) => this.#killed.has(id)));
    return results.every(Boolean);
  }

  /** Kills one container for the lease and records it; false when the engine did not answer. */
  async #kill(config: KeeperConfig, container: GuardedContainer): Promise<boolean> {
    const { id, taskId } = container;
    // Killed already (by this keeper, or by one before it) and not dead yet: kill again, keep the record.
    const earlier = taskId === null ? null : this.#readKill(taskId);
    const again = this.#killed.has(id) || (earlier?.containerId === id && earlier.state === 'killed');
    const record = (state: LeaseKillRecord['state']): void => {
      if (taskId === null || again) return;
      try {
        mkdirSync(join(this.#dir, leaseKilledDirName), { recursive: true, mode: 0o700 });
        const killRecord: LeaseKillRecord = {
          taskId,
          containerId: id,
          state,
          leaseConfirmedMs: this.#confirmedMs,
          atMs: Date.now(),
        };
        writeFileAtomic(leaseKillPath(this.#dir, taskId), JSON.stringify(killRecord));
      } catch (error) {
        // The kill matters more than its record: go on without it.
        log(`cannot record the kill of task ${taskId}: ${errorMessage(error)}`);
      }
    };
    record('killing');
    let status: number;
    try {
      ({ status } = await engineCall(config.socketPath, 'POST', `/containers/${id}/kill?signal=SIGKILL`));
    } catch (error) {
      this.#engineFailed(error);
      return false;
    }
    this.#engineAnswered();
    if (status === 204) {
      record('killed');
      if (!again) {
        this.#killed.add(id);
        log(
          `killed container ${id.slice(0, 12)} of task ${taskId ?? '?'}: the lease ran out ` +
            `(last confirmed ${new Date(this.#confirmedMs).toISOString()}, lease ${config.lease.durationMs} ms)`,
        );
      }
      return true;
    }
    // 404: gone; 409: not running any more. It ended by itself: nothing to record.
    if ((status === 404 || status === 409) && !again && taskId !== null) {
      rmSync(leaseKillPath(this.#dir, taskId), { force: true });
    }
    if (status !== 404 && status !== 409) {
      this.#trouble(`the engine answered ${status} to killing container ${id.slice(0, 12)}`);
    }
    return true;
  }

  /** This node's leased running containers, or null when the engine could not be asked. */
  async #list(config: KeeperConfig): Promise<GuardedContainer[] | null> {
    const path = `/containers/json?filters=${encodeURIComponent(guardedFilter(config.nodeId))}`;
    let answer: { status: number; body: string };
    try {
      answer = await engineCall(config.socketPath, 'GET', path);
    } catch (error) {
      this.#engineFailed(error);
      return null;
    }
    if (answer.status !== 200) {
      this.#engineFailed(new EngineError(`the engine answered ${answer.status} to a container listing`));
      return null;
    }
    const body = parseJson(answer.body);
    if (!Array.isArray(body)) {
      this.#engineFailed(new EngineError('the engine answered a container listing with something else'));
      return null;
    }
    this.#engineAnswered();
    const containers = guardedContainers(body, config.nodeId);
    if (containers.length > 0) this.#guardedSeenMs = Date.now();
    return containers;
  }

  /**
   * Nothing to guard: gives up the pid file, then looks once more, since a driver that started a container
   * just now may have found the pid file still there and left it to this keeper. True: exit.
   */
  async #leave(config: KeeperConfig, why: string): Promise<boolean> {
    // An engine that has not answered for engineGoneExitMs has started nothing just now.
    const engineGone = this.#engineFailingSinceMs !== null;
    this.release();
    const containers = await this.#list(config);
    if ((containers === null && !engineGone) || (containers !== null && containers.length > 0)) {
      const claim = this.#claim();
      if (typeof claim !== 'object') return false;
      log(`${why}, and another keeper (pid ${claim.holderPid}) took over; exiting`);
      return true;
    }
    log(`${why}; exiting`);
    return true;
  }

  #readKill(taskId: string): LeaseKillRecord | null {
    try {
      return parseLeaseKill(readFileSync(leaseKillPath(this.#dir, taskId), 'utf8'));
    } catch {
      return null;
    }
  }

  #observeLease(config: KeeperConfig): void {
    const timeMs = this.#leaseTime(config);
    // A file that cannot be read counts as never renewed since the last good read.
    if (timeMs !== null) this.#confirmedMs = Math.max(this.#confirmedMs, timeMs);
  }

  #leaseTime(config: KeeperConfig): number | null {
    try {
      return statSync(config.lease.file).mtimeMs;
    } catch {
      return null;
    }
  }

  #readConfig(): KeeperConfig | null {
    try {
      return parseKeeperConfig(readFileSync(join(this.#dir, keeperConfigFileName), 'utf8'));
    } catch {
      return null;
    }
  }

  #pidFileHolder(): KeeperPid | null {
    try {
      return parseKeeperPid(readFileSync(this.#pidPath, 'utf8'));
    } catch {
      return null;
    }
  }

  /**
   * Takes the pid file: link(2) of a complete temporary file, so a reader never sees half of it and only one
   * keeper can make it. A holder that no longer runs is replaced.
   */
  #claim(): Claim {
    const temporary = `${this.#pidPath}.${process.pid}`;
    try {
      writeFileAtomic(temporary, JSON.stringify(this.#identity), { durable: false });
      for (let attempt = 0; attempt < pidClaimAttemptsMax; attempt++) {
        try {
          linkSync(temporary, this.#pidPath);
          return 'claimed';
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
        }
        const holder = this.#pidFileHolder();
        if (holder?.pid === process.pid) return 'claimed';
        if (holder !== null && processStatus(holder) === 'running') return { holderPid: holder.pid };
        rmSync(this.#pidPath, { force: true });
      }
      return { holderPid: this.#pidFileHolder()?.pid ?? 0 };
    } catch (error) {
      this.#trouble(`cannot write ${this.#pidPath}: ${errorMessage(error)}`);
      return 'unwritable';
    } finally {
      rmSync(temporary, { force: true });
    }
  }

  #engineFailed(error: unknown): void {
    this.#engineFailingSinceMs ??= Date.now();
    this.#trouble(`the engine does not answer (retrying): ${errorMessage(error)}`);
  }

  #engineAnswered(): void {
    if (this.#engineFailingSinceMs !== null) log('the engine answers again');
    this.#engineFailingSinceMs = null;
    this.#lastTrouble = null;
  }

  #trouble(line: string): void {
    if (line === this.#lastTrouble) return;
    this.#lastTrouble = line;
    log(line);
  }
}
