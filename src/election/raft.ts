/**
 * The Raft core: a pure state machine in the style of etcd-io/raft. It does no I/O and reads no clock.
 * The caller drives it with tick(), step(message) and propose(), then takes ready() (entries and hard
 * state to persist, messages to send, committed entries to apply), does those in that order, and calls
 * advance(). Randomness (election jitter) comes from an injected Random so a seeded simulation replays.
 *
 * Implemented: leader election with pre-vote and check-quorum, log replication with conflict hints and
 * optimistic pipelining, commit of the leader's own-term entries by counting (Figure 8), single-server
 * configuration changes that take effect when appended, learners (non-voters), snapshots and log
 * compaction with InstallSnapshot, ReadIndex for linearizable reads, and leadership transfer.
 *
 * The log holds entries after the latest snapshot: entry `i` is at `log[i - snapshotIndex - 1]`.
 */
import { assert } from '../shared/assert.ts';
import { ShoalError } from '../shared/errors.ts';
import type { Random } from '../shared/random.ts';
import type {
  ClusterConfig,
  EntryKind,
  HardState,
  LogEntry,
  NodeId,
  PeerProgress,
  RaftMessage,
  RaftStatus,
  ReadState,
  Ready,
  Role,
  Snapshot,
} from './types.ts';

export interface RaftInit {
  readonly id: NodeId;
  /** Election timeout is drawn from [electionTicks, 2 × electionTicks) after every reset. */
  readonly electionTicks: number;
  /** The leader sends appends (heartbeats) every heartbeatTicks; must be well below electionTicks. */
  readonly heartbeatTicks: number;
  /**
   * Heartbeats to learners go every learnerHeartbeatTicks (default 10 × heartbeatTicks): learners never
   * campaign, so they need them only to learn the commit index, and new entries reach them at once anyway.
   * In a 50-node cluster with 5 voters this is most of the leader's idle traffic.
   */
  readonly learnerHeartbeatTicks?: number;
  readonly random: Random;
  /** Entries per appendEntries message, so one message stays under the transport's size limit. */
  readonly entriesPerMessageMax: number;
  /** Bytes of entry data per appendEntries message (soft: one entry is always sent). */
  readonly bytesPerMessageMax: number;
  /** Restored from stable storage: the latest snapshot (the state machine is restored from it by the
   * caller) and the entries after it. */
  readonly hardState: HardState;
  readonly snapshot: Snapshot | null;
  readonly entries: readonly LogEntry[];
}

interface Progress {
  matchIndex: number;
  nextIndex: number;
  recentlyActive: boolean;
  /** The highest read sequence this peer echoed (ReadIndex). */
  readAck: number;
  /** Ticks to wait before sending another snapshot to this peer (one is in flight). */
  snapshotCooldownTicks: number;
  /** The commit index the last append to this peer carried. */
  commitSent: number;
}

interface PendingRead {
  readonly requestId: string;
  readonly index: number;
  readonly seq: number;
}

const emptyConfig: ClusterConfig = { voters: [], learners: [] };

export function parseConfig(data: string): ClusterConfig {
  const parsed = JSON.parse(data) as ClusterConfig;
  assert(
    Array.isArray(parsed.voters) && Array.isArray(parsed.learners),
    'config entry holds voters and learners',
  );
  return parsed;
}

export class RaftCore {
  readonly id: NodeId;
  private readonly electionTicks: number;
  private readonly heartbeatTicks: number;
  private readonly learnerHeartbeatTicks: number;
  private readonly random: Random;
  private readonly entriesPerMessageMax: number;
  private readonly bytesPerMessageMax: number;

  private term: number;
  private votedFor: NodeId | null;
  private role: Role = 'follower';
  private leaderId: NodeId | null = null;
  private log: LogEntry[];
  private snapshot: Snapshot;
  /** A snapshot received from the leader and not yet handed to the caller. */
  private pendingSnapshot: Snapshot | null = null;
  private commitIndex: number;
  private appliedIndex = 0;
  private config: ClusterConfig = emptyConfig;
  /** Index of the newest config entry; a second change waits until it commits. */
  private configIndex = 0;

  private electionElapsed = 0;
  private heartbeatElapsed = 0;
  private learnerHeartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;
  private votes = new Map<NodeId, boolean>();
  private progress = new Map<NodeId, Progress>();
  private readSeq = 0;
  private pendingReads: PendingRead[] = [];
  private readStates: ReadState[] = [];
  private transferee: NodeId | null = null;
  /** Entries were appended as leader since the last ready(): send them to followers then. */
  private appendsPending = false;
  private transferElapsed = 0;
  /** Ticks counted since this core was made; forgiveStall() is rationed in them. */
  private ticksCounted = 0;
  private stallForgivenAtTick = -Infinity;

  // What the next Ready carries.
  private messages: RaftMessage[] = [];
  private stableLastIndex: number;
  private unstableFrom: number;
  private lastReportedHardState: HardState;

  constructor(init: RaftInit) {
    assert(init.heartbeatTicks > 0 && init.heartbeatTicks < init.electionTicks, 'heartbeat below election');
    this.id = init.id;
    this.electionTicks = init.electionTicks;
    this.heartbeatTicks = init.heartbeatTicks;
    this.learnerHeartbeatTicks = init.learnerHeartbeatTicks ?? 10 * init.heartbeatTicks;
    assert(this.learnerHeartbeatTicks >= this.heartbeatTicks, 'learner heartbeats no more often than voters');
    this.random = init.random;
    this.entriesPerMessageMax = init.entriesPerMessageMax;
    this.bytesPerMessageMax = init.bytesPerMessageMax;
    this.term = init.hardState.term;
    this.votedFor = init.hardState.votedFor;
    this.snapshot = init.snapshot ?? { index: 0, term: 0, config: emptyConfig, data: '' };
    this.log = [...init.entries];
    for (let i = 0; i < this.log.length; i++) {
      assert(
        this.log[i]?.index === this.snapshot.index + i + 1,
        'restored log is contiguous after the snapshot',
      );
    }
    this.appliedIndex = this.snapshot.index;
    this.commitIndex = Math.max(this.snapshot.index, Math.min(init.hardState.commitIndex, this.lastIndex()));
    this.stableLastIndex = this.lastIndex();
    this.unstableFrom = this.lastIndex() + 1;
    this.lastReportedHardState = { term: this.term, votedFor: this.votedFor, commitIndex: this.commitIndex };
    this.reloadConfig();
    this.resetElectionTimeout();
  }

  // ---- inputs ----------------------------------------------------------------------------------------

  /** Creates the first configuration of a brand-new cluster whose only voter is this node. */
  bootstrap(): void {
    assert(this.lastIndex() === 0 && this.term === 0, 'bootstrap only on an empty log');
    this.term = 1;
    this.appendLocal('config', JSON.stringify({ voters: [this.id], learners: [] } satisfies ClusterConfig));
    this.commitIndex = 1;
  }

  tick(): void {
    this.ticksCounted++;
    this.electionElapsed++;
    if (this.role === 'leader') {
      this.heartbeatElapsed++;
      this.learnerHeartbeatElapsed++;
      if (this.heartbeatElapsed >= this.heartbeatTicks) {
        this.heartbeatElapsed = 0;
        const toLearners = this.learnerHeartbeatElapsed >= this.learnerHeartbeatTicks;
        if (toLearners) this.learnerHeartbeatElapsed = 0;
        this.broadcastHeartbeat(toLearners);
      }
      for (const p of this.progress.values()) if (p.snapshotCooldownTicks > 0) p.snapshotCooldownTicks--;
      if (this.transferee !== null && ++this.transferElapsed >= this.electionTicks) {
        // The transferee did not take over in time: carry on leading.
        this.transferee = null;
      }
      if (this.electionElapsed >= this.electionTicks) {
        this.electionElapsed = 0;
        this.checkQuorum();
      }
      return;
    }
    if (this.electionElapsed >= this.randomizedElectionTimeout && this.isVoter(this.id)) {
      this.campaign(true);
    }
  }

  /**
   * The shell found that this node's process did not run for a while (a GC pause, a starved CPU, SIGSTOP):
   * its timer fired, or a message came, long after the tick that was due. Peers' silence over that time
   * says nothing about them: their heartbeats and answers are still unread in its sockets, and its peers,
   * on a loaded machine, often stalled with it. So instead of counting the stalled ticks, which would
   * depose a healthy leader by check-quorum or start an election ahead of the messages that would have
   * prevented it, a leader sends heartbeats now and opens a new check-quorum window, and a follower that
   * has a leader restarts its election timeout. Rationed, so that a node which keeps stalling still acts:
   * at most once per two election timeouts of counted ticks; otherwise false, and the shell counts the
   * ticks as usual. A candidate, or a follower with no leader, has no one to wait for: also false.
   */
  forgiveStall(): boolean {
    if (this.ticksCounted - this.stallForgivenAtTick < 2 * this.electionTicks) return false;
    if (this.role === 'leader') {
      if (this.progress.size === 0) return false;
      this.stallForgivenAtTick = this.ticksCounted;
      this.electionElapsed = 0;
      this.heartbeatElapsed = 0;
      this.learnerHeartbeatElapsed = 0;
      this.broadcastHeartbeat(true);
      return true;
    }
    if (this.role !== 'follower' || this.leaderId === null || !this.isVoter(this.id)) return false;
    this.stallForgivenAtTick = this.ticksCounted;
    this.electionElapsed = 0;
    return true;
  }

  /**
   * The shell saw every connection to `leaderId` close: its process died (the kernel resets a dead
   * process's connections at once), or the network between us did. A follower that hears it stops
   * trusting the leader's lease and campaigns (pre-vote first) a tick or two later instead of after a
   * whole election timeout; a leader that is only silent (frozen, cut off without a reset) is still found
   * by the timeout. Harmless when wrong: peers that still hear the leader are in its lease and ignore the
   * pre-vote, and the leader's next heartbeat makes this node its follower again.
   */
  leaderUnreachable(leaderId: NodeId): void {
    if (this.role === 'leader' || this.leaderId !== leaderId || !this.isVoter(this.id)) return;
    this.leaderId = null;
    this.electionElapsed = Math.max(this.electionElapsed, this.electionTicks);
    // Every follower hears of the death at about the same moment; were they all to campaign at once they
    // would split the vote and wait a whole timeout. So they take turns by rank (their ids in order): the
    // first a tick from now, the next three ticks later (a pre-vote and a vote round apart), and so on. A
    // first in turn that cannot win (its log is behind) costs the next one three ticks.
    const rank = this.config.voters
      .filter((voter) => voter !== leaderId)
      .sort()
      .indexOf(this.id);
    this.randomizedElectionTimeout = this.electionElapsed + 1 + 3 * Math.max(0, rank);
  }

  /**
   * How many more tick() calls until one acts (sends, campaigns, checks the quorum, gives up a transfer);
   * the ticks before it only count. The caller may sleep that long, provided it makes up the ticks real
   * time owes before it steps a message, so the counters read as if it had ticked all along (proposals do
   * not read them). Infinity: no tick will ever act (a learner, or a leader alone).
   */
  ticksUntilDue(): number {
    if (this.role === 'leader') {
      // Alone: no one to send heartbeats to, and a quorum of one never fails.
      if (this.progress.size === 0) return Infinity;
      let due = Math.min(
        this.heartbeatTicks - this.heartbeatElapsed,
        this.electionTicks - this.electionElapsed,
      );
      if (this.transferee !== null) due = Math.min(due, this.electionTicks - this.transferElapsed);
      // A snapshot cooldown running out is not an act: the next heartbeat sends the snapshot.
      return Math.max(1, due);
    }
    if (!this.isVoter(this.id)) return Infinity;
    return Math.max(1, this.randomizedElectionTimeout - this.electionElapsed);
  }

  step(message: RaftMessage): void {
    if (message.to !== this.id) return;
    if (message.term > this.term) {
      if (message.type === 'requestVote') {
        // Leader stickiness: while we hear from a live leader, a vote request is from a disruptive node.
        const inLease = this.leaderId !== null && this.electionElapsed < this.electionTicks;
        if (inLease && !message.transfer) return;
        if (message.preVote) {
          this.handleVoteRequest(message);
          return;
        }
      }
      if (message.type === 'requestVoteResponse' && message.preVote) {
        // A pre-vote response at a higher term is a rejection from a node that moved on; adopt its term.
        if (!message.granted) this.becomeFollower(message.term, null);
        else this.handleVoteResponse(message);
        return;
      }
      const fromLeader =
        message.type === 'appendEntries' ||
        message.type === 'installSnapshot' ||
        message.type === 'timeoutNow';
      this.becomeFollower(message.term, fromLeader ? message.from : null);
    } else if (message.term < this.term) {
      // Tell a stale leader about the newer term so it steps down; other stale messages are dropped.
      if (message.type === 'appendEntries' || message.type === 'installSnapshot') {
        this.send({
          type: 'appendEntriesResponse',
          from: this.id,
          to: message.from,
          term: this.term,
          success: false,
          matchIndex: 0,
          conflictIndex: 0,
          readSeq: 0,
        });
      } else if (message.type === 'requestVote' && message.preVote) {
        this.send({
          type: 'requestVoteResponse',
          from: this.id,
          to: message.from,
          term: this.term,
          granted: false,
          preVote: true,
        });
      }
      return;
    }

    switch (message.type) {
      case 'requestVote':
        this.handleVoteRequest(message);
        return;
      case 'requestVoteResponse':
        this.handleVoteResponse(message);
        return;
      case 'appendEntries':
        this.handleAppend(message);
        return;
      case 'appendEntriesResponse':
        this.handleAppendResponse(message);
        return;
      case 'installSnapshot':
        this.handleSnapshot(message);
        return;
      case 'timeoutNow':
        // Our leader hands over: campaign at once, skipping pre-vote (the leader agreed).
        if (this.isVoter(this.id) && message.from === this.leaderId) this.campaign(false, true);
        return;
    }
  }

  /** Appends a command as leader. Throws NOT_LEADER elsewhere. Returns where it will sit in the log. */
  propose(data: string): { index: number; term: number } {
    this.requireLeader();
    if (this.transferee !== null)
      throw new ShoalError('NOT_LEADER', 'leadership is being transferred; retry');
    const entry = this.appendLocal('command', data);
    return { index: entry.index, term: entry.term };
  }

  /**
   * Proposes a new configuration. Only one change at a time: the previous one must be committed, and the
   * new config may differ from the current one by one server's role at most (thesis §4.1).
   */
  proposeConfig(next: ClusterConfig): { index: number; term: number } {
    this.requireLeader();
    if (this.configIndex > this.commitIndex) {
      throw new ShoalError('CONFLICT', 'a configuration change is already in progress');
    }
    const before = new Set([...this.config.voters, ...this.config.learners]);
    const after = new Set([...next.voters, ...next.learners]);
    let changed = 0;
    for (const id of new Set([...before, ...after])) {
      const roleBefore = this.config.voters.includes(id)
        ? 'v'
        : this.config.learners.includes(id)
          ? 'l'
          : '-';
      const roleAfter = next.voters.includes(id) ? 'v' : next.learners.includes(id) ? 'l' : '-';
      if (roleBefore !== roleAfter) changed++;
    }
    if (changed !== 1)
      throw new ShoalError('INVALID_ARGUMENT', 'a configuration change must change one server');
    if (next.voters.length === 0) throw new ShoalError('INVALID_ARGUMENT', 'a configuration needs a voter');
    const entry = this.appendLocal('config', JSON.stringify(next));
    return { index: entry.index, term: entry.term };
  }

  /**
   * Asks for a linearizable read point (ReadIndex, thesis §6.4): once a quorum confirms this node still
   * leads, a ReadState with the commit index at the time of the call comes out in a Ready.
   */
  readIndex(requestId: string): void {
    this.requireLeader();
    if (!this.hasCommittedInTerm())
      throw new ShoalError('UNAVAILABLE', 'the new leader has not committed yet; retry');
    const seq = ++this.readSeq;
    this.pendingReads.push({ requestId, index: this.commitIndex, seq });
    if (this.config.voters.length === 1 && this.isVoter(this.id)) {
      this.releaseReads();
      return;
    }
    // Only voters' echoes count towards the quorum; learners get their heartbeat on the tick.
    this.broadcastHeartbeat(false);
  }

  /** Hands leadership to a voter: brings it up to date, then tells it to campaign (thesis §3.10). */
  transferLeadership(to: NodeId): void {
    this.requireLeader();
    if (to === this.id || !this.isVoter(to))
      throw new ShoalError('INVALID_ARGUMENT', `${to} is not another voter`);
    const p = this.progress.get(to);
    assert(p !== undefined, 'a voter has progress');
    this.transferee = to;
    this.transferElapsed = 0;
    if (p.matchIndex === this.lastIndex())
      this.send({ type: 'timeoutNow', from: this.id, to, term: this.term });
    else this.sendAppend(to, p);
  }

  /**
   * Replaces the log up to `index` (already applied) with a snapshot of the state machine there. The
   * caller persists the snapshot before it drops those entries from disk.
   */
  compact(index: number, data: string): Snapshot {
    assert(
      index <= this.appliedIndex && index > this.snapshot.index,
      'compact only applied, uncompacted entries',
    );
    assert(index <= this.stableLastIndex, 'compact only persisted entries');
    const term = this.termAt(index);
    const snapshot: Snapshot = { index, term, config: this.configAt(index), data };
    this.log = this.log.slice(index - this.snapshot.index);
    this.snapshot = snapshot;
    return snapshot;
  }

  /** Drops unsent messages (Raft tolerates loss) when the caller cannot act on a Ready, e.g. a full disk. */
  discardMessages(): void {
    this.messages = [];
  }

  votedForId(): NodeId | null {
    return this.votedFor;
  }

  latestSnapshot(): Snapshot {
    return this.snapshot;
  }

  // ---- outputs ---------------------------------------------------------------------------------------

  hasReady(): boolean {
    return (
      this.messages.length > 0 ||
      this.appendsPending ||
      this.pendingSnapshot !== null ||
      this.readStates.length > 0 ||
      this.unstableFrom <= this.lastIndex() ||
      this.appliedIndex < this.committedLocalIndex() ||
      this.hardStateChanged()
    );
  }

  ready(): Ready {
    if (this.appendsPending) {
      this.appendsPending = false;
      if (this.role === 'leader') this.broadcastAppend();
    }
    if (this.role === 'leader') this.sendCommitNews();
    const hardState = this.hardStateChanged() ? this.currentHardState() : null;
    const snapshot = this.pendingSnapshot;
    const truncateFrom =
      snapshot === null && this.unstableFrom <= this.stableLastIndex ? this.unstableFrom : null;
    const firstIndex = this.snapshot.index + 1;
    const entries = this.log.slice(Math.max(this.unstableFrom, firstIndex) - firstIndex);
    const applyFrom = Math.max(this.appliedIndex, snapshot?.index ?? 0);
    const committed = this.log.slice(
      applyFrom - this.snapshot.index,
      this.committedLocalIndex() - this.snapshot.index,
    );
    return {
      hardState,
      snapshot,
      truncateFrom,
      entries,
      messages: [...this.messages],
      committed,
      readStates: [...this.readStates],
    };
  }

  /** The caller has persisted, sent and applied what the last ready() returned. */
  advance(ready: Ready): void {
    if (ready.hardState) this.lastReportedHardState = ready.hardState;
    if (ready.snapshot) {
      this.appliedIndex = Math.max(this.appliedIndex, ready.snapshot.index);
      this.stableLastIndex = ready.snapshot.index;
      if (this.pendingSnapshot === ready.snapshot) this.pendingSnapshot = null;
    }
    this.readStates = this.readStates.slice(ready.readStates.length);
    const last = ready.entries.at(-1);
    if (last) {
      this.stableLastIndex = last.index;
      this.unstableFrom = Math.max(this.unstableFrom, last.index + 1);
    } else if (ready.truncateFrom !== null) {
      this.stableLastIndex = ready.truncateFrom - 1;
    }
    const lastCommitted = ready.committed.at(-1);
    if (lastCommitted) this.appliedIndex = lastCommitted.index;
    this.messages = this.messages.slice(ready.messages.length);
    // The leader's own entries count towards commit only once they are durable here.
    if (this.role === 'leader') this.maybeCommit();
  }

  status(): RaftStatus {
    const progress: PeerProgress[] = [];
    if (this.role === 'leader') {
      for (const [id, p] of this.progress) {
        progress.push({
          id,
          matchIndex: p.matchIndex,
          nextIndex: p.nextIndex,
          recentlyActive: p.recentlyActive,
        });
      }
    }
    return {
      id: this.id,
      role: this.role,
      term: this.term,
      leaderId: this.leaderId,
      commitIndex: this.commitIndex,
      appliedIndex: this.appliedIndex,
      lastIndex: this.lastIndex(),
      snapshotIndex: this.snapshot.index,
      config: this.config,
      transferee: this.transferee,
      progress,
    };
  }

  /** Ticks since this node last heard from a leader (0 on the leader itself). */
  ticksSinceLeaderContact(): number {
    return this.role === 'leader' ? 0 : this.electionElapsed;
  }

  /** True once this leader has committed an entry of its own term, so its commit index is current. */
  hasCommittedInTerm(): boolean {
    return this.role === 'leader' && this.termAt(this.commitIndex) === this.term;
  }

  /** An entry still in the log (not compacted), or undefined. */
  entryAt(index: number): LogEntry | undefined {
    return this.log[index - this.snapshot.index - 1];
  }

  // ---- roles -----------------------------------------------------------------------------------------

  private becomeFollower(term: number, leaderId: NodeId | null): void {
    if (term > this.term) {
      this.term = term;
      this.votedFor = null;
    }
    this.role = 'follower';
    this.leaderId = leaderId;
    this.progress.clear();
    this.pendingReads = [];
    this.transferee = null;
    this.resetElectionTimeout();
  }

  private campaign(preVote: boolean, transfer = false): void {
    const voters = this.config.voters;
    this.votes = new Map();
    this.leaderId = null;
    this.resetElectionTimeout();
    if (preVote) {
      this.role = 'preCandidate';
    } else {
      this.role = 'candidate';
      this.term++;
      this.votedFor = this.id;
    }
    this.votes.set(this.id, true);
    if (this.hasQuorum(this.votes)) {
      if (preVote) this.campaign(false);
      else this.becomeLeader();
      return;
    }
    const term = preVote ? this.term + 1 : this.term;
    for (const voter of voters) {
      if (voter === this.id) continue;
      this.send({
        type: 'requestVote',
        from: this.id,
        to: voter,
        term,
        lastLogIndex: this.lastIndex(),
        lastLogTerm: this.termAt(this.lastIndex()),
        preVote,
        transfer,
      });
    }
  }

  private becomeLeader(): void {
    this.role = 'leader';
    this.leaderId = this.id;
    this.heartbeatElapsed = 0;
    this.electionElapsed = 0;
    this.progress.clear();
    this.pendingReads = [];
    this.transferee = null;
    for (const member of this.members()) {
      if (member !== this.id) this.progress.set(member, this.newProgress(this.lastIndex() + 1));
    }
    // A no-op of the new term lets the leader commit everything before it (Raft §5.4.2, Figure 8).
    this.appendLocal('noop', '');
  }

  private checkQuorum(): void {
    const active = new Map<NodeId, boolean>([[this.id, true]]);
    for (const [id, p] of this.progress) {
      active.set(id, p.recentlyActive);
      p.recentlyActive = false;
    }
    if (!this.hasQuorum(active)) this.becomeFollower(this.term, null);
  }

  // ---- handlers --------------------------------------------------------------------------------------

  private handleVoteRequest(message: Extract<RaftMessage, { type: 'requestVote' }>): void {
    const lastTerm = this.termAt(this.lastIndex());
    const upToDate =
      message.lastLogTerm > lastTerm ||
      (message.lastLogTerm === lastTerm && message.lastLogIndex >= this.lastIndex());
    let granted: boolean;
    if (message.preVote) {
      granted = upToDate && message.term > this.term;
    } else {
      granted = upToDate && (this.votedFor === null || this.votedFor === message.from);
      if (granted) {
        this.votedFor = message.from;
        this.resetElectionTimeout();
      }
    }
    this.send({
      type: 'requestVoteResponse',
      from: this.id,
      to: message.from,
      // A granted pre-vote answers in the candidate's future term; a refusal carries our own.
      term: message.preVote && granted ? message.term : this.term,
      granted,
      preVote: message.preVote,
    });
  }

  private handleVoteResponse(message: Extract<RaftMessage, { type: 'requestVoteResponse' }>): void {
    const expecting = message.preVote ? this.role === 'preCandidate' : this.role === 'candidate';
    if (!expecting || !this.isVoter(message.from)) return;
    this.votes.set(message.from, message.granted);
    if (this.hasQuorum(this.votes)) {
      if (message.preVote) this.campaign(false);
      else this.becomeLeader();
      return;
    }
    const rejections = new Map([...this.votes].map(([id, granted]) => [id, !granted]));
    if (this.hasQuorum(rejections)) this.becomeFollower(this.term, null);
  }

  private handleAppend(message: Extract<RaftMessage, { type: 'appendEntries' }>): void {
    if (this.role !== 'follower' || this.leaderId !== message.from)
      this.becomeFollower(message.term, message.from);
    this.electionElapsed = 0;
    const reply = (success: boolean, matchIndex: number, conflictIndex: number): void =>
      this.send({
        type: 'appendEntriesResponse',
        from: this.id,
        to: message.from,
        term: this.term,
        success,
        matchIndex,
        conflictIndex,
        readSeq: message.readSeq,
      });

    let prevLogIndex = message.prevLogIndex;
    let prevLogTerm = message.prevLogTerm;
    let entries = message.entries;
    if (prevLogIndex < this.snapshot.index) {
      // Entries up to our snapshot are committed, so they match the leader's (Log Matching): skip them.
      const skip = this.snapshot.index - prevLogIndex;
      if (entries.length <= skip) {
        reply(true, prevLogIndex + entries.length, 0);
        return;
      }
      entries = entries.slice(skip);
      prevLogIndex = this.snapshot.index;
      prevLogTerm = this.snapshot.term;
    }
    if (prevLogIndex > this.lastIndex()) {
      reply(false, 0, this.lastIndex() + 1);
      return;
    }
    if (this.termAt(prevLogIndex) !== prevLogTerm) {
      // Skip back over the whole conflicting term in one round trip (Raft §5.3, the optimisation).
      const conflictTerm = this.termAt(prevLogIndex);
      let first = prevLogIndex;
      while (first - 1 > this.commitIndex && this.termAt(first - 1) === conflictTerm) first--;
      reply(false, 0, first);
      return;
    }
    for (const entry of entries) {
      const existing = this.entryAt(entry.index);
      if (existing && existing.term === entry.term) continue;
      if (existing) {
        assert(entry.index > this.commitIndex, 'a committed entry is never overwritten');
        this.truncateFrom(entry.index);
      }
      assert(entry.index === this.lastIndex() + 1, 'appended entries are contiguous');
      this.log.push(entry);
      if (entry.kind === 'config') this.reloadConfig();
    }
    const lastNew = prevLogIndex + entries.length;
    const newCommit = Math.min(message.leaderCommit, lastNew);
    if (newCommit > this.commitIndex) this.commitIndex = newCommit;
    reply(true, lastNew, 0);
  }

  private handleSnapshot(message: Extract<RaftMessage, { type: 'installSnapshot' }>): void {
    if (this.role !== 'follower' || this.leaderId !== message.from)
      this.becomeFollower(message.term, message.from);
    this.electionElapsed = 0;
    const snapshot = message.snapshot;
    if (snapshot.index > this.commitIndex) {
      // Everything we hold is older than the snapshot or not committed: replace it all.
      this.log = [];
      this.snapshot = snapshot;
      this.pendingSnapshot = snapshot;
      this.commitIndex = snapshot.index;
      this.unstableFrom = snapshot.index + 1;
      this.reloadConfig();
    }
    this.send({
      type: 'appendEntriesResponse',
      from: this.id,
      to: message.from,
      term: this.term,
      success: true,
      matchIndex: Math.max(this.commitIndex, snapshot.index),
      conflictIndex: 0,
      readSeq: 0,
    });
  }

  private handleAppendResponse(message: Extract<RaftMessage, { type: 'appendEntriesResponse' }>): void {
    if (this.role !== 'leader') return;
    const p = this.progress.get(message.from);
    if (!p) return;
    p.recentlyActive = true;
    if (message.readSeq > p.readAck) {
      p.readAck = message.readSeq;
      this.releaseReads();
    }
    if (message.success) {
      if (message.matchIndex > p.matchIndex) {
        p.matchIndex = message.matchIndex;
        p.snapshotCooldownTicks = 0;
      }
      if (p.nextIndex <= p.matchIndex) p.nextIndex = p.matchIndex + 1;
      this.maybeCommit();
      if (message.from === this.transferee && p.matchIndex === this.lastIndex()) {
        this.send({ type: 'timeoutNow', from: this.id, to: message.from, term: this.term });
      } else if (p.nextIndex <= this.lastIndex()) {
        this.sendAppend(message.from, p);
      }
    } else {
      // Back off to the hint, never below what is known to match.
      p.nextIndex = Math.max(
        p.matchIndex + 1,
        Math.min(message.conflictIndex, p.nextIndex - 1, this.lastIndex() + 1),
        1,
      );
      this.sendAppend(message.from, p);
    }
  }

  /** Releases reads whose sequence a quorum of voters has echoed since they were asked. */
  private releaseReads(): void {
    while (this.pendingReads.length > 0) {
      const read = this.pendingReads[0];
      assert(read !== undefined, 'non-empty');
      const acks = new Map<NodeId, boolean>([[this.id, true]]);
      for (const [id, p] of this.progress) acks.set(id, p.readAck >= read.seq);
      if (!this.hasQuorum(acks)) return;
      this.pendingReads.shift();
      this.readStates.push({ requestId: read.requestId, index: read.index });
    }
  }

  // ---- replication -----------------------------------------------------------------------------------

  /** Sends new entries to every peer that lacks them. */
  private broadcastAppend(): void {
    for (const [id, p] of this.progress) {
      if (p.nextIndex <= this.lastIndex()) this.sendAppend(id, p);
    }
  }

  /**
   * Tells peers that hold every entry but not the latest commit index, in one empty append each per Ready,
   * so they apply at once rather than at the next heartbeat (up to 500 ms away for a learner, and its
   * agent would start a task assigned to it that much later). Peers still receiving entries learn it from
   * those.
   */
  private sendCommitNews(): void {
    for (const [id, p] of this.progress) {
      if (p.commitSent < this.commitIndex && p.matchIndex >= this.lastIndex()) this.sendAppend(id, p);
    }
  }

  /** An append (with any entries they lack) to every voter, and to learners too when toLearners. */
  private broadcastHeartbeat(toLearners: boolean): void {
    for (const [id, p] of this.progress) {
      if (toLearners || this.isVoter(id)) this.sendAppend(id, p);
    }
  }

  private sendAppend(to: NodeId, p: Progress): void {
    if (p.nextIndex <= this.snapshot.index) {
      // The entries it needs are compacted: send the snapshot, once per cooldown (it is large).
      if (p.snapshotCooldownTicks > 0) return;
      p.snapshotCooldownTicks = this.electionTicks;
      this.send({ type: 'installSnapshot', from: this.id, to, term: this.term, snapshot: this.snapshot });
      p.nextIndex = this.snapshot.index + 1;
      return;
    }
    const prevLogIndex = p.nextIndex - 1;
    const entries: LogEntry[] = [];
    let bytes = 0;
    for (let index = p.nextIndex; index <= this.lastIndex(); index++) {
      const entry = this.entryAt(index);
      assert(entry !== undefined, 'entry in range');
      if (
        entries.length > 0 &&
        (entries.length >= this.entriesPerMessageMax || bytes + entry.data.length > this.bytesPerMessageMax)
      ) {
        break;
      }
      entries.push(entry);
      bytes += entry.data.length;
    }
    this.send({
      type: 'appendEntries',
      from: this.id,
      to,
      term: this.term,
      prevLogIndex,
      prevLogTerm: this.termAt(prevLogIndex),
      entries,
      leaderCommit: this.commitIndex,
      readSeq: this.readSeq,
    });
    p.commitSent = this.commitIndex;
    // Pipelining: assume delivery; a rejection moves nextIndex back.
    p.nextIndex += entries.length;
  }

  private maybeCommit(): void {
    const voters = this.config.voters;
    const matches = voters.map((id) =>
      id === this.id ? this.stableLastIndex : (this.progress.get(id)?.matchIndex ?? 0),
    );
    matches.sort((a, b) => b - a);
    const quorumMatch = matches[Math.floor(voters.length / 2)] ?? 0;
    // Only entries of the current term commit by counting replicas (Raft §5.4.2).
    if (quorumMatch > this.commitIndex && this.termAt(quorumMatch) === this.term) {
      this.commitIndex = quorumMatch;
      this.broadcastAppend();
    }
  }

  // ---- log and config --------------------------------------------------------------------------------

  private lastIndex(): number {
    return this.snapshot.index + this.log.length;
  }

  private appendLocal(kind: EntryKind, data: string): LogEntry {
    const entry: LogEntry = { index: this.lastIndex() + 1, term: this.term, kind, data };
    this.log.push(entry);
    if (kind === 'config') {
      this.reloadConfig();
      if (this.role === 'leader') this.syncProgressWithConfig();
    }
    // Batching: entries proposed before the next ready() travel in one message per follower.
    if (this.role === 'leader') this.appendsPending = true;
    return entry;
  }

  private truncateFrom(index: number): void {
    assert(index > this.snapshot.index, 'never truncate into the snapshot');
    this.log.length = index - this.snapshot.index - 1;
    if (index < this.unstableFrom) this.unstableFrom = index;
    this.reloadConfig();
  }

  /** The config in force is the newest config entry in the log, committed or not (thesis §4.1). */
  private reloadConfig(): void {
    for (let i = this.log.length - 1; i >= 0; i--) {
      const entry = this.log[i];
      if (entry?.kind === 'config') {
        this.config = parseConfig(entry.data);
        this.configIndex = entry.index;
        return;
      }
    }
    this.config = this.snapshot.config;
    this.configIndex = this.snapshot.index;
  }

  /** The configuration in force at `index` (for a snapshot taken there). */
  private configAt(index: number): ClusterConfig {
    for (let i = index - this.snapshot.index - 1; i >= 0; i--) {
      const entry = this.log[i];
      if (entry?.kind === 'config') return parseConfig(entry.data);
    }
    return this.snapshot.config;
  }

  private syncProgressWithConfig(): void {
    const members = new Set(this.members());
    for (const id of [...this.progress.keys()]) if (!members.has(id)) this.progress.delete(id);
    for (const id of members) {
      if (id !== this.id && !this.progress.has(id)) this.progress.set(id, this.newProgress(this.lastIndex()));
    }
  }

  private newProgress(nextIndex: number): Progress {
    return {
      matchIndex: 0,
      nextIndex,
      recentlyActive: true,
      readAck: 0,
      snapshotCooldownTicks: 0,
      commitSent: 0,
    };
  }

  private members(): NodeId[] {
    return [...this.config.voters, ...this.config.learners];
  }

  private isVoter(id: NodeId): boolean {
    return this.config.voters.includes(id);
  }

  private hasQuorum(answers: ReadonlyMap<NodeId, boolean>): boolean {
    const voters = this.config.voters;
    if (voters.length === 0) return false;
    let yes = 0;
    for (const voter of voters) if (answers.get(voter) === true) yes++;
    return yes > voters.length / 2;
  }

  /** The term of entry `index`; the snapshot's term at its index; 0 before the log. */
  private termAt(index: number): number {
    if (index === this.snapshot.index) return this.snapshot.term;
    if (index < this.snapshot.index) return 0;
    return this.entryAt(index)?.term ?? 0;
  }

  private committedLocalIndex(): number {
    return Math.min(this.commitIndex, this.lastIndex());
  }

  // ---- helpers ---------------------------------------------------------------------------------------

  private requireLeader(): void {
    if (this.role !== 'leader') {
      throw new ShoalError('NOT_LEADER', 'this node is not the leader', { cause: this.leaderId });
    }
  }

  private send(message: RaftMessage): void {
    this.messages.push(message);
  }

  private resetElectionTimeout(): void {
    this.electionElapsed = 0;
    this.randomizedElectionTimeout = this.electionTicks + this.random.int(0, this.electionTicks);
  }

  private currentHardState(): HardState {
    return { term: this.term, votedFor: this.votedFor, commitIndex: this.commitIndex };
  }

  private hardStateChanged(): boolean {
    const last = this.lastReportedHardState;
    return (
      last.term !== this.term || last.votedFor !== this.votedFor || last.commitIndex !== this.commitIndex
    );
  }
}
