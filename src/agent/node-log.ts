import type { Writable } from 'node:stream';
import { eventToText } from '../common/event-format.js';
import { EventJsonWriter } from '../common/event-json-writer.js';
import type { icmpwatch } from '../common/proto.js';

export type LogFormat = 'text' | 'json';

/**
 * The agent's stdout: one line per event (what `kubectl logs` shows). Lines are gathered as bytes
 * and written once per event-loop turn, because stdout to a pipe is a synchronous write per call.
 */
export class NodeLog {
  private readonly pending = new EventJsonWriter();
  private lines = 0;
  private scheduled = false;

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
    this.pending.text(
      this.format === 'json'
        ? JSON.stringify({ notice: kind, ...fields })
        : `${kind.toUpperCase()} ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(' ')}`,
    );
    this.written();
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
    this.lines = 0;
    this.out.write(this.pending.take());
  }
}
