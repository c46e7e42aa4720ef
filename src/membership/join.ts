/**
 * Joining through seeds: what a failed dial means, and when to stop retrying. Pure: the shell
 * (service.ts) dials, probes and sleeps; these functions take the errors and the times (nowMs) and say
 * what they mean, what to tell the user, and whether to give up.
 *
 * What a wrong cluster key looks like to the dialler (measured with @libp2p/pnet 3 and libp2p 3 on
 * loopback): TCP connects and the pnet nonces are exchanged, then each side decrypts the other's bytes
 * with its own key and reads garbage. Either the seed fails to parse it and resets the connection — the
 * dial rejects at once with EncryptionFailedError "read ECONNRESET" (22 of 40 dials) — or the garbage
 * decodes as a length prefix longer than what was sent (libp2p logged "closed while reading 27/96 bytes")
 * and the seed waits for bytes that never come, so the dial times out (18 of 40). Neither error says a
 * shoal node was there: something else on the port fails the same way (a proxy that accepts any address
 * answered the dialler's nonce with bytes read as "Message length too long - 6911 > 1024", and an HTTP
 * server would too). What does is a plain connection to the seed: a pnet host sends its 24-byte nonce as
 * soon as it accepts one, unasked. So after either error the shell probes, and a seed that speaks pnet but
 * fails the handshake most likely holds another key.
 *
 * A seed that dies mid-handshake resets the connection exactly as a wrong key does (bug 5: a restart while
 * joining was taken for a wrong key). So one failed handshake only warns; a seed is judged to hold another
 * key once its handshakes have kept failing for handshakeFailingMsMax, retried every joinRetryDelayMs. A
 * seed that goes down meanwhile (connection refused) starts the count again: it is restarting.
 */
import { errorMessage } from '../shared/errors.ts';

/** Each dial of a seed is given this long to connect and finish the handshake. */
export const joinDialTimeoutMs = 3000;
/** Between two dials of the same seed. */
export const joinRetryDelayMs = 500;
/**
 * How long a seed's handshakes must keep failing, from the end of the first failure, before the join
 * gives up on a wrong key. It covers a seed that dies mid-handshake and restarts: that seed fails once,
 * then refuses connections (which starts the count again) or answers with the right key. Worst case for
 * a wrong key: a first dial that stalls for joinDialTimeoutMs, then this: 3 + 1.5 = 4.5 s.
 */
export const handshakeFailingMsMax = 1500;
/**
 * The shortest dial of a seed already failing its handshakes: the retries in handshakeFailingMsMax are
 * cut short so the verdict is not delayed by a stalled one, but never below this. A handshake with the
 * right key takes ~12 ms of CPU (transport.ts), so half a second leaves a loaded host room.
 */
export const joinRetryDialMsMin = 500;
/**
 * After a failed handshake or a timeout: how long the probe waits for the seed's pnet nonce (a shoal node
 * sends it within a round trip of accepting).
 */
export const pnetProbeTimeoutMs = 1000;

/**
 * How a dial of a seed failed. handshake: a shoal node took the connection but the handshake was reset
 * or stalled (another cluster key, or a node going down); foreign: something that is not a shoal node
 * answered; refused: nothing listens; unanswered: no answer in time; other: anything else (say, the
 * push-pull after connecting failed).
 */
export type DialFailureKind = 'handshake' | 'foreign' | 'refused' | 'unanswered' | 'other';

/** True if the dial failed in the encryption step, after a TCP connection and a nonce exchange. */
function isHandshakeError(error: unknown): boolean {
  // libp2p wraps whatever breaks that step in EncryptionFailedError, even a timeout inside it.
  const name = error instanceof Error ? error.name : '';
  return name === 'EncryptionFailedError' || /nonce|decrypt/i.test(errorMessage(error));
}

function isDialTimeout(error: unknown): boolean {
  const name = error instanceof Error ? error.name : '';
  return name === 'TimeoutError' || name === 'AbortError' || /aborted|timed? ?out/i.test(errorMessage(error));
}

/** Whether classifyDialFailure needs to know if the seed speaks pnet: after a failed handshake or timeout. */
export function needsPnetProbe(error: unknown): boolean {
  return isHandshakeError(error) || isDialTimeout(error);
}

/**
 * Classifies a failed dial. `speaksPnet` is what the probe found (see needsPnetProbe): whether the seed
 * sends a pnet nonce on a plain connection. It is not consulted for other errors.
 */
export function classifyDialFailure(error: unknown, speaksPnet: boolean): DialFailureKind {
  if (isHandshakeError(error)) return speaksPnet ? 'handshake' : 'foreign';
  if (/ECONNREFUSED/.test(errorMessage(error))) return 'refused';
  if (isDialTimeout(error)) return speaksPnet ? 'handshake' : 'unanswered';
  return 'other';
}

/** The run of same-kind failures a seed is in. */
export interface SeedFailures {
  readonly kind: DialFailureKind;
  /** Failed dials in this run. */
  readonly count: number;
  /** When the first failure of the run ended. */
  readonly sinceMs: number;
}

/** The seed's run after one more failure: a failure of another kind starts a new run. */
export function recordFailure(
  previous: SeedFailures | undefined,
  kind: DialFailureKind,
  nowMs: number,
): SeedFailures {
  if (previous?.kind === kind) return { ...previous, count: previous.count + 1 };
  return { kind, count: 1, sinceMs: nowMs };
}

/**
 * How long the next dial of a seed may take: joinDialTimeoutMs, or for a seed already failing its
 * handshakes, until its handshakeFailingMsMax is up (at least joinRetryDialMsMin).
 */
export function nextDialTimeoutMs(failures: SeedFailures | undefined, nowMs: number): number {
  if (failures?.kind !== 'handshake') return joinDialTimeoutMs;
  const leftMs = failures.sinceMs + handshakeFailingMsMax - nowMs;
  return Math.min(joinDialTimeoutMs, Math.max(joinRetryDialMsMin, leftMs));
}

/**
 * Whether the join should give up on a wrong key: at least one seed accepted TCP, and every seed that
 * did has failed its handshakes, retried at least once, for handshakeFailingMsMax. Seeds that refuse, do
 * not answer or are not shoal nodes are left out (they may be down, or mistyped); a seed not yet heard
 * from, or failing otherwise, keeps the join going. Returns the seeds to name, or null to keep trying.
 */
export function wrongKeySeeds(
  seeds: readonly string[],
  failures: ReadonlyMap<string, SeedFailures>,
  nowMs: number,
): string[] | null {
  const judged: string[] = [];
  for (const seed of seeds) {
    const run = failures.get(seed);
    if (run === undefined || run.kind === 'other') return null;
    if (run.kind !== 'handshake') continue;
    if (run.count < 2 || nowMs - run.sinceMs < handshakeFailingMsMax) return null;
    judged.push(seed);
  }
  return judged.length > 0 ? judged : null;
}

/** The final error when every seed that answers fails the handshake (docs/operations.md quotes it). */
export function describeWrongKey(seeds: readonly string[]): string {
  return `join ${seeds.join(', ')} refused: the handshake failed, which means the cluster key does not match; use the key printed by the first node (--key or --key-file)`;
}

/** One line that says what went wrong when dialling a seed, and what to check. */
export function describeDialFailure(seed: string, kind: DialFailureKind, error: unknown): string {
  switch (kind) {
    case 'handshake':
      return `join ${seed} failed: the connection was accepted but the handshake failed (wrong cluster key?); use the key printed by the first node (--key or --key-file)`;
    case 'foreign':
      return `join ${seed} failed: something answers there, but not a shoal node; check the port (the agent's --listen port, not its --api port)`;
    case 'refused':
      return `join ${seed} failed: nothing listens there (connection refused); check the address and port`;
    case 'unanswered':
      return `join ${seed} failed: no answer within ${joinDialTimeoutMs / 1000} s; check the address and that the port is reachable`;
    case 'other':
      return `join ${seed} failed: ${errorMessage(error)}`;
  }
}
