/**
 * bench:idle — what an idle agent costs with N running exec tasks (`sleep 3600`): the agent's RSS and CPU
 * (% of one core, over a window after the tasks settle), and the RSS and PSS summed over the per-task shims
 * (PSS shares the binary's pages fairly among the processes that map it; RSS counts them in every shim), and
 * the CPU the shims use together over the same window.
 * Target (issue #5): agent ≤ 120 MB and ≤ 1 % of a core with 100 running tasks.
 *
 *   npm run build && npm run bench:idle [-- --tasks 100 --seconds 60]
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { client, closeClients, cpuTicks, requireBinary, startBenchAgent, statusKiB } from './lib/bench.ts';

const root = resolve(import.meta.dirname, '..');
const binary = join(root, 'dist', 'shoal');
requireBinary(binary);
const { values } = parseArgs({
  options: { tasks: { type: 'string', default: '100' }, seconds: { type: 'string', default: '60' } },
});
const taskCount = Number(values.tasks);
const windowSeconds = Number(values.seconds);
if (!Number.isInteger(taskCount) || taskCount < 1 || !(windowSeconds >= 1)) {
  console.error('--tasks must be a positive whole number and --seconds at least 1');
  process.exit(2);
}
const clockTicksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
/** After the last task runs, the agent is left alone this long before the window starts (start-up work fades). */
const settleMs = 15_000;

function pssKiB(pid: number): number {
  const match = /Pss:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(match?.[1] ?? NaN);
}

/** The shims of this benchmark's agent: `shoal __shim <launch file under dataDir>`. */
function shimPids(dataDir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.includes('__shim') && argv.some((arg) => arg.startsWith(dataDir))) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

const mebibytes = (kib: number): string => `${(kib / 1024).toFixed(1)} MiB`;
/** The target is in MB (10^6 bytes): 120 MB is 114.4 MiB. */
const megabytes = (kib: number): string => `${((kib * 1024) / 1e6).toFixed(1)} MB`;

const bench = await startBenchAgent({
  binary,
  name: 'idle',
  cpu: 1000,
  memoryMiB: 65536,
  dockerSocket: null,
});
const { apiAddress, dataDir } = bench;
const pid = bench.process.pid ?? 0;
try {
  const spec = {
    driver: 'exec' as const,
    command: ['sleep', '3600'],
    cpuMillis: 10,
    memoryBytes: 16 * 1024 * 1024,
    priority: 50,
    env: {},
    constraints: {},
  };
  for (let i = 0; i < taskCount; i++) await client(apiAddress).submit({ ...spec, name: `idle${i}` });
  for (;;) {
    const tasks = await client(apiAddress).tasks();
    const broken = tasks.find((t) => !['pending', 'assigned', 'starting', 'running'].includes(t.state));
    if (broken) throw new Error(`a task ended ${broken.state}: ${broken.reason ?? ''}`);
    if (tasks.filter((t) => t.state === 'running').length === taskCount) break;
    await new Promise((r) => setTimeout(r, 500));
  }
  console.log(
    `${taskCount} tasks running; settling ${settleMs / 1000} s, then measuring for ${windowSeconds} s`,
  );
  await new Promise((r) => setTimeout(r, settleMs));
  const shimsBefore = shimPids(dataDir);
  const shimTicks = (pids: number[]): number =>
    pids.reduce((sum, shim) => {
      try {
        return sum + cpuTicks(shim);
      } catch {
        return sum; // ended meanwhile
      }
    }, 0);
  const shimTicksBefore = shimTicks(shimsBefore);
  const ticksBefore = cpuTicks(pid);
  const startedMs = performance.now();
  let rssKiBMax = 0;
  while (performance.now() - startedMs < windowSeconds * 1000) {
    rssKiBMax = Math.max(rssKiBMax, statusKiB(pid, 'VmRSS'));
    await new Promise((r) => setTimeout(r, 1000));
  }
  const elapsedSeconds = (performance.now() - startedMs) / 1000;
  const cpuPercent = ((cpuTicks(pid) - ticksBefore) / clockTicksPerSecond / elapsedSeconds) * 100;
  const shimCpuPercent =
    ((shimTicks(shimsBefore) - shimTicksBefore) / clockTicksPerSecond / elapsedSeconds) * 100;
  const shims = shimPids(dataDir);
  const shimRssKiB = shims.reduce((sum, shim) => sum + statusKiB(shim, 'VmRSS'), 0);
  const shimPssKiB = shims.reduce((sum, shim) => sum + pssKiB(shim), 0);
  console.log(
    `agent: RSS ${mebibytes(statusKiB(pid, 'VmRSS'))} = ${megabytes(statusKiB(pid, 'VmRSS'))} ` +
      `(max ${mebibytes(rssKiBMax)} = ${megabytes(rssKiBMax)} over the window), ` +
      `CPU ${cpuPercent.toFixed(2)} % of a core over ${elapsedSeconds.toFixed(0)} s`,
  );
  console.log(
    `shims: ${shims.length}, RSS sum ${mebibytes(shimRssKiB)} (${mebibytes(shimRssKiB / Math.max(1, shims.length))} each), ` +
      `PSS sum ${mebibytes(shimPssKiB)}, CPU ${shimCpuPercent.toFixed(2)} % of a core together`,
  );
  console.log('target: agent ≤ 120 MB (114.4 MiB) RSS and ≤ 1 % of a core with 100 running tasks');
} finally {
  closeClients();
  await bench.stop();
}
