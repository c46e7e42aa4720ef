/**
 * The runtime's own timers: a health check of every driver (a ping of the Docker engine's socket), whose
 * result the node advertises, and garbage collection of what ended tasks left behind. Collection asks
 * only the drivers that are available: an engine that is not there is stated once, at start, and is no
 * error every minute afterwards.
 */
import type { TaskDriver } from '../cluster/index.ts';
import { errorMessage, type Logger } from '../shared/index.ts';
import type { Agent, GarbageReport } from './agent.ts';
import type { Driver, DriverHealth } from './drivers/index.ts';

/**
 * How often the node checks its drivers: an engine that dies stops being advertised within about this
 * long plus a membership update, so the allocator stops placing docker tasks here; one that returns is
 * advertised again as quickly.
 */
export const driverHealthIntervalMs = 2000;
/** How often the agent collects garbage (leftover containers, processes, old task directories). */
export const garbageIntervalMs = 60_000;
/** The first collection, soon after start: what a crashed agent left is freed without waiting a minute. */
export const garbageFirstDelayMs = 5000;

/** What the drivers' checks found out about the node, beyond which drivers are up. */
export interface DriverFacts {
  /** Whether the Docker engine has a bridge network; null: no docker driver, or its engine is down. */
  readonly dockerBridge: boolean | null;
}

export interface UpkeepInit {
  readonly drivers: ReadonlyMap<TaskDriver, Driver>;
  readonly agent: Agent;
  readonly logger: Logger;
  /** After each periodic check: the node advertises the available drivers (a no-op when unchanged). */
  readonly onDriversChecked: (available: TaskDriver[], facts: DriverFacts) => void;
  /**
   * Resolves once this node's state is as new as the leader's commit; rejects when no leader confirms
   * it. A state still catching up (a restarted node replaying the log) would make live tasks look unknown.
   */
  readonly stateCurrent: () => Promise<void>;
}

export class Upkeep {
  private readonly init: UpkeepInit;
  private healthTimer: NodeJS.Timeout | null = null;
  private garbageTimer: NodeJS.Timeout | null = null;
  private healthRefreshing = false;
  private stopped = false;
  private available: TaskDriver[] = [];
  private driverFacts: DriverFacts = { dockerBridge: null };
  /** The last health line logged per driver: checks run every few seconds, the log says only what changed. */
  private readonly healthLogged = new Map<TaskDriver, string>();

  constructor(init: UpkeepInit) {
    this.init = init;
  }

  /** One health check of every driver, logged where it changed; returns the available ones. */
  async checkDrivers(): Promise<TaskDriver[]> {
    const available: TaskDriver[] = [];
    let dockerBridge: boolean | null = null;
    for (const [name, driver] of this.init.drivers) {
      const health: DriverHealth = await driver
        .health()
        .catch((error: unknown) => ({ healthy: false, detail: errorMessage(error) }));
      if (health.healthy) available.push(name);
      if (name === 'docker' && health.healthy) dockerBridge = health.bridge ?? false;
      const line = health.healthy
        ? `the ${name} driver is available`
        : `the ${name} driver is unavailable: ${health.detail}`;
      if (this.healthLogged.get(name) !== line) this.init.logger.info(line);
      this.healthLogged.set(name, line);
    }
    this.available = available;
    this.driverFacts = { dockerBridge };
    return available;
  }

  /** What the last check of the drivers found. */
  facts(): DriverFacts {
    return this.driverFacts;
  }

  isStopped(): boolean {
    return this.stopped;
  }

  start(): void {
    this.healthTimer = setInterval(() => void this.refreshDrivers(), driverHealthIntervalMs);
    this.garbageTimer = setTimeout(() => void this.collectGarbage(), garbageFirstDelayMs);
  }

  stop(): void {
    this.stopped = true;
    if (this.healthTimer) clearInterval(this.healthTimer);
    if (this.garbageTimer) clearTimeout(this.garbageTimer);
  }

  /** One check at a time: a hung engine makes a check last its ping timeout, longer than the interval. */
  private async refreshDrivers(): Promise<void> {
    if (this.healthRefreshing || this.stopped) return;
    this.healthRefreshing = true;
    try {
      const available = await this.checkDrivers();
      // Checked again: stop() may have come while the check awaited the engine.
      if (!this.isStopped()) this.init.onDriversChecked(available, this.driverFacts);
    } finally {
      this.healthRefreshing = false;
    }
  }

  /**
   * One garbage collection pass over the available drivers; null when it was skipped (no leader confirms
   * the state). The pass is logged when it freed something.
   */
  async collectOnce(): Promise<GarbageReport | null> {
    try {
      await this.init.stateCurrent();
      const report = await this.init.agent.collectGarbage({ available: new Set(this.available) });
      if (report.collected.length > 0 || report.removedDirs.length > 0) {
        this.init.logger.info('collected garbage', {
          freed: report.collected.join(','),
          removedDirs: report.removedDirs.length,
        });
      }
      return report;
    } catch (error) {
      this.init.logger.debug('garbage collection skipped', { error: errorMessage(error) });
      return null;
    }
  }

  /** One pass, then the next one is scheduled. */
  private async collectGarbage(): Promise<void> {
    await this.collectOnce();
    if (!this.stopped) this.garbageTimer = setTimeout(() => void this.collectGarbage(), garbageIntervalMs);
  }
}
