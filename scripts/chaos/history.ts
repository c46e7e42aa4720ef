/**
 * What a chaos run records, as plain data: the checker reads only this, so it can be fed hand-made
 * histories in tests and a saved history.json after a run. Times are wall-clock milliseconds (Date.now()
 * in the harness, `date +%s%3N` in the tasks: one machine, one clock).
 */
import type { Schedule } from './schedule.ts';

/** How one submission ended, as the client saw it. */
export type Outcome =
  /** HTTP 201 with the task's id: the cluster promised the task is committed. */
  | 'ack'
  /** An error answer from the node (the cluster says no; the task may still have been committed). */
  | 'refused'
  /** Nothing was delivered (connection refused): certainly not committed. */
  | 'undelivered'
  /** A timeout or a dropped connection: it may or may not have been committed. */
  | 'unknown';

export interface Submission {
  /** Unique per submission; also the task's name (`chaos-NONCE`) and its CHAOS_NONCE env. */
  readonly nonce: string;
  /** The node whose API took the request. */
  readonly via: string;
  /** Whether the task may run again after it fails or is lost (restart policy on-failure). */
  readonly restart: boolean;
  readonly startMs: number;
  readonly endMs: number;
  readonly outcome: Outcome;
  /** The id the cluster answered with (ack only). */
  readonly id: string | null;
  /** HTTP status, or null when no answer came. */
  readonly status: number | null;
  /** Error code and message, or what went wrong on the wire. */
  readonly error: string | null;
}

/** One line a task wrote to the runs file. */
export interface RunLine {
  /** S start, H heartbeat, E normal end, T stopped by SIGTERM. */
  readonly mark: 'S' | 'H' | 'E' | 'T';
  readonly nonce: string;
  readonly pid: number;
  readonly atMs: number;
  readonly node: string;
  readonly taskId: string;
}

/** A poll of GET /v1/tasks on one node, kept only where a task's (attempt, state) changed. */
export interface TaskObservation {
  /** When the request was sent: the state was read at or after it. */
  readonly atMs: number;
  readonly observer: string;
  /** The observer's process generation: 1 for the first start, +1 per restart. */
  readonly life: number;
  readonly taskId: string;
  readonly name: string;
  readonly attempt: number;
  readonly state: string;
  readonly node: string | null;
}

/** A poll of GET /v1/status on one node. */
export interface StatusObservation {
  /** When the request was sent and when the answer came: the status held somewhere in between. */
  readonly sentMs: number;
  readonly receivedMs: number;
  readonly node: string;
  readonly life: number;
  readonly role: string;
  readonly term: number;
  readonly leader: string | null;
  readonly commitIndex: number;
  readonly voters: readonly string[];
  /** The longest event-loop stall the node has seen (a busy host makes leaders flap), if it reports one. */
  readonly eventLoopStallMsMax: number | null;
}

/** A poll of GET /v1/members on one node. */
export interface MembersObservation {
  readonly atMs: number;
  readonly observer: string;
  readonly members: readonly { readonly name: string; readonly state: string }[];
}

/**
 * A fault as the harness applied it. `startMs`…`activeMs` is the time it took to apply (rules being added,
 * signals sent); `healMs`…`endMs` the time it took to undo. The fault was certainly in force between
 * activeMs and healMs, and possibly between startMs and endMs.
 */
export interface AppliedFault {
  readonly id: number;
  readonly kind: string;
  readonly description: string;
  readonly startMs: number;
  readonly activeMs: number;
  readonly healMs: number;
  readonly endMs: number;
  /** Nodes stopped (killed or paused): they can reach nobody. */
  readonly down: readonly string[];
  /** Directed links whose packets are all dropped: [from, to]. */
  readonly cuts: readonly (readonly [string, string])[];
  /** Nodes whose disk is full. */
  readonly diskFull: readonly string[];
  /** Nodes killed with their tasks (a machine crash): the start of "time until its tasks run elsewhere". */
  readonly crashed: readonly string[];
  /** Packet loss on every link, if any. */
  readonly lossProbability: number | null;
}

/** An agent that exited without the harness killing it. */
export interface AgentExit {
  readonly node: string;
  readonly atMs: number;
  readonly code: number | null;
  readonly signal: string | null;
  readonly logTail: string;
}

/** A task row from the final reads, after every fault healed and the cluster settled. */
export interface FinalTask {
  readonly id: string;
  readonly name: string;
  readonly state: string;
  readonly node: string | null;
  readonly attempt: number;
}

export interface History {
  readonly seed: number;
  readonly schedule: Schedule;
  readonly nodes: readonly string[];
  readonly startMs: number;
  /** When the fault phase ended and the last fault had healed. */
  readonly lastHealMs: number;
  readonly endMs: number;
  readonly submissions: readonly Submission[];
  readonly runLines: readonly RunLine[];
  readonly taskObservations: readonly TaskObservation[];
  readonly statusObservations: readonly StatusObservation[];
  readonly membersObservations: readonly MembersObservation[];
  readonly faults: readonly AppliedFault[];
  readonly exits: readonly AgentExit[];
  /** The final task list per node that answered (node name → rows). */
  readonly finalTasks: Readonly<Record<string, readonly FinalTask[]>>;
  /** The node whose final list is authoritative (the agreed leader), or null if none was agreed. */
  readonly finalFrom: string | null;
  /** Whether every task had reached a terminal state when the final lists were read. */
  readonly settled: boolean;
}
