// grpc-js service definitions for the protobufjs static messages (which come without stubs), written
// once for the collector's server and for the agent's and the CLI's clients.
import type { MethodDefinition } from '@grpc/grpc-js';
import type { Writer } from 'protobufjs/minimal.js';
import { icmpwatch } from '../proto.js';

interface Codec<T> {
  encode(message: T): Writer;
  decode(bytes: Uint8Array): T;
}

function method<Req, Res>(
  path: string,
  stream: { request: boolean; response: boolean },
  request: Codec<Req>,
  response: Codec<Res>,
): MethodDefinition<Req, Res> {
  return {
    path,
    requestStream: stream.request,
    responseStream: stream.response,
    requestSerialize: (m) => Buffer.from(request.encode(m).finish()),
    requestDeserialize: (b) => request.decode(b),
    responseSerialize: (m) => Buffer.from(response.encode(m).finish()),
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
