import { describe, expect, it } from 'vitest';
import { OfferBook, type Subscriber } from './offers.ts';
import type { Resources } from '../allocator/index.ts';
import type { AcceptResult, Offer, OfferNode, OfferView, SchedulerEvent } from './types.ts';

const GiB = 1024 ** 3;
const node = (id: string, cpuMillis = 4000, memoryGiB = 16, free?: Resources): OfferNode => ({
  id,
  capacity: { cpuMillis, memoryBytes: memoryGiB * GiB },
  free: free ?? { cpuMillis, memoryBytes: memoryGiB * GiB },
  up: true,
  schedulable: true,
});
const framework = (id: string, role = 'default', priority = 50): Subscriber => ({
  id,
  info: { role, priority },
});
const small = (cpuMillis: number, memoryGiB = 1): Resources => ({ cpuMillis, memoryBytes: memoryGiB * GiB });

function offered(events: readonly SchedulerEvent[], frameworkId?: string): Offer[] {
  return events.flatMap((event) =>
    event.type === 'OFFERS' && (frameworkId === undefined || event.frameworkId === frameworkId)
      ? event.offers
      : [],
  );
}
function rescinded(events: readonly SchedulerEvent[]): string[] {
  return events.flatMap((event) => (event.type === 'RESCIND' ? [event.offerId] : []));
}
function revived(book: OfferBook, ...frameworks: Subscriber[]): OfferBook {
  for (const f of frameworks) {
    book.subscribe(f);
    book.revive(f.id);
  }
  return book;
}
function refusedCode<Spec>(result: AcceptResult<Spec>): string | null {
  return result.ok ? null : result.error.frameworkCode;
}

describe('the offer book', () => {
  it('offers nothing to a framework until it revives; then all of each node’s free room', () => {
    const book = new OfferBook({ epoch: 'n1.4' });
    book.subscribe(framework('a'));
    const view: OfferView = { nodes: [node('x'), node('y', 4000, 16, small(1000, 2))] };
    expect(book.offerRound(view, 0)).toEqual([]);
    book.revive('a');
    const offers = offered(book.offerRound(view, 1000));
    // Each round starts one node further on; ids count up within the book's epoch.
    expect(offers.map((offer) => [offer.id, offer.nodeId, offer.resources])).toEqual([
      ['n1.4-o1', 'y', { cpuMillis: 1000, memoryBytes: 2 * GiB }],
      ['n1.4-o2', 'x', { cpuMillis: 4000, memoryBytes: 16 * GiB }],
    ]);
    expect(offers[0]?.expiresAtMs).toBe(31_000);
    // Nothing more to offer while those stand.
    expect(offered(book.offerRound(view, 2000))).toEqual([]);
    expect(book.checkInvariants(view)).toEqual([]);
  });

  it('higher priority first, whatever the shares', () => {
    const book = revived(
      new OfferBook({ epoch: 'e' }),
      framework('low', 'a', 10),
      framework('high', 'b', 90),
    );
    const view: OfferView = {
      nodes: [node('x')],
      namespaceUsage: new Map([['b', small(100_000, 100)]]),
    };
    expect(offered(book.offerRound(view, 0)).map((offer) => offer.frameworkId)).toEqual(['high']);
  });

  it('within a priority, the namespace with the lowest dominant share per weight first', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('a1', 'a'), framework('b1', 'b'));
    const nodes = [node('n0'), node('n1'), node('n2'), node('n3')];
    const view: OfferView = { nodes, namespaces: [{ name: 'b', weight: 3 }] };
    const byFramework = offered(book.offerRound(view, 0)).map((offer) => offer.frameworkId);
    // Each node is a quarter of the cluster: a (weight 1) gets one, b (weight 3) three.
    expect(byFramework.filter((id) => id === 'a1')).toHaveLength(1);
    expect(byFramework.filter((id) => id === 'b1')).toHaveLength(3);
  });

  it('cuts an offer to the namespace quota, offers held counted, and the rest goes on down the order', () => {
    const book = revived(
      new OfferBook({ epoch: 'e' }),
      framework('q', 'capped', 90),
      framework('r', 'other', 10),
    );
    const view: OfferView = {
      nodes: [node('x'), node('y')],
      namespaces: [{ name: 'capped', quota: { cpuMillis: 3000, memoryBytes: 9 * GiB } }],
      namespaceUsage: new Map([['capped', small(1000, 1)]]),
    };
    const offers = offered(book.offerRound(view, 0));
    // q (priority 90) gets what its quota leaves on x; the rest of x and all of y go to r.
    expect(offers.map((offer) => [offer.frameworkId, offer.nodeId, offer.resources])).toEqual([
      ['q', 'x', small(2000, 8)],
      ['r', 'x', small(2000, 8)],
      ['r', 'y', small(4000, 16)],
    ]);
  });

  it('rescinds an unanswered offer at its timeout, and a declined node waits out refuse_seconds', () => {
    const book = revived(new OfferBook({ epoch: 'e', offerTimeoutMs: 10_000 }), framework('a'));
    const view: OfferView = { nodes: [node('x')] };
    const [first] = offered(book.offerRound(view, 0));
    expect(rescinded(book.offerRound(view, 9999))).toEqual([]);
    const events = book.offerRound(view, 10_000);
    expect(rescinded(events)).toEqual([first?.id]);
    // Rescinded room is offered again in the same round.
    const [second] = offered(events);
    expect(second?.nodeId).toBe('x');
    expect(book.decline('a', [second?.id ?? '', 'unknown'], 20_000, 10_500)).toEqual([second?.id]);
    expect(offered(book.offerRound(view, 30_499))).toEqual([]);
    expect(offered(book.offerRound(view, 30_500))).toHaveLength(1);
  });

  it('an accept’s unused rest refuses only room no larger than it; a decline refuses the node whatever it has', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('a'));
    const [offer] = offered(book.offerRound({ nodes: [node('x')] }, 0));
    const result = book.accept(
      {
        frameworkId: 'a',
        offerIds: [offer?.id ?? ''],
        tasks: [{ taskId: 't', nodeId: 'x', resources: small(3000, 15), spec: null }],
        refuseMs: 60_000,
      },
      1,
    );
    expect(result.ok && result.filteredNodeIds).toEqual(['x']);
    if (result.ok) book.settle(result.acceptId);
    // The task committed: x has 1 CPU and 1 GiB free, the refused rest. Not offered…
    const rest: OfferView = { nodes: [node('x', 4000, 16, small(1000, 1))] };
    expect(offered(book.offerRound(rest, 2))).toEqual([]);
    // …until a task there ends and the room grows past it.
    const grown: OfferView = { nodes: [node('x', 4000, 16, small(2000, 2))] };
    const [again] = offered(book.offerRound(grown, 3));
    expect(again?.resources).toEqual(small(2000, 2));
    book.decline('a', [again?.id ?? ''], 60_000, 4);
    expect(offered(book.offerRound({ nodes: [node('x')] }, 5))).toEqual([]);
  });

  it('REVIVE clears filters; SUPPRESS stops new offers; a minimum shape skips smaller nodes', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('a'));
    const view: OfferView = { nodes: [node('big', 8000), node('tiny', 500)] };
    const offers = offered(book.offerRound(view, 0));
    book.decline(
      'a',
      offers.map((offer) => offer.id),
      60_000,
      0,
    );
    book.revive('a', small(1000));
    expect(offered(book.offerRound(view, 1)).map((offer) => offer.nodeId)).toEqual(['big']);
    book.suppress('a');
    book.decline(
      'a',
      book.offers().map((offer) => offer.id),
      0,
      2,
    );
    expect(offered(book.offerRound(view, 3))).toEqual([]);
  });

  it('a node that drains or leaves voids its offers; one that leaves is a FAILURE for every framework', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('a'), framework('b'));
    const events = book.offerRound({ nodes: [node('x'), node('y')] }, 0);
    expect(offered(events)).toHaveLength(2);
    const after = book.offerRound({ nodes: [{ ...node('x'), schedulable: false }] }, 1);
    expect(rescinded(after)).toHaveLength(2);
    expect(after.filter((event) => event.type === 'FAILURE')).toEqual([
      { type: 'FAILURE', frameworkId: 'a', nodeId: 'y' },
      { type: 'FAILURE', frameworkId: 'b', nodeId: 'y' },
    ]);
    expect(book.offers()).toEqual([]);
  });

  it('rescinds newest offers first when the node’s free room shrinks below them', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('a'));
    const [offer] = offered(book.offerRound({ nodes: [node('x')] }, 0));
    const view: OfferView = { nodes: [node('x', 4000, 16, small(1000))] };
    const events = book.offerRound(view, 1);
    expect(rescinded(events)).toEqual([offer?.id]);
    expect(offered(events)[0]?.resources.cpuMillis).toBe(1000);
    expect(book.checkInvariants(view)).toEqual([]);
  });
});

describe('accept', () => {
  /** a holds offers on x (with ports 8000–8009) and z; b holds one on y. */
  function twoNodes(): { book: OfferBook; x: Offer; y: Offer; view: OfferView } {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('a'), framework('b'));
    const view: OfferView = {
      nodes: [{ ...node('x'), ports: [{ begin: 8000, end: 8009 }] }, node('y'), node('z')],
    };
    const offers = offered(book.offerRound(view, 0), 'a');
    const x = offers.find((offer) => offer.nodeId === 'x');
    const y = offers.find((offer) => offer.nodeId === 'z');
    if (!x || !y) throw new Error(`a was offered x and z, not ${offers.map((offer) => offer.nodeId).join()}`);
    return { book, x, y, view };
  }

  it('launches tasks on several nodes at once; the unused rest is filtered; what it took is held until settled', () => {
    const { book, x, y, view } = twoNodes();
    const result = book.accept(
      {
        frameworkId: 'a',
        offerIds: [x.id, y.id],
        tasks: [
          { taskId: 't1', nodeId: 'x', resources: { ...small(1000), ports: [8000] }, spec: 'one' },
          { taskId: 't2', nodeId: y.nodeId, resources: small(4000, 16), spec: 'two' },
        ],
        refuseMs: 60_000,
      },
      1000,
    );
    if (!result.ok) throw result.error;
    expect(result.launches.map((launch) => [launch.taskId, launch.nodeId, launch.spec])).toEqual([
      ['t1', 'x', 'one'],
      ['t2', y.nodeId, 'two'],
    ]);
    expect(result.filteredNodeIds).toEqual(['x']);
    expect(book.heldOn('x')).toEqual({ ...small(1000), ports: [{ begin: 8000, end: 8000 }] });
    // x's rest goes to b, not a (filtered), and never the port in flight.
    const next = offered(book.offerRound(view, 2000));
    expect(next.map((offer) => [offer.frameworkId, offer.nodeId])).toContainEqual(['b', 'x']);
    expect(next.find((offer) => offer.nodeId === 'x')?.resources.ports).toEqual([{ begin: 8001, end: 8009 }]);
    expect(book.checkInvariants(view)).toEqual([]);
    expect(book.settle(result.acceptId)).toBe(true);
    expect(book.settle(result.acceptId)).toBe(false);
  });

  it('is all or nothing: one node that does not fit refuses everything and releases the offers', () => {
    const { book, x, y } = twoNodes();
    const result = book.accept(
      {
        frameworkId: 'a',
        offerIds: [x.id, y.id],
        tasks: [
          { taskId: 't1', nodeId: 'x', resources: small(1000), spec: 'ok' },
          { taskId: 't2', nodeId: y.nodeId, resources: small(4001), spec: 'too big' },
        ],
      },
      1000,
    );
    expect(result.ok).toBe(false);
    if (result.ok) return;
    expect(result.error.frameworkCode).toBe('TASKS_DO_NOT_FIT');
    expect(result.error.message).toMatch(
      /^the tasks on node . ask for 4\.001 CPU and 1 GiB; its offers hold 4 CPU and 16 GiB \(short of CPU\)$/,
    );
    expect(result.taskState).toBe('TASK_ERROR');
    expect([...result.released].sort()).toEqual([x.id, y.id].sort());
    expect(book.heldOn('x')).toEqual({ cpuMillis: 0, memoryBytes: 0 });
    expect(book.offers().some((offer) => offer.frameworkId === 'a')).toBe(false);
  });

  it('refuses with a stable code for each way an accept can be wrong', () => {
    const cases: [
      string,
      (x: Offer, y: Offer, other: Offer) => Parameters<OfferBook['accept']>[0],
      string,
    ][] = [
      ['no offers', () => ({ frameworkId: 'a', offerIds: [], tasks: [] }), 'CALL_INVALID'],
      ['twice', (x) => ({ frameworkId: 'a', offerIds: [x.id, x.id], tasks: [] }), 'OFFER_DUPLICATE'],
      [
        'unknown',
        (x) => ({ frameworkId: 'a', offerIds: [x.id, 'old-leader-o1'], tasks: [] }),
        'OFFER_UNKNOWN',
      ],
      [
        'not owned',
        (x, _y, other) => ({ frameworkId: 'a', offerIds: [x.id, other.id], tasks: [] }),
        'OFFER_NOT_OWNED',
      ],
      [
        'node not offered',
        (x) => ({
          frameworkId: 'a',
          offerIds: [x.id],
          tasks: [{ taskId: 't', nodeId: 'q', resources: small(1), spec: '' }],
        }),
        'TASK_NODE_NOT_OFFERED',
      ],
      [
        'port not offered',
        (x) => ({
          frameworkId: 'a',
          offerIds: [x.id],
          tasks: [{ taskId: 't', nodeId: 'x', resources: { ...small(1), ports: [9000] }, spec: '' }],
        }),
        'PORTS_NOT_OFFERED',
      ],
      [
        'port twice',
        (x) => ({
          frameworkId: 'a',
          offerIds: [x.id],
          tasks: [
            { taskId: 't', nodeId: 'x', resources: { ...small(1), ports: [8001] }, spec: '' },
            { taskId: 'u', nodeId: 'x', resources: { ...small(1), ports: [8001] }, spec: '' },
          ],
        }),
        'PORTS_NOT_OFFERED',
      ],
      [
        'bad resources',
        (x) => ({
          frameworkId: 'a',
          offerIds: [x.id],
          tasks: [{ taskId: 't', nodeId: 'x', resources: small(-1), spec: '' }],
        }),
        'TASK_INVALID',
      ],
      [
        'duplicate task',
        (x) => ({
          frameworkId: 'a',
          offerIds: [x.id],
          tasks: [
            { taskId: 't', nodeId: 'x', resources: small(1), spec: '' },
            { taskId: 't', nodeId: 'x', resources: small(1), spec: '' },
          ],
        }),
        'TASK_DUPLICATE',
      ],
      [
        'negative refuse',
        (x) => ({ frameworkId: 'a', offerIds: [x.id], tasks: [], refuseMs: -1 }),
        'CALL_INVALID',
      ],
    ];
    for (const [name, make, code] of cases) {
      const { book, x, y } = twoNodes();
      const other = book.offers().find((offer) => offer.frameworkId === 'b');
      if (!other) throw new Error('b holds an offer');
      const result = book.accept(make(x, y, other), 1000);
      expect([name, refusedCode(result)]).toEqual([name, code]);
      // Another framework's offer is never released by a's mistake.
      expect(book.offers().map((offer) => offer.id)).toContain(other.id);
    }
  });

  it('refuses an offer past its timeout even before the round rescinds it', () => {
    const { book, x } = twoNodes();
    expect(refusedCode(book.accept({ frameworkId: 'a', offerIds: [x.id], tasks: [] }, 30_000))).toBe(
      'OFFER_EXPIRED',
    );
  });

  it('refuses a task id the framework has, through the registry’s answer', () => {
    const { book, x } = twoNodes();
    const result = book.accept(
      {
        frameworkId: 'a',
        offerIds: [x.id],
        tasks: [{ taskId: 'old', nodeId: 'x', resources: small(1), spec: '' }],
      },
      1,
      (taskId) => taskId === 'old',
    );
    expect(refusedCode(result)).toBe('TASK_DUPLICATE');
  });

  it('calls from a framework with no subscription here are refused', () => {
    const book = new OfferBook({ epoch: 'e' });
    expect(() => book.revive('ghost')).toThrow(/no subscription on this leader/);
    expect(() => new OfferBook({ epoch: 'e', offerTimeoutMs: 0 })).toThrow(/offerTimeoutMs/);
  });
});

describe('framework zero (built-in pending work)', () => {
  it('keeps a node from lower-ordered frameworks while higher built-in work fits there', () => {
    const view: OfferView = {
      nodes: [node('x'), node('small', 1000, 4)],
      builtIn: [{ priority: 50, request: small(2000), eligible: (id) => id !== 'elsewhere' }],
    };
    const low = revived(new OfferBook({ epoch: 'e' }), framework('low', 'default', 40));
    // The work fits on x, not on small: low is offered only small.
    expect(offered(low.offerRound(view, 0)).map((offer) => offer.nodeId)).toEqual(['small']);
    const ineligible = { ...view, builtIn: [{ priority: 50, request: small(2000), eligible: () => false }] };
    expect(offered(low.offerRound(ineligible, 1)).map((offer) => offer.nodeId)).toEqual(['x']);
    const high = revived(new OfferBook({ epoch: 'e' }), framework('high', 'default', 70));
    expect(offered(high.offerRound(view, 0))).toHaveLength(2);
  });

  it('at equal priority, built-in work goes first in its own namespace and by share across namespaces', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('same', 'web'), framework('rich', 'batch'));
    const view: OfferView = {
      nodes: [node('x'), node('y')],
      namespaceUsage: new Map([['batch', small(4000, 0)]]),
      builtIn: [{ priority: 50, namespace: 'web', request: small(100) }],
    };
    expect(offered(book.offerRound(view, 0))).toEqual([]);
  });

  it('respects the built-in allocator’s holds', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('a', 'default', 50));
    const view: OfferView = { nodes: [node('x'), node('y')], holds: [{ nodeId: 'x', priority: 60 }] };
    expect(offered(book.offerRound(view, 0)).map((offer) => offer.nodeId)).toEqual(['y']);
  });

  it('reclaims offers from frameworks it outranks when its work fits nowhere else', () => {
    const book = revived(new OfferBook({ epoch: 'e' }), framework('low', 'default', 10));
    const quiet: OfferView = { nodes: [node('x'), node('y')] };
    const offers = offered(book.offerRound(quiet, 0));
    expect(offers).toHaveLength(2);
    const urgent: OfferView = { ...quiet, builtIn: [{ priority: 90, request: small(3000) }] };
    const events = book.offerRound(urgent, 1);
    expect(rescinded(events)).toEqual([offers[0]?.id]);
    expect(book.heldOn('x')).toEqual({ cpuMillis: 0, memoryBytes: 0 });
    // …and does not offer it back while the work waits.
    expect(offered(events)).toEqual([]);
    // Work that outranks no one, or is over its quota, reclaims nothing.
    const capped: OfferView = {
      ...quiet,
      namespaces: [{ name: 'default', quota: { cpuMillis: 0 } }],
      builtIn: [{ priority: 90, request: small(3000) }],
    };
    expect(rescinded(book.offerRound(capped, 2))).toEqual([]);
  });
});
