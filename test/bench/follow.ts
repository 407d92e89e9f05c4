// The benches' follow subscribers: SubscribeBatches, as `icmpwatch observe` uses it, or with
// RPC=Subscribe the stream of one record a message (grpcurl's, Hubble-style clients').
//
// They read of each record only what the benches count: an event's time and addresses, a loss
// notice's count (protobuf's wire format walked, nothing else decoded). Ten subscribers in one
// process decoding every event in full (protobufjs, 2-4 us each) would need more CPU than the
// whole pipeline they measure on these 2-core machines; a subscriber's own decoding is its own
// cost, not the collector's.
import type { ClientReadableStream } from '@grpc/grpc-js';
import $protobuf from 'protobufjs/minimal.js';
import type { ObserverClient } from '../../src/common/grpc/clients.js';
import { observerService } from '../../src/common/grpc/services.js';
import type { google, icmpwatch } from '../../src/common/proto.js';

const RPCS = ['SubscribeBatches', 'Subscribe'] as const;
export const RPC = (process.env.RPC ?? 'SubscribeBatches') as (typeof RPCS)[number];
if (!RPCS.includes(RPC)) throw new Error(`RPC: expected one of ${RPCS.join(', ')}, got '${RPC}'`);

const LENGTH_DELIMITED = 2;

/** Calls `onField(field, end)` for each length-delimited field of the message in `reader` up to `end`; fields it leaves unread are skipped. */
function fields(reader: $protobuf.Reader, end: number, onField: (field: number, end: number) => void): void {
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if ((tag & 7) === LENGTH_DELIMITED) {
      const length = reader.uint32();
      const fieldEnd = reader.pos + length;
      onField(field, fieldEnd);
      reader.pos = fieldEnd;
    } else {
      reader.skipType(tag & 7);
    }
  }
}

function timestamp(reader: $protobuf.Reader, end: number): google.protobuf.ITimestamp {
  const out = { seconds: 0, nanos: 0 };
  while (reader.pos < end) {
    const tag = reader.uint32();
    if (tag === 8) out.seconds = Number(reader.uint64());
    else if (tag === 16) out.nanos = reader.int32();
    else reader.skipType(tag & 7);
  }
  return out;
}

function endpointIp(reader: $protobuf.Reader, end: number): icmpwatch.v1.IEndpoint {
  let ip = '';
  fields(reader, end, (field, fieldEnd) => {
    if (field === 1) ip = $protobuf.util.utf8.read(reader.buf, reader.pos, fieldEnd);
  });
  return { ip };
}

/** A SubscribeResponse's event time and addresses, or its loss count; other records as empty. */
function response(reader: $protobuf.Reader, end: number): icmpwatch.v1.ISubscribeResponse {
  const out: icmpwatch.v1.ISubscribeResponse = {};
  fields(reader, end, (field, fieldEnd) => {
    if (field === 3) {
      const event: icmpwatch.v1.IEvent = {};
      fields(reader, fieldEnd, (f, e) => {
        if (f === 1) event.time = timestamp(reader, e);
        else if (f === 4) event.source = endpointIp(reader, e);
        else if (f === 5) event.destination = endpointIp(reader, e);
      });
      out.event = event;
    } else if (field === 4) {
      let count = 0;
      while (reader.pos < fieldEnd) {
        const tag = reader.uint32();
        if (tag === 16) count = Number(reader.uint64());
        else reader.skipType(tag & 7);
      }
      out.lostEvents = { count };
    }
  });
  return out;
}

/** A follow stream handing each record to `onResponse`, whichever RPC carries it. */
export function follow(client: ObserverClient, onResponse: (r: icmpwatch.v1.ISubscribeResponse) => void): ClientReadableStream<Buffer> {
  const request = { follow: true };
  const method = RPC === 'Subscribe' ? observerService.subscribe : observerService.subscribeBatches;
  const stream = client.makeServerStreamRequest(method.path, method.requestSerialize, (bytes: Buffer) => bytes, request);
  return stream.on('data', (bytes: Buffer) => {
    const reader = $protobuf.Reader.create(bytes);
    if (RPC === 'Subscribe') return onResponse(response(reader, bytes.length));
    fields(reader, bytes.length, (field, end) => {
      if (field === 1) onResponse(response(reader, end));
    });
  });
}
