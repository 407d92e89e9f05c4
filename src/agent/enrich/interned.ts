/**
 * One copy of a value that many API objects repeat. The API hands every pod its own copy of its
 * namespace, node name, label set and owner, while 50k pods of a few hundred Deployments on a few
 * hundred nodes hold few distinct ones. Bounded: when full it starts afresh, so values kept before
 * are no longer shared (less memory saved, never a wrong answer).
 */
export class Interned<T> {
  private readonly kept = new Map<string, T>();

  constructor(private readonly limit: number) {}

  /** The value kept under `key`; `value`, kept from now on, if there is none. */
  get(key: string, value: T): T {
    const had = this.kept.get(key);
    if (had !== undefined) return had;
    if (this.kept.size >= this.limit) this.kept.clear();
    this.kept.set(key, value);
    return value;
  }
}
