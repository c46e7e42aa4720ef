/**
 * The scheduler API's TypeScript client (`POST /v1/scheduler`, wire format in scheduler.ts): a framework
 * subscribes, reads typed events, and makes calls over that subscription. It reaches a node as ShoalClient
 * does (host:port, https:// with a CA, unix:PATH, a Bearer token), through ShoalClient.post.
 *
 * In: the connection, the framework's info, and injected time (`SchedulerClock`) and randomness. Out: an
 * async iterable of the wire events plus two local ones (DISCONNECTED, RESUBSCRIBED), and one method per
 * call. When the stream ends or drops (a leader failover, a replaced or silent stream) the client
 * subscribes again with exponential backoff and jitter, under the same framework id; once SUBSCRIBED it
 * sends an implicit RECONCILE and, unless the framework last asked to be suppressed, a REVIVE, then emits
 * RESUBSCRIBED. Calls made meanwhile wait for the new stream id (`subscribeWaitMs`) or fail with
 * NOT_SUBSCRIBED. A stream is read in the background into a bounded queue, so a framework may await its
 * calls inside its event loop.
 *
 * The pure parts (line splitting, event decoding, the backoff schedule, the SUBSCRIBE body, which failures
 * are worth retrying) are exported for tests; the class is the shell that owns the sockets and timers.
 */
import { setMaxListeners } from 'node:events';
import type { IncomingMessage } from 'node:http';
import * as z from 'zod/mini';
import { describeIssues, type TaskSpec } from '../cluster/index.ts';
import { failoverTimeoutMsDefault } from '../frameworks/index.ts';
import { assert } from '../shared/assert.ts';
import { ShoalError, errorMessage, type ShoalErrorCode } from '../shared/errors.ts';
import { mebibyte } from '../shared/units.ts';
import { ShoalClient, clientTimeoutMsDefault, type ClientInit, type Delivery } from './client.ts';
import { routes } from './routes.ts';
import {
  schedulerTaskStates,
  streamIdHeader,
  type SchedulerCallJson,
  type SchedulerEventJson,
  type TaskStatusJson,
} from './scheduler.ts';

// ---- limits and defaults ------------------------------------------------------------------------------

/**
 * The longest event line read, in characters. The largest event is OFFERS: offersPerFrameworkMax (10,000)
 * offers of ~350 characters each is 3.5 MB; 32 MiB leaves room for labels.
 */
export const eventLineCharsMax = 32 * mebibyte;
/** Events read ahead of the framework; beyond it the stream is not read until the framework catches up. */
export const eventsBufferedMax = 1024;
/**
 * A subscribed stream silent for this many heartbeat intervals is taken as dead and replaced (a frozen or
 * partitioned node sends no reset): 3 × the default 15 s = 45 s.
 */
export const heartbeatsMissedMax = 3;
/** The largest body read from a call's answer (202 carries `{}`). */
const callAnswerBytesMax = 64 * 1024;

export interface ResubscribeBackoff {
  /** The first retry's ceiling, in ms. */
  readonly initialMs: number;
  /** The ceiling no retry exceeds, in ms. */
  readonly maxMs: number;
  /** Each further attempt multiplies the ceiling by this (≥ 1). */
  readonly multiplier: number;
  /** The random share of each wait, 0–1: wait = ceiling × (1 − jitter × r), r uniform in [0, 1). */
  readonly jitter: number;
}

/**
 * Retry n (from 0) waits min(250 × 2ⁿ, 30,000) ms less up to half of it: 125–250 ms, 250–500 ms, … 15–30 s
 * from the 8th on. 250 ms: bench:failover measured SIGKILL of a leader → the next accepted write at p99
 * 223–238 ms (docs/architecture.md), so the first or second retry usually finds the new leader. The jitter
 * spreads frameworks that lost the same leader.
 */
export const resubscribeBackoffDefault: ResubscribeBackoff = {
  initialMs: 250,
  maxMs: 30_000,
  multiplier: 2,
  jitter: 0.5,
};

/** Time as the client uses it; tests pass their own. */
export interface SchedulerClock {
  nowMs(): number;
  /** Calls `fire` once after `delayMs`; the function returned cancels it. */
  after(delayMs: number, fire: () => void): () => void;
}

export const systemSchedulerClock: SchedulerClock = {
  nowMs: () => Date.now(),
  after: (delayMs, fire) => {
    const timer = setTimeout(fire, delayMs);
    return () => clearTimeout(timer);
  },
};

// ---- public types -------------------------------------------------------------------------------------

/** What a framework says of itself at SUBSCRIBE (the server fills in the rest; see frameworks/commands.ts). */
export interface FrameworkInfoSpec {
  readonly name: string;
  /** The shoal namespace its tasks run in. Default `default`. */
  readonly role?: string;
  /** The user its tasks run as. Default `nobody`. */
  readonly user?: string;
  readonly priority?: number;
  /** How long the cluster keeps its tasks after its stream is lost, in seconds. Default 3600. */
  readonly failoverTimeoutSeconds?: number;
  /** The id of a framework registered before (a restarted scheduler taking over its tasks). */
  readonly id?: string;
  /** Unknown tasks are reported TASK_UNKNOWN rather than TASK_LOST. */
  readonly partitionAware?: boolean;
}

export interface SchedulerClientInit {
  /** How to reach a node: the same address forms, TLS and token as ShoalClient. */
  readonly connection: ClientInit;
  /**
   * More nodes' addresses (same TLS and token): after a subscription drops or fails, the next one is tried
   * in turn, so a framework outlives the node it talks to, not only the leader behind it.
   */
  readonly alternates?: readonly string[];
  readonly framework: FrameworkInfoSpec;
  /** Default resubscribeBackoffDefault. */
  readonly backoff?: ResubscribeBackoff;
  /** Uniform in [0, 1); default Math.random. */
  readonly random?: () => number;
  /** Default systemSchedulerClock. */
  readonly clock?: SchedulerClock;
  /** How long a call may wait for a subscription, in ms. Default the connection's timeout (30 s). */
  readonly subscribeWaitMs?: number;
  /**
   * How long the client keeps trying to subscribe again before it gives up, in ms. Default the framework's
   * failover timeout: after it the cluster has dropped the framework and killed its tasks.
   */
  readonly resubscribeForMsMax?: number;
  /**
   * Whether an ERROR event means the framework must stop rather than subscribe again. Default: the
   * subscription was replaced by a newer one of the same framework (another instance took over).
   */
  readonly errorEndsFramework?: (message: string) => boolean;
}

/** One task of an ACCEPT. */
export interface TaskLaunchInfo {
  /** The framework's own id for the task, unique among its tasks. */
  readonly taskId: string;
  /** The node it goes to: an accepted offer's `agent_id`. */
  readonly agentId: string;
  readonly spec: TaskSpec;
}

/** Events the client adds to the wire's: they never come from the server. */
export type SchedulerLocalEvent =
  /** No subscription (the stream ended or broke, or SUBSCRIBE failed); another attempt follows. */
  | {
      readonly type: 'DISCONNECTED';
      readonly reason: string;
      readonly retryInMs: number;
      /** Consecutive attempts so far, from 1. */
      readonly attempt: number;
    }
  /**
   * Subscribed again under the same framework id, after its SUBSCRIBED event. An implicit RECONCILE was
   * sent (its answers follow as UPDATEs without uuid), and a REVIVE when `revived`; `errors` says which of
   * the two failed.
   */
  | {
      readonly type: 'RESUBSCRIBED';
      readonly frameworkId: string;
      readonly revived: boolean;
      readonly errors: readonly string[];
    };

export type SchedulerClientEvent = SchedulerEventJson | SchedulerLocalEvent;

export type SchedulerCallType = SchedulerCallJson['type'];

/** Why a call (or the subscription) failed; `code` is shoal's code (the server's for REFUSED). */
export const schedulerClientErrorReasons = [
  /** The server answered with an error: `status` is its HTTP status (403, 404, 409, …). */
  'REFUSED',
  /** The request never reached a node: it was not carried out. */
  'UNDELIVERED',
  /** Sent, but no answer came: it may or may not have been carried out. */
  'NO_ANSWER',
  /** No subscription to send it on: events() is not being read, or none came within subscribeWaitMs. */
  'NOT_SUBSCRIBED',
  /** close() or teardown() was called, or the subscription failed for good. */
  'CLOSED',
  /** A newer subscription of the same framework replaced this one: another instance took over. */
  'REPLACED',
  /** The server sent something this client does not understand. */
  'PROTOCOL',
  /** No subscription for resubscribeForMsMax. */
  'GAVE_UP',
] as const;
export type SchedulerClientErrorReason = (typeof schedulerClientErrorReasons)[number];

export class SchedulerClientError extends ShoalError {
  readonly reason: SchedulerClientErrorReason;
  /** The call that failed; null for the subscription itself. */
  readonly call: SchedulerCallType | null;
  /** The HTTP status of a REFUSED call; null otherwise. */
  readonly status: number | null;

  constructor(
    reason: SchedulerClientErrorReason,
    code: ShoalErrorCode,
    message: string,
    details: { readonly call?: SchedulerCallType; readonly status?: number; readonly cause?: unknown } = {},
  ) {
    super(code, message, details.cause === undefined ? {} : { cause: details.cause });
    this.reason = reason;
    this.call = details.call ?? null;
    this.status = details.status ?? null;
  }
}

// ---- pure parts ---------------------------------------------------------------------------------------

/**
 * Newline-delimited JSON as it arrives: chunks in, complete lines out, a line split across chunks (a
 * multi-byte character included) kept until its newline. Empty lines are skipped and a trailing "\r" cut.
 */
export class LineSplitter {
  private readonly decoder = new TextDecoder('utf-8', { fatal: false });
  private buffered = '';
  private readonly lineCharsMax: number;

  constructor(lineCharsMax: number = eventLineCharsMax) {
    assert(lineCharsMax > 0, 'lines may hold something');
    this.lineCharsMax = lineCharsMax;
  }

  /** The lines this chunk completes; throws TOO_LARGE when a line outgrows `lineCharsMax`. */
  push(chunk: Uint8Array): string[] {
    this.buffered += this.decoder.decode(chunk, { stream: true });
    const lines: string[] = [];
    let start = 0;
    let newline = this.buffered.indexOf('\n', start);
    while (newline >= 0) {
      const line = this.buffered.slice(start, newline).replace(/\r$/, '');
      if (line.length > this.lineCharsMax) throw this.tooLarge();
      if (line !== '') lines.push(line);
      start = newline + 1;
      newline = this.buffered.indexOf('\n', start);
    }
    this.buffered = this.buffered.slice(start);
    if (this.buffered.length > this.lineCharsMax) throw this.tooLarge();
    return lines;
  }

  /** What came after the last newline: a line cut short when the stream ended (empty when none). */
  rest(): string {
    return this.buffered + this.decoder.decode();
  }

  private tooLarge(): ShoalError {
    return new ShoalError('TOO_LARGE', `an event line exceeds ${this.lineCharsMax} characters`);
  }
}

const idValue = z.object({ value: z.string() });
const offerSchema = z.object({
  id: idValue,
  framework_id: idValue,
  agent_id: idValue,
  hostname: z.string(),
  resources: z.object({
    cpu_millis: z.number(),
    memory_bytes: z.number(),
    disk_bytes: z.number(),
    devices: z.record(z.string(), z.number()),
    ports: z.array(z.object({ begin: z.number(), end: z.number() })),
  }),
  attributes: z.record(z.string(), z.string()),
  expires_at_ms: z.number(),
});
const taskStatusSchema = z.object({
  task_id: idValue,
  state: z.enum(schedulerTaskStates),
  message: z.string(),
  agent_id: z.exactOptional(idValue),
  timestamp: z.number(),
  uuid: z.exactOptional(z.string()),
});
/** SchedulerEventJson checked; extra fields (a newer server's) are dropped. */
const eventSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('SUBSCRIBED'),
    subscribed: z.object({ framework_id: idValue, heartbeat_interval_seconds: z.number().check(z.gt(0)) }),
  }),
  z.object({ type: z.literal('OFFERS'), offers: z.object({ offers: z.array(offerSchema) }) }),
  z.object({ type: z.literal('RESCIND'), rescind: z.object({ offer_id: idValue, reason: z.string() }) }),
  z.object({ type: z.literal('UPDATE'), update: z.object({ status: taskStatusSchema }) }),
  z.object({ type: z.literal('FAILURE'), failure: z.object({ agent_id: idValue }) }),
  z.object({ type: z.literal('ERROR'), error: z.object({ message: z.string() }) }),
  z.object({ type: z.literal('HEARTBEAT') }),
]);
// The schema must produce the wire type: a field it lacks or types otherwise fails to compile here.
const eventSchemaMatchesWire: z.ZodMiniType<SchedulerEventJson> = eventSchema;
/** shoal's usual error line, which ends a stream that failed after its head (api/server.ts streamLines). */
const errorLineSchema = z.object({ error: z.object({ code: z.string(), message: z.string() }) });

/**
 * One line of SUBSCRIBE's answer as an event; PROTOCOL when it is not JSON or not an event of this API.
 * shoal's usual error line (`{"error":{"code","message"}}`) reads as an ERROR event.
 */
export function decodeSchedulerEvent(line: string, from = 'the server'): SchedulerEventJson {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch {
    throw new SchedulerClientError(
      'PROTOCOL',
      'INTERNAL',
      `${from} sent a line that is not JSON: ${line.slice(0, 80)}`,
    );
  }
  const parsed = eventSchemaMatchesWire.safeParse(json);
  if (parsed.success) return parsed.data;
  const failure = errorLineSchema.safeParse(json);
  if (failure.success) {
    return { type: 'ERROR', error: { message: `${failure.data.error.code}: ${failure.data.error.message}` } };
  }
  const type =
    typeof json === 'object' && json !== null && 'type' in json ? JSON.stringify(json.type) : 'none';
  throw new SchedulerClientError(
    'PROTOCOL',
    'INTERNAL',
    `${from} sent an event this client does not understand (type ${type}: ${describeIssues(parsed.error)}); are the framework's shoal and the agent the same version?`,
  );
}

/** The wait before retry `attempt` (from 0), in ms; `random` is uniform in [0, 1). */
export function backoffDelayMs(attempt: number, backoff: ResubscribeBackoff, random: () => number): number {
  assert(Number.isInteger(attempt) && attempt >= 0, `attempt ${attempt} counts from 0`);
  const r = random();
  assert(r >= 0 && r < 1, `random() gave ${r}, not in [0, 1)`);
  const ceilingMs = Math.min(backoff.maxMs, backoff.initialMs * backoff.multiplier ** attempt);
  return Math.round(ceilingMs * (1 - backoff.jitter * r));
}

/** A backoff's problem in one line, or null when it is usable. */
export function backoffProblem(backoff: ResubscribeBackoff): string | null {
  if (!(backoff.initialMs > 0)) return `backoff initialMs must be positive, not ${backoff.initialMs}`;
  if (!(backoff.maxMs >= backoff.initialMs))
    return `backoff maxMs (${backoff.maxMs}) must be at least initialMs (${backoff.initialMs})`;
  if (!(backoff.multiplier >= 1)) return `backoff multiplier must be at least 1, not ${backoff.multiplier}`;
  if (!(backoff.jitter >= 0 && backoff.jitter <= 1))
    return `backoff jitter must be 0–1, not ${backoff.jitter}`;
  return null;
}

/** SUBSCRIBE's body; `frameworkId` (known from an earlier SUBSCRIBED) wins over the info's id. */
export function subscribeCall(info: FrameworkInfoSpec, frameworkId: string | null): SchedulerCallJson {
  const id = frameworkId ?? info.id;
  return {
    type: 'SUBSCRIBE',
    subscribe: {
      framework_info: {
        name: info.name,
        ...(info.user === undefined ? {} : { user: info.user }),
        ...(info.role === undefined ? {} : { role: info.role }),
        ...(id === undefined ? {} : { id: { value: id } }),
        ...(info.failoverTimeoutSeconds === undefined
          ? {}
          : { failover_timeout: info.failoverTimeoutSeconds }),
        ...(info.priority === undefined ? {} : { priority: info.priority }),
        ...(info.partitionAware === true ? { capabilities: [{ type: 'PARTITION_AWARE' as const }] } : {}),
      },
    },
  };
}

/** Whether SUBSCRIBE is worth trying again after this failure: no answer, or a 5xx (no leader yet). */
export function isRetryable(error: SchedulerClientError): boolean {
  switch (error.reason) {
    case 'UNDELIVERED':
    case 'NO_ANSWER':
      return true;
    case 'REFUSED':
      return error.status === null || error.status >= 500;
    case 'NOT_SUBSCRIBED':
    case 'CLOSED':
    case 'REPLACED':
    case 'PROTOCOL':
    case 'GAVE_UP':
      return false;
  }
}

/** The default errorEndsFramework: the message registry.ts sends to a replaced stream. */
export function isReplacedMessage(message: string): boolean {
  return /failed over|\breplaced\b/i.test(message);
}

/**
 * Whether a REVIVE or SUPPRESS that failed this way is worth sending again on the next subscription: no
 * answer or not sent (the leader went away), a 5xx (no leader yet), or 409 (the stream ended with the old
 * leader). Never a refusal of the call itself.
 */
export function resendsWanted(error: SchedulerClientError): boolean {
  if (error.reason === 'REFUSED') return error.status === 409 || isRetryable(error);
  return isRetryable(error);
}

/** A failure of ShoalClient.post as this API's error, naming the call. */
export function callFailure(call: SchedulerCallType, error: unknown): SchedulerClientError {
  if (error instanceof SchedulerClientError) return error;
  const message = errorMessage(error);
  const delivery = error instanceof ShoalError ? deliveryOf(error.cause) : null;
  const code = error instanceof ShoalError ? error.code : 'UNAVAILABLE';
  // 504: the node took the call but cannot tell whether it was carried out (the leader went away meanwhile):
  // as good as no answer — a framework reconciles rather than doing it again.
  if (delivery !== null && delivery.kind === 'answer' && delivery.status !== 504)
    return new SchedulerClientError('REFUSED', code, `${call} refused: ${message}`, {
      call,
      status: delivery.status,
      cause: error,
    });
  switch (delivery?.kind) {
    case 'undelivered':
      return new SchedulerClientError('UNDELIVERED', code, `${call} not sent: ${message}`, {
        call,
        cause: error,
      });
    case 'answer':
    case 'unknown':
    case undefined:
      return new SchedulerClientError('NO_ANSWER', code, `${call} unanswered: ${message}`, {
        call,
        cause: error,
      });
  }
}

function deliveryOf(cause: unknown): Delivery | null {
  if (typeof cause !== 'object' || cause === null || !('kind' in cause)) return null;
  if (cause.kind === 'answer' && 'status' in cause && typeof cause.status === 'number')
    return { kind: 'answer', status: cause.status, body: null };
  if ((cause.kind === 'undelivered' || cause.kind === 'unknown') && 'error' in cause)
    return { kind: cause.kind, error: String(cause.error) };
  return null;
}

// ---- the queue between the stream and the framework --------------------------------------------------

/** A bounded queue with one reader: `push` waits while it is full, `take` while it is empty. */
class EventQueue<T> {
  private readonly items: T[] = [];
  private ended = false;
  private failure: { readonly error: unknown } | null = null;
  private wakeTaker: (() => void) | null = null;
  private wakePushers: (() => void)[] = [];

  private readonly itemsMax: number;

  constructor(itemsMax: number) {
    assert(itemsMax > 0, 'a queue holds something');
    this.itemsMax = itemsMax;
  }

  /** Queues `item` once there is room; false (the item dropped) once the queue has ended. */
  async push(item: T): Promise<boolean> {
    while (!this.ended && this.items.length >= this.itemsMax) {
      await new Promise<void>((resolve) => this.wakePushers.push(resolve));
    }
    if (this.ended) return false;
    this.items.push(item);
    this.wake();
    return true;
  }

  /** The next item; done once ended and drained; throws the error it ended with after the items. */
  async take(): Promise<IteratorResult<T, undefined>> {
    for (;;) {
      if (this.items.length > 0) {
        const value = this.items.shift() as T;
        this.wakePushers.shift()?.();
        return { done: false, value };
      }
      if (this.failure !== null) throw this.failure.error;
      if (this.ended) return { done: true, value: undefined };
      await new Promise<void>((resolve) => (this.wakeTaker = resolve));
    }
  }

  /** No more items: the reader drains what is queued, then gets done (or `error`); `discard` drops it. */
  end(error: unknown, discard: boolean): void {
    if (this.ended) return;
    this.ended = true;
    if (error !== null) this.failure = { error };
    if (discard) this.items.length = 0;
    for (const wake of this.wakePushers.splice(0)) wake();
    this.wake();
  }

  private wake(): void {
    const wake = this.wakeTaker;
    this.wakeTaker = null;
    wake?.();
  }
}

// ---- the client ---------------------------------------------------------------------------------------

interface Session {
  readonly frameworkId: string;
  readonly streamId: string;
}

interface Waiter {
  readonly resolve: (session: Session) => void;
  readonly reject: (error: Error) => void;
}

interface StreamOutcome {
  /** Why it ended, for DISCONNECTED. */
  readonly reason: string;
  /** When SUBSCRIBED came on it; null if it never did. */
  readonly subscribedAtMs: number | null;
  readonly heartbeatMs: number | null;
  /** The ERROR that says the framework must stop; null otherwise. */
  readonly endingError: string | null;
}

/**
 * A framework's connection to the cluster. Read `events()` (one loop, once): it subscribes, and keeps a
 * subscription until close(), teardown(), or a failure that another attempt cannot mend (it then throws a
 * SchedulerClientError). Calls go over the current subscription.
 */
export class SchedulerClient {
  /** One client per node it may talk to; `current` is the one in use. */
  private readonly clients: readonly ShoalClient[];
  private current = 0;
  private readonly framework: FrameworkInfoSpec;
  private readonly backoff: ResubscribeBackoff;
  private readonly random: () => number;
  private readonly clock: SchedulerClock;
  private readonly callTimeoutMs: number;
  private readonly subscribeWaitMs: number;
  private readonly resubscribeForMsMax: number;
  private readonly errorEndsFramework: (message: string) => boolean;
  private readonly queue = new EventQueue<SchedulerClientEvent>(eventsBufferedMax);
  /** Aborted by close(): the SUBSCRIBE in flight, the stream, and calls in flight. */
  private readonly lifetime = new AbortController();

  private phase: 'idle' | 'running' | 'closed' = 'idle';
  private closeReason = 'the client was closed';
  private knownFrameworkId: string | null;
  private session: Session | null = null;
  private waiters = new Set<Waiter>();
  private lastDropReason = 'not subscribed yet';
  /** What the framework last asked for (REVIVE or SUPPRESS), resent after a new subscription. */
  private wantsOffers = false;
  private reviveMinimum: { readonly cpuMillis?: number; readonly memoryBytes?: number } | undefined;
  private stream: IncomingMessage | null = null;
  private wakeSleeper: (() => void) | null = null;

  constructor(init: SchedulerClientInit) {
    const backoff = init.backoff ?? resubscribeBackoffDefault;
    const problem = backoffProblem(backoff);
    if (problem !== null) throw new ShoalError('INVALID_ARGUMENT', problem);
    this.clients = [init.connection.address, ...(init.alternates ?? [])].map(
      (address) => new ShoalClient({ ...init.connection, address }),
    );
    this.framework = init.framework;
    this.backoff = backoff;
    this.random = init.random ?? Math.random;
    this.clock = init.clock ?? systemSchedulerClock;
    this.callTimeoutMs = init.connection.timeoutMs ?? clientTimeoutMsDefault;
    this.subscribeWaitMs = init.subscribeWaitMs ?? this.callTimeoutMs;
    this.resubscribeForMsMax =
      init.resubscribeForMsMax ??
      (init.framework.failoverTimeoutSeconds === undefined
        ? failoverTimeoutMsDefault
        : init.framework.failoverTimeoutSeconds * 1000);
    this.errorEndsFramework = init.errorEndsFramework ?? isReplacedMessage;
    this.knownFrameworkId = init.framework.id ?? null;
    // Every call in flight listens for close(), and stops listening once answered: no leak to warn of.
    setMaxListeners(0, this.lifetime.signal);
  }

  /** The node in use now. */
  private get client(): ShoalClient {
    const client = this.clients[this.current % this.clients.length];
    assert(client !== undefined, 'a scheduler client has at least one address');
    return client;
  }

  /** The framework's id: given, or assigned by the first SUBSCRIBED; null before. */
  get frameworkId(): string | null {
    return this.knownFrameworkId;
  }

  /** Whether a subscription is up now (calls go out at once). */
  get subscribed(): boolean {
    return this.session !== null;
  }

  /** Whether the framework last asked for no offers (SUPPRESS, or no REVIVE yet: subscriptions start so). */
  get suppressed(): boolean {
    return !this.wantsOffers;
  }

  /**
   * The events: the wire's (SUBSCRIBED first) and the client's own (DISCONNECTED, RESUBSCRIBED). Ends after
   * close() or teardown(); throws a SchedulerClientError when the subscription fails for good (REFUSED with
   * a 4xx, REPLACED, PROTOCOL, GAVE_UP). Leaving the loop closes the client.
   */
  async *events(
    options: { readonly signal?: AbortSignal } = {},
  ): AsyncGenerator<SchedulerClientEvent, void, undefined> {
    assert(this.phase === 'idle', 'events() is read by one loop, once per client');
    this.phase = 'running';
    const stop = (): void => this.close();
    options.signal?.addEventListener('abort', stop, { once: true });
    const running = this.run();
    if (options.signal?.aborted === true) stop();
    try {
      for (;;) {
        const next = await this.queue.take();
        if (next.done === true) return;
        yield next.value;
      }
    } finally {
      options.signal?.removeEventListener('abort', stop);
      this.close();
      await running;
    }
  }

  /** Launches tasks on one or more offers (several tasks per offer, offers on one or several nodes). */
  accept(
    offerIds: readonly string[],
    tasks: readonly TaskLaunchInfo[],
    options: { readonly refuseSeconds?: number } = {},
  ): Promise<void> {
    return this.send('ACCEPT', (frameworkId) => ({
      type: 'ACCEPT',
      framework_id: { value: frameworkId },
      accept: {
        offer_ids: offerIds.map((value) => ({ value })),
        operations: [
          {
            type: 'LAUNCH',
            launch: {
              task_infos: tasks.map((task) => ({
                task_id: { value: task.taskId },
                agent_id: { value: task.agentId },
                spec: task.spec,
              })),
            },
          },
        ],
        ...refuse(options.refuseSeconds),
      },
    }));
  }

  /** Gives offers back; their nodes are not offered again for `refuseSeconds` (server default 5) or a REVIVE. */
  decline(offerIds: readonly string[], options: { readonly refuseSeconds?: number } = {}): Promise<void> {
    return this.send('DECLINE', (frameworkId) => ({
      type: 'DECLINE',
      framework_id: { value: frameworkId },
      decline: { offer_ids: offerIds.map((value) => ({ value })), ...refuse(options.refuseSeconds) },
    }));
  }

  /**
   * Asks for offers (again), clearing DECLINE filters; with `minimum`, only nodes with at least that much
   * room are offered. Remembered: a new subscription is revived the same way.
   */
  revive(minimum?: { readonly cpuMillis?: number; readonly memoryBytes?: number }): Promise<void> {
    this.wantsOffers = true;
    this.reviveMinimum = minimum;
    return this.sendWanted(true, 'REVIVE', (frameworkId) => reviveCall(frameworkId, minimum));
  }

  /** No more offers until revive(). Remembered: a new subscription is not revived. */
  suppress(): Promise<void> {
    this.wantsOffers = false;
    return this.sendWanted(false, 'SUPPRESS', (frameworkId) => ({
      type: 'SUPPRESS',
      framework_id: { value: frameworkId },
    }));
  }

  kill(taskId: string, agentId?: string): Promise<void> {
    return this.send('KILL', (frameworkId) => ({
      type: 'KILL',
      framework_id: { value: frameworkId },
      kill: {
        task_id: { value: taskId },
        ...(agentId === undefined ? {} : { agent_id: { value: agentId } }),
      },
    }));
  }

  /**
   * Acknowledges an UPDATE's status so it is not sent again. Statuses without uuid (answers to RECONCILE)
   * need none: resolves false without a call.
   */
  async acknowledge(status: TaskStatusJson): Promise<boolean> {
    const uuid = status.uuid;
    if (uuid === undefined) return false;
    await this.send('ACKNOWLEDGE', (frameworkId) => ({
      type: 'ACKNOWLEDGE',
      framework_id: { value: frameworkId },
      acknowledge: {
        task_id: status.task_id,
        uuid,
        ...(status.agent_id === undefined ? {} : { agent_id: status.agent_id }),
      },
    }));
    return true;
  }

  /** Asks for the latest status of these tasks (UPDATEs without uuid follow); none named: all of them. */
  reconcile(taskIds: readonly string[] = []): Promise<void> {
    return this.send('RECONCILE', (frameworkId) => reconcileCall(frameworkId, taskIds));
  }

  /** Unregisters the framework (the cluster kills its tasks), then closes the client: events() ends. */
  async teardown(): Promise<void> {
    await this.send('TEARDOWN', (frameworkId) => ({
      type: 'TEARDOWN',
      framework_id: { value: frameworkId },
    }));
    this.closeReason = 'the framework was torn down';
    this.close();
  }

  /**
   * Stops: ends the stream (the cluster keeps the framework's tasks for its failover timeout), fails calls
   * waiting for a subscription, and ends events(). Idempotent.
   */
  close(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.session = null;
    this.lifetime.abort();
    this.stream?.destroy();
    this.wakeSleeper?.();
    this.rejectWaiters(
      new SchedulerClientError('CLOSED', 'UNAVAILABLE', `${this.closeReason}: no more calls`),
    );
    this.queue.end(null, true);
    for (const client of this.clients) client.close();
  }

  // ---- the subscription loop ----

  /** Whether close() was called (a method, so that checks after an await are not narrowed away). */
  private stopped(): boolean {
    return this.phase !== 'running';
  }

  private async run(): Promise<void> {
    let attempt = 0;
    let downSinceMs = this.clock.nowMs();
    let resubscription = false;
    try {
      while (!this.stopped()) {
        let reason: string;
        const opened = await this.open();
        if (this.stopped()) break;
        if (opened instanceof SchedulerClientError) {
          if (!isRetryable(opened)) throw opened;
          reason = opened.message;
        } else {
          const outcome = await this.read(opened.response, opened.streamId, resubscription);
          if (this.stopped()) break;
          if (outcome.endingError !== null) {
            throw new SchedulerClientError(
              'REPLACED',
              'CONFLICT',
              `the framework's subscription ended for good: ${outcome.endingError}`,
            );
          }
          if (outcome.subscribedAtMs !== null) {
            resubscription = true;
            downSinceMs = this.clock.nowMs();
            // A stream that lived at least a heartbeat interval counts as a success: start the backoff over.
            // One that ends at once (a flapping node) keeps backing off.
            if (downSinceMs - outcome.subscribedAtMs >= (outcome.heartbeatMs ?? 0)) attempt = 0;
          }
          reason = outcome.reason;
        }
        const downMs = this.clock.nowMs() - downSinceMs;
        if (downMs > this.resubscribeForMsMax) {
          throw new SchedulerClientError(
            'GAVE_UP',
            'UNAVAILABLE',
            `no subscription for ${Math.round(downMs / 1000)} s (more than ${this.resubscribeForMsMax / 1000} s, after which the cluster drops the framework); last: ${reason}`,
          );
        }
        const retryInMs = backoffDelayMs(attempt, this.backoff, this.random);
        attempt += 1;
        this.lastDropReason = reason;
        await this.queue.push({ type: 'DISCONNECTED', reason, retryInMs, attempt });
        // The next node in turn: the one just used may be the one that is gone.
        this.current = (this.current + 1) % this.clients.length;
        await this.sleep(retryInMs);
      }
      this.queue.end(null, false);
    } catch (error) {
      const failure = error instanceof Error ? error : new Error(String(error));
      this.closeReason = `the subscription failed (${failure.message})`;
      this.rejectWaiters(
        new SchedulerClientError('CLOSED', 'UNAVAILABLE', this.closeReason, { cause: failure }),
      );
      this.queue.end(failure, false);
      this.close();
    }
  }

  /** Sends SUBSCRIBE: its answer's stream and stream id, or why not. */
  private async open(): Promise<{ response: IncomingMessage; streamId: string } | SchedulerClientError> {
    let response: IncomingMessage;
    try {
      response = await this.client.post(
        routes.scheduler.path,
        subscribeCall(this.framework, this.knownFrameworkId),
        {
          timeoutMs: this.callTimeoutMs,
          signal: this.lifetime.signal,
        },
      );
    } catch (error) {
      return callFailure('SUBSCRIBE', error);
    }
    const streamId = response.headers[streamIdHeader];
    if (typeof streamId !== 'string' || streamId === '') {
      response.destroy();
      return new SchedulerClientError(
        'PROTOCOL',
        'INTERNAL',
        `${this.client.address} answered SUBSCRIBE ${response.statusCode ?? 0} without a ${streamIdHeader} header; is it a shoal agent with the scheduler API?`,
        { call: 'SUBSCRIBE' },
      );
    }
    return { response, streamId };
  }

  /** Reads one subscription's stream into the queue until it ends, breaks or falls silent. */
  private async read(
    response: IncomingMessage,
    streamId: string,
    resubscription: boolean,
  ): Promise<StreamOutcome> {
    this.stream = response;
    const splitter = new LineSplitter();
    const chunks = (response as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    // Until SUBSCRIBED, as long as a call may take; then a few heartbeat intervals.
    let silenceMsMax = this.callTimeoutMs;
    let subscribedAtMs: number | null = null;
    let heartbeatMs: number | null = null;
    let lastError: string | null = null;
    let reason: string;
    try {
      for (;;) {
        // The watchdog runs only while waiting for data: while the queue is full the stream is not read.
        const silenceMs = silenceMsMax;
        const cancel = this.clock.after(silenceMs, () => {
          response.destroy(new Error(`no event for ${silenceMs / 1000} s`));
        });
        let next: IteratorResult<Buffer>;
        try {
          next = await chunks.next();
        } finally {
          cancel();
        }
        if (next.done === true) break;
        for (const line of splitter.push(next.value)) {
          const event = decodeSchedulerEvent(line, this.client.address);
          if (event.type === 'SUBSCRIBED') {
            const frameworkId = event.subscribed.framework_id.value;
            if (this.knownFrameworkId !== null && frameworkId !== this.knownFrameworkId) {
              throw new SchedulerClientError(
                'PROTOCOL',
                'INTERNAL',
                `subscribed as ${this.knownFrameworkId} but SUBSCRIBED names ${frameworkId}`,
              );
            }
            this.knownFrameworkId = frameworkId;
            heartbeatMs = event.subscribed.heartbeat_interval_seconds * 1000;
            silenceMsMax = heartbeatMs * heartbeatsMissedMax;
            subscribedAtMs = this.clock.nowMs();
            // The session first: a framework blocked on a call must not wait behind a full queue.
            this.session = { frameworkId, streamId };
            for (const waiter of this.takeWaiters()) waiter.resolve(this.session);
            await this.queue.push(event);
            if (resubscription) await this.queue.push(await this.afterResubscribe(frameworkId));
            continue;
          }
          if (event.type === 'ERROR') lastError = event.error.message;
          if (!(await this.queue.push(event))) break;
        }
        if (this.stopped()) break;
      }
      reason = lastError === null ? 'the stream ended' : `the stream ended with ERROR: ${lastError}`;
    } catch (error) {
      if (
        error instanceof SchedulerClientError ||
        (error instanceof ShoalError && error.code === 'TOO_LARGE')
      ) {
        throw error;
      }
      reason = `the stream broke: ${errorMessage(error)}`;
    } finally {
      this.session = null;
      this.stream = null;
      response.destroy();
    }
    const endingError = lastError !== null && this.errorEndsFramework(lastError) ? lastError : null;
    return { reason, subscribedAtMs, heartbeatMs, endingError };
  }

  /** After a new subscription: an implicit RECONCILE, and a REVIVE unless the framework had suppressed. */
  private async afterResubscribe(frameworkId: string): Promise<SchedulerLocalEvent> {
    const errors: string[] = [];
    try {
      await this.send('RECONCILE', (id) => reconcileCall(id, []));
    } catch (error) {
      errors.push(errorMessage(error));
    }
    let revived = false;
    if (this.wantsOffers) {
      try {
        await this.send('REVIVE', (id) => reviveCall(id, this.reviveMinimum));
        revived = true;
      } catch (error) {
        errors.push(errorMessage(error));
      }
    }
    return { type: 'RESUBSCRIBED', frameworkId, revived, errors };
  }

  private sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => {
      const cancel = this.clock.after(delayMs, wake);
      function wake(): void {
        cancel();
        resolve();
      }
      this.wakeSleeper = wake;
    });
  }

  // ---- calls ----

  private async send(
    type: SchedulerCallType,
    build: (frameworkId: string) => SchedulerCallJson,
  ): Promise<void> {
    const session = await this.currentSession(type);
    let response: IncomingMessage;
    try {
      response = await this.client.post(routes.scheduler.path, build(session.frameworkId), {
        headers: { [streamIdHeader]: session.streamId },
        timeoutMs: this.callTimeoutMs,
        signal: this.lifetime.signal,
      });
    } catch (error) {
      throw callFailure(type, error);
    }
    let bytes = 0;
    try {
      for await (const chunk of response as AsyncIterable<Buffer>) {
        bytes += chunk.length;
        if (bytes > callAnswerBytesMax) break;
      }
    } catch {
      // The answer's status is what counts; its body (`{}`) need not arrive whole.
    } finally {
      response.destroy();
    }
  }

  /**
   * REVIVE and SUPPRESS set what the framework wants, and both are idempotent. When the leader goes away
   * under one (no answer, a 5xx, or 409 from a new leader that never had the stream) it is sent again,
   * with backoff, on the subscription that follows, until subscribeWaitMs has passed, rather than failing
   * a framework for a failover it can do nothing about. Settled without sending once the framework has
   * asked for the opposite meanwhile.
   */
  private async sendWanted(
    wantsOffers: boolean,
    type: 'REVIVE' | 'SUPPRESS',
    build: (frameworkId: string) => SchedulerCallJson,
  ): Promise<void> {
    const deadlineMs = this.clock.nowMs() + this.subscribeWaitMs;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.send(type, build);
        return;
      } catch (error) {
        if (!(error instanceof SchedulerClientError) || !resendsWanted(error)) throw error;
        if (this.clock.nowMs() >= deadlineMs || this.phase !== 'running') throw error;
      }
      await new Promise<void>((resolve) =>
        this.clock.after(Math.min(backoffDelayMs(attempt, this.backoff, this.random), 1000), resolve),
      );
      if (this.wantsOffers !== wantsOffers) return;
    }
  }

  /** The subscription to send on, waiting up to subscribeWaitMs for one. */
  private currentSession(type: SchedulerCallType): Promise<Session> {
    if (this.session !== null) return Promise.resolve(this.session);
    if (this.phase === 'idle') {
      return Promise.reject(
        new SchedulerClientError(
          'NOT_SUBSCRIBED',
          'UNAVAILABLE',
          `${type}: not subscribed; read events() first, calls go over its subscription`,
          { call: type },
        ),
      );
    }
    if (this.phase === 'closed') {
      return Promise.reject(
        new SchedulerClientError('CLOSED', 'UNAVAILABLE', `${type}: ${this.closeReason}`, { call: type }),
      );
    }
    return new Promise((resolve, reject) => {
      const cancel = this.clock.after(this.subscribeWaitMs, () => {
        this.waiters.delete(waiter);
        reject(
          new SchedulerClientError(
            'NOT_SUBSCRIBED',
            'UNAVAILABLE',
            `${type}: no subscription within ${this.subscribeWaitMs / 1000} s (${this.lastDropReason})`,
            { call: type },
          ),
        );
      });
      const waiter: Waiter = {
        resolve: (session) => {
          cancel();
          resolve(session);
        },
        reject: (error) => {
          cancel();
          reject(error);
        },
      };
      this.waiters.add(waiter);
    });
  }

  private takeWaiters(): Waiter[] {
    const waiters = [...this.waiters];
    this.waiters = new Set();
    return waiters;
  }

  private rejectWaiters(error: Error): void {
    for (const waiter of this.takeWaiters()) waiter.reject(error);
  }
}

function refuse(refuseSeconds: number | undefined): { filters?: { refuse_seconds: number } } {
  return refuseSeconds === undefined ? {} : { filters: { refuse_seconds: refuseSeconds } };
}

function reviveCall(
  frameworkId: string,
  minimum: { readonly cpuMillis?: number; readonly memoryBytes?: number } | undefined,
): SchedulerCallJson {
  return {
    type: 'REVIVE',
    framework_id: { value: frameworkId },
    ...(minimum === undefined
      ? {}
      : {
          revive: {
            minimum: {
              ...(minimum.cpuMillis === undefined ? {} : { cpu_millis: minimum.cpuMillis }),
              ...(minimum.memoryBytes === undefined ? {} : { memory_bytes: minimum.memoryBytes }),
            },
          },
        }),
  };
}

function reconcileCall(frameworkId: string, taskIds: readonly string[]): SchedulerCallJson {
  return {
    type: 'RECONCILE',
    framework_id: { value: frameworkId },
    ...(taskIds.length === 0
      ? {}
      : { reconcile: { tasks: taskIds.map((value) => ({ task_id: { value } })) } }),
  };
}
