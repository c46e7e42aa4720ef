import { describe, expect, it } from 'vitest';
import { freePortRanges } from './frameworks.ts';

describe('the ports an offer holds', () => {
  it("are the node's dynamic range less the ports its tasks hold", () => {
    expect(freePortRanges({ min: 20000, max: 20010 }, [])).toEqual([{ begin: 20000, end: 20010 }]);
    expect(freePortRanges({ min: 20000, max: 20010 }, [20005, 20000, 20010, 8080, 20006])).toEqual([
      { begin: 20001, end: 20004 },
      { begin: 20007, end: 20009 },
    ]);
    expect(freePortRanges({ min: 20000, max: 20001 }, [20000, 20001])).toEqual([]);
  });
});
