/**
 * The exec shim's own lease check: a task lives while the node's lease file is renewed, and its process
 * group is killed soon after the renewals stop, even with no agent around.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { watchLease } from '../../src/runtime/drivers/shim.ts';

it('keeps a task while the lease is renewed and kills its group just after the lease runs out', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-lease-test-'));
  const file = join(dir, 'lease.json');
  writeFileSync(file, '{}');
  const child = spawn('sleep', ['30'], { detached: true, stdio: 'ignore' });
  const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(Date.now())));
  const durationMs = 400;
  const watch = watchLease({ file, durationMs }, child.pid ?? 0);
  try {
    // Renewed every 100 ms for over three lease periods: the task lives on.
    for (let i = 0; i < 13; i++) {
      const nowSeconds = Date.now() / 1000;
      utimesSync(file, nowSeconds, nowSeconds);
      await sleep(100);
    }
    expect(child.exitCode === null && child.signalCode === null).toBe(true);
    const lastRenewalMs = Date.now() - 100;
    const killedAtMs = await exited;
    expect(child.signalCode).toBe('SIGKILL');
    // Killed once the lease had run out, and not long after (the check sleeps until just past the end).
    expect(killedAtMs - lastRenewalMs).toBeGreaterThanOrEqual(durationMs - 50);
    expect(killedAtMs - lastRenewalMs).toBeLessThan(durationMs + 1500);
    expect(watch.stop()).toBe(true);
  } finally {
    watch.stop();
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
});
