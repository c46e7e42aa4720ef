/**
 * A deterministic simulation of a Raft cluster on one thread: simulated ticks, a network that delays,
 * drops, duplicates and partitions, crashes that lose everything not persisted. Given a seed it replays
 * exactly. Used by the tests; it checks Raft's safety properties after every step.
 */
import { assert } from '../shared/assert.ts';
import { seededRandom, type Random } from '../shared/random.ts';
import { RaftCore } from './raft.ts';
import type { HardState, LogEntry, NodeId, RaftMessage } from './types.ts';

interface Disk {
  hardState: HardState;
  entries: LogEntry[];
}

interface SimNode {
  id: NodeId;
  core: RaftCore | null;
  disk: Disk;
  applied: LogEntry[];
}

interface InFlight {
  deliverAtTick: number;
  message: RaftMessage;
}

export interface SimulationOptions {
  seed: number;
  nodeCount: number;
  dropRate: number;
  duplicateRate: number;
  delayTicksMax: number;
}

export class RaftSimulation {
  readonly random: Random;
  readonly nodes = new Map<NodeId, SimNode>();
  private inFlight: InFlight[] = [];
  private nowTick = 0;
  /** Links that drop everything, as "from->to". */
  private readonly cut = new Set<string>();
  private readonly leadersByTerm = new Map<number, NodeId>();
  /** Proposals whose entry was applied somewhere: they must never disappear. */
  readonly acknowledged = new Map<number, string>();
  private proposalSeq = 0;
  private readonly options: SimulationOptions;

  constructor(options: SimulationOptions) {
    this.options = options;
    this.random = seededRandom(options.seed);
    const ids = Array.from({ length: options.nodeCount }, (_, i) => `n${i + 1}`);
    const config = JSON.stringify({ voters: ids, learners: [] });
    for (const id of ids) {
      // Every node starts from the same committed bootstrap config, as a cluster created together.
      const disk: Disk = {
        hardState: { term: 1, votedFor: null, commitIndex: 1 },
        entries: [{ index: 1, term: 1, kind: 'config', data: config }],
      };
      this.nodes.set(id, { id, core: null, disk, applied: [] });
      this.start(id);
    }
  }

  start(id: NodeId): void {
    const node = this.mustNode(id);
    node.applied = [];
    node.core = new RaftCore({
      id,
      electionTicks: 10,
      heartbeatTicks: 2,
      random: seededRandom(this.random.int(0, 2 ** 31)),
      entriesPerMessageMax: 8,
      bytesPerMessageMax: 1 << 20,
      hardState: node.disk.hardState,
      entries: node.disk.entries,
    });
  }

  crash(id: NodeId): void {
    this.mustNode(id).core = null;
  }

  partition(groups: NodeId[][]): void {
    this.cut.clear();
    for (const a of groups)
      for (const b of groups) if (a !== b) for (const x of a) for (const y of b) this.cut.add(`${x}->${y}`);
  }

  heal(): void {
    this.cut.clear();
  }

  leader(): NodeId | null {
    let best: { id: NodeId; term: number } | null = null;
    for (const node of this.nodes.values()) {
      const status = node.core?.status();
      if (status?.role === 'leader' && (best === null || status.term > best.term))
        best = { id: node.id, term: status.term };
    }
    return best?.id ?? null;
  }

  /** Proposes on the current leader, if any. */
  propose(): boolean {
    const id = this.leader();
    const core = id === null ? null : this.mustNode(id).core;
    if (!core) return false;
    core.propose(`p${++this.proposalSeq}`);
    return true;
  }

  /** One simulated tick: every live node ticks, due messages are delivered, everyone's Ready handled. */
  step(): void {
    this.nowTick++;
    for (const node of this.nodes.values()) node.core?.tick();
    const due = this.inFlight.filter((m) => m.deliverAtTick <= this.nowTick);
    this.inFlight = this.inFlight.filter((m) => m.deliverAtTick > this.nowTick);
    for (const { message } of due) {
      const target = this.nodes.get(message.to)?.core;
      if (target) target.step(message);
    }
    for (const node of this.nodes.values()) this.drain(node);
    this.checkSafety();
  }

  run(ticks: number): void {
    for (let i = 0; i < ticks; i++) this.step();
  }

  private drain(node: SimNode): void {
    const core = node.core;
    if (!core) return;
    while (core.hasReady()) {
      const ready = core.ready();
      // Persist first (the simulation's crash loses nothing that reached this point).
      if (ready.hardState) node.disk.hardState = ready.hardState;
      if (ready.truncateFrom !== null) node.disk.entries.length = ready.truncateFrom - 1;
      if (ready.entries.length > 0) {
        const first = ready.entries[0];
        assert(first !== undefined, 'non-empty');
        node.disk.entries.length = first.index - 1;
        node.disk.entries.push(...ready.entries);
      }
      for (const message of ready.messages) this.send(message);
      for (const entry of ready.committed) {
        node.applied.push(entry);
        if (entry.kind === 'command') this.acknowledged.set(entry.index, entry.data);
      }
      core.advance(ready);
    }
  }

  private send(message: RaftMessage): void {
    if (this.cut.has(`${message.from}->${message.to}`)) return;
    if (this.random.next() < this.options.dropRate) return;
    const copies = this.random.next() < this.options.duplicateRate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      this.inFlight.push({
        deliverAtTick: this.nowTick + 1 + this.random.int(0, this.options.delayTicksMax + 1),
        message,
      });
    }
  }

  /** Election safety, state machine safety and durability of acknowledged entries. */
  private checkSafety(): void {
    for (const node of this.nodes.values()) {
      const status = node.core?.status();
      if (status?.role !== 'leader') continue;
      const known = this.leadersByTerm.get(status.term);
      assert(
        known === undefined || known === node.id,
        `two leaders in term ${status.term}: ${known} and ${node.id}`,
      );
      this.leadersByTerm.set(status.term, node.id);
    }
    // Any two nodes applied the same entry at every index both applied.
    const reference = new Map<number, LogEntry>();
    for (const node of this.nodes.values()) {
      for (const entry of node.applied) {
        const other = reference.get(entry.index);
        if (other) {
          assert(
            other.term === entry.term && other.data === entry.data,
            `state machines diverge at ${entry.index}`,
          );
        } else {
          reference.set(entry.index, entry);
        }
      }
    }
    // An applied (acknowledged) entry stays in the log of a majority of nodes' disks.
    for (const [index, data] of this.acknowledged) {
      let holders = 0;
      for (const node of this.nodes.values()) if (node.disk.entries[index - 1]?.data === data) holders++;
      assert(holders > this.nodes.size / 2, `acknowledged entry ${index} lost`);
    }
  }

  private mustNode(id: NodeId): SimNode {
    const node = this.nodes.get(id);
    assert(node !== undefined, `unknown node ${id}`);
    return node;
  }
}
