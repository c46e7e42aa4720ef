/**
 * bench:membership — for N = 10, 30, 50 real agents (dist/shoal, --cpu 0.1 --memory 64), each in its own
 * network namespace on one bridge (as root; on 127.0.0.1 with distinct ports otherwise, without wire
 * byte counts), measures:
 * - join: the Nth agent joins a converged cluster of N−1; time from its spawn, and from its first
 *   contact with the seed, until all N see N alive;
 * - failure detection: SIGKILL one agent, time until every survivor sees it dead (and until the seed
 *   does, Serf's measure); the victim restarts between rounds;
 * - false positives: SIGSTOP one agent for 1 s (twice), and a burst of busy loops on every core for 30 s:
 *   any "dead" anywhere counts;
 * - bytes sent per node per second at steady state: membership's own counter (SWIM frames and
 *   push-pulls) and, in namespaces, everything on the node's link (Raft too, with TCP/IP headers).
 * Then runs Serf (Debian's serf, ../shared/anchors/serf-convergence.sh) for the same N in the same run.
 * Times come from the agents' logs (each state change is a line with a millisecond timestamp), so
 * nothing polls the agents while they are measured.
 *
 *   npm run build && npm run bench:membership [-- --sizes 10,30,50 --rounds 10 --burst-seconds 30]
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { cpuTicks } from './lib/bench.ts';
import { Agent, waitUntil, type LoggedTransition } from './lib/membership-agents.ts';
import { NetnsNetwork, cleanupStale, netnsUnavailableReason } from './lib/netns.ts';

const root = resolve(import.meta.dirname, '..');
const execFileAsync = promisify(execFile);
const { values } = parseArgs({
  options: {
    sizes: { type: 'string', default: '10,30,50' },
    rounds: { type: 'string', default: '10' },
    'stop-rounds': { type: 'string', default: '2' },
    'burst-seconds': { type: 'string', default: '30' },
    'bytes-seconds': { type: 'string', default: '25' },
    binary: { type: 'string', default: join(root, 'dist', 'shoal') },
    serf: { type: 'boolean', default: true },
    'no-serf': { type: 'boolean', default: false },
    loopback: { type: 'boolean', default: false },
    'time-limit-minutes': { type: 'string', default: '25' },
  },
});
const sizes = values.sizes.split(',').map(Number);
const rounds = Number(values.rounds);
const stopRounds = Number(values['stop-rounds']);
const burstSeconds = Number(values['burst-seconds']);
const bytesSeconds = Number(values['bytes-seconds']);
const binary = values.binary;
const runSerf = values.serf && !values['no-serf'];
const netnsReason = values.loopback ? 'asked for --loopback' : netnsUnavailableReason();
const clusterPort = 7946;
const apiPort = 7947;

interface SizeResult {
  n: number;
  joinFromSpawnS: number;
  joinFromContactS: number;
  detectAllS: number[];
  detectSeedS: number[];
  detectEachS: number[];
  rejoinS: number[];
  stopDead: number;
  stopSuspect: number;
  burstDead: number;
  burstSuspect: number;
  membershipBytesPerNodePerS: number;
  wireBytesPerNodePerS: number | null;
  serf: { convergeS: number | null; detectS: number | null; note: string };
}

// ---- cleanup on any exit ---------------------------------------------------------------------------

const live = {
  agents: [] as Agent[],
  net: null as NetnsNetwork | null,
  dir: '',
  hogs: [] as ChildProcess[],
  serf: null as ChildProcess | null,
  serfAgents: [] as ChildProcess[],
};

function cleanup(): void {
  for (const hog of live.hogs) hog.kill('SIGKILL');
  if (live.serf) killGroup(live.serf);
  for (const agent of live.serfAgents) agent.kill('SIGKILL');
  for (const agent of live.agents) if (agent.running) agent.signal('SIGKILL');
  live.net?.tearDown();
  live.net = null;
  if (live.dir !== '' && process.env['SHOAL_BENCH_KEEP'] === undefined)
    rmSync(live.dir, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    cleanup();
    process.exit(130);
  });
}
const timeLimit = setTimeout(
  () => {
    console.error(`the benchmark exceeded ${values['time-limit-minutes']} minutes; stopping`);
    cleanup();
    process.exit(2);
  },
  Number(values['time-limit-minutes']) * 60_000,
);
timeLimit.unref();

// ---- helpers ---------------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN;
}

const views = new WeakMap<Agent, { count: number; view: Map<string, string> }>();

/** Each agent's view from its log: subject name → last logged state. */
function viewOf(agent: Agent): Map<string, string> {
  const transitions = agent.transitions();
  const cached = views.get(agent);
  if (cached?.count === transitions.length) return cached.view;
  const view = new Map<string, string>();
  for (const t of transitions) view.set(t.subject, t.state);
  views.set(agent, { count: transitions.length, view });
  return view;
}

function allSee(observers: readonly Agent[], subject: string, state: string): boolean {
  return observers.every((agent) => agent.name === subject || viewOf(agent).get(subject) === state);
}

/** When `observer` first logged `subject` in `state` at or after `sinceMs`. */
function firstAt(observer: Agent, subject: string, state: string, sinceMs: number): number | null {
  const hit = observer
    .transitions()
    .find((t) => t.subject === subject && t.state === state && t.atMs >= sinceMs);
  return hit?.atMs ?? null;
}

/** Replays every agent's log in time order; the first time ≥ sinceMs when all see all alive. */
function firstAllAlive(agents: readonly Agent[], sinceMs: number): number | null {
  const names = new Set(agents.map((a) => a.name));
  const views = new Map(agents.map((a) => [a.name, new Map<string, string>()]));
  let notAlive = agents.length * (agents.length - 1);
  const events = agents.flatMap((a) => a.transitions()).sort((a, b) => a.atMs - b.atMs);
  for (const event of events) {
    const view = views.get(event.observer);
    if (!view || !names.has(event.subject) || event.subject === event.observer) continue;
    const before = view.get(event.subject) === 'alive';
    view.set(event.subject, event.state);
    const after = event.state === 'alive';
    if (before !== after) notAlive += after ? -1 : 1;
    if (notAlive === 0 && event.atMs >= sinceMs) return event.atMs;
  }
  return null;
}

function transitionsSince(agents: readonly Agent[], sinceMs: number, untilMs = Infinity): LoggedTransition[] {
  return agents.flatMap((a) => a.transitions()).filter((t) => t.atMs >= sinceMs && t.atMs <= untilMs);
}

interface CpuSample {
  atMs: number;
  busyTicks: number;
  /** CPU clock ticks (100 per second) used so far by each agent process, by pid. */
  agentTicks: Map<number, number>;
}

/** Machine-wide busy CPU and the agents' share, to qualify the figures. */
function cpuSample(agents: readonly Agent[]): CpuSample {
  const fields = (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '')
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const idle = (fields[3] ?? 0) + (fields[4] ?? 0);
  const busyTicks = fields.reduce((a, b) => a + b, 0) - idle;
  const agentTicks = new Map<number, number>();
  for (const agent of agents) {
    const pid = agent.process?.pid;
    if (pid === undefined || !agent.running) continue;
    try {
      agentTicks.set(pid, cpuTicks(pid));
    } catch {
      // It exited between the check and the read.
    }
  }
  return { atMs: Date.now(), busyTicks, agentTicks };
}

/**
 * Cores used by the agents, and by everything else on the machine, between two samples. An agent
 * restarted in between counts from zero; one killed in between is not counted after its last sample.
 */
function coresUsed(from: CpuSample, to: CpuSample): { agents: number; others: number } {
  const seconds = (to.atMs - from.atMs) / 1000;
  let ticks = 0;
  for (const [pid, now] of to.agentTicks) ticks += now - (from.agentTicks.get(pid) ?? 0);
  const agents = ticks / 100 / seconds;
  return { agents, others: Math.max(0, (to.busyTicks - from.busyTicks) / 100 / seconds - agents) };
}

/** Waits until no agent has logged a state change other than "alive" for 5 s (at most `timeoutMs`). */
async function quiet(agents: readonly Agent[], timeoutMs: number, quietMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const lastTrouble = Math.max(
      0,
      ...transitionsSince(agents, 0)
        .filter((t) => t.state !== 'alive')
        .map((t) => t.atMs),
    );
    if (Date.now() - lastTrouble >= quietMs) return;
    await sleep(500);
  }
  console.log(`the cluster did not settle within ${timeoutMs / 1000} s; measuring anyway`);
}

async function apiUp(agent: Agent): Promise<boolean> {
  try {
    await agent.members();
    return true;
  } catch {
    return false;
  }
}

// ---- one cluster size ------------------------------------------------------------------------------

async function benchSize(n: number): Promise<SizeResult> {
  const dir = mkdtempSync(join(tmpdir(), `shoal-bench-members-${n}-`));
  live.dir = dir;
  const key = randomBytes(32).toString('hex');
  let net: NetnsNetwork | null = null;
  if (netnsReason === null) {
    cleanupStale();
    net = new NetnsNetwork(n);
    net.setUp();
    live.net = net;
  }
  const agents: Agent[] = [];
  for (let i = 1; i <= n; i++) {
    const host = net?.hosts[i - 1];
    const address = host?.address ?? '127.0.0.1';
    const port = host ? clusterPort : 20_000 + i * 2;
    agents.push(
      new Agent({
        name: `n${String(i).padStart(2, '0')}`,
        dir: join(dir, `n${i}`),
        listen: `${address}:${port}`,
        api: `${address}:${host ? apiPort : port + 1}`,
        key,
        ...(i === 1
          ? {}
          : { join: `${net?.hosts[0]?.address ?? '127.0.0.1'}:${host ? clusterPort : 20_002}` }),
        command: [binary],
        logLevel: 'debug',
        ...(net && host ? { network: { net, host } } : {}),
      }),
    );
  }
  live.agents = agents;
  const [seed] = agents;
  if (!seed) throw new Error('no agents');
  const last = agents[n - 1] as Agent;
  console.log(`\n== N = ${n} (${net ? 'network namespaces' : 'loopback'}) ==`);

  // Form the cluster of N − 1, one agent at a time so start-up does not starve the machine. An agent
  // that gives up joining (the machine too busy) is started again.
  const startAndWait = async (agent: Agent): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      agent.start();
      try {
        await waitUntil(
          `${agent.name} to answer`,
          async () => (await apiUp(agent)) || (!agent.running && 'exited'),
          60_000,
        );
        if (agent.running) return;
      } catch (error) {
        if (attempt >= 3) throw error;
      }
      await agent.kill();
      console.log(`${agent.name} did not come up (attempt ${attempt}); starting it again`);
    }
  };
  await startAndWait(seed);
  for (const agent of agents.slice(1, -1)) {
    await startAndWait(agent);
    await sleep(300);
  }
  const formed = agents.slice(0, -1);
  await waitUntil(
    `${n - 1} agents to see each other alive`,
    () =>
      formed.every((observer) =>
        formed.every((subject) => observer === subject || viewOf(observer).get(subject.name) === 'alive'),
      ),
    60_000,
    200,
  );
  await quiet(formed, 60_000);

  // Join: the Nth agent into the converged cluster.
  last.start();
  await waitUntil(
    `all ${n} to see all alive`,
    () => agents.every((subject) => allSee(agents, subject.name, 'alive')),
    60_000,
    50,
  );
  // The first instant, from the logs, at which every agent's view had all N alive.
  const convergedAt = firstAllAlive(agents, last.spawnedAtMs) ?? Date.now();
  const firstContact = Math.min(...last.transitions().map((t) => t.atMs));
  const joinFromSpawnS = (convergedAt - last.spawnedAtMs) / 1000;
  const joinFromContactS = (convergedAt - firstContact) / 1000;
  console.log(
    `join: ${joinFromSpawnS.toFixed(2)} s from spawn, ${joinFromContactS.toFixed(3)} s from first contact`,
  );

  // Steady-state bytes. A node that has just joined is slow to answer for a while when N agents share 2
  // cores (its first handshakes, compilation, catching up the log), and the suspicions of it and its
  // refutations are gossiped to all: wait for 15 s without any before measuring what the steady state
  // costs; the line below counts any that still happen in the window.
  await quiet(agents, 120_000, 15_000);
  const windowStart = Date.now();
  const cpuBefore = cpuSample(agents);
  const wireBefore = net ? net.hosts.map((host) => net.txBytes(host)) : null;
  await sleep(bytesSeconds * 1000);
  const windowEnd = Date.now();
  const steadyCores = coresUsed(cpuBefore, cpuSample(agents));
  const wireAfter = net ? net.hosts.map((host) => net.txBytes(host)) : null;
  const wireBytesPerNodePerS =
    wireBefore && wireAfter
      ? wireAfter.reduce((sum, after, i) => sum + after - (wireBefore[i] ?? 0), 0) /
        n /
        ((windowEnd - windowStart) / 1000)
      : null;
  const rates: number[] = [];
  for (const agent of agents) {
    const samples = agent.traffic().filter((s) => s.atMs >= windowStart && s.atMs <= windowEnd);
    const first = samples[0];
    const lastSample = samples[samples.length - 1];
    if (first && lastSample && lastSample.atMs > first.atMs)
      rates.push((lastSample.bytesSent - first.bytesSent) / ((lastSample.atMs - first.atMs) / 1000));
  }
  const membershipBytesPerNodePerS = rates.reduce((a, b) => a + b, 0) / Math.max(1, rates.length);
  // Each suspicion costs a signed claim and a refuting record, gossiped to every member: on a host where
  // N agents share 2 cores, late acks show up here, and the bytes with them.
  const suspectedInWindow = agents
    .flatMap((agent) => agent.transitions())
    .filter((t) => t.state === 'suspect' && t.atMs >= windowStart && t.atMs <= windowEnd);
  const suspectedCounts = new Map<string, number>();
  for (const t of suspectedInWindow)
    suspectedCounts.set(t.subject, (suspectedCounts.get(t.subject) ?? 0) + 1);
  const suspicionsInWindow =
    `${suspectedInWindow.length}, of ${suspectedCounts.size} members` +
    (suspectedCounts.size === 0
      ? ''
      : `: ${[...suspectedCounts]
          .sort((a, b) => b[1] - a[1])
          .slice(0, 3)
          .map(([name, count]) => `${name} ×${count}`)
          .join(', ')}`);
  console.log(
    `steady state: the ${n} agents use ${steadyCores.agents.toFixed(2)} cores, other processes ${steadyCores.others.toFixed(2)}`,
  );
  console.log(
    `bytes/node/s: membership ${membershipBytesPerNodePerS.toFixed(0)}` +
      (wireBytesPerNodePerS === null ? '' : `, all traffic on the link ${wireBytesPerNodePerS.toFixed(0)}`) +
      ` (suspect transitions meanwhile: ${suspicionsInWindow})`,
  );

  // Failure detection after SIGKILL. Each round starts from a settled cluster.
  const detectAllS: number[] = [];
  const detectSeedS: number[] = [];
  const detectEachS: number[] = [];
  const rejoinS: number[] = [];
  const roundsCpuStart = cpuSample(agents);
  for (let round = 0; round < rounds; round++) {
    const victim = agents[1 + ((round * 7) % (n - 1))] as Agent;
    const survivors = agents.filter((a) => a !== victim);
    await quiet(agents, 30_000);
    await sleep(Math.random() * 1000);
    const killedAt = Date.now();
    victim.signal('SIGKILL');
    await waitUntil(
      `${victim.name} to be seen dead`,
      () => allSee(survivors, victim.name, 'dead'),
      30_000,
      50,
    );
    const times = survivors.map(
      (observer) => ((firstAt(observer, victim.name, 'dead', killedAt) ?? NaN) - killedAt) / 1000,
    );
    detectEachS.push(...times);
    detectAllS.push(Math.max(...times));
    detectSeedS.push(((firstAt(seed, victim.name, 'dead', killedAt) ?? NaN) - killedAt) / 1000);
    await victim.exited(10_000);
    victim.start();
    await waitUntil(`${victim.name} to be back`, () => allSee(survivors, victim.name, 'alive'), 60_000, 50);
    rejoinS.push(
      (Math.max(...survivors.map((o) => firstAt(o, victim.name, 'alive', victim.spawnedAtMs) ?? 0)) -
        victim.spawnedAtMs) /
        1000,
    );
    console.log(
      `round ${round + 1}: ${victim.name} SIGKILLed → all ${n - 1} survivors see it dead in ${(detectAllS.at(-1) ?? NaN).toFixed(2)} s ` +
        `(seed ${(detectSeedS.at(-1) ?? NaN).toFixed(2)} s); restarted → alive everywhere ${(rejoinS.at(-1) ?? NaN).toFixed(2)} s after spawn`,
    );
  }

  const roundsCores = coresUsed(roundsCpuStart, cpuSample(agents));
  console.log(
    `during the rounds: agents ${roundsCores.agents.toFixed(2)} cores, other processes ${roundsCores.others.toFixed(2)}`,
  );

  // False positives: SIGSTOP for one second.
  await quiet(agents, 30_000);
  const stopStart = Date.now();
  for (let round = 0; round < stopRounds; round++) {
    const victim = agents[2 + round] as Agent;
    victim.signal('SIGSTOP');
    await sleep(1000);
    victim.signal('SIGCONT');
    await sleep(12_000);
  }
  const stopSeen = transitionsSince(agents, stopStart);
  const stopDead = stopSeen.filter((t) => t.state === 'dead').length;
  const stopSuspect = stopSeen.filter((t) => t.state === 'suspect').length;
  console.log(`SIGSTOP 1 s × ${stopRounds}: ${stopDead} dead, ${stopSuspect} suspect transitions`);

  // False positives: every core saturated.
  await quiet(agents, 30_000);
  const burstStart = Date.now();
  const burstCpuStart = cpuSample(agents);
  const cores = availableParallelism();
  for (let i = 0; i < cores; i++) {
    live.hogs.push(
      spawn(
        process.execPath,
        ['-e', `const end = Date.now() + ${burstSeconds * 1000}; while (Date.now() < end);`],
        {
          stdio: 'ignore',
          // Each in its own session (scheduling autogroup), as each agent is: equals on the CPU.
          detached: true,
        },
      ),
    );
  }
  await sleep(burstSeconds * 1000);
  const burstCores = coresUsed(burstCpuStart, cpuSample(agents));
  await sleep(10_000);
  for (const hog of live.hogs) hog.kill('SIGKILL');
  live.hogs = [];
  const burstSeen = transitionsSince(agents, burstStart);
  const burstDead = burstSeen.filter((t) => t.state === 'dead').length;
  const burstSuspect = burstSeen.filter((t) => t.state === 'suspect').length;
  console.log(
    `CPU burst ${cores} × ${burstSeconds} s: ${burstDead} dead, ${burstSuspect} suspect transitions ` +
      `(agents got ${burstCores.agents.toFixed(2)} cores, the busy loops and others ${burstCores.others.toFixed(2)})`,
  );

  for (const agent of agents) agent.signal('SIGKILL');
  for (const agent of agents) await agent.exited(10_000).catch(() => undefined);
  net?.tearDown();
  live.net = null;
  live.agents = [];
  if (process.env['SHOAL_BENCH_KEEP'] === undefined) rmSync(dir, { recursive: true, force: true });
  else console.log(`logs kept in ${dir}`);
  live.dir = '';

  return {
    n,
    joinFromSpawnS,
    joinFromContactS,
    detectAllS,
    detectSeedS,
    detectEachS,
    rejoinS,
    stopDead,
    stopSuspect,
    burstDead,
    burstSuspect,
    membershipBytesPerNodePerS,
    wireBytesPerNodePerS,
    serf: runSerf ? await serf(n) : { convergeS: null, detectS: null, note: 'not run (--no-serf)' },
  };
}

/**
 * Runs the Serf anchor once, in its own process group with its own TMPDIR, so that on a timeout the
 * script and every serf agent it started are killed and its files removed (the script's own cleanup
 * does not run when it is killed).
 */
async function serfOnce(path: string, n: number, timeoutMs: number): Promise<string> {
  const tmp = mkdtempSync(join(tmpdir(), 'shoal-bench-serf-'));
  try {
    return await new Promise<string>((done, fail) => {
      const child = spawn('bash', [path, String(n)], {
        env: { ...process.env, TMPDIR: tmp },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      live.serf = child;
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (out += chunk.toString()));
      const timer = setTimeout(() => {
        killGroup(child);
        fail(new Error(`no result within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      child.once('exit', (code) => {
        clearTimeout(timer);
        killGroup(child);
        if (code === 0) done(out);
        else fail(new Error(`exit code ${code ?? 'null'}: ${out.slice(-200)}`));
      });
    });
  } finally {
    live.serf = null;
    rmSync(tmp, { recursive: true, force: true });
  }
}

function killGroup(child: ChildProcess): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // The group is gone already.
  }
}

async function serf(n: number): Promise<SizeResult['serf']> {
  const script = resolve(root, '..', 'shared', 'anchors', 'serf-convergence.sh');
  const fallback = '/work/shared/anchors/serf-convergence.sh';
  const path = existsSync(script) ? script : fallback;
  try {
    execFileSync('serf', ['version'], { stdio: 'ignore' });
  } catch {
    return { convergeS: null, detectS: null, note: 'serf is not installed (apt-get install -y serf)' };
  }
  // The script starts every agent at once; on a busy machine a joiner can start before agent 0 listens,
  // fail to join and exit, and the script then waits forever. Such a run times out and is retried.
  const attemptsMax = 3;
  let lastError = '';
  for (let attempt = 1; attempt <= attemptsMax; attempt++) {
    try {
      const out = await serfOnce(path, n, (60 + n) * 1000);
      const converge = /converge_s=([\d.]+)/.exec(out)?.[1];
      const detect = /detect_failed_s=([\d.]+)/.exec(out)?.[1];
      console.log(`serf N=${n} (attempt ${attempt}): ${out.trim().replace(/\n/g, '; ')}`);
      return {
        convergeS: converge === undefined ? null : Number(converge),
        detectS: detect === undefined ? null : Number(detect),
        note: 'all agents started at once; convergence from the first start; detection by agent 0 only',
      };
    } catch (error) {
      lastError = error instanceof Error ? error.message : String(error);
      console.log(`serf N=${n}: attempt ${attempt} failed (${lastError.split('\n')[0] ?? ''})`);
    }
  }
  try {
    const direct = await serfDirect(n);
    console.log(
      `serf N=${n} (in-bench, agent 0 first): converge_s=${direct.convergeS.toFixed(3)} detect_failed_s=${direct.detectS.toFixed(3)}`,
    );
    return {
      ...direct,
      note:
        `the anchor script failed ${attemptsMax} times (${lastError.split('\n')[0] ?? ''}); measured here the same way, ` +
        'except that agent 0 is started and listening before the others (convergence counted from then)',
    };
  } catch (error) {
    return { convergeS: null, detectS: null, note: `serf failed: ${String(error).slice(0, 200)}` };
  }
}

/**
 * The anchor's measurement, without its start-up race: agent 0 first, then N − 1 agents joining it at
 * once; converged when agents 0, N/2 and N − 1 each list N alive; then agent N − 1 is SIGKILLed and
 * timed until agent 0 lists it failed.
 */
async function serfDirect(n: number): Promise<{ convergeS: number; detectS: number }> {
  const basePort = 18_946;
  const rpcBase = 28_373;
  const agents: ChildProcess[] = [];
  const start = (i: number): void => {
    const args = [
      'agent',
      '-node',
      `n${i}`,
      '-bind',
      `127.0.0.1:${basePort + i}`,
      '-rpc-addr',
      `127.0.0.1:${rpcBase + i}`,
    ];
    if (i > 0) args.push('-join', `127.0.0.1:${basePort}`);
    agents.push(spawn('serf', args, { stdio: 'ignore', detached: true }));
  };
  const members = async (i: number, status: string): Promise<string[]> => {
    try {
      const { stdout } = await execFileAsync(
        'serf',
        ['members', '-rpc-addr', `127.0.0.1:${rpcBase + i}`, '-status', status],
        {
          timeout: 5000,
        },
      );
      return stdout.split('\n').filter((line) => line.trim() !== '');
    } catch {
      return [];
    }
  };
  live.serfAgents = agents;
  try {
    start(0);
    await waitUntil(
      'serf agent 0 to answer',
      async () => (await members(0, 'alive')).length === 1,
      30_000,
      20,
    );
    const t0 = Date.now();
    for (let i = 1; i < n; i++) start(i);
    const sampled = [0, Math.floor(n / 2), n - 1];
    await waitUntil(
      `serf to converge at N=${n}`,
      async () =>
        (await Promise.all(sampled.map((i) => members(i, 'alive')))).every((list) => list.length >= n),
      120_000,
      50,
    );
    const convergeS = (Date.now() - t0) / 1000;
    const victim = agents[n - 1];
    victim?.kill('SIGKILL');
    const t2 = Date.now();
    await waitUntil(
      'serf agent 0 to list the victim failed',
      async () => (await members(0, 'failed')).some((line) => line.startsWith(`n${n - 1} `)),
      120_000,
      50,
    );
    return { convergeS, detectS: (Date.now() - t2) / 1000 };
  } finally {
    for (const agent of agents) agent.kill('SIGKILL');
    live.serfAgents = [];
  }
}

// ---- main ------------------------------------------------------------------------------------------

if (!existsSync(binary)) {
  console.error(`${binary} does not exist: run npm run build first`);
  process.exit(1);
}
if (netnsReason !== null) console.log(`agents on 127.0.0.1 (${netnsReason}); wire bytes are not measured`);
const startedAt = Date.now();
const results: SizeResult[] = [];
for (const n of sizes) results.push(await benchSize(n));

const f = (x: number | null, digits = 2): string => (x === null || Number.isNaN(x) ? '–' : x.toFixed(digits));
console.log(
  `\n## bench:membership (${((Date.now() - startedAt) / 60_000).toFixed(1)} min, ${availableParallelism()} cores)\n`,
);
console.log(
  '| N | join (spawn → all see all) | join (first contact → all) | detect SIGKILL, all survivors p50 / p99 (max) | seed sees dead p50 | each survivor p50 / p99 | false alarms: SIGSTOP 1 s / CPU burst (suspect transitions) | bytes/node/s membership | bytes/node/s on the link | serf converge | serf detect |',
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  console.log(
    `| ${r.n} | ${f(r.joinFromSpawnS)} s | ${f(r.joinFromContactS, 3)} s | ${f(percentile(r.detectAllS, 0.5))} / ${f(percentile(r.detectAllS, 0.99))} s (${r.detectAllS.length} rounds) | ` +
      `${f(percentile(r.detectSeedS, 0.5))} s | ${f(percentile(r.detectEachS, 0.5))} / ${f(percentile(r.detectEachS, 0.99))} s | ` +
      `${r.stopDead} dead (${r.stopSuspect}) / ${r.burstDead} dead (${r.burstSuspect}) | ${f(r.membershipBytesPerNodePerS, 0)} | ${f(r.wireBytesPerNodePerS, 0)} | ` +
      `${f(r.serf.convergeS)} s | ${f(r.serf.detectS)} s |`,
  );
}
const small = results.find((r) => r.n === Math.min(...sizes));
const large = results.find((r) => r.n === Math.max(...sizes));
if (small && large && small !== large) {
  console.log(
    `\nmembership bytes per node per second, N=${large.n} / N=${small.n}: ${f(large.membershipBytesPerNodePerS / small.membershipBytesPerNodePerS)}×` +
      (large.wireBytesPerNodePerS !== null && small.wireBytesPerNodePerS !== null
        ? `; all traffic on the link: ${f(large.wireBytesPerNodePerS / small.wireBytesPerNodePerS)}×`
        : ''),
  );
}
console.log(`serf: ${results[0]?.serf.note ?? ''}`);
