/**
 * The scheduler API's wire format (`POST /v1/scheduler`): Mesos's v1 scheduler HTTP API in its JSON form —
 * the same call and event names, `{"value": …}` ids, snake_case — with shoal's units where Mesos has bare
 * numbers (`cpu_millis`, `memory_bytes`, seconds only where Mesos names them: `refuse_seconds`,
 * `failover_timeout`, `heartbeat_interval_seconds`). A task to launch is shoal's own task spec, as
 * `POST /v1/tasks` takes it. One home for the format: the server decodes calls and encodes events here, and
 * the TypeScript client (scheduler-client.ts) does the reverse with the same types.
 *
 * Calls (request bodies): SUBSCRIBE, then with the `Shoal-Stream-Id` header SUBSCRIBE's answer carried:
 * ACCEPT, DECLINE, REVIVE, SUPPRESS, KILL, ACKNOWLEDGE, RECONCILE, TEARDOWN. Events (newline-delimited JSON
 * on SUBSCRIBE's answer): SUBSCRIBED, OFFERS, RESCIND, UPDATE, FAILURE, ERROR, HEARTBEAT.
 */
import * as z from 'zod/mini';
import { describeIssues, identifier, taskSpecSchema, type TaskSpec } from '../cluster/index.ts';
import {
  failoverTimeoutMsMax,
  frameworkTaskStates,
  idLengthMax,
  offersPerCallMax,
  reconcileTasksMax,
  refuseMsMax,
  tasksPerAcceptMax,
  type FrameworkInfoInput,
  type FrameworkTaskState,
  type Offer,
  type SchedulerCall,
  type SchedulerEvent,
} from '../frameworks/index.ts';
import { ShoalError } from '../shared/errors.ts';

/** The header SUBSCRIBE's answer carries and every later call must send back. */
export const streamIdHeader = 'shoal-stream-id';

const idValue = z.strictObject({ value: z.string().check(z.minLength(1), z.maxLength(idLengthMax)) });
function seconds(max: number): z.ZodMiniNumber {
  return z.number().check(z.gte(0), z.lte(max));
}
const filters = z.exactOptional(
  z.strictObject({ refuse_seconds: z.exactOptional(seconds(refuseMsMax / 1000)) }),
);

const subscribeCall = z.strictObject({
  type: z.literal('SUBSCRIBE'),
  subscribe: z.strictObject({
    framework_info: z.strictObject({
      name: z.string(),
      user: z.exactOptional(z.string()),
      // A namespace: its weight and quota govern the framework's share.
      role: z.exactOptional(identifier('a framework role (a namespace name)', 64)),
      id: z.exactOptional(idValue),
      failover_timeout: z.exactOptional(seconds(failoverTimeoutMsMax / 1000)),
      priority: z.exactOptional(z.number()),
      capabilities: z.exactOptional(
        z.array(z.strictObject({ type: z.enum(['PARTITION_AWARE']) })).check(z.maxLength(8)),
      ),
    }),
  }),
});

const taskInfo = z.strictObject({
  task_id: idValue,
  agent_id: idValue,
  spec: taskSpecSchema,
});

const callSchema = z.discriminatedUnion('type', [
  subscribeCall,
  z.strictObject({
    type: z.literal('ACCEPT'),
    framework_id: idValue,
    accept: z.strictObject({
      offer_ids: z.array(idValue).check(z.minLength(1), z.maxLength(offersPerCallMax)),
      operations: z
        .array(
          z.strictObject({
            type: z.literal('LAUNCH'),
            launch: z.strictObject({
              task_infos: z.array(taskInfo).check(z.maxLength(tasksPerAcceptMax)),
            }),
          }),
        )
        .check(z.maxLength(16)),
      filters,
    }),
  }),
  z.strictObject({
    type: z.literal('DECLINE'),
    framework_id: idValue,
    decline: z.strictObject({
      offer_ids: z.array(idValue).check(z.minLength(1), z.maxLength(offersPerCallMax)),
      filters,
    }),
  }),
  z.strictObject({
    type: z.literal('REVIVE'),
    framework_id: idValue,
    revive: z.exactOptional(
      z.strictObject({
        minimum: z.exactOptional(
          z.strictObject({
            cpu_millis: z.exactOptional(z.int().check(z.gte(0))),
            memory_bytes: z.exactOptional(z.int().check(z.gte(0))),
          }),
        ),
      }),
    ),
  }),
  z.strictObject({ type: z.literal('SUPPRESS'), framework_id: idValue }),
  z.strictObject({
    type: z.literal('KILL'),
    framework_id: idValue,
    kill: z.strictObject({ task_id: idValue, agent_id: z.exactOptional(idValue) }),
  }),
  z.strictObject({
    type: z.literal('ACKNOWLEDGE'),
    framework_id: idValue,
    acknowledge: z.strictObject({
      task_id: idValue,
      uuid: z.string().check(z.minLength(1), z.maxLength(idLengthMax)),
      agent_id: z.exactOptional(idValue),
    }),
  }),
  z.strictObject({
    type: z.literal('RECONCILE'),
    framework_id: idValue,
    reconcile: z.exactOptional(
      z.strictObject({
        tasks: z
          .array(z.strictObject({ task_id: idValue, agent_id: z.exactOptional(idValue) }))
          .check(z.maxLength(reconcileTasksMax)),
      }),
    ),
  }),
  z.strictObject({ type: z.literal('TEARDOWN'), framework_id: idValue }),
]);

/** A call as it arrives, validated: JSON of the types above. */
export type SchedulerCallJson = z.infer<typeof callSchema>;

/** What a decoded call is: a subscription, or a call of a subscribed framework. */
export type DecodedCall =
  | { readonly type: 'SUBSCRIBE'; readonly info: FrameworkInfoInput; readonly frameworkId: string | null }
  | SchedulerCall<TaskSpec>;

/** A request body as a call; INVALID_ARGUMENT in one line naming the field otherwise. */
export function decodeSchedulerCall(body: unknown): DecodedCall {
  const parsed = callSchema.safeParse(body);
  if (!parsed.success) {
    const type =
      typeof body === 'object' && body !== null && 'type' in body ? JSON.stringify(body.type) : 'none';
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `not a scheduler call (type ${type}; calls are SUBSCRIBE, ACCEPT, DECLINE, REVIVE, SUPPRESS, KILL, ACKNOWLEDGE, RECONCILE, TEARDOWN): ${describeIssues(parsed.error)}`,
    );
  }
  const call = parsed.data;
  const refuseMs = (f: { refuse_seconds?: number } | undefined): { refuseMs?: number } =>
    f?.refuse_seconds === undefined ? {} : { refuseMs: Math.round(f.refuse_seconds * 1000) };
  switch (call.type) {
    case 'SUBSCRIBE': {
      const info = call.subscribe.framework_info;
      return {
        type: 'SUBSCRIBE',
        frameworkId: info.id?.value ?? null,
        info: {
          name: info.name,
          user: info.user ?? 'nobody',
          ...(info.role === undefined ? {} : { role: info.role }),
          ...(info.priority === undefined ? {} : { priority: info.priority }),
          ...(info.failover_timeout === undefined
            ? {}
            : { failoverTimeoutMs: Math.round(info.failover_timeout * 1000) }),
          // PARTITION_AWARE is the one capability the schema takes.
          partitionAware: (info.capabilities ?? []).length > 0,
        },
      };
    }
    case 'ACCEPT':
      return {
        type: 'ACCEPT',
        frameworkId: call.framework_id.value,
        offerIds: call.accept.offer_ids.map((offer) => offer.value),
        tasks: call.accept.operations.flatMap((operation) =>
          operation.launch.task_infos.map((task) => ({
            taskId: task.task_id.value,
            nodeId: task.agent_id.value,
            resources: {
              cpuMillis: task.spec.cpuMillis,
              memoryBytes: task.spec.memoryBytes,
              ...(task.spec.diskBytes === undefined ? {} : { diskBytes: task.spec.diskBytes }),
              ...(task.spec.devices === undefined ? {} : { devices: task.spec.devices }),
              ...(task.spec.ports === undefined ? {} : { ports: Object.values(task.spec.ports) }),
            },
            spec: task.spec,
          })),
        ),
        ...refuseMs(call.accept.filters),
      };
    case 'DECLINE':
      return {
        type: 'DECLINE',
        frameworkId: call.framework_id.value,
        offerIds: call.decline.offer_ids.map((offer) => offer.value),
        ...refuseMs(call.decline.filters),
      };
    case 'REVIVE': {
      const minimum = call.revive?.minimum;
      return {
        type: 'REVIVE',
        frameworkId: call.framework_id.value,
        ...(minimum === undefined
          ? {}
          : { minimum: { cpuMillis: minimum.cpu_millis ?? 0, memoryBytes: minimum.memory_bytes ?? 0 } }),
      };
    }
    case 'SUPPRESS':
      return { type: 'SUPPRESS', frameworkId: call.framework_id.value };
    case 'KILL':
      return { type: 'KILL', frameworkId: call.framework_id.value, taskId: call.kill.task_id.value };
    case 'ACKNOWLEDGE':
      return {
        type: 'ACKNOWLEDGE',
        frameworkId: call.framework_id.value,
        taskId: call.acknowledge.task_id.value,
        uuid: call.acknowledge.uuid,
      };
    case 'RECONCILE':
      return {
        type: 'RECONCILE',
        frameworkId: call.framework_id.value,
        taskIds: (call.reconcile?.tasks ?? []).map((task) => task.task_id.value),
      };
    case 'TEARDOWN':
      return { type: 'TEARDOWN', frameworkId: call.framework_id.value };
  }
}

// ---- events -------------------------------------------------------------------------------------------

export interface OfferJson {
  readonly id: { readonly value: string };
  readonly framework_id: { readonly value: string };
  readonly agent_id: { readonly value: string };
  /** The node's name. */
  readonly hostname: string;
  readonly resources: {
    readonly cpu_millis: number;
    readonly memory_bytes: number;
    readonly disk_bytes: number;
    readonly devices: Readonly<Record<string, number>>;
    readonly ports: readonly { readonly begin: number; readonly end: number }[];
  };
  /** The node's labels (Mesos's attributes). */
  readonly attributes: Readonly<Record<string, string>>;
  /** When it is rescinded unless answered, in ms since the epoch. */
  readonly expires_at_ms: number;
}

export interface TaskStatusJson {
  readonly task_id: { readonly value: string };
  readonly state: FrameworkTaskState;
  readonly message: string;
  readonly agent_id?: { readonly value: string };
  /** Seconds since the epoch, as Mesos's timestamp. */
  readonly timestamp: number;
  /** Present on updates to acknowledge; absent on answers to RECONCILE. */
  readonly uuid?: string;
}

/** One line of SUBSCRIBE's answer. */
export type SchedulerEventJson =
  | {
      readonly type: 'SUBSCRIBED';
      readonly subscribed: {
        readonly framework_id: { readonly value: string };
        readonly heartbeat_interval_seconds: number;
      };
    }
  | { readonly type: 'OFFERS'; readonly offers: { readonly offers: readonly OfferJson[] } }
  | {
      readonly type: 'RESCIND';
      readonly rescind: { readonly offer_id: { readonly value: string }; readonly reason: string };
    }
  | { readonly type: 'UPDATE'; readonly update: { readonly status: TaskStatusJson } }
  | { readonly type: 'FAILURE'; readonly failure: { readonly agent_id: { readonly value: string } } }
  | { readonly type: 'ERROR'; readonly error: { readonly message: string } }
  | { readonly type: 'HEARTBEAT' };

/** What an offer's JSON says of its node besides its id. */
export interface OfferNodeFacts {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
}

function offerJson(offer: Offer, node: OfferNodeFacts | undefined): OfferJson {
  return {
    id: { value: offer.id },
    framework_id: { value: offer.frameworkId },
    agent_id: { value: offer.nodeId },
    hostname: node?.name ?? offer.nodeId,
    resources: {
      cpu_millis: offer.resources.cpuMillis,
      memory_bytes: offer.resources.memoryBytes,
      disk_bytes: offer.resources.diskBytes ?? 0,
      devices: offer.resources.devices ?? {},
      ports: offer.resources.ports ?? [],
    },
    attributes: node?.labels ?? {},
    expires_at_ms: offer.expiresAtMs,
  };
}

/** An event as its line on the stream; `node` names offers' nodes. */
export function encodeSchedulerEvent(
  event: SchedulerEvent,
  node: (nodeId: string) => OfferNodeFacts | undefined,
): SchedulerEventJson {
  switch (event.type) {
    case 'SUBSCRIBED':
      return {
        type: 'SUBSCRIBED',
        subscribed: {
          framework_id: { value: event.frameworkId },
          heartbeat_interval_seconds: event.heartbeatIntervalMs / 1000,
        },
      };
    case 'OFFERS':
      return {
        type: 'OFFERS',
        offers: { offers: event.offers.map((offer) => offerJson(offer, node(offer.nodeId))) },
      };
    case 'RESCIND':
      return { type: 'RESCIND', rescind: { offer_id: { value: event.offerId }, reason: event.reason } };
    case 'UPDATE':
      return {
        type: 'UPDATE',
        update: {
          status: {
            task_id: { value: event.taskId },
            state: event.status.state,
            message: event.status.message,
            ...(event.status.nodeId === null ? {} : { agent_id: { value: event.status.nodeId } }),
            timestamp: event.status.atMs / 1000,
            ...(event.uuid === null ? {} : { uuid: event.uuid }),
          },
        },
      };
    case 'FAILURE':
      return { type: 'FAILURE', failure: { agent_id: { value: event.nodeId } } };
    case 'ERROR':
      return { type: 'ERROR', error: { message: event.message } };
    case 'HEARTBEAT':
      return { type: 'HEARTBEAT' };
  }
}

/** The states an UPDATE can carry, for clients that check what they read. */
export const schedulerTaskStates = frameworkTaskStates;
