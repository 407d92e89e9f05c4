// An IngestRequest as the collector receives it. Hellos and a batch's counters and drop notice are
// decoded; the batch's events are not: each is checked and kept in the bytes the agent sent
// (event-wire.ts), with the few fields the collector reads, and stored and forwarded as it is.
import { eachDelimited } from '../protobuf-wire.js';
import { icmpwatch } from '../proto.js';
import { scanEvent, type ScannedEvent } from './event-wire.js';

// Field numbers (ingest.proto).
const HELLO = 1; // IngestRequest.hello, of oneof message
const BATCH = 2; // IngestRequest.batch, of oneof message
const EVENTS = 1; // EventBatch.events
const COUNTERS = 2; // EventBatch.counters
const DROPPED = 3; // EventBatch.dropped

export interface ReceivedBatch {
  /** Each a view of the request's bytes. */
  events: ScannedEvent[];
  counters: icmpwatch.v1.INodeCounters | null;
  dropped: icmpwatch.v1.IExportDrop | null;
}

export interface ReceivedIngestRequest {
  hello: icmpwatch.v1.IAgentHello | null;
  batch: ReceivedBatch | null;
}

export function emptyIngestRequest(): ReceivedIngestRequest {
  return { hello: null, batch: null };
}

/** A message that came in several parts: protobuf merges them as if they were one. */
function decodeMerged<T>(parts: Uint8Array[], decode: (bytes: Uint8Array) => T): T | null {
  return parts.length === 0 ? null : decode(parts.length === 1 ? parts[0]! : Buffer.concat(parts));
}

/**
 * Throws, saying why, for bytes that are no IngestRequest. Repeated and superseded members read as
 * protobufjs reads them: batches since the last hello merge, a hello drops the batches before it.
 */
export function decodeIngestRequest(bytes: Uint8Array): ReceivedIngestRequest {
  let hellos: Uint8Array[] = [];
  let batches: Uint8Array[] = [];
  eachDelimited(bytes, (field, value) => {
    if (field === HELLO) {
      hellos.push(value);
      batches = [];
    } else if (field === BATCH) {
      batches.push(value);
      hellos = [];
    }
  });
  const hello = decodeMerged(hellos, (b) => icmpwatch.v1.AgentHello.decode(b));
  if (batches.length === 0) return { hello, batch: null };

  const events: ScannedEvent[] = [];
  const counters: Uint8Array[] = [];
  const dropped: Uint8Array[] = [];
  for (const batch of batches) {
    eachDelimited(batch, (field, value) => {
      if (field === EVENTS) {
        try {
          events.push(scanEvent(value));
        } catch (err) {
          throw new Error(`batch.events[${events.length}]: ${(err as Error).message}`);
        }
      } else if (field === COUNTERS) counters.push(value);
      else if (field === DROPPED) dropped.push(value);
    });
  }
  return {
    hello,
    batch: {
      events,
      counters: decodeMerged(counters, (b) => icmpwatch.v1.NodeCounters.decode(b)),
      dropped: decodeMerged(dropped, (b) => icmpwatch.v1.ExportDrop.decode(b)),
    },
  };
}
