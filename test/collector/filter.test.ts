import { expect } from 'chai';
import type { Collector } from '../../src/collector/collector.js';
import { compileFilters } from '../../src/collector/filter.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { parseSubscribeRequest } from '../../src/common/grpc/subscribe-request.js';
import { icmpwatch } from '../../src/common/proto.js';
import { CollectingSubscriber, echoEvent, eventually, startCollector, startExporter } from './harness.js';

const { Family, ObservationPoint } = icmpwatch.v1;

/** A small cluster's worth of traffic, named so assertions read as sentences. */
const traffic: Record<string, icmpwatch.v1.IEvent> = {
  ping: echoEvent(1),
  pong: echoEvent(2, {
    node: 'node-b',
    icmp: { type: 0, code: 0, id: 1234, seq: 1 },
    source: { ip: '10.2.0.2', namespace: 'demo', pod: 'pod-b' },
    destination: { ip: '10.1.0.2', namespace: 'demo', pod: 'pod-a' },
  }),
  portUnreachable: echoEvent(3, {
    icmp: { type: 3, code: 3 },
    source: { ip: '10.3.0.9', namespace: 'kube-system', pod: 'coredns-abc' },
    destination: { ip: '192.168.1.5' },
    observation: { point: ObservationPoint.OBSERVATION_POINT_HOST },
  }),
  fragNeeded: echoEvent(4, { icmp: { type: 3, code: 4, mtu: 1400 }, source: { ip: '172.16.0.1' }, destination: { ip: '10.1.0.2', namespace: 'demo', pod: 'pod-a' } }),
  ping6: echoEvent(5, {
    family: Family.FAMILY_IPV6,
    icmp: { type: 128, code: 0, id: 7, seq: 1 },
    source: { ip: 'fd00:10:1::2', namespace: 'demo', pod: 'pod-a' },
    destination: { ip: 'fd00:10:2::2', namespace: 'other', pod: 'web-7d9f' },
  }),
  portUnreachable6: echoEvent(6, { family: Family.FAMILY_IPV6, icmp: { type: 1, code: 4 }, source: { ip: 'fd00:10:2::2' }, destination: { ip: 'fd00:10:1::2' } }),
  neighbor: echoEvent(7, { family: Family.FAMILY_IPV6, icmp: { type: 135, code: 0 }, source: { ip: 'fe80::1' }, destination: { ip: 'ff02::1:ff00:2' } }),
};

function select(request: icmpwatch.v1.ISubscribeRequest): string[] {
  const parsed = parseSubscribeRequest(request);
  if (!parsed.ok) throw new Error(JSON.stringify(parsed.issues));
  const filters = compileFilters(parsed.spec);
  return Object.entries(traffic).filter(([, ev]) => filters.event(ev)).map(([name]) => name);
}

describe('collector: filters', () => {
  it('passes everything without filters', () => {
    expect(select({})).to.deep.equal(Object.keys(traffic));
  });

  it('resolves ICMP type names per family, with codes, and numbers', () => {
    expect(select({ allow: [{ icmpType: ['echo-request'] }] })).to.deep.equal(['ping', 'ping6']);
    expect(select({ allow: [{ icmpType: ['port-unreachable'] }] })).to.deep.equal(['portUnreachable', 'portUnreachable6']);
    expect(select({ allow: [{ icmpType: ['destination-unreachable'] }] })).to.deep.equal(['portUnreachable', 'fragNeeded', 'portUnreachable6']);
    expect(select({ allow: [{ icmpType: ['frag-needed', 'neighbor-solicitation'] }] })).to.deep.equal(['fragNeeded', 'neighbor']);
    expect(select({ allow: [{ icmpType: ['3/4'] }] })).to.deep.equal(['fragNeeded']);
    expect(select({ allow: [{ icmpType: ['3'], family: [Family.FAMILY_IPV4] }] })).to.deep.equal(['portUnreachable', 'fragNeeded']);
    expect(select({ allow: [{ icmpType: ['destination-unreachable'], icmpCode: [4] }] })).to.deep.equal(['fragNeeded', 'portUnreachable6']);
  });

  it('matches addresses and CIDRs at either end or one end, v4 and v6', () => {
    expect(select({ allow: [{ ip: ['10.1.0.2'] }] })).to.deep.equal(['ping', 'pong', 'fragNeeded']);
    expect(select({ allow: [{ sourceIp: ['10.0.0.0/8'] }] })).to.deep.equal(['ping', 'pong', 'portUnreachable']);
    expect(select({ allow: [{ destinationIp: ['192.168.0.0/16', 'fd00:10:1::/64'] }] })).to.deep.equal(['portUnreachable', 'portUnreachable6']);
    expect(select({ allow: [{ ip: ['fd00::/8'] }] })).to.deep.equal(['ping6', 'portUnreachable6']);
  });

  it('matches namespaces and pod prefixes at either end', () => {
    expect(select({ allow: [{ namespace: ['kube-system', 'other'] }] })).to.deep.equal(['portUnreachable', 'ping6']);
    expect(select({ allow: [{ pod: ['other/web-'] }] })).to.deep.equal(['ping6']);
    expect(select({ allow: [{ pod: ['core'] }] })).to.deep.equal(['portUnreachable']);
    expect(select({ allow: [{ destinationPod: ['demo/pod-a'] }] })).to.deep.equal(['pong', 'fragNeeded']);
    expect(select({ allow: [{ sourcePod: ['demo/pod-a'] }] })).to.deep.equal(['ping', 'ping6']);
  });

  it('ANDs fields in a filter, ORs filters, and subtracts deny from allow', () => {
    expect(select({ allow: [{ node: ['node-a'], family: [Family.FAMILY_IPV6] }] })).to.deep.equal(['ping6', 'portUnreachable6', 'neighbor']);
    expect(select({ allow: [{ node: ['node-b'] }, { icmpType: ['frag-needed'] }] })).to.deep.equal(['pong', 'fragNeeded']);
    expect(select({ allow: [{ namespace: ['demo'] }], deny: [{ family: [Family.FAMILY_IPV6] }, { node: ['node-b'] }] })).to.deep.equal(['ping', 'fragNeeded']);
    expect(select({ deny: [{ icmpType: ['neighbor-solicitation'] }] })).to.not.include('neighbor');
    expect(select({ allow: [{ observationPoint: [ObservationPoint.OBSERVATION_POINT_HOST] }] })).to.deep.equal(['portUnreachable']);
  });

  it('lets node notices through unless the node is filtered out', () => {
    const notices = (request: icmpwatch.v1.ISubscribeRequest) => {
      const parsed = parseSubscribeRequest(request);
      if (!parsed.ok) throw new Error('invalid');
      const f = compileFilters(parsed.spec);
      return ['node-a', 'node-b', ''].filter((n) => f.notice(n));
    };
    expect(notices({ allow: [{ icmpType: ['echo-request'] }] })).to.deep.equal(['node-a', 'node-b', '']);
    expect(notices({ allow: [{ node: ['node-a'] }] })).to.deep.equal(['node-a', '']);
    expect(notices({ deny: [{ node: ['node-a'] }] })).to.deep.equal(['node-b', '']);
  });

  describe('over gRPC', () => {
    let collector: Collector;
    afterEach(async () => collector?.stop(1000));

    it('applies the same filters to history and to live events', async () => {
      collector = await startCollector();
      const client = new ObserverClient(collector.address);
      const agent = startExporter(collector.address);
      const request = { allow: [{ icmpType: ['port-unreachable'] }, { ip: ['fd00:10:2::/64'] }], deny: [{ family: [Family.FAMILY_IPV4] }] };
      const live = new CollectingSubscriber(client, { ...request, follow: true });
      await eventually(async () => (await client.getStatus()).subscribers === 1);
      Object.values(traffic).forEach((ev) => agent.publish(ev));
      await eventually(() => agent.state().bufferedEvents === 0);
      const fromHistory = new CollectingSubscriber(client, request);
      expect(await fromHistory.done).to.equal(null);
      const expected = ['fd00:10:1::2', 'fd00:10:2::2']; // ping6 and portUnreachable6 by source
      expect(fromHistory.events.map((e) => e.source!.ip)).to.deep.equal(expected);
      await live.until((s) => s.events.length === 2);
      expect(live.events.map((e) => e.source!.ip)).to.deep.equal(expected);
      live.stream.cancel();
      await agent.close(100);
      client.close();
    });
  });
});
