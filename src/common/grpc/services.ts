// grpc-js service definitions for the protobufjs static messages (which come without stubs), written
// once for the collector's server and for the agent's and the CLI's clients.
import type { deserialize, MethodDefinition, serialize, ServerMethodDefinition } from '@grpc/grpc-js';
import type { Writer } from 'protobufjs/minimal.js';
import { delimitedFieldLength, writeDelimitedField } from '../protobuf-wire.js';
import { icmpwatch } from '../proto.js';
import { decodeIngestRequest, emptyIngestRequest, type ReceivedIngestRequest } from './ingest-request.js';

interface Codec<T> {
  encode(message: T): Writer;
  decode(bytes: Uint8Array): T;
  create(): T;
}

const UNDECODABLE = Symbol('undecodable');

/**
 * Request bytes that are no message of the method's type come to the handler as an empty message
 * marked with the reason, for it to refuse with INVALID_ARGUMENT: a deserializer that throws makes
 * grpc-js answer INTERNAL, whatever it throws.
 */
function decodeOrMark<T extends object>(codec: Pick<Codec<T>, 'decode' | 'create'>, bytes: Uint8Array): T {
  try {
    return codec.decode(bytes);
  } catch (err) {
    return Object.assign(codec.create(), { [UNDECODABLE]: (err as Error).message });
  }
}

/** Why the request's bytes did not decode, or null for a decoded request. */
export function undecodableReason(request: object): string | null {
  return UNDECODABLE in request ? String(request[UNDECODABLE]) : null;
}

/** Bytes as a Buffer over the same memory (Buffer.from(Uint8Array) would copy them). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function encodeToBuffer<T>(codec: Codec<T>, message: T): Buffer {
  return asBuffer(codec.encode(message).finish());
}

/** The SubscribeResponses of one SubscribeBatch, each already encoded, in order. */
export type EncodedBatch = readonly Uint8Array[];

const BATCH_RESPONSES = 1; // SubscribeBatch.responses

/** Bytes an encoded response takes inside a SubscribeBatch: field 1's tag, its length, itself. */
export function batchedSize(encoded: Uint8Array): number {
  return delimitedFieldLength(BATCH_RESPONSES, encoded.byteLength);
}

/**
 * A SubscribeBatch is its responses' bytes, each framed as field 1: built from responses encoded
 * once for every subscriber, nothing is encoded again. Subscribers that keep up are sent the same
 * records one after another (each an agent batch's), so a batch of the very responses framed last
 * is handed over as framed then.
 */
function frameBatch(batch: EncodedBatch): Buffer {
  if (sameResponses(batch, lastFramed)) return lastFramedBytes;
  const size = batch.reduce((n, encoded) => n + batchedSize(encoded), 0);
  if (size > frameScratch.length) frameScratch = Buffer.allocUnsafe(Math.max(size, 2 * frameScratch.length));
  let at = 0;
  for (const encoded of batch) at = writeDelimitedField(frameScratch, at, BATCH_RESPONSES, encoded);
  lastFramed = batch.slice();
  lastFramedBytes = frameScratch.subarray(0, size);
  return lastFramedBytes;
}

function sameResponses(a: EncodedBatch, b: EncodedBatch): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Where batches are framed, reused: grpc-js copies what a serializer returns into the message it
 * sends before it serializes anything else (serializeMessage), so a batch needs no memory of its
 * own. A fresh buffer per message and stream was a tenth of the collector's fan-out in GC.
 */
let frameScratch = Buffer.allocUnsafe(64 * 1024);
/** The responses framed last (the same objects: an encoded response is never changed) and their bytes in frameScratch. */
let lastFramed: EncodedBatch = [];
let lastFramedBytes = frameScratch.subarray(0, 0);

function method<Req extends object, Res extends object>(
  path: string,
  stream: { request: boolean; response: boolean },
  request: Codec<Req>,
  response: Codec<Res>,
): MethodDefinition<Req, Res> {
  return {
    path,
    requestStream: stream.request,
    responseStream: stream.response,
    requestSerialize: (m) => encodeToBuffer(request, m),
    requestDeserialize: (b) => decodeOrMark(request, b),
    responseSerialize: (m) => encodeToBuffer(response, m),
    responseDeserialize: (b) => response.decode(b),
  };
}

const v1 = icmpwatch.v1;

export const ingestService = {
  /** The server reads each request with its events' bytes (ReceivedIngestRequest); clients write IngestRequest messages. */
  stream: {
    ...method<icmpwatch.v1.IIngestRequest, icmpwatch.v1.IIngestResponse>(
      '/icmpwatch.v1.Ingest/Stream',
      { request: true, response: true },
      v1.IngestRequest,
      v1.IngestResponse,
    ),
    requestDeserialize: (bytes: Buffer) => decodeOrMark({ decode: decodeIngestRequest, create: emptyIngestRequest }, bytes),
  } satisfies ServerMethodDefinition<ReceivedIngestRequest, icmpwatch.v1.IIngestResponse> & {
    requestSerialize: serialize<icmpwatch.v1.IIngestRequest>;
    responseDeserialize: deserialize<icmpwatch.v1.IIngestResponse>;
  },
};

export const observerService = {
  /**
   * The server writes responses already encoded (each once, for every stream it goes to); the
   * client reads SubscribeResponse messages.
   */
  subscribe: {
    ...method<icmpwatch.v1.ISubscribeRequest, icmpwatch.v1.ISubscribeResponse>(
      '/icmpwatch.v1.Observer/Subscribe',
      { request: false, response: true },
      v1.SubscribeRequest,
      v1.SubscribeResponse,
    ),
    responseSerialize: asBuffer,
  } satisfies ServerMethodDefinition<icmpwatch.v1.ISubscribeRequest, Uint8Array> & {
    requestSerialize: serialize<icmpwatch.v1.ISubscribeRequest>;
    responseDeserialize: deserialize<icmpwatch.v1.ISubscribeResponse>;
  },
  /** The server writes encoded responses (EncodedBatch); the client reads SubscribeBatch messages. */
  subscribeBatches: {
    ...method<icmpwatch.v1.ISubscribeRequest, icmpwatch.v1.SubscribeBatch>(
      '/icmpwatch.v1.Observer/SubscribeBatches',
      { request: false, response: true },
      v1.SubscribeRequest,
      v1.SubscribeBatch,
    ),
    responseSerialize: frameBatch,
  } satisfies ServerMethodDefinition<icmpwatch.v1.ISubscribeRequest, EncodedBatch> & {
    requestSerialize: serialize<icmpwatch.v1.ISubscribeRequest>;
    responseDeserialize: deserialize<icmpwatch.v1.SubscribeBatch>;
  },
  getStatus: method<icmpwatch.v1.IGetStatusRequest, icmpwatch.v1.IGetStatusResponse>(
    '/icmpwatch.v1.Observer/GetStatus',
    { request: false, response: false },
    v1.GetStatusRequest,
    v1.GetStatusResponse,
  ),
  listNodes: method<icmpwatch.v1.IListNodesRequest, icmpwatch.v1.IListNodesResponse>(
    '/icmpwatch.v1.Observer/ListNodes',
    { request: false, response: false },
    v1.ListNodesRequest,
    v1.ListNodesResponse,
  ),
};
