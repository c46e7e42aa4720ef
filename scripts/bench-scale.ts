/**
 * bench:scale — the whole pipeline at scale: real voters (dist/shoal agents on loopback), thousands of
 * simulated nodes from the fleet simulator (scripts/fleet: real membership records, probes, leases and
 * reports; simulated drivers), and J jobs of T tasks submitted through the API (a fifth constrained to a
 * fifth of the nodes). Prints the time to all placed and all running, end-to-end placements/s and the
 * ratio to Nomad's C1M (1,000,000 containers on 5,000 hosts in under 5 minutes, ~3,750/s), the leader's
 * CPU and every voter's peak RSS, the Raft log, snapshots (size, time to take, time for a new node to
 * install), the longest event-loop stall, a node crash that loses its tasks, and a leader SIGKILL.
 *
 *   npm run build && npm run bench:scale -- --nodes 5000 --jobs 1000 --tasks-per-job 1000
 *
 * Flags: --voters 3, --job-concurrency 8, --timeout-s 900, --no-crash, --no-failover, --no-install,
 * --keep (leave the data dirs and logs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import type { JobSpec } from '../src/cluster/index.ts';
import { closeClients, client, cpuTicks, freePort, requireBinary, statusKiB } from './lib/bench.ts';
import { benchTaskSpec, cluster, leaderOf, sleep, start, stopAll, until, type Agent } from './lib/cluster.ts';

const { values } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    jobs: { type: 'string', default: '100' },
    'tasks-per-job': { type: 'string', default: '1000' },
    voters: { type: 'string', default: '3' },
    'job-concurrency': { type: 'string', default: '8' },
    'timeout-s': { type: 'string', default: '900' },
    'no-crash': { type: 'boolean', default: false },
    'no-failover': { type: 'boolean', default: false },
    'no-install': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
  },
});

function positive(name: string, value: string): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < 1) {
    console.error(`bench:scale: --${name} must be a positive whole number, not ${value}`);
    process.exit(2);
  }
  return parsed;
}

const nodes = positive('nodes', values.nodes);
const jobs = positive('jobs', values.jobs);
const tasksPerJob = positive('tasks-per-job', values['tasks-per-job']);
const voterCount = positive('voters', values.voters);
const jobConcurrency = positive('job-concurrency', values['job-concurrency']);
const timeoutMs = positive('timeout-s', values['timeout-s']) * 1000;
const total = jobs * tasksPerJob;
const c1mPerSecond = 1_000_000 / 267; // C1M: 1M containers in 4 min 27 s (Nomad's blog), ~3,750/s

const binary = join(import.meta.dirname, '..', 'dist', 'shoal');
requireBinary(binary);
const root = mkdtempSync(join(tmpdir(), 'shoal-bench-scale-'));
const logDir = join(root, 'logs');
mkdirSync(logDir);
process.env['SHOAL_BENCH_LOG_DIR'] = logDir;
process.env['SHOAL_BENCH_LOG_LEVEL'] = 'info';

const rows: [string, string][] = [];
const row = (what: string, value: string): void => {
  rows.push([what, value]);
  console.log(`  ${what}: ${value}`);
};
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/** user+system CPU seconds of a process so far. */
function cpuSeconds(pid: number): number {
  return cpuTicks(pid) / 100;
}

/** Peak and current resident memory of a process. */
function memory(pid: number): { peakBytes: number; rssBytes: number } {
  return { peakBytes: statusKiB(pid, 'VmHWM') * 1024, rssBytes: statusKiB(pid, 'VmRSS') * 1024 };
}

function dirBytes(path: string): number {
  let sum = 0;
  for (const name of readdirSync(path)) sum += statSync(join(path, name)).size;
  return sum;
}

/** Figures from an agent's log lines (`compacted the log into a snapshot … tookMs=`). */
function logFigures(name: string, message: string): { bytes: number; tookMs: number }[] {
  let text = '';
  try {
    text = readFileSync(join(logDir, `${name}.log`), 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((line) => line.includes(message))
    .map((line) => ({
      bytes: Number(/snapshotBytes=(\d+)/.exec(line)?.[1] ?? NaN),
      tookMs: Number(/tookMs=(\d+)/.exec(line)?.[1] ?? NaN),
    }));
}

interface Counts {
  placed: number;
  running: number;
  pending: number;
  lost: number;
}

/** Instances of the benchmark's jobs by state, from one follower's job list. */
async function counts(api: string): Promise<Counts> {
  const list = await client(api, 60_000).jobs();
  const sum: Counts = { placed: 0, running: 0, pending: 0, lost: 0 };
  for (const job of list) {
    if (!job.name.startsWith('scale-')) continue;
    const states = job.states;
    sum.running += states['running'] ?? 0;
    sum.pending += states['pending'] ?? 0;
    sum.lost += states['lost'] ?? 0;
    sum.placed += (states['assigned'] ?? 0) + (states['starting'] ?? 0) + (states['running'] ?? 0);
  }
  return sum;
}

interface FleetProcess {
  readonly child: ChildProcess;
  send(value: unknown): void;
  /** The next line with this key (ready, crashed) from now on. */
  next(key: string): Promise<Record<string, unknown>>;
  lastStats: Record<string, unknown> | null;
}

function startFleet(agents: readonly Agent[], leader: Agent): FleetProcess {
  const followers = agents.filter((agent) => agent !== leader);
  const child = spawn(
    process.execPath,
    [
      join(import.meta.dirname, 'fleet', 'main.ts'),
      '--nodes',
      String(nodes),
      '--seeds',
      agents.map((agent) => agent.listen).join(','),
      '--events-api',
      [...followers, leader].map((agent) => `unix:${join(agent.dataDir, 'api.sock')}`).join(','),
      '--key-file',
      join(agents[0]?.dataDir ?? '', 'cluster.key'),
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  // A fleet already gone (killed, or crashed: its stderr says why) must not take the benchmark down with an
  // EPIPE on the next line sent to it; the benchmark then times out on what it waited for.
  child.stdin.on('error', () => undefined);
  const waiters = new Map<string, (value: Record<string, unknown>) => void>();
  const fleet: FleetProcess = {
    child,
    lastStats: null,
    send: (value) => child.stdin.write(`${JSON.stringify(value)}\n`),
    next: (key) => new Promise((resolve) => waiters.set(key, resolve)),
  };
  // Read every line as it comes, so the stats are current whenever the benchmark looks.
  createInterface({ input: child.stdout }).on('line', (line) => {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    if ('stats' in parsed) fleet.lastStats = parsed['stats'] as Record<string, unknown>;
    for (const [key, resolve] of waiters) {
      if (!(key in parsed)) continue;
      waiters.delete(key);
      resolve(parsed[key] as Record<string, unknown>);
    }
  });
  return fleet;
}

function jobSpec(index: number): JobSpec {
  return {
    name: `scale-${String(index).padStart(5, '0')}`,
    type: 'batch',
    count: tasksPerJob,
    constraints: { fleet: 'simulated', ...(index % 5 === 0 ? { rack: 'r0' } : {}) },
    task: { driver: 'exec', command: ['sleep', '86400'], cpuMillis: 10, memoryMiB: 16 },
  };
}

let agents: Agent[] = [];
let fleet: FleetProcess | null = null;
try {
  console.log(
    `bench:scale: ${voterCount} real voters, ${nodes} simulated nodes, ${jobs} jobs × ${tasksPerJob} tasks (${total} tasks, a fifth constrained to rack r0)`,
  );
  agents = await cluster(binary, voterCount, root, {
    extra: ['--live-tasks-max', String(Math.max(total * 2, 1000))],
  });
  let leader = await leaderOf(agents);
  const follower = agents.find((agent) => agent !== leader) ?? leader;
  const pids = new Map(agents.map((agent) => [agent.name, agent.process?.pid ?? 0]));
  const leaderPid = pids.get(leader.name) ?? 0;

  const fleetStartedMs = Date.now();
  fleet = startFleet(agents, leader);
  const ready = await fleet.next('ready');
  await until(
    `${nodes} simulated nodes registered`,
    async () => {
      const members = await client(follower.api, 60_000).members();
      const alive = members.filter(
        (member) => member.labels['fleet'] === 'simulated' && member.state === 'alive',
      );
      return alive.length >= nodes ? alive.length : null;
    },
    600_000,
  );
  row(
    'fleet up (records pushed; all alive to a follower)',
    `${seconds(Date.now() - fleetStartedMs)} (push ${String(ready['startMs'])} ms)`,
  );
  // The leader registers nodes once they renew: give it a lease period.
  await sleep(3000);

  const startStatus = await client(leader.api).status();
  const cpuAtStart = cpuSeconds(leaderPid);
  const submittedAtMs = Date.now();
  let next = 0;
  let retriedSubmissions = 0;
  await Promise.all(
    Array.from({ length: jobConcurrency }, async (_, lane) => {
      const api = agents[lane % agents.length]?.api ?? leader.api;
      while (next < jobs) {
        const index = next++;
        // A write whose outcome is unknown (a busy leader) is sent again: the same spec applies once.
        for (let attempt = 0; ; attempt++) {
          try {
            await client(api, 60_000).applyJob(jobSpec(index));
            break;
          } catch (error) {
            if (attempt >= 5) throw error;
            retriedSubmissions++;
          }
        }
      }
    }),
  );
  const submitMs = Date.now() - submittedAtMs;
  row(
    'all jobs accepted by the API (submissions sent again)',
    `${seconds(submitMs)} (${retriedSubmissions})`,
  );

  let placedMs: number | null = null;
  let runningMs: number | null = null;
  let last: Counts = { placed: 0, running: 0, pending: 0, lost: 0 };
  let lastPrintMs = 0;
  while (runningMs === null && Date.now() - submittedAtMs < timeoutMs) {
    last = await counts(follower.api).catch(() => last);
    const nowMs = Date.now();
    if (placedMs === null && last.placed >= total) placedMs = nowMs - submittedAtMs;
    if (last.running >= total) runningMs = nowMs - submittedAtMs;
    if (nowMs - lastPrintMs > 10_000) {
      lastPrintMs = nowMs;
      const stats = fleet.lastStats ?? {};
      console.log(
        `    … ${seconds(nowMs - submittedAtMs)}: ${last.placed} placed, ${last.running} running, ${last.pending} pending (fleet: ${String(stats['tasksRunning'])} running, reports failed ${String(stats['reportsFailed'])}, resyncs ${String(stats['resyncs'])}, stream breaks ${String(stats['eventStreamBreaks'])}, lost after a lapsed lease ${String(stats['reportedLost'])})`,
      );
    }
    await sleep(1000);
  }
  const cpuUsed = cpuSeconds(leaderPid) - cpuAtStart;
  const endStatus = await client(leader.api).status();
  const elapsedMs = Date.now() - submittedAtMs;
  row(
    'time to all placed',
    placedMs === null ? `not within ${seconds(timeoutMs)} (${last.placed} placed)` : seconds(placedMs),
  );
  row(
    'time to all running',
    runningMs === null ? `not within ${seconds(timeoutMs)} (${last.running} running)` : seconds(runningMs),
  );
  if (runningMs !== null) {
    const rate = total / (runningMs / 1000);
    row(
      'end-to-end placements/s (submit → running)',
      `${rate.toFixed(0)} (C1M ~3,750/s: ratio ${(rate / c1mPerSecond).toFixed(2)})`,
    );
  }
  row(
    'leader CPU during the run',
    `${cpuUsed.toFixed(1)} s (${((100 * cpuUsed) / (elapsedMs / 1000)).toFixed(0)} % of a core)`,
  );
  for (const agent of agents) {
    const { peakBytes, rssBytes } = memory(pids.get(agent.name) ?? 0);
    const per = total > 0 ? ` (${(peakBytes / total / 1024).toFixed(2)} KiB per task at peak)` : '';
    row(
      `${agent.name}${agent === leader ? ' (leader)' : ''} RSS peak / now`,
      `${mib(peakBytes)} / ${mib(rssBytes)}${per}`,
    );
  }
  row('Raft entries committed during the run', String(endStatus.commitIndex - startStatus.commitIndex));
  row('leader raft/ on disk (WAL + snapshot)', mib(dirBytes(join(leader.dataDir, 'raft'))));
  const snapshots = logFigures(leader.name, 'compacted the log into a snapshot');
  const lastSnapshot = snapshots.at(-1);
  if (lastSnapshot)
    row(
      'snapshots taken by the leader / last size / last and longest take',
      `${snapshots.length} / ${mib(lastSnapshot.bytes)} / ${lastSnapshot.tookMs} ms and ${Math.max(...snapshots.map((s) => s.tookMs))} ms`,
    );
  const statuses = await Promise.all(agents.map((agent) => client(agent.api).status()));
  row(
    'longest event-loop stall between Raft ticks (per voter)',
    statuses.map((s) => `${s.name} ${s.eventLoopStallMsMax} ms`).join(', '),
  );
  if (fleet.lastStats) {
    const stats = fleet.lastStats;
    row(
      'fleet: reports committed / failed, renewals failed',
      `${String(stats['reportsCommitted'])} / ${String(stats['reportsFailed'])}, ${String(stats['renewalsFailed'])}`,
    );
    row('fleet RSS', mib(Number(stats['rssBytes'])));
  }

  // A leader alone with every task live: what it costs at rest.
  const idleStart = cpuSeconds(leaderPid);
  await sleep(10_000);
  row(
    'leader CPU at rest with every task live (10 s)',
    `${(((cpuSeconds(leaderPid) - idleStart) / 10) * 100).toFixed(1)} % of a core`,
  );

  if (!values['no-install']) {
    const newcomer: Agent = {
      name: `b${voterCount + 1}`,
      api: `127.0.0.1:${await freePort()}`,
      listen: `127.0.0.1:${await freePort()}`,
      dataDir: join(root, `b${voterCount + 1}-new`),
      process: null,
    };
    const key = readFileSync(join(agents[0]?.dataDir ?? '', 'cluster.key'), 'utf8').trim();
    const target = (await client(leader.api).status()).commitIndex;
    const joinedMs = Date.now();
    start(binary, newcomer, ['--join', leader.listen, '--key', key, '--live-tasks-max', String(total * 2)]);
    await until(
      'the new node to catch up',
      async () => {
        const status = await client(`unix:${join(newcomer.dataDir, 'api.sock')}`, 5000).status();
        return status.appliedIndex >= target ? status : null;
      },
      600_000,
    );
    const installs = logFigures(newcomer.name, 'installed a snapshot from the leader');
    row(
      'a new node: start → caught up (snapshot install alone)',
      `${seconds(Date.now() - joinedMs)} (${installs.map((i) => `${i.tookMs} ms for ${mib(i.bytes)}`).join(', ') || 'no snapshot'})`,
    );
    newcomer.process?.kill('SIGKILL');
  }

  if (!values['no-crash']) {
    const crashed = await (async () => {
      fleet.send({ crash: true });
      return fleet.next('crashed');
    })();
    const crashedAtMs = Number(crashed['atMs']);
    const lostTasks = Number(crashed['tasks']);
    await until(
      'the lost tasks to be noticed',
      async () => ((await counts(follower.api)).running < total ? true : null),
      60_000,
    );
    const backMs = await until(
      'the lost tasks to run elsewhere',
      async () => ((await counts(follower.api)).running >= total ? Date.now() - crashedAtMs : null),
      120_000,
    );
    row(
      `node crash (${String(crashed['name'])}, ${lostTasks} tasks) → all running again`,
      `${seconds(backMs)} (the lease's 11 s included)`,
    );
  }

  if (!values['no-failover']) {
    const survivors = agents.filter((agent) => agent !== leader);
    const killedMs = Date.now();
    process.kill(leaderPid, 'SIGKILL');
    let accepted: string | null = null;
    for (let attempt = 0; accepted === null; attempt++) {
      const api = survivors[attempt % survivors.length]?.api ?? '';
      try {
        const answer = await client(api, 3000).submit(
          benchTaskSpec(`failover-${attempt}`, { fleet: 'simulated' }),
        );
        accepted = answer.ids[0] ?? null;
      } catch {
        await sleep(10);
      }
    }
    const acceptedMs = Date.now() - killedMs;
    const taskId = accepted;
    await until(
      'the allocator to place again',
      async () => {
        const task = await client(survivors[0]?.api ?? '', 3000).task(taskId);
        return task.state !== 'pending' ? true : null;
      },
      60_000,
    );
    row('leader SIGKILL → next accepted submission', seconds(acceptedMs));
    row('leader SIGKILL → allocator placing again', seconds(Date.now() - killedMs));
    leader = survivors[0] ?? leader;
  }

  console.log('\n| figure | value |\n|---|---|');
  for (const [what, value] of rows) console.log(`| ${what} | ${value} |`);
} finally {
  fleet?.child.kill('SIGTERM');
  // SIGTERM first, so agents run with NODE_OPTIONS=--cpu-prof write their profiles.
  for (const agent of agents) agent.process?.kill('SIGTERM');
  await sleep(5000);
  await stopAll(agents);
  closeClients();
  if (values.keep) console.log(`kept ${root}`);
  else rmSync(root, { recursive: true, force: true });
}
