// Where records become durable and visible: the journal first (when there is a data dir), then, in
// one synchronous step, the history and the live fan-out. Doing both in one step is what lets a
// subscriber read history and follow live records with no gap and no duplicate.
import type { Logger } from '../common/log.js';
import { icmpwatch } from '../common/proto.js';
import { timestampMs } from '../common/grpc/subscribe-request.js';
import { encodeResponse, eventResponse, type EncodedResponse } from './encoded-response.js';
import { History } from './history.js';
import type { Hub } from './hub.js';
import { Journal, type RecoveryResult } from './journal.js';
import { decodeJournalPayload, journalPayload, journalPayloadLength, type RecordWithBytes } from './journal-record.js';
import { timestampFromMs } from './timestamps.js';

export interface StoreOptions {
  dataDir: string | null;
  historyEvents: number;
  historyAgeMs: number;
  historyBytes: number;
  log: Logger;
}

/** What the record is about in time: the event's time, or the end of a loss. */
function recordTimeMs({ record, event }: RecordWithBytes): number {
  const ts = event ? event.time : record.lostEvents?.last;
  return ts ? timestampMs(ts) : Date.now();
}

/** The response subscribers get for a record: framed around its event's bytes, or encoded. */
function toResponse({ record, event }: RecordWithBytes, timeMs: number): EncodedResponse {
  if (event) return eventResponse(event.node, event.bytes, timeMs);
  return encodeResponse({ nodeName: record.lostEvents?.nodeName ?? '', time: timestampFromMs(timeMs), lostEvents: record.lostEvents ?? null });
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
    onRecovered: (recovered: RecordWithBytes, timeMs: number) => void,
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
        let recovered: RecordWithBytes;
        try {
          recovered = decodeJournalPayload(payload);
        } catch {
          return null;
        }
        const timeMs = recordTimeMs(recovered);
        history.append(toResponse(recovered, timeMs), timeMs, payload.length);
        onRecovered(recovered, timeMs);
        return timeMs;
      },
    );
    return { store: new Store(history, hub, journal), recovery };
  }

  /** Resolves once the records are durable (or in memory only, without a data dir) and published. */
  async add(records: RecordWithBytes[]): Promise<void> {
    const times = records.map(recordTimeMs);
    // The journal records' sizes are what the history's byte bound counts, also without a journal.
    let sizes: number[];
    if (this.journal) {
      const entries = records.map((r, i) => ({ payload: journalPayload(r), timeMs: times[i]! }));
      await this.journal.append(entries);
      sizes = entries.map((e) => e.payload.byteLength);
    } else {
      sizes = records.map(journalPayloadLength);
    }
    records.forEach((r, i) => {
      const response = toResponse(r, times[i]!);
      this.history.append(response, times[i]!, sizes[i]!);
      this.hub.publish(response, times[i]!);
    });
  }

  /** A notice for live subscribers only (node status): not history. */
  announce(response: icmpwatch.v1.ISubscribeResponse): void {
    this.hub.publish(encodeResponse(response), response.time ? timestampMs(response.time) : Date.now());
  }

  async close(): Promise<void> {
    await this.journal?.close();
  }
}
