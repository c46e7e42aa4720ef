/** Wire and storage types of the Raft core. Plain JSON-serialisable data. */

/** Node ids are libp2p peer ids (strings). */
export type NodeId = string;

/**
 * `command` carries a state-machine command (JSON text); `config` carries a ClusterConfig (JSON text);
 * `noop` is the entry every new leader appends so it can commit entries of earlier terms (Raft §5.4.2).
 */
export type EntryKind = 'command' | 'config' | 'noop';

export interface LogEntry {
  readonly index: number;
  readonly term: number;
  readonly kind: EntryKind;
  readonly data: string;
}

/** Voters elect and count for commit; learners only receive the log until they are promoted. */
export interface ClusterConfig {
  readonly voters: readonly NodeId[];
  readonly learners: readonly NodeId[];
}

/** A state-machine snapshot: everything up to and including `index`, and the configuration in force there. */
export interface Snapshot {
  readonly index: number;
  readonly term: number;
  readonly config: ClusterConfig;
  /** The state machine's serialized state (opaque to Raft). */
  readonly data: string;
}

/** What must be on disk before any message that depends on it is sent. */
export interface HardState {
  readonly term: number;
  readonly votedFor: NodeId | null;
  readonly commitIndex: number;
}

export type RaftMessage =
  | {
      readonly type: 'requestVote';
      readonly from: NodeId;
      readonly to: NodeId;
      readonly term: number;
      readonly lastLogIndex: number;
      readonly lastLogTerm: number;
      /** Pre-vote (Raft thesis §9.6): asks "would you vote for me?" without disturbing anyone's term. */
      readonly preVote: boolean;
      /** Campaign asked for by the leader (leadership transfer): voters ignore their leader lease. */
      readonly transfer: boolean;
    }
  | {
      readonly type: 'requestVoteResponse';
      readonly from: NodeId;
      readonly to: NodeId;
      readonly term: number;
      readonly granted: boolean;
      readonly preVote: boolean;
    }
  | {
      readonly type: 'appendEntries';
      readonly from: NodeId;
      readonly to: NodeId;
      readonly term: number;
      readonly prevLogIndex: number;
      readonly prevLogTerm: number;
      readonly entries: readonly LogEntry[];
      readonly leaderCommit: number;
      /** The leader's latest read sequence; echoed back, it confirms leadership for ReadIndex. */
      readonly readSeq: number;
    }
  | {
      readonly type: 'installSnapshot';
      readonly from: NodeId;
      readonly to: NodeId;
      readonly term: number;
      readonly snapshot: Snapshot;
    }
  | {
      /** Leadership transfer: the leader tells a caught-up voter to campaign now. */
      readonly type: 'timeoutNow';
      readonly from: NodeId;
      readonly to: NodeId;
      readonly term: number;
    }
  | {
      readonly type: 'appendEntriesResponse';
      readonly from: NodeId;
      readonly to: NodeId;
      readonly term: number;
      readonly success: boolean;
      /** On success, the last index this follower now holds that matches the leader. */
      readonly matchIndex: number;
      /** On failure, where the leader should try next (first index of the conflicting term, or lastIndex + 1). */
      readonly conflictIndex: number;
      readonly readSeq: number;
    };

/** A linearizable read is safe once the state machine has applied `index` (ReadIndex, thesis §6.4). */
export interface ReadState {
  readonly requestId: string;
  readonly index: number;
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

/** What the shell must do after feeding the core: persist, then send, then apply. */
export interface Ready {
  /** Set when term, vote or commit changed since the last Ready. */
  readonly hardState: HardState | null;
  /** A snapshot received from the leader: persist it, drop the whole log, restore the state machine. */
  readonly snapshot: Snapshot | null;
  /** Stable entries with index >= truncateFrom must be dropped before `entries` are appended. */
  readonly truncateFrom: number | null;
  readonly entries: readonly LogEntry[];
  readonly messages: readonly RaftMessage[];
  /** Entries now committed, in order, to apply to the state machine (after `snapshot`, if any). */
  readonly committed: readonly LogEntry[];
  /** Reads confirmed by a quorum: serve each once `index` is applied. */
  readonly readStates: readonly ReadState[];
}

export interface PeerProgress {
  readonly id: NodeId;
  readonly matchIndex: number;
  readonly nextIndex: number;
  readonly recentlyActive: boolean;
}

export interface RaftStatus {
  readonly id: NodeId;
  readonly role: Role;
  readonly term: number;
  readonly leaderId: NodeId | null;
  readonly commitIndex: number;
  readonly appliedIndex: number;
  readonly lastIndex: number;
  /** Entries up to here are compacted into a snapshot. */
  readonly snapshotIndex: number;
  readonly config: ClusterConfig;
  /** Set while this leader hands leadership to that voter. */
  readonly transferee: NodeId | null;
  /** Only on the leader: replication progress of every other member. */
  readonly progress: readonly PeerProgress[];
}
