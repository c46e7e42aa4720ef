/**
 * A deterministic simulation of a Raft cluster on one thread: simulated ticks, a network that delays,
 * drops, duplicates, reorders and partitions (symmetric and one-way), crashes that lose everything not
 * persisted (including a write torn mid-way), snapshots and compaction, and membership changes. Given a seed
 * it replays exactly. After every tick it checks election safety, log matching, leader completeness and
 * state machine safety, and throws an AssertionError naming the violation.
 */
import { assert } from '../shared/assert.ts';
import { seededRandom, type Random } from '../shared/random.ts';
import { RaftCore } from './raft.ts';
import type { ClusterConfig, HardState, LogEntry, NodeId, RaftMessage, Snapshot } from './types.ts';

interface Disk {
  hardState: HardState;
  snapshot: Snapshot | null;
  entries: LogEntry[];
}

/** The replicated state machine of the simulation: the list of applied commands. */
interface AppliedCommand {
  readonly index: number;
  readonly term: number;
  readonly data: string;
}

interface SimNode {
  readonly id: NodeId;
  core: RaftCore | null;
  disk: Disk;
  applied: AppliedCommand[];
  appliedIndex: number;
  /** Lazy ticking: ticks that fell due and the core has not been given yet. */
  owedTicks: number;
}

interface InFlight {
  readonly deliverAtTick: number;
  readonly message: RaftMessage;
}

export interface SimulationOptions {
  readonly seed: number;
  /** Nodes in the pool; the first `votersInitial` form the initial configuration. */
  readonly nodeCount: number;
  readonly votersInitial?: number;
  readonly dropRate: number;
  readonly duplicateRate: number;
  readonly delayTicksMax: number;
  /** Compact a node's log once it holds this many applied entries beyond its snapshot (0 = never). */
  readonly compactEvery?: number;
  /**
   * Tick as RaftService does: a node's core is ticked only once ticksUntilDue() ticks are owed, or to
   * catch up just before a message reaches it (at most 4 election timeouts' worth at once).
   * The ticks before the due one are checked to act on nothing.
   */
  readonly lazyTicks?: boolean;
}

const electionTicks = 10;

export class RaftSimulation {
  readonly random: Random;
  readonly nodes = new Map<NodeId, SimNode>();
  private inFlight: InFlight[] = [];
  private nowTick = 0;
  /** Directed links that drop everything, as "from->to". */
  private readonly cut = new Set<string>();
  private readonly leadersByTerm = new Map<number, NodeId>();
  /** Commands applied somewhere (so acknowledged to a client): they must never be lost or changed. */
  readonly acknowledged = new Map<number, string>();
  private proposalSeq = 0;
  private readonly options: SimulationOptions;

  constructor(options: SimulationOptions) {
    this.options = options;
    this.random = seededRandom(options.seed);
    const ids = Array.from({ length: options.nodeCount }, (_, i) => `n${i + 1}`);
    const voters = ids.slice(0, options.votersInitial ?? ids.length);
    const config = JSON.stringify({ voters, learners: [] } satisfies ClusterConfig);
    for (const id of ids) {
      // Initial voters start from the same committed bootstrap config; the others start empty, as new nodes.
      const member = voters.includes(id);
      const disk: Disk = {
        hardState: { term: member ? 1 : 0, votedFor: null, commitIndex: member ? 1 : 0 },
        snapshot: null,
        entries: member ? [{ index: 1, term: 1, kind: 'config', data: config }] : [],
      };
      this.nodes.set(id, { id, core: null, disk, applied: [], appliedIndex: 0, owedTicks: 0 });
      this.start(id);
    }
  }

  get tick(): number {
    return this.nowTick;
  }

  start(id: NodeId): void {
    const node = this.mustNode(id);
    const snapshot = node.disk.snapshot;
    node.applied = snapshot ? (JSON.parse(snapshot.data) as AppliedCommand[]) : [];
    node.appliedIndex = snapshot?.index ?? 0;
    node.owedTicks = 0;
    node.core = new RaftCore({
      id,
      electionTicks,
      heartbeatTicks: 2,
      random: seededRandom(this.random.int(0, 2 ** 31)),
      entriesPerMessageMax: 8,
      bytesPerMessageMax: 1 << 20,
      hardState: node.disk.hardState,
      snapshot,
      entries: node.disk.entries,
    });
  }

  crash(id: NodeId): void {
    this.mustNode(id).core = null;
  }

  /**
   * Crashes a node as SIGKILL does on a real host: its connections are reset, so every live node's shell
   * learns at once that it is gone (RaftService.peerDisconnected).
   */
  crashWithReset(id: NodeId): void {
    this.crash(id);
    // A connection's data arrives before its reset: what the node still had in flight is delivered now
    // (its peers read it before they see the connection close), then the peers hear it is gone.
    const fromIt = this.inFlight.filter((flight) => flight.message.from === id);
    this.inFlight = this.inFlight.filter((flight) => flight.message.from !== id);
    for (const { message } of fromIt) {
      const node = this.nodes.get(message.to);
      if (!node?.core) continue;
      this.catchUp(node);
      node.core.step(message);
    }
    for (const node of this.nodes.values()) this.tellUnreachable(node.id, id);
  }

  /** One node's shell sees its connections to `gone` close (spuriously, if `gone` is in fact alive). */
  tellUnreachable(at: NodeId, gone: NodeId): void {
    const node = this.mustNode(at);
    if (!node.core) return;
    this.catchUp(node);
    node.core.leaderUnreachable(gone);
    this.drain(node);
  }

  /**
   * Crashes a node in the middle of persisting its next Ready: a prefix of its entries reaches the disk,
   * the hard state may not, and nothing is sent or applied — what a torn write leaves behind.
   */
  crashMidWrite(id: NodeId): void {
    const node = this.mustNode(id);
    const core = node.core;
    if (!core) return;
    if (core.hasReady()) {
      const ready = core.ready();
      if (ready.snapshot === null) {
        const truncateFrom = ready.truncateFrom;
        if (truncateFrom !== null)
          node.disk.entries = node.disk.entries.filter((e) => e.index < truncateFrom);
        const kept = ready.entries.slice(0, this.random.int(0, ready.entries.length + 1));
        const first = kept[0];
        if (first) {
          node.disk.entries = node.disk.entries.filter((e) => e.index < first.index);
          node.disk.entries.push(...kept);
        }
      }
    }
    node.core = null;
  }

  isUp(id: NodeId): boolean {
    return this.mustNode(id).core !== null;
  }

  partition(groups: NodeId[][]): void {
    this.cut.clear();
    for (const a of groups) {
      for (const b of groups) if (a !== b) for (const x of a) for (const y of b) this.cut.add(`${x}->${y}`);
    }
  }

  /** Drops messages from `from` to `to` only. */
  cutOneWay(from: NodeId, to: NodeId): void {
    this.cut.add(`${from}->${to}`);
  }

  heal(): void {
    this.cut.clear();
  }

  leader(): NodeId | null {
    let best: { id: NodeId; term: number } | null = null;
    for (const node of this.nodes.values()) {
      const status = node.core?.status();
      if (status?.role === 'leader' && (best === null || status.term > best.term)) {
        best = { id: node.id, term: status.term };
      }
    }
    return best?.id ?? null;
  }

  core(id: NodeId): RaftCore | null {
    return this.mustNode(id).core;
  }

  /** Proposes on the current leader, if any. */
  propose(): boolean {
    const id = this.leader();
    const core = id === null ? null : this.mustNode(id).core;
    if (!core) return false;
    try {
      core.propose(`p${++this.proposalSeq}`);
    } catch {
      return false; // e.g. a leadership transfer in progress
    }
    return true;
  }

  /** Asks the leader to change the configuration by one server; returns false if it cannot now. */
  changeConfig(change: (config: ClusterConfig) => ClusterConfig | null): boolean {
    const id = this.leader();
    const core = id === null ? null : this.mustNode(id).core;
    if (!core) return false;
    const next = change(core.status().config);
    if (next === null) return false;
    try {
      core.proposeConfig(next);
      return true;
    } catch {
      return false;
    }
  }

  /** One simulated tick: every live node ticks, due messages are delivered, everyone's Ready handled. */
  step(): void {
    this.nowTick++;
    for (const node of this.nodes.values()) {
      if (!node.core) continue;
      if (!this.options.lazyTicks) {
        node.core.tick();
        continue;
      }
      node.owedTicks++;
      if (node.owedTicks >= node.core.ticksUntilDue()) this.catchUp(node);
    }
    const due: InFlight[] = [];
    const later: InFlight[] = [];
    for (const m of this.inFlight) (m.deliverAtTick <= this.nowTick ? due : later).push(m);
    this.inFlight = later;
    for (const { message } of due) {
      const node = this.nodes.get(message.to);
      if (!node?.core) continue;
      this.catchUp(node);
      node.core.step(message);
    }
    for (const node of this.nodes.values()) this.drain(node);
    this.checkSafety();
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) this.step();
  }

  /** Lazy ticking: gives the core the ticks it is owed, checking that those before the due one do nothing. */
  private catchUp(node: SimNode): void {
    const core = node.core;
    if (!core || node.owedTicks === 0) return;
    const dueTicks = core.ticksUntilDue();
    const quiet = !core.hasReady();
    const { role, term } = core.status();
    const run = Math.min(node.owedTicks, 4 * electionTicks);
    node.owedTicks = 0;
    for (let i = 1; i <= run; i++) {
      core.tick();
      if (i < dueTicks && quiet) {
        const after = core.status();
        assert(
          !core.hasReady() && after.role === role && after.term === term,
          `${node.id}: tick ${i} of ${dueTicks} acted before it was due`,
        );
      }
    }
  }

  private drain(node: SimNode): void {
    const core = node.core;
    if (!core) return;
    while (core.hasReady()) {
      const ready = core.ready();
      // Persist first: a crash loses nothing that reached this point.
      if (ready.snapshot) {
        node.disk.snapshot = ready.snapshot;
        node.disk.entries = [];
      }
      if (ready.hardState) node.disk.hardState = ready.hardState;
      const truncateFrom = ready.truncateFrom;
      if (truncateFrom !== null) node.disk.entries = node.disk.entries.filter((e) => e.index < truncateFrom);
      const first = ready.entries[0];
      if (first) {
        node.disk.entries = node.disk.entries.filter((e) => e.index < first.index);
        node.disk.entries.push(...ready.entries);
      }
      for (const message of ready.messages) this.send(message);
      if (ready.snapshot) {
        node.applied = JSON.parse(ready.snapshot.data) as AppliedCommand[];
        node.appliedIndex = ready.snapshot.index;
      }
      for (const entry of ready.committed) {
        assert(entry.index === node.appliedIndex + 1, `${node.id} applies in order`);
        node.appliedIndex = entry.index;
        if (entry.kind !== 'command') continue;
        node.applied.push({ index: entry.index, term: entry.term, data: entry.data });
        const known = this.acknowledged.get(entry.index);
        assert(known === undefined || known === entry.data, `state machines diverge at ${entry.index}`);
        this.acknowledged.set(entry.index, entry.data);
      }
      core.advance(ready);
      this.maybeCompact(node);
    }
  }

  private maybeCompact(node: SimNode): void {
    const every = this.options.compactEvery ?? 0;
    const core = node.core;
    if (every === 0 || !core) return;
    const status = core.status();
    // Keep a few entries so a slightly lagging follower still gets appends rather than a snapshot.
    const index = status.appliedIndex - 2;
    if (index - status.snapshotIndex < every || index > status.lastIndex) return;
    const data = JSON.stringify(node.applied.filter((c) => c.index <= index));
    const snapshot = core.compact(index, data);
    node.disk.snapshot = snapshot;
    node.disk.entries = node.disk.entries.filter((e) => e.index > index);
  }

  private send(message: RaftMessage): void {
    if (this.cut.has(`${message.from}->${message.to}`)) return;
    if (this.random.next() < this.options.dropRate) return;
    const copies = this.random.next() < this.options.duplicateRate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      // Independent random delays reorder messages.
      const deliverAtTick = this.nowTick + 1 + this.random.int(0, this.options.delayTicksMax + 1);
      this.inFlight.push({ deliverAtTick, message });
    }
  }

  /** Election safety, log matching, leader completeness and state machine safety. */
  private checkSafety(): void {
    const live = [...this.nodes.values()].filter((n) => n.core !== null);
    for (const node of live) {
      const status = node.core?.status();
      if (status?.role !== 'leader') continue;
      const known = this.leadersByTerm.get(status.term);
      assert(
        known === undefined || known === node.id,
        `two leaders in term ${status.term}: ${known} and ${node.id}`,
      );
      this.leadersByTerm.set(status.term, node.id);
      // Leader completeness: a leader that has committed in its term holds every acknowledged entry.
      if (node.core?.hasCommittedInTerm() === true) {
        for (const [index, data] of this.acknowledged) {
          if (index <= status.snapshotIndex) continue;
          const entry = node.core.entryAt(index);
          assert(
            entry?.data === data,
            `leader ${node.id} (term ${status.term}) lacks acknowledged entry ${index}`,
          );
        }
      }
    }
    // State machine safety: any two nodes applied the same command at every index both applied.
    const reference = new Map<number, AppliedCommand>();
    for (const node of live) {
      for (const command of node.applied) {
        const other = reference.get(command.index);
        if (other) assert(other.data === command.data, `state machines diverge at ${command.index}`);
        else reference.set(command.index, command);
      }
    }
    // Log matching: entries with the same index and term hold the same data (checked every few ticks).
    if (this.nowTick % 5 === 0) {
      const byIndex = new Map<string, string>();
      for (const node of live) {
        for (const entry of node.disk.entries) {
          const key = `${entry.index}/${entry.term}`;
          const data = byIndex.get(key);
          assert(data === undefined || data === entry.data, `log matching broken at ${key}`);
          byIndex.set(key, entry.data);
        }
      }
    }
  }

  /** After faults stop: every live member has applied every acknowledged command, unchanged. */
  checkConverged(): void {
    const leader = this.leader();
    const config = leader === null ? null : this.mustNode(leader).core?.status().config;
    const members = new Set([...(config?.voters ?? []), ...(config?.learners ?? [])]);
    for (const node of this.nodes.values()) {
      if (!node.core || !members.has(node.id)) continue;
      const applied = new Map(node.applied.map((c) => [c.index, c.data]));
      for (const [index, data] of this.acknowledged) {
        assert(applied.get(index) === data, `${node.id} lost acknowledged entry ${index}`);
      }
    }
  }

  private mustNode(id: NodeId): SimNode {
    const node = this.nodes.get(id);
    assert(node !== undefined, `unknown node ${id}`);
    return node;
  }
}
