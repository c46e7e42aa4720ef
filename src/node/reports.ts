/**
 * An agent's task reports, batched into Raft entries. A node running hundreds of tasks starts and ends
 * them in bursts (a restart wave, a drain, a batch finishing), and an entry per report would be a commit
 * round per report. So reports that arrive while an entry is in flight wait for it (at most `windowMs`),
 * then go together as one `reportTasks`: the state applies each as the `reportTask` it would have been, in
 * order, and answers each with its own result.
 *
 * In: reports (the agent's `report` hook) and a `propose` that commits a command. Out: one promise per
 * report, settled with that report's own result: it resolves when applied, and rejects when the batch was
 * not committed or the state refused that report, so the agent retries it as it retried a single report.
 * No batch waits when nothing is in flight: a lone report costs no added latency, and the reports one
 * reconciliation sends in the same turn of the event loop go together.
 */
import {
  reportReasonsLength,
  reportReasonsLengthMax,
  reportsPerCommandMax,
  type ApplyResult,
  type Command,
  type CommandResult,
  type TaskReportRecord,
} from '../cluster/index.ts';
import { ShoalError, assert, isShoalError } from '../shared/index.ts';

/** The longest a report waits for an entry in flight before its batch is proposed anyway. */
export const reportBatchWindowMs = 20;

export interface ReportBatcherInit {
  /** The node whose agent reports: only the node a task is assigned to speaks for it. */
  readonly nodeId: string;
  /** Commits a command through the leader and resolves with its apply result; rejects when it was not. */
  readonly propose: (command: Command) => Promise<ApplyResult>;
  /** The clock the entries' times come from (default Date.now). */
  readonly nowMs?: () => number;
  /** See reportBatchWindowMs. */
  readonly windowMs?: number;
  /** Reports per entry, at most reportsPerCommandMax (the codec refuses more). */
  readonly reportsMax?: number;
}

interface Waiting {
  readonly report: TaskReportRecord;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

export class ReportBatcher {
  private readonly init: ReportBatcherInit;
  private readonly reportsMax: number;
  private queue: Waiting[] = [];
  /** Batches proposed and not yet settled. */
  private inFlight = 0;
  /** The window of the oldest waiting report, while a batch is in flight. */
  private windowTimer: NodeJS.Timeout | null = null;
  /** A flush at the end of this turn of the event loop (nothing in flight, or one just settled). */
  private flushSoon: NodeJS.Immediate | null = null;

  constructor(init: ReportBatcherInit) {
    this.reportsMax = Math.min(init.reportsMax ?? reportsPerCommandMax, reportsPerCommandMax);
    assert(this.reportsMax >= 1, 'a batch holds at least one report');
    this.init = init;
  }

  /** Sends a report with others; settles with its own result (see the header). */
  report(report: TaskReportRecord): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ report, resolve, reject });
      this.schedule();
    });
  }

  /** Reports waiting to be proposed. */
  get waiting(): number {
    return this.queue.length;
  }

  private schedule(): void {
    if (this.queue.length === 0) return;
    if (this.queue.length >= this.reportsMax) {
      this.flush();
      return;
    }
    if (this.inFlight === 0) {
      this.flushSoon ??= setImmediate(() => {
        this.flushSoon = null;
        this.flush();
      });
      return;
    }
    this.windowTimer ??= setTimeout(() => {
      this.windowTimer = null;
      this.flush();
    }, this.init.windowMs ?? reportBatchWindowMs);
  }

  /** Proposes the waiting reports, as many entries as the bounds of one take. */
  private flush(): void {
    if (this.windowTimer !== null) {
      clearTimeout(this.windowTimer);
      this.windowTimer = null;
    }
    if (this.flushSoon !== null) {
      clearImmediate(this.flushSoon);
      this.flushSoon = null;
    }
    while (this.queue.length > 0) {
      const batch = this.takeBatch();
      this.inFlight++;
      void this.send(batch).finally(() => {
        this.inFlight--;
        this.schedule();
      });
    }
  }

  /** The oldest waiting reports that fit one entry: reportsMax of them, their reasons within the bound. */
  private takeBatch(): Waiting[] {
    let length = 0;
    let count = 0;
    for (const waiting of this.queue) {
      const reason = reportReasonsLength([waiting.report]);
      if (count === this.reportsMax || (count > 0 && length + reason > reportReasonsLengthMax)) break;
      length += reason;
      count++;
    }
    const batch = this.queue.slice(0, count);
    this.queue = this.queue.slice(count);
    return batch;
  }

  private async send(batch: readonly Waiting[]): Promise<void> {
    const { nodeId } = this.init;
    const atMs = (this.init.nowMs ?? Date.now)();
    const [only] = batch;
    if (batch.length === 1 && only !== undefined) {
      // One report is the entry it always was (and one a node of an earlier version still reads).
      await this.settle([only], () =>
        this.init.propose({ type: 'reportTask', nodeId, ...only.report, atMs }),
      );
      return;
    }
    const reports = batch.map((waiting) => waiting.report);
    try {
      const result = await this.init.propose({ type: 'reportTasks', nodeId, reports, atMs });
      batch.forEach((waiting, at) => settleOne(waiting, resultOf(result, at)));
    } catch (error) {
      if (!isShoalError(error, 'INVALID_ARGUMENT')) {
        for (const waiting of batch) waiting.reject(error);
        return;
      }
      // A leader of an earlier version does not know reportTasks: each report goes alone, as it used to.
      await Promise.all(
        batch.map((waiting) =>
          this.settle([waiting], () =>
            this.init.propose({ type: 'reportTask', nodeId, ...waiting.report, atMs }),
          ),
        ),
      );
    }
  }

  private async settle(batch: readonly Waiting[], propose: () => Promise<ApplyResult>): Promise<void> {
    try {
      const result = await propose();
      for (const waiting of batch) settleOne(waiting, result);
    } catch (error) {
      for (const waiting of batch) waiting.reject(error);
    }
  }
}

/**
 * The result of the report at `at` of a batch: its own, from `results`. A batch is applied whole, so a
 * result without them (a path that kept only the batch's own fields) stands for every report in it.
 */
function resultOf(result: ApplyResult, at: number): CommandResult {
  if (!result.ok) return result;
  return result.results?.[at] ?? { ok: true };
}

function settleOne(waiting: Waiting, result: CommandResult): void {
  if (result.ok) waiting.resolve();
  else waiting.reject(new ShoalError(result.code, result.message));
}
