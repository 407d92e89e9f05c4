import { expect } from 'chai';
import { lostEventsToText, noticeToJson, nodeStatusToText } from '../../src/common/notice-format.js';
import { icmpwatch } from '../../src/common/proto.js';

const v1 = icmpwatch.v1;
const time = { seconds: 1_800_000_000, nanos: 0 };

describe('notice format', () => {
  const lost: icmpwatch.v1.ISubscribeResponse = {
    time,
    nodeName: 'node-a',
    lostEvents: { source: v1.LostEventsSource.LOST_EVENTS_SOURCE_AGENT_EXPORT_BUFFER, count: 7, first: time, last: time },
  };
  const status: icmpwatch.v1.ISubscribeResponse = {
    time,
    nodeName: 'node-a',
    nodeStatus: { state: v1.NodeState.NODE_STATE_CONNECTED, hook: v1.Hook.HOOK_FEXIT, symbol: 'ip_rcv_core' },
  };

  it('keys notices by their proto3 JSON names, never like an event', () => {
    const l = noticeToJson(lost);
    expect(l).to.have.keys('time', 'node', 'lostEvents');
    expect(l.lostEvents).to.deep.include({ count: 7 });
    const s = noticeToJson(status);
    expect(s).to.have.keys('time', 'node', 'nodeStatus');
    expect(s.nodeStatus).to.deep.include({ symbol: 'ip_rcv_core' });
  });

  it('marks text lines LOST and NODE, with an unknown count said as such', () => {
    expect(lostEventsToText(lost)).to.match(/^LOST .* node-a 7 events lost in /);
    expect(lostEventsToText({ ...lost, lostEvents: { ...lost.lostEvents, count: 0 } })).to.contain('an unknown number of events');
    expect(nodeStatusToText(status)).to.match(/^NODE .* node-a .*hook=.*\(ip_rcv_core\)/);
  });
});
