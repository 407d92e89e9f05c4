// The store keeps events as bytes: an event is decoded only for filters (or access checks) that
// read it, once per publication whatever the number of followers, and the history does not hold
// the decoded objects (held for a million events, their garbage collection was most of the
// collector's CPU).
import { expect } from 'chai';
import { encodeEvent } from '../../src/agent/export/event-encoder.js';
import type { EncodedResponse } from '../../src/collector/encoded-response.js';
import { compileFilters } from '../../src/collector/filter.js';
import { Hub, type RecordSink } from '../../src/collector/hub.js';
import { Store } from '../../src/collector/store.js';
import { scanEvent } from '../../src/common/grpc/event-wire.js';
import { parseSubscribeRequest } from '../../src/common/grpc/subscribe-request.js';
import { icmpwatch } from '../../src/common/proto.js';
import { echoEvent, silentLog } from './harness.js';

const SubscribeResponse = icmpwatch.v1.SubscribeResponse;

function filters(request: icmpwatch.v1.ISubscribeRequest) {
  const parsed = parseSubscribeRequest(request);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  return compileFilters(parsed.spec);
}

class Collecting implements RecordSink {
  readonly records: EncodedResponse[] = [];
  offer(record: EncodedResponse): void {
    this.records.push(record);
  }
  end(): void {}
  onClose(): void {}
}

describe('collector: store', () => {
  const decode = SubscribeResponse.decode;
  let decodes = 0;
  beforeEach(() => {
    decodes = 0;
    SubscribeResponse.decode = (...args: Parameters<typeof decode>) => {
      decodes++;
      return decode.apply(SubscribeResponse, args);
    };
  });
  afterEach(() => {
    SubscribeResponse.decode = decode;
  });

  const eventRecord = (seq: number, pod: string) => ({
    record: { agentInstance: 'i', lastSequence: seq },
    event: scanEvent(encodeEvent(echoEvent(seq, { source: { ip: '10.1.0.2', namespace: 'demo', pod } }))),
  });

  it('decodes an event once per publication for all filtering followers, never for followers without filters, and keeps bytes', async () => {
    const hub = new Hub();
    const { store } = await Store.open({ dataDir: null, historyEvents: 100, historyAgeMs: 3_600_000, historyBytes: 1 << 20, log: silentLog }, hub, () => undefined);
    const everything = new Collecting();
    const podA = [new Collecting(), new Collecting(), new Collecting()];
    hub.follow(everything, filters({}), null);
    for (const sink of podA) hub.follow(sink, filters({ allow: [{ sourcePod: ['pod-a'] }] }), null);

    await store.add([eventRecord(1, 'pod-b')]);
    expect(decodes).to.equal(1);
    expect([everything.records.length, ...podA.map((s) => s.records.length)]).to.deep.equal([1, 0, 0, 0]);
    await store.add([eventRecord(2, 'pod-a')]);
    expect(decodes).to.equal(2);
    expect([everything.records.length, ...podA.map((s) => s.records.length)]).to.deep.equal([2, 1, 1, 1]);

    // The history holds the records without their decoded events: each read decodes again.
    const oldest = store.history.oldest!.record;
    expect(Number(oldest.response.event!.sequence)).to.equal(1);
    expect(Number(oldest.response.event!.sequence)).to.equal(1);
    expect(decodes).to.equal(4);

    // A filtered history query decodes each record it looks at, and keeps none of them.
    const f = filters({ allow: [{ sourcePod: ['pod-a'] }] });
    const query = () => store.history.query({ last: 0, since: null, until: null, matches: (r) => f.event(r.response.event!) });
    expect(query().map((e) => e.index)).to.deep.equal([2]);
    expect(decodes).to.equal(6);
    query();
    expect(decodes).to.equal(8);
  });
});
