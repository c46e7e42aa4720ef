import { configDefaults, defineConfig } from 'vitest/config';

/**
 * Two suites, as vitest projects: `npm test` runs "fast" (~1.5 min on a 2-core machine), `npm run
 * test:slow` runs "slow", `npm run test:all` both; CI (.ci/run) runs both. A test file belongs to exactly
 * one of them; test/suites.test.ts fails otherwise, so a new file in a folder not covered below must be
 * placed here. Durations cited are per file, from a full run on the 2-core dev machine (docker tests
 * skipped there; in CI they run against a real engine).
 */
export const suites = {
  /** Unit, property and simulation tests, integration tests of one component, and one small e2e. */
  fast: {
    include: [
      // Unit tests next to the code, and the seeded Raft (4.7 s) and membership (2.5 s) simulations.
      'src/**/*.test.ts',
      // Allocator properties (4.1 s); the chaos harness's pure parts and its task script (2.5 s).
      'test/allocator/**/*.test.ts',
      'test/chaos/check.test.ts',
      'test/chaos/schedule.test.ts',
      'test/chaos/workload.test.ts',
      // The exec driver against real processes (13-43 s: its OOM test took 0.8-31 s), its lease, logs and
      // cgroup parsing.
      'test/drivers/cgroups.test.ts',
      // Health checks' exec runs on both drivers (6 s; the docker cases run where CI gives an engine).
      'test/drivers/checks.test.ts',
      'test/drivers/exec.test.ts',
      'test/drivers/lease.test.ts',
      'test/drivers/shim-disk-full.test.ts',
      'test/drivers/isolation.test.ts',
      'test/drivers/image.test.ts',
      'test/drivers/logs.test.ts',
      'test/election/**/*.test.ts',
      // The agent's events, garbage and upkeep; the image store against a real docker-registry (0.5 s).
      'test/runtime/**/*.test.ts',
      // Membership over real libp2p in one process (11 s), the wrong-key join included.
      'test/membership/libp2p.test.ts',
      // One real agent, end to end: submit, run, restart, re-attach after SIGKILL, report (5.6 s).
      'test/e2e/runtime.test.ts',
      // One real agent with --tls auto: refusal off loopback, login by fingerprint, ps over TLS (3.4 s; 5.6-7.1 s with the build).
      'test/e2e/tls.test.ts',
      // One agent's backup restored into another: save, refuse bad files, restore, tokens kept.
      'test/e2e/snapshot.test.ts',
      // This split's own check.
      'test/suites.test.ts',
    ],
    exclude: [] as string[],
  },
  /** Chaos runs, clusters of real agents, and everything that needs a Docker engine. */
  slow: {
    include: [
      // Five chaos runs of 40-62 s each (need root and iptables; skipped without).
      'test/chaos/run.test.ts',
      // The docker driver against a real engine (CI starts one), and its lease keeper.
      'test/drivers/docker.test.ts',
      'test/drivers/docker-lease.test.ts',
      // Real agents in network namespaces (root).
      'test/membership/netns.test.ts',
      // Multi-agent clusters: cluster 29 s, voters 23 s, election 12 s, logs 11 s, drain 7 s, allocator
      // 6.5 s; docker and docker-engine (CI).
      'test/e2e/**/*.test.ts',
    ],
    exclude: ['test/e2e/runtime.test.ts', 'test/e2e/tls.test.ts', 'test/e2e/snapshot.test.ts'],
  },
};

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration tests start real processes; on a 2-core machine running files in parallel only adds noise.
    fileParallelism: false,
    projects: Object.entries(suites).map(([name, suite]) => ({
      extends: true,
      test: { name, include: suite.include, exclude: [...configDefaults.exclude, ...suite.exclude] },
    })),
  },
});
