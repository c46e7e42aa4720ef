/**
 * Membership over libp2p: every node publishes its record (address, capacity, labels, drivers) on a
 * gossipsub topic each heartbeat, and swaps full member lists with every peer it connects to. libp2p
 * discovers nothing by itself, so peers learned from records are dialled explicitly, and re-dialled while
 * they are believed alive. Failure detection here is by heartbeat age (MembershipState); pnet keeps out
 * anyone without the cluster key.
 */
import type { Libp2p, PeerId } from '@libp2p/interface';
import type { GossipSub, Message } from '@libp2p/gossipsub';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import { ShoalError, errorMessage } from '../shared/errors.ts';
import type { Logger } from '../shared/log.ts';
import { callRpc, decodeJson, encodeJson, handleRpc } from '../shared/wire.ts';
import {
  MembershipState,
  nodeRecordSchema,
  type Member,
  type MemberTransition,
  type MembershipTimings,
  type NodeRecord,
} from './state.ts';

export const membershipTopic = 'shoal/members/1';
export const membershipSyncProtocol = '/shoal/members/sync/1.0.0';
/** Records in one full-state exchange. */
export const syncRecordsMax = 10_000;

export interface MembershipConfig extends MembershipTimings {
  /** How often this node publishes its record (its heartbeat). */
  readonly heartbeatIntervalMs: number;
}

/** LAN defaults: heartbeat 1 s; suspect after 3 s of silence, dead after 6 s (the issue allows 10 s). */
export const defaultMembershipConfig: MembershipConfig = {
  heartbeatIntervalMs: 1000,
  suspectAfterMs: 3000,
  deadAfterMs: 6000,
};

export interface MembershipInit {
  readonly libp2p: Libp2p<{ pubsub: GossipSub }>;
  readonly self: Omit<NodeRecord, 'heartbeat' | 'leaving' | 'id' | 'addresses'>;
  readonly config: MembershipConfig;
  readonly logger: Logger;
  readonly onTransition: (transition: MemberTransition, member: Member) => void;
}

export class MembershipService {
  private readonly init: MembershipInit;
  private readonly state: MembershipState;
  private record: NodeRecord;
  private timer: NodeJS.Timeout | null = null;
  private readonly dialing = new Set<string>();

  constructor(init: MembershipInit) {
    this.init = init;
    const id = init.libp2p.peerId.toString();
    this.state = new MembershipState(id, init.config);
    this.record = { ...init.self, id, addresses: this.ownAddresses(), heartbeat: 0, leaving: false };
  }

  get selfId(): string {
    return this.record.id;
  }

  async start(): Promise<void> {
    const { libp2p } = this.init;
    libp2p.services.pubsub.subscribe(membershipTopic);
    libp2p.services.pubsub.addEventListener('message', (event) => this.onGossip(event.detail));
    await handleRpc(libp2p, membershipSyncProtocol, (request) => {
      this.mergeRecords(request);
      return Promise.resolve({ records: this.state.records() });
    });
    libp2p.addEventListener('peer:connect', (event) => void this.syncWith(event.detail));
    this.observe(this.record);
    this.timer = setInterval(() => this.heartbeat(), this.init.config.heartbeatIntervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** Dials seeds until one answers, so the node learns the cluster. Throws the last error if none does. */
  async join(seeds: readonly string[], timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown = null;
    while (Date.now() < deadline) {
      for (const seed of seeds) {
        try {
          const connection = await this.init.libp2p.dial(multiaddr(seed), {
            signal: AbortSignal.timeout(3000),
          });
          await this.syncWith(connection.remotePeer);
          return;
        } catch (error) {
          lastError = error;
          // A wrong key will not fix itself: fail at once rather than retry.
          if (isKeyMismatch(error))
            throw new ShoalError('INVALID_ARGUMENT', describeDialFailure(seed, error));
          this.init.logger.warn(describeDialFailure(seed, error));
        }
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    throw new ShoalError('UNAVAILABLE', describeDialFailure(seeds.join(', '), lastError));
  }

  /** Announces a graceful leave so peers mark this node "left" rather than dead. */
  async leave(): Promise<void> {
    this.record = { ...this.record, heartbeat: this.record.heartbeat + 1, leaving: true };
    this.observe(this.record);
    await this.publish().catch(() => undefined);
  }

  /** Updates what this node advertises (e.g. driver health) from the next heartbeat on. */
  update(patch: Partial<Pick<NodeRecord, 'drivers' | 'labels' | 'cpuMillis' | 'memoryBytes'>>): void {
    this.record = { ...this.record, ...patch };
  }

  members(): Member[] {
    return this.state.list();
  }

  member(id: string): Member | undefined {
    return this.state.get(id);
  }

  private heartbeat(): void {
    this.record = { ...this.record, addresses: this.ownAddresses(), heartbeat: this.record.heartbeat + 1 };
    this.observe(this.record);
    void this.publish().catch((error: unknown) =>
      this.init.logger.debug('publish failed', { error: errorMessage(error) }),
    );
    for (const transition of this.state.tick(Date.now())) this.emit(transition);
    this.redialAlive();
  }

  private async publish(): Promise<void> {
    await this.init.libp2p.services.pubsub.publish(membershipTopic, encodeJson(this.record));
  }

  private onGossip(message: Message): void {
    if (message.topic !== membershipTopic || message.type !== 'signed') return;
    let record: NodeRecord;
    try {
      record = nodeRecordSchema.parse(decodeJson(message.data));
    } catch (error) {
      this.init.logger.warn('dropped a malformed membership record', {
        from: message.from.toString(),
        error: errorMessage(error),
      });
      return;
    }
    // Gossipsub signs with the publisher's key: a node may only speak for itself.
    if (record.id !== message.from.toString()) return;
    this.observe(record);
  }

  private mergeRecords(payload: unknown): void {
    const records = (payload as { records?: unknown } | null)?.records;
    if (!Array.isArray(records)) return;
    for (const raw of records.slice(0, syncRecordsMax)) {
      const parsed = nodeRecordSchema.safeParse(raw);
      if (parsed.success && parsed.data.id !== this.record.id) this.observe(parsed.data);
    }
  }

  private async syncWith(peer: PeerId): Promise<void> {
    try {
      const reply = await callRpc(
        this.init.libp2p,
        peer,
        membershipSyncProtocol,
        { records: this.state.records() },
        5000,
      );
      this.mergeRecords(reply);
    } catch (error) {
      this.init.logger.debug('membership sync failed', { peer: peer.toString(), error: errorMessage(error) });
    }
  }

  private observe(record: NodeRecord): void {
    const transition = this.state.observe(record, Date.now());
    if (transition) this.emit(transition);
    if (record.id !== this.record.id && !record.leaving) this.dialIfDisconnected(record);
  }

  private emit(transition: MemberTransition): void {
    const member = this.state.get(transition.id);
    if (!member) return;
    if (transition.id !== this.record.id) {
      this.init.logger.info(`member ${member.record.name} is ${transition.to}`, {
        id: transition.id,
        address: member.record.address,
      });
    }
    this.init.onTransition(transition, member);
  }

  private redialAlive(): void {
    for (const member of this.state.list()) {
      if (member.state === 'alive' || member.state === 'suspect') this.dialIfDisconnected(member.record);
    }
  }

  private dialIfDisconnected(record: NodeRecord): void {
    if (record.id === this.record.id || this.dialing.has(record.id)) return;
    const connected = this.init.libp2p.getConnections().some((c) => c.remotePeer.toString() === record.id);
    if (connected || record.addresses.length === 0) return;
    this.dialing.add(record.id);
    const addresses: Multiaddr[] = record.addresses.map((a) => multiaddr(a));
    void this.init.libp2p
      .dial(addresses, { signal: AbortSignal.timeout(3000) })
      .catch((error: unknown) =>
        this.init.logger.debug('dial failed', { peer: record.name, error: errorMessage(error) }),
      )
      .finally(() => this.dialing.delete(record.id));
  }

  private ownAddresses(): string[] {
    return this.init.libp2p.getMultiaddrs().map((a) => a.toString());
  }
}

/** pnet scrambles the stream with the key, so a peer with another key fails the noise handshake. */
function isKeyMismatch(error: unknown): boolean {
  const name = error instanceof Error ? error.name : '';
  return name === 'EncryptionFailedError' || /handshake|nonce|decrypt/i.test(errorMessage(error));
}

/** One line that says what went wrong when dialling a seed, and what to check. */
export function describeDialFailure(seed: string, error: unknown): string {
  const name = error instanceof Error ? error.name : '';
  const message = errorMessage(error);
  if (isKeyMismatch(error)) {
    return `join ${seed} refused: the handshake failed, which means the cluster key does not match; use the key printed by the first node (--key or --key-file)`;
  }
  if (/ECONNREFUSED/.test(message))
    return `join ${seed} failed: nothing listens there (connection refused); check the address and port`;
  if (name === 'AbortError' || name === 'TimeoutError' || /abort|timeout/i.test(message)) {
    return `join ${seed} failed: no answer within 3 s; check the address and that the port is reachable`;
  }
  return `join ${seed} failed: ${message}`;
}
