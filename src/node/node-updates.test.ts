import { describe, expect, it } from 'vitest';
import type { ClusterNode, NodeDescription } from '../cluster/index.ts';
import { replaceGraceMs, taskLeaseMs } from './lease.ts';
import { planNodeUpdates, type MemberFacts } from './node-updates.ts';

const nowMs = 1_000_000;

function description(id: string, cpuMillis = 1000): NodeDescription {
  return {
    id,
    name: id,
    address: `${id}:4700`,
    capacity: { cpuMillis, memoryBytes: 1 << 30 },
    labels: {},
    drivers: ['exec'],
  };
}

function member(id: string, state: MemberFacts['state'] = 'alive', cpuMillis = 1000): MemberFacts {
  return { id, name: id, state, lastHeardMs: nowMs - 500, description: description(id, cpuMillis) };
}

function known(id: string, status: 'up' | 'down' = 'up'): ClusterNode {
  return { ...description(id), status, draining: false, updatedAtMs: 0 };
}

function plan(
  members: MemberFacts[],
  nodes: ClusterNode[],
  renewedAgoMs: Record<string, number>,
  inFlight: string[] = [],
): string[] {
  return planNodeUpdates({
    members,
    known: new Map(nodes.map((node) => [node.id, node])),
    renewedMs: (id) => (renewedAgoMs[id] === undefined ? undefined : nowMs - (renewedAgoMs[id] ?? 0)),
    inFlight: new Set(inFlight),
    nowMs,
  }).map(({ nodeId, command }) => `${command.type} ${nodeId}`);
}

describe('planNodeUpdates', () => {
  it('registers an alive member that holds a lease, once', () => {
    expect(plan([member('a')], [], { a: 100 })).toEqual(['upsertNode a']);
    expect(plan([member('a')], [known('a')], { a: 100 })).toEqual([]);
  });

  it('does not register an alive member that has not renewed its lease', () => {
    expect(plan([member('a')], [], {})).toEqual([]);
    expect(plan([member('a')], [], { a: taskLeaseMs })).toEqual([]);
  });

  it('updates a registered node whose capacity changed, and brings a down node back up', () => {
    expect(plan([member('a', 'alive', 2000)], [known('a')], { a: 100 })).toEqual(['upsertNode a']);
    expect(plan([member('a')], [known('a', 'down')], { a: 100 })).toEqual(['upsertNode a']);
  });

  it('marks a node down only once its lease is gone past the grace', () => {
    const dead = [member('a', 'dead')];
    expect(plan(dead, [known('a')], { a: taskLeaseMs - 1 })).toEqual([]);
    expect(plan(dead, [known('a')], { a: taskLeaseMs + replaceGraceMs - 1 })).toEqual([]);
    expect(plan(dead, [known('a')], { a: taskLeaseMs + replaceGraceMs })).toEqual(['nodeDown a']);
    // An alive member that stopped renewing (its agent is wedged) goes down the same way.
    expect(plan([member('a')], [known('a')], { a: taskLeaseMs + replaceGraceMs })).toEqual(['nodeDown a']);
  });

  it('marks a member that left down at once, with the reason', () => {
    const updates = planNodeUpdates({
      members: [member('a', 'left')],
      known: new Map([['a', known('a')]]),
      renewedMs: () => nowMs,
      inFlight: new Set(),
      nowMs,
    });
    expect(updates.map((u) => u.command)).toEqual([
      { type: 'nodeDown', nodeId: 'a', reason: 'node a left the cluster', atMs: nowMs },
    ]);
  });

  it('proposes nothing for a node already down, unknown, or with an update in flight', () => {
    expect(plan([member('a', 'dead')], [known('a', 'down')], {})).toEqual([]);
    expect(plan([member('a', 'dead')], [], {})).toEqual([]);
    expect(plan([member('a')], [], { a: 100 }, ['a'])).toEqual([]);
  });
});
