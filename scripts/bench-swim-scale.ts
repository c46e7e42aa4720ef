/**
 * bench:swim — membership at scale, in the seeded simulation (src/membership/simulation.ts): N real
 * MembershipState machines on one thread, on a simulated clock and network (0.2–2 ms one way, no loss),
 * every message through JSON and the wire schemas. For each N (default 50, 1,000, 5,000):
 * - the cluster starts converged (every node knows every other alive; see startConverged) and runs
 *   `--settle-seconds` so that probing, connections and timers reach their steady state;
 * - bytes sent per member per second over `--bytes-seconds` with no fault: SWIM frames as the transport
 *   counts them (varint length + JSON) and push-pull messages as the service counts them (JSON);
 * - failure detection: `--kills` times, one member crashes (its host resets connections, as after a
 *   SIGKILL; `--fault hang` makes it silent instead), and the run goes on until every survivor sees it
 *   dead; then `--gap-seconds` before the next one.
 * Member ids are as long as libp2p peer ids (52 characters) and signatures as Ed25519's, so message
 * sizes are close to the real ones; records are smaller (one address, no labels).
 *
 *   node scripts/bench-swim-scale.ts [--members 50,1000,5000] [--seed 1] [--kills 10] [--bytes-seconds 60]
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { getHeapStatistics } from 'node:v8';
import {
  defaultMembershipConfig as config,
  pushPullIntervalMs,
  retransmitLimit,
  suspicionTimeouts,
} from '../src/membership/index.ts';
// eslint-disable-next-line no-restricted-imports -- the simulation is a harness, not the module's public face
import { MembershipSimulation, type SimTraffic } from '../src/membership/simulation.ts';
import { seededRandom, type Random } from '../src/shared/random.ts';
import { percentile } from './lib/bench.ts';

const { values } = parseArgs({
  options: {
    members: { type: 'string', default: '50,1000,5000' },
    seed: { type: 'string', default: '1' },
    kills: { type: 'string', default: '10' },
    fault: { type: 'string', default: 'crash' },
    'settle-seconds': { type: 'string', default: '10' },
    'bytes-seconds': { type: 'string', default: '60' },
    'gap-seconds': { type: 'string', default: '3' },
    'detect-timeout-seconds': { type: 'string', default: '60' },
  },
});
const sizes = values.members.split(',').map(Number);
const seed = Number(values.seed);
const kills = Number(values.kills);
const fault = values.fault;
const settleMs = Number(values['settle-seconds']) * 1000;
const bytesMs = Number(values['bytes-seconds']) * 1000;
const gapMs = Number(values['gap-seconds']) * 1000;
const detectTimeoutMs = Number(values['detect-timeout-seconds']) * 1000;
if (
  sizes.some((n) => !Number.isInteger(n) || n < 3) ||
  ![seed, kills, settleMs, bytesMs, gapMs, detectTimeoutMs].every((x) => Number.isFinite(x) && x >= 0) ||
  (fault !== 'crash' && fault !== 'hang')
) {
  console.error(
    'usage: bench-swim-scale.ts [--members 50,1000,5000] [--seed S] [--kills K] [--fault crash|hang]',
  );
  process.exit(2);
}

// ---- heap ------------------------------------------------------------------------------------------

/**
 * Each of N nodes keeps an entry per member: N² entries (25 M at 5,000), about 170 bytes each. Beyond
 * V8's default heap, the script runs itself again with a larger one (its own figures are the child's).
 */
const heapNeededMiB = Math.ceil(1024 + (Math.max(...sizes) ** 2 * 320) / 2 ** 20);
const heapLimitMiB = getHeapStatistics().heap_size_limit / 2 ** 20;
if (heapLimitMiB < heapNeededMiB && process.env['SHOAL_BENCH_SWIM_CHILD'] === undefined) {
  const heapMiB = Math.min(heapNeededMiB, Math.floor((totalmem() / 2 ** 20) * 0.8));
  const child = spawnSync(
    process.execPath,
    [
      ...process.execArgv,
      `--max-old-space-size=${heapMiB}`,
      // A larger young generation promotes less garbage into the big old one (~10 % faster at 5,000).
      '--max-semi-space-size=64',
      fileURLToPath(import.meta.url),
      ...process.argv.slice(2),
    ],
    { stdio: 'inherit', env: { ...process.env, SHOAL_BENCH_SWIM_CHILD: '1' } },
  );
  process.exit(child.status ?? 1);
}

// ---- one size --------------------------------------------------------------------------------------

interface SizeResult {
  n: number;
  /** Per kill: ms from the fault until the first survivor suspects the victim, and until all see it dead. */
  firstSuspectMs: number[];
  allDeadMs: number[];
  /** Per kill and survivor: ms from the fault until that survivor sees the victim dead. */
  eachDeadMs: number[];
  undetected: number;
  /** Suspect / dead transitions about members that were not killed, over the whole run. */
  falseSuspects: number;
  falseDeaths: number;
  /** Steady state, per member per second. */
  frameBytes: number;
  syncBytes: number;
  frames: number;
  /** The busiest member's bytes per second over the window. */
  maxMemberBytes: number;
  simulatedS: number;
  wallS: number;
  startWallS: number;
}

const base58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

/** Ids shaped like libp2p Ed25519 peer ids ("12D3KooW" + 44 base58 characters), from the seed. */
function peerIds(count: number, random: Random): string[] {
  const ids = new Set<string>();
  while (ids.size < count) {
    let id = '12D3KooW';
    for (let i = 0; i < 44; i++) id += base58.charAt(random.int(0, base58.length));
    ids.add(id);
  }
  return [...ids];
}

function traffic(sim: MembershipSimulation): SimTraffic {
  return { ...sim.traffic };
}

function benchSize(n: number): SizeResult {
  const wallStart = performance.now();
  const random = seededRandom(seed * 1_000_003 + n);
  const ids = peerIds(n, random);
  const sim = new MembershipSimulation({ seed: random.int(0, 2 ** 31) });
  sim.startConverged(ids);
  const startWallS = (performance.now() - wallStart) / 1000;
  console.log(`N = ${n}: started converged in ${startWallS.toFixed(1)} s of wall time`);

  sim.runFor(settleMs);

  // Steady-state load, no fault.
  const before = traffic(sim);
  const perNodeBefore = new Map(ids.map((id) => [id, sim.trafficOf(id)]));
  sim.runFor(bytesMs);
  const after = traffic(sim);
  const seconds = bytesMs / 1000;
  const perMember = (key: keyof SimTraffic): number => (after[key] - before[key]) / n / seconds;
  let maxMemberBytes = 0;
  for (const id of ids) {
    const was = perNodeBefore.get(id);
    const now = sim.trafficOf(id);
    if (!was) continue;
    const bytes = now.frameBytes + now.syncBytes - was.frameBytes - was.syncBytes;
    maxMemberBytes = Math.max(maxMemberBytes, bytes / seconds);
  }
  console.log(
    `N = ${n}: ${perMember('frameBytes').toFixed(0)} B/member/s of SWIM frames + ${perMember('syncBytes').toFixed(0)} of push-pull ` +
      `(${((performance.now() - wallStart) / 1000).toFixed(1)} s wall so far)`,
  );

  // Failure detection.
  const result: SizeResult = {
    n,
    firstSuspectMs: [],
    allDeadMs: [],
    eachDeadMs: [],
    undetected: 0,
    falseSuspects: 0,
    falseDeaths: 0,
    frameBytes: perMember('frameBytes'),
    syncBytes: perMember('syncBytes'),
    frames: perMember('frames'),
    maxMemberBytes,
    simulatedS: 0,
    wallS: 0,
    startWallS,
  };
  const killed = new Set<string>();
  let scanned = 0;
  const countFalse = (upTo: number): void => {
    for (const t of sim.transitions.slice(scanned, upTo)) {
      if (killed.has(t.subject)) continue;
      if (t.to === 'suspect') result.falseSuspects++;
      if (t.to === 'dead') result.falseDeaths++;
    }
    scanned = upTo;
  };
  for (let round = 0; round < kills; round++) {
    const candidates = ids.filter((id) => !killed.has(id));
    const victim = candidates[random.int(0, candidates.length)];
    if (victim === undefined) break;
    countFalse(sim.transitions.length);
    killed.add(victim);
    const survivors = new Set(sim.live().filter((id) => id !== victim));
    const faultAt = sim.now;
    if (fault === 'crash') sim.crash(victim);
    else sim.hang(victim);
    const seen = { firstSuspectMs: null as number | null };
    const deadAt = new Map<string, number>();
    const took = sim.runUntil(() => {
      for (const t of sim.transitions.slice(scanned)) {
        if (t.subject !== victim || (t.to !== 'suspect' && t.to !== 'dead')) continue;
        seen.firstSuspectMs ??= t.atMs - faultAt;
        if (t.to === 'dead' && survivors.has(t.observer) && !deadAt.has(t.observer))
          deadAt.set(t.observer, t.atMs - faultAt);
      }
      countFalse(sim.transitions.length);
      return deadAt.size === survivors.size;
    }, detectTimeoutMs);
    if (took === null) {
      result.undetected++;
      console.log(`N = ${n}: kill ${round + 1}: ${deadAt.size}/${survivors.size} saw ${victim} dead`);
    } else {
      result.allDeadMs.push(Math.max(...deadAt.values()));
    }
    if (seen.firstSuspectMs !== null) result.firstSuspectMs.push(seen.firstSuspectMs);
    result.eachDeadMs.push(...deadAt.values());
    sim.runFor(gapMs);
  }
  countFalse(sim.transitions.length);
  result.simulatedS = sim.now / 1000;
  result.wallS = (performance.now() - wallStart) / 1000;
  const sorted = [...result.allDeadMs].sort((a, b) => a - b);
  console.log(
    `N = ${n}: ${kills} kills, all survivors see dead after p50 ${percentile(sorted, 50)} ms, max ${sorted.at(-1)} ms ` +
      `(${result.wallS.toFixed(1)} s wall, ${result.simulatedS.toFixed(0)} s simulated)`,
  );
  return result;
}

// ---- main ------------------------------------------------------------------------------------------

const wallStart = performance.now();
const results: SizeResult[] = [];
for (const n of sizes) results.push(benchSize(n));
const wallS = (performance.now() - wallStart) / 1000;

const s = (ms: number | undefined, digits = 2): string =>
  ms === undefined || Number.isNaN(ms) ? '–' : (ms / 1000).toFixed(digits);
const pct = (samples: readonly number[], p: number): number =>
  percentile(
    [...samples].sort((a, b) => a - b),
    p,
  );
const total = (r: SizeResult): number => r.frameBytes + r.syncBytes;
const reference = results.find((r) => r.n === 50) ?? results[0];

console.log(
  `\n## bench:swim (seed ${seed}, ${kills} × ${fault}, ${values['bytes-seconds']} s of steady load; ` +
    `${wallS.toFixed(0)} s wall, peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB, ${availableParallelism()} cores)\n`,
);
console.log(
  '| N | first suspect p50 / p99 | all survivors see dead p50 / p99 (max) | each survivor sees dead p50 / p99 | undetected | false suspect / dead | bytes/member/s (SWIM + push-pull) | × N=' +
    `${reference?.n ?? '–'} | busiest member B/s | frames/member/s | suspicion min / max | push-pull every | wall (start) |`,
);
console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|');
for (const r of results) {
  const timeouts = suspicionTimeouts(config, r.n);
  console.log(
    `| ${r.n} | ${s(pct(r.firstSuspectMs, 50))} / ${s(pct(r.firstSuspectMs, 99))} s ` +
      `| ${s(pct(r.allDeadMs, 50))} / ${s(pct(r.allDeadMs, 99))} s (${s(pct(r.allDeadMs, 100))}) ` +
      `| ${s(pct(r.eachDeadMs, 50))} / ${s(pct(r.eachDeadMs, 99))} s | ${r.undetected} | ${r.falseSuspects} / ${r.falseDeaths} ` +
      `| ${total(r).toFixed(0)} (${r.frameBytes.toFixed(0)} + ${r.syncBytes.toFixed(0)}) ` +
      `| ${reference ? (total(r) / total(reference)).toFixed(2) : '–'}× | ${r.maxMemberBytes.toFixed(0)} | ${r.frames.toFixed(1)} ` +
      `| ${s(timeouts.minMs)} / ${s(timeouts.maxMs)} s | ${s(pushPullIntervalMs(config, r.n), 0)} s ` +
      `| ${r.wallS.toFixed(0)} s (${r.startWallS.toFixed(0)} s) |`,
  );
}
console.log(`
Definitions (all times simulated; the network is 0.2–2 ms one way with no loss, timers resolve to 5 ms):
- at N ≤ ${config.peerConnectionsMax} every node holds a connection to every other, and a crash's resets make each probe the
  victim at once (service.ts); beyond, connections are bounded (${config.peerConnectionsMax}) and churn, and the victim is
  found by the round-robin probes (a probe to a crashed node fails at once; to a hung one, after the timeouts).
- first suspect: from the ${fault} until the first survivor marks the victim suspect (or dead); one sample per kill.
- all survivors see dead: from the ${fault} until the last survivor marks the victim dead; one sample per
  kill, so with ${kills} kills p99 is the worst kill (max).
- each survivor sees dead: from the ${fault} until one survivor marks the victim dead; one sample per kill and
  survivor (kills × (N − 1)).
- undetected: kills not seen dead by every survivor within ${values['detect-timeout-seconds']} s.
- false suspect / dead: suspect and dead transitions, anywhere, about members that were not killed.
- bytes/member/s: bytes all members sent during ${values['bytes-seconds']} s of steady state with no fault, / N / seconds:
  SWIM frames as the transport counts them (varint length + JSON) + push-pull requests, replies and last
  legs as the service counts them (JSON). × N=${reference?.n ?? '–'}: the ratio to that row. busiest member: the largest
  single member's figure.
- frames/member/s: SWIM frames sent per member per second (pings, acks, ping-reqs, nacks, gossip).
- suspicion min / max, push-pull every, retransmits: the formulas of src/membership/config.ts at that N
  (retransmit limit ${sizes.map((n) => `${retransmitLimit(config, n)} at N=${n}`).join(', ')}).
- wall (start): this machine's time for the size, and of that for starting the cluster converged.`);
