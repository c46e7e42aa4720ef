/**
 * Writes and linearizable reads through the leader, and the control protocol nodes use to ask it: a
 * follower forwards a proposal, asks for a read index, renews its task lease, or asks another node for a
 * task's logs. Every request and reply is validated where it arrives.
 */
import { peerIdFromString } from '@libp2p/peer-id';
import * as z from 'zod/mini';
import {
  applyResultSchema,
  describeIssues,
  encodeCommand,
  taskIdPattern,
  validateCommand,
  type ApplyResult,
  type Command,
} from '../cluster/index.ts';
import type { RaftService } from '../election/index.ts';
import { ShoalError, callRpc, errorMessage, handleRpc, isShoalError, type Logger } from '../shared/index.ts';
import { text, whole } from '../shared/schema.ts';
import type { ShoalLibp2p } from './p2p.ts';
import { setTimeout as sleep } from 'node:timers/promises';

export const controlProtocol = '/shoal/control/1.0.0';
/** How long a write waits for a leader and a commit before it fails. */
export const writeTimeoutMs = 10_000;
/** How long a read waits for the leader to confirm it still leads. */
export const readIndexTimeoutMs = 2000;
/** How long a node waits for another to send a task's logs. */
export const remoteLogsTimeoutMs = 5000;
/** Between two attempts of a write or a read while no leader answers: a new leader is usually known within a few ticks. */
const retryGapMs = 20;
/** Hosted nodes one renewal may name (a fleet host renews its nodes in batches of at most this many). */
export const renewalNodesMax = 1000;

const controlRequestSchema = z.discriminatedUnion('method', [
  z.strictObject({ method: z.literal('propose'), command: z.unknown() }),
  z.strictObject({
    method: z.literal('renewLease'),
    /**
     * The nodes to renew, when the caller hosts other nodes (their signed records name it as `via`):
     * each is renewed as if it had asked itself. Absent: the caller's own node.
     */
    nodes: z.optional(z.array(text(128, 1)).check(z.minLength(1), z.maxLength(renewalNodesMax))),
  }),
  z.strictObject({ method: z.literal('readIndex') }),
  z.strictObject({
    method: z.literal('logs'),
    // A task id names a directory: nothing else may reach the file system.
    taskId: z.string().check(z.regex(taskIdPattern)),
    tailBytes: whole(0),
  }),
]);
type ControlRequest = z.infer<typeof controlRequestSchema>;

const readIndexReplySchema = z.object({ index: whole(0) });
const logsReplySchema = z.object({ stdout: z.string(), stderr: z.string() });

export interface ControlInit {
  readonly libp2p: ShoalLibp2p;
  readonly raft: RaftService;
  readonly logger: Logger;
  readonly isStopped: () => boolean;
  /** Hears how long each of this node's own proposals took to commit and apply (metrics). */
  readonly committed?: (seconds: number) => void;
  /** Which voters this node can reach, for the error when no leader answers. */
  readonly quorumHint: () => string;
  /** Leader side of a lease renewal of these nodes; rejects if this node cannot grant it. */
  readonly renewLease: (nodeIds: readonly string[]) => Promise<void>;
  /** The peer that hosts a node (its membership record's `via`), undefined for a node that is its own peer. */
  readonly hostOf: (nodeId: string) => string | undefined;
  /** This node's copy of a task's logs. */
  readonly localLogs: (taskId: string, tailBytes: number) => Promise<{ stdout: string; stderr: string }>;
  /** The most log bytes one request returns. */
  readonly logsTailBytesMax: number;
}

export class Control {
  private readonly init: ControlInit;

  constructor(init: ControlInit) {
    this.init = init;
  }

  async start(): Promise<void> {
    await handleRpc(this.init.libp2p, controlProtocol, (request, remotePeer) =>
      this.handle(request, remotePeer.toString()),
    );
  }

  /** Commits a command through the leader (forwarding if this node is not it) and returns its result. */
  async propose(command: Command): Promise<ApplyResult> {
    const { raft } = this.init;
    const deadline = Date.now() + writeTimeoutMs;
    let lastError: unknown = null;
    // Once an attempt may have reached a leader's log, a failure no longer means "not done": it may
    // commit later. The caller must then hear that the outcome is unknown, not that it was refused.
    let mayHaveCommitted = false;
    while (Date.now() < deadline && !this.init.isStopped()) {
      const status = raft.status();
      try {
        if (status.role === 'leader') {
          mayHaveCommitted = true;
          const startedMs = performance.now();
          const result = parseApplyResult(
            await raft.propose(encodeCommand(command), Math.max(1, deadline - Date.now())),
          );
          this.init.committed?.((performance.now() - startedMs) / 1000);
          return result;
        }
        if (status.leaderId !== null) {
          return parseApplyResult(
            await this.ask(
              status.leaderId,
              { method: 'propose', command },
              Math.max(1, deadline - Date.now()),
            ),
          );
        }
      } catch (error) {
        lastError = error;
        if (!isShoalError(error, 'NOT_LEADER') && !isShoalError(error, 'NO_LEADER')) {
          mayHaveCommitted = true;
        }
        // A timeout may have committed; retrying a submit is safe (ids are idempotent), others are too.
        if (isShoalError(error, 'INVALID_ARGUMENT') || isShoalError(error, 'TOO_LARGE')) throw error;
      }
      await sleep(retryGapMs);
    }
    const detail = `${this.init.quorumHint()}${lastError ? `: ${errorMessage(lastError)}` : ''}`;
    if (mayHaveCommitted) {
      throw new ShoalError(
        'TIMEOUT',
        `the outcome is unknown: a leader got the request but did not confirm it within ${writeTimeoutMs / 1000} s (${detail}); it may still be committed, and sending it again with the same id is safe`,
      );
    }
    throw new ShoalError(
      'NO_LEADER',
      `no leader accepted the request within ${writeTimeoutMs / 1000} s (${detail})`,
    );
  }

  /** propose(), and a refusal by the state (a conflict, an unknown task) as a ShoalError. */
  async proposeOrThrow(command: Command): Promise<void> {
    const result = await this.propose(command);
    if (!result.ok) throw new ShoalError(result.code, result.message);
  }

  /**
   * Makes this node's state at least as new as the leader's commit at the time of the call (ReadIndex):
   * learn the leader's commit index once a quorum confirms its leadership, then wait until this node has
   * applied it. Without a reachable leader the read is served from local state, which may be stale: a
   * minority keeps answering `ps` rather than nothing.
   */
  async readBarrier(): Promise<void> {
    const deadline = Date.now() + readIndexTimeoutMs;
    for (;;) {
      try {
        await this.readIndexOnce();
        return;
      } catch (error) {
        if (Date.now() >= deadline || this.init.isStopped()) {
          this.init.logger.warn('linearizable read failed; serving local state, which may be stale', {
            error: errorMessage(error),
          });
          return;
        }
        // Right after an election the leader must commit in its term first; that takes a few ticks.
        await sleep(retryGapMs);
      }
    }
  }

  /** One ReadIndex round; rejects when no leader confirms in time. */
  async readIndexOnce(): Promise<void> {
    const { raft } = this.init;
    const status = raft.status();
    let readIndex: number;
    if (status.role === 'leader') {
      readIndex = await raft.readIndex(readIndexTimeoutMs);
    } else if (status.leaderId !== null) {
      const reply = await this.ask(status.leaderId, { method: 'readIndex' }, readIndexTimeoutMs);
      readIndex = checked(readIndexReplySchema, reply, 'read index').index;
    } else {
      throw new ShoalError('NO_LEADER', 'no leader is known');
    }
    await raft.waitApplied(readIndex, readIndexTimeoutMs);
  }

  /** Asks the leader to renew this node's task lease; rejects if it did not. */
  async renewWithLeader(leaderId: string, timeoutMs: number): Promise<void> {
    await this.ask(leaderId, { method: 'renewLease' }, timeoutMs);
  }

  /** Asks the leader to renew the leases of nodes this peer hosts (the fleet simulator); rejects if it did not. */
  async renewHostedWithLeader(leaderId: string, nodeIds: string[], timeoutMs: number): Promise<void> {
    await this.ask(leaderId, { method: 'renewLease', nodes: nodeIds }, timeoutMs);
  }

  /** Another node's copy of a task's logs. */
  async remoteLogs(
    nodeId: string,
    taskId: string,
    tailBytes: number,
  ): Promise<{ stdout: string; stderr: string }> {
    const reply = await this.ask(nodeId, { method: 'logs', taskId, tailBytes }, remoteLogsTimeoutMs);
    return checked(logsReplySchema, reply, 'logs');
  }

  private ask(peer: string, request: ControlRequest, timeoutMs: number): Promise<unknown> {
    return callRpc(this.init.libp2p, peerIdFromString(peer), controlProtocol, request, timeoutMs);
  }

  private async handle(value: unknown, remotePeer: string): Promise<unknown> {
    const parsed = controlRequestSchema.safeParse(value);
    if (!parsed.success) {
      throw new ShoalError('INVALID_ARGUMENT', `not a control request: ${describeIssues(parsed.error)}`);
    }
    const request = parsed.data;
    const { raft } = this.init;
    switch (request.method) {
      case 'renewLease': {
        const nodes = request.nodes ?? [remotePeer];
        for (const node of nodes) {
          if (node !== remotePeer && this.init.hostOf(node) !== remotePeer) {
            throw new ShoalError(
              'PERMISSION_DENIED',
              `peer ${remotePeer} may not renew the lease of node ${node}: its membership record does not name that peer as its host`,
            );
          }
        }
        await this.init.renewLease(nodes);
        return { ok: true };
      }
      case 'propose':
        if (!raft.isLeader()) throw new ShoalError('NOT_LEADER', 'this node is no longer the leader; retry');
        return raft.propose(encodeCommand(validateCommand(request.command)), writeTimeoutMs);
      case 'readIndex':
        if (!raft.isLeader()) throw new ShoalError('NOT_LEADER', 'this node is not the leader');
        return { index: await raft.readIndex(readIndexTimeoutMs) };
      case 'logs':
        return this.init.localLogs(request.taskId, Math.min(request.tailBytes, this.init.logsTailBytesMax));
    }
  }
}

function parseApplyResult(value: unknown): ApplyResult {
  return checked(applyResultSchema, value, 'proposal');
}

function checked<T>(schema: z.ZodMiniType<T>, value: unknown, what: string): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    throw new ShoalError('INTERNAL', `a malformed ${what} reply: ${describeIssues(parsed.error)}`);
  }
  return parsed.data;
}
