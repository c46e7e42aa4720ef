/**
 * The run's report: figures first, then every failure, each with the seed that replays the run.
 */
import type { CheckResult, Figures } from './check.ts';
import type { History } from './history.ts';

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function quantile(sorted: readonly number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? null;
}

export function formatFigures(figures: Figures): string[] {
  const lines: string[] = [];
  const codes = Object.entries(figures.refusedByCode)
    .map(([code, n]) => `${code} ${n}`)
    .join(', ');
  lines.push(
    `submitted ${figures.submitted}: acknowledged ${figures.acknowledged}, refused ${figures.refused}` +
      `${codes ? ` (${codes})` : ''}, undelivered ${figures.undelivered}, unknown ${figures.unknown}`,
  );
  lines.push(
    `lost (acknowledged, missing at the end): ${figures.lost} (target 0); ` +
      `duplicated (ran on two nodes at once): ${figures.duplicated} (target 0)`,
  );
  lines.push(
    `refused but committed anyway: ${figures.refusedButCommitted}; unknown and committed: ` +
      `${figures.unknownButCommitted}; acknowledged but never started: ${figures.ackedNeverStarted}`,
  );
  const p50 = quantile(figures.failoverMs, 0.5);
  const max = figures.failoverMs[figures.failoverMs.length - 1];
  lines.push(
    p50 === null || max === undefined
      ? `node death → its tasks running elsewhere: no machine crash hit a running restartable task` +
          (figures.failoverMissing > 0 ? ` (${figures.failoverMissing} never ran again)` : '')
      : `node death → its tasks running elsewhere: ${figures.failoverMs.length} tasks, p50 ${seconds(p50)}, ` +
          `max ${seconds(max)}` +
          (figures.failoverSameNode > 0
            ? `; ${figures.failoverSameNode} ran again only on the crashed node`
            : '') +
          (figures.failoverMissing > 0 ? `; ${figures.failoverMissing} never ran again` : ''),
  );
  lines.push(
    figures.majoritySubmissions === 0
      ? 'accepted while a majority was connected: no such submission'
      : `accepted while a majority was connected: ${((100 * figures.majorityAccepted) / figures.majoritySubmissions).toFixed(1)} % ` +
          `(${figures.majorityAccepted} of ${figures.majoritySubmissions}; target ≥ 99 %)`,
  );
  lines.push(
    `leader terms seen: ${figures.leaderTerms} (${figures.leaderChangesAfterHeal} new after the last heal); ` +
      `worst event-loop stall an agent reported: ${figures.eventLoopStallMsMax === null ? '?' : `${figures.eventLoopStallMsMax} ms`}; ` +
      `membership converged ` +
      (figures.convergenceMs === null ? 'NEVER' : `${seconds(figures.convergenceMs)} after the last heal`),
  );
  return lines;
}

export function formatReport(history: History, result: CheckResult, replay: string): string {
  const lines: string[] = [];
  const minutes = (history.schedule.durationMs / 60_000).toFixed(1);
  lines.push('');
  lines.push(
    `== chaos: ${history.nodes.length} nodes, ${minutes} min of faults, seed ${history.seed}, ` +
      `${history.faults.length} faults applied`,
  );
  const kinds = new Map<string, number>();
  for (const fault of history.faults) kinds.set(fault.kind, (kinds.get(fault.kind) ?? 0) + 1);
  lines.push(`faults: ${[...kinds].map(([kind, n]) => `${kind} ${n}`).join(', ') || 'none'}`);
  for (const line of formatFigures(result.figures)) lines.push(line);
  if (result.failures.length === 0) {
    lines.push(`PASS (seed ${history.seed})`);
  } else {
    const byKind = new Map<string, number>();
    for (const failure of result.failures) byKind.set(failure.kind, (byKind.get(failure.kind) ?? 0) + 1);
    lines.push(`FAIL (seed ${history.seed}): ${[...byKind].map(([kind, n]) => `${n} ${kind}`).join(', ')}`);
    const shown = result.failures.slice(0, 40);
    for (const failure of shown)
      lines.push(`  FAIL seed ${history.seed} ${failure.kind}: ${failure.message}`);
    if (result.failures.length > shown.length)
      lines.push(`  … and ${result.failures.length - shown.length} more (see history.json)`);
  }
  for (const note of result.notes.slice(0, 10)) lines.push(`  note: ${note}`);
  if (result.notes.length > 10) lines.push(`  … and ${result.notes.length - 10} more notes`);
  lines.push(`replay: ${replay}`);
  return lines.join('\n');
}
