/**
 * The frameworks' limits and defaults, each in one place with its unit. In: nothing. Out: numbers. The codec
 * (commands.ts), the durable registry (registry.ts), the offer book (offers.ts) and the redelivery of status
 * updates (delivery.ts) read the same values; nothing here imports them.
 */
import { mebibyte } from '../shared/units.ts';

const secondMs = 1000;
const hourMs = 3600 * secondMs;
const dayMs = 24 * hourMs;

// ---- time ---------------------------------------------------------------------------------------------

/** An offer neither accepted nor declined within this long is rescinded (RESCIND) and its resources return. */
export const offerTimeoutMsDefault = 30 * secondMs;
/** A DECLINE without refuse_seconds (and the unused rest of an ACCEPT) filters the node this long: Mesos's 5 s. */
export const refuseMsDefault = 5 * secondMs;
/** A longer refusal is cut to this (Mesos caps refuse_seconds alike): a year is "never" for a scheduler. */
export const refuseMsMax = 365 * dayMs;
/** A disconnected framework's tasks are kept this long for it to come back (Mesos failover_timeout). */
export const failoverTimeoutMsDefault = hourMs;
/** The longest failover_timeout accepted. Marathon asks a week; a year bounds how long a record lingers. */
export const failoverTimeoutMsMax = 365 * dayMs;
/** A status update is resent after this long without its ACKNOWLEDGE (Mesos: 10 s), doubling each time… */
export const updateRetryMsInitial = 10 * secondMs;
/** …up to this (Mesos: 10 min). */
export const updateRetryMsMax = 10 * 60 * secondMs;
/** What SUBSCRIBED tells the framework to expect between HEARTBEAT events (Mesos: 15 s). */
export const heartbeatIntervalMsDefault = 15 * secondMs;

// ---- counts -------------------------------------------------------------------------------------------

/** Frameworks registered at once, connected or within their failover timeout. */
export const frameworksMax = 100;
/** Tasks one framework holds at once: live ones and ended ones whose last update is not yet acknowledged. */
export const tasksPerFrameworkMax = 50_000;
/** Tasks one ACCEPT may launch. */
export const tasksPerAcceptMax = 1000;
/** Offer ids one ACCEPT or DECLINE may name. */
export const offersPerCallMax = 100;
/** Offers one framework may hold at once; more nodes simply wait for the next round. */
export const offersPerFrameworkMax = 10_000;
/**
 * Unacknowledged status updates kept per framework. Beyond it the oldest superseded update goes first, then
 * the oldest of a live task, then the oldest; the framework learns the latest states by RECONCILE.
 */
export const pendingUpdatesMax = 1000;
/** Task ids one explicit RECONCILE may name. */
export const reconcileTasksMax = 10_000;
/** Built-in pending shapes (framework zero) weighed per offer round; the rest wait for a later round. */
export const builtInDemandsMax = 256;

// ---- sizes --------------------------------------------------------------------------------------------

/** Ids of frameworks, streams, offers, nodes and tasks, in characters (the log's id bound). */
export const idLengthMax = 128;
export const frameworkNameLengthMax = 256;
/** A role is a shoal namespace; the cluster's namespace names are at most this long. */
export const roleLengthMax = 64;
export const userLengthMax = 64;
/** A status message longer than this is cut: it is one line for a human. */
export const statusMessageLengthMax = 1024;

// ---- offers -------------------------------------------------------------------------------------------

/** Smallest offer worth making: both at least this much CPU and memory (Mesos: 0.01 CPU, 32 MiB). */
export const offerCpuMillisMinDefault = 10;
export const offerMemoryBytesMinDefault = 32 * mebibyte;

// ---- frameworks ---------------------------------------------------------------------------------------

/** A framework that names no priority; the same middle as a task's default. */
export const frameworkPriorityDefault = 50;
