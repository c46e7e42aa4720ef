/**
 * The Raft shell: owns the timer, the WAL, the snapshot file and the transport, and drives the pure core.
 * The core counts time in ticks, but the shell does not wake every tick: it sleeps until the tick at
 * which the core will next act (a heartbeat, an election timeout), and when a message or the timer
 * arrives it first makes up the ticks real time owes. Only then, at the start of a macrotask: the node's
 * own calls (a proposal right after checking it leads) must see the core as it was when they checked.
 * An idle follower then wakes a few times a second instead of 40, which is most of an idle agent's CPU
 * on a small VM, where each wake-up costs ~0.2 ms.
 * After any input it handles the core's Ready in the required order: persist (fsync), then send, then
 * apply. It compacts the log into a snapshot of the state machine as the log grows, so the log does not
 * grow without bound under steady churn.
 */
import { randomBytes } from 'node:crypto';
import { ShoalError } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import type { Random } from '../shared/random.ts';
import { RaftCore } from './raft.ts';
import type { RaftTransport } from './transport.ts';
import type { ClusterConfig, LogEntry, NodeId, RaftMessage, RaftStatus, Snapshot } from './types.ts';
import { Wal, loadSnapshot, saveSnapshot, writeSnapshotAside } from './wal.ts';

export interface RaftTimings {
  /** One tick of the core. */
  readonly tickMs: number;
  /** Election timeout in ticks (randomized up to twice this). */
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
}

/**
 * LAN defaults: tick 25 ms, heartbeat every 50 ms, election timeout 200–400 ms. The worst event-loop stall
 * measured on an agent under load (bench:failover prints it) must stay well below the 200 ms floor.
 */
export const defaultRaftTimings: RaftTimings = { tickMs: 25, electionTicks: 8, heartbeatTicks: 2 };

export interface CompactionPolicy {
  /** Compact once this many applied entries follow the last snapshot. */
  readonly entriesBeforeCompaction: number;
}

export const defaultCompactionPolicy: CompactionPolicy = { entriesBeforeCompaction: 10_000 };

/**
 * The entries after which this node snapshots. The state machine's snapshot is taken on the main thread
 * (1.9 s for 500,000 tasks in bench:snapshot, more on a loaded voter), so voters must not all take one at
 * the same index, which stalls the whole cluster at once: each node adds up to half the policy's count,
 * fixed by its id.
 */
export function compactionThreshold(entries: number, nodeId: string): number {
  let hash = 0;
  for (let i = 0; i < nodeId.length; i++) hash = (hash * 31 + nodeId.charCodeAt(i)) >>> 0;
  return entries + (hash % Math.max(1, Math.floor(entries / 2)));
}

interface Compaction {
  readonly snapshot: Snapshot;
  /** Set once the file is written and fsynced beside the current one. */
  putInPlace: (() => void) | null;
  readonly startedMs: number;
  writtenMs: number;
}

export interface RaftServiceInit {
  readonly id: NodeId;
  readonly walDir: string;
  readonly transport: RaftTransport;
  readonly timings: RaftTimings;
  readonly compaction?: CompactionPolicy;
  readonly random: Random;
  readonly logger: Logger;
  /** Applies one committed entry; returns what a waiting proposer receives. Must not call back into Raft. */
  readonly apply: (entry: LogEntry) => unknown;
  /** Serializes the state machine as of the last applied entry (for a snapshot). */
  readonly snapshotState: () => string;
  /** Replaces the state machine with a snapshot's (on start, and when the leader sends one). */
  readonly restoreState: (data: string) => void;
  /** Called after each Ready is handled (role, leader or commit may have changed). */
  readonly onChange?: (status: RaftStatus) => void;
}

interface Waiter {
  readonly term: number;
  readonly resolve: (result: unknown) => void;
  readonly reject: (error: Error) => void;
}

export class RaftService {
  private readonly init: RaftServiceInit;
  private readonly core: RaftCore;
  private readonly wal: Wal;
  private readonly waiters = new Map<number, Waiter>();
  private readonly readWaiters = new Map<string, (index: number) => void>();
  private readonly appliedWaiters: { index: number; resolve: () => void }[] = [];
  private tickTimer: NodeJS.Timeout | null = null;
  /** When the armed tick timer is due (performance.now() ms); Infinity when none is armed. */
  private tickTimerAtMs = Infinity;
  /** When the last tick the core has counted fell due (performance.now() ms). */
  private lastTickAtMs = 0;
  private scheduled = false;
  private started = false;
  private stopped = false;
  /** The latest the tick timer fired after it was due: how long the event loop stalled. */
  tickStallMsMax = 0;
  /** The compaction whose snapshot is being written aside (maybeCompact), if one is. */
  private compaction: Compaction | null = null;
  /** The index of the snapshot in walDir (0: none). */
  private snapshotSavedIndex = 0;
  /** Stalls the core forgave rather than count (see catchUpTicks). */
  stallsForgiven = 0;
  /** Set while the WAL cannot be written (e.g. the disk is full); writes through this node are refused. */
  private diskError: string | null = null;
  private diskRetryTimer: NodeJS.Timeout | null = null;

  constructor(init: RaftServiceInit) {
    this.init = init;
    const snapshot = loadSnapshot(init.walDir);
    const { wal, contents } = Wal.open(init.walDir);
    if (contents.tornBytes > 0) {
      init.logger.warn('cut a torn record from the end of the write-ahead log', {
        bytes: contents.tornBytes,
        file: wal.path,
      });
    }
    const snapshotIndex = snapshot?.index ?? 0;
    if (contents.baseIndex > snapshotIndex) {
      wal.close();
      throw new ShoalError(
        'CORRUPT_DATA',
        `${wal.path} starts after index ${contents.baseIndex} but the snapshot ends at ${snapshotIndex}; restore the data dir from a backup or remove it to rejoin as a new node`,
      );
    }
    // A crash between saving a snapshot and rewriting the WAL leaves entries the snapshot covers.
    const entries = contents.entries.filter((entry) => entry.index > snapshotIndex);
    const first = entries[0];
    if (first && first.index !== snapshotIndex + 1) {
      wal.close();
      throw new ShoalError(
        'CORRUPT_DATA',
        `${wal.path} resumes at entry ${first.index} after a snapshot at ${snapshotIndex}; restore the data dir from a backup or remove it`,
      );
    }
    if (snapshot) init.restoreState(snapshot.data);
    this.snapshotSavedIndex = snapshotIndex;
    this.wal = wal;
    this.core = new RaftCore({
      id: init.id,
      electionTicks: init.timings.electionTicks,
      heartbeatTicks: init.timings.heartbeatTicks,
      random: init.random,
      entriesPerMessageMax: 512,
      bytesPerMessageMax: 1024 * 1024,
      hardState: contents.hardState,
      snapshot,
      entries,
    });
  }

  /** True when the data dir held no log: the node is new. */
  isEmpty(): boolean {
    return this.core.status().lastIndex === 0;
  }

  /** Starts a brand-new cluster with this node as its only voter. */
  bootstrap(): void {
    this.core.bootstrap();
    this.schedule();
  }

  async start(): Promise<void> {
    await this.init.transport.start((message) => this.step(message));
    this.lastTickAtMs = performance.now();
    this.started = true;
    this.schedule();
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.tickTimer) clearTimeout(this.tickTimer);
    if (this.diskRetryTimer) clearTimeout(this.diskRetryTimer);
    this.init.transport.stop();
    for (const waiter of this.waiters.values())
      waiter.reject(new ShoalError('UNAVAILABLE', 'the node is stopping'));
    this.waiters.clear();
    this.wal.close();
  }

  status(): RaftStatus {
    return this.core.status();
  }

  /** How long ago this node last heard from a leader, to a tick (0 on the leader). */
  leaderLastContactMs(): number {
    return this.core.ticksSinceLeaderContact() * this.init.timings.tickMs;
  }

  isLeader(): boolean {
    return this.core.status().role === 'leader';
  }

  /** True once the leader has committed an entry of its own term, so its view of the state is current. */
  isReadyLeader(): boolean {
    return this.core.hasCommittedInTerm();
  }

  /**
   * Proposes a command; resolves with the state machine's answer once it is committed and applied here.
   * Rejects, never throws (async), though the entry is appended at once: NOT_LEADER when this node does
   * not lead (any more), UNAVAILABLE while the disk cannot be written.
   */
  async propose(data: string, timeoutMs: number): Promise<unknown> {
    if (this.diskError !== null) throw new ShoalError('UNAVAILABLE', this.diskError);
    const { index, term } = this.core.propose(data);
    return this.wait(index, term, timeoutMs);
  }

  async proposeConfig(config: ClusterConfig, timeoutMs: number): Promise<unknown> {
    const { index, term } = this.core.proposeConfig(config);
    return this.wait(index, term, timeoutMs);
  }

  /**
   * On the leader: the commit index once a quorum confirms this node still leads (ReadIndex). A read
   * served after the state machine applied it is linearizable.
   */
  async readIndex(timeoutMs: number): Promise<number> {
    const requestId = randomBytes(8).toString('hex');
    // First, so a node that is not (or not yet) a settled leader rejects before any timer exists.
    this.core.readIndex(requestId);
    this.schedule();
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readWaiters.delete(requestId);
        reject(new ShoalError('TIMEOUT', `leadership was not confirmed within ${timeoutMs} ms`));
      }, timeoutMs);
      this.readWaiters.set(requestId, (readIndex) => {
        clearTimeout(timer);
        resolve(readIndex);
      });
    });
  }

  /** Waits until this node has applied at least `index`. */
  waitApplied(index: number, timeoutMs: number): Promise<void> {
    if (this.core.status().appliedIndex >= index) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new ShoalError('TIMEOUT', `this node did not catch up to index ${index} in ${timeoutMs} ms`),
          ),
        timeoutMs,
      );
      this.appliedWaiters.push({
        index,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  /**
   * Hands leadership to the most caught-up other voter (graceful leave). Resolves when this node no
   * longer leads, or after timeoutMs (then it carries on leading).
   */
  async transferLeadership(timeoutMs: number): Promise<boolean> {
    const status = this.core.status();
    if (status.role !== 'leader') return true;
    const target = status.progress
      .filter((p) => status.config.voters.includes(p.id) && p.recentlyActive)
      .sort((a, b) => b.matchIndex - a.matchIndex)[0];
    if (!target) return false;
    this.core.transferLeadership(target.id);
    this.schedule();
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this.core.status().role !== 'leader') return true;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return false;
  }

  private wait(index: number, term: number, timeoutMs: number): Promise<unknown> {
    this.schedule();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(index);
        reject(
          new ShoalError(
            'TIMEOUT',
            `the cluster did not commit the request within ${timeoutMs} ms; it may still commit`,
          ),
        );
      }, timeoutMs);
      this.waiters.set(index, {
        term,
        resolve: (result) => {
          clearTimeout(timer);
          resolve(result);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
    });
  }

  /**
   * Every connection to a peer closed. When the peer is the leader, the core campaigns soon rather than
   * after a whole election timeout (see RaftCore.leaderUnreachable): a crashed leader is replaced in about
   * the time one vote takes.
   */
  peerDisconnected(peerId: string): void {
    if (this.stopped || !this.started) return;
    this.catchUpTicks();
    this.core.leaderUnreachable(peerId);
    this.armTickTimer();
  }

  private step(message: RaftMessage): void {
    if (this.stopped) return;
    this.catchUpTicks();
    this.core.step(message);
    this.schedule();
  }

  /**
   * Ticks the core for every tick that fell due since the last one it counted. Unless the process stalled:
   * when this runs at least half an election timeout after the armed tick was due, the event loop was
   * blocked that long, and the core forgives the stall instead of counting it (RaftCore.forgiveStall);
   * counting it would act on peers' silence before reading what they sent meanwhile. Where the core does
   * not forgive (it forgives once per two election timeouts), only the first few election timeouts' worth
   * of a long gap run: more would only repeat what those did.
   */
  private catchUpTicks(dueAtMs = this.tickTimerAtMs): void {
    if (!this.started) return;
    const { tickMs, electionTicks } = this.init.timings;
    const nowMs = performance.now();
    const owed = Math.floor((nowMs - this.lastTickAtMs) / tickMs);
    if (owed <= 0) return;
    if (nowMs - dueAtMs >= (electionTicks * tickMs) / 2 && this.core.forgiveStall()) {
      this.stallsForgiven++;
      this.lastTickAtMs = nowMs;
      this.schedule();
      return;
    }
    const run = Math.min(owed, 4 * electionTicks);
    for (let i = 0; i < run; i++) this.core.tick();
    this.lastTickAtMs += owed * tickMs;
    this.schedule();
  }

  /** Arms the tick timer for the tick at which the core next acts, unless it is armed sooner already. */
  private armTickTimer(): void {
    if (!this.started || this.stopped) return;
    const dueTicks = this.core.ticksUntilDue();
    const dueAtMs = this.lastTickAtMs + dueTicks * this.init.timings.tickMs;
    if (dueAtMs >= this.tickTimerAtMs) return;
    if (this.tickTimer) clearTimeout(this.tickTimer);
    this.tickTimer = null;
    this.tickTimerAtMs = dueAtMs;
    if (dueAtMs === Infinity) return;
    this.tickTimer = setTimeout(
      () => {
        this.tickTimer = null;
        const dueAtMs = this.tickTimerAtMs;
        this.tickStallMsMax = Math.max(this.tickStallMsMax, performance.now() - dueAtMs);
        this.tickTimerAtMs = Infinity;
        this.catchUpTicks(dueAtMs);
        this.armTickTimer();
      },
      Math.max(0, dueAtMs - performance.now()),
    );
  }

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.handleReady();
    });
  }

  private handleReady(): void {
    if (this.stopped) return;
    while (this.core.hasReady()) {
      const ready = this.core.ready();
      let installStartedMs = 0;
      try {
        if (ready.snapshot) {
          // The leader sent a snapshot: it replaces our log and state machine.
          installStartedMs = performance.now();
          saveSnapshot(this.init.walDir, ready.snapshot);
          this.snapshotSavedIndex = ready.snapshot.index;
          this.wal.rewrite(
            ready.hardState ?? this.hardState(),
            ready.snapshot.index,
            ready.snapshot.term,
            [],
          );
        }
        this.wal.persist(ready.hardState, ready.truncateFrom, ready.entries);
      } catch (error) {
        this.onDiskError(error);
        this.core.discardMessages();
        // Nothing of this Ready happened: no message leaves, nothing applies. The core still holds it
        // as unstable, and the next attempt writes it again.
        return;
      }
      if (this.diskError !== null) {
        this.init.logger.info('the write-ahead log is writable again');
        this.diskError = null;
      }
      if (ready.snapshot) {
        this.init.restoreState(ready.snapshot.data);
        this.init.logger.info('installed a snapshot from the leader', {
          index: ready.snapshot.index,
          snapshotBytes: ready.snapshot.data.length,
          tookMs: Math.round(performance.now() - installStartedMs),
        });
      }
      for (const message of ready.messages) this.init.transport.send(message);
      for (const entry of ready.committed) this.applyOne(entry);
      this.core.advance(ready);
      for (const read of ready.readStates) {
        const waiter = this.readWaiters.get(read.requestId);
        this.readWaiters.delete(read.requestId);
        waiter?.(read.index);
      }
    }
    this.releaseAppliedWaiters();
    try {
      this.maybeCompact();
    } catch (error) {
      // The old snapshot and WAL are still whole (both are replaced atomically); retry later.
      this.onDiskError(error);
    }
    this.armTickTimer();
    this.init.onChange?.(this.core.status());
  }

  private onDiskError(error: unknown): void {
    const message = error instanceof Error ? error.message : String(error);
    if (this.diskError === null) this.init.logger.error(message);
    this.diskError = message;
    if (this.diskRetryTimer === null) {
      this.diskRetryTimer = setTimeout(() => {
        this.diskRetryTimer = null;
        this.schedule();
      }, 1000);
    }
  }

  private applyOne(entry: LogEntry): void {
    let result: unknown = undefined;
    let failure: Error | null = null;
    try {
      result = this.init.apply(entry);
    } catch (error) {
      failure = error instanceof Error ? error : new Error(String(error));
      this.init.logger.error('applying a committed entry failed', {
        index: entry.index,
        error: failure.message,
      });
    }
    const waiter = this.waiters.get(entry.index);
    if (!waiter) return;
    this.waiters.delete(entry.index);
    if (waiter.term !== entry.term) {
      waiter.reject(
        new ShoalError('UNAVAILABLE', 'leadership changed before the request committed; retry it'),
      );
    } else if (failure) {
      waiter.reject(failure);
    } else {
      waiter.resolve(result);
    }
  }

  private releaseAppliedWaiters(): void {
    const applied = this.core.status().appliedIndex;
    for (let i = this.appliedWaiters.length - 1; i >= 0; i--) {
      const waiter = this.appliedWaiters[i];
      if (waiter && waiter.index <= applied) {
        this.appliedWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  /**
   * Snapshots the state machine once enough entries follow the last snapshot, and rewrites the WAL without
   * the entries it covers. In two steps, so the main thread holds only for the state machine's snapshot
   * and its encoding: the file is written and fsynced off it (writeSnapshotAside), and a later Ready puts
   * it in place and rewrites the WAL. Until then the old snapshot and the whole WAL stay on disk, so a
   * crash meanwhile loses nothing; one compaction at a time.
   */
  private maybeCompact(): void {
    const pending = this.compaction;
    if (pending !== null) {
      if (pending.putInPlace === null) return;
      this.compaction = null;
      this.finishCompaction(pending, pending.putInPlace);
      return;
    }
    const policy = this.init.compaction ?? defaultCompactionPolicy;
    const status = this.core.status();
    const threshold = compactionThreshold(policy.entriesBeforeCompaction, this.init.id);
    if (status.appliedIndex - status.snapshotIndex < threshold) return;
    const startedMs = performance.now();
    const snapshot = this.core.compact(status.appliedIndex, this.init.snapshotState());
    const compaction: Compaction = { snapshot, putInPlace: null, startedMs, writtenMs: 0 };
    this.compaction = compaction;
    writeSnapshotAside(this.init.walDir, snapshot).then(
      (putInPlace) => {
        compaction.putInPlace = putInPlace;
        compaction.writtenMs = performance.now();
        this.schedule();
      },
      (error: unknown) => {
        if (this.compaction === compaction) this.compaction = null;
        if (!this.stopped) this.onDiskError(error);
      },
    );
  }

  /** Puts a snapshot written aside in place and rewrites the WAL after it, unless a newer one is saved. */
  private finishCompaction({ snapshot, startedMs, writtenMs }: Compaction, putInPlace: () => void): void {
    // The leader may have sent a newer snapshot meanwhile, saved at once (handleReady): keep that one.
    if (snapshot.index <= this.snapshotSavedIndex) return;
    putInPlace();
    this.snapshotSavedIndex = snapshot.index;
    // Called after the Ready loop: every entry the core holds is in the WAL already.
    const lastIndex = this.core.status().lastIndex;
    const kept: LogEntry[] = [];
    for (let index = snapshot.index + 1; index <= lastIndex; index++) {
      const entry = this.core.entryAt(index);
      if (entry) kept.push(entry);
    }
    this.wal.rewrite(this.hardState(), snapshot.index, snapshot.term, kept);
    this.init.logger.info('compacted the log into a snapshot', {
      index: snapshot.index,
      snapshotBytes: snapshot.data.length,
      walBytes: this.wal.sizeBytes,
      writtenAfterMs: Math.round(writtenMs - startedMs),
    });
  }

  private hardState(): { term: number; votedFor: NodeId | null; commitIndex: number } {
    const status = this.core.status();
    return { term: status.term, votedFor: this.core.votedForId(), commitIndex: status.commitIndex };
  }
}
