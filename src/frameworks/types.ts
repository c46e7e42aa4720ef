/**
 * The frameworks' public data, in the Mesos v1 scheduler API's vocabulary (SUBSCRIBED, OFFERS, RESCIND,
 * UPDATE, FAILURE, ERROR, HEARTBEAT; task states TASK_*), with shoal's units: times in ms since the epoch,
 * durations in ms, CPU in millis, sizes in bytes. What goes in (framework info, the cluster's view of nodes
 * and usage, built-in demand) and what comes out (offers, launches, events). Types only.
 */
import type { NamespacePolicy, Resources } from '../allocator/index.ts';
import type { FrameworkError } from './errors.ts';
import type { OfferResources, PortRange, TaskResources } from './resources.ts';

/** What a framework says of itself at SUBSCRIBE, after defaults (commands.ts resolves and checks it). */
export interface FrameworkInfo {
  readonly name: string;
  /** The shoal namespace its tasks run in: its weight and quota govern the framework's share. */
  readonly role: string;
  /** The user its tasks run as. */
  readonly user: string;
  /** `priorityMin`–`priorityMax`; strictly before any lower priority in offer order. */
  readonly priority: number;
  /** How long its tasks are kept after its stream is lost, for it to come back. */
  readonly failoverTimeoutMs: number;
  /** Mesos's PARTITION_AWARE capability: unknown tasks are reported TASK_UNKNOWN, else TASK_LOST. */
  readonly partitionAware: boolean;
}

/** Task states as frameworks see them (Mesos TaskState). The cluster maps its own states onto these. */
export const frameworkTaskStates = [
  'TASK_STAGING',
  'TASK_STARTING',
  'TASK_RUNNING',
  'TASK_KILLING',
  'TASK_FINISHED',
  'TASK_FAILED',
  'TASK_KILLED',
  'TASK_LOST',
  'TASK_ERROR',
  'TASK_DROPPED',
  'TASK_UNKNOWN',
] as const;
export type FrameworkTaskState = (typeof frameworkTaskStates)[number];

const terminalStates: ReadonlySet<FrameworkTaskState> = new Set([
  'TASK_FINISHED',
  'TASK_FAILED',
  'TASK_KILLED',
  'TASK_LOST',
  'TASK_ERROR',
  'TASK_DROPPED',
]);

/** A state after which the task never runs again (TASK_UNKNOWN is not one: the task may turn up). */
export function isTerminalState(state: FrameworkTaskState): boolean {
  return terminalStates.has(state);
}

export interface TaskStatus {
  readonly state: FrameworkTaskState;
  /** Why, in one line (an exit code, a kill, a lost node); empty when there is nothing to say. */
  readonly message: string;
  /** The node it runs or ran on; null when unknown. */
  readonly nodeId: string | null;
  readonly atMs: number;
}

/** A status change to deliver until the framework acknowledges its uuid. */
export interface StatusUpdate {
  readonly uuid: string;
  /** The framework's own task id. */
  readonly taskId: string;
  readonly status: TaskStatus;
}

export interface Offer {
  /** Unique across leaders: the book's epoch, then a sequence number. */
  readonly id: string;
  readonly frameworkId: string;
  readonly nodeId: string;
  readonly resources: OfferResources;
  readonly offeredAtMs: number;
  /** Rescinded at this time unless accepted or declined before. */
  readonly expiresAtMs: number;
}

/** What the shell writes to a framework's stream. SUBSCRIBED and HEARTBEAT come from the shell alone. */
export type SchedulerEvent =
  | { readonly type: 'SUBSCRIBED'; readonly frameworkId: string; readonly heartbeatIntervalMs: number }
  | { readonly type: 'OFFERS'; readonly frameworkId: string; readonly offers: readonly Offer[] }
  | {
      readonly type: 'RESCIND';
      readonly frameworkId: string;
      readonly offerId: string;
      /** Why, for logs (Mesos's RESCIND carries only the id). */
      readonly reason: string;
    }
  | {
      readonly type: 'UPDATE';
      readonly frameworkId: string;
      readonly taskId: string;
      readonly status: TaskStatus;
      /** Null for answers to RECONCILE, which are not acknowledged. */
      readonly uuid: string | null;
    }
  /** A node left the cluster (Mesos: agent lost); its tasks' own updates follow. */
  | { readonly type: 'FAILURE'; readonly frameworkId: string; readonly nodeId: string }
  /** Sent on `streamId` only (a replaced subscription), then that stream is closed. */
  | {
      readonly type: 'ERROR';
      readonly frameworkId: string;
      readonly streamId: string;
      readonly message: string;
    }
  | { readonly type: 'HEARTBEAT'; readonly frameworkId: string };

// ---- the offer book's input ---------------------------------------------------------------------------

/** A node as the offer book sees it, from the replicated state. */
export interface OfferNode {
  readonly id: string;
  readonly capacity: Resources;
  /** Capacity minus what the log's live tasks hold (built-in and frameworks' alike). */
  readonly free: Resources;
  /** False once the node is down or gone: its offers are rescinded and frameworks told FAILURE. */
  readonly up: boolean;
  /** False while it drains: its offers are rescinded, nothing new is offered. */
  readonly schedulable: boolean;
  /** Free host ports that may be offered (e.g. its dynamic range minus ports in use). Default none. */
  readonly ports?: readonly PortRange[];
}

/**
 * Built-in pending work (framework zero): one entry per task, or per distinct shape, that could be placed
 * now were there room (not in restart backoff, not at a job's running cap).
 */
export interface BuiltInDemand {
  readonly priority: number;
  /** Default `default`. */
  readonly namespace?: string;
  readonly request: Resources;
  /**
   * The nodes it may go to (driver, label rules, ports), as a pure function of the node id, e.g. built
   * from the allocator's compileConstraints/matchesAll. Default: every up, schedulable node.
   */
  readonly eligible?: (nodeId: string) => boolean;
}

/** A node the built-in allocator holds back for a blocked task (its last plan's reservations). */
export interface BuiltInHold {
  readonly nodeId: string;
  readonly priority: number;
  /** Default `default`. */
  readonly namespace?: string;
}

/** Everything one offer round reads; the book never keeps a reference to it. */
export interface OfferView {
  readonly nodes: readonly OfferNode[];
  /** Weights and quotas; namespaces not listed have weight 1 and no quota. */
  readonly namespaces?: readonly NamespacePolicy[];
  /** What each namespace's live tasks hold (built-in and frameworks'). Default nothing. */
  readonly namespaceUsage?: ReadonlyMap<string, Resources>;
  /** What each framework's live tasks hold, for the order within a namespace. Default nothing. */
  readonly frameworkUsage?: ReadonlyMap<string, Resources>;
  readonly builtIn?: readonly BuiltInDemand[];
  readonly holds?: readonly BuiltInHold[];
}

// ---- ACCEPT -------------------------------------------------------------------------------------------

/** One task of an ACCEPT. `spec` is the shell's, carried through untouched into the launch. */
export interface LaunchTask<Spec> {
  /** The framework's own id for the task (Mesos TaskID), unique among its tasks. */
  readonly taskId: string;
  /** The node it goes to (Mesos agent_id): one of the accepted offers must be there. */
  readonly nodeId: string;
  readonly resources: TaskResources;
  readonly spec: Spec;
}

export interface AcceptCall<Spec> {
  readonly frameworkId: string;
  /** One or more offers, on one or several nodes. */
  readonly offerIds: readonly string[];
  readonly tasks: readonly LaunchTask<Spec>[];
  /**
   * For this long the framework is not offered a node whose offers it did not use up, while the node's room
   * is no more than the unused rest. Default refuseMsDefault.
   */
  readonly refuseMs?: number;
}

/** A task to start: the shell proposes the accept's launches as one replicated command. */
export interface Launch<Spec> {
  readonly frameworkId: string;
  readonly nodeId: string;
  readonly taskId: string;
  readonly resources: TaskResources;
  readonly spec: Spec;
}

export type AcceptResult<Spec> =
  | {
      readonly ok: true;
      /** Pass to `settle` once the launch command has committed or failed. */
      readonly acceptId: number;
      readonly launches: readonly Launch<Spec>[];
      /** Nodes whose offers were not used up, now filtered (see `AcceptCall.refuseMs`). */
      readonly filteredNodeIds: readonly string[];
    }
  | {
      readonly ok: false;
      readonly error: FrameworkError;
      /** The framework's own outstanding offers that the call named; they are no longer offered. */
      readonly released: readonly string[];
      /**
       * The state to report for each task of the call (Mesos: TASK_DROPPED when the offers were the
       * problem, TASK_ERROR when the tasks were).
       */
      readonly taskState: 'TASK_DROPPED' | 'TASK_ERROR';
    };
