/**
 * The docker driver: runs a task as a container on a local Docker engine, through its unix socket.
 *
 * Containers are named `shoal-<taskId>` and labelled io.shoal.task/io.shoal.managed so an operator (and a
 * future garbage collector) can tell shoal's containers from others. While a container runs, its output is
 * streamed into taskDir/stdout.log and stderr.log (size-capped and rotated), so the logs outlive the container's
 * removal. A missing image is pulled, its progress sent to StartRequest.onEvent.
 *
 * While a task runs, wait() watches the engine: if it stops answering (gone, or hung) for longer than
 * engineLossGraceMs, the task ends with the reason "docker engine unreachable while the task ran: …" rather
 * than a wait that never returns; an engine that comes back within that time (a restart) is simply re-attached.
 *
 * A container whose task has a lease (StartRequest.lease) is labelled io.shoal.lease and held to it by the
 * node's lease keeper (lease-keeper.ts), a small process of its own that start() and recover() make sure runs:
 * it kills the container once the lease is over even when no agent is alive, and wait() then reports the
 * task as exec does, leaseKillReason.
 */
import { mkdir, stat, writeFile } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join, resolve } from 'node:path';
import { Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type Docker from 'dockerode';
import { networkOf, pidsMaxDefault } from '../../cluster/index.ts';
import { errorMessage, isShoalError, ShoalError, type Logger } from '../../shared/index.ts';
import {
  checkHandleDriver,
  isErrnoException,
  type Driver,
  type DriverHealth,
  type ExitResult,
  type StartRequest,
  type TaskEvent,
  type TaskHandle,
} from './driver.ts';
import {
  idleExitMsDefault as leaseKeeperIdleMsDefault,
  killedForLease,
  leaseKeeperCommandDefault,
  leaseKillReason,
  leaseLabel,
  liveKeeper,
  managedLabel,
  nodeLabel,
  readLeaseKill,
  removeLeaseKill,
  startLeaseKeeper,
  taskLabel,
  writeKeeperConfig,
} from './lease-keeper.ts';
import {
  checkLogRotation,
  logRotationDefault,
  RotatingLogFile,
  stderrLogFileName,
  stdoutLogFileName,
  type LogRotation,
} from './logs.ts';

export interface DockerDriverInit {
  /** Used as given: pass one named for the driver, e.g. logger.child('docker'). */
  logger: Logger;
  /** The engine's unix socket. Default: the path in DOCKER_HOST when it is unix://…, else /var/run/docker.sock. */
  socketPath?: string;
  /** How long health() and start()'s engine check wait for the engine to answer. Default 2000 ms. */
  pingTimeoutMs?: number;
  /** How long pulling a missing image may take before start() gives up on it. Default 10 minutes. */
  pullTimeoutMs?: number;
  /**
   * How long a running task's engine may stay unreachable before wait() ends the task with "docker engine
   * unreachable while the task ran". Long enough to ride out an engine restart. Default 30 s.
   */
  engineLossGraceMs?: number;
  /** While tasks run, the engine is pinged this often (one ping for all tasks) to notice a hung engine. Default 5 s. */
  engineCheckIntervalMs?: number;
  /** Size cap and number of log files per stream. Default logRotationDefault (10 MiB × 3). */
  logRotation?: LogRotation;
  /**
   * The node's id, put on every container (io.shoal.node) so garbage collection touches only this node's
   * containers when several nodes share an engine. Without it, leftovers() finds nothing.
   */
  nodeId?: string;
  /**
   * The lease keeper's directory (lease-keeper.ts: its config, pid file, log and kill records), one per
   * agent, e.g. DATA_DIR/docker-lease. With it and nodeId, containers whose task has a lease are killed once
   * the lease is over even while no agent is alive; without either, only a live agent stops them.
   */
  leaseKeeperDir?: string;
  /** How long the keeper lives on once no leased container of this node runs. Default 60 s. */
  leaseKeeperIdleMs?: number;
  /**
   * The program and leading arguments that run a lease keeper; the driver appends its directory.
   * Default: leaseKeeperCommandDefault().
   */
  leaseKeeperCommand?: readonly string[];
}

export const dockerSocketPathDefault = '/var/run/docker.sock';
export const containerNamePrefix = 'shoal-';
export { leaseLabel, managedLabel, nodeLabel, taskLabel };

const pingTimeoutMsDefault = 2000;
const pullTimeoutMsDefault = 10 * 60_000;
const engineLossGraceMsDefault = 30_000;
const engineCheckIntervalMsDefault = 5000;
/** While the engine is unreachable, how often wait() looks whether it is back. */
const engineRetryIntervalMs = 1000;
/** A layer's pull progress ("Downloading 1.2 MB / 2.0 MB") is sent at most this often; status changes always. */
const pullProgressIntervalMs = 1000;
/** After a container exits, how long wait() lets the log stream deliver its last bytes before it answers. */
const logsDrainTimeoutMs = 5000;
/** The engine keeps at most this much of a container's log (json-file max-size); shoal's own copy is in taskDir. */
const engineLogSizeMax = '20m';
/** Where in the task's directory the driver writes the container's /etc/hosts. */
const containerHostsFileName = 'hosts';
/** The task directory's part shared with the container, and where the container sees it (SHOAL_TASK_DIR). */
export const containerSharedDirName = 'shared';
const containerTaskDir = '/shoal/task';
/**
 * A container's /etc/hosts: the lines the engine writes for `--network none`. Containers run with networking
 * disabled (see createContainer), and the engine then writes none, so without this file `localhost` would
 * not resolve inside them.
 */
const containerHosts = [
  '127.0.0.1\tlocalhost',
  '::1\tlocalhost ip6-localhost ip6-loopback',
  'fe00::0\tip6-localnet',
  'ff00::0\tip6-mcastprefix',
  'ff02::1\tip6-allnodes',
  'ff02::2\tip6-allrouters',
  '',
].join('\n');
/** Docker's container names allow [a-zA-Z0-9][a-zA-Z0-9_.-]*; the prefix supplies the first character. */
const taskIdPattern = /^[A-Za-z0-9_.-]+$/;
/** What an exec check keeps of its command's output: its first line makes the check's message. */
const checkOutputBytesMax = 4096;
/** The stream of an exec can end a moment before the engine records its exit code: how often to look again. */
const checkExitPollIntervalMs = 20;

/** The unix socket named by DOCKER_HOST (unix:///path), else the standard one. Other schemes are not supported. */
export function dockerSocketPathFromEnv(env: NodeJS.ProcessEnv = process.env): string {
  const host = env['DOCKER_HOST'];
  if (host?.startsWith('unix://') === true && host.length > 'unix://'.length)
    return host.slice('unix://'.length);
  return dockerSocketPathDefault;
}

/** What handle.state holds for a docker task. */
interface DockerState {
  containerId: string;
  containerName: string;
  image: string;
  /** Kept so a recovering agent knows where to append the logs. */
  taskDir: string;
  /** StartRequest.lease, kept so a recovering agent makes sure the lease keeper guards the container. */
  leaseFile: string | null;
  leaseDurationMs: number | null;
}

interface LogPump {
  done: Promise<void>;
  abort: AbortController;
}

export function createDockerDriver(init: DockerDriverInit): Driver {
  const logger = init.logger;
  const socketPath = init.socketPath ?? dockerSocketPathFromEnv();
  const pingTimeoutMs = init.pingTimeoutMs ?? pingTimeoutMsDefault;
  const pullTimeoutMs = init.pullTimeoutMs ?? pullTimeoutMsDefault;
  const engineLossGraceMs = init.engineLossGraceMs ?? engineLossGraceMsDefault;
  const engineCheckIntervalMs = init.engineCheckIntervalMs ?? engineCheckIntervalMsDefault;
  const logRotation = { ...(init.logRotation ?? logRotationDefault) };
  checkLogRotation(logRotation);
  // docker-modem fills unset options from DOCKER_HOST and DOCKER_CLIENT_TIMEOUT. Explicit undefineds win its
  // merge: shoal talks to exactly the socket it reports, and no client timeout cuts the long-lived wait and
  // log requests.
  // dockerode (with ssh2 and its crypto) is loaded on first use, not at start: ~12 MiB of memory that an
  // exec-only node never pays. Until then a missing socket fails fast (ENOENT, an engine error) without it.
  let clientLoaded: Promise<Docker> | null = null;
  const docker = async (): Promise<Docker> => {
    if (clientLoaded === null) await stat(socketPath);
    clientLoaded ??= import('dockerode').then(
      ({ default: Docker }) =>
        new Docker({ socketPath, host: undefined, port: undefined, protocol: undefined, timeout: undefined }),
    );
    return clientLoaded;
  };
  const leaseKeeperDir = init.leaseKeeperDir === undefined ? null : resolve(init.leaseKeeperDir);
  const leaseKeeperIdleMs = init.leaseKeeperIdleMs ?? leaseKeeperIdleMsDefault;
  const leaseKeeperCommand = [...(init.leaseKeeperCommand ?? leaseKeeperCommandDefault())];
  if (leaseKeeperCommand.length === 0) {
    throw new ShoalError('INVALID_ARGUMENT', 'leaseKeeperCommand must not be empty');
  }
  if (!Number.isFinite(leaseKeeperIdleMs) || leaseKeeperIdleMs <= 0) {
    throw new ShoalError('INVALID_ARGUMENT', `leaseKeeperIdleMs must be positive, got ${leaseKeeperIdleMs}`);
  }
  const logPumps = new Map<string, LogPump>();
  /** Tasks this instance stopped: a 128+n exit code from them means "killed by signal n", not a choice of the task. */
  const stopsRequested = new Set<string>();

  const unreachable = (error: unknown): ShoalError =>
    new ShoalError(
      'DRIVER_UNAVAILABLE',
      `docker engine unreachable at ${socketPath}: ${errorMessage(error)}`,
      {
        cause: error,
      },
    );

  /** Turns what dockerode threw into a ShoalError a user can act on. */
  const engineError = (error: unknown, action: string): ShoalError => {
    if (isShoalError(error)) return error;
    if (isConnectionError(error)) return unreachable(error);
    const code = statusCodeOf(error) === 400 ? 'INVALID_ARGUMENT' : 'INTERNAL';
    return new ShoalError(code, `docker could not ${action}: ${engineMessage(error)}`, { cause: error });
  };

  // One keeper check at a time: concurrent starts must not each start a keeper.
  let keeperCheck: Promise<void> = Promise.resolve();
  let keeperWarned = false;
  /**
   * Makes sure a lease keeper guards this node's leased containers. Called once the container runs: a keeper
   * that is about to exit for want of containers looks once more after it gave up its pid file, so either
   * it sees this container or this call finds no keeper and starts one.
   */
  const ensureLeaseKeeper = (lease: { file: string; durationMs: number }): Promise<void> => {
    const check = keeperCheck.then(async () => {
      if (leaseKeeperDir === null) return;
      if (init.nodeId === undefined) {
        // Without the node's label the keeper could not tell this node's containers from another's.
        if (!keeperWarned)
          logger.warn('no node id: containers are held to the lease only while the agent runs');
        keeperWarned = true;
        return;
      }
      await mkdir(leaseKeeperDir, { recursive: true, mode: 0o700 });
      writeKeeperConfig(leaseKeeperDir, {
        nodeId: init.nodeId,
        socketPath: resolve(socketPath),
        lease: { file: resolve(lease.file), durationMs: lease.durationMs },
        idleExitMs: leaseKeeperIdleMs,
      });
      if (liveKeeper(leaseKeeperDir) !== null) return;
      const keeper = await startLeaseKeeper(leaseKeeperDir, leaseKeeperCommand);
      logger.info('started the docker lease keeper', { pid: keeper.pid, dir: leaseKeeperDir });
    });
    keeperCheck = check.catch(() => undefined);
    return check;
  };

  const ping = async (): Promise<void> => {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`no answer within ${pingTimeoutMs} ms`));
      }, pingTimeoutMs);
    });
    // The timeout covers loading the client too, and both sides are raced from the start: a timeout that
    // fired while the client was still loading (a busy agent's event loop) was an unhandled rejection,
    // which stopped a voter of the scale benchmark.
    const answer = docker().then((client) => client.ping());
    answer.catch(() => undefined);
    try {
      await Promise.race([answer, timeout]);
    } catch (error) {
      throw unreachable(error);
    } finally {
      clearTimeout(timer);
    }
  };

  const health = async (): Promise<DriverHealth> => {
    try {
      await ping();
      const bridge = await hasBridge();
      return {
        healthy: true,
        detail: `docker engine reachable at ${socketPath}${bridge ? '' : ' (no bridge network)'}`,
        bridge,
      };
    } catch (error) {
      return { healthy: false, detail: errorMessage(error) };
    }
  };

  /** Whether the engine has its default bridge network (an engine run with --bridge=none has not). */
  const hasBridge = async (): Promise<boolean> => {
    try {
      const info = (await (await docker()).getNetwork('bridge').inspect()) as { Driver?: unknown };
      return info.Driver === 'bridge';
    } catch {
      return false;
    }
  };

  const emit = (request: StartRequest, event: TaskEvent): void => {
    try {
      request.onEvent?.(event);
    } catch (error) {
      logger.warn('task event listener threw', { taskId: request.taskId, error: errorMessage(error) });
    }
  };

  const ensureImage = async (image: string, request: StartRequest): Promise<void> => {
    const client = await docker();
    try {
      await client.getImage(image).inspect();
      return;
    } catch (error) {
      if (statusCodeOf(error) !== 404) throw engineError(error, `inspect image ${image}`);
    }
    logger.info('pulling image', { image });
    emit(request, { type: 'image:pull', message: `pulling image ${image}` });
    const startedMs = performance.now();
    const progressLine = createPullProgress();
    try {
      const stream = await client.pull(image, { abortSignal: AbortSignal.timeout(pullTimeoutMs) });
      const progress = await new Promise<unknown[]>((resolve, reject) => {
        client.modem.followProgress(
          stream,
          (error, output: unknown[]) => {
            if (error) reject(error);
            else resolve(output);
          },
          (event: unknown) => {
            const line = progressLine(event);
            if (line !== null) emit(request, { type: 'image:pull', message: line });
          },
        );
      });
      // The engine reports a failed pull inside the progress stream, after an HTTP 200.
      const failure = progress.map(progressError).find((message) => message !== null);
      if (failure !== undefined) throw new Error(failure);
    } catch (error) {
      if (isConnectionError(error)) throw unreachable(error);
      throw new ShoalError(
        'INVALID_ARGUMENT',
        `image not found: ${image} (pull failed: ${engineMessage(error)})`,
        {
          cause: error,
        },
      );
    }
    const seconds = ((performance.now() - startedMs) / 1000).toFixed(1);
    logger.info('pulled image', { image, seconds });
    emit(request, { type: 'image:pulled', message: `pulled image ${image} in ${seconds} s` });
  };

  const createContainer = async (request: StartRequest, image: string): Promise<Docker.Container> => {
    const { taskId, spec, taskDir } = request;
    const name = containerNamePrefix + taskId;
    const network = networkOf(spec);
    const hostsPath = join(taskDir, containerHostsFileName);
    if (network === 'none') await writeFile(hostsPath, containerHosts, { mode: 0o644 });
    // The task's own directory, shared with the container at a fixed path (SHOAL_TASK_DIR in there).
    const sharedDir = join(taskDir, containerSharedDirName);
    await mkdir(sharedDir, { recursive: true });
    const env = { ...spec.env, ...request.env, ...(request.env ? { SHOAL_TASK_DIR: containerTaskDir } : {}) };
    const bindings = request.ports?.bindings ?? [];
    const options: Docker.ContainerCreateOptions = {
      name,
      Image: image,
      // An empty command runs the image's default.
      ...(spec.command.length > 0 ? { Cmd: spec.command } : {}),
      ...(spec.user === undefined ? {} : { User: spec.user }),
      Env: Object.entries(env).map(([key, value]) => `${key}=${value}`),
      ...(network === 'bridge' && bindings.length > 0
        ? { ExposedPorts: Object.fromEntries(bindings.map((binding) => [`${binding.innerPort}/tcp`, {}])) }
        : {}),
      Labels: {
        [taskLabel]: taskId,
        [managedLabel]: 'true',
        ...(init.nodeId === undefined ? {} : { [nodeLabel]: init.nodeId }),
        // What the lease keeper kills once the lease is over: not a `--on-disconnect keep` task's container.
        ...(request.lease === undefined ? {} : { [leaseLabel]: 'true' }),
      },
      Tty: false,
      OpenStdin: false,
      // Each container gets a network namespace of its own with only loopback in it, as with `--network none`
      // (shoal does not manage container networking yet), but one made by the runtime as it starts the
      // container, not by the engine's network stack: the engine's set-up of a `none` sandbox per container
      // more than doubled the time 50 concurrent starts took on this host (bench:replicas: 2.1 against
      // 4.8 s at the bare engine API). The engine then writes no /etc/hosts: the driver mounts its own, from
      // the task's directory (so the engine must run on this machine, as the socket path implies).
      // Services (`bridge`, `host`) get the engine's networking; the fast path above is for the rest.
      ...(network === 'none' ? { NetworkDisabled: true } : {}),
      HostConfig: {
        Memory: spec.memoryBytes,
        // No swap on top: the memory the allocator reserved is all the task gets.
        MemorySwap: spec.memoryBytes,
        NanoCpus: spec.cpuMillis * 1_000_000,
        // As for exec tasks: a fork bomb stops at the task's own limit.
        PidsLimit: spec.pidsMax ?? pidsMaxDefault,
        // The node's device files the task holds, at the same paths (the engine adds the cgroup rules).
        ...(request.devices === undefined || request.devices.length === 0
          ? {}
          : {
              Devices: request.devices.map((device) => ({
                PathOnHost: device.path,
                PathInContainer: device.path,
                CgroupPermissions: 'rwm',
              })),
            }),
        // Engines run with --bridge=none (as in our tests) have no default bridge to attach to: 'none' is the
        // one mode that works everywhere, and with networking disabled it adds no network endpoint.
        NetworkMode: network,
        ...(network === 'bridge' && bindings.length > 0
          ? {
              PortBindings: Object.fromEntries(
                bindings.map((binding) => [
                  `${binding.innerPort}/tcp`,
                  [{ HostIp: request.ports?.host ?? '', HostPort: String(binding.hostPort) }],
                ]),
              ),
            }
          : {}),
        Mounts: [
          ...(network === 'none'
            ? [{ Type: 'bind' as const, Source: hostsPath, Target: '/etc/hosts', ReadOnly: true }]
            : []),
          { Type: 'bind' as const, Source: sharedDir, Target: containerTaskDir },
        ],
        // shoal reads output through the engine's log API, which needs a readable log driver whatever the
        // daemon's default; the size cap keeps the engine's copy from filling its disk.
        LogConfig: { Type: 'json-file', Config: { 'max-size': engineLogSizeMax, 'max-file': '1' } },
      },
    };
    const client = await docker();
    try {
      return await client.createContainer(options);
    } catch (error) {
      if (statusCodeOf(error) !== 409) throw engineError(error, `create container ${name}`);
    }
    // The name is taken. A container of this task left behind by an agent that died mid-start is removed and
    // replaced; anything else is not ours to touch.
    const leftover = client.getContainer(name);
    const info = await leftover.inspect().catch((error: unknown) => {
      throw engineError(error, `inspect container ${name}`);
    });
    if (info.Config.Labels[taskLabel] !== taskId) {
      throw new ShoalError(
        'CONFLICT',
        `a container named ${name} exists and is not shoal's: remove or rename it`,
      );
    }
    logger.warn('replacing a leftover container of this task', { taskId, containerId: info.Id });
    await leftover.remove({ force: true, v: true }).catch((error: unknown) => {
      if (statusCodeOf(error) !== 404) throw engineError(error, `remove leftover container ${name}`);
    });
    try {
      return await client.createContainer(options);
    } catch (error) {
      throw engineError(error, `create container ${name}`);
    }
  };

  /** Appends the container's output to the task's log files until the container stops. Never rejects. */
  const pumpLogs = (taskId: string, containerId: string, taskDir: string, sinceSeconds: number): LogPump => {
    const abort = new AbortController();
    const done = (async (): Promise<void> => {
      const files = [
        new RotatingLogFile(join(taskDir, stdoutLogFileName), logRotation),
        new RotatingLogFile(join(taskDir, stderrLogFileName), logRotation),
      ] as const;
      for (const file of files) {
        file.on('error', (error) =>
          logger.warn('cannot write task log', { taskId, error: errorMessage(error) }),
        );
      }
      try {
        const client = await docker();
        const stream = await client.getContainer(containerId).logs({
          follow: true,
          stdout: true,
          stderr: true,
          since: sinceSeconds,
          abortSignal: abort.signal,
        });
        client.modem.demuxStream(stream, files[0], files[1]);
        await finished(stream);
      } catch (error) {
        if (!abort.signal.aborted) {
          logger.warn('container log stream broke', { taskId, error: errorMessage(error) });
        }
      } finally {
        await Promise.all(files.map(closeFile));
      }
    })();
    return { done, abort };
  };

  const start = async (request: StartRequest): Promise<TaskHandle> => {
    const { taskId, spec, taskDir } = request;
    if (spec.driver !== 'docker') {
      throw new ShoalError(
        'INVALID_ARGUMENT',
        `task ${taskId} asks for the ${spec.driver} driver, not docker`,
      );
    }
    const image = spec.image;
    if (image === undefined) {
      throw new ShoalError('INVALID_ARGUMENT', 'the docker driver needs an image (--image NAME)');
    }
    if (!taskIdPattern.test(taskId)) {
      throw new ShoalError('INVALID_ARGUMENT', `task id ${JSON.stringify(taskId)} cannot name a container`);
    }
    // Fail fast with a clear reason when the engine is down, before any slower step.
    await ping();
    await ensureImage(image, request);
    await mkdir(taskDir, { recursive: true });
    const container = await createContainer(request, image);
    try {
      await container.start();
    } catch (error) {
      await container.remove({ force: true, v: true }).catch((removeError: unknown) => {
        logger.warn('cannot remove a container that failed to start', {
          taskId,
          error: errorMessage(removeError),
        });
      });
      throw startError(error, spec.command[0] ?? `the default command of ${image}`, engineError);
    }
    if (request.lease !== undefined) {
      try {
        await ensureLeaseKeeper(request.lease);
      } catch (error) {
        // Unguarded, the container could outlive the lease and run twice: it does not run at all.
        await container.remove({ force: true, v: true }).catch((removeError: unknown) => {
          logger.warn('cannot remove a container whose lease keeper did not start', {
            taskId,
            error: errorMessage(removeError),
          });
        });
        throw new ShoalError('INTERNAL', `could not start the docker lease keeper: ${errorMessage(error)}`, {
          cause: error,
        });
      }
    }
    // Since 0: the whole output, even if the container already exited.
    logPumps.set(taskId, pumpLogs(taskId, container.id, taskDir, 0));
    const state: DockerState = {
      containerId: container.id,
      containerName: containerNamePrefix + taskId,
      image,
      taskDir,
      leaseFile: request.lease?.file ?? null,
      leaseDurationMs: request.lease?.durationMs ?? null,
    };
    logger.info('task started', { taskId, containerId: container.id, image });
    return { taskId, driver: 'docker', state: { ...state } };
  };

  // One timer for every wait(): while any task is waited for, the engine is pinged every engineCheckIntervalMs.
  // A failed ping wakes the waits, which then give the engine engineLossGraceMs to come back.
  const engineListeners = new Set<(error: unknown) => void>();
  let engineTimer: NodeJS.Timeout | null = null;
  let engineChecking = false;
  const checkEngine = (): void => {
    if (engineChecking) return;
    engineChecking = true;
    ping()
      .catch((error: unknown) => {
        for (const listener of [...engineListeners]) listener(error);
      })
      .finally(() => {
        engineChecking = false;
      });
  };
  const watchEngine = (onDown: (error: unknown) => void): (() => void) => {
    engineListeners.add(onDown);
    if (engineTimer === null) {
      engineTimer = setInterval(checkEngine, engineCheckIntervalMs);
      // The pending wait request is what keeps an agent busy, not this timer.
      engineTimer.unref();
    }
    return () => {
      engineListeners.delete(onDown);
      if (engineListeners.size === 0 && engineTimer !== null) {
        clearInterval(engineTimer);
        engineTimer = null;
      }
    };
  };

  type WaitOutcome =
    | { kind: 'exited'; statusCode: number | null }
    | { kind: 'removed' }
    | { kind: 'unreachable'; error: unknown };

  const waitForExit = async (taskId: string, container: Docker.Container): Promise<WaitOutcome> => {
    const abort = new AbortController();
    let unwatch = (): void => undefined;
    // Raced rather than trusted to the abort: a wait request whose connection dies after the engine sent its
    // headers is never settled by dockerode.
    const engineDown = new Promise<WaitOutcome>((resolve) => {
      unwatch = watchEngine((error) => {
        abort.abort();
        resolve({ kind: 'unreachable', error });
      });
    });
    const exited = (async (): Promise<WaitOutcome> => {
      try {
        const answer: unknown = await container.wait({ condition: 'not-running', abortSignal: abort.signal });
        return { kind: 'exited', statusCode: statusCodeOfWait(answer) };
      } catch (error) {
        if (statusCodeOf(error) === 404) return { kind: 'removed' };
        if (abort.signal.aborted || isConnectionError(error)) return { kind: 'unreachable', error };
        throw engineError(error, `wait for task ${taskId}`);
      }
    })();
    try {
      return await Promise.race([exited, engineDown]);
    } finally {
      unwatch();
      abort.abort();
    }
  };

  /** Pings until the engine answers (true) or graceMs has passed since it was found gone (false). */
  const engineBackWithin = async (graceMs: number): Promise<boolean> => {
    const deadlineMs = Date.now() + graceMs;
    for (;;) {
      try {
        await ping();
        return true;
      } catch {
        const leftMs = deadlineMs - Date.now();
        if (leftMs <= 0) return false;
        await sleep(Math.min(engineRetryIntervalMs, leftMs));
      }
    }
  };

  const wait = async (handle: TaskHandle): Promise<ExitResult> => {
    checkHandleDriver(handle, 'docker');
    const { containerId, taskDir } = parseState(handle);
    const container = (await docker()).getContainer(containerId);
    let statusCode: number | null = null;
    for (;;) {
      const outcome = await waitForExit(handle.taskId, container);
      if (outcome.kind === 'removed') {
        return {
          exitCode: null,
          signal: null,
          oomKilled: false,
          reason: 'container removed',
          succeeded: false,
        };
      }
      if (outcome.kind === 'exited') {
        statusCode = outcome.statusCode;
        break;
      }
      logger.warn('docker engine unreachable while a task runs', {
        taskId: handle.taskId,
        error: errorMessage(outcome.error),
        graceMs: engineLossGraceMs,
      });
      if (!(await engineBackWithin(engineLossGraceMs))) {
        return {
          exitCode: null,
          signal: null,
          oomKilled: false,
          reason:
            `docker engine unreachable while the task ran: ${oneLine(rootCauseMessage(outcome.error))} ` +
            `(no answer from ${socketPath} for ${Math.round(engineLossGraceMs / 1000)} s)`,
          succeeded: false,
        };
      }
      logger.info('docker engine answers again; waiting for the task', { taskId: handle.taskId });
      // The log stream broke with the engine: pick it up from the last line written.
      const pump = logPumps.get(handle.taskId);
      if (pump === undefined || (await isSettled(pump.done))) {
        logPumps.set(
          handle.taskId,
          pumpLogs(handle.taskId, containerId, taskDir, await logsSinceSeconds(taskDir)),
        );
      }
    }
    const pump = logPumps.get(handle.taskId);
    if (pump !== undefined) await settleWithin(pump.done, logsDrainTimeoutMs);
    let info: Docker.ContainerInspectInfo | null = null;
    try {
      info = await container.inspect();
    } catch (error) {
      // Removed right after it exited: the status from wait is all there is.
      if (statusCodeOf(error) !== 404) throw engineError(error, `inspect task ${handle.taskId}`);
    }
    const exitCode = info?.State.ExitCode ?? statusCode;
    if (leaseKeeperDir !== null) {
      const record = await readLeaseKill(leaseKeeperDir, handle.taskId);
      if (killedForLease(record, containerId, exitCode)) {
        return { exitCode, signal: 'SIGKILL', oomKilled: false, reason: leaseKillReason, succeeded: false };
      }
    }
    return exitResultOf({
      exitCode,
      oomKilled: info?.State.OOMKilled ?? false,
      engineError: info?.State.Error ?? '',
      stoppedByShoal: stopsRequested.has(handle.taskId),
    });
  };

  const stop = async (
    handle: TaskHandle,
    options: { graceMs: number; signal?: NodeJS.Signals },
  ): Promise<void> => {
    checkHandleDriver(handle, 'docker');
    const { graceMs } = options;
    if (!Number.isFinite(graceMs) || graceMs < 0) {
      throw new ShoalError('INVALID_ARGUMENT', `graceMs must be a non-negative number, got ${graceMs}`);
    }
    const { containerId } = parseState(handle);
    const container = (await docker()).getContainer(containerId);
    stopsRequested.add(handle.taskId);
    // Whole seconds, rounded up: the engine's grace must never be shorter than the one asked for.
    const graceSeconds = Math.ceil(graceMs / 1000);
    try {
      if (options.signal === undefined || options.signal === 'SIGTERM') {
        // The engine sends the stop signal, waits, then SIGKILLs: the grace holds even if shoal dies meanwhile.
        await container.stop({ t: graceSeconds });
        return;
      }
      // API 1.41 has no signal for stop: send it ourselves, then stop with no grace once it has run out.
      try {
        await container.kill({ signal: options.signal });
      } catch (error) {
        if (statusCodeOf(error) === 409) return; // not running
        throw error;
      }
      await container
        .wait({ condition: 'not-running', abortSignal: AbortSignal.timeout(graceMs) })
        .catch(() => {
          // the grace ran out (or the engine hiccuped): the stop below settles it
        });
      await container.stop({ t: 0 });
    } catch (error) {
      // 304: already stopped; 404: already removed.
      const status = statusCodeOf(error);
      if (status === 304 || status === 404) return;
      throw engineError(error, `stop task ${handle.taskId}`);
    }
  };

  const destroy = async (handle: TaskHandle): Promise<void> => {
    checkHandleDriver(handle, 'docker');
    const { containerId } = parseState(handle);
    try {
      await (await docker()).getContainer(containerId).remove({ force: true, v: true });
    } catch (error) {
      // 404: already gone; 409: a removal is already under way.
      const status = statusCodeOf(error);
      if (status !== 404 && status !== 409)
        throw engineError(error, `remove the container of task ${handle.taskId}`);
    }
    if (leaseKeeperDir !== null) {
      const record = await readLeaseKill(leaseKeeperDir, handle.taskId);
      if (record?.containerId === containerId) await removeLeaseKill(leaseKeeperDir, handle.taskId);
    }
    const pump = logPumps.get(handle.taskId);
    if (pump !== undefined) {
      // The stream ends by itself once the container is gone; the abort only guards against an engine that hangs.
      await settleWithin(pump.done, logsDrainTimeoutMs);
      pump.abort.abort();
      logPumps.delete(handle.taskId);
    }
    stopsRequested.delete(handle.taskId);
  };

  const recover = async (handle: TaskHandle): Promise<boolean> => {
    checkHandleDriver(handle, 'docker');
    const { containerId, taskDir, leaseFile, leaseDurationMs } = parseState(handle);
    let info: Docker.ContainerInspectInfo;
    try {
      info = await (await docker()).getContainer(containerId).inspect();
    } catch (error) {
      if (statusCodeOf(error) === 404) return false;
      // An engine that is down says nothing about the task: reject rather than report it gone.
      throw engineError(error, `inspect task ${handle.taskId}`);
    }
    // A container that ended while no agent watched still tells its exit code: report on it too.
    if (info.Config.Labels[taskLabel] !== handle.taskId) return false;
    if (!logPumps.has(handle.taskId)) {
      await mkdir(taskDir, { recursive: true });
      // What the container wrote after the last line in taskDir is still in the engine's log: copy from there.
      logPumps.set(
        handle.taskId,
        pumpLogs(handle.taskId, containerId, taskDir, await logsSinceSeconds(taskDir)),
      );
    }
    if (info.State.Running && leaseFile !== null && leaseDurationMs !== null) {
      // An agent that restarts after its keeper gave up (it found nothing to guard while the engine was down,
      // say) starts one again. A keeper that cannot start does not make the task less alive: say so only.
      await ensureLeaseKeeper({ file: leaseFile, durationMs: leaseDurationMs }).catch((error: unknown) => {
        logger.warn('could not start the docker lease keeper for a recovered task', {
          taskId: handle.taskId,
          error: errorMessage(error),
        });
      });
    }
    logger.info(info.State.Running ? 'task recovered' : 'task ended while no agent watched; recovered it', {
      taskId: handle.taskId,
      containerId,
    });
    return true;
  };

  /** This node's containers (running or not), optionally of one task. */
  const ownContainers = async (taskId?: string): Promise<Docker.ContainerInfo[]> => {
    if (init.nodeId === undefined) return [];
    const labels = [`${managedLabel}=true`, `${nodeLabel}=${init.nodeId}`];
    if (taskId !== undefined) labels.push(`${taskLabel}=${taskId}`);
    try {
      return await (await docker()).listContainers({ all: true, filters: { label: labels } });
    } catch (error) {
      throw engineError(error, 'list containers');
    }
  };

  const leftovers = async (): Promise<string[]> =>
    (await ownContainers()).flatMap((info) => {
      const taskId = info.Labels[taskLabel];
      return taskId === undefined ? [] : [taskId];
    });

  const collect = async (orphan: { taskId: string; taskDir: string }): Promise<boolean> => {
    const containers = await ownContainers(orphan.taskId);
    for (const info of containers) {
      logger.warn('removing a container of a task this node no longer runs', {
        taskId: orphan.taskId,
        containerId: info.Id,
        state: info.State,
      });
      await (
        await docker()
      )
        .getContainer(info.Id)
        .remove({ force: true, v: true })
        .catch((error: unknown) => {
          const status = statusCodeOf(error);
          if (status !== 404 && status !== 409) throw engineError(error, `remove container ${info.Id}`);
        });
      const pump = logPumps.get(orphan.taskId);
      pump?.abort.abort();
      logPumps.delete(orphan.taskId);
    }
    if (leaseKeeperDir !== null) await removeLeaseKill(leaseKeeperDir, orphan.taskId);
    return containers.length > 0;
  };

  /**
   * Runs the check's command inside the task's container (`docker exec`), with the container's environment
   * plus request.env, in its working directory (request.cwd is a host path, meaningless in there).
   */
  const execCheck = async (handle: TaskHandle, request: ExecCheckRequest): Promise<ExecCheckResult> => {
    checkHandleDriver(handle, 'docker');
    const { containerId } = parseState(handle);
    if (request.command.length === 0 || request.command[0] === '') {
      return { exitCode: null, output: 'an exec check needs a command', timedOut: false };
    }
    const output = new CappedOutput(checkOutputBytesMax);
    // Aborted on timeout, and once the check is answered: no request of it outlives the answer.
    const abort = new AbortController();
    const run = async (): Promise<number | null> => {
      const client = await docker();
      const exec = await client.getContainer(containerId).exec({
        Cmd: [...request.command],
        Env: Object.entries(request.env).map(([key, value]) => `${key}=${value}`),
        AttachStdin: false,
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
        abortSignal: abort.signal,
      });
      const stream = await exec.start({ hijack: true, stdin: false, abortSignal: abort.signal });
      abort.signal.addEventListener('abort', () => stream.destroy(), { once: true });
      client.modem.demuxStream(stream, output, output);
      await finished(stream, { writable: false });
      for (;;) {
        const info = await exec.inspect({ abortSignal: abort.signal });
        if (!info.Running) return info.ExitCode;
        await sleep(checkExitPollIntervalMs, undefined, { signal: abort.signal });
      }
    };
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), request.timeoutMs);
    });
    const running = run();
    // Settled after the answer when the timeout wins (its abort makes it reject): nobody waits for it then.
    running.catch(() => undefined);
    try {
      const outcome = await Promise.race([running, timeout]);
      // The engine has no API to kill an exec's process: a timed-out command keeps running in the container
      // until it ends by itself or the container stops. Only the wait for it is cut short here.
      if (outcome === 'timeout') return { exitCode: null, output: output.text(), timedOut: true };
      return { ...commandNotFound(outcome, output.text()), timedOut: false };
    } catch (error) {
      throw engineError(error, `run a check in task ${handle.taskId}`);
    } finally {
      clearTimeout(timer);
      abort.abort();
    }
  };

  // The container's writable layer (overlay2's upper directory): what it writes outside its task directory.
  const diskPaths = async (handle: TaskHandle): Promise<string[]> => {
    const { containerId } = parseState(handle);
    const info = await (
      await docker()
    )
      .getContainer(containerId)
      .inspect()
      .catch((error: unknown) => {
        throw engineError(error, `inspect container ${containerId}`);
      });
    // Typed for devicemapper by @types/dockerode; overlay2 reports UpperDir here.
    const data: Readonly<Record<string, unknown>> = info.GraphDriver.Data;
    const upper = data['UpperDir'];
    return typeof upper === 'string' && upper !== '' ? [upper] : [];
  };

  return {
    name: 'docker',
    health,
    start,
    wait,
    stop,
    destroy,
    recover,
    leftovers,
    collect,
    diskPaths,
    execCheck,
  };
}

type ExecCheckRequest = Parameters<NonNullable<Driver['execCheck']>>[1];
type ExecCheckResult = Awaited<ReturnType<NonNullable<Driver['execCheck']>>>;

/** Keeps the first maxBytes written to it, from both of an exec's streams, and drops the rest. */
class CappedOutput extends Writable {
  readonly #chunks: Buffer[] = [];
  #keptBytes = 0;
  readonly #maxBytes: number;

  constructor(maxBytes: number) {
    super();
    this.#maxBytes = maxBytes;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.#keptBytes < this.#maxBytes) {
      const part = chunk.subarray(0, this.#maxBytes - this.#keptBytes);
      this.#chunks.push(part);
      this.#keptBytes += part.length;
    }
    callback();
  }

  text(): string {
    return Buffer.concat(this.#chunks).toString('utf8');
  }
}

/**
 * runc reports a command the container lacks in the exec's own output ('OCI runtime exec failed: … exec:
 * "x": executable file not found in $PATH'), with exit code 126 or 127: said here as the exec driver says it.
 */
function commandNotFound(
  exitCode: number | null,
  output: string,
): { exitCode: number | null; output: string } {
  if (exitCode !== 126 && exitCode !== 127) return { exitCode, output };
  const match =
    /^OCI runtime exec failed:.*exec: "([^"]*)": (executable file not found|permission denied)/.exec(output);
  if (match === null) return { exitCode, output };
  const [, executable = '', problem] = match;
  return {
    exitCode: null,
    output:
      problem === 'permission denied'
        ? `command not executable (permission denied): ${executable}`
        : `command not found: ${executable}`,
  };
}

function parseState(handle: TaskHandle): DockerState {
  const { containerId, containerName, image, taskDir, leaseFile, leaseDurationMs } = handle.state;
  if (typeof containerId !== 'string' || containerId === '') {
    throw new ShoalError('INVALID_ARGUMENT', `docker handle for task ${handle.taskId} has no containerId`);
  }
  if (typeof containerName !== 'string' || typeof image !== 'string' || typeof taskDir !== 'string') {
    throw new ShoalError('INVALID_ARGUMENT', `docker handle for task ${handle.taskId} is incomplete`);
  }
  // Absent from handles of drivers older than the lease keeper: their containers are not guarded.
  const lease =
    typeof leaseFile === 'string' && typeof leaseDurationMs === 'number' && leaseDurationMs > 0
      ? { leaseFile, leaseDurationMs }
      : { leaseFile: null, leaseDurationMs: null };
  return { containerId, containerName, image, taskDir, ...lease };
}

interface ContainerExit {
  exitCode: number | null;
  oomKilled: boolean;
  /** State.Error: why the engine could not run the container, if it says. */
  engineError: string;
  stoppedByShoal: boolean;
}

function exitResultOf(exit: ContainerExit): ExitResult {
  const { exitCode, oomKilled } = exit;
  if (oomKilled) return { exitCode, signal: null, oomKilled: true, reason: 'OOM-killed', succeeded: false };
  if (exitCode === 0)
    return { exitCode, signal: null, oomKilled: false, reason: 'exit code 0', succeeded: true };
  if (exitCode === null) {
    return { exitCode, signal: null, oomKilled: false, reason: 'exit status unknown', succeeded: false };
  }
  // A shell reports death by signal n as 128+n; after our stop that is what it means.
  const signal = exit.stoppedByShoal && exitCode > 128 ? signalName(exitCode - 128) : null;
  if (signal !== null)
    return { exitCode, signal, oomKilled: false, reason: `killed by ${signal}`, succeeded: false };
  const detail = exit.engineError === '' ? '' : `: ${oneLine(exit.engineError)}`;
  return {
    exitCode,
    signal: null,
    oomKilled: false,
    reason: `exit code ${exitCode}${detail}`,
    succeeded: false,
  };
}

function signalName(signalNumber: number): string | null {
  for (const [name, value] of Object.entries(osConstants.signals)) {
    if (value === signalNumber) return name;
  }
  return null;
}

/** Reads why a container could not start: a missing executable is the user's to fix. */
function startError(
  error: unknown,
  command: string,
  engineError: (error: unknown, action: string) => ShoalError,
): ShoalError {
  const message = engineMessage(error);
  // runc says e.g.: exec: "nosuch": executable file not found in $PATH
  const executable = /exec: "([^"]*)"/.exec(message)?.[1] ?? command;
  if (/executable file not found|no such file or directory/.test(message)) {
    return new ShoalError('INVALID_ARGUMENT', `command not found: ${executable}`, { cause: error });
  }
  if (/permission denied/.test(message)) {
    return new ShoalError('INVALID_ARGUMENT', `command not executable (permission denied): ${executable}`, {
      cause: error,
    });
  }
  return engineError(error, 'start the container');
}

/** What went wrong underneath our own wrapping ("connect ENOENT /run/docker.sock"), for one-line reasons. */
function rootCauseMessage(error: unknown): string {
  if (isShoalError(error) && error.cause !== undefined) return errorMessage(error.cause);
  return errorMessage(error);
}

/** The engine's HTTP status, when dockerode got an answer. */
function statusCodeOf(error: unknown): number | undefined {
  if (typeof error !== 'object' || error === null || !('statusCode' in error)) return undefined;
  return typeof error.statusCode === 'number' ? error.statusCode : undefined;
}

/** Socket-level failures: the engine is not there (ENOENT, ECONNREFUSED) or not ours to use (EACCES). */
function isConnectionError(error: unknown): boolean {
  if (!isErrnoException(error)) return false;
  return ['ENOENT', 'ECONNREFUSED', 'EACCES', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ENOTSOCK'].includes(
    error.code ?? '',
  );
}

/** The engine's own message (dockerode wraps it in "(HTTP code 404) no such container - …"), on one line. */
function engineMessage(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'json' in error) {
    const json: unknown = error.json;
    if (typeof json === 'object' && json !== null && 'message' in json && typeof json.message === 'string') {
      return oneLine(json.message);
    }
  }
  return oneLine(errorMessage(error));
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

/** A pull's progress line that reports failure ({"error": "…"}), or null. */
function progressError(line: unknown): string | null {
  if (typeof line !== 'object' || line === null || !('error' in line)) return null;
  return typeof line.error === 'string' ? line.error : JSON.stringify(line.error);
}

function statusCodeOfWait(answer: unknown): number | null {
  if (typeof answer !== 'object' || answer === null || !('StatusCode' in answer)) return null;
  return typeof answer.StatusCode === 'number' ? answer.StatusCode : null;
}

/**
 * Turns pull progress events into lines worth showing: every change of a layer's status, and its byte
 * counts at most every pullProgressIntervalMs. Returns null for an event to skip.
 */
export function createPullProgress(nowMs: () => number = Date.now): (event: unknown) => string | null {
  const layers = new Map<string, { status: string; atMs: number }>();
  return (event) => {
    if (typeof event !== 'object' || event === null || !('status' in event)) return null;
    const status = typeof event.status === 'string' ? oneLine(event.status) : null;
    if (status === null || status === '') return null;
    const id = 'id' in event && typeof event.id === 'string' ? event.id : '';
    const last = layers.get(id);
    const atMs = nowMs();
    if (last?.status === status && atMs - last.atMs < pullProgressIntervalMs) return null;
    layers.set(id, { status, atMs });
    const detail = 'progressDetail' in event ? byteProgress(event.progressDetail) : '';
    return `${id === '' ? '' : `${id}: `}${status}${detail}`;
  };
}

function byteProgress(detail: unknown): string {
  if (typeof detail !== 'object' || detail === null) return '';
  const current = 'current' in detail && typeof detail.current === 'number' ? detail.current : null;
  const total = 'total' in detail && typeof detail.total === 'number' ? detail.total : null;
  if (current === null) return '';
  return total === null || total <= 0
    ? ` ${formatMegabytes(current)}`
    : ` ${formatMegabytes(current)} / ${formatMegabytes(total)}`;
}

function formatMegabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/**
 * Where to resume copying a container's log: the time of the last write to the task's log files (fractional
 * seconds, as the engine's `since` takes them), or 0 (everything) when nothing was written yet.
 */
async function logsSinceSeconds(taskDir: string): Promise<number> {
  const times = await Promise.all(
    [stdoutLogFileName, stderrLogFileName].map((name) =>
      stat(join(taskDir, name)).then(
        (info) => info.mtimeMs,
        () => 0,
      ),
    ),
  );
  return Math.max(0, ...times) / 1000;
}

async function isSettled(promise: Promise<void>): Promise<boolean> {
  const pending = Symbol('pending');
  return (await Promise.race([promise.then(() => true), Promise.resolve(pending)])) !== pending;
}

async function closeFile(file: RotatingLogFile): Promise<void> {
  file.end();
  await finished(file).catch(() => undefined); // a write error was already logged
}

/** Waits for `promise` at most timeoutMs; the caller goes on either way. */
async function settleWithin(promise: Promise<void>, timeoutMs: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, timeoutMs);
  });
  try {
    await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
