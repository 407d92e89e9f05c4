import type { Writable } from 'node:stream';
import { eventToText } from '../common/event-format.js';
import { EventJsonWriter } from '../common/event-json-writer.js';
import type { icmpwatch } from '../common/proto.js';

export type LogFormat = 'text' | 'json';

/**
 * Bytes stdout may hold unwritten. Node queues writes to a pipe in memory without bound when its
 * reader (the container runtime) falls behind; beyond this the agent drops log lines, counts them
 * and says so in the log once it can write again. Events still go to the collector.
 */
export const MAX_UNWRITTEN_BYTES = 16 * 1024 * 1024;

/** Working buffers kept for reuse once their lines are written. */
const SPARE_BUFFERS = 4;

/**
 * The agent's stdout: one line per event (what `kubectl logs` shows). Lines are gathered as bytes
 * and written once per event-loop turn or 512 lines: one write call per line costs more than the
 * line. A flush that fills most of the working buffer hands the buffer itself to the write and
 * gets it back for reuse when written; a small one is copied out (a whole buffer held for a few
 * lines would let a stalled reader pin far more memory than the lines).
 */
export class NodeLog {
  private readonly pending = new EventJsonWriter();
  private readonly spare: Buffer[] = [];
  private lines = 0;
  private scheduled = false;
  /** Memory held by writes not yet done: buffers handed over count whole. */
  private unwritten = 0;
  /** Lines dropped because stdout held MAX_UNWRITTEN_BYTES, in all and not yet announced. */
  dropped = 0;
  private unannounced = 0;

  constructor(
    private readonly format: LogFormat,
    private readonly out: Writable = process.stdout,
  ) {}

  event(ev: icmpwatch.v1.IEvent): void {
    if (this.format === 'json') this.pending.event(ev);
    else this.pending.text(eventToText(ev));
    this.written();
  }

  /** A notice for the operator in the event stream itself (loss, hook changes). */
  notice(kind: 'lost', fields: Record<string, string | number>): void {
    this.pending.text(this.noticeLine(kind, fields));
    this.written();
  }

  private noticeLine(kind: 'lost', fields: Record<string, string | number>): string {
    return this.format === 'json'
      ? JSON.stringify({ notice: kind, ...fields })
      : `${kind.toUpperCase()} ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(' ')}`;
  }

  private written(): void {
    if (++this.lines >= 512) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.lines === 0) return;
    const lines = this.lines;
    this.lines = 0;
    const handOver = 2 * this.pending.length >= this.pending.capacity;
    const held = handOver ? this.pending.capacity : this.pending.length;
    if (this.unwritten + held > MAX_UNWRITTEN_BYTES) {
      this.pending.discard();
      this.dropped += lines;
      this.unannounced += lines;
      return;
    }
    if (this.unannounced > 0) {
      this.write(Buffer.from(`${this.noticeLine('lost', { logLines: this.unannounced, reason: 'stdout-backlog' })}\n`), null);
      this.unannounced = 0;
    }
    if (!handOver) return this.write(this.pending.take(), null);
    const buffer = this.pending.capacity;
    const chunk = this.pending.handOver(this.spare.pop() ?? Buffer.allocUnsafe(buffer));
    this.write(chunk, Buffer.from(chunk.buffer, chunk.byteOffset, buffer));
  }

  /** Writes `chunk`; `reuse`, the whole buffer it is a view of, is kept for lines to come once written. */
  private write(chunk: Buffer, reuse: Buffer | null): void {
    const held = reuse ? reuse.length : chunk.length;
    this.unwritten += held;
    this.out.write(chunk, () => {
      this.unwritten -= held;
      if (reuse && this.spare.length < SPARE_BUFFERS) this.spare.push(reuse);
    });
  }
}
