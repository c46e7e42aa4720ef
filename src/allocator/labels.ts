/**
 * Label rules compiled once: a predicate, a canonical key (so equal rule sets share one node index) and a
 * text for reasons a user reads.
 */
import type { LabelConstraint } from './types.ts';

export type Labels = Readonly<Record<string, string>>;

export interface CompiledConstraint {
  /** Canonical and unambiguous: equal keys mean equal rules. */
  readonly key: string;
  /** For humans: `zone=eu`, `zone!=eu`, `zone in (a, b)`, `zone=~^eu`. */
  readonly text: string;
  readonly labelKey: string;
  matches(labels: Labels): boolean;
}

/** Longest regex pattern accepted; a longer one never matches (patterns run on the leader). */
export const patternLengthMax = 256;

export function labelOf(labels: Labels, key: string): string | undefined {
  return Object.hasOwn(labels, key) ? labels[key] : undefined;
}

export function compileConstraint(constraint: LabelConstraint): CompiledConstraint {
  const labelKey = constraint.key;
  switch (constraint.operator) {
    case '=': {
      const value = constraint.value;
      return {
        key: JSON.stringify([labelKey, '=', value]),
        text: `${labelKey}=${value}`,
        labelKey,
        matches: (labels) => labelOf(labels, labelKey) === value,
      };
    }
    case '!=': {
      const value = constraint.value;
      return {
        key: JSON.stringify([labelKey, '!=', value]),
        text: `${labelKey}!=${value}`,
        labelKey,
        matches: (labels) => labelOf(labels, labelKey) !== value,
      };
    }
    case 'in':
    case 'notIn': {
      const values = [...new Set(constraint.values)].sort();
      const set = new Set(values);
      const negated = constraint.operator === 'notIn';
      return {
        key: JSON.stringify([labelKey, constraint.operator, values]),
        text: `${labelKey} ${negated ? 'not in' : 'in'} (${values.join(', ')})`,
        labelKey,
        matches: (labels) => {
          const value = labelOf(labels, labelKey);
          return negated ? value === undefined || !set.has(value) : value !== undefined && set.has(value);
        },
      };
    }
    case 'regex': {
      const pattern = constraint.pattern;
      const regex = compilePattern(pattern);
      return {
        key: JSON.stringify([labelKey, 'regex', pattern]),
        text: regex ? `${labelKey}=~${pattern}` : `${labelKey}=~${pattern} (an invalid pattern)`,
        labelKey,
        matches: (labels) => {
          const value = labelOf(labels, labelKey);
          return regex !== null && value !== undefined && regex.test(value);
        },
      };
    }
  }
}

function compilePattern(pattern: string): RegExp | null {
  if (pattern.length > patternLengthMax) return null;
  try {
    return new RegExp(pattern);
  } catch {
    // A bad pattern is the submitter's mistake; it matches nothing and the reason says so.
    return null;
  }
}

/** The task's hard rules, equality record first, deduplicated and sorted by key. */
export function compileConstraints(
  equalities: Labels,
  rules: readonly LabelConstraint[] | undefined,
): CompiledConstraint[] {
  const all = new Map<string, CompiledConstraint>();
  for (const [key, value] of Object.entries(equalities)) {
    const compiled = compileConstraint({ key, operator: '=', value });
    all.set(compiled.key, compiled);
  }
  for (const rule of rules ?? []) {
    const compiled = compileConstraint(rule);
    all.set(compiled.key, compiled);
  }
  return [...all.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

export function matchesAll(labels: Labels, constraints: readonly CompiledConstraint[]): boolean {
  for (const constraint of constraints) if (!constraint.matches(labels)) return false;
  return true;
}

/** The same labels with the same values, in any order. */
export function sameLabels(a: Labels, b: Labels): boolean {
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => labelOf(b, key) === a[key]);
}
