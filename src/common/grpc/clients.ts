// Typed clients over the shared service definitions.
import * as grpc from '@grpc/grpc-js';
import type { icmpwatch } from '../proto.js';
import { ingestService, observerService } from './services.js';
import { plaintextTransport, transportOptions, type ClientTransport } from './tls.js';

/** Keepalive pings find a dead peer on a long-lived stream (a half-open TCP connection). */
export const keepaliveOptions: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
};

export class IngestClient extends grpc.Client {
  /** `reconnect` bounds grpc-js's own connection backoff (default 1 s to 120 s) to the caller's. */
  constructor(
    address: string,
    reconnect: { minMs: number; maxMs: number } = { minMs: 1000, maxMs: 120_000 },
    transport: ClientTransport = plaintextTransport(),
  ) {
    super(address, transport.credentials, {
      ...keepaliveOptions,
      ...transportOptions(transport),
      'grpc.initial_reconnect_backoff_ms': reconnect.minMs,
      'grpc.max_reconnect_backoff_ms': reconnect.maxMs,
    });
  }

  /** Requests are messages, or their bytes already encoded (the agent's batches: each event is encoded once). */
  stream(): grpc.ClientDuplexStream<icmpwatch.v1.IIngestRequest | Uint8Array, icmpwatch.v1.IIngestResponse> {
    const m = ingestService.stream;
    const serialize = (request: icmpwatch.v1.IIngestRequest | Uint8Array) =>
      request instanceof Uint8Array ? Buffer.from(request.buffer, request.byteOffset, request.byteLength) : m.requestSerialize(request);
    return this.makeBidiStreamRequest(m.path, serialize, m.responseDeserialize);
  }
}

function unary<Req, Res>(
  client: grpc.Client,
  m: grpc.MethodDefinition<Req, Res>,
  request: Req,
  options: grpc.CallOptions,
  metadata: grpc.Metadata,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, request, metadata, options, (err, res) =>
      err || res === undefined ? reject(err ?? new Error('empty response')) : resolve(res),
    );
  });
}

/**
 * The HTTP/2 receive window a subscriber opens (default 64 KiB): a stream may carry only that much
 * unacknowledged, so a subscriber a few milliseconds late in answering WINDOW_UPDATEs held the
 * collector back to some 20k events/s per stream. With 4 MiB, 10 subscribers took 50k events/s
 * each losslessly where they lost 3-6% (test/bench/fanout.ts, A/B).
 */
const SUBSCRIBER_WINDOW_BYTES = 4 << 20;

export class ObserverClient extends grpc.Client {
  constructor(address: string, options: grpc.ChannelOptions = {}, transport: ClientTransport = plaintextTransport()) {
    super(address, transport.credentials, {
      ...keepaliveOptions,
      'grpc-node.flow_control_window': SUBSCRIBER_WINDOW_BYTES,
      ...transportOptions(transport),
      ...options,
    });
  }

  /** `metadata` carries the subscriber's `authorization: Bearer <token>` (see bearerMetadata). */
  subscribe(
    request: icmpwatch.v1.ISubscribeRequest,
    options: grpc.CallOptions = {},
    metadata: grpc.Metadata = new grpc.Metadata(),
  ): grpc.ClientReadableStream<icmpwatch.v1.ISubscribeResponse> {
    const m = observerService.subscribe;
    return this.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, request, metadata, options);
  }

  /** Subscribe's records, several to a message (SubscribeBatches). */
  subscribeBatches(
    request: icmpwatch.v1.ISubscribeRequest,
    options: grpc.CallOptions = {},
    metadata: grpc.Metadata = new grpc.Metadata(),
  ): grpc.ClientReadableStream<icmpwatch.v1.SubscribeBatch> {
    const m = observerService.subscribeBatches;
    return this.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, request, metadata, options);
  }

  getStatus(options: grpc.CallOptions = {}, metadata: grpc.Metadata = new grpc.Metadata()): Promise<icmpwatch.v1.IGetStatusResponse> {
    return unary(this, observerService.getStatus, {}, options, metadata);
  }

  listNodes(options: grpc.CallOptions = {}, metadata: grpc.Metadata = new grpc.Metadata()): Promise<icmpwatch.v1.IListNodesResponse> {
    return unary(this, observerService.listNodes, {}, options, metadata);
  }
}
