/**
 * Who is offered first, and when built-in work (framework zero) goes before a framework. One ledger of what
 * each namespace and framework holds, counting live tasks, outstanding offers and accepted launches not yet
 * committed; every order reads it.
 *
 * The order, as the built-in allocator's (allocator.ts): strict priority, high first; within a priority,
 * weighted Dominant Resource Fairness across namespaces (`dominantShare` / weight, lowest first); within a
 * namespace, the framework with the lowest dominant share of its own; then id. Built-in pending work ranks
 * by the same first two keys and wins ties, so a framework in a namespace never overtakes that namespace's
 * own queue. In: capacity, policies and usage. Out: shares and comparisons. Mutated only by `add`.
 */
import { defaultNamespace, dominantShare, type NamespacePolicy, type Resources } from '../allocator/index.ts';
import { amountsOf, minus, noAmounts, plus, toResources, type Amounts } from './resources.ts';

/** A framework as the order sees it. */
export interface Contender {
  readonly id: string;
  /** Its namespace. */
  readonly role: string;
  readonly priority: number;
}

/** Built-in work as the order sees it. */
export interface BuiltInRank {
  readonly priority: number;
  readonly namespace?: string;
}

export class ShareLedger {
  private readonly capacity: Resources;
  private readonly policies = new Map<string, NamespacePolicy>();
  private readonly namespaces = new Map<string, Amounts>();
  private readonly frameworks = new Map<string, Amounts>();

  constructor(
    capacity: Resources,
    policies: readonly NamespacePolicy[],
    namespaceUsage: ReadonlyMap<string, Resources>,
    frameworkUsage: ReadonlyMap<string, Resources>,
  ) {
    this.capacity = capacity;
    for (const policy of policies) this.policies.set(policy.name, policy);
    for (const [name, usage] of namespaceUsage) this.namespaces.set(name, amountsOf(usage));
    for (const [id, usage] of frameworkUsage) this.frameworks.set(id, amountsOf(usage));
  }

  /** Counts (sign 1) or stops counting (-1) amounts held by a framework in its namespace. */
  add(role: string, frameworkId: string, amounts: Amounts, sign: 1 | -1): void {
    const change = (map: Map<string, Amounts>, key: string): void => {
      const held = map.get(key) ?? noAmounts;
      map.set(key, sign === 1 ? plus(held, amounts) : minus(held, amounts));
    };
    change(this.namespaces, role);
    change(this.frameworks, frameworkId);
  }

  /** What the namespace holds, offers and launches in flight included: what its quota is checked against. */
  namespaceHeld(namespace: string): Amounts {
    return this.namespaces.get(namespace) ?? noAmounts;
  }

  policy(namespace: string): NamespacePolicy | undefined {
    return this.policies.get(namespace);
  }

  /** The namespace's dominant share divided by its weight. */
  namespaceKey(namespace: string): number {
    const weight = this.policies.get(namespace)?.weight ?? 1;
    return dominantShare(toResources(this.namespaceHeld(namespace)), this.capacity) / weight;
  }

  frameworkShare(frameworkId: string): number {
    return dominantShare(toResources(this.frameworks.get(frameworkId) ?? noAmounts), this.capacity);
  }
}

/** Negative when `a` is offered before `b`. */
export function compareContenders(ledger: ShareLedger, a: Contender, b: Contender): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  if (a.role !== b.role) {
    const byShare = ledger.namespaceKey(a.role) - ledger.namespaceKey(b.role);
    if (byShare !== 0) return byShare;
    return compareIds(a.role, b.role);
  }
  return ledger.frameworkShare(a.id) - ledger.frameworkShare(b.id) || compareIds(a.id, b.id);
}

/** Built-in work goes before the framework: higher priority, or equal and its namespace's turn (ties: built-in). */
export function outranks(ledger: ShareLedger, work: BuiltInRank, framework: Contender): boolean {
  if (work.priority !== framework.priority) return work.priority > framework.priority;
  const namespace = work.namespace ?? defaultNamespace;
  if (namespace === framework.role) return true;
  return ledger.namespaceKey(namespace) <= ledger.namespaceKey(framework.role);
}

/** Negative when built-in work `a` goes before `b`. */
export function compareBuiltIn(ledger: ShareLedger, a: BuiltInRank, b: BuiltInRank): number {
  if (a.priority !== b.priority) return b.priority - a.priority;
  return (
    ledger.namespaceKey(a.namespace ?? defaultNamespace) -
    ledger.namespaceKey(b.namespace ?? defaultNamespace)
  );
}

/** Ids by code unit, as a tie-break that never depends on locale. */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
