// How `observe` prints what is not an event: lost-events and node-status notices, each line marked
// (LOST, NODE) in text and keyed (lostEvents, nodeStatus: proto3 JSON names) in JSON so they never pass for events.
import { enumLabel as label, formatTimestamp, hookLabel } from './event-format.js';
import { icmpwatch } from './proto.js';

const v1 = icmpwatch.v1;

type Response = icmpwatch.v1.ISubscribeResponse;

export function lostEventsToText(r: Response): string {
  const l = r.lostEvents ?? {};
  const where = label(v1.LostEventsSource, 'LOST_EVENTS_SOURCE_', l.source);
  const count = Number(l.count ?? 0) || 'an unknown number of'; // 0: not known (history-expired)
  return `LOST ${formatTimestamp(r.time, true)} ${r.nodeName || '*'} ${count} events lost in ${where} between ${formatTimestamp(l.first, true)} and ${formatTimestamp(l.last, true)}`;
}

export function nodeStatusToText(r: Response): string {
  const n = r.nodeStatus ?? {};
  const hook = n.hook ? ` hook=${hookLabel(n.hook)}${n.symbol ? `(${n.symbol})` : ''}` : '';
  return `NODE ${formatTimestamp(r.time, true)} ${r.nodeName} ${label(v1.NodeState, 'NODE_STATE_', n.state)}${hook}`;
}

export function noticeToJson(r: Response): Record<string, unknown> {
  const base = { time: formatTimestamp(r.time), node: r.nodeName ?? '' };
  if (r.lostEvents) {
    const l = r.lostEvents;
    return {
      ...base,
      lostEvents: {
        source: label(v1.LostEventsSource, 'LOST_EVENTS_SOURCE_', l.source),
        count: Number(l.count ?? 0),
        first: formatTimestamp(l.first),
        last: formatTimestamp(l.last),
      },
    };
  }
  const n = r.nodeStatus ?? {};
  return {
    ...base,
    nodeStatus: { state: label(v1.NodeState, 'NODE_STATE_', n.state), hook: hookLabel(n.hook), symbol: n.symbol ?? '' },
  };
}
