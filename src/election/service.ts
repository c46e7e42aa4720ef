/**
 * The Raft shell: owns the timer, the WAL and the transport, and drives the pure core. After any input it
 * handles the core's Ready in the required order: persist (fsync), then send, then apply.
 */
import { ShoalError } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import type { Random } from '../shared/random.ts';
import { RaftCore } from './raft.ts';
import type { RaftTransport } from './transport.ts';
import type { ClusterConfig, LogEntry, NodeId, RaftMessage, RaftStatus } from './types.ts';
import { Wal } from './wal.ts';

export interface RaftTimings {
  /** One tick of the core. */
  readonly tickMs: number;
  /** Election timeout in ticks (randomized up to twice this). */
  readonly electionTicks: number;
  readonly heartbeatTicks: number;
}

/** LAN defaults: heartbeat 100 ms, election timeout 1–2 s, so a failover takes about 1–2.5 s. */
export const defaultRaftTimings: RaftTimings = { tickMs: 50, electionTicks: 20, heartbeatTicks: 2 };

export interface RaftServiceInit {
  readonly id: NodeId;
  readonly walDir: string;
  readonly transport: RaftTransport;
  readonly timings: RaftTimings;
  readonly random: Random;
  readonly logger: Logger;
  /** Applies one committed entry; returns what a waiting proposer receives. Must not call back into Raft. */
  readonly apply: (entry: LogEntry) => unknown;
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
  private timer: NodeJS.Timeout | null = null;
  private scheduled = false;
  private stopped = false;

  constructor(init: RaftServiceInit) {
    this.init = init;
    const { wal, contents } = Wal.open(init.walDir);
    if (contents.tornBytes > 0) {
      init.logger.warn('cut a torn record from the end of the write-ahead log', {
        bytes: contents.tornBytes,
        file: wal.path,
      });
    }
    this.wal = wal;
    this.core = new RaftCore({
      id: init.id,
      electionTicks: init.timings.electionTicks,
      heartbeatTicks: init.timings.heartbeatTicks,
      random: init.random,
      entriesPerMessageMax: 512,
      bytesPerMessageMax: 1024 * 1024,
      hardState: contents.hardState,
      entries: contents.entries,
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
    this.timer = setInterval(() => {
      this.core.tick();
      this.schedule();
    }, this.init.timings.tickMs);
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.init.transport.stop();
    for (const waiter of this.waiters.values())
      waiter.reject(new ShoalError('UNAVAILABLE', 'the node is stopping'));
    this.waiters.clear();
    this.wal.close();
  }

  status(): RaftStatus {
    return this.core.status();
  }

  isLeader(): boolean {
    return this.core.status().role === 'leader';
  }

  /** True once the leader has committed an entry of its own term, so its view of the state is current. */
  isReadyLeader(): boolean {
    return this.core.hasCommittedInTerm();
  }

  /** Proposes a command; resolves with the state machine's answer once it is committed and applied here. */
  propose(data: string, timeoutMs: number): Promise<unknown> {
    const { index, term } = this.core.propose(data);
    return this.wait(index, term, timeoutMs);
  }

  proposeConfig(config: ClusterConfig, timeoutMs: number): Promise<unknown> {
    const { index, term } = this.core.proposeConfig(config);
    return this.wait(index, term, timeoutMs);
  }

  /** Waits until this node has applied at least `index`. */
  async waitApplied(index: number, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.core.status().appliedIndex < index) {
      if (Date.now() > deadline)
        throw new ShoalError('TIMEOUT', `this node did not catch up to index ${index} in ${timeoutMs} ms`);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
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

  private step(message: RaftMessage): void {
    if (this.stopped) return;
    this.core.step(message);
    this.schedule();
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
      this.wal.persist(ready.hardState, ready.truncateFrom, ready.entries);
      for (const message of ready.messages) this.init.transport.send(message);
      for (const entry of ready.committed) {
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
        if (waiter) {
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
      }
      this.core.advance(ready);
    }
    this.init.onChange?.(this.core.status());
  }
}
