/**
 * bench:replicas — N busybox containers (`sleep 600`) requested at once, timed until all of them run:
 *   1. through one real agent: `dist/shoal agent` with --cpu 64, N concurrent POST /v1/tasks, polled until all
 *      tasks report running (the figure the target is about);
 *   2. through the docker driver directly: N concurrent driver.start() (what the agent adds on top shows here);
 *   3. the bare engine API: N concurrent create + start through dockerode, the floor any dockerd-based driver
 *      stands on, once with containers configured as the driver makes them and once as `--network none`;
 *   4. the anchor, in the same run: Docker swarm mode via ../shared/anchors/swarm-replicas.sh (its own dockerd).
 * Target: shoal ≤ 0.3 × swarm's time.
 *
 *   npm run build
 *   SHOAL_BENCH_DOCKER_SOCKET=/tmp/shoal-dockerd/docker.sock SHOAL_BENCH_DOCKER_IMAGE=local/busybox:1 \
 *     node scripts/bench-replicas.ts [--replicas 50] [--cpu-millis 250] [--binary dist/shoal] [--no-anchor]
 *
 * Tiny CPU limits slow a container's start-up a lot (the runtime's own work inside it runs under the quota), so
 * each task gets --cpu-millis (default 250, a quarter core) and the agent 64 cores to hand out.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { parseArgs } from 'node:util';
import Docker from 'dockerode';
import { createDockerDriver, managedLabel, type TaskHandle } from '../src/runtime/index.ts';
import { silentLogger } from '../src/shared/index.ts';
import { client, closeClients, startBenchAgent } from './lib/bench.ts';

const root = resolve(import.meta.dirname, '..');
const { values } = parseArgs({
  options: {
    replicas: { type: 'string', default: '50' },
    'cpu-millis': { type: 'string', default: '250' },
    binary: { type: 'string', default: join(root, 'dist', 'shoal') },
    anchor: { type: 'string', default: resolve(root, '..', 'shared', 'anchors', 'swarm-replicas.sh') },
    'no-anchor': { type: 'boolean', default: false },
  },
});
const replicas = Number(values.replicas);
const cpuMillis = Number(values['cpu-millis']);
const binary = resolve(values.binary);
const dockerSocket = process.env['SHOAL_BENCH_DOCKER_SOCKET'];
const dockerImage = process.env['SHOAL_BENCH_DOCKER_IMAGE'];
if (dockerSocket === undefined || dockerImage === undefined) {
  console.error(
    'set SHOAL_BENCH_DOCKER_SOCKET (an engine socket) and SHOAL_BENCH_DOCKER_IMAGE (a busybox image)',
  );
  process.exit(2);
}
if (!existsSync(binary)) {
  console.error(`${binary} does not exist: npm run build first (or pass --binary PATH)`);
  process.exit(2);
}
const memoryBytes = 32 * 1024 * 1024;
/** One replica, as both paths (through an agent, and the driver alone) start it. */
const replicaSpec = {
  driver: 'docker' as const,
  image: dockerImage,
  command: ['sleep', '600'],
  cpuMillis,
  memoryBytes,
  priority: 50,
  env: {},
  constraints: {},
};
/** How long all replicas may take before the run counts as failed. */
const allRunningMsMax = 10 * 60_000;
const pollIntervalMs = 50;
const engine = new Docker({ socketPath: dockerSocket });

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

/** Pulls the image first when the engine lacks it: the bench times starts, not a pull (the anchor imports its image). */
async function ensureImage(image: string): Promise<void> {
  if (
    (await engine
      .getImage(image)
      .inspect()
      .catch(() => null)) !== null
  )
    return;
  const stream = await engine.pull(image);
  await new Promise((done, fail) =>
    engine.modem.followProgress(stream, (error) => (error ? fail(error) : done(null))),
  );
}

/** Removes containers shoal left on the engine (labelled as shoal's and named after our task ids). */
async function removeShoalContainers(taskIds: ReadonlySet<string>): Promise<void> {
  const containers = await engine.listContainers({ all: true, filters: { label: [`${managedLabel}=true`] } });
  await Promise.all(
    containers
      .filter((container) => taskIds.has(container.Labels['io.shoal.task'] ?? ''))
      .map((container) =>
        engine
          .getContainer(container.Id)
          .remove({ force: true })
          .catch(() => undefined),
      ),
  );
}

async function throughAgent(): Promise<{ acceptedMs: number; allRunningMs: number }> {
  const bench = await startBenchAgent({
    binary,
    name: 'replicas',
    cpu: 64,
    memoryMiB: 65536,
    dockerSocket: dockerSocket ?? null,
  });
  const { apiAddress } = bench;
  const ids: string[] = [];
  try {
    const spec = replicaSpec;
    const startedMs = performance.now();
    const submitted = await Promise.all(
      Array.from({ length: replicas }, (_, index) =>
        client(apiAddress).submit({ ...spec, name: `replica${index}` }),
      ),
    );
    const acceptedMs = performance.now() - startedMs;
    ids.push(...submitted.map((task) => task.id));
    const wanted = new Set(ids);
    for (;;) {
      const tasks = (await client(apiAddress).tasks()).filter((task) => wanted.has(task.id));
      const failed = tasks.find((task) => ['failed', 'killed', 'lost', 'finished'].includes(task.state));
      if (failed !== undefined)
        throw new Error(`task ${failed.id} ended ${failed.state}: ${failed.reason ?? ''}`);
      if (tasks.filter((task) => task.state === 'running').length === replicas) break;
      if (performance.now() - startedMs > allRunningMsMax)
        throw new Error('not all replicas ran within 10 minutes');
      await sleep(pollIntervalMs);
    }
    return { acceptedMs, allRunningMs: performance.now() - startedMs };
  } finally {
    await Promise.all(
      ids.map((id) =>
        client(apiAddress)
          .kill(id)
          .catch(() => undefined),
      ),
    );
    closeClients();
    // The agent stops what still runs on SIGTERM; whatever is left after it is removed by hand.
    await bench.stop();
    await removeShoalContainers(new Set(ids));
  }
}

async function throughDriver(): Promise<number> {
  const driver = createDockerDriver({ logger: silentLogger, socketPath: dockerSocket ?? '' });
  const dataDir = mkdtempSync(join(tmpdir(), 'shoal-bench-replicas-driver-'));
  const runId = `${process.pid}${Date.now().toString(36)}`;
  const handles: TaskHandle[] = [];
  try {
    const startedMs = performance.now();
    const started = await Promise.all(
      Array.from({ length: replicas }, (_, index) => {
        const taskId = `bench-${runId}-${index}`;
        return driver.start({
          taskId,
          taskDir: join(dataDir, taskId),
          spec: { ...replicaSpec, name: `replica${index}` },
        });
      }),
    );
    handles.push(...started);
    return performance.now() - startedMs;
  } finally {
    await Promise.all(handles.map((handle) => driver.destroy(handle).catch(() => undefined)));
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * N concurrent create + start of containers configured as the docker driver configures them (networking
 * disabled, so the runtime makes each one's network namespace, and a read-only /etc/hosts mounted), or, with
 * `engineNetwork`, as `docker run --network none` does (the engine sets up each container's sandbox).
 */
async function throughEngine(engineNetwork: boolean): Promise<number> {
  const runId = `${process.pid}${Date.now().toString(36)}`;
  const containers: Docker.Container[] = [];
  const hostsDir = mkdtempSync(join(tmpdir(), 'shoal-bench-replicas-hosts-'));
  const hostsPath = join(hostsDir, 'hosts');
  writeFileSync(hostsPath, '127.0.0.1\tlocalhost\n');
  try {
    const startedMs = performance.now();
    await Promise.all(
      Array.from({ length: replicas }, async (_, index) => {
        const container = await engine.createContainer({
          name: `shoal-bench-bare-${runId}-${index}`,
          Image: dockerImage,
          Cmd: ['sleep', '600'],
          ...(engineNetwork ? {} : { NetworkDisabled: true }),
          HostConfig: {
            NetworkMode: 'none',
            Memory: memoryBytes,
            NanoCpus: cpuMillis * 1_000_000,
            ...(engineNetwork
              ? {}
              : { Mounts: [{ Type: 'bind', Source: hostsPath, Target: '/etc/hosts', ReadOnly: true }] }),
          },
        });
        containers.push(container);
        await container.start();
      }),
    );
    return performance.now() - startedMs;
  } finally {
    await Promise.all(
      containers.map((container) => container.remove({ force: true }).catch(() => undefined)),
    );
    rmSync(hostsDir, { recursive: true, force: true });
  }
}

async function swarmAnchor(): Promise<number | null> {
  if (values['no-anchor'] || !existsSync(values.anchor)) return null;
  const { stdout } = await promisify(execFile)('bash', [values.anchor, String(replicas)], {
    timeout: allRunningMsMax,
  });
  const seconds = /all_running_s=([\d.]+)/.exec(stdout)?.[1];
  return seconds === undefined ? null : Number(seconds) * 1000;
}

await ensureImage(dockerImage);
const agentRun = await throughAgent();
console.log(
  `shoal agent, docker driver: ${replicas} replicas requested at once -> all running in ` +
    `${(agentRun.allRunningMs / 1000).toFixed(2)} s (all ${replicas} submissions accepted in ${(agentRun.acceptedMs / 1000).toFixed(2)} s; ` +
    `${cpuMillis} millicores each)`,
);
const driverMs = await throughDriver();
console.log(`docker driver alone: ${replicas} concurrent starts in ${(driverMs / 1000).toFixed(2)} s`);
const engineMs = await throughEngine(false);
console.log(
  `bare engine API, containers as the driver makes them: ${replicas} concurrent create + start in ${(engineMs / 1000).toFixed(2)} s`,
);
const engineNetworkMs = await throughEngine(true);
console.log(
  `bare engine API, --network none (the engine sets up each sandbox): ${replicas} concurrent create + start in ${(engineNetworkMs / 1000).toFixed(2)} s`,
);
const swarmMs = await swarmAnchor();
if (swarmMs === null) {
  console.log(`anchor: skipped (--no-anchor, or ${values.anchor} missing)`);
} else {
  console.log(
    `anchor: docker swarm mode, ${replicas} replicas -> all running in ${(swarmMs / 1000).toFixed(2)} s`,
  );
  console.log(
    `shoal / swarm = ${(agentRun.allRunningMs / swarmMs).toFixed(2)} (target <= 0.30; issue 5 quotes swarm at 15.7 s here)`,
  );
}
