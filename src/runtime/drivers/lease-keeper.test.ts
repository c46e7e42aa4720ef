import { describe, expect, it } from 'vitest';
import {
  engineGoneExitMs,
  guardedContainers,
  guardedFilter,
  idleDecision,
  idleListIntervalMs,
  killedForLease,
  leaseLookDelayMs,
  leaseOver,
  parseKeeperConfig,
  parseKeeperPid,
  parseLeaseKill,
  type LeaseKillRecord,
} from './lease-keeper.ts';

const id = (digit: string): string => digit.repeat(64);
const labels = (node: string, extra: Record<string, string> = {}): Record<string, string> => ({
  'io.shoal.managed': 'true',
  'io.shoal.lease': 'true',
  'io.shoal.node': node,
  'io.shoal.task': `task-${node}`,
  ...extra,
});

describe('the lease', () => {
  it('is over only once more than the lease has passed since the last confirmation', () => {
    expect(leaseOver(1000, 10_000, 11_000)).toBe(false);
    expect(leaseOver(1000, 10_000, 11_001)).toBe(true);
  });

  it('is looked at just after it would end, never on a fast tick, at most 10 s apart', () => {
    // Renewed at 1000, lease 10 s: the next look is 1 ms past 11 000.
    expect(leaseLookDelayMs(1000, 10_000, 2000)).toBe(9001);
    // A file time in the future (a clock that moved back) does not put the look off for longer.
    expect(leaseLookDelayMs(100_000, 10_000, 2000)).toBe(10_000);
    // Right at the end: soon, but not in a busy loop.
    expect(leaseLookDelayMs(1000, 10_000, 11_000)).toBe(20);
    // Over: once a second, for a renewal or a container that still runs.
    expect(leaseLookDelayMs(1000, 10_000, 20_000)).toBe(1000);
  });
});

describe('idleness', () => {
  it('lists containers a quarter of the idle time apart, within bounds', () => {
    expect(idleListIntervalMs(60_000)).toBe(15_000);
    expect(idleListIntervalMs(4000)).toBe(1000);
    expect(idleListIntervalMs(100)).toBe(250);
    expect(idleListIntervalMs(3_600_000)).toBe(15_000);
  });

  it('exits once no container was seen for the idle time, with an engine that answers', () => {
    const view = { nowMs: 70_000, idleExitMs: 60_000, guardedSeenMs: 10_000, engineFailingSinceMs: null };
    expect(idleDecision(view)).toEqual({ type: 'exit', why: 'no container to guard for 60 s' });
    expect(idleDecision({ ...view, guardedSeenMs: 10_001 })).toEqual({ type: 'stay' });
  });

  it('stays while the engine does not answer, up to engineGoneExitMs', () => {
    const view = { nowMs: 700_000, idleExitMs: 60_000, guardedSeenMs: 0, engineFailingSinceMs: 600_000 };
    expect(idleDecision(view)).toEqual({ type: 'stay' });
    expect(idleDecision({ ...view, nowMs: 600_000 + engineGoneExitMs })).toEqual({
      type: 'exit',
      why: 'the engine has not answered for 600 s',
    });
  });
});

describe('which containers to kill', () => {
  it("takes the running, paused and restarting leased containers of this node's and nothing else", () => {
    const listing = [
      { Id: id('a'), State: 'running', Labels: labels('n1') },
      { Id: id('b'), State: 'paused', Labels: labels('n1') },
      { Id: id('c'), State: 'restarting', Labels: labels('n1') },
      { Id: id('d'), State: 'exited', Labels: labels('n1') },
      // Another node's on the same engine.
      { Id: id('e'), State: 'running', Labels: labels('n2') },
      // `--on-disconnect keep`: no lease label.
      { Id: id('f'), State: 'running', Labels: { ...labels('n1'), 'io.shoal.lease': 'false' } },
      // Not shoal's.
      { Id: id('0'), State: 'running', Labels: { 'io.shoal.node': 'n1', 'io.shoal.lease': 'true' } },
    ];
    expect(guardedContainers(listing, 'n1')).toEqual([
      { id: id('a'), taskId: 'task-n1' },
      { id: id('b'), taskId: 'task-n1' },
      { id: id('c'), taskId: 'task-n1' },
    ]);
  });

  it('skips what is not a well-formed entry, and keeps no task id that cannot name a file', () => {
    const listing = [
      null,
      'x',
      { Id: 'not-hex/../..', State: 'running', Labels: labels('n1') },
      { Id: id('a'), State: 'running', Labels: null },
      { Id: id('a'), State: 7, Labels: labels('n1') },
      { Id: id('b'), State: 'running', Labels: labels('n1', { 'io.shoal.task': '../etc/passwd' }) },
    ];
    expect(guardedContainers(listing, 'n1')).toEqual([{ id: id('b'), taskId: null }]);
    expect(guardedContainers({ message: 'page not found' }, 'n1')).toEqual([]);
    expect(guardedContainers(null, 'n1')).toEqual([]);
  });

  it('asks the engine for the three labels', () => {
    expect(JSON.parse(guardedFilter('n1'))).toEqual({
      label: ['io.shoal.managed=true', 'io.shoal.lease=true', 'io.shoal.node=n1'],
    });
  });
});

describe('a kill record', () => {
  const record: LeaseKillRecord = {
    taskId: 't',
    containerId: id('a'),
    state: 'killed',
    leaseConfirmedMs: 1,
    atMs: 2,
  };

  it('answers for its own container only', () => {
    expect(killedForLease(record, id('a'), 137)).toBe(true);
    expect(killedForLease(record, id('b'), 137)).toBe(false);
    expect(killedForLease(null, id('a'), 137)).toBe(false);
  });

  it('under way counts only when the container died of SIGKILL', () => {
    const killing = { ...record, state: 'killing' as const };
    expect(killedForLease(killing, id('a'), 137)).toBe(true);
    expect(killedForLease(killing, id('a'), 0)).toBe(false);
  });

  it('round-trips and rejects what is not one', () => {
    expect(parseLeaseKill(JSON.stringify(record))).toEqual(record);
    expect(parseLeaseKill(JSON.stringify({ ...record, state: 'maybe' }))).toBe(null);
    expect(parseLeaseKill('{')).toBe(null);
  });
});

describe('the files', () => {
  it('reads a config, and refuses one that lacks something', () => {
    const config = {
      nodeId: 'n1',
      socketPath: '/run/docker.sock',
      lease: { file: '/var/lib/shoal/lease.json', durationMs: 10_000 },
      idleExitMs: 60_000,
    };
    expect(parseKeeperConfig(JSON.stringify(config))).toEqual(config);
    expect(parseKeeperConfig(JSON.stringify({ ...config, nodeId: '' }))).toBe(null);
    expect(parseKeeperConfig(JSON.stringify({ ...config, lease: { file: 'x', durationMs: -1 } }))).toBe(null);
    expect(parseKeeperConfig(JSON.stringify({ ...config, idleExitMs: 'soon' }))).toBe(null);
    expect(parseKeeperConfig('not json')).toBe(null);
  });

  it('reads a pid file, with or without a start time', () => {
    expect(parseKeeperPid('{"pid":12,"procStartTicks":345,"startedAtMs":6}')).toEqual({
      pid: 12,
      procStartTicks: 345,
      startedAtMs: 6,
    });
    expect(parseKeeperPid('{"pid":12,"procStartTicks":null,"startedAtMs":6}')?.procStartTicks).toBe(null);
    expect(parseKeeperPid('{"pid":0,"procStartTicks":null,"startedAtMs":6}')).toBe(null);
    expect(parseKeeperPid('')).toBe(null);
  });
});
