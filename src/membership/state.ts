/**
 * Membership's pure state machine: who is in the cluster and whether they are alive, suspect, dead or
 * gone. Records come in from gossip and full-state syncs; time comes in as `nowMs`. A record replaces
 * another only when it is newer: a higher incarnation (a restart), or the same incarnation and a higher
 * heartbeat sequence.
 */
import { z } from 'zod';
import { taskDrivers } from '../cluster/task.ts';

export const nodeRecordSchema = z
  .object({
    id: z.string().min(1).max(128),
    name: z.string().min(1).max(128),
    /** libp2p multiaddrs the node listens on, with its /p2p/ id. */
    addresses: z.array(z.string().max(256)).max(16),
    /** host:port of the cluster listener, for display and join commands. */
    address: z.string().max(256),
    cpuMillis: z.number().int().nonnegative(),
    memoryBytes: z.number().int().nonnegative(),
    labels: z.record(z.string().max(128), z.string().max(256)),
    drivers: z.array(z.enum(taskDrivers)),
    version: z.string().max(64),
    /** Bumped on every start of the node (persisted in its data dir). */
    incarnation: z.number().int().nonnegative(),
    /** Bumped on every heartbeat the node publishes. */
    heartbeat: z.number().int().nonnegative(),
    leaving: z.boolean(),
  })
  .strict();

export type NodeRecord = z.infer<typeof nodeRecordSchema>;

export type MemberState = 'alive' | 'suspect' | 'dead' | 'left';

export interface Member {
  readonly record: NodeRecord;
  readonly state: MemberState;
  /** When this node last saw the member's heartbeat advance. */
  readonly lastHeardMs: number;
}

export interface MembershipTimings {
  /** No newer heartbeat for this long: suspect. */
  readonly suspectAfterMs: number;
  /** No newer heartbeat for this long: dead. */
  readonly deadAfterMs: number;
}

export interface MemberTransition {
  readonly id: string;
  readonly from: MemberState | null;
  readonly to: MemberState;
}

export function isNewer(a: NodeRecord, b: NodeRecord): boolean {
  return a.incarnation > b.incarnation || (a.incarnation === b.incarnation && a.heartbeat > b.heartbeat);
}

export class MembershipState {
  private readonly members = new Map<string, Member>();
  private readonly selfId: string;
  private readonly timings: MembershipTimings;

  constructor(selfId: string, timings: MembershipTimings) {
    this.selfId = selfId;
    this.timings = timings;
  }

  /** Takes a record heard from the network (or our own); returns the state change it caused, if any. */
  observe(record: NodeRecord, nowMs: number): MemberTransition | null {
    const existing = this.members.get(record.id);
    if (existing && !isNewer(record, existing.record)) return null;
    const state: MemberState = record.leaving ? 'left' : 'alive';
    this.members.set(record.id, { record, state, lastHeardMs: nowMs });
    if (existing?.state === state) return null;
    return { id: record.id, from: existing?.state ?? null, to: state };
  }

  /** Advances time: members not heard from become suspect, then dead. */
  tick(nowMs: number): MemberTransition[] {
    const transitions: MemberTransition[] = [];
    for (const [id, member] of this.members) {
      if (id === this.selfId || member.state === 'left' || member.state === 'dead') continue;
      const silentMs = nowMs - member.lastHeardMs;
      let next: MemberState = member.state;
      if (silentMs >= this.timings.deadAfterMs) next = 'dead';
      else if (silentMs >= this.timings.suspectAfterMs) next = 'suspect';
      if (next !== member.state) {
        this.members.set(id, { ...member, state: next });
        transitions.push({ id, from: member.state, to: next });
      }
    }
    return transitions;
  }

  get(id: string): Member | undefined {
    return this.members.get(id);
  }

  list(): Member[] {
    return [...this.members.values()].sort(
      (a, b) => a.record.name.localeCompare(b.record.name) || a.record.id.localeCompare(b.record.id),
    );
  }

  records(): NodeRecord[] {
    return [...this.members.values()].map((member) => member.record);
  }
}
