import { describe, expect, it } from 'vitest';
import { gibibyte } from '../shared/index.ts';
import { taskLimitsOf, validateNodeConfig, type NodeConfig } from './config.ts';

const base: NodeConfig = {
  dataDir: '/tmp/shoal-config-test',
  listen: { host: '127.0.0.1', port: 0 },
  join: [],
  clusterKey: null,
  name: 'n1',
  cpuMillis: null,
  memoryBytes: null,
  labels: {},
  dockerSocket: null,
};

describe('the task limits a node makes the cluster’s when it leads', () => {
  it('default from the machine: half its memory at 2 KiB a live task, 10,000 ended tasks kept for 1 h', () => {
    expect(taskLimitsOf(base, 8 * gibibyte)).toEqual({
      liveTasksMax: 2_097_152,
      terminalTasksRetainedMax: 10_000,
      terminalTaskRetentionMs: 3_600_000,
    });
    expect(taskLimitsOf(base, 2 * gibibyte).liveTasksMax).toBe(524_288);
  });

  it('are the config’s where it sets them (retention null: by count only)', () => {
    const config = { ...base, liveTasksMax: 5, terminalTasksRetainedMax: 1, terminalTaskRetentionMs: null };
    expect(taskLimitsOf(config, 8 * gibibyte)).toEqual({
      liveTasksMax: 5,
      terminalTasksRetainedMax: 1,
      terminalTaskRetentionMs: null,
    });
  });

  it('refuses limits out of bounds, naming the field', () => {
    expect(() => validateNodeConfig({ ...base, liveTasksMax: 0 })).toThrow(/^liveTasksMax must be/);
    expect(() => validateNodeConfig({ ...base, terminalTasksRetainedMax: 0 })).toThrow(
      /^terminalTasksRetainedMax must be a whole number from 1 to/,
    );
    expect(() => validateNodeConfig({ ...base, terminalTasksRetainedMax: 1.5 })).toThrow(
      /^terminalTasksRetainedMax must be/,
    );
    expect(() => validateNodeConfig({ ...base, terminalTaskRetentionMs: -1 })).toThrow(
      /^terminalTaskRetentionMs must be/,
    );
    expect(() => validateNodeConfig({ ...base, terminalTaskRetentionMs: null })).not.toThrow();
  });
});
