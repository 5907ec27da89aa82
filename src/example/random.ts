/**
 * A small seeded pseudo-random generator for the example's data generation, shuffling and
 * partitioning. Same seed, same sequence, on every platform (only 32-bit integer arithmetic).
 */

// Local aliases: global lookups are ~10x slower inside vm contexts (as under jest).
const { cos, floor, imul, log, sin, sqrt, trunc, PI } = Math;

/** Deterministic random source (mulberry32). Not for cryptography. */
export class SeededRandom {
  private state: number;
  private spareNormal: number | undefined;

  constructor(seed: number) {
    // Any finite number works as a seed; mix it so that nearby seeds diverge quickly.
    this.state = (trunc(seed) ^ 0x9e3779b9) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [min, max). */
  uniform(min: number, max: number): number {
    return min + (max - min) * this.next();
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return floor(this.next() * n);
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spareNormal !== undefined) {
      const value = this.spareNormal;
      this.spareNormal = undefined;
      return value;
    }
    const u = 1 - this.next(); // (0, 1], so log(u) is finite
    const v = this.next();
    const radius = sqrt(-2 * log(u));
    this.spareNormal = radius * sin(2 * PI * v);
    return radius * cos(2 * PI * v);
  }

  /** Shuffles `items` in place (Fisher-Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const tmp = items[i]!;
      items[i] = items[j]!;
      items[j] = tmp;
    }
    return items;
  }
}

/** 0, 1, ..., n-1 in an order fixed by `seed`. */
export function seededPermutation(n: number, seed: number): number[] {
  return new SeededRandom(seed).shuffle(Array.from({ length: n }, (_, i) => i));
}
