/** Events per second over a sliding window of whole seconds. */
export class RateWindow {
  private readonly buckets: number[];
  private currentSecond = Math.floor(Date.now() / 1000);

  constructor(private readonly seconds = 60) {
    this.buckets = new Array<number>(seconds).fill(0);
  }

  add(count: number, now = Date.now()): void {
    this.advance(now);
    this.buckets[this.currentSecond % this.seconds]! += count;
  }

  perSecond(now = Date.now()): number {
    this.advance(now);
    return this.buckets.reduce((a, b) => a + b, 0) / this.seconds;
  }

  private advance(now: number): void {
    const second = Math.floor(now / 1000);
    for (let s = Math.max(this.currentSecond + 1, second - this.seconds + 1); s <= second; s++) this.buckets[s % this.seconds] = 0;
    this.currentSecond = Math.max(this.currentSecond, second);
  }
}
