/**
 * Regression (found by the chaos harness, seed 7001): a read on a node that was not a settled leader
 * armed a timeout whose rejection nobody awaited; Node ended the agent for the unhandled rejection.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RaftService, type RaftTransport } from '../../src/election/index.ts';
import { silentLogger } from '../../src/shared/log.ts';
import { seededRandom } from '../../src/shared/random.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A transport to nowhere: this test is about one node alone. */
const isolated: RaftTransport = {
  send: () => undefined,
  start: () => Promise.resolve(),
  stop: () => undefined,
};

describe('RaftService.readIndex', () => {
  it('rejects at once on a node that is not the leader, and leaves no timer behind to fail later', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-read-'));
    dirs.push(dir);
    const service = new RaftService({
      id: 'lonely',
      walDir: dir,
      transport: isolated,
      timings: { tickMs: 1000, electionTicks: 8, heartbeatTicks: 2 },
      random: seededRandom(1),
      logger: silentLogger,
      apply: () => undefined,
      snapshotState: () => '',
      restoreState: () => undefined,
    });
    await service.start();
    await expect(Promise.resolve().then(() => service.readIndex(50))).rejects.toThrow(/not the leader/);
    // Past the read's timeout: an orphaned timer would reject now, unhandled.
    await new Promise((resolve) => setTimeout(resolve, 150));
    service.stop();
  });
});
