import { describe, expect, it } from 'vitest';
import {
  classifyDialFailure,
  describeDialFailure,
  describeWrongKey,
  handshakeFailingMsMax,
  joinDialTimeoutMs,
  joinRetryDelayMs,
  needsPnetProbe,
  nextDialTimeoutMs,
  recordFailure,
  wrongKeySeeds,
  type DialFailureKind,
  type SeedFailures,
} from './join.ts';

/** Errors as libp2p 3 throws them (names and messages measured; see join.ts). */
function named(name: string, message: string): Error {
  const error = new Error(message);
  error.name = name;
  return error;
}
const reset = named('EncryptionFailedError', 'read ECONNRESET');
const timeout = named('TimeoutError', 'The operation was aborted due to timeout');
const refused = new Error('connection error 127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1');

describe('classifyDialFailure', () => {
  it('a reset or a stall after a shoal node took the connection is a failed handshake', () => {
    expect(needsPnetProbe(reset)).toBe(true);
    expect(classifyDialFailure(reset, true)).toBe('handshake');
    expect(classifyDialFailure(named('EncryptionFailedError', 'The operation was aborted'), true)).toBe(
      'handshake',
    );
    expect(needsPnetProbe(timeout)).toBe(true);
    expect(classifyDialFailure(timeout, true)).toBe('handshake');
  });

  it('the same errors where no shoal node answers: something else on the port, or no answer', () => {
    // Measured: a proxy that accepts any address answers the dialler's nonce with bytes of its own.
    expect(
      classifyDialFailure(named('EncryptionFailedError', 'Message length too long - 6911 > 1024'), false),
    ).toBe('foreign');
    expect(classifyDialFailure(timeout, false)).toBe('unanswered');
    expect(classifyDialFailure(named('AbortError', 'The operation was aborted'), false)).toBe('unanswered');
  });

  it('a refused connection, and anything else, need no probe', () => {
    expect(needsPnetProbe(refused)).toBe(false);
    expect(classifyDialFailure(refused, false)).toBe('refused');
    expect(needsPnetProbe(new Error('no valid addresses'))).toBe(false);
    expect(classifyDialFailure(new Error('no valid addresses'), false)).toBe('other');
  });
});

describe('describeDialFailure', () => {
  it('names a wrong key from the first failed handshake, without blaming the address', () => {
    const line = describeDialFailure('/ip4/10.0.0.1/tcp/4700', 'handshake', timeout);
    expect(line).toMatch(/the handshake failed \(wrong cluster key\?\)/);
    expect(line).not.toMatch(/no answer|address/);
    expect(describeDialFailure('s', 'unanswered', timeout)).toMatch(/no answer within 3 s/);
    expect(describeDialFailure('s', 'refused', refused)).toMatch(/nothing listens there/);
    expect(describeDialFailure('s', 'foreign', reset)).toMatch(/not a shoal node; check the port/);
    expect(describeDialFailure('s', 'other', new Error('boom'))).toBe('join s failed: boom');
  });

  it('the final line is the one docs/operations.md quotes', () => {
    expect(describeWrongKey(['a', 'b'])).toMatch(
      /^join a, b refused: the handshake failed, which means the cluster key does not match; use the key/,
    );
  });
});

describe('recordFailure and nextDialTimeoutMs', () => {
  it('counts a run of the same failure from the end of its first one; another kind starts over', () => {
    let run = recordFailure(undefined, 'handshake', 1000);
    run = recordFailure(run, 'handshake', 1600);
    expect(run).toEqual({ kind: 'handshake', count: 2, sinceMs: 1000 });
    expect(recordFailure(run, 'refused', 2000)).toEqual({ kind: 'refused', count: 1, sinceMs: 2000 });
  });

  it('cuts a suspected seed dial short so the verdict is not late, but not below half a second', () => {
    expect(nextDialTimeoutMs(undefined, 0)).toBe(joinDialTimeoutMs);
    expect(nextDialTimeoutMs({ kind: 'unanswered', count: 3, sinceMs: 0 }, 9000)).toBe(joinDialTimeoutMs);
    const run: SeedFailures = { kind: 'handshake', count: 1, sinceMs: 3000 };
    expect(nextDialTimeoutMs(run, 3500)).toBe(1000);
    expect(nextDialTimeoutMs(run, 4400)).toBe(500);
  });
});

describe('wrongKeySeeds', () => {
  const run = (kind: DialFailureKind, count: number, sinceMs: number): SeedFailures => ({
    kind,
    count,
    sinceMs,
  });

  it('judges a seed after its handshakes failed for handshakeFailingMsMax, retried at least once', () => {
    const seeds = ['a'];
    expect(wrongKeySeeds(seeds, new Map([['a', run('handshake', 1, 0)]]), 10_000)).toBeNull();
    expect(
      wrongKeySeeds(seeds, new Map([['a', run('handshake', 3, 0)]]), handshakeFailingMsMax - 1),
    ).toBeNull();
    expect(wrongKeySeeds(seeds, new Map([['a', run('handshake', 2, 0)]]), handshakeFailingMsMax)).toEqual([
      'a',
    ]);
  });

  it('leaves out seeds that refuse, do not answer or are not shoal nodes; waits for seeds not yet heard from or failing otherwise', () => {
    const judged = run('handshake', 4, 0);
    const now = handshakeFailingMsMax;
    const seeds = ['a', 'b', 'c'];
    expect(
      wrongKeySeeds(
        seeds,
        new Map([
          ['a', judged],
          ['b', run('refused', 2, 0)],
          ['c', run('unanswered', 1, 0)],
        ]),
        now,
      ),
    ).toEqual(['a']);
    expect(
      wrongKeySeeds(
        ['a', 'b'],
        new Map([
          ['a', judged],
          ['b', run('foreign', 1, 0)],
        ]),
        now,
      ),
    ).toEqual(['a']);
    expect(wrongKeySeeds(seeds, new Map([['a', judged]]), now)).toBeNull();
    expect(
      wrongKeySeeds(
        seeds,
        new Map([
          ['a', judged],
          ['b', run('other', 1, 0)],
          ['c', run('refused', 1, 0)],
        ]),
        now,
      ),
    ).toBeNull();
    expect(wrongKeySeeds(['b'], new Map([['b', run('refused', 9, 0)]]), now)).toBeNull();
  });
});

/**
 * The join loop of service.ts in simulated time against one seed with another key: every dial either is
 * reset at once (~5 ms) or stalls until its timeout (then a 1-ms TCP probe), in every order. The verdict
 * must come after a retry and handshakeFailingMsMax, and within 5 s of the start.
 */
describe('the time a wrong key takes to be named', () => {
  function verdictAtMs(stalls: readonly boolean[]): number {
    let nowMs = 0;
    let failures: SeedFailures | undefined;
    for (const stall of stalls) {
      const judged = (): boolean =>
        wrongKeySeeds(['a'], new Map(failures ? [['a', failures]] : []), nowMs) !== null;
      if (judged()) return nowMs;
      nowMs += stall ? nextDialTimeoutMs(failures, nowMs) + 1 : 5;
      failures = recordFailure(failures, 'handshake', nowMs);
      if (judged()) return nowMs;
      nowMs += joinRetryDelayMs;
    }
    throw new Error(`no verdict after ${stalls.length} dials`);
  }

  it('takes at most 4.6 s whatever the order of resets and stalls, and never a single dial', () => {
    const dials = 8;
    let worstMs = 0;
    for (let pattern = 0; pattern < 1 << dials; pattern++) {
      const stalls = Array.from({ length: dials }, (_, i) => (pattern & (1 << i)) !== 0);
      const atMs = verdictAtMs(stalls);
      worstMs = Math.max(worstMs, atMs);
      expect(atMs).toBeGreaterThanOrEqual(handshakeFailingMsMax);
    }
    expect(worstMs).toBeLessThanOrEqual(joinDialTimeoutMs + handshakeFailingMsMax + 100);
    expect(worstMs).toBeLessThan(5000);
  });
});
