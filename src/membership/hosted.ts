/**
 * Members hosted by one peer: what the fleet simulator (scripts/fleet) runs so that thousands of simulated
 * nodes take part in membership over a few connections. Each hosted member has its own Ed25519 key and
 * signs its own record, which names the host (`via`); real nodes send the member's frames to the host with
 * the member's id on them (transport.ts), and believe the host's frames for it because of that signature.
 *
 * A hosted member answers what a real one would: acks its pings, probes a target when asked (pingReq)
 * and relays the answer, refutes a suspicion or death claimed about it with a newer record, and takes
 * part in push-pull. It never probes anyone on its own: hosted members do not watch each other or the
 * real nodes; the real nodes do the watching (so a crashed hosted member is found by the real nodes' probes
 * and, sooner, by its lapsed lease). Membership at scale among real members is measured by the seeded
 * simulation (bench:swim) instead.
 *
 * Pure: messages and times in, messages out; signing through the MembershipCrypto of each member.
 */
import {
  compareVersions,
  parseClaim,
  parseRecord,
  signRecord,
  type MembershipCrypto,
  type NodeRecord,
  type Signed,
} from './records.ts';
import type { DigestEntry, SwimMessage, SyncEntry, SyncReply, SyncRequest, Update } from './messages.ts';

/** How long a hosted member waits for a target it was asked to probe before it answers nack. */
export const hostedProbeTimeoutMs = 400;
/** How many outgoing messages carry a refuted record on their way out. */
export const refutationRetransmits = 12;
/** Updates one outgoing message carries at most. */
const updatesPerMessageMax = 8;

/** A message to a real member, from one hosted member. */
export interface HostedOutgoing {
  readonly to: string;
  readonly member: string;
  readonly message: SwimMessage;
}

interface HostedMember {
  record: NodeRecord;
  signed: Signed;
  readonly crypto: MembershipCrypto;
  alive: boolean;
}

interface HelperProbe {
  readonly requester: string;
  readonly requesterSeq: number;
  readonly member: string;
  readonly target: string;
  readonly deadlineMs: number;
}

interface Pending {
  readonly update: Update;
  remaining: number;
}

export interface HostedStats {
  acks: number;
  helperProbes: number;
  refutations: number;
}

export class HostedMembers {
  readonly hostId: string;
  readonly stats: HostedStats = { acks: 0, helperProbes: 0, refutations: 0 };
  private readonly members = new Map<string, HostedMember>();
  /** Real members and their addresses, learned from push-pull and gossip. */
  private readonly real = new Map<string, { record: NodeRecord; signed: Signed }>();
  private readonly helperProbes = new Map<number, HelperProbe>();
  private readonly pending: Pending[] = [];
  private seq = 0;

  constructor(hostId: string) {
    this.hostId = hostId;
  }

  /** Hosts a member: its record (with `via` set to this host) is signed with its own key. */
  add(record: Omit<NodeRecord, 'via'>, crypto: MembershipCrypto): void {
    const full: NodeRecord = { ...record, via: this.hostId };
    const signed = signRecord(full, crypto);
    this.members.set(record.id, { record: signed.record, signed: signed.signed, crypto, alive: true });
  }

  /** Stops answering for a member, as if its machine died. */
  crash(id: string): void {
    const member = this.members.get(id);
    if (member) member.alive = false;
  }

  isAlive(id: string): boolean {
    return this.members.get(id)?.alive === true;
  }

  hosts(id: string): boolean {
    return this.members.has(id);
  }

  /** Real members this host has heard of (id → record). */
  realMembers(): ReadonlyMap<string, { readonly record: NodeRecord }> {
    return this.real;
  }

  /** A frame from real member `from` to hosted member `member`: the answers. */
  receive(from: string, member: string, message: SwimMessage, nowMs: number): HostedOutgoing[] {
    this.takeUpdates(message.updates);
    const self = this.members.get(member);
    if (self === undefined || !self.alive) return [];
    const out: HostedOutgoing[] = [];
    switch (message.type) {
      case 'ping':
        if (message.target === member) {
          this.stats.acks++;
          out.push(this.outgoing(from, member, { type: 'ack', seq: message.seq, updates: [] }));
        }
        break;
      case 'pingReq': {
        this.stats.helperProbes++;
        const target = message.target;
        if (this.members.has(target)) {
          const answer = this.isAlive(target) ? 'ack' : 'nack';
          out.push(this.outgoing(from, member, { type: answer, seq: message.seq, updates: [] }));
        } else if (this.real.has(target)) {
          const seq = this.nextSeq();
          this.helperProbes.set(seq, {
            requester: from,
            requesterSeq: message.seq,
            member,
            target,
            deadlineMs: nowMs + hostedProbeTimeoutMs,
          });
          out.push(this.outgoing(target, member, { type: 'ping', seq, target, updates: [] }));
        } else {
          out.push(this.outgoing(from, member, { type: 'nack', seq: message.seq, updates: [] }));
        }
        break;
      }
      case 'ack': {
        const probe = this.helperProbes.get(message.seq);
        // Only the target's answer counts (as in state.ts): an ack from anyone else proves nothing.
        if (probe?.member === member && probe.target === from) {
          this.helperProbes.delete(message.seq);
          out.push(
            this.outgoing(probe.requester, member, { type: 'ack', seq: probe.requesterSeq, updates: [] }),
          );
        }
        break;
      }
      case 'nack':
      case 'gossip':
        break;
    }
    return out;
  }

  /** Nacks for helper probes past their time (none from a member that crashed meanwhile: it is silent). */
  tick(nowMs: number): HostedOutgoing[] {
    const out: HostedOutgoing[] = [];
    for (const [seq, probe] of this.helperProbes) {
      if (probe.deadlineMs > nowMs) continue;
      this.helperProbes.delete(seq);
      if (!this.isAlive(probe.member)) continue;
      out.push(
        this.outgoing(probe.requester, probe.member, { type: 'nack', seq: probe.requesterSeq, updates: [] }),
      );
    }
    return out;
  }

  /** Refuted records still to be spread, as gossip to every real member from the member concerned. */
  gossip(): HostedOutgoing[] {
    if (this.pending.length === 0) return [];
    const updates = this.drainUpdates();
    const out: HostedOutgoing[] = [];
    const from = [...this.members.values()].find((member) => member.alive)?.record.id;
    if (from === undefined) return [];
    for (const id of this.real.keys())
      out.push({ to: id, member: from, message: { type: 'gossip', updates } });
    return out;
  }

  /** The push-pull a host opens with: every live hosted member's record, and the digest of them. */
  syncRequest(): SyncRequest {
    return { digest: this.digest(), entries: this.entries() };
  }

  /** Serves a push-pull from a real member: takes what it sent, answers with our members' records. */
  handleSyncRequest(request: SyncRequest): SyncReply {
    this.takeEntries(request.entries);
    if (request.digest === null) return { digest: null, entries: [] };
    return { digest: this.digest(), entries: this.entriesNewerThan(request.digest) };
  }

  /** The answer to our push-pull: returns what to send back (our members it lacks or doubts). */
  handleSyncReply(reply: SyncReply): SyncEntry[] {
    this.takeEntries(reply.entries);
    return reply.digest === null ? [] : this.entriesNewerThan(reply.digest);
  }

  private digest(): DigestEntry[] {
    const digest: DigestEntry[] = [];
    for (const { record, alive } of this.members.values()) {
      if (!alive) continue;
      const { incarnation, revision } = record;
      digest.push([record.id, incarnation, revision, 0, incarnation, revision]);
    }
    return digest;
  }

  private entries(): SyncEntry[] {
    const entries: SyncEntry[] = [];
    for (const member of this.members.values())
      if (member.alive) entries.push({ record: member.signed, claim: null });
    return entries;
  }

  /** Our live members the other side has an older record of, or believes suspect or dead (refuted first). */
  private entriesNewerThan(digest: readonly DigestEntry[]): SyncEntry[] {
    const theirs = new Map<string, DigestEntry>();
    for (const item of digest) theirs.set(item[0], item);
    const out: SyncEntry[] = [];
    for (const member of this.members.values()) {
      if (!member.alive) continue;
      const other = theirs.get(member.record.id);
      if (other !== undefined) {
        const [, incarnation, revision, rank, stateIncarnation, stateRevision] = other;
        if (rank === 1 || rank === 2)
          this.refute(member, { incarnation: stateIncarnation, revision: stateRevision });
        if (compareVersions(member.record, { incarnation, revision }) <= 0) continue;
      }
      out.push({ record: member.signed, claim: null });
    }
    return out;
  }

  private takeEntries(entries: readonly SyncEntry[]): void {
    for (const entry of entries) {
      this.takeRecord(entry.record);
      if (entry.claim !== null) this.takeClaim(entry.claim);
    }
  }

  private takeUpdates(updates: readonly Update[]): void {
    for (const update of updates) {
      if (update.type === 'record') this.takeRecord(update.signed);
      else this.takeClaim(update.signed);
    }
  }

  /** A real member's record: kept for its addresses (hosted members' own are ours already). */
  private takeRecord(signed: Signed): void {
    const record = parseRecord(signed);
    if (record === null || this.members.has(record.id) || record.via !== undefined) return;
    const known = this.real.get(record.id);
    if (known !== undefined && compareVersions(record, known.record) <= 0) return;
    if (record.leaving) {
      this.real.delete(record.id);
      return;
    }
    this.real.set(record.id, { record, signed });
  }

  /** A suspicion or death claimed about a live hosted member is refuted, as the member itself would. */
  private takeClaim(signed: Signed): void {
    const claim = parseClaim(signed);
    if (claim === null) return;
    const member = this.members.get(claim.subject);
    if (member?.alive !== true) return;
    this.refute(member, claim);
  }

  private refute(member: HostedMember, about: { incarnation: number; revision: number }): void {
    if (compareVersions(member.record, about) > 0) return;
    const record: NodeRecord = {
      ...member.record,
      incarnation: Math.max(member.record.incarnation, about.incarnation),
      revision: about.revision + 1,
    };
    const signed = signRecord(record, member.crypto);
    member.record = signed.record;
    member.signed = signed.signed;
    this.stats.refutations++;
    this.pending.push({
      update: { type: 'record', signed: signed.signed },
      remaining: refutationRetransmits,
    });
  }

  private outgoing(to: string, member: string, message: SwimMessage): HostedOutgoing {
    const updates = this.drainUpdates();
    return { to, member, message: updates.length === 0 ? message : { ...message, updates } };
  }

  /** Up to updatesPerMessageMax pending refutations, each counted down once per message. */
  private drainUpdates(): Update[] {
    const updates: Update[] = [];
    for (const pending of this.pending) {
      if (updates.length >= updatesPerMessageMax) break;
      updates.push(pending.update);
      pending.remaining--;
    }
    for (let i = this.pending.length - 1; i >= 0; i--) {
      if ((this.pending[i]?.remaining ?? 0) <= 0) this.pending.splice(i, 1);
    }
    return updates;
  }

  private nextSeq(): number {
    this.seq = (this.seq + 1) % Number.MAX_SAFE_INTEGER;
    return this.seq;
  }
}
