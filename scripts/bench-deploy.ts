/**
 * bench:deploy — a service's rolling update on three real agents, beside Docker swarm's in the same run:
 *   1. three `dist/shoal agent`s on loopback, sharing one Docker engine (containers are named per task), each
 *      offering --cpu 8 (instances ask 100 millicores) and no DNS;
 *   2. a service job of --instances instances of the swarm anchor's workload (a loop that exits at once on
 *      SIGTERM, env VERSION=1, no health checks: an instance counts healthy once running, as swarm's
 *      "Running"), applied and waited for until all run and its first deployment succeeded;
 *   3. version 2 (env VERSION=2) applied with update {maxParallel, minHealthyTimeMs, stop-first}: timed from
 *      the apply until its deployment is successful and every live instance runs version 2, sampling the
 *      healthy count (`GET /v1/services/NAME`) every 100 ms for the fewest seen;
 *   4. the same with the exec driver (the loop run directly; no anchor for it), unless --driver says not;
 *   5. the anchor, in the same run: `docker service update --update-parallelism P --update-delay D` of an
 *      N-replica swarm service via ../shared/anchors/swarm-update.sh (its own dockerd).
 * Target (the docker variant): ≤ 0.5 × swarm's time, never fewer than instances − max-parallel healthy.
 *
 *   npm run build
 *   SHOAL_BENCH_DOCKER_SOCKET=/tmp/shoal-dockerd/docker.sock SHOAL_BENCH_DOCKER_IMAGE=local/busybox:1 \
 *     node scripts/bench-deploy.ts [--instances 50] [--max-parallel 5] [--min-healthy-ms 1000] \
 *       [--driver docker|exec|both] [--runs 1] [--binary dist/shoal] [--no-anchor]
 *
 * --runs R repeats the shoal part (a fresh cluster each time) and prints each run and the median.
 * SHOAL_BENCH_LOG_DIR=DIR keeps each agent's log there (DIR/NAME.log), at SHOAL_BENCH_LOG_LEVEL (warn).
 */
import { execFile } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import Docker from 'dockerode';
import { isTerminal, type JobSpec } from '../src/cluster/index.ts';
import { managedLabel, nodeLabel } from '../src/runtime/index.ts';
import { client, closeClients, freePort, managementToken, useToken } from './lib/bench.ts';
import { leaderOf, sleep, start, until, type Agent } from './lib/cluster.ts';

const root = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    instances: { type: 'string', default: '50' },
    'max-parallel': { type: 'string', default: '5' },
    'min-healthy-ms': { type: 'string', default: '1000' },
    driver: { type: 'string', default: 'both' },
    runs: { type: 'string', default: '1' },
    binary: { type: 'string', default: join(root, 'dist', 'shoal') },
    anchor: { type: 'string', default: resolve(root, '..', 'shared', 'anchors', 'swarm-update.sh') },
    'no-anchor': { type: 'boolean', default: false },
  },
});

function fail(message: string): never {
  console.error(`bench:deploy: ${message}`);
  process.exit(2);
}

function wholeFlag(name: string, value: string, min: number): number {
  const parsed = Number(value);
  if (!Number.isInteger(parsed) || parsed < min)
    fail(`--${name} must be a whole number >= ${min}, got ${value}`);
  return parsed;
}

const instances = wholeFlag('instances', values.instances, 1);
const maxParallel = wholeFlag('max-parallel', values['max-parallel'], 1);
const minHealthyMs = wholeFlag('min-healthy-ms', values['min-healthy-ms'], 0);
const runs = wholeFlag('runs', values.runs, 1);
type Driver = 'docker' | 'exec';
const driverChoices: Record<string, readonly Driver[]> = {
  docker: ['docker'],
  exec: ['exec'],
  both: ['docker', 'exec'],
};
if (!Object.hasOwn(driverChoices, values.driver))
  fail(`--driver must be docker, exec or both, got ${values.driver}`);
const drivers = driverChoices[values.driver] ?? [];
const builtBinary = resolve(values.binary);
if (!existsSync(builtBinary))
  fail(`${builtBinary} does not exist: npm run build first (or pass --binary PATH)`);
const dockerSocket = process.env['SHOAL_BENCH_DOCKER_SOCKET'];
const dockerImage = process.env['SHOAL_BENCH_DOCKER_IMAGE'];
const withDocker = drivers.includes('docker');
if (withDocker && (dockerSocket === undefined || dockerImage === undefined))
  fail(
    'set SHOAL_BENCH_DOCKER_SOCKET (an engine socket) and SHOAL_BENCH_DOCKER_IMAGE (a busybox image), or pass --driver exec',
  );

const agentCount = 3;
/** CPU each agent offers: all instances fit on any one of them, so placement never waits. */
const agentCpu = 8;
/** The swarm anchor's workload: a loop that exits at once on SIGTERM (so no stop grace dominates). */
const workload = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'];
const batches = Math.ceil(instances / maxParallel);
/** Fewest healthy instances the target allows: one batch out at a time. */
const healthyFloor = instances - maxParallel;
const sampleIntervalMs = 100;
/** How long getting version 1 up, or rolling out version 2, may take before the run counts as failed. */
const phaseMsMax = 10 * 60_000;
const engine = withDocker ? new Docker({ socketPath: dockerSocket ?? '' }) : null;
/**
 * The bench's temp dir: the agents run a copy of the binary from here (a `npm run build` elsewhere meanwhile
 * would replace dist/shoal under them, and the exec driver starts each task's shim from the agent's binary),
 * and each run's data dirs are made in it.
 */
const workDir = mkdtempSync(join(tmpdir(), 'shoal-bench-deploy-'));
const binary = join(workDir, 'shoal');

interface RollingUpdate {
  readonly seconds: number;
  readonly minHealthy: number;
}

interface Cluster {
  readonly agents: Agent[];
  readonly dataRoot: string;
  /** The agents' node ids (their containers carry them), once they are members. */
  nodeIds: string[];
}

/** Pulls the image first when the engine lacks it: the bench times an update, not a pull. */
async function ensureImage(image: string): Promise<void> {
  if (engine === null) return;
  if (
    (await engine
      .getImage(image)
      .inspect()
      .catch(() => null)) !== null
  )
    return;
  const stream = await engine.pull(image);
  await new Promise((done, failed) =>
    engine.modem.followProgress(stream, (error) => (error ? failed(error) : done(null))),
  );
}

/** The shared agent start, with what this bench needs on top (a later flag wins over lib/cluster's default). */
function startAgent(agent: Agent, extra: readonly string[]): void {
  start(binary, agent, [
    '--cpu',
    String(agentCpu),
    '--memory',
    '8192',
    '--docker-socket',
    dockerSocket ?? '/nonexistent',
    '--dns',
    'off',
    ...extra,
  ]);
}

/** Three agents, the first making the cluster; resolves once all are alive members with the drivers asked for. */
async function startCluster(run: number): Promise<Cluster> {
  const dataRoot = join(workDir, `run${run}`);
  mkdirSync(dataRoot);
  const agents: Agent[] = [];
  for (let i = 1; i <= agentCount; i++) {
    agents.push({
      name: `d${run}-${i}`,
      api: `127.0.0.1:${await freePort()}`,
      listen: `127.0.0.1:${await freePort()}`,
      dataDir: join(dataRoot, `d${i}`),
      process: null,
    });
  }
  const cluster: Cluster = { agents, dataRoot, nodeIds: [] };
  try {
    const [first, ...rest] = agents;
    if (first === undefined) throw new Error('no agents');
    startAgent(first, []);
    useToken(
      await managementToken(first.dataDir),
      agents.map((agent) => agent.api),
    );
    await until('the first agent', () => client(first.api).status());
    for (const agent of rest)
      startAgent(agent, ['--join', first.listen, '--key-file', join(first.dataDir, 'cluster.key')]);
    const members = await until(
      `${agentCount} alive members with the ${drivers.join(' and ')} driver`,
      async () => {
        const seen = await client(first.api).members();
        const ready = seen.filter(
          (member) => member.state === 'alive' && drivers.every((driver) => member.drivers.includes(driver)),
        );
        return ready.length === agentCount ? ready : null;
      },
      120_000,
    );
    cluster.nodeIds = members.map((member) => member.id);
    return cluster;
  } catch (error) {
    await stopCluster(cluster);
    throw error;
  }
}

/** SIGTERM (the agents stop their tasks), SIGKILL after 30 s; then removes their containers and data dirs. */
async function stopCluster(cluster: Cluster): Promise<void> {
  closeClients();
  await Promise.all(
    cluster.agents.map(async (agent) => {
      const child = agent.process;
      if (child === null || child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((done) => child.once('exit', done));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }),
  );
  if (engine !== null && cluster.nodeIds.length > 0) {
    const containers = await engine
      .listContainers({ all: true, filters: { label: [`${managedLabel}=true`] } })
      .catch(() => []);
    await Promise.all(
      containers
        .filter((container) => cluster.nodeIds.includes(container.Labels[nodeLabel] ?? ''))
        .map((container) =>
          engine
            .getContainer(container.Id)
            .remove({ force: true })
            .catch(() => undefined),
        ),
    );
  }
  rmSync(cluster.dataRoot, { recursive: true, force: true });
}

function jobSpec(name: string, driver: Driver, version: string): JobSpec {
  return {
    name,
    type: 'service',
    count: instances,
    update: { maxParallel, minHealthyTimeMs: minHealthyMs, order: 'stop-first' },
    task: {
      driver,
      ...(driver === 'docker' ? { image: dockerImage ?? '' } : {}),
      command: workload,
      env: { VERSION: version },
      cpuMillis: 100,
      memoryMiB: 16,
    },
  };
}

/** A rollout that cannot complete (its deployment failed, or another version replaced it): the run fails. */
class RolloutFailed extends Error {}

/** Whether `version`'s deployment succeeded; throws RolloutFailed if it failed, was cancelled or superseded. */
async function deploymentSucceeded(api: string, name: string, version: number): Promise<boolean> {
  const deployments = await client(api).jobDeployments(name);
  const newest = deployments.at(-1);
  const own = deployments.findLast((deployment) => deployment.jobVersion === version);
  if (own?.status === 'failed' || own?.status === 'cancelled')
    throw new RolloutFailed(
      `job ${name} version ${version}: deployment ${own.status}: ${own.statusReason}` +
        (own.revertedToVersion === null ? '' : ` (reverted to version ${own.revertedToVersion})`),
    );
  if (newest !== undefined && newest.jobVersion > version)
    throw new RolloutFailed(`job ${name} version ${version}: superseded by version ${newest.jobVersion}`);
  return own?.status === 'successful';
}

/** Whether all the job's live instances run, `instances` of them, at `version`. */
async function allRunningAt(api: string, name: string, version: number): Promise<boolean> {
  const live = (await client(api).job(name)).instances.filter((instance) => !isTerminal(instance.state));
  return (
    live.length === instances &&
    live.every((instance) => instance.version === version && instance.state === 'running')
  );
}

/** The job's newest deployment and its instances by version and state, for an error. */
async function rolloutState(api: string, name: string): Promise<string> {
  try {
    const [deployments, job] = await Promise.all([client(api).jobDeployments(name), client(api).job(name)]);
    const newest = deployments.at(-1);
    const groups = (newest?.groups ?? [])
      .map((group) => `healthy ${group.healthy}, current ${group.current}, old ${group.old}`)
      .join('; ');
    const counts = new Map<string, number>();
    for (const instance of job.instances) {
      const key = `v${instance.version} ${instance.state}/${instance.desired}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    const deployment =
      newest === undefined
        ? 'no deployment'
        : `deployment of version ${newest.jobVersion} ${newest.status} (${newest.statusReason}; ${groups})`;
    return `${deployment}; instances ${[...counts].map(([key, count]) => `${count} ${key}`).join(', ')}`;
  } catch (error) {
    return `state unknown: ${error instanceof Error ? error.message : String(error)}`;
  }
}

/**
 * Waits, sampling every 100 ms, until `version`'s deployment succeeded and all instances run it; `sample`
 * gets the healthy count each time. API errors are retried until the deadline; RolloutFailed is not.
 */
async function rollOut(
  api: string,
  name: string,
  version: number,
  sample: (healthy: number) => void,
): Promise<void> {
  const deadlineMs = performance.now() + phaseMsMax;
  let lastError = '';
  for (;;) {
    try {
      const [service, successful] = await Promise.all([
        client(api).service(name),
        deploymentSucceeded(api, name, version),
      ]);
      sample(service.instances.length);
      if (successful && (await allRunningAt(api, name, version))) return;
    } catch (error) {
      if (error instanceof RolloutFailed) throw error;
      lastError = `; last API error: ${error instanceof Error ? error.message : String(error)}`;
    }
    if (performance.now() > deadlineMs)
      throw new RolloutFailed(
        `job ${name} version ${version} did not complete within ${phaseMsMax / 60_000} minutes: ` +
          `${await rolloutState(api, name)}${lastError}`,
      );
    await sleep(sampleIntervalMs);
  }
}

/** Version 1 up, then version 2 rolled out and timed, on the cluster's leader. */
async function rollingUpdate(cluster: Cluster, driver: Driver): Promise<RollingUpdate> {
  const { api } = await leaderOf(cluster.agents);
  const name = `roll-${driver}`;
  const first = await client(api).applyJob(jobSpec(name, driver, '1'));
  await rollOut(api, name, first.version, () => undefined);
  const startedMs = performance.now();
  const second = await client(api).applyJob(jobSpec(name, driver, '2'));
  let minHealthy = Infinity;
  await rollOut(api, name, second.version, (healthy) => {
    minHealthy = Math.min(minHealthy, healthy);
  });
  const seconds = (performance.now() - startedMs) / 1000;
  // Gone before the next variant starts: its containers must not stop while that one is timed.
  await client(api).stopJob(name, true);
  await until(
    `the instances of ${name} to stop`,
    async () =>
      (await client(api).tasks()).some((task) => task.job === name && !isTerminal(task.state)) ? null : true,
    phaseMsMax,
  );
  return { seconds, minHealthy };
}

interface Anchor {
  readonly line: string;
  readonly seconds: number;
  readonly minRunning: number;
}

async function swarmAnchor(): Promise<Anchor | null> {
  if (values['no-anchor'] || !existsSync(values.anchor)) return null;
  const delay = `${minHealthyMs / 1000}s`;
  const { stdout } = await promisify(execFile)(
    'bash',
    [values.anchor, String(instances), String(maxParallel), delay],
    { timeout: 2 * phaseMsMax },
  );
  const line = stdout.split('\n').find((text) => text.startsWith('swarm rolling_update')) ?? '';
  const seconds = /update_s=([\d.]+)/.exec(line)?.[1];
  const minRunning = /min_running=(\d+)/.exec(line)?.[1];
  if (seconds === undefined || minRunning === undefined)
    throw new Error(`the anchor printed no rolling_update line: ${stdout.trim()}`);
  return { line, seconds: Number(seconds), minRunning: Number(minRunning) };
}

const median = (numbers: readonly number[]): number => {
  const sorted = [...numbers].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? NaN)
    : ((sorted[middle - 1] ?? NaN) + (sorted[middle] ?? NaN)) / 2;
};

const describe = (result: RollingUpdate): string =>
  `${result.seconds.toFixed(2)} s, min healthy ${result.minHealthy}, ${(result.seconds / batches).toFixed(2)} s per batch`;

let active: Cluster | null = null;

async function main(): Promise<void> {
  copyFileSync(builtBinary, binary);
  chmodSync(binary, 0o755);
  if (withDocker) await ensureImage(dockerImage ?? '');
  const setting =
    `${instances} instances, max_parallel ${maxParallel}, min_healthy_time ${minHealthyMs / 1000} s, ` +
    `${batches} batches, on ${agentCount} agents`;
  console.log(`shoal rolling update: ${setting}`);
  const results = new Map<Driver, RollingUpdate[]>(drivers.map((driver) => [driver, []]));
  for (let run = 1; run <= runs; run++) {
    active = await startCluster(run);
    try {
      for (const driver of drivers) {
        const result = await rollingUpdate(active, driver);
        results.get(driver)?.push(result);
        console.log(`  ${`${driver} driver, run ${run}:`.padEnd(28)} ${describe(result)}`);
      }
    } finally {
      await stopCluster(active);
      active = null;
    }
  }
  const summary = new Map<Driver, RollingUpdate>();
  for (const [driver, list] of results) {
    const combined = {
      seconds: median(list.map((result) => result.seconds)),
      minHealthy: Math.min(...list.map((result) => result.minHealthy)),
    };
    summary.set(driver, combined);
    if (runs > 1)
      console.log(
        `  ${`${driver} driver, median of ${runs}:`.padEnd(28)} ${describe(combined)} (min healthy over all runs)`,
      );
  }

  const anchor = await swarmAnchor();
  if (anchor === null) {
    console.log(`anchor: skipped (--no-anchor, or ${values.anchor} missing)`);
  } else {
    console.log(`anchor: ${anchor.line}`);
    console.log(
      `  ${'swarm:'.padEnd(28)} ${anchor.seconds.toFixed(2)} s, min running ${anchor.minRunning}, ` +
        `${(anchor.seconds / batches).toFixed(2)} s per batch`,
    );
    const docker = summary.get('docker');
    if (docker !== undefined) {
      const ratio = docker.seconds / anchor.seconds;
      const met = ratio <= 0.5 && docker.minHealthy >= healthyFloor;
      console.log(
        `shoal (docker) / swarm = ${ratio.toFixed(2)}, min healthy ${docker.minHealthy}: target <= 0.50 with never ` +
          `fewer than ${healthyFloor} healthy ${met ? 'met' : 'NOT met'}`,
      );
    }
  }
}

process.once('SIGINT', () => {
  const stopping = active === null ? Promise.resolve() : stopCluster(active);
  void stopping.finally(() => {
    rmSync(workDir, { recursive: true, force: true });
    process.exit(130);
  });
});
try {
  await main();
} catch (error) {
  console.error(`bench:deploy: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = 1;
} finally {
  rmSync(workDir, { recursive: true, force: true });
}
