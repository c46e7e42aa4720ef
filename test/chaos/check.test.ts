/**
 * The checker on hand-made histories: a clean one passes; a task run twice at once, an acknowledged task
 * missing at the end, a state or commit index going backwards, a leader elected in a minority, a leader
 * that never steps down, and membership that never converges are each caught — and near misses are not.
 */
import { describe, expect, it } from 'vitest';
import {
  buildRuns,
  certainlyMajority,
  certainlyMinority,
  check,
  parseRunLine,
  type FailureKind,
} from '../../scripts/chaos/check.ts';
import type {
  AppliedFault,
  History,
  MembersObservation,
  RunLine,
  StatusObservation,
  Submission,
  TaskObservation,
} from '../../scripts/chaos/history.ts';

const t0 = 1_000_000;
const nodes = ['n1', 'n2', 'n3'];

function submission(
  nonce: string,
  id: string | null,
  outcome: Submission['outcome'],
  atS: number,
): Submission {
  return {
    nonce,
    via: 'n1',
    restart: true,
    startMs: t0 + atS * 1000,
    endMs: t0 + atS * 1000 + 200,
    outcome,
    id,
    status: outcome === 'ack' ? 201 : outcome === 'refused' ? 503 : null,
    error: outcome === 'refused' ? 'NO_LEADER: no leader' : null,
  };
}

/** The lines one task process writes: S, a heartbeat a second, and E (or nothing when killed). */
function run(
  nonce: string,
  taskId: string,
  node: string,
  pid: number,
  fromS: number,
  toS: number,
  end: 'E' | 'T' | null = 'E',
): RunLine[] {
  const lines: RunLine[] = [{ mark: 'S', nonce, pid, atMs: t0 + fromS * 1000, node, taskId }];
  for (let s = fromS + 1; s <= toS; s++)
    lines.push({ mark: 'H', nonce, pid, atMs: t0 + s * 1000, node, taskId });
  if (end !== null) lines.push({ mark: end, nonce, pid, atMs: t0 + toS * 1000, node, taskId });
  return lines;
}

function status(
  node: string,
  atS: number,
  role: string,
  term: number,
  commitIndex: number,
  life = 1,
): StatusObservation {
  return {
    sentMs: t0 + atS * 1000,
    receivedMs: t0 + atS * 1000 + 5,
    node,
    life,
    role,
    term,
    leader: role === 'leader' ? node : 'n2',
    commitIndex,
    voters: nodes,
    eventLoopStallMsMax: 40,
  };
}

function converged(atS: number): MembersObservation[] {
  return nodes.map((observer) => ({
    atMs: t0 + atS * 1000,
    observer,
    members: nodes.map((name) => ({ name, state: 'alive' })),
  }));
}

function isolation(node: string, fromS: number, toS: number): AppliedFault {
  const others = nodes.filter((n) => n !== node);
  return {
    id: 1,
    kind: 'isolate',
    description: `isolate ${node}`,
    startMs: t0 + fromS * 1000 - 20,
    activeMs: t0 + fromS * 1000,
    healMs: t0 + toS * 1000,
    endMs: t0 + toS * 1000 + 20,
    down: [],
    cuts: others.flatMap((o): [string, string][] => [
      [node, o],
      [o, node],
    ]),
    diskFull: [],
    crashed: [],
    lossProbability: null,
  };
}

/** A clean run: two tasks acknowledged, each ran once, states only move forward, membership converged. */
function cleanHistory(): History {
  return {
    seed: 1234,
    schedule: { seed: 1234, nodes: 3, durationMs: 60_000, faults: [] },
    nodes,
    startMs: t0,
    lastHealMs: t0 + 60_000,
    endMs: t0 + 80_000,
    submissions: [submission('00001', 'aaa', 'ack', 1), submission('00002', 'bbb', 'ack', 2)],
    runLines: [...run('00001', 'aaa', 'n1', 100, 2, 6), ...run('00002', 'bbb', 'n2', 200, 3, 5)],
    taskObservations: [
      {
        atMs: t0 + 1500,
        observer: 'n3',
        life: 1,
        taskId: 'aaa',
        name: 'chaos-00001',
        attempt: 0,
        state: 'pending',
        node: null,
      },
      {
        atMs: t0 + 3000,
        observer: 'n3',
        life: 1,
        taskId: 'aaa',
        name: 'chaos-00001',
        attempt: 0,
        state: 'running',
        node: 'n1',
      },
      {
        atMs: t0 + 7000,
        observer: 'n3',
        life: 1,
        taskId: 'aaa',
        name: 'chaos-00001',
        attempt: 0,
        state: 'finished',
        node: 'n1',
      },
    ],
    statusObservations: [
      status('n2', 1, 'leader', 2, 10),
      status('n2', 2, 'leader', 2, 12),
      status('n1', 2, 'follower', 2, 12),
    ],
    membersObservations: converged(61),
    faults: [],
    exits: [],
    finalTasks: Object.fromEntries(
      nodes.map((n) => [
        n,
        [
          { id: 'aaa', name: 'chaos-00001', state: 'finished', node: 'n1', attempt: 0 },
          { id: 'bbb', name: 'chaos-00002', state: 'finished', node: 'n2', attempt: 0 },
        ],
      ]),
    ),
    finalFrom: 'n2',
    settled: true,
  };
}

function kinds(history: History): FailureKind[] {
  return check(history).failures.map((f) => f.kind);
}

describe('the history checker', () => {
  it('passes a clean history', () => {
    const result = check(cleanHistory());
    expect(result.failures).toEqual([]);
    expect(result.figures).toMatchObject({
      submitted: 2,
      acknowledged: 2,
      lost: 0,
      duplicated: 0,
      convergenceMs: 1000,
    });
  });

  it('catches a task running on two nodes at overlapping times, with the seed-able context', () => {
    const history = cleanHistory();
    // aaa runs on n1 from 2 s to 6 s; a second copy starts on n3 at 5 s while n1 is cut off.
    const duplicated: History = {
      ...history,
      runLines: [...history.runLines, ...run('00001', 'aaa', 'n3', 300, 5, 9)],
      faults: [isolation('n1', 3, 8)],
    };
    const result = check(duplicated);
    expect(result.failures.map((f) => f.kind)).toEqual(['duplicate-run']);
    expect(result.failures[0]?.message).toMatch(
      /task aaa ran on n1 .* and on n3 .* at once for ≥ 1\.0 s; n1 around then: fault 1 \(isolate n1\)/,
    );
    expect(result.figures.duplicated).toBe(1);
  });

  it('accepts a replacement that starts after the first run was last seen, and a restart on the same node', () => {
    const history = cleanHistory();
    const sequential: History = {
      ...history,
      // The first run dies (no end line) at 6 s; the replacement starts at 7 s elsewhere; then again on n2.
      runLines: [
        ...run('00001', 'aaa', 'n1', 100, 2, 6, null),
        ...run('00001', 'aaa', 'n3', 300, 7, 9),
        ...run('00001', 'aaa', 'n3', 301, 10, 11),
        ...run('00002', 'bbb', 'n2', 200, 3, 5),
      ],
    };
    expect(kinds(sequential)).toEqual([]);
  });

  it('catches two overlapping runs of one task on the same node', () => {
    const history = cleanHistory();
    const twice: History = {
      ...history,
      runLines: [...history.runLines, ...run('00001', 'aaa', 'n1', 101, 4, 8)],
    };
    expect(kinds(twice)).toEqual(['duplicate-run']);
  });

  it('catches an acknowledged task missing from the final list, but not a refused one', () => {
    const history = cleanHistory();
    const lost: History = {
      ...history,
      submissions: [
        ...history.submissions,
        submission('00003', 'ccc', 'ack', 3),
        submission('00004', null, 'refused', 4),
        submission('00005', null, 'unknown', 5),
      ],
    };
    const result = check(lost);
    expect(result.failures.map((f) => f.kind)).toEqual(['lost-ack']);
    expect(result.failures[0]?.message).toMatch(
      /task ccc \(00003\) was acknowledged by n1 .* but is not listed by n2/,
    );
    expect(result.figures).toMatchObject({ lost: 1, refused: 1, unknown: 1, ackedNeverStarted: 1 });
  });

  it('fails on a refused submission that was committed anyway (bug 4: the client was told no)', () => {
    const history = cleanHistory();
    const row = { id: 'ddd', name: 'chaos-00004', state: 'finished', node: 'n1', attempt: 0 };
    const committed: History = {
      ...history,
      submissions: [...history.submissions, submission('00004', null, 'refused', 4)],
      finalTasks: Object.fromEntries(
        Object.entries(history.finalTasks).map(([n, rows]) => [n, [...rows, row]]),
      ),
    };
    const result = check(committed);
    expect(result.figures.refusedButCommitted).toBe(1);
    expect(result.failures.map((f) => f.message)).toEqual([
      'submission 00004 through n1 (t+4.0s…t+4.2s) was answered 503 NO_LEADER: no leader, yet task ddd is in the final list (finished on n1)',
    ]);
    expect(result.failures.map((f) => f.kind)).toEqual(['refused-but-committed']);
  });

  it('catches a task state going backwards within one life of an observer', () => {
    const history = cleanHistory();
    const backwards: TaskObservation = {
      atMs: t0 + 8000,
      observer: 'n3',
      life: 1,
      taskId: 'aaa',
      name: 'chaos-00001',
      attempt: 0,
      state: 'running',
      node: 'n1',
    };
    const result = check({ ...history, taskObservations: [...history.taskObservations, backwards] });
    expect(result.failures.map((f) => f.kind)).toEqual(['state-backwards']);
    expect(result.failures[0]?.message).toMatch(
      /n3 listed task aaa as finished \(attempt 0\) at t\+7\.0s, then as running \(attempt 0\) at t\+8\.0s/,
    );
  });

  it('accepts a restart (a higher attempt back to pending) and an observer that restarted', () => {
    const history = cleanHistory();
    const base = history.taskObservations[2]!;
    const fine: History = {
      ...history,
      taskObservations: [
        ...history.taskObservations,
        { ...base, atMs: t0 + 8000, attempt: 1, state: 'pending' },
        // n3 restarted: its new life starts from what its log replays.
        { ...base, atMs: t0 + 9000, life: 2, attempt: 0, state: 'running' },
      ],
    };
    expect(kinds(fine)).toEqual([]);
  });

  it('catches a commit index going backwards in one life and a term going backwards across a restart', () => {
    const history = cleanHistory();
    const commit = check({
      ...history,
      statusObservations: [...history.statusObservations, status('n2', 3, 'leader', 2, 11)],
    });
    expect(commit.failures.map((f) => f.kind)).toEqual(['commit-backwards']);
    // A restart forgets the commit index (fine) but must remember the term.
    const restarted = check({
      ...history,
      statusObservations: [...history.statusObservations, status('n1', 5, 'follower', 1, 0, 2)],
    });
    expect(restarted.failures.map((f) => f.kind)).toEqual(['term-backwards']);
    expect(restarted.failures[0]?.message).toMatch(/after a restart: the term was not persisted/);
  });

  it('catches a leader elected while it could reach only a minority', () => {
    const history = cleanHistory();
    // n1 is isolated from 10 s to 30 s; seen as a term-2 follower at 12 s, as the term-3 leader at 15 s.
    const elected: History = {
      ...history,
      faults: [isolation('n1', 10, 30)],
      statusObservations: [
        ...history.statusObservations,
        status('n1', 12, 'follower', 2, 12),
        status('n1', 15, 'leader', 3, 12),
      ],
    };
    const result = check(elected);
    expect(result.failures.map((f) => f.kind)).toEqual(['minority-leader']);
    expect(result.failures[0]?.message).toMatch(/n1 became leader of term 3 between t\+12\.0s and t\+15\.0s/);
  });

  it('accepts a leader elected before its partition that steps down in time, but not one that keeps leading', () => {
    const history = cleanHistory();
    const before = [status('n1', 5, 'follower', 2, 12), status('n1', 8, 'leader', 3, 12)];
    // Cut off at 10 s; still says leader at 11 s (within the grace), then follower at 12 s.
    const stepsDown: History = {
      ...history,
      faults: [isolation('n1', 10, 30)],
      statusObservations: [
        ...history.statusObservations,
        ...before,
        status('n1', 11, 'leader', 3, 12),
        status('n1', 12, 'follower', 3, 12),
      ],
    };
    expect(kinds(stepsDown)).toEqual([]);
    const stays: History = {
      ...stepsDown,
      statusObservations: [
        ...history.statusObservations,
        ...before,
        status('n1', 11, 'leader', 3, 12),
        status('n1', 20, 'leader', 3, 12),
      ],
    };
    expect(kinds(stays)).toEqual(['stale-leader']);
  });

  it('does not call a leader a minority leader when the partition may already have healed', () => {
    const history = cleanHistory();
    const healed: History = {
      ...history,
      faults: [isolation('n1', 10, 14)],
      statusObservations: [
        ...history.statusObservations,
        status('n1', 12, 'follower', 2, 12),
        status('n1', 15, 'leader', 3, 12),
      ],
    };
    expect(kinds(healed)).toEqual([]);
  });

  it('catches membership that has not converged 30 s after the last heal', () => {
    const history = cleanHistory();
    const split: MembersObservation[] = nodes.map((observer) => ({
      atMs: t0 + 65_000,
      observer,
      members: nodes.map((name) => ({ name, state: observer === 'n3' && name === 'n1' ? 'dead' : 'alive' })),
    }));
    const never = check({
      ...history,
      membersObservations: [
        ...split.filter((o) => o.observer === 'n3'),
        ...converged(62).filter((o) => o.observer !== 'n3'),
      ],
    });
    expect(never.failures.map((f) => f.kind)).toEqual(['not-converged']);
    expect(never.failures[0]?.message).toMatch(/n3 saw n1=dead n2=alive n3=alive/);
    const late = check({ ...history, membersObservations: converged(95) });
    expect(late.failures.map((f) => f.kind)).toEqual(['not-converged']);
    expect(late.failures[0]?.message).toMatch(/took 35\.0 s/);
  });

  it('reports agents that exited on their own, nodes disagreeing at the end, and no leader at the end', () => {
    const history = cleanHistory();
    const exited = check({
      ...history,
      exits: [{ node: 'n2', atMs: t0 + 5000, code: 1, signal: null, logTail: 'ShoalError: boom' }],
    });
    expect(exited.failures.map((f) => f.kind)).toEqual(['agent-exited']);
    expect(exited.failures[0]?.message).toMatch(
      /n2 exited on its own at t\+5\.0s \(code 1\)[\s\S]*ShoalError: boom/,
    );
    const disagree = check({
      ...history,
      finalTasks: {
        ...history.finalTasks,
        n3: [{ id: 'aaa', name: 'chaos-00001', state: 'running', node: 'n1', attempt: 0 }],
      },
    });
    expect(disagree.failures.map((f) => f.kind)).toEqual(['replicas-disagree']);
    expect(disagree.failures[0]?.message).toMatch(/aaa running\/0 vs finished\/0; bbb missing on n3/);
    expect(kinds({ ...history, finalFrom: null })).toEqual(['no-leader-at-end']);
  });

  it('measures the time from a machine crash to the crashed node’s tasks running elsewhere', () => {
    const history = cleanHistory();
    const crash: AppliedFault = {
      ...isolation('n1', 4, 20),
      kind: 'crash',
      description: 'SIGKILL n1 and its tasks',
      cuts: [],
      down: ['n1'],
      crashed: ['n1'],
    };
    const result = check({
      ...history,
      faults: [crash],
      runLines: [
        ...run('00001', 'aaa', 'n1', 100, 2, 4, null),
        ...run('00001', 'aaa', 'n2', 300, 16, 18),
        ...run('00002', 'bbb', 'n2', 200, 3, 5),
      ],
    });
    expect(result.failures).toEqual([]);
    expect(result.figures.failoverMs).toEqual([12_020]);
  });

  it('tells tasks that ran again only on the crashed node from tasks that never ran again', () => {
    const history = cleanHistory();
    const crash: AppliedFault = {
      ...isolation('n1', 4, 20),
      kind: 'crash',
      description: 'SIGKILL n1 and its tasks',
      cuts: [],
      down: ['n1'],
      crashed: ['n1'],
    };
    const result = check({
      ...history,
      submissions: [...history.submissions, submission('00003', 'ccc', 'ack', 1)],
      faults: [crash],
      runLines: [
        // aaa comes back on n1 itself after the restart; ccc never runs again.
        ...run('00001', 'aaa', 'n1', 100, 2, 4, null),
        ...run('00001', 'aaa', 'n1', 400, 22, 24),
        ...run('00002', 'bbb', 'n2', 200, 3, 5),
        ...run('00003', 'ccc', 'n1', 101, 2, 4, null),
      ],
      finalTasks: Object.fromEntries(
        Object.entries(history.finalTasks).map(([n, rows]) => [
          n,
          [...rows, { id: 'ccc', name: 'chaos-00003', state: 'lost', node: 'n1', attempt: 3 }],
        ]),
      ),
    });
    expect(result.failures).toEqual([]);
    expect(result.figures).toMatchObject({ failoverMs: [], failoverSameNode: 1, failoverMissing: 1 });
    expect(result.notes).toEqual([
      'task ccc ran on n1 when fault 1 crashed it at t+4.0s, may restart, and never ran again; at the end it is lost (attempt 3 on n1)',
    ]);
  });

  it('counts submissions made while the node taking them reached a majority', () => {
    const history = cleanHistory();
    // n1 takes every submission; it is cut off from 3 s to 10 s, so the one at 4 s does not count.
    const result = check({
      ...history,
      faults: [isolation('n1', 3, 10)],
      submissions: [
        submission('00001', 'aaa', 'ack', 1),
        submission('00003', null, 'refused', 4),
        submission('00002', 'bbb', 'ack', 12),
      ],
    });
    expect(result.figures.majoritySubmissions).toBe(2);
    expect(result.figures.majorityAccepted).toBe(2);
  });
});

describe('the network model', () => {
  const cut = isolation('n1', 10, 20);
  it('knows when a node certainly could not reach a majority, and when it certainly could', () => {
    expect(certainlyMinority([cut], 'n1', nodes, t0 + 11_000, t0 + 19_000)).toBe(true);
    expect(certainlyMinority([cut], 'n1', nodes, t0 + 9_000, t0 + 19_000)).toBe(false);
    expect(certainlyMinority([cut], 'n2', nodes, t0 + 11_000, t0 + 19_000)).toBe(false);
    expect(certainlyMajority([cut], 'n2', nodes, t0 + 11_000, t0 + 19_000)).toBe(true);
    expect(certainlyMajority([cut], 'n1', nodes, t0 + 1_000, t0 + 9_000)).toBe(true);
    // Straddling the fault's start (even its uncertain edge) is not "certainly connected".
    expect(certainlyMajority([cut], 'n1', nodes, t0 + 9_000, t0 + 9_990)).toBe(false);
  });
});

describe('the runs file', () => {
  it('parses a task’s lines and groups them into runs', () => {
    const dir = '/tmp/shoal-chaos-1-x/nodes/n2/data/tasks/0123abcd4567';
    const lines = [
      `S 00007 4242 ${t0} ${dir}`,
      `H 00007 4242 ${t0 + 1000} ${dir}`,
      `T 00007 4242 ${t0 + 1500} ${dir}`,
      'garbage',
      `S 00007 4242 ${t0 + 5000} ${dir}`,
    ].map(parseRunLine);
    expect(lines[0]).toEqual({
      mark: 'S',
      nonce: '00007',
      pid: 4242,
      atMs: t0,
      node: 'n2',
      taskId: '0123abcd4567',
    });
    expect(lines[3]).toBeNull();
    const runs = buildRuns(lines.filter((l) => l !== null));
    // The same pid starting again is a second run (pid reuse, or a restart on the same node).
    expect(runs.map((r) => [r.startMs - t0, r.lastMs - t0, r.endMark])).toEqual([
      [0, 1500, 'T'],
      [5000, 5000, null],
    ]);
  });
});
