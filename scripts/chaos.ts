/**
 * npm run chaos -- [--nodes 5] [--minutes 10] [--seed N] [more flags: --help]
 *
 * A Jepsen-style fault harness: real agents from dist/shoal, each on its own loopback address, a
 * workload submitting tasks through random nodes, faults from a seeded schedule (SIGKILL and restart,
 * SIGSTOP/SIGCONT, iptables partitions and packet loss, a full disk), then a checker over the history.
 * Needs root (iptables, cgroups, tmpfs). Exits 0 when the checker finds nothing, 1 when it does.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { check, defaultCheckOptions } from './chaos/check.ts';
import type { History } from './chaos/history.ts';
import { Interrupted, runHarness } from './chaos/harness.ts';
import { cleanupStale, preflight } from './chaos/network.ts';
import { formatReport } from './chaos/report.ts';
import {
  defaultScheduleOptions,
  describeFault,
  faultKinds,
  generateSchedule,
  parseSchedule,
  type FaultKind,
  type Schedule,
} from './chaos/schedule.ts';

const root = resolve(import.meta.dirname, '..');

const help = `npm run chaos -- [flags]

  --nodes N             agents (default 5)
  --minutes M           length of the fault phase (default 10; fractions allowed)
  --seed N              the schedule's seed (default: random; printed, so any run can be replayed)
  --faults LIST         fault kinds to draw from, comma-separated (default all: ${faultKinds.join(',')})
  --fault-seconds A-B   how long each fault lasts (default ${defaultScheduleOptions.faultMsMin / 1000}-${defaultScheduleOptions.faultMsMax / 1000})
  --quiet-seconds A-B   quiet time between faults (default ${defaultScheduleOptions.quietMsMin / 1000}-${defaultScheduleOptions.quietMsMax / 1000})
  --schedule FILE       replay a schedule from a JSON file instead of drawing one
  --print-schedule      print the schedule (as JSON) and exit, without running anything
  --submit-ms MS        one submission every MS (default 500)
  --long-tasks SHARE    share of tasks that run 15-35 s, past the task lease (default 0.2)
  --docker-image REF    give each agent a Docker engine of its own (dockerd) that pulls REF, a busybox
                        image, and run part of the workload as docker tasks of it
  --docker-share SHARE  with --docker-image: share of tasks that are docker tasks (default 1)
  --binary PATH         the shoal binary (default dist/shoal)
  --work-dir DIR        where runs keep their files (default ${tmpdir()})
  --keep                keep the work dir (logs, history.json) even when the run passes
  --json FILE           write the figures and failures as JSON
  --check FILE          re-check a saved history.json, without running anything
  --cleanup             remove iptables chains, cgroups and mounts left by dead runs, then exit`;

function range(text: string, flag: string): [number, number] {
  const match = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(text);
  const low = Number(match?.[1]);
  const high = Number(match?.[2]);
  if (!match || !(low > 0) || high < low) throw new Error(`${flag} wants A-B in seconds, e.g. 4-20`);
  return [low * 1000, high * 1000];
}

function positive(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value <= 0) throw new Error(`${flag} must be a positive number`);
  return value;
}

function share(text: string | undefined, flag: string, fallback: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!(value >= 0 && value <= 1)) throw new Error(`${flag} must be a share from 0 to 1`);
  return value;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      nodes: { type: 'string' },
      minutes: { type: 'string' },
      seed: { type: 'string' },
      faults: { type: 'string' },
      'fault-seconds': { type: 'string' },
      'quiet-seconds': { type: 'string' },
      schedule: { type: 'string' },
      'print-schedule': { type: 'boolean' },
      'submit-ms': { type: 'string' },
      'long-tasks': { type: 'string' },
      'docker-image': { type: 'string' },
      'docker-share': { type: 'string' },
      binary: { type: 'string' },
      'work-dir': { type: 'string' },
      keep: { type: 'boolean' },
      json: { type: 'string' },
      check: { type: 'string' },
      cleanup: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help === true) {
    console.log(help);
    return 0;
  }
  if (values.cleanup === true) {
    const problem = await preflight();
    if (problem !== null) throw new Error(problem);
    await cleanupStale((line) => console.log(line));
    return 0;
  }
  if (values.check !== undefined) {
    const history = JSON.parse(readFileSync(values.check, 'utf8')) as History;
    const result = check(history, defaultCheckOptions);
    console.log(formatReport(history, result, `npm run chaos -- --check ${values.check}`));
    return result.failures.length === 0 ? 0 : 1;
  }

  let schedule: Schedule;
  if (values.schedule !== undefined) {
    schedule = parseSchedule(readFileSync(values.schedule, 'utf8'));
  } else {
    const kinds = (values.faults ?? faultKinds.join(',')).split(',').filter((k) => k !== '');
    for (const kind of kinds)
      if (!(faultKinds as readonly string[]).includes(kind))
        throw new Error(`unknown fault kind ${kind}; use ${faultKinds.join(',')}`);
    const [faultMsMin, faultMsMax] =
      values['fault-seconds'] === undefined
        ? [defaultScheduleOptions.faultMsMin, defaultScheduleOptions.faultMsMax]
        : range(values['fault-seconds'], '--fault-seconds');
    const [quietMsMin, quietMsMax] =
      values['quiet-seconds'] === undefined
        ? [defaultScheduleOptions.quietMsMin, defaultScheduleOptions.quietMsMax]
        : range(values['quiet-seconds'], '--quiet-seconds');
    const seed =
      values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Math.trunc(Number(values.seed));
    if (!Number.isSafeInteger(seed) || seed < 0) throw new Error('--seed must be a whole number ≥ 0');
    const nodes = Math.trunc(positive(values.nodes, '--nodes', 5));
    const minutes = positive(values.minutes, '--minutes', 10);
    schedule = generateSchedule(seed, nodes, Math.round(minutes * 60_000), {
      ...defaultScheduleOptions,
      kinds: kinds as FaultKind[],
      faultMsMin,
      faultMsMax,
      quietMsMin,
      quietMsMax,
    });
  }
  if (values['print-schedule'] === true) {
    console.log(JSON.stringify(schedule, null, 2));
    return 0;
  }

  const replay =
    values.schedule !== undefined
      ? `npm run chaos -- --schedule ${values.schedule}`
      : [
          'npm run chaos --',
          ...process.argv.slice(2).filter((a) => a !== '--keep'),
          ...(values.seed === undefined ? ['--seed', String(schedule.seed)] : []),
        ].join(' ');
  const name = (node: number): string => `n${node + 1}`;
  console.log(
    `chaos: ${schedule.nodes} nodes, ${(schedule.durationMs / 60_000).toFixed(1)} min, seed ${schedule.seed}, ` +
      `${schedule.faults.length} faults:`,
  );
  for (const scheduled of schedule.faults) {
    console.log(
      `  ${String(scheduled.id).padStart(3)}. at ${(scheduled.atMs / 1000).toFixed(1)} s for ` +
        `${(scheduled.durationMs / 1000).toFixed(1)} s: ${describeFault(scheduled.fault, name)}`,
    );
  }

  const controller = new AbortController();
  const stop = (signal: string): void => {
    if (controller.signal.aborted) return;
    console.log(`\n${signal}: healing every fault and stopping the agents…`);
    controller.abort();
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  try {
    const { history, result, workDir, kept } = await runHarness({
      schedule,
      binary: values.binary ?? join(root, 'dist', 'shoal'),
      workRoot: values['work-dir'] ?? tmpdir(),
      keep: values.keep === true,
      submitIntervalMs: positive(values['submit-ms'], '--submit-ms', 500),
      longTaskShare: share(values['long-tasks'], '--long-tasks', 0.2),
      tmpfsMiB: 64,
      compactEntries: 1000,
      settleMsMax: 60_000,
      check: defaultCheckOptions,
      log: (line) => console.log(line),
      signal: controller.signal,
      ...(values['docker-image'] === undefined
        ? {}
        : {
            docker: {
              image: values['docker-image'],
              share: share(values['docker-share'], '--docker-share', 1),
            },
          }),
    });
    console.log(formatReport(history, result, replay));
    if (kept) console.log(`work dir (agent logs, runs.log, history.json): ${workDir}`);
    if (values.json !== undefined) {
      writeFileSync(
        values.json,
        JSON.stringify(
          {
            seed: schedule.seed,
            workDir: kept ? workDir : null,
            figures: result.figures,
            failures: result.failures,
          },
          null,
          2,
        ),
      );
    }
    return result.failures.length === 0 ? 0 : 1;
  } catch (error) {
    if (error instanceof Interrupted) return 130;
    throw error;
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(`chaos: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(2);
  },
);
