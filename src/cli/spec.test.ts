import { describe, expect, it } from 'vitest';
import { parseFlags, type FlagValues } from './flags.ts';
import {
  buildSpec,
  defaultTaskName,
  imageRepositoryName,
  placementFlags,
  placementSpec,
  taskSpecFlags,
} from './spec.ts';

function placement(args: string[]): FlagValues<typeof placementFlags> {
  return parseFlags(args, placementFlags, false, 'test').values;
}

function spec(args: string[]): ReturnType<typeof buildSpec> {
  const { values, positionals } = parseFlags(args, taskSpecFlags, true, 'test');
  return buildSpec(values, positionals);
}

describe('placement flags', () => {
  it('keeps plain equalities in constraints and the rest as rules, affinities and avoidances', () => {
    const result = placementSpec(
      placement([
        ...['--constraint', 'zone=eu', '--constraint', 'rack!=r1'],
        ...['--affinity', 'ssd=yes', '--avoid', 'zone=us'],
        ...['--device', 'gpu=2', '--port', 'http=8080', '--disk', '100'],
        ...['--namespace', 'team-a', '--job', 'web', '--max-running', '3'],
        ...['--distinct-nodes', '--spread-over', 'zone', '--spread', '--not-preemptible'],
      ]),
    );
    expect(result).toEqual({
      constraints: { zone: 'eu' },
      labelConstraints: [{ key: 'rack', operator: '!=', value: 'r1' }],
      affinities: [
        { constraint: { key: 'ssd', operator: '=', value: 'yes' }, weight: 50 },
        { constraint: { key: 'zone', operator: '=', value: 'us' }, weight: -50 },
      ],
      diskBytes: 100 * 1024 * 1024,
      devices: { gpu: 2 },
      ports: { http: 8080 },
      namespace: 'team-a',
      job: 'web',
      jobRunningMax: 3,
      distinctNodes: true,
      spreadOver: 'zone',
      packing: 'spread',
      preemptible: false,
    });
    expect(placementSpec(placement([]))).toEqual({ constraints: {} });
  });

  it('refuses a bad cap or disconnect policy, naming the flag', () => {
    expect(() => placementSpec(placement(['--max-running', '0']))).toThrow(/--max-running "0" must be/);
    expect(() => placementSpec(placement(['--on-disconnect', 'run']))).toThrow(
      /--on-disconnect "run" is unknown; use stop or keep/,
    );
  });
});

describe('task names', () => {
  it("names a task from a registry image after the image's repository, not the registry host", () => {
    expect(imageRepositoryName('127.0.0.1:5000/team/busybox:1')).toBe('busybox');
    expect(imageRepositoryName('localhost:5000/busybox')).toBe('busybox');
    expect(imageRepositoryName('busybox')).toBe('busybox');
    expect(imageRepositoryName('busybox:1.36')).toBe('busybox');
    expect(imageRepositoryName('docker.io/library/nginx@sha256:0123abcd')).toBe('nginx');
    expect(imageRepositoryName('registry.example.com:443/a/b/redis:7@sha256:0123abcd')).toBe('redis');
  });

  it("falls back to the command's file name, and to task when nothing is usable", () => {
    expect(defaultTaskName(undefined, ['/usr/bin/sleep', '10'])).toBe('sleep');
    expect(defaultTaskName('127.0.0.1:5000/team/busybox:1', ['sh'])).toBe('busybox');
    expect(defaultTaskName(undefined, [])).toBe('task');
    expect(defaultTaskName(undefined, ['./+x y'])).toBe('x-y');
  });
});

describe('buildSpec', () => {
  it('fills the defaults of a plain shoal run', () => {
    expect(spec(['--', 'sh', '-c', 'echo hi'])).toEqual({
      name: 'sh',
      driver: 'exec',
      command: ['sh', '-c', 'echo hi'],
      cpuMillis: 100,
      memoryBytes: 64 * 1024 * 1024,
      priority: 50,
      env: {},
      constraints: {},
    });
  });

  it('names a docker task after its image and replicas after their job', () => {
    const docker = spec(['--driver', 'docker', '--image', '127.0.0.1:5000/team/busybox:1']);
    expect(docker).toMatchObject({
      name: 'busybox',
      driver: 'docker',
      image: '127.0.0.1:5000/team/busybox:1',
    });
    expect(spec(['--replicas', '3', '--distinct-nodes', '--', 'sleep', '9'])).toMatchObject({
      name: 'sleep',
      job: 'sleep',
      distinctNodes: true,
    });
  });

  it('reads restart flags and refuses what the cluster would, in one line', () => {
    expect(spec(['--restart', 'on-failure', '--', 'true']).restart).toEqual({
      policy: 'on-failure',
      maxRestarts: 3,
      delayMs: 1000,
    });
    expect(() => spec(['--max-restarts', '2', '--', 'true'])).toThrow(/need --restart on-failure or always/);
    expect(() => spec(['--cpu=-1', '--', 'true'])).toThrow(/--cpu "-1" must be a positive number of cores/);
    expect(() => spec(['--driver', 'vm', '--', 'true'])).toThrow(
      /--driver "vm" is unknown; use exec or docker/,
    );
    expect(() => spec(['--priority', '101', '--', 'true'])).toThrow(
      /--priority "101" must be a whole number from 0 to 100/,
    );
    expect(() => spec([])).toThrow(/the exec driver needs a command/);
  });
});
