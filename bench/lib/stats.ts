/** Samples (any unit: each benchmark says which) and their percentiles. */
export class Samples {
  #buf = new Float64Array(4096);
  #n = 0;

  push(v: number): void {
    if (this.#n === this.#buf.length) {
      const bigger = new Float64Array(this.#buf.length * 2);
      bigger.set(this.#buf);
      this.#buf = bigger;
    }
    this.#buf[this.#n++] = v;
  }

  get count(): number {
    return this.#n;
  }

  summary(): { p50: number; p99: number; max: number; mean: number } {
    const n = this.#n;
    if (n === 0) return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN, mean: Number.NaN };
    const s = this.#buf.slice(0, n).sort();
    let sum = 0;
    for (let i = 0; i < n; i += 1) sum += s[i]!;
    const rank = (q: number): number => s[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))]!;
    return { p50: rank(0.5), p99: rank(0.99), max: s[n - 1]!, mean: sum / n };
  }
}

/** The lower median of `xs` (NaN when empty). */
export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? Number.NaN : s[Math.floor((s.length - 1) / 2)]!;
};
