/**
 * bench:failover — five real agents (dist/shoal); `--rounds` times (default 20): SIGKILL the leader and time
 * until a survivor accepts the next task submission through its API; restart the killed agent and let it
 * catch up. Then the same with SIGSTOP (a leader that hangs: its connections stay open, so only the
 * election timeout finds it), continued with SIGCONT after each round (`--stop-rounds`, default 10). Prints p50/p99 beside etcd's figure from ../shared/anchors/etcd-failover.sh in the same run
 * (Debian's etcd-server; skipped with a note if etcd is not installed). Then measures commit throughput
 * with three voters (concurrent submissions, batched by Raft) and reports the worst event-loop stall the
 * agents saw between Raft ticks.
 *
 *   npm run build && npm run bench:failover [-- --rounds 20 --throughput-seconds 10]
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { client, closeClients, percentile, requireBinary } from './lib/bench.ts';
import { benchTaskSpec, cluster, leaderOf, sleep, start, stopAll, until } from './lib/cluster.ts';

const root = resolve(import.meta.dirname, '..');
const binary = join(root, 'dist', 'shoal');
requireBinary(binary);
const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '20' },
    'throughput-seconds': { type: 'string', default: '10' },
    concurrency: { type: 'string', default: '64' },
    'stop-rounds': { type: 'string', default: '10' },
  },
});
const stopRounds = Number(values['stop-rounds']);
const rounds = Number(values.rounds);
const throughputSeconds = Number(values['throughput-seconds']);
const concurrency = Number(values.concurrency);

const workDir = mkdtempSync(join(tmpdir(), 'shoal-bench-failover-'));
let stallMsMax = 0;
try {
  // ---- failover ----
  const five = await cluster(binary, 5, workDir);
  const samples: number[] = [];
  for (let round = 0; round < rounds; round++) {
    const leader = await leaderOf(five);
    const survivors = five.filter((a) => a !== leader);
    const via = survivors[round % survivors.length];
    if (!via) throw new Error('no survivor');
    leader.process?.kill('SIGKILL');
    const killedAt = performance.now();
    // One submission: the node retries internally until a leader commits it.
    await client(via.api).submit(benchTaskSpec(`failover${round}`));
    samples.push(performance.now() - killedAt);
    start(binary, leader, []);
    await until('the restarted agent to catch up', async () => {
      const [mine, theirs] = await Promise.all([
        client(leader.api, 2000).status(),
        client(via.api, 2000).status(),
      ]);
      return mine.leader !== null && mine.appliedIndex >= theirs.commitIndex ? mine : null;
    });
    await sleep(500);
  }
  for (const agent of five) {
    const status = await client(agent.api)
      .status()
      .catch(() => null);
    stallMsMax = Math.max(stallMsMax, status?.eventLoopStallMsMax ?? 0);
  }
  // A leader that hangs: nothing resets its connections, the followers find it by the election timeout.
  const stopped: number[] = [];
  const stoppedFailures: string[] = [];
  for (let round = 0; round < stopRounds; round++) {
    const leader = await leaderOf(five);
    const survivors = five.filter((a) => a !== leader);
    const via = survivors[round % survivors.length];
    if (!via) throw new Error('no survivor');
    leader.process?.kill('SIGSTOP');
    const stoppedAt = performance.now();
    try {
      await client(via.api).submit(benchTaskSpec(`stopped${round}`));
      stopped.push(performance.now() - stoppedAt);
    } catch (error) {
      // A write the survivor had forwarded to the hung leader waits out its 10 s: counted, not timed.
      stoppedFailures.push(error instanceof Error ? error.message.slice(0, 120) : String(error));
    } finally {
      leader.process?.kill('SIGCONT');
    }
    await until('the continued agent to catch up', async () => {
      const [mine, theirs] = await Promise.all([
        client(leader.api, 2000).status(),
        client(via.api, 2000).status(),
      ]);
      return mine.leader !== null && mine.role !== 'leader' && mine.appliedIndex >= theirs.commitIndex
        ? mine
        : null;
    });
    await sleep(500);
  }
  await stopAll(five);
  const line = (what: string, values: readonly number[]): string => {
    const sorted = [...values].sort((a, b) => a - b);
    return `shoal failover (5 agents, ${what} leader -> next accepted run, ${sorted.length} rounds): p50=${percentile(sorted, 50).toFixed(0)} ms p99=${percentile(sorted, 99).toFixed(0)} ms min=${(sorted[0] ?? NaN).toFixed(0)} ms max=${(sorted.at(-1) ?? NaN).toFixed(0)} ms`;
  };
  console.log(line('SIGKILL', samples));
  if (stopped.length > 0) console.log(line('SIGSTOP', stopped));
  if (stoppedFailures.length > 0)
    console.log(
      `SIGSTOP rounds whose write failed: ${stoppedFailures.length} of ${stopRounds} (${stoppedFailures[0] ?? ''}…)`,
    );

  // ---- the anchor, in the same run ----
  const anchor = resolve(root, '..', 'shared', 'anchors', 'etcd-failover.sh');
  if (existsSync(anchor) && existsSync('/usr/bin/etcd')) {
    const etcdSamples: number[] = [];
    for (let i = 0; i < 3; i++) {
      const output = execFileSync('bash', [anchor], { encoding: 'utf8', timeout: 120_000 });
      const seconds = Number(/failover_write_s=([\d.]+)/.exec(output)?.[1]);
      if (Number.isFinite(seconds)) etcdSamples.push(seconds * 1000);
    }
    console.log(
      `anchor etcd 3.4 (3 members, defaults, same machine, 3 runs): ${etcdSamples.map((ms) => `${ms.toFixed(0)} ms`).join(', ')}`,
    );
  } else {
    console.log(
      'anchor etcd: skipped (apt-get install etcd-server etcd-client, and ../shared/anchors/etcd-failover.sh)',
    );
  }

  // ---- commit throughput with three voters ----
  const three = await cluster(binary, 3, workDir);
  const leader = await leaderOf(three);
  let committed = 0;
  const deadline = performance.now() + throughputSeconds * 1000;
  const workers = Array.from({ length: concurrency }, async (_, worker) => {
    let n = 0;
    while (performance.now() < deadline) {
      // Constrained to a label no node has: each submission is one log entry and no task ever runs.
      await client(leader.api).submit(benchTaskSpec(`t${worker}-${n++}`, { bench: 'never' }));
      committed++;
    }
  });
  await Promise.all(workers);
  for (const agent of three) {
    const status = await client(agent.api)
      .status()
      .catch(() => null);
    stallMsMax = Math.max(stallMsMax, status?.eventLoopStallMsMax ?? 0);
  }
  await stopAll(three);
  console.log(
    `shoal commit throughput (3 voters, ${concurrency} concurrent clients via the leader's API, fsync per batch): ${(committed / throughputSeconds).toFixed(0)} submissions/s`,
  );
  console.log(
    `worst event-loop stall between Raft ticks on any agent: ${stallMsMax} ms (election timeout floor: 200 ms)`,
  );
} finally {
  closeClients();
  rmSync(workDir, { recursive: true, force: true });
}
