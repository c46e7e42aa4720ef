/**
 * Randomness as an input: pure cores take a Random so a seeded simulation replays exactly.
 */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** An integer in [minInclusive, maxExclusive). */
  int(minInclusive: number, maxExclusive: number): number;
}

/** An sfc32 generator seeded from a 32-bit integer (splitmix32 expands the seed into its four words). */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  const splitmix = (): number => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const next = (): number => {
    // sfc32: small, fast, passes PractRand for our needs.
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
  return {
    next,
    int: (minInclusive, maxExclusive) => minInclusive + Math.floor(next() * (maxExclusive - minInclusive)),
  };
}

/** The shell's source: seeded from the OS so two nodes never share a sequence. */
export function systemRandom(): Random {
  return seededRandom(Math.floor(Math.random() * 4294967296));
}
