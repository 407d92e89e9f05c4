// An IngestRequest as the collector receives it: decoded (its events are what filters, node
// bookkeeping and access checks read), and with each batch event's bytes as the agent sent them,
// which the collector stores and forwards as they are instead of encoding the event again.
import { delimitedFields } from '../protobuf-wire.js';
import { icmpwatch } from '../proto.js';

const HELLO = 1; // IngestRequest.hello, of oneof message
const BATCH = 2; // IngestRequest.batch, of oneof message
const EVENTS = 1; // EventBatch.events

export interface ReceivedIngestRequest {
  hello: icmpwatch.v1.IAgentHello | null;
  batch: icmpwatch.v1.IEventBatch | null;
  /** The bytes `batch.events[i]` was decoded from: views of the request's bytes. */
  eventBytes: Uint8Array[];
}

export function emptyIngestRequest(): ReceivedIngestRequest {
  return { hello: null, batch: null, eventBytes: [] };
}

/**
 * Throws what protobufjs throws for bytes that are no IngestRequest. The events' bytes are found
 * the way protobufjs reads them: every `batch` (they merge) since the last `hello`, every event of each.
 */
export function decodeIngestRequest(bytes: Uint8Array): ReceivedIngestRequest {
  const request = icmpwatch.v1.IngestRequest.decode(bytes);
  const batch = request.batch ?? null;
  const eventBytes = batch ? delimitedFields(bytes, BATCH, [HELLO]).flatMap((b) => delimitedFields(b, EVENTS)) : [];
  const events = batch?.events?.length ?? 0;
  if (eventBytes.length !== events) throw new Error(`batch.events: ${events} decoded, ${eventBytes.length} found in the bytes`);
  return { hello: request.hello ?? null, batch, eventBytes };
}
