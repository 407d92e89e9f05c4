/**
 * Exponential backoff with full jitter: each delay is random in [min, cap] where the cap doubles per
 * failure up to max, so agents that lost the same collector do not reconnect in lockstep.
 */
export class Backoff {
  private cap: number;

  constructor(
    private readonly minMs: number,
    private readonly maxMs: number,
    private readonly random: () => number = Math.random,
  ) {
    this.cap = minMs;
  }

  next(): number {
    const delay = this.minMs + this.random() * (this.cap - this.minMs);
    this.cap = Math.min(this.maxMs, this.cap * 2);
    return delay;
  }

  reset(): void {
    this.cap = this.minMs;
  }
}
