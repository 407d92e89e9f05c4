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

/**
 * The agent's stdout: one line per event (what `kubectl logs` shows). Lines are gathered as bytes
 * and written once per event-loop turn or 512 lines: one write call per line costs more than the
 * line.
 */
export class NodeLog {
  private readonly pending = new EventJsonWriter();
  private lines = 0;
  private scheduled = false;
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
    const bytes = this.pending.take();
    if (this.out.writableLength + bytes.length > MAX_UNWRITTEN_BYTES) {
      this.dropped += lines;
      this.unannounced += lines;
      return;
    }
    if (this.unannounced > 0) {
      this.out.write(`${this.noticeLine('lost', { logLines: this.unannounced, reason: 'stdout-backlog' })}\n`);
      this.unannounced = 0;
    }
    this.out.write(bytes);
  }
}
