// Limits on subscribers against a real collector over loopback: concurrent Subscribe streams in total
// and per client address, Observer calls per second per client address, filter sizes, and request
// bytes that decode to nothing. Two client addresses: 127.0.0.1 and ::1 (the collector listens on
// both through [::]).
import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import type { Collector } from '../../src/collector/collector.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { SUBSCRIBE_LIMITS } from '../../src/common/grpc/subscribe-request.js';
import { icmpwatch } from '../../src/common/proto.js';
import { eventually, startCollector } from './harness.js';

const { status } = grpc;

interface Outcome {
  code: grpc.status;
  details: string;
}

/** How a Subscribe stream ended, or OK once it delivered its first response (a follow that stays open). */
function firstOutcome(stream: grpc.ClientReadableStream<icmpwatch.v1.ISubscribeResponse>): Promise<Outcome> {
  return new Promise((resolve) => {
    stream.on('data', () => resolve({ code: status.OK, details: '' }));
    stream.on('error', () => {});
    stream.on('status', (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details }));
  });
}

async function refusedCount(collector: Collector, reason: string): Promise<number> {
  const { values } = await collector.metrics.requestsRefused.get();
  return values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

describe('collector: limits on subscribers', () => {
  let collector: Collector;
  let v4: ObserverClient;
  let v6: ObserverClient;
  const streams: grpc.ClientReadableStream<icmpwatch.v1.ISubscribeResponse>[] = [];

  async function start(limits: { maxSubscribers: number; maxSubscribersPerPeer: number; requestsPerSecond: number }): Promise<void> {
    collector = await startCollector({ listen: '[::]:0', limits });
    const port = collector.address.slice(collector.address.lastIndexOf(':') + 1);
    v4 = new ObserverClient(`127.0.0.1:${port}`);
    v6 = new ObserverClient(`[::1]:${port}`);
  }

  /** A follow of nothing: admitted, it stays open without a response; refused, it ends. */
  const follow = (client: ObserverClient) => {
    const s = client.subscribe({ follow: true, allow: [{ node: ['none'] }] });
    streams.push(s);
    return firstOutcome(s);
  };

  afterEach(async () => {
    for (const s of streams.splice(0)) s.cancel();
    v4?.close();
    v6?.close();
    await collector?.stop(1000);
  });

  it('refuses Subscribe streams beyond the per-address and the total limit with RESOURCE_EXHAUSTED, and admits again when one ends', async () => {
    await start({ maxSubscribers: 6, maxSubscribersPerPeer: 4, requestsPerSecond: 1000 });
    const subscribers = async () => Number((await v6.getStatus()).subscribers);
    // Follows send nothing until an event matches: admitted ones stay open, refused ones end.
    for (let i = 0; i < 4; i++) void follow(v4);
    await eventually(async () => (await subscribers()) === 4);
    const fifth = await follow(v4);
    expect(fifth.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(fifth.details).to.equal('too many subscribers from 127.0.0.1: at most 4 Subscribe streams per client address (--max-subscribers-per-peer)');
    // Another address still gets in, up to the total.
    void follow(v6);
    void follow(v6);
    await eventually(async () => (await subscribers()) === 6);
    const seventh = await follow(v6);
    expect(seventh.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(seventh.details).to.equal('too many subscribers: at most 6 Subscribe streams (--max-subscribers)');
    expect(await refusedCount(collector, 'subscribers_per_peer')).to.equal(1);
    expect(await refusedCount(collector, 'subscribers')).to.equal(1);

    // A stream that ends gives its place back (to its address and to the total).
    streams[0]!.cancel();
    await eventually(async () => (await subscribers()) === 5);
    const again = v4.subscribe({ last: 1 });
    streams.push(again);
    expect((await new Promise<grpc.StatusObject>((resolve) => again.on('status', resolve).on('error', () => {}))).code).to.equal(status.OK);
  });

  it('refuses Observer calls beyond the rate of one address with RESOURCE_EXHAUSTED; other addresses are not slowed', async () => {
    await start({ maxSubscribers: 100, maxSubscribersPerPeer: 100, requestsPerSecond: 1 });
    const calls = await Promise.allSettled(Array.from({ length: 30 }, () => v4.listNodes()));
    const refused = calls.filter((c): c is PromiseRejectedResult => c.status === 'rejected').map((c) => c.reason as grpc.ServiceError);
    // The burst is one second's worth: 1, plus what refilled while the calls went out.
    expect(calls.length - refused.length).to.be.within(1, 2);
    for (const err of refused) {
      expect(err.code).to.equal(status.RESOURCE_EXHAUSTED);
      expect(err.details).to.equal('rate limit: at most 1 Observer calls per second from one client address (--max-requests-per-second)');
    }
    // Subscribe counts too.
    const sub = await follow(v4);
    expect(sub.code).to.equal(status.RESOURCE_EXHAUSTED);
    expect(await refusedCount(collector, 'rate')).to.equal(refused.length + 1);
    // ::1 has its own bucket.
    await v6.getStatus();
    // And 127.0.0.1 gets calls again as its bucket refills.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await v4.getStatus();
  });

  it('refuses oversized filters with INVALID_ARGUMENT naming the field and the limit, a huge list without parsing it', async () => {
    await start({ maxSubscribers: 100, maxSubscribersPerPeer: 100, requestsPerSecond: 1000 });
    const refusal = async (request: icmpwatch.v1.ISubscribeRequest) => {
      const o = await firstOutcome(v4.subscribe(request));
      expect(o.code, o.details).to.equal(status.INVALID_ARGUMENT);
      return o.details;
    };
    const { filters, values, valueLength } = SUBSCRIBE_LIMITS;
    expect(await refusal({ allow: Array.from({ length: filters + 1 }, () => ({ node: ['a'] })) })).to.equal(`allow: more than the limit of ${filters} filters`);
    expect(await refusal({ deny: Array.from({ length: filters + 1 }, () => ({})) })).to.equal(`deny: more than the limit of ${filters} filters`);
    expect(await refusal({ allow: [{}, { ip: Array.from({ length: values + 1 }, () => '10.0.0.0/8') }] })).to.equal(
      `allow[1].ip: more than the limit of ${values} values`,
    );
    expect(await refusal({ allow: [{ pod: [`demo/${'p'.repeat(valueLength)}`] }] })).to.equal(`allow[0].pod[0]: longer than the limit of ${valueLength} characters`);
    expect(await refusal({ deny: [{ icmpCode: Array.from({ length: values + 1 }, () => 0) }] })).to.equal(`deny[0].icmp_code: more than the limit of ${values} values`);
    // The most a message can hold (about 4 MiB of one-character names): refused at once, by its length.
    const started = Date.now();
    expect(await refusal({ allow: [{ node: Array.from({ length: 1_300_000 }, () => 'n') }] })).to.equal(`allow[0].node: more than the limit of ${values} values`);
    expect(Date.now() - started).to.be.below(3000);
    // Exactly at the limits is fine.
    const atLimits = v4.subscribe({
      last: 1,
      allow: Array.from({ length: filters }, (_, i) => ({ node: Array.from({ length: values }, () => (i === 0 ? 'n'.repeat(valueLength) : 'n')) })),
    });
    const ended = await new Promise<grpc.StatusObject>((resolve) => atLimits.on('status', resolve).on('error', () => {}).on('data', () => {}));
    expect(ended.code, ended.details).to.equal(status.OK);
    expect(await refusedCount(collector, 'invalid_argument')).to.equal(6);
  });

  it('answers request bytes that are no message of the method with INVALID_ARGUMENT, not INTERNAL', async () => {
    await start({ maxSubscribers: 100, maxSubscribersPerPeer: 100, requestsPerSecond: 1000 });
    const identity = (b: Buffer) => b;
    // A field header promising more bytes than follow, and a wire type that does not exist.
    for (const bytes of [Buffer.from([0x0a, 0x7f, 0x01]), Buffer.from([0x0f])]) {
      for (const method of ['/icmpwatch.v1.Observer/GetStatus', '/icmpwatch.v1.Observer/ListNodes']) {
        const err = await new Promise<grpc.ServiceError | null>((resolve) => v4.makeUnaryRequest(method, identity, identity, bytes, (e) => resolve(e)));
        expect(err?.code, method).to.equal(status.INVALID_ARGUMENT);
        expect(err?.details).to.match(/^request: not a valid protobuf message of this method's type \(.+\)$/);
      }
      const stream = v4.makeServerStreamRequest('/icmpwatch.v1.Observer/Subscribe', identity, identity, bytes);
      const o = await new Promise<grpc.StatusObject>((resolve) => stream.on('status', resolve).on('error', () => {}));
      expect(o.code).to.equal(status.INVALID_ARGUMENT);
      expect(o.details).to.match(/^request: not a valid protobuf message/);
      const ingest = v4.makeBidiStreamRequest('/icmpwatch.v1.Ingest/Stream', identity, identity);
      const done = new Promise<grpc.StatusObject>((resolve) => ingest.on('status', resolve).on('error', () => {}));
      ingest.write(bytes);
      ingest.end();
      const i = await done;
      expect(i.code).to.equal(status.INVALID_ARGUMENT);
      expect(i.details).to.match(/^request: not a valid protobuf IngestRequest \(.+\)$/);
    }
    expect(await refusedCount(collector, 'undecodable')).to.equal(6);
  });
});
