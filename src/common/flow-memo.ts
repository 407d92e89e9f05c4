// What the node log and the exporter keep per flow (the bytes of the parts that stay the same for
// each of its packets), found by the flow's source endpoint: the agent hands the same endpoint
// object over for every packet from an address while its answer stands.

/** Flows kept per source: its peers, both directions' observations, a few more. */
const FLOWS_PER_SOURCE = 8;

/** Entries kept per source object, a few each (the oldest replaced); gone with the source. */
export class FlowMemo<T> {
  private readonly bySource = new WeakMap<object, { entries: T[]; next: number }>();

  /** The entries kept for flows from `source`, for the caller to match. */
  of(source: object): readonly T[] {
    return this.bySource.get(source)?.entries ?? NONE;
  }

  remember(source: object, entry: T): void {
    let kept = this.bySource.get(source);
    if (kept === undefined) {
      kept = { entries: [], next: 0 };
      this.bySource.set(source, kept);
    }
    kept.entries[kept.next] = entry;
    kept.next = (kept.next + 1) % FLOWS_PER_SOURCE;
  }
}

const NONE: readonly never[] = [];
