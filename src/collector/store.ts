// Where records become durable and visible: the journal first (when there is a data dir), then, in
// one synchronous step, the history and the live fan-out. Doing both in one step is what lets a
// subscriber read history and follow live records with no gap and no duplicate.
import type { Logger } from '../common/log.js';
import { icmpwatch } from '../common/proto.js';
import { timestampMs } from '../common/grpc/subscribe-request.js';
import { History } from './history.js';
import type { Hub } from './hub.js';
import { Journal, type RecoveryResult } from './journal.js';
import { timestampFromMs } from './timestamps.js';

const v1 = icmpwatch.v1;

export interface StoreOptions {
  dataDir: string | null;
  historyEvents: number;
  historyAgeMs: number;
  historyBytes: number;
  log: Logger;
}

/** What the record is about in time: the event's time, or the end of a loss. */
export function recordTimeMs(record: icmpwatch.v1.IJournalRecord): number {
  const ts = record.event?.time ?? record.lostEvents?.last;
  return ts ? timestampMs(ts) : Date.now();
}

function toResponse(record: icmpwatch.v1.IJournalRecord, timeMs: number): icmpwatch.v1.ISubscribeResponse {
  const time = timestampFromMs(timeMs);
  return record.event
    ? { nodeName: record.event.node ?? '', time, event: record.event }
    : { nodeName: record.lostEvents?.nodeName ?? '', time, lostEvents: record.lostEvents ?? null };
}

export class Store {
  private constructor(
    readonly history: History,
    private readonly hub: Hub,
    private readonly journal: Journal | null,
  ) {}

  /**
   * Loads the journal into the history, handing every recovered record to `onRecovered` too (the
   * ingest rebuilds its acknowledgement state from them).
   */
  static async open(
    options: StoreOptions,
    hub: Hub,
    onRecovered: (record: icmpwatch.v1.IJournalRecord, timeMs: number) => void,
  ): Promise<{ store: Store; recovery: RecoveryResult | null }> {
    const history = new History(options.historyEvents, options.historyAgeMs, options.historyBytes);
    if (options.dataDir === null) return { store: new Store(history, hub, null), recovery: null };
    const { journal, recovery } = await Journal.open(
      {
        dir: options.dataDir,
        retention: { maxRecords: options.historyEvents, maxAgeMs: options.historyAgeMs, maxBytes: options.historyBytes },
        // The files hold what the history does, plus at most one segment (an eighth of it).
        segmentSize: { records: Math.max(1000, Math.ceil(options.historyEvents / 8)), bytes: Math.ceil(options.historyBytes / 8) },
        log: options.log,
      },
      (payload) => {
        let record: icmpwatch.v1.JournalRecord;
        try {
          record = v1.JournalRecord.decode(payload);
        } catch {
          return null;
        }
        const timeMs = recordTimeMs(record);
        history.append(toResponse(record, timeMs), timeMs, payload.length);
        onRecovered(record, timeMs);
        return timeMs;
      },
    );
    return { store: new Store(history, hub, journal), recovery };
  }

  /** Resolves once the records are durable (or in memory only, without a data dir) and published. */
  async add(records: icmpwatch.v1.IJournalRecord[]): Promise<void> {
    // Encoded also without a journal: the size is what the history's byte bound counts.
    const timed = records.map((record) => ({ record, timeMs: recordTimeMs(record), payload: v1.JournalRecord.encode(record).finish() }));
    if (this.journal) await this.journal.append(timed.map(({ payload, timeMs }) => ({ payload, timeMs })));
    for (const { record, timeMs, payload } of timed) {
      const response = toResponse(record, timeMs);
      this.history.append(response, timeMs, payload.length);
      this.hub.publish(response, timeMs);
    }
  }

  /** A notice for live subscribers only (node status): not history. */
  announce(response: icmpwatch.v1.ISubscribeResponse): void {
    this.hub.publish(response, response.time ? timestampMs(response.time) : Date.now());
  }

  async close(): Promise<void> {
    await this.journal?.close();
  }
}
