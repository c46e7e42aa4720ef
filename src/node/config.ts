/**
 * One node's configuration: what `shoal agent`'s flags become, with units, defaults and the formulas that
 * derive a value when a field is left out, and a validation that names the field to fix. The parts' own
 * parameters (membership, Raft timings, the voter policy, compaction) live with their parts.
 */
import { availableParallelism, totalmem } from 'node:os';
import { statfsSync } from 'node:fs';
import { preemptionPriorityGapDefault } from '../allocator/index.ts';
import {
  liveTasksMaxForMemory,
  liveTasksMaxMax,
  liveTasksMaxMin,
  preemptionPriorityGapOff,
  terminalTaskRetentionMsDefault,
  terminalTaskRetentionMsMax,
  terminalTasksRetainedMaxDefault,
  terminalTasksRetainedMaxMax,
  terminalTasksRetainedMaxMin,
  type TaskLimits,
} from '../cluster/index.ts';
import type { CompactionPolicy, RaftTimings, VoterPolicy } from '../election/index.ts';
import type { MembershipConfig } from '../membership/index.ts';
import { gibibyte, invalidArgument, mebibyte } from '../shared/index.ts';
import type { HostPort } from './address.ts';

export interface NodeConfig {
  /** Holds the node's key, the cluster key, the Raft log, the lease file and task directories. */
  readonly dataDir: string;
  /** The cluster (libp2p) listener. */
  readonly listen: HostPort;
  /** host:port seeds to join through; empty: start a new cluster (or restart a member of one). */
  readonly join: readonly string[];
  /** The cluster's pre-shared key; null: read it from the data dir, or create one for a new cluster. */
  readonly clusterKey: string | null;
  /** The node's name in every view; letters, digits, ".", "_" and "-" (at most 64). */
  readonly name: string;
  /** CPU offered to tasks; null: availableParallelism() × 1000 − reservedCpuMillis. */
  readonly cpuMillis: number | null;
  /** Memory offered to tasks; null: totalmem() − reservedMemoryBytes. */
  readonly memoryBytes: number | null;
  /** Disk offered to tasks; null: the data dir's free space at start minus reservedDiskBytesDefault. */
  readonly diskBytes?: number | null;
  /** Device counts by kind offered to tasks (e.g. gpu: 2). */
  readonly devices?: Readonly<Record<string, number>>;
  /**
   * The device files behind a kind's count, in slot order (`--device gpu=/dev/nvidia0,/dev/nvidia1`): a
   * task holding slot 1 of gpu gets /dev/nvidia1, and only it. A kind with a count and no files gives tasks
   * slot numbers only (SHOAL_DEVICES_GPU=0,1).
   */
  readonly deviceFiles?: Readonly<Record<string, readonly string[]>>;
  /** A task may preempt only tasks at least this much lower in priority (preemptionPriorityGapOff: never). */
  readonly preemptionPriorityGap?: number;
  /**
   * The cluster's task limits while this node leads (the ready leader makes its own the replicated ones,
   * cluster/limits.ts). Live tasks accepted; absent: liveTasksMaxForMemory(totalmem()), half the machine's
   * memory at liveTaskBytes (2 KiB) a task, e.g. 2,097,152 on 8 GiB.
   */
  readonly liveTasksMax?: number;
  /** Ended plain tasks kept; absent: terminalTasksRetainedMaxDefault (10,000). */
  readonly terminalTasksRetainedMax?: number;
  /** How long an ended plain task is kept; null: until the count forgets it; absent: 1 h. */
  readonly terminalTaskRetentionMs?: number | null;
  readonly labels: Readonly<Record<string, string>>;
  /** The range dynamic ports are picked from on this node; absent: dynamicPortRangeDefault (20000–32000). */
  readonly dynamicPorts?: { readonly min: number; readonly max: number };
  /** Where the node answers DNS for services (NAME.service.shoal); null or absent: it does not (`shoal agent` defaults to dnsDefault). */
  readonly dns?: { readonly host: string; readonly port: number } | null;
  /** The Docker engine's socket; null: the engine's default (/var/run/docker.sock). */
  readonly dockerSocket: string | null;
  /** Exec tasks run isolated (their user, namespaces of their own); absent: true. */
  readonly execIsolation?: boolean;
  /** Exec tasks may run as root; absent: false. */
  readonly allowRootTasks?: boolean;
  /** Registries (HOST or HOST:PORT) the exec driver pulls images from over plain http; loopback ones always are. */
  readonly insecureRegistries?: readonly string[];
  readonly raftTimings?: RaftTimings;
  readonly membership?: MembershipConfig;
  readonly voterPolicy?: VoterPolicy;
  readonly compaction?: CompactionPolicy;
  /** Held back from detected capacity for the agent itself, so tasks cannot starve the control plane. */
  readonly reservedCpuMillis?: number;
  readonly reservedMemoryBytes?: number;
}

/** What the agent keeps for itself when capacity is detected: Raft, gossip and the API must stay responsive. */
export const reservedCpuMillisDefault = 200;
export const reservedMemoryBytesDefault = 256 * mebibyte;
/** Disk kept free on the data dir's filesystem when disk capacity is detected: the log and logs need it. */
export const reservedDiskBytesDefault = gibibyte;
/** The cluster listener and the API when `shoal agent` is not told otherwise. */
export const listenDefault = '0.0.0.0:4700';
export const apiDefault = '127.0.0.1:4701';
/** Where every node answers DNS for services unless told otherwise (Consul's port). */
export const dnsDefault = '127.0.0.1:8600';
export const nodeNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** The resources a node offers, from its config or, where it is silent, from the machine. */
export function offeredResources(config: NodeConfig): {
  cpuMillis: number;
  memoryBytes: number;
  diskBytes: number;
} {
  return {
    cpuMillis:
      config.cpuMillis ??
      Math.max(0, availableParallelism() * 1000 - (config.reservedCpuMillis ?? reservedCpuMillisDefault)),
    memoryBytes:
      config.memoryBytes ??
      Math.max(0, totalmem() - (config.reservedMemoryBytes ?? reservedMemoryBytesDefault)),
    diskBytes: config.diskBytes ?? detectDiskBytes(config.dataDir),
  };
}

/** The task limits this node makes the cluster's when it leads: its config, or the defaults of its machine. */
export function taskLimitsOf(config: NodeConfig, totalMemoryBytes = totalmem()): TaskLimits {
  return {
    liveTasksMax: config.liveTasksMax ?? liveTasksMaxForMemory(totalMemoryBytes),
    terminalTasksRetainedMax: config.terminalTasksRetainedMax ?? terminalTasksRetainedMaxDefault,
    terminalTaskRetentionMs:
      config.terminalTaskRetentionMs === undefined
        ? terminalTaskRetentionMsDefault
        : config.terminalTaskRetentionMs,
  };
}

export function preemptionGapOf(config: NodeConfig): number {
  return config.preemptionPriorityGap ?? preemptionPriorityGapDefault;
}

/** Throws INVALID_ARGUMENT naming the field when a config cannot run. */
export function validateNodeConfig(config: NodeConfig): void {
  if (!nodeNamePattern.test(config.name))
    throw invalidArgument('the node name may hold letters, digits, ".", "_" and "-" (at most 64)');
  if (config.cpuMillis !== null && !(Number.isInteger(config.cpuMillis) && config.cpuMillis > 0))
    throw invalidArgument('cpuMillis must be a positive whole number');
  if (config.memoryBytes !== null && !(Number.isInteger(config.memoryBytes) && config.memoryBytes > 0))
    throw invalidArgument('memoryBytes must be a positive whole number');
  const gap = config.preemptionPriorityGap;
  if (gap !== undefined && !(Number.isInteger(gap) && gap >= 0 && gap <= preemptionPriorityGapOff))
    throw invalidArgument(
      `preemptionPriorityGap must be a whole number from 0 to ${preemptionPriorityGapOff}`,
    );
  if (
    config.liveTasksMax !== undefined &&
    !wholeWithin(config.liveTasksMax, liveTasksMaxMin, liveTasksMaxMax)
  )
    throw invalidArgument(
      `liveTasksMax must be a whole number from ${liveTasksMaxMin} to ${liveTasksMaxMax}`,
    );
  const retained = config.terminalTasksRetainedMax;
  if (
    retained !== undefined &&
    !wholeWithin(retained, terminalTasksRetainedMaxMin, terminalTasksRetainedMaxMax)
  )
    throw invalidArgument(
      `terminalTasksRetainedMax must be a whole number from ${terminalTasksRetainedMaxMin} to ${terminalTasksRetainedMaxMax}`,
    );
  const retentionMs = config.terminalTaskRetentionMs;
  if (
    retentionMs !== undefined &&
    retentionMs !== null &&
    !wholeWithin(retentionMs, 0, terminalTaskRetentionMsMax)
  )
    throw invalidArgument(
      `terminalTaskRetentionMs must be null or a whole number from 0 to ${terminalTaskRetentionMsMax}`,
    );
}

function wholeWithin(value: number, min: number, max: number): boolean {
  return Number.isSafeInteger(value) && value >= min && value <= max;
}

/** Free space on the data dir's filesystem, less a reserve for the log and task logs. */
function detectDiskBytes(dataDir: string): number {
  try {
    const stats = statfsSync(dataDir);
    return Math.max(0, stats.bavail * stats.bsize - reservedDiskBytesDefault);
  } catch {
    return 0;
  }
}
