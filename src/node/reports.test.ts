import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  reportReasonsLengthMax,
  reportsPerCommandMax,
  type ApplyResult,
  type Command,
  type TaskReportRecord,
} from '../cluster/index.ts';
import { ShoalError, isShoalError } from '../shared/index.ts';
import { ReportBatcher, reportBatchWindowMs } from './reports.ts';

const report = (taskId: string, reason: string | null = null): TaskReportRecord => ({
  taskId,
  attempt: 0,
  state: 'running',
  exitCode: null,
  reason,
});

/** A propose whose answers the test gives, one proposal at a time, in the order they were made. */
function proposals(): {
  readonly made: Command[];
  propose: (command: Command) => Promise<ApplyResult>;
  answer: (at: number, result: ApplyResult | Error) => Promise<void>;
} {
  const made: Command[] = [];
  const pending: { resolve: (result: ApplyResult) => void; reject: (error: Error) => void }[] = [];
  return {
    made,
    propose: (command) =>
      new Promise((resolve, reject) => {
        made.push(command);
        pending.push({ resolve, reject });
      }),
    answer: async (at, result) => {
      const waiting = pending[at];
      if (waiting === undefined) throw new Error(`no proposal ${at}`);
      if (result instanceof Error) waiting.reject(result);
      else waiting.resolve(result);
      await vi.advanceTimersByTimeAsync(0);
    },
  };
}

/** How each report's promise settled: 'ok', or the error's code. */
function outcomes(promises: readonly Promise<void>[]): string[] {
  const seen = promises.map(() => 'waiting');
  promises.forEach((promise, at) => {
    promise.then(
      () => (seen[at] = 'ok'),
      (error: unknown) => (seen[at] = isShoalError(error) ? error.code : String(error)),
    );
  });
  return seen;
}

const reportsOf = (command: Command | undefined): string[] => {
  if (command?.type === 'reportTask') return [command.taskId];
  if (command?.type === 'reportTasks') return command.reports.map((one) => one.taskId);
  return [];
};

beforeEach(() => {
  vi.useFakeTimers({ now: 1000 });
});
afterEach(() => {
  vi.useRealTimers();
});

describe('the report batcher', () => {
  it('sends a lone report at once, as the reportTask it always was', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    const seen = outcomes([batcher.report(report('a'))]);
    await vi.advanceTimersByTimeAsync(0);
    expect(log.made).toEqual([
      {
        type: 'reportTask',
        nodeId: 'n1',
        taskId: 'a',
        attempt: 0,
        state: 'running',
        exitCode: null,
        reason: null,
        atMs: 1000,
      },
    ]);
    await log.answer(0, { ok: true });
    expect(seen).toEqual(['ok']);
  });

  it('sends the reports of one turn together, and those that come while it is in flight next', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    const first = outcomes(['a', 'b', 'c'].map((id) => batcher.report(report(id))));
    await vi.advanceTimersByTimeAsync(0);
    expect(log.made.map(reportsOf)).toEqual([['a', 'b', 'c']]);
    expect(log.made[0]).toMatchObject({ type: 'reportTasks', nodeId: 'n1', atMs: 1000 });
    const second = outcomes(['d', 'e'].map((id) => batcher.report(report(id))));
    await vi.advanceTimersByTimeAsync(0);
    // Waiting for the entry in flight, within the window.
    expect(log.made).toHaveLength(1);
    expect(batcher.waiting).toBe(2);
    await log.answer(0, { ok: true, results: [{ ok: true }, { ok: true }, { ok: true }] });
    expect(first).toEqual(['ok', 'ok', 'ok']);
    expect(log.made.map(reportsOf)).toEqual([
      ['a', 'b', 'c'],
      ['d', 'e'],
    ]);
    await log.answer(1, { ok: true, results: [{ ok: true }, { ok: true }] });
    expect(second).toEqual(['ok', 'ok']);
  });

  it('sends waiting reports when the window ends, even while an entry is still in flight', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    void batcher.report(report('a')).catch(() => undefined);
    await vi.advanceTimersByTimeAsync(0);
    const late = outcomes([batcher.report(report('b')), batcher.report(report('c'))]);
    await vi.advanceTimersByTimeAsync(reportBatchWindowMs - 1);
    expect(log.made).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(log.made.map(reportsOf)).toEqual([['a'], ['b', 'c']]);
    await log.answer(1, { ok: true, results: [{ ok: true }, { ok: true }] });
    expect(late).toEqual(['ok', 'ok']);
  });

  it('settles each report with its own result: a refused one rejects only its caller', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    const promises = ['a', 'gone', 'c'].map((id) => batcher.report(report(id)));
    const seen = outcomes(promises);
    await vi.advanceTimersByTimeAsync(0);
    await log.answer(0, {
      ok: true,
      results: [{ ok: true }, { ok: false, code: 'NOT_FOUND', message: 'no task gone' }, { ok: true }],
    });
    expect(seen).toEqual(['ok', 'NOT_FOUND', 'ok']);
    await expect(promises[1]).rejects.toThrow('no task gone');
  });

  it('rejects every report of an entry that was not committed, so the agent sends them again', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    const seen = outcomes(['a', 'b'].map((id) => batcher.report(report(id))));
    await vi.advanceTimersByTimeAsync(0);
    await log.answer(0, new ShoalError('NO_LEADER', 'no leader accepted the request'));
    expect(seen).toEqual(['NO_LEADER', 'NO_LEADER']);
    // Sent again, as the agent does on its next reconciliation: a new entry.
    const again = outcomes(['a', 'b'].map((id) => batcher.report(report(id))));
    await vi.advanceTimersByTimeAsync(0);
    expect(log.made.map(reportsOf)).toEqual([
      ['a', 'b'],
      ['a', 'b'],
    ]);
    await log.answer(1, { ok: true, results: [{ ok: true }, { ok: true }] });
    expect(again).toEqual(['ok', 'ok']);
  });

  it('takes a result without per-report results as every report’s', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    const seen = outcomes(['a', 'b'].map((id) => batcher.report(report(id))));
    await vi.advanceTimersByTimeAsync(0);
    await log.answer(0, { ok: true });
    expect(seen).toEqual(['ok', 'ok']);
  });

  it('cuts entries at reportsPerCommandMax reports and at the bound of their reasons', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    for (let n = 0; n < 2 * reportsPerCommandMax + 10; n++) void batcher.report(report(`t${n}`));
    // A full entry goes at once; the rest waits for those in flight, or the window.
    await vi.advanceTimersByTimeAsync(0);
    expect(log.made.map((command) => reportsOf(command).length)).toEqual([
      reportsPerCommandMax,
      reportsPerCommandMax,
    ]);
    await vi.advanceTimersByTimeAsync(reportBatchWindowMs);
    expect(log.made.map((command) => reportsOf(command).length)).toEqual([
      reportsPerCommandMax,
      reportsPerCommandMax,
      10,
    ]);
    const reasons = proposals();
    const long = new ReportBatcher({ nodeId: 'n1', propose: reasons.propose });
    const reason = 'x'.repeat(reportReasonsLengthMax / 4);
    for (let n = 0; n < 9; n++) void long.report(report(`r${n}`, reason));
    await vi.advanceTimersByTimeAsync(0);
    expect(reasons.made.map((command) => reportsOf(command).length)).toEqual([4, 4, 1]);
  });

  it('sends each report alone when the leader does not know batches (an earlier version)', async () => {
    const log = proposals();
    const batcher = new ReportBatcher({ nodeId: 'n1', propose: log.propose });
    const seen = outcomes(['a', 'b'].map((id) => batcher.report(report(id))));
    await vi.advanceTimersByTimeAsync(0);
    await log.answer(0, new ShoalError('INVALID_ARGUMENT', 'not a command: type'));
    expect(log.made.map((command) => command.type)).toEqual(['reportTasks', 'reportTask', 'reportTask']);
    await log.answer(1, { ok: true });
    await log.answer(2, { ok: false, code: 'NOT_FOUND', message: 'no task b' });
    expect(seen).toEqual(['ok', 'NOT_FOUND']);
  });
});
