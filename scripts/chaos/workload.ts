/**
 * The client side of a chaos run: a workload that keeps submitting small tasks (exec, or docker where the
 * agents have engines) through random nodes
 * and records how each submission ended, and observers that poll every node's status, members and tasks.
 *
 * Each task writes its own start, a heartbeat a second and its end to a shared runs file, with its pid and
 * working directory (DATA_DIR/tasks/TASK_ID: which node ran which task), so the checker sees every run
 * whatever the cluster says about it.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { containerSharedDirName } from '../../src/runtime/index.ts';
import type { Random } from '../../src/shared/random.ts';
import type { ChaosAgent } from './agents.ts';
import { taskName } from './check.ts';
import type { MembersObservation, StatusObservation, Submission, TaskObservation } from './history.ts';

/** How long a submission may take: the cluster's own write timeout is 10 s, plus forwarding. */
export const submitTimeoutMs = 15_000;
const statusTimeoutMs = 1_000;
const membersTimeoutMs = 1_000;
/** A task list read may wait for a read barrier (2 s) and then serialize every task. */
const tasksTimeoutMs = 5_000;

/** `sh -c` script of a task: one line per event, `MARK NONCE PID MILLIS DIR`, appended to $CHAOS_RUNS. */
export function taskScript(beats: number): string {
  return runsScript('line() { echo "$1 $CHAOS_NONCE $$ $(date +%s%3N) $PWD" >> "$CHAOS_RUNS"; }', beats);
}

/**
 * A task's life in lines: S, then H after each of `beats` seconds, then E; T when it is stopped — the agent
 * (exec) sends SIGTERM to its process group, the engine (docker) to its process 1, this shell: it says so
 * before going. `line` defines how a line is written.
 */
function runsScript(line: string, beats: number): string {
  return [
    line,
    'line S',
    "trap 'line T; exit 143' TERM",
    'i=0',
    `while [ $i -lt ${beats} ]; do sleep 1 & wait $!; i=$((i+1)); line H; done`,
    'line E',
  ].join('; ');
}

/**
 * The same for a docker task: a container sees neither the harness's runs file nor the host's paths, and
 * busybox's date has no milliseconds. It appends to its directory's share (/shoal/task, which the harness
 * collects from every node's data dir afterwards), names its node and task the way the agent told it
 * (SHOAL_NODE, SHOAL_TASK_ID) in the DIR the checker parses, and takes the time from the kernel's uptime
 * (shared with the host) plus CHAOS_BOOT_MS, the wall clock at boot as the harness reckoned it. Its pid is
 * the container's process 1: a new S line starts a new run.
 */
export function dockerTaskScript(beats: number): string {
  return runsScript(
    'line() { read up rest < /proc/uptime; ms=$((CHAOS_BOOT_MS + ${up%.*}${up#*.}0)); ' +
      'echo "$1 $CHAOS_NONCE $$ $ms /nodes/$SHOAL_NODE/data/tasks/$SHOAL_TASK_ID" >> "$SHOAL_TASK_DIR/chaos-runs"; }',
    beats,
  );
}

/** Where a docker task's lines are, under its task directory on the host. */
export const dockerRunsPath = join(containerSharedDirName, 'chaos-runs');

/** The wall clock at the kernel's boot, in ms: what dockerTaskScript adds its uptime to. */
export function bootTimeMs(
  uptimeText: string = readFileSync('/proc/uptime', 'utf8'),
  nowMs = Date.now(),
): number {
  const uptimeSeconds = Number(uptimeText.split(' ')[0]);
  return Math.round(nowMs - uptimeSeconds * 1000);
}

export interface WorkloadInit {
  readonly agents: readonly ChaosAgent[];
  readonly random: Random;
  readonly runsPath: string;
  readonly submitIntervalMs: number;
  readonly inFlightMax: number;
  /** Share of tasks submitted with restart policy on-failure (the rest never restart). */
  readonly restartShare: number;
  /** Share of tasks that run 15–35 s, longer than the task lease and the leader's grace after it. */
  readonly longShare: number;
  /** Docker tasks of this image, for this share of the tasks; absent: exec tasks only. */
  readonly docker?: { readonly image: string; readonly share: number; readonly bootMs: number };
}

export class Workload {
  readonly submissions: Submission[] = [];
  private readonly init: WorkloadInit;
  private readonly inFlight = new Set<Promise<void>>();
  private timer: NodeJS.Timeout | null = null;
  private counter = 0;

  constructor(init: WorkloadInit) {
    this.init = init;
  }

  start(): void {
    this.timer = setInterval(() => this.tick(), this.init.submitIntervalMs);
  }

  /** Stops submitting and waits for the submissions in flight to end. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await Promise.all([...this.inFlight]);
  }

  private tick(): void {
    // A bounded number in flight: submissions stuck on a paused node must not pile up without end.
    if (this.inFlight.size >= this.init.inFlightMax) return;
    const { agents, random } = this.init;
    const via = agents[random.int(0, agents.length)];
    if (!via) return;
    this.counter++;
    const nonce = String(this.counter).padStart(5, '0');
    const restart = random.next() < this.init.restartShare;
    // Mostly short tasks, and some that outlive the task lease (10 s) and the leader's grace after it:
    // only those can be caught running on two nodes when a node is cut off, paused or loses its agent.
    const beats = random.next() < this.init.longShare ? random.int(15, 36) : random.int(2, 9);
    const cpuMillis = 100 * random.int(1, 3);
    const docker = this.init.docker !== undefined && random.next() < this.init.docker.share;
    const promise = this.submit(via, nonce, restart, beats, cpuMillis, docker).finally(() =>
      this.inFlight.delete(promise),
    );
    this.inFlight.add(promise);
  }

  private async submit(
    via: ChaosAgent,
    nonce: string,
    restart: boolean,
    beats: number,
    cpuMillis: number,
    docker: boolean,
  ): Promise<void> {
    const image = this.init.docker?.image;
    const spec = {
      name: taskName(nonce),
      ...(docker && image !== undefined
        ? {
            driver: 'docker',
            image,
            command: ['sh', '-c', dockerTaskScript(beats)],
            env: { CHAOS_NONCE: nonce, CHAOS_BOOT_MS: String(this.init.docker?.bootMs ?? 0) },
          }
        : {
            driver: 'exec',
            command: ['sh', '-c', taskScript(beats)],
            env: { CHAOS_NONCE: nonce, CHAOS_RUNS: this.init.runsPath },
          }),
      cpuMillis,
      memoryBytes: 32 * 1024 * 1024,
      priority: 50,
      constraints: {},
      ...(restart ? { restart: { policy: 'on-failure', maxRestarts: 3, delayMs: 500 } } : {}),
    };
    const startMs = Date.now();
    const result = await via.send('submit', { body: spec, timeoutMs: submitTimeoutMs });
    const endMs = Date.now();
    const base = { nonce, via: via.name, restart, startMs, endMs };
    if (result.kind === 'answer') {
      const body = result.body as { id?: unknown; error?: { code?: unknown; message?: unknown } } | null;
      if (result.status === 201 && typeof body?.id === 'string') {
        this.submissions.push({ ...base, outcome: 'ack', id: body.id, status: 201, error: null });
        return;
      }
      const code = typeof body?.error?.code === 'string' ? body.error.code : `HTTP${result.status}`;
      const message = typeof body?.error?.message === 'string' ? body.error.message : '';
      this.submissions.push({
        ...base,
        // TIMEOUT is the node saying it does not know whether the write will commit.
        outcome: code === 'TIMEOUT' ? 'unknown' : 'refused',
        id: null,
        status: result.status,
        error: `${code}: ${message}`,
      });
      return;
    }
    this.submissions.push({ ...base, outcome: result.kind, id: null, status: null, error: result.error });
  }
}

interface StatusBody {
  role?: unknown;
  term?: unknown;
  leader?: { name?: unknown } | null;
  commitIndex?: unknown;
  voters?: { name?: unknown }[];
  eventLoopStallMsMax?: unknown;
}

interface TaskRowBody {
  id?: unknown;
  name?: unknown;
  state?: unknown;
  node?: unknown;
  attempt?: unknown;
}

interface MemberBody {
  name?: unknown;
  state?: unknown;
}

/** Polls every node: status often (leaders and terms move fast), members and tasks less often. */
export class Observers {
  readonly status: StatusObservation[] = [];
  readonly tasks: TaskObservation[] = [];
  readonly members: MembersObservation[] = [];
  private readonly agents: readonly ChaosAgent[];
  private stopped = false;
  private readonly loops: Promise<void>[] = [];
  /** Last (attempt, state) per observer life and task: only changes are kept. */
  private readonly lastTaskState = new Map<string, string>();

  constructor(agents: readonly ChaosAgent[]) {
    this.agents = agents;
  }

  start(): void {
    for (const agent of this.agents) {
      this.loops.push(this.loop(300, () => this.pollStatus(agent)));
      this.loops.push(this.loop(1_000, () => this.pollMembers(agent)));
      this.loops.push(this.loop(1_500, () => this.pollTasks(agent)));
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
  }

  /** One poll after another per node and kind: polls of one kind on one node never overlap. */
  private async loop(intervalMs: number, poll: () => Promise<void>): Promise<void> {
    while (!this.stopped) {
      const started = Date.now();
      await poll();
      const left = intervalMs - (Date.now() - started);
      if (left > 0) await new Promise((resolve) => setTimeout(resolve, left));
    }
  }

  private async pollStatus(agent: ChaosAgent): Promise<void> {
    if (!agent.running || agent.paused) return;
    const life = agent.life;
    const sentMs = Date.now();
    const result = await agent.send('status', { timeoutMs: statusTimeoutMs });
    const receivedMs = Date.now();
    if (result.kind !== 'answer' || result.status !== 200) return;
    const body = result.body as StatusBody;
    if (
      typeof body.role !== 'string' ||
      typeof body.term !== 'number' ||
      typeof body.commitIndex !== 'number'
    )
      return;
    this.status.push({
      sentMs,
      receivedMs,
      node: agent.name,
      life,
      role: body.role,
      term: body.term,
      leader: typeof body.leader?.name === 'string' ? body.leader.name : null,
      commitIndex: body.commitIndex,
      voters: (body.voters ?? []).flatMap((v) => (typeof v.name === 'string' ? [v.name] : [])),
      eventLoopStallMsMax: typeof body.eventLoopStallMsMax === 'number' ? body.eventLoopStallMsMax : null,
    });
  }

  private async pollMembers(agent: ChaosAgent): Promise<void> {
    if (!agent.running || agent.paused) return;
    const atMs = Date.now();
    const result = await agent.send('members', { timeoutMs: membersTimeoutMs });
    if (result.kind !== 'answer' || result.status !== 200 || !Array.isArray(result.body)) return;
    const members = (result.body as MemberBody[]).flatMap((m) =>
      typeof m.name === 'string' && typeof m.state === 'string' ? [{ name: m.name, state: m.state }] : [],
    );
    this.members.push({ atMs, observer: agent.name, members });
  }

  private async pollTasks(agent: ChaosAgent): Promise<void> {
    if (!agent.running || agent.paused) return;
    const life = agent.life;
    const atMs = Date.now();
    const result = await agent.send('tasks', { timeoutMs: tasksTimeoutMs });
    if (result.kind !== 'answer' || result.status !== 200 || !Array.isArray(result.body)) return;
    for (const row of result.body as TaskRowBody[]) {
      if (
        typeof row.id !== 'string' ||
        typeof row.name !== 'string' ||
        typeof row.state !== 'string' ||
        typeof row.attempt !== 'number'
      )
        continue;
      const key = `${agent.name}\u0000${life}\u0000${row.id}`;
      const value = `${row.attempt}/${row.state}`;
      if (this.lastTaskState.get(key) === value) continue;
      this.lastTaskState.set(key, value);
      this.tasks.push({
        atMs,
        observer: agent.name,
        life,
        taskId: row.id,
        name: row.name,
        attempt: row.attempt,
        state: row.state,
        node: typeof row.node === 'string' ? row.node : null,
      });
    }
  }
}
