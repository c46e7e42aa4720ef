/**
 * One chaos run, start to end: agents up, workload and observers on, the schedule's faults applied and
 * healed at their times, then every fault healed, the cluster given time to converge and settle, the
 * final lists read, everything torn down, and the history handed to the checker. With `docker`, each agent
 * gets a Docker engine of its own and part of the workload runs in containers.
 */
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { seededRandom } from '../../src/shared/random.ts';
import { ChaosAgent } from './agents.ts';
import { ChaosEngine } from './engines.ts';
import { check, parseRunLine, type CheckOptions, type CheckResult } from './check.ts';
import type { AgentExit, AppliedFault, FinalTask, History, RunLine } from './history.ts';
import { ChaosNetwork, cleanupStale, preflight, type Link } from './network.ts';
import {
  describeFault,
  type Fault,
  type NodeTarget,
  type Schedule,
  type ScheduledFault,
} from './schedule.ts';
import { bootTimeMs, dockerRunsPath, Observers, Workload, submitTimeoutMs } from './workload.ts';

export interface HarnessOptions {
  readonly schedule: Schedule;
  readonly binary: string;
  /** Parent of the run's work dir. */
  readonly workRoot: string;
  readonly keep: boolean;
  readonly submitIntervalMs: number;
  /** Share of tasks that outlive the task lease (15–35 s). */
  readonly longTaskShare: number;
  readonly tmpfsMiB: number;
  readonly compactEntries: number;
  /** Longest wait, after the last heal and convergence, for every task to end before the final reads. */
  readonly settleMsMax: number;
  readonly check: CheckOptions;
  readonly log: (line: string) => void;
  readonly signal: AbortSignal;
  /** Docker tasks of `image` for `share` of the workload, each agent with an engine of its own. */
  readonly docker?: { readonly image: string; readonly share: number };
}

export interface HarnessResult {
  readonly history: History;
  readonly result: CheckResult;
  readonly workDir: string;
  /** Whether the work dir (logs, history.json) was kept. */
  readonly kept: boolean;
}

/** Small agents, so the bin-packing allocator spreads the workload over every node. */
const agentCpu = 1.5;
const agentMemoryMiB = 1024;
const readyTimeoutMs = 30_000;
const formTimeoutMs = 90_000;
/** Unexpected exits restarted per node before the harness leaves it down (it keeps failing to start). */
const unexpectedRestartsMax = 5;

export class Interrupted extends Error {
  constructor() {
    super('interrupted');
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new Interrupted());
      return;
    }
    const timer = setTimeout(
      () => {
        signal.removeEventListener('abort', onAbort);
        resolve();
      },
      Math.max(0, ms),
    );
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new Interrupted());
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/** Takes a block of loopback addresses no other live chaos run holds (lock files name the holder's pid). */
function lockAddressBlock(nodes: number): { first: number; release: () => void } {
  const size = Math.max(10, nodes);
  for (let first = 10; first + nodes <= 255; first += size) {
    const path = `/tmp/shoal-chaos-block-${first}.lock`;
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx' });
    } catch {
      const holder = Number(readFileSync(path, 'utf8'));
      if (Number.isInteger(holder) && holder > 0 && processAlive(holder)) continue;
      writeFileSync(path, String(process.pid));
    }
    return { first, release: () => rmSync(path, { force: true }) };
  }
  throw new Error('every block of loopback addresses is held by another chaos run');
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface StatusBody {
  role?: string;
  leader?: { name?: string } | null;
  voters?: unknown[];
}

export async function runHarness(options: HarnessOptions): Promise<HarnessResult> {
  const { schedule, log, signal } = options;
  const problem = await preflight();
  if (problem !== null) throw new Error(problem);
  if (!existsSync(options.binary)) throw new Error(`no binary at ${options.binary}: run npm run build first`);
  await cleanupStale(log);

  const teardown: (() => Promise<void> | void)[] = [];
  const runTeardown = async (): Promise<void> => {
    for (let step = teardown.pop(); step; step = teardown.pop()) {
      try {
        await step();
      } catch (error) {
        log(`teardown step failed: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
  };

  const block = lockAddressBlock(schedule.nodes);
  teardown.push(block.release);
  mkdirSync(options.workRoot, { recursive: true });
  const workDir = mkdtempSync(join(options.workRoot, `shoal-chaos-${process.pid}-`));
  const binary = join(workDir, 'shoal');
  // A private copy: someone rebuilding dist/shoal mid-run must not change what a restart starts.
  copyFileSync(options.binary, binary);
  teardown.push(() => rmSync(binary, { force: true }));
  const runsPath = join(workDir, 'runs.log');
  writeFileSync(runsPath, '', { mode: 0o666 });

  const network = new ChaosNetwork(String(process.pid));
  teardown.push(() => network.uninstall());
  await network.install();

  const names = Array.from({ length: schedule.nodes }, (_, i) => `n${i + 1}`);
  const agents: ChaosAgent[] = [];
  const engines: ChaosEngine[] = [];
  for (const [i, name] of names.entries()) {
    const address = `127.0.0.${block.first + i}`;
    const cgroupDir = await network.addNode(name, address);
    const engine = options.docker === undefined ? undefined : new ChaosEngine(join(workDir, 'engines', name));
    const agent = new ChaosAgent({
      ...(engine === undefined ? {} : { engine }),
      name,
      address,
      nodeDir: join(workDir, 'nodes', name),
      cgroupDir,
      binary,
      cpu: agentCpu,
      memoryMiB: agentMemoryMiB,
      compactEntries: options.compactEntries,
    });
    teardown.push(() => agent.unmount());
    teardown.push(() => agent.kill(true));
    await agent.prepare(options.tmpfsMiB);
    agents.push(agent);
    if (engine !== undefined) engines.push(engine);
  }
  // Removed before the agents' tmpfs goes: containers hold binds of their task directories.
  for (const engine of engines) teardown.push(() => engine.stop());
  if (options.docker !== undefined) {
    const image = options.docker.image;
    log(`starting ${engines.length} Docker engines and pulling ${image} into each`);
    await Promise.all(engines.map((engine) => engine.start(image)));
  }
  const startMs = Date.now();
  const at = (ms: number = Date.now()): string => `t+${((ms - startMs) / 1000).toFixed(1)}s`;
  const nameOf = (node: number): string => names[node] ?? `n${node + 1}`;

  // Faults that hold an agent down (a crash, a full disk) keep the exit handler from restarting it.
  const heldDown = new Map<string, number>();
  const hold = (agent: ChaosAgent, delta: number): void => {
    heldDown.set(agent.name, (heldDown.get(agent.name) ?? 0) + delta);
  };
  const exits: AgentExit[] = [];
  const restartsLeft = new Map(names.map((name) => [name, unexpectedRestartsMax]));
  let key: string | null = null;
  const seedsFor = (agent: ChaosAgent): string[] =>
    agents.filter((a) => a !== agent).map((a) => a.joinAddress);
  const restartAgent = (agent: ChaosAgent): void => {
    if (!agent.running) agent.start(seedsFor(agent), key);
  };
  let finishing = false;
  for (const agent of agents) {
    agent.onUnexpectedExit = (code, exitSignal) => {
      const exit = {
        node: agent.name,
        atMs: Date.now(),
        code,
        signal: exitSignal,
        logTail: agent.logTail(15),
      };
      exits.push(exit);
      log(
        `${at()} ${agent.name} exited on its own (${code === null ? `signal ${exitSignal ?? '?'}` : `code ${code}`})`,
      );
      const left = restartsLeft.get(agent.name) ?? 0;
      if (left <= 0) {
        log(`${at()} ${agent.name} keeps exiting; leaving it down`);
        return;
      }
      restartsLeft.set(agent.name, left - 1);
      // Restart it once nothing holds it down, like a supervisor would.
      const retry = (): void => {
        if (signal.aborted || finishing) return;
        if ((heldDown.get(agent.name) ?? 0) > 0) {
          setTimeout(retry, 500);
          return;
        }
        if (!agent.running) {
          log(`${at()} restarting ${agent.name} after its exit`);
          restartAgent(agent);
        }
      };
      setTimeout(retry, 2_000);
    };
  }

  const observers = new Observers(agents);
  const workload = new Workload({
    agents,
    random: seededRandom((schedule.seed ^ 0x5eed5eed) >>> 0),
    runsPath,
    submitIntervalMs: options.submitIntervalMs,
    inFlightMax: 32,
    restartShare: 0.75,
    longShare: options.longTaskShare,
    ...(options.docker === undefined
      ? {}
      : { docker: { image: options.docker.image, share: options.docker.share, bootMs: bootTimeMs() } }),
  });
  const faults: AppliedFault[] = [];
  let lastHealMs = startMs;
  let settled = false;
  let finalTasks: Record<string, FinalTask[]> = {};
  let finalFrom: string | null = null;

  const waitReady = async (agent: ChaosAgent, timeoutMs: number): Promise<boolean> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!agent.running) return false;
      const result = await agent.send('status', { timeoutMs: 1_000 });
      if (result.kind === 'answer' && result.status === 200) return true;
      await sleep(200, signal);
    }
    return false;
  };

  const statuses = async (): Promise<Map<string, StatusBody>> => {
    const answers = await Promise.all(
      agents.map(async (agent) => {
        if (!agent.running || agent.paused) return null;
        const result = await agent.send('status', { timeoutMs: 1_000 });
        return result.kind === 'answer' && result.status === 200
          ? ([agent.name, result.body as StatusBody] as const)
          : null;
      }),
    );
    return new Map(answers.filter((a) => a !== null));
  };

  /** The leader every answering node names, if they all name the same one. */
  const agreedLeader = async (): Promise<{ name: string; voters: number } | null> => {
    const all = await statuses();
    const leaders = new Set([...all.values()].map((s) => s.leader?.name ?? null));
    const [only] = [...leaders];
    if (leaders.size !== 1 || typeof only !== 'string' || all.size < agents.filter((a) => a.running).length)
      return null;
    const voters = all.get(only)?.voters?.length ?? 0;
    return { name: only, voters };
  };

  const membersConverged = async (): Promise<boolean> => {
    const answers = await Promise.all(
      agents.map(async (agent) => {
        const result = await agent.send('members', { timeoutMs: 1_000 });
        if (result.kind !== 'answer' || !Array.isArray(result.body)) return false;
        const members = result.body as { name?: string; state?: string }[];
        return names.every((name) => members.some((m) => m.name === name && m.state === 'alive'));
      }),
    );
    return answers.every(Boolean);
  };

  const resolveTarget = async (target: NodeTarget): Promise<ChaosAgent> => {
    if ('node' in target) return agentAt(target.node);
    if ('busiest' in target) {
      const counts = await Promise.all(
        agents.map(async (agent) => ({ agent, tasks: agent.running ? await agent.runningTasks() : 0 })),
      );
      const best = counts.sort((a, b) => b.tasks - a.tasks)[0];
      return best !== undefined && best.tasks > 0 ? best.agent : agentAt(target.fallback);
    }
    const counts = new Map<string, number>();
    for (const status of (await statuses()).values()) {
      const leader = status.leader?.name;
      if (leader !== undefined) counts.set(leader, (counts.get(leader) ?? 0) + 1);
    }
    const best = [...counts].sort((a, b) => b[1] - a[1])[0];
    return agents.find((a) => a.name === best?.[0]) ?? agentAt(target.fallback);
  };

  const links = (
    from: readonly ChaosAgent[],
    to: readonly ChaosAgent[],
    both: boolean,
    probability: number | null,
  ): Link[] => {
    const result: Link[] = [];
    for (const a of from)
      for (const b of to) {
        if (a === b) continue;
        result.push({ from: a.address, to: b.address, probability });
        if (both) result.push({ from: b.address, to: a.address, probability });
      }
    return result;
  };

  const agentAt = (index: number): ChaosAgent => {
    const agent = agents[index] ?? agents[0];
    if (!agent) throw new Error('a chaos run needs at least one node');
    return agent;
  };

  const pick = (nodes: readonly number[]): ChaosAgent[] =>
    nodes.flatMap((n) => (agents[n] ? [agents[n]] : []));

  /** Applies one fault at its time, holds it, heals it, and records what was done when. */
  const runFault = async (phaseStartMs: number, scheduled: ScheduledFault): Promise<void> => {
    await sleep(phaseStartMs + scheduled.atMs - Date.now(), signal);
    const fault: Fault = scheduled.fault;
    const tag = `fault-${scheduled.id}`;
    const startFaultMs = Date.now();
    let description = describeFault(fault, nameOf);
    let down: string[] = [];
    let cuts: [string, string][] = [];
    let diskFull: string[] = [];
    let crashed: string[] = [];
    let lossProbability: number | null = null;
    let heal: () => Promise<void>;
    const byAddress = new Map(agents.map((a) => [a.address, a.name]));
    const cutLinks = async (list: Link[]): Promise<() => Promise<void>> => {
      cuts = list.map((l) => [byAddress.get(l.from) ?? l.from, byAddress.get(l.to) ?? l.to]);
      await network.cut(tag, list);
      return () => network.heal(tag);
    };
    switch (fault.kind) {
      case 'crash': {
        const agent = await resolveTarget(fault.target);
        description = `${description} → ${agent.name}`;
        hold(agent, 1);
        await agent.kill(fault.tasks === 'die');
        down = [agent.name];
        crashed = fault.tasks === 'die' ? [agent.name] : [];
        heal = async () => {
          hold(agent, -1);
          restartAgent(agent);
          await waitReady(agent, readyTimeoutMs);
        };
        break;
      }
      case 'pause': {
        const agent = await resolveTarget(fault.target);
        description = `${description} → ${agent.name}`;
        agent.pause();
        down = [agent.name];
        heal = () => {
          agent.resume();
          return Promise.resolve();
        };
        break;
      }
      case 'isolate': {
        const agent = await resolveTarget(fault.target);
        description = `${description} → ${agent.name}`;
        heal = await cutLinks(links([agent], agents, true, null));
        break;
      }
      case 'split': {
        const minority = pick(fault.minority);
        heal = await cutLinks(
          links(
            minority,
            agents.filter((a) => !minority.includes(a)),
            true,
            null,
          ),
        );
        break;
      }
      case 'one-way':
        heal = await cutLinks(links(pick(fault.from), pick(fault.to), false, null));
        break;
      case 'bridge':
        heal = await cutLinks(links(pick(fault.left), pick(fault.right), true, null));
        break;
      case 'loss': {
        lossProbability = fault.probability;
        await network.cut(tag, links(agents, agents, false, fault.probability));
        heal = () => network.heal(tag);
        break;
      }
      case 'disk-full': {
        const agent = await resolveTarget(fault.target);
        description = `${description} → ${agent.name}`;
        hold(agent, 1);
        const bytes = agent.fillDisk();
        description = `${description} (${Math.round(bytes / 1024 / 1024)} MiB filler)`;
        diskFull = [agent.name];
        heal = () => {
          agent.freeDisk();
          hold(agent, -1);
          return Promise.resolve();
        };
        break;
      }
      case 'restart-all': {
        for (const agent of agents) hold(agent, 1);
        await Promise.all(agents.map((agent) => agent.kill(false)));
        down = agents.map((a) => a.name);
        heal = async () => {
          for (const agent of agents) {
            hold(agent, -1);
            restartAgent(agent);
          }
          await Promise.all(agents.map((agent) => waitReady(agent, readyTimeoutMs)));
        };
        break;
      }
    }
    const activeMs = Date.now();
    log(
      `${at(startFaultMs)} fault ${scheduled.id}: ${description} for ${(scheduled.durationMs / 1000).toFixed(1)} s`,
    );
    try {
      await sleep(phaseStartMs + scheduled.atMs + scheduled.durationMs - Date.now(), signal);
    } finally {
      const healMs = Date.now();
      await heal();
      const endMs = Date.now();
      lastHealMs = Math.max(lastHealMs, endMs);
      log(`${at(healMs)} fault ${scheduled.id} healed`);
      faults.push({
        id: scheduled.id,
        kind: fault.kind,
        description,
        startMs: startFaultMs,
        activeMs,
        healMs,
        endMs,
        down,
        cuts,
        diskFull,
        crashed,
        lossProbability,
      });
    }
  };

  try {
    // ---- the cluster -------------------------------------------------------------------------------
    const first = agentAt(0);
    first.start([], null);
    if (!(await waitReady(first, readyTimeoutMs)))
      throw new Error(`${first.name} did not start:\n${first.logTail(20)}`);
    key = readFileSync(join(first.dataDir, 'cluster.key'), 'utf8').trim();
    for (const agent of agents.slice(1)) agent.start([first.joinAddress], key);
    for (const agent of agents.slice(1))
      if (!(await waitReady(agent, readyTimeoutMs)))
        throw new Error(`${agent.name} did not start:\n${agent.logTail(20)}`);
    const votersWanted = Math.min(5, agents.length % 2 === 1 ? agents.length : agents.length - 1);
    const formDeadline = Date.now() + formTimeoutMs;
    for (;;) {
      const leader = await agreedLeader();
      if (leader !== null && leader.voters >= votersWanted && (await membersConverged())) break;
      if (Date.now() > formDeadline)
        throw new Error(`the cluster did not form within ${formTimeoutMs / 1000} s`);
      await sleep(300, signal);
    }
    log(
      `${at()} cluster of ${agents.length} formed (${agents.map((a) => `${a.name}=${a.address}`).join(' ')}); work dir ${workDir}`,
    );

    // ---- the fault phase ---------------------------------------------------------------------------
    observers.start();
    workload.start();
    const phaseStartMs = Date.now();
    await Promise.all(schedule.faults.map((scheduled) => runFault(phaseStartMs, scheduled)));
    await sleep(phaseStartMs + schedule.durationMs - Date.now(), signal);

    // ---- heal everything, converge, settle ---------------------------------------------------------
    await network.healAll();
    for (const agent of agents) {
      agent.resume();
      agent.freeDisk();
      if (!agent.running && (restartsLeft.get(agent.name) ?? 0) > 0) restartAgent(agent);
    }
    lastHealMs = Math.max(lastHealMs, Date.now());
    log(
      `${at()} fault phase over; every fault healed. Waiting for submissions in flight (≤ ${submitTimeoutMs / 1000} s)`,
    );
    await workload.stop();
    const convergeDeadline = lastHealMs + options.check.convergenceMsMax + 5_000;
    while (Date.now() < convergeDeadline && !(await membersConverged())) await sleep(500, signal);
    log(
      `${at()} ${(await membersConverged()) ? 'membership converged' : 'membership did NOT converge'}; letting tasks finish`,
    );
    const settleDeadline = Date.now() + options.settleMsMax;
    for (;;) {
      const leader = await agreedLeader();
      const agent = agents.find((a) => a.name === leader?.name);
      if (agent) {
        const result = await agent.send('tasks', { timeoutMs: 10_000 });
        const rows =
          result.kind === 'answer' && Array.isArray(result.body)
            ? (result.body as { state?: string }[])
            : null;
        const live = rows?.filter(
          (r) => !['finished', 'failed', 'killed', 'lost'].includes(r.state ?? ''),
        ).length;
        const processes = agents.reduce((sum, a) => sum + a.taskPids().length, 0);
        if (live === 0 && processes === 0) {
          settled = true;
          break;
        }
      }
      if (Date.now() > settleDeadline) break;
      await sleep(1_000, signal);
    }
    // Elections can be under way at any one instant: ask again for a while before calling it no leader.
    const agreeDeadline = Date.now() + 10_000;
    let leader = await agreedLeader();
    while (leader === null && Date.now() < agreeDeadline) {
      await sleep(500, signal);
      leader = await agreedLeader();
    }
    finalFrom = leader?.name ?? null;
    const finals = await Promise.all(
      agents.map(async (agent) => {
        const result = await agent.send('tasks', { timeoutMs: 10_000 });
        if (result.kind !== 'answer' || !Array.isArray(result.body)) return null;
        return [agent.name, (result.body as FinalTask[]).map(toFinalTask)] as const;
      }),
    );
    finalTasks = Object.fromEntries(finals.filter((f) => f !== null));
    log(
      `${at()} ${settled ? 'every task ended' : `tasks still live after ${options.settleMsMax / 1000} s`}; final lists read (leader ${finalFrom ?? 'not agreed'})`,
    );
  } finally {
    finishing = true;
    await workload.stop();
    await observers.stop();
    await network.healAll().catch(() => undefined);
    // Docker tasks wrote their lines in their task directories (on the agents' tmpfs, gone at teardown).
    if (options.docker !== undefined) collectDockerRuns(agents, runsPath);
    await runTeardown();
  }

  const runLines: RunLine[] = [];
  for (const text of readFileSync(runsPath, 'utf8').split('\n')) {
    const line = parseRunLine(text);
    if (line) runLines.push(line);
  }
  const history: History = {
    seed: schedule.seed,
    schedule,
    nodes: names,
    startMs,
    lastHealMs,
    endMs: Date.now(),
    submissions: workload.submissions,
    runLines,
    taskObservations: observers.tasks,
    statusObservations: observers.status,
    membersObservations: observers.members,
    faults: faults.sort((a, b) => a.startMs - b.startMs),
    exits,
    finalTasks,
    finalFrom,
    settled,
  };
  writeFileSync(join(workDir, 'history.json'), JSON.stringify(history));
  const result = check(history, options.check);
  const kept = options.keep || result.failures.length > 0;
  if (!kept) rmSync(workDir, { recursive: true, force: true });
  return { history, result, workDir, kept };
}

/** Appends every docker task's lines, from each node's task directories, to the runs file. */
function collectDockerRuns(agents: readonly ChaosAgent[], runsPath: string): void {
  for (const agent of agents) {
    const tasksDir = join(agent.dataDir, 'tasks');
    if (!existsSync(tasksDir)) continue;
    for (const taskId of readdirSync(tasksDir)) {
      const path = join(tasksDir, taskId, dockerRunsPath);
      if (existsSync(path)) appendFileSync(runsPath, readFileSync(path, 'utf8'));
    }
  }
}

function toFinalTask(row: FinalTask): FinalTask {
  return { id: row.id, name: row.name, state: row.state, node: row.node, attempt: row.attempt };
}
