// grpc-js service definitions for the protobufjs static messages (which come without stubs), written
// once for the collector's server and for the agent's and the CLI's clients.
import type { MethodDefinition } from '@grpc/grpc-js';
import type { Writer } from 'protobufjs/minimal.js';
import { icmpwatch } from '../proto.js';

interface Codec<T> {
  encode(message: T): Writer;
  decode(bytes: Uint8Array): T;
}

/** The encoded bytes as a Buffer over the same memory (Buffer.from(Uint8Array) would copy them). */
function encodeToBuffer<T>(codec: Codec<T>, message: T): Buffer {
  const bytes = codec.encode(message).finish();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * A serializer that remembers the last message it encoded. The collector hands one response object
 * to every subscriber it goes to, one after the other: encoded once, not once per subscriber.
 */
function encodingOnceInTurn<T extends object>(codec: Codec<T>): (message: T) => Buffer {
  let last: T | null = null;
  let lastBytes: Buffer | null = null;
  return (message) => {
    if (message !== last || lastBytes === null) {
      lastBytes = encodeToBuffer(codec, message);
      last = message;
    }
    return lastBytes;
  };
}

function method<Req, Res extends object>(
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
    requestDeserialize: (b) => request.decode(b),
    responseSerialize: stream.response ? encodingOnceInTurn(response) : (m) => encodeToBuffer(response, m),
    responseDeserialize: (b) => response.decode(b),
  };
}

const v1 = icmpwatch.v1;

export const ingestService = {
  stream: method<icmpwatch.v1.IIngestRequest, icmpwatch.v1.IIngestResponse>(
    '/icmpwatch.v1.Ingest/Stream',
    { request: true, response: true },
    v1.IngestRequest,
    v1.IngestResponse,
  ),
};

export const observerService = {
  subscribe: method<icmpwatch.v1.ISubscribeRequest, icmpwatch.v1.ISubscribeResponse>(
    '/icmpwatch.v1.Observer/Subscribe',
    { request: false, response: true },
    v1.SubscribeRequest,
    v1.SubscribeResponse,
  ),
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
