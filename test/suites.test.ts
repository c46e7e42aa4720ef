/**
 * Every test file runs in exactly one suite (vitest.config.ts): `npm test` or `npm run test:slow`. CI runs
 * both, so a file in neither would never run, and a file in both would run twice.
 */
import { globSync } from 'node:fs';
import { matchesGlob } from 'node:path';
import { describe, expect, it } from 'vitest';
import { suites } from '../vitest.config.ts';
import { repoRoot } from './helpers/cluster.ts';

/** Folders that hold no tests of ours. */
const notOurs = /(^|\/)(node_modules|dist|\.tmp|\.git)$/;

type Suites = Readonly<Record<string, { include: readonly string[]; exclude: readonly string[] }>>;

function suitesOf(file: string, definitions: Suites = suites): string[] {
  return Object.entries(definitions)
    .filter(
      ([, suite]) =>
        suite.include.some((glob) => matchesGlob(file, glob)) &&
        !suite.exclude.some((glob) => matchesGlob(file, glob)),
    )
    .map(([name]) => name);
}

describe('the test suites', () => {
  it('place every test file in exactly one suite', () => {
    const files = globSync('**/*.test.ts', { cwd: repoRoot, exclude: (path) => notOurs.test(path) }).sort();
    expect(files.length).toBeGreaterThan(20);
    const misplaced = files
      .map((file) => ({ file, suites: suitesOf(file) }))
      .filter((placed) => placed.suites.length !== 1)
      .map(({ file, suites: names }) =>
        names.length === 0
          ? `${file} is in no suite: add it to "fast" or "slow" in vitest.config.ts`
          : `${file} is in ${names.join(' and ')}: keep it in one (vitest.config.ts)`,
      );
    expect(misplaced).toEqual([]);
  });

  it('would catch a file in neither suite, and one in both', () => {
    expect(suitesOf('test/e2e/runtime.test.ts')).toEqual(['fast']);
    expect(suitesOf('test/e2e/cluster.test.ts')).toEqual(['slow']);
    expect(suitesOf('test/new-folder/a.test.ts')).toEqual([]);
    const overlapping: Suites = {
      fast: { include: ['test/**/*.test.ts'], exclude: [] },
      slow: { include: ['test/e2e/*.test.ts'], exclude: [] },
    };
    expect(suitesOf('test/e2e/a.test.ts', overlapping)).toEqual(['fast', 'slow']);
  });
});
