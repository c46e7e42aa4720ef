/**
 * Placement flags of `shoal run` and capacity flags of `shoal agent`, parsed into the task spec's and the
 * node's fields. Pure: strings in, values out, a one-line error naming the flag otherwise.
 */
import type { LabelConstraintSpec, TaskSpec } from '../cluster/index.ts';
import { invalidArgument } from '../shared/errors.ts';

const mebibyte = 1024 * 1024;
/** Weight of `--affinity RULE` (and, negated, of `--avoid RULE`). */
export const affinityWeightDefault = 50;

/**
 * One label rule:
 *   KEY=VALUE   KEY!=VALUE   KEY=~REGEX   "KEY in A,B,C"   "KEY notin A,B,C"
 */
export function parseLabelRule(text: string, flag: string): LabelConstraintSpec {
  const set = /^\s*([^\s=!~]+)\s+(in|notin)\s+(\S.*)$/i.exec(text);
  if (set) {
    const [, key = '', operator = '', list = ''] = set;
    const values = list
      .split(',')
      .map((value) => value.trim())
      .filter((value) => value !== '');
    if (values.length === 0) throw invalidArgument(`${flag} ${JSON.stringify(text)} lists no values`);
    return operator.toLowerCase() === 'in'
      ? { key, operator: 'in', values }
      : { key, operator: 'notIn', values };
  }
  const regex = /^([^=!~\s]+)=~(.+)$/.exec(text);
  if (regex) return { key: regex[1] ?? '', operator: 'regex', pattern: regex[2] ?? '' };
  const notEqual = /^([^=!~\s]+)!=(.*)$/.exec(text);
  if (notEqual) return { key: notEqual[1] ?? '', operator: '!=', value: notEqual[2] ?? '' };
  const equal = /^([^=!~\s]+)=(.*)$/.exec(text);
  if (equal) return { key: equal[1] ?? '', operator: '=', value: equal[2] ?? '' };
  throw invalidArgument(
    `${flag} ${JSON.stringify(text)} is not a label rule; use KEY=VALUE, KEY!=VALUE, KEY=~REGEX, ` +
      `"KEY in A,B" or "KEY notin A,B"`,
  );
}

/** `KIND=COUNT` pairs (devices) into counts; every count a positive whole number. */
export function parseCounts(
  pairs: readonly string[],
  flag: string,
  allowZero = false,
): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const pair of pairs) {
    const match = /^([A-Za-z0-9][A-Za-z0-9._-]*)=(\d+)$/.exec(pair);
    const count = Number(match?.[2]);
    if (!match || !Number.isSafeInteger(count) || (count === 0 && !allowZero)) {
      throw invalidArgument(`${flag} ${JSON.stringify(pair)} is not KIND=COUNT (a positive whole number)`);
    }
    counts[match[1] ?? ''] = count;
  }
  return counts;
}

/** `NAME=PORT` pairs into named host ports. */
export function parsePorts(pairs: readonly string[], flag: string): Record<string, number> {
  const ports: Record<string, number> = {};
  for (const pair of pairs) {
    const match = /^([A-Za-z0-9][A-Za-z0-9._-]*)=(\d+)$/.exec(pair);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65_535) {
      throw invalidArgument(`${flag} ${JSON.stringify(pair)} is not NAME=PORT (a port from 1 to 65535)`);
    }
    ports[match[1] ?? ''] = port;
  }
  return ports;
}

/** A size in MiB (whole, not negative) as bytes, or null when the flag is absent. */
export function parseMebibytes(value: string | undefined, flag: string): number | null {
  if (value === undefined) return null;
  const number = Number(value);
  if (value.trim() === '' || !Number.isSafeInteger(number) || number < 0) {
    throw invalidArgument(`${flag} ${JSON.stringify(value)} must be a whole number of MiB`);
  }
  return number * mebibyte;
}

export interface PlacementFlags {
  readonly disk?: string | undefined;
  readonly devices: readonly string[];
  readonly ports: readonly string[];
  readonly namespace?: string | undefined;
  /** Every --constraint; plain KEY=VALUE ones stay in the spec's `constraints` record. */
  readonly constraints: readonly string[];
  readonly affinities: readonly string[];
  readonly avoid: readonly string[];
  readonly job?: string | undefined;
  readonly maxRunning?: string | undefined;
  readonly distinctNodes: boolean;
  readonly spreadOver?: string | undefined;
  readonly spread: boolean;
  readonly notPreemptible: boolean;
  readonly onDisconnect?: string | undefined;
}

type PlacementSpec = Pick<
  TaskSpec,
  | 'constraints'
  | 'diskBytes'
  | 'devices'
  | 'ports'
  | 'namespace'
  | 'labelConstraints'
  | 'affinities'
  | 'job'
  | 'jobRunningMax'
  | 'distinctNodes'
  | 'spreadOver'
  | 'packing'
  | 'preemptible'
  | 'onDisconnect'
>;

/** The spec fields the flags set; fields whose flag is absent are left out. */
export function placementSpec(flags: PlacementFlags): {
  -readonly [K in keyof PlacementSpec]: PlacementSpec[K];
} {
  const spec: { -readonly [K in keyof PlacementSpec]: PlacementSpec[K] } = { constraints: {} };
  const rules: LabelConstraintSpec[] = [];
  for (const text of flags.constraints) {
    const rule = parseLabelRule(text, '--constraint');
    if (rule.operator === '=') spec.constraints[rule.key] = rule.value;
    else rules.push(rule);
  }
  if (rules.length > 0) spec.labelConstraints = rules;
  const affinities = [
    ...flags.affinities.map((text) => ({
      constraint: parseLabelRule(text, '--affinity'),
      weight: affinityWeightDefault,
    })),
    ...flags.avoid.map((text) => ({
      constraint: parseLabelRule(text, '--avoid'),
      weight: -affinityWeightDefault,
    })),
  ];
  if (affinities.length > 0) spec.affinities = affinities;
  const diskBytes = parseMebibytes(flags.disk, '--disk');
  if (diskBytes !== null) spec.diskBytes = diskBytes;
  if (flags.devices.length > 0) spec.devices = parseCounts(flags.devices, '--device');
  if (flags.ports.length > 0) spec.ports = parsePorts(flags.ports, '--port');
  if (flags.namespace !== undefined) spec.namespace = flags.namespace;
  if (flags.job !== undefined) spec.job = flags.job;
  if (flags.maxRunning !== undefined) {
    const max = Number(flags.maxRunning);
    if (!Number.isSafeInteger(max) || max < 1)
      throw invalidArgument(
        `--max-running ${JSON.stringify(flags.maxRunning)} must be a positive whole number`,
      );
    spec.jobRunningMax = max;
  }
  if (flags.distinctNodes) spec.distinctNodes = true;
  if (flags.spreadOver !== undefined) spec.spreadOver = flags.spreadOver;
  if (flags.spread) spec.packing = 'spread';
  if (flags.notPreemptible) spec.preemptible = false;
  if (flags.onDisconnect !== undefined) {
    if (flags.onDisconnect !== 'stop' && flags.onDisconnect !== 'keep')
      throw invalidArgument(`--on-disconnect ${JSON.stringify(flags.onDisconnect)} must be stop or keep`);
    spec.onDisconnect = flags.onDisconnect;
  }
  return spec;
}
