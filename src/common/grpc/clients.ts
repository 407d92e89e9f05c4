// Typed clients over the shared service definitions.
import * as grpc from '@grpc/grpc-js';
import type { icmpwatch } from '../proto.js';
import { ingestService, observerService } from './services.js';

/** Keepalive pings find a dead peer on a long-lived stream (a half-open TCP connection). */
export const keepaliveOptions: grpc.ChannelOptions = {
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
};

export class IngestClient extends grpc.Client {
  /** `reconnect` bounds grpc-js's own connection backoff (default 1 s to 120 s) to the caller's. */
  constructor(address: string, reconnect: { minMs: number; maxMs: number } = { minMs: 1000, maxMs: 120_000 }) {
    super(address, grpc.credentials.createInsecure(), {
      ...keepaliveOptions,
      'grpc.initial_reconnect_backoff_ms': reconnect.minMs,
      'grpc.max_reconnect_backoff_ms': reconnect.maxMs,
    });
  }

  stream(): grpc.ClientDuplexStream<icmpwatch.v1.IIngestRequest, icmpwatch.v1.IIngestResponse> {
    const m = ingestService.stream;
    return this.makeBidiStreamRequest(m.path, m.requestSerialize, m.responseDeserialize);
  }
}

function unary<Req, Res>(
  client: grpc.Client,
  m: grpc.MethodDefinition<Req, Res>,
  request: Req,
  options: grpc.CallOptions,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, request, options, (err, res) =>
      err || res === undefined ? reject(err ?? new Error('empty response')) : resolve(res),
    );
  });
}

export class ObserverClient extends grpc.Client {
  constructor(address: string, options: grpc.ChannelOptions = {}) {
    super(address, grpc.credentials.createInsecure(), { ...keepaliveOptions, ...options });
  }

  subscribe(request: icmpwatch.v1.ISubscribeRequest, options: grpc.CallOptions = {}): grpc.ClientReadableStream<icmpwatch.v1.ISubscribeResponse> {
    const m = observerService.subscribe;
    return this.makeServerStreamRequest(m.path, m.requestSerialize, m.responseDeserialize, request, options);
  }

  getStatus(options: grpc.CallOptions = {}): Promise<icmpwatch.v1.IGetStatusResponse> {
    return unary(this, observerService.getStatus, {}, options);
  }

  listNodes(options: grpc.CallOptions = {}): Promise<icmpwatch.v1.IListNodesResponse> {
    return unary(this, observerService.listNodes, {}, options);
  }
}
