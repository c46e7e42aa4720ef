/**
 * The checker: reads a chaos run's history (plain data, see history.ts) and finds what went wrong, plus
 * the figures the issue asks for. Pure: no clock, no I/O, so tests feed it hand-made histories.
 *
 * Every check errs on the side of not accusing the cluster: a task ran twice only if both runs were seen
 * alive at a common instant; a leader was elected in a minority only if its node could certainly not
 * reach a majority of voters during the whole window in which the election must have happened.
 */
import type {
  AppliedFault,
  History,
  RunLine,
  StatusObservation,
  Submission,
  TaskObservation,
} from './history.ts';

export const failureKinds = [
  'lost-ack',
  'duplicate-run',
  'state-backwards',
  'commit-backwards',
  'term-backwards',
  'minority-leader',
  'stale-leader',
  'not-converged',
  'no-leader-at-end',
  'replicas-disagree',
  'agent-exited',
  /** A submission answered with a refusal (not "outcome unknown") that was committed all the same. */
  'refused-but-committed',
] as const;
export type FailureKind = (typeof failureKinds)[number];

export interface Failure {
  readonly kind: FailureKind;
  readonly message: string;
  /** When it happened (the start of the overlap, the backwards observation…), if it has a time. */
  readonly atMs: number | null;
}

export interface CheckOptions {
  /** Membership must agree that every node is alive within this long of the last heal. */
  readonly convergenceMsMax: number;
  /** A leader cut off from a majority must step down within this long (check-quorum plus slack). */
  readonly leaderStepDownMsMax: number;
  /** How often tasks write a heartbeat line: a run is taken to be alive up to this long after its last line. */
  readonly heartbeatMs: number;
}

export const defaultCheckOptions: CheckOptions = {
  convergenceMsMax: 30_000,
  leaderStepDownMsMax: 5_000,
  heartbeatMs: 1_000,
};

/** One process of one task on one node, from its first to its last line in the runs file. */
export interface Run {
  readonly taskId: string;
  readonly nonce: string;
  readonly node: string;
  readonly pid: number;
  readonly startMs: number;
  /** The last line it wrote: it was certainly alive until then. */
  readonly lastMs: number;
  /** When it wrote its end line (E or T); null if it died without one (SIGKILL) or still ran. */
  readonly endMs: number | null;
  readonly endMark: 'E' | 'T' | null;
}

export interface Duplicate {
  readonly taskId: string;
  readonly first: Run;
  readonly second: Run;
  readonly overlapMs: number;
  /** What the fault schedule was doing to the first run's node while both ran. */
  readonly context: string;
}

export interface Figures {
  readonly submitted: number;
  readonly acknowledged: number;
  readonly refused: number;
  readonly undelivered: number;
  readonly unknown: number;
  /** Refused (an error answer) and yet in the cluster's final list. */
  readonly refusedButCommitted: number;
  /** Unknown outcome, found in the final list. */
  readonly unknownButCommitted: number;
  readonly lost: number;
  readonly duplicated: number;
  /** Acknowledged tasks no node ever started. */
  readonly ackedNeverStarted: number;
  /** Per machine crash: how long until each task that ran there (and may restart) ran elsewhere. */
  readonly failoverMs: readonly number[];
  /** Tasks that ran on a crashed node and may restart, which ran again only on that node once it was back. */
  readonly failoverSameNode: number;
  /** Tasks that ran on a crashed node and may restart, which never ran again anywhere. */
  readonly failoverMissing: number;
  /** Submissions through a node that certainly reached a majority of voters for the whole request. */
  readonly majoritySubmissions: number;
  readonly majorityAccepted: number;
  readonly leaderTerms: number;
  /** New leader terms first seen after the last heal, in a cluster with nothing wrong: flapping. */
  readonly leaderChangesAfterHeal: number;
  /** The longest event-loop stall any agent reported (its Raft ticks were late by this much). */
  readonly eventLoopStallMsMax: number | null;
  /** From the last heal until every node saw every node alive; null if that never happened. */
  readonly convergenceMs: number | null;
  readonly refusedByCode: Readonly<Record<string, number>>;
}

export interface CheckResult {
  readonly failures: readonly Failure[];
  readonly figures: Figures;
  readonly duplicates: readonly Duplicate[];
  /** Worth a look but not a failure of the checks: e.g. an error answer for a task that was committed. */
  readonly notes: readonly string[];
}

// ---- runs -------------------------------------------------------------------------------------------

/** Groups the runs file's lines into runs: one per (node, task, pid), a new S starting a new one. */
export function buildRuns(lines: readonly RunLine[]): Run[] {
  const byProcess = new Map<string, RunLine[]>();
  for (const line of lines) {
    const key = `${line.node}\u0000${line.taskId}\u0000${line.pid}`;
    const group = byProcess.get(key);
    if (group) group.push(line);
    else byProcess.set(key, [line]);
  }
  const runs: Run[] = [];
  for (const group of byProcess.values()) {
    group.sort((a, b) => a.atMs - b.atMs || markOrder(a.mark) - markOrder(b.mark));
    let current: RunLine[] = [];
    const flush = (): void => {
      const first = current[0];
      const last = current[current.length - 1];
      if (first === undefined || last === undefined) return;
      const end = current.find((line) => line.mark === 'E' || line.mark === 'T');
      runs.push({
        taskId: first.taskId,
        nonce: first.nonce,
        node: first.node,
        pid: first.pid,
        startMs: first.atMs,
        lastMs: last.atMs,
        endMs: end?.atMs ?? null,
        endMark: end?.mark === 'E' || end?.mark === 'T' ? end.mark : null,
      });
    };
    for (const line of group) {
      // A pid reused by a later run of the same task on the same node starts a new run.
      if (line.mark === 'S' && current.length > 0) {
        flush();
        current = [];
      }
      current.push(line);
    }
    flush();
  }
  return runs.sort((a, b) => a.startMs - b.startMs);
}

function markOrder(mark: RunLine['mark']): number {
  return mark === 'S' ? 0 : mark === 'H' ? 1 : 2;
}

/** Parses one line of the runs file: `MARK NONCE PID MILLIS DIR`; DIR is …/nodes/NODE/data/tasks/TASK. */
export function parseRunLine(text: string): RunLine | null {
  const match = /^([SHET]) (\S+) (\d+) (\d+) (.*)$/.exec(text.trim());
  if (!match) return null;
  const [, mark, nonce, pid, atMs, dir] = match;
  const where = /\/nodes\/([^/]+)\/data\/tasks\/([^/]+)\/?$/.exec(dir ?? '');
  if (!where || mark === undefined || nonce === undefined || where[1] === undefined || where[2] === undefined)
    return null;
  return {
    mark: mark as RunLine['mark'],
    nonce,
    pid: Number(pid),
    atMs: Number(atMs),
    node: where[1],
    taskId: where[2],
  };
}

// ---- the network as the faults left it --------------------------------------------------------------

type Certainty = 'certain' | 'possible';

function inForce(fault: AppliedFault, atMs: number, certainty: Certainty): boolean {
  return certainty === 'certain'
    ? fault.activeMs <= atMs && atMs <= fault.healMs
    : fault.startMs <= atMs && atMs <= fault.endMs;
}

/** Whether a and b could not exchange packets at atMs (a node down, or a cut either way). */
function cutOff(
  faults: readonly AppliedFault[],
  a: string,
  b: string,
  atMs: number,
  certainty: Certainty,
): boolean {
  for (const fault of faults) {
    if (!inForce(fault, atMs, certainty)) continue;
    if (fault.down.includes(a) || fault.down.includes(b)) return true;
    for (const [from, to] of fault.cuts)
      if ((from === a && to === b) || (from === b && to === a)) return true;
  }
  return false;
}

function down(faults: readonly AppliedFault[], node: string, atMs: number, certainty: Certainty): boolean {
  return faults.some((fault) => inForce(fault, atMs, certainty) && fault.down.includes(node));
}

function majorityOf(count: number): number {
  return Math.floor(count / 2) + 1;
}

/** Voters `node` can exchange messages with at atMs, itself included when it is a voter and up. */
function reachableVoters(
  faults: readonly AppliedFault[],
  node: string,
  voters: readonly string[],
  atMs: number,
  certainty: Certainty,
): number {
  let count = 0;
  for (const voter of voters) {
    if (voter === node) {
      if (!down(faults, node, atMs, certainty)) count++;
    } else if (!cutOff(faults, node, voter, atMs, certainty)) count++;
  }
  return count;
}

/** Instants at which the fault picture may change inside [fromMs, toMs], plus the ends and midpoints. */
function probeTimes(faults: readonly AppliedFault[], fromMs: number, toMs: number): number[] {
  const edges = new Set<number>([fromMs, toMs]);
  for (const fault of faults)
    for (const t of [fault.startMs, fault.activeMs, fault.healMs, fault.endMs])
      if (t > fromMs && t < toMs) edges.add(t);
  const sortedEdges = [...edges].sort((a, b) => a - b);
  const times: number[] = [];
  for (let i = 0; i < sortedEdges.length; i++) {
    const t = sortedEdges[i];
    const next = sortedEdges[i + 1];
    if (t === undefined) continue;
    times.push(t);
    if (next !== undefined) times.push((t + next) / 2);
  }
  return times;
}

/**
 * Whether `node` certainly reached fewer than a majority of `voters` at every instant of [fromMs, toMs]:
 * only cuts certainly in force count, so every link that was possibly up is taken to be up.
 */
export function certainlyMinority(
  faults: readonly AppliedFault[],
  node: string,
  voters: readonly string[],
  fromMs: number,
  toMs: number,
): boolean {
  if (voters.length === 0 || toMs < fromMs) return false;
  return probeTimes(faults, fromMs, toMs).every(
    (t) => reachableVoters(faults, node, voters, t, 'certain') < majorityOf(voters.length),
  );
}

/** Whether `node` certainly reached a majority of `voters` (no fault possibly in force between them) throughout. */
export function certainlyMajority(
  faults: readonly AppliedFault[],
  node: string,
  voters: readonly string[],
  fromMs: number,
  toMs: number,
): boolean {
  if (voters.length === 0) return false;
  const relevant = faults.filter((f) => f.startMs <= toMs && f.endMs >= fromMs);
  return probeTimes(relevant, fromMs, toMs).every((t) => {
    if (down(relevant, node, t, 'possible')) return false;
    let count = 0;
    for (const voter of voters) {
      const full = relevant.some((f) => inForce(f, t, 'possible') && f.diskFull.includes(voter));
      if (full) continue;
      if (voter === node || !cutOff(relevant, node, voter, t, 'possible')) count++;
    }
    return count >= majorityOf(voters.length);
  });
}

// ---- the checks -------------------------------------------------------------------------------------

export function check(history: History, options: CheckOptions = defaultCheckOptions): CheckResult {
  const failures: Failure[] = [];
  const runs = buildRuns(history.runLines);
  const duplicates = findDuplicates(runs, history.faults);
  for (const duplicate of duplicates) {
    failures.push({
      kind: 'duplicate-run',
      atMs: duplicate.second.startMs,
      message:
        `task ${duplicate.taskId} ran on ${duplicate.first.node} (pid ${duplicate.first.pid}, ${span(duplicate.first, history.startMs)}) ` +
        `and on ${duplicate.second.node} (pid ${duplicate.second.pid}, ${span(duplicate.second, history.startMs)}) ` +
        `at once for ≥ ${seconds(duplicate.overlapMs)}; ${duplicate.context}`,
    });
  }

  const lost = checkLostAcks(history, failures);
  checkStatesForward(history.taskObservations, history.startMs, failures);
  checkStatus(history.statusObservations, history.startMs, failures);
  checkLeaders(history, options, failures);
  const convergenceMs = checkConvergence(history, options, failures);
  checkFinalAgreement(history, failures);
  for (const message of refusedButCommitted(history)) {
    failures.push({ kind: 'refused-but-committed', atMs: null, message });
  }
  for (const exit of history.exits) {
    failures.push({
      kind: 'agent-exited',
      atMs: exit.atMs,
      message:
        `${exit.node} exited on its own at ${at(exit.atMs, history.startMs)} ` +
        `(${exit.code === null ? `signal ${exit.signal ?? '?'}` : `code ${exit.code}`}); its log ends:\n${indent(exit.logTail)}`,
    });
  }

  return {
    failures: failures.sort((a, b) => (a.atMs ?? Infinity) - (b.atMs ?? Infinity)),
    duplicates,
    figures: figures(history, runs, duplicates, lost, convergenceMs),
    notes: neverAgain(history, runs),
  };
}

/** Restartable tasks a machine crash stopped that never ran again, with what the cluster says of them. */
function neverAgain(history: History, runs: readonly Run[]): string[] {
  const rows = new Map<string, { state: string; attempt: number; node: string | null }>();
  for (const list of Object.values(history.finalTasks)) for (const row of list) rows.set(row.id, row);
  return failover(history, runs).missing.map(({ taskId, fault }) => {
    const row = rows.get(taskId);
    return (
      `task ${taskId} ran on ${fault.crashed.join(',')} when fault ${fault.id} crashed it at ${at(fault.startMs, history.startMs)}, ` +
      `may restart, and never ran again; at the end it is ` +
      (row
        ? `${row.state} (attempt ${row.attempt}${row.node === null ? '' : ` on ${row.node}`})`
        : 'not listed')
    );
  });
}

/** Submissions answered with an error whose task is in the final list all the same. */
function refusedButCommitted(history: History): string[] {
  const rows = new Map<string, { id: string; state: string; node: string | null }>();
  for (const list of Object.values(history.finalTasks)) for (const row of list) rows.set(row.name, row);
  const notes: string[] = [];
  for (const submission of history.submissions) {
    const row = rows.get(taskName(submission.nonce));
    if (submission.outcome !== 'refused' || !row) continue;
    notes.push(
      `submission ${submission.nonce} through ${submission.via} (${at(submission.startMs, history.startMs)}…` +
        `${at(submission.endMs, history.startMs)}) was answered ${submission.status ?? '?'} ${submission.error ?? ''}, ` +
        `yet task ${row.id} is in the final list (${row.state}${row.node === null ? '' : ` on ${row.node}`})`,
    );
  }
  return notes;
}

export function findDuplicates(runs: readonly Run[], faults: readonly AppliedFault[]): Duplicate[] {
  const byTask = new Map<string, Run[]>();
  for (const run of runs) {
    const list = byTask.get(run.taskId);
    if (list) list.push(run);
    else byTask.set(run.taskId, [run]);
  }
  const duplicates: Duplicate[] = [];
  for (const [taskId, list] of byTask) {
    list.sort((a, b) => a.startMs - b.startMs);
    for (let i = 0; i < list.length; i++) {
      for (let j = i + 1; j < list.length; j++) {
        const first = list[i];
        const second = list[j];
        if (first === undefined || second === undefined) continue;
        // Both certainly alive at a common instant: the later start falls within the earlier run's seen life.
        if (second.startMs > first.lastMs) continue;
        const overlapMs = Math.min(first.lastMs, second.lastMs) - second.startMs;
        duplicates.push({
          taskId,
          first,
          second,
          overlapMs,
          context: describeContext(faults, first.node, second.startMs, Math.min(first.lastMs, second.lastMs)),
        });
        break; // one report per earlier run is enough
      }
    }
  }
  return duplicates.sort((a, b) => a.second.startMs - b.second.startMs);
}

function describeContext(
  faults: readonly AppliedFault[],
  node: string,
  fromMs: number,
  toMs: number,
): string {
  const involved = faults.filter(
    (f) =>
      f.startMs <= toMs &&
      // Recent enough to matter: a lease (10 s) plus the leader's grace ago.
      f.endMs + 15_000 >= fromMs &&
      (f.down.includes(node) ||
        f.cuts.some(([a, b]) => a === node || b === node) ||
        f.diskFull.includes(node)),
  );
  if (involved.length === 0) return `no fault touched ${node} around then`;
  return `${node} around then: ${involved.map((f) => `fault ${f.id} (${f.description})`).join('; ')}`;
}

function checkLostAcks(history: History, failures: Failure[]): number {
  const listed = new Set<string>();
  const sources =
    history.finalFrom !== null
      ? [history.finalTasks[history.finalFrom] ?? []]
      : Object.values(history.finalTasks);
  for (const rows of sources) for (const row of rows) listed.add(row.id);
  let lost = 0;
  for (const submission of history.submissions) {
    if (submission.outcome !== 'ack' || submission.id === null) continue;
    if (listed.has(submission.id)) continue;
    lost++;
    failures.push({
      kind: 'lost-ack',
      atMs: submission.endMs,
      message:
        `task ${submission.id} (${submission.nonce}) was acknowledged by ${submission.via} at ` +
        `${at(submission.endMs, history.startMs)} but is not listed by ${history.finalFrom ?? 'any node'} at the end`,
    });
  }
  return lost;
}

const stateRank: Readonly<Record<string, number>> = {
  pending: 0,
  assigned: 1,
  starting: 2,
  running: 3,
  finished: 4,
  failed: 4,
  killed: 4,
  lost: 4,
};

/** Within one life of one observer, a task's (attempt, state) only moves forward. */
export function checkStatesForward(
  observations: readonly TaskObservation[],
  startMs: number,
  failures: Failure[],
): void {
  const last = new Map<string, TaskObservation>();
  const ordered = [...observations].sort((a, b) => a.atMs - b.atMs);
  for (const observation of ordered) {
    const key = `${observation.observer}\u0000${observation.life}\u0000${observation.taskId}`;
    const previous = last.get(key);
    last.set(key, observation);
    if (!previous) continue;
    const before = previous.attempt * 10 + (stateRank[previous.state] ?? 0);
    const now = observation.attempt * 10 + (stateRank[observation.state] ?? 0);
    if (now < before) {
      failures.push({
        kind: 'state-backwards',
        atMs: observation.atMs,
        message:
          `${observation.observer} listed task ${observation.taskId} as ${previous.state} (attempt ${previous.attempt}) ` +
          `at ${at(previous.atMs, startMs)}, then as ${observation.state} (attempt ${observation.attempt}) at ${at(observation.atMs, startMs)}`,
      });
    }
  }
}

/** Commit index never decreases within a life; the term never decreases, restarts included (it is persisted). */
export function checkStatus(
  observations: readonly StatusObservation[],
  startMs: number,
  failures: Failure[],
): void {
  const lastCommit = new Map<string, StatusObservation>();
  const lastTerm = new Map<string, StatusObservation>();
  const ordered = [...observations].sort((a, b) => a.sentMs - b.sentMs);
  for (const observation of ordered) {
    const lifeKey = `${observation.node}\u0000${observation.life}`;
    const previous = lastCommit.get(lifeKey);
    if (previous && observation.commitIndex < previous.commitIndex) {
      failures.push({
        kind: 'commit-backwards',
        atMs: observation.sentMs,
        message:
          `${observation.node} reported commit index ${previous.commitIndex} at ${at(previous.sentMs, startMs)}, ` +
          `then ${observation.commitIndex} at ${at(observation.sentMs, startMs)} (same process)`,
      });
    }
    lastCommit.set(lifeKey, observation);
    const previousTerm = lastTerm.get(observation.node);
    if (previousTerm && observation.term < previousTerm.term) {
      failures.push({
        kind: 'term-backwards',
        atMs: observation.sentMs,
        message:
          `${observation.node} reported term ${previousTerm.term} at ${at(previousTerm.sentMs, startMs)}, ` +
          `then term ${observation.term} at ${at(observation.sentMs, startMs)}${previousTerm.life === observation.life ? '' : ' (after a restart: the term was not persisted)'}`,
      });
    }
    lastTerm.set(observation.node, observation);
  }
}

function checkLeaders(history: History, options: CheckOptions, failures: Failure[]): void {
  const byNode = new Map<string, StatusObservation[]>();
  for (const observation of [...history.statusObservations].sort((a, b) => a.sentMs - b.sentMs)) {
    const list = byNode.get(observation.node);
    if (list) list.push(observation);
    else byNode.set(observation.node, [observation]);
  }
  const reportedElected = new Set<string>();
  const reportedStale = new Set<string>();
  for (const [node, list] of byNode) {
    for (let i = 0; i < list.length; i++) {
      const observation = list[i];
      if (observation?.role !== 'leader') continue;
      const termKey = `${node}\u0000${observation.term}`;
      // Elected in a minority: it was at an older term when an earlier poll was answered, and from that
      // poll until it said "leader" it could certainly not reach a majority of voters.
      let before: StatusObservation | undefined;
      for (let j = i - 1; j >= 0; j--) {
        const candidate = list[j];
        if (candidate && candidate.term < observation.term) {
          before = candidate;
          break;
        }
      }
      if (before && !reportedElected.has(termKey)) {
        const voterSets = [observation.voters, before.voters].filter((voters) => voters.length > 0);
        const minority =
          voterSets.length > 0 &&
          voterSets.every((voters) =>
            certainlyMinority(history.faults, node, voters, before.sentMs, observation.receivedMs),
          );
        if (minority) {
          reportedElected.add(termKey);
          failures.push({
            kind: 'minority-leader',
            atMs: observation.receivedMs,
            message:
              `${node} became leader of term ${observation.term} between ${at(before.sentMs, history.startMs)} and ` +
              `${at(observation.receivedMs, history.startMs)}, while it could reach fewer than a majority of the voters ` +
              `(${observation.voters.join(',')}) the whole time`,
          });
        }
      }
      // Still leading long after it lost its majority: check-quorum should have made it step down.
      if (
        !reportedStale.has(termKey) &&
        !reportedElected.has(termKey) &&
        certainlyMinority(
          history.faults,
          node,
          observation.voters,
          observation.sentMs - options.leaderStepDownMsMax,
          observation.receivedMs,
        )
      ) {
        reportedStale.add(termKey);
        failures.push({
          kind: 'stale-leader',
          atMs: observation.receivedMs,
          message:
            `${node} still said it led term ${observation.term} at ${at(observation.receivedMs, history.startMs)}, ` +
            `after ≥ ${seconds(options.leaderStepDownMsMax)} unable to reach a majority of the voters (${observation.voters.join(',')})`,
        });
      }
    }
  }
}

function checkConvergence(history: History, options: CheckOptions, failures: Failure[]): number | null {
  let convergedMs = history.lastHealMs;
  const lastSeen: string[] = [];
  for (const node of history.nodes) {
    const seen = history.membersObservations.filter(
      (o) => o.observer === node && o.atMs >= history.lastHealMs,
    );
    const whole = seen.find((o) =>
      history.nodes.every((name) => o.members.some((m) => m.name === name && m.state === 'alive')),
    );
    if (whole) {
      convergedMs = Math.max(convergedMs, whole.atMs);
      continue;
    }
    convergedMs = Infinity;
    const latest = seen[seen.length - 1];
    lastSeen.push(
      latest
        ? `${node} saw ${latest.members.map((m) => `${m.name}=${m.state}`).join(' ')} (${history.nodes.filter((n) => !latest.members.some((m) => m.name === n)).join(',') || 'nobody'} missing)`
        : `${node} never answered`,
    );
  }
  const tookMs = convergedMs === Infinity ? null : convergedMs - history.lastHealMs;
  if (tookMs === null || tookMs > options.convergenceMsMax) {
    failures.push({
      kind: 'not-converged',
      atMs: history.lastHealMs + options.convergenceMsMax,
      message:
        tookMs === null
          ? `membership had not converged when the run ended, ${seconds(history.endMs - history.lastHealMs)} after the last heal: ${lastSeen.join('; ')}`
          : `membership took ${seconds(tookMs)} after the last heal to converge (limit ${seconds(options.convergenceMsMax)})`,
    });
  }
  return tookMs;
}

function checkFinalAgreement(history: History, failures: Failure[]): void {
  if (history.finalFrom === null) {
    failures.push({
      kind: 'no-leader-at-end',
      atMs: history.endMs,
      message: 'the nodes did not agree on a leader after every fault had healed',
    });
    return;
  }
  if (!history.settled) return;
  const reference = new Map((history.finalTasks[history.finalFrom] ?? []).map((row) => [row.id, row]));
  for (const [node, rows] of Object.entries(history.finalTasks)) {
    if (node === history.finalFrom) continue;
    const differences: string[] = [];
    const seen = new Set<string>();
    for (const row of rows) {
      seen.add(row.id);
      const expected = reference.get(row.id);
      if (!expected) differences.push(`${row.id} only on ${node}`);
      else if (expected.state !== row.state || expected.attempt !== row.attempt)
        differences.push(`${row.id} ${row.state}/${row.attempt} vs ${expected.state}/${expected.attempt}`);
    }
    for (const id of reference.keys()) if (!seen.has(id)) differences.push(`${id} missing on ${node}`);
    if (differences.length > 0) {
      failures.push({
        kind: 'replicas-disagree',
        atMs: history.endMs,
        message: `${node}'s final task list differs from ${history.finalFrom}'s: ${differences.slice(0, 5).join('; ')}${differences.length > 5 ? ` and ${differences.length - 5} more` : ''}`,
      });
    }
  }
}

// ---- figures ----------------------------------------------------------------------------------------

function figures(
  history: History,
  runs: readonly Run[],
  duplicates: readonly Duplicate[],
  lost: number,
  convergenceMs: number | null,
): Figures {
  const finalNames = new Set<string>();
  for (const rows of Object.values(history.finalTasks)) for (const row of rows) finalNames.add(row.name);
  const count = (outcome: Submission['outcome']): number =>
    history.submissions.filter((s) => s.outcome === outcome).length;
  const started = new Set(runs.map((run) => run.taskId));
  const refusedByCode: Record<string, number> = {};
  for (const submission of history.submissions) {
    if (submission.outcome !== 'refused') continue;
    const code = /^[A-Z_]+/.exec(submission.error ?? '')?.[0] ?? `HTTP ${submission.status ?? '?'}`;
    refusedByCode[code] = (refusedByCode[code] ?? 0) + 1;
  }
  const { failoverMs, failoverSameNode, failoverMissing } = failover(history, runs);
  let majoritySubmissions = 0;
  let majorityAccepted = 0;
  for (const submission of history.submissions) {
    const voters = votersAt(history.statusObservations, submission.startMs, history.nodes);
    if (!certainlyMajority(history.faults, submission.via, voters, submission.startMs, submission.endMs))
      continue;
    majoritySubmissions++;
    if (submission.outcome === 'ack') majorityAccepted++;
  }
  const leaderObservations = history.statusObservations.filter((o) => o.role === 'leader');
  const terms = new Set(leaderObservations.map((o) => o.term));
  const termBeforeHeal = Math.max(
    0,
    ...leaderObservations.filter((o) => o.receivedMs <= history.lastHealMs).map((o) => o.term),
  );
  const termsAfterHeal = new Set(
    leaderObservations
      .filter((o) => o.sentMs > history.lastHealMs && o.term > termBeforeHeal)
      .map((o) => o.term),
  );
  const stalls = unpausedStalls(history);
  return {
    submitted: history.submissions.length,
    acknowledged: count('ack'),
    refused: count('refused'),
    undelivered: count('undelivered'),
    unknown: count('unknown'),
    refusedButCommitted: history.submissions.filter(
      (s) => s.outcome === 'refused' && finalNames.has(taskName(s.nonce)),
    ).length,
    unknownButCommitted: history.submissions.filter(
      (s) => s.outcome === 'unknown' && finalNames.has(taskName(s.nonce)),
    ).length,
    lost,
    duplicated: new Set(duplicates.map((d) => d.taskId)).size,
    ackedNeverStarted: history.submissions.filter(
      (s) => s.outcome === 'ack' && s.id !== null && !started.has(s.id),
    ).length,
    failoverMs,
    failoverSameNode,
    failoverMissing,
    majoritySubmissions,
    majorityAccepted,
    leaderTerms: terms.size,
    leaderChangesAfterHeal: termsAfterHeal.size,
    eventLoopStallMsMax: stalls.length === 0 ? null : Math.max(...stalls),
    convergenceMs,
    refusedByCode,
  };
}

/**
 * Stalls the agents reported, leaving out every process that was SIGSTOPped before it answered: a pause
 * shows as a stall as long as the pause, for the rest of that process's life.
 */
function unpausedStalls(history: History): number[] {
  const firstSeen = new Map<string, number>();
  for (const o of history.statusObservations) {
    const key = `${o.node}\u0000${o.life}`;
    firstSeen.set(key, Math.min(firstSeen.get(key) ?? Infinity, o.sentMs));
  }
  const pauses = history.faults.filter((f) => f.kind === 'pause');
  return history.statusObservations.flatMap((o) => {
    if (o.eventLoopStallMsMax === null) return [];
    const bornMs = firstSeen.get(`${o.node}\u0000${o.life}`) ?? o.sentMs;
    const paused = pauses.some(
      (p) => p.down.includes(o.node) && p.startMs >= bornMs - 1_000 && p.startMs <= o.sentMs,
    );
    return paused ? [] : [o.eventLoopStallMsMax];
  });
}

export function taskName(nonce: string): string {
  return `chaos-${nonce}`;
}

/** The voters the most recent leader reported before atMs; every node before any leader was seen. */
function votersAt(
  observations: readonly StatusObservation[],
  atMs: number,
  nodes: readonly string[],
): readonly string[] {
  let best: StatusObservation | null = null;
  for (const observation of observations) {
    if (observation.role !== 'leader' || observation.voters.length === 0 || observation.receivedMs > atMs)
      continue;
    if (best === null || observation.receivedMs > best.receivedMs) best = observation;
  }
  return best?.voters ?? nodes;
}

/** For each machine crash: the tasks running there that may restart, and when each next ran elsewhere. */
interface Failover {
  readonly failoverMs: number[];
  readonly failoverSameNode: number;
  readonly failoverMissing: number;
  /** Task ids that never ran again, with the crash that stopped them. */
  readonly missing: { readonly taskId: string; readonly fault: AppliedFault }[];
}

function failover(history: History, runs: readonly Run[]): Failover {
  const restartable = new Set(history.submissions.filter((s) => s.restart).map((s) => s.nonce));
  const failoverMs: number[] = [];
  let failoverSameNode = 0;
  const missing: { taskId: string; fault: AppliedFault }[] = [];
  for (const fault of history.faults) {
    for (const node of fault.crashed) {
      const victims = runs.filter(
        (run) =>
          run.node === node &&
          restartable.has(run.nonce) &&
          run.startMs <= fault.startMs &&
          // Killed by the crash: no end line at all (one that wrote E finished its work, even mid-crash).
          run.endMark === null &&
          // Alive at the crash: its last heartbeat is recent enough (it writes one per second).
          run.lastMs >= fault.startMs - 2_000,
      );
      const seen = new Set<string>();
      for (const victim of victims) {
        if (seen.has(victim.taskId)) continue;
        seen.add(victim.taskId);
        const later = runs.filter((run) => run.taskId === victim.taskId && run.startMs > fault.startMs);
        const elsewhere = later.find((run) => run.node !== node);
        if (elsewhere) failoverMs.push(elsewhere.startMs - fault.startMs);
        else if (later.length > 0) failoverSameNode++;
        else missing.push({ taskId: victim.taskId, fault });
      }
    }
  }
  return {
    failoverMs: failoverMs.sort((a, b) => a - b),
    failoverSameNode,
    failoverMissing: missing.length,
    missing,
  };
}

// ---- formatting -------------------------------------------------------------------------------------

function at(ms: number, startMs: number): string {
  return `t+${((ms - startMs) / 1000).toFixed(1)}s`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function span(run: Run, startMs: number): string {
  return `${at(run.startMs, startMs)}…${at(run.lastMs, startMs)}${run.endMark === null ? ' (no end line)' : ''}`;
}

function indent(text: string): string {
  return text
    .split('\n')
    .map((line) => `    ${line}`)
    .join('\n');
}
