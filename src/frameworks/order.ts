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
 *
 * Shares are computed once and kept until `add` changes them: a round compares contenders thousands of times
 * (5,000 nodes × 200 frameworks: a quarter of the round went to recomputing `dominantShare` before this).
 * `ContenderOrder` keeps one round's contenders sorted and re-places only those an offer moved.
 */
import { defaultNamespace, dominantShare, type NamespacePolicy, type Resources } from '../allocator/index.ts';
import { assert } from '../shared/assert.ts';
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
  /** `namespaceKey` and `frameworkShare` as last computed; `add` drops what it changes. */
  private readonly namespaceKeys = new Map<string, number>();
  private readonly frameworkShares = new Map<string, number>();

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
    this.namespaceKeys.delete(role);
    this.frameworkShares.delete(frameworkId);
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
    let key = this.namespaceKeys.get(namespace);
    if (key === undefined) {
      const weight = this.policies.get(namespace)?.weight ?? 1;
      key = dominantShare(toResources(this.namespaceHeld(namespace)), this.capacity) / weight;
      this.namespaceKeys.set(namespace, key);
    }
    return key;
  }

  frameworkShare(frameworkId: string): number {
    let share = this.frameworkShares.get(frameworkId);
    if (share === undefined) {
      share = dominantShare(toResources(this.frameworks.get(frameworkId) ?? noAmounts), this.capacity);
      this.frameworkShares.set(frameworkId, share);
    }
    return share;
  }
}

/** A framework in a `ContenderOrder`, with its share as the order last read it. */
interface Member<C extends Contender> {
  readonly contender: C;
  share: number;
  readonly group: Group<C>;
}

/** One namespace's frameworks at one priority, with the namespace's key as the order last read it. */
interface Group<C extends Contender> {
  readonly role: string;
  key: number;
  /** By (share, id). */
  readonly members: Member<C>[];
  /** The priority level's groups, this one among them, by (key, role). */
  readonly level: Group<C>[];
}

/**
 * Contenders in `compareContenders` order, kept as that order's own structure: priority levels (high first)
 * of namespace groups by (key, name), each of frameworks by (share, id). After an offer only its framework
 * moves within its group and its namespace's groups within their levels, so keeping the order costs a few
 * comparisons per offer, not a sort of every contender per node. Reads shares from the ledger: call `update`
 * for every contender counted in it (`ledger.add`) since the last `list`, before the next.
 */
export class ContenderOrder<C extends Contender> {
  private readonly ledger: ShareLedger;
  private readonly levels: Group<C>[][] = [];
  private readonly members = new Map<string, Member<C>>();
  private readonly groupsByRole = new Map<string, Group<C>[]>();
  /** Where a walk is: the next contender is `levels[level][group].members[member]`; -1: no walk. */
  private level = -1;
  private group = 0;
  private member = 0;

  constructor(ledger: ShareLedger, contenders: Iterable<C>) {
    this.ledger = ledger;
    const levels = new Map<number, { readonly groups: Map<string, Group<C>>; readonly level: Group<C>[] }>();
    for (const contender of contenders) {
      assert(!this.members.has(contender.id), `contender ${contender.id} is listed once`);
      let priority = levels.get(contender.priority);
      if (!priority) levels.set(contender.priority, (priority = { groups: new Map(), level: [] }));
      let group = priority.groups.get(contender.role);
      if (!group) {
        const key = ledger.namespaceKey(contender.role);
        group = { role: contender.role, key, members: [], level: priority.level };
        priority.groups.set(contender.role, group);
        priority.level.push(group);
        const sameRole = this.groupsByRole.get(contender.role);
        if (sameRole) sameRole.push(group);
        else this.groupsByRole.set(contender.role, [group]);
      }
      const member = { contender, share: ledger.frameworkShare(contender.id), group };
      group.members.push(member);
      this.members.set(contender.id, member);
    }
    for (const [, { level }] of [...levels].sort(([a], [b]) => b - a)) {
      for (const group of level) group.members.sort(compareMembers);
      level.sort(compareGroups);
      this.levels.push(level);
    }
  }

  /** Starts a walk of the order from its first contender: `next` gives each in turn until an `update`. */
  walk(): void {
    this.level = 0;
    this.group = 0;
    this.member = 0;
  }

  /** The walk's next contender; undefined after the last. Allocates nothing. */
  next(): C | undefined {
    assert(this.level >= 0, 'a walk of the order is under way');
    for (;;) {
      const level = this.levels[this.level];
      if (level === undefined) return undefined;
      const group = level[this.group];
      if (group === undefined) {
        this.level++;
        this.group = 0;
        continue;
      }
      const member = group.members[this.member++];
      if (member !== undefined) return member.contender;
      this.group++;
      this.member = 0;
    }
  }

  /** The ledger counted more (or less) for `contender`: its share and its namespace's key are read again. */
  update(contender: C): void {
    const member = this.members.get(contender.id);
    assert(member !== undefined, `contender ${contender.id} is in the order`);
    member.share = this.ledger.frameworkShare(contender.id);
    reposition(member.group.members, member, compareMembers);
    const key = this.ledger.namespaceKey(contender.role);
    for (const group of this.groupsByRole.get(contender.role) ?? []) {
      if (group.key === key) continue;
      group.key = key;
      reposition(group.level, group, compareGroups);
    }
    this.level = -1;
  }
}

function compareMembers<C extends Contender>(a: Member<C>, b: Member<C>): number {
  return a.share - b.share || compareIds(a.contender.id, b.contender.id);
}

function compareGroups<C extends Contender>(a: Group<C>, b: Group<C>): number {
  return a.key - b.key || compareIds(a.role, b.role);
}

/** Moves `item`, the one element of `items` whose key changed, to where the order puts it. */
function reposition<T>(items: T[], item: T, compare: (a: T, b: T) => number): void {
  let index = items.indexOf(item);
  assert(index >= 0, 'a repositioned item is in its list');
  for (let before = items[index - 1]; before !== undefined && compare(before, item) > 0;) {
    items[index] = before;
    before = items[--index - 1];
  }
  for (let after = items[index + 1]; after !== undefined && compare(item, after) > 0;) {
    items[index] = after;
    after = items[++index + 1];
  }
  items[index] = item;
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
