// The benches' follow subscribers: SubscribeBatches, as `icmpwatch observe` uses it, or with
// RPC=Subscribe the stream of one record a message (grpcurl's, Hubble-style clients').
import type { ClientReadableStream } from '@grpc/grpc-js';
import type { ObserverClient } from '../../src/common/grpc/clients.js';
import type { icmpwatch } from '../../src/common/proto.js';

const RPCS = ['SubscribeBatches', 'Subscribe'] as const;
export const RPC = (process.env.RPC ?? 'SubscribeBatches') as (typeof RPCS)[number];
if (!RPCS.includes(RPC)) throw new Error(`RPC: expected one of ${RPCS.join(', ')}, got '${RPC}'`);

/** A follow stream handing each record to `onResponse`, whichever RPC carries it. */
export function follow(client: ObserverClient, onResponse: (r: icmpwatch.v1.ISubscribeResponse) => void): ClientReadableStream<object> {
  if (RPC === 'Subscribe') return client.subscribe({ follow: true }).on('data', onResponse);
  return client.subscribeBatches({ follow: true }).on('data', (batch: icmpwatch.v1.SubscribeBatch) => batch.responses.forEach(onResponse));
}
