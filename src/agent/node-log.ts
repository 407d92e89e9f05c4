import type { Writable } from 'node:stream';
import { eventToJson, eventToText } from '../common/event-format.js';
import type { icmpwatch } from '../common/proto.js';

export type LogFormat = 'text' | 'json';

/**
 * The agent's stdout: one line per event (what `kubectl logs` shows). Lines are gathered and
 * written once per event-loop turn, because stdout to a pipe is a synchronous write per call.
 */
export class NodeLog {
  private lines: string[] = [];
  private scheduled = false;

  constructor(
    private readonly format: LogFormat,
    private readonly out: Writable = process.stdout,
  ) {}

  event(ev: icmpwatch.v1.IEvent): void {
    this.push(this.format === 'json' ? JSON.stringify(eventToJson(ev)) : eventToText(ev));
  }

  /** A notice for the operator in the event stream itself (loss, hook changes). */
  notice(kind: 'lost', fields: Record<string, string | number>): void {
    this.push(
      this.format === 'json'
        ? JSON.stringify({ notice: kind, ...fields })
        : `${kind.toUpperCase()} ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(' ')}`,
    );
  }

  private push(line: string): void {
    this.lines.push(line);
    if (this.lines.length >= 512) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.lines.length === 0) return;
    this.out.write(this.lines.join('\n') + '\n');
    this.lines = [];
  }
}
