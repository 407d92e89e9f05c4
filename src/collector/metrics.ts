import { Counter, Gauge, Registry } from 'prom-client';

/** The collector's Prometheus metrics, in its own registry. */
export function createCollectorMetrics() {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    eventsReceived: new Counter({
      name: 'icmpwatch_collector_events_received_total',
      help: 'Events received from agents, duplicates included.',
      registers,
    }),
    eventsStored: new Counter({
      name: 'icmpwatch_collector_events_stored_total',
      help: 'Events stored (and acknowledged) once each.',
      registers,
    }),
    duplicates: new Counter({
      name: 'icmpwatch_collector_events_duplicate_total',
      help: 'Resent events recognised by node, agent instance and sequence, and not stored again.',
      registers,
    }),
    lostEvents: new Counter({
      name: 'icmpwatch_collector_lost_events_total',
      help: 'Events announced lost to subscribers, by where they were lost.',
      labelNames: ['source'] as const,
      registers,
    }),
    ingestRefused: new Counter({
      name: 'icmpwatch_collector_ingest_refused_total',
      help: 'Ingest streams refused for their client certificate, by reason: no_certificate (none, or not from the agent CA), not_agent (not CN=icmpwatch-agent).',
      labelNames: ['reason'] as const,
      registers,
    }),
    subscribers: new Gauge({ name: 'icmpwatch_collector_subscribers', help: 'Open Subscribe streams.', registers }),
    subscriberDrops: new Counter({
      name: 'icmpwatch_collector_subscriber_dropped_total',
      help: 'Events dropped from the queues of subscribers that read too slowly.',
      registers,
    }),
    nodes: new Gauge({
      name: 'icmpwatch_collector_nodes',
      help: 'Nodes known to the collector, by state.',
      labelNames: ['state'] as const,
      registers,
    }),
    historyEvents: new Gauge({ name: 'icmpwatch_collector_history_records', help: 'Records held in the history.', registers }),
    historyBytes: new Gauge({ name: 'icmpwatch_collector_history_bytes', help: 'Encoded size of the records held in the history.', registers }),
    requestsRefused: new Counter({
      name: 'icmpwatch_collector_observer_refused_total',
      help: 'Observer calls refused, by reason: rate, subscribers, subscribers_per_peer (limits), invalid_argument, undecodable, unauthenticated, permission_denied, access_check_failed.',
      labelNames: ['reason'] as const,
      registers,
    }),
    nodesForgotten: new Counter({
      name: 'icmpwatch_collector_nodes_forgotten_total',
      help: 'Unavailable nodes the collector stopped listing, by reason: idle (gone for long), limit (too many known).',
      labelNames: ['reason'] as const,
      registers,
    }),
    journalDamaged: new Counter({
      name: 'icmpwatch_collector_journal_damaged_records_total',
      help: 'Corrupt or truncated journal tails dropped at start-up.',
      registers,
    }),
    journalErrors: new Counter({
      name: 'icmpwatch_collector_journal_write_errors_total',
      help: 'Failed journal writes (the batch was not acknowledged).',
      registers,
    }),
  };
}

export type CollectorMetrics = ReturnType<typeof createCollectorMetrics>;
