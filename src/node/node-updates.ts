/**
 * Which nodes the leader registers or marks down, as a pure function of membership, the replicated node
 * records and the leases (the leader's shell proposes what it returns). A node is registered (or updated)
 * while it is alive and holds a lease; it is marked down, so that its tasks become lost and are placed
 * elsewhere, once it left or its lease is gone past the grace (its agent has stopped its tasks by then).
 */
import type { ClusterNode, Command, NodeDescription } from '../cluster/index.ts';
import { leaseStanding } from './lease.ts';

export interface MemberFacts {
  readonly id: string;
  readonly name: string;
  readonly state: 'alive' | 'suspect' | 'dead' | 'left';
  /** When membership last heard from it (this node's clock). */
  readonly lastHeardMs: number;
  /** What it advertises: capacity, labels, drivers. */
  readonly description: NodeDescription;
}

export interface NodeUpdateInput {
  readonly members: readonly MemberFacts[];
  readonly known: ReadonlyMap<string, ClusterNode>;
  /** When each node last renewed its lease with this leader. */
  readonly renewedMs: (nodeId: string) => number | undefined;
  /** Nodes with an update already proposed and not yet committed: nothing more for them now. */
  readonly inFlight: ReadonlySet<string>;
  readonly nowMs: number;
}

/** One node's update, and whom it is about. */
export interface NodeUpdate {
  readonly nodeId: string;
  readonly name: string;
  readonly command: Command;
}

export function planNodeUpdates(input: NodeUpdateInput): NodeUpdate[] {
  const { nowMs } = input;
  const updates: NodeUpdate[] = [];
  for (const member of input.members) {
    if (input.inFlight.has(member.id)) continue;
    const known = input.known.get(member.id);
    const renewedMs = input.renewedMs(member.id);
    const standing = leaseStanding(renewedMs, nowMs);
    if (member.state === 'alive' && standing === 'held') {
      if (!known || known.status === 'down' || !sameNode(known, member.description)) {
        const command: Command = { type: 'upsertNode', node: member.description, atMs: nowMs };
        updates.push({ nodeId: member.id, name: member.name, command });
      }
    } else if (known?.status === 'up' && (member.state === 'left' || standing === 'gone')) {
      const since = new Date(renewedMs ?? member.lastHeardMs).toISOString();
      const reason =
        member.state === 'left'
          ? `node ${member.name} left the cluster`
          : `node ${member.name} unreachable since ${since}`;
      const command: Command = { type: 'nodeDown', nodeId: member.id, reason, atMs: nowMs };
      updates.push({ nodeId: member.id, name: member.name, command });
    }
  }
  return updates;
}

/**
 * Whether the replicated record already says what the member advertises. Field by field, not through
 * JSON: the leader asks it of every member (5,000 at scale) several times a second.
 */
export function sameNode(known: ClusterNode, description: NodeDescription): boolean {
  const a = known.capacity;
  const b = description.capacity;
  return (
    known.name === description.name &&
    known.address === description.address &&
    a.cpuMillis === b.cpuMillis &&
    a.memoryBytes === b.memoryBytes &&
    a.diskBytes === b.diskBytes &&
    sameRecord(a.devices, b.devices) &&
    sameRecord(known.labels, description.labels) &&
    known.drivers.length === description.drivers.length &&
    known.drivers.every((driver, i) => driver === description.drivers[i]) &&
    known.dynamicPorts?.min === description.dynamicPorts?.min &&
    known.dynamicPorts?.max === description.dynamicPorts?.max
  );
}

/** Same keys in the same order with the same values (as JSON would compare them). */
function sameRecord(
  a: Readonly<Record<string, string | number>> | undefined,
  b: Readonly<Record<string, string | number>> | undefined,
): boolean {
  if (a === undefined || b === undefined) return a === b;
  const keys = Object.keys(a);
  const otherKeys = Object.keys(b);
  if (keys.length !== otherKeys.length) return false;
  return keys.every((key, i) => key === otherKeys[i] && a[key] === b[key]);
}
