import { z } from 'zod';
import { hostPort, parseFlags } from '../common/config.js';
import { enumLabel as label, formatTimestamp, hookLabel } from '../common/event-format.js';
import { ObserverClient } from '../common/grpc/clients.js';
import { icmpwatch } from '../common/proto.js';
import { bearerMetadata } from './bearer-token.js';
import { subscriberTlsFlags, subscriberTlsUsage, subscriberTransport } from './client-tls.js';
import { serverFailure } from './server-error.js';

const v1 = icmpwatch.v1;

export const summary = `icmpwatch status --server HOST:PORT [-o text|json]
  The collector's state: events seen and rate, history, subscribers, drops, and each node's agent.
  Needs get icmpevents.icmpwatch.io cluster-wide when the collector checks access.

  --token-file FILE      bearer token for the collector (default $ICMPWATCH_TOKEN); over TLS only:
                         a token with --insecure-plaintext is refused (exit 2)
${subscriberTlsUsage}
 exit status: 0 ok, 1 collector error, 2 bad flags, 3 token rejected or not allowed`;

const schema = z.object({
  server: hostPort(),
  ...subscriberTlsFlags,
  tokenFile: z.string().min(1).optional(),
  output: z.enum(['text', 'json']).default('text'),
});

function toText(s: icmpwatch.v1.IGetStatusResponse): string {
  const lines = [
    `events seen:       ${Number(s.eventsSeen ?? 0)} (${(s.eventsPerSecond ?? 0).toFixed(1)}/s over the last minute)`,
    `history:           ${Number(s.historyEvents ?? 0)} records${s.oldestEvent ? ` since ${formatTimestamp(s.oldestEvent, true)}` : ''}`,
    `subscribers:       ${s.subscribers ?? 0}`,
    `duplicates:        ${Number(s.duplicates ?? 0)} resent events skipped`,
    `lost:              ${Number(s.ringBufferLost ?? 0)} in ring buffers, ${Number(s.exportDrops ?? 0)} in agent buffers, ${Number(s.subscriberDrops ?? 0)} in subscriber queues`,
    `journal damage:    ${Number(s.journalDamagedRecords ?? 0)} damaged tails dropped at start-up`,
    `nodes:             ${(s.nodes ?? []).length}`,
  ];
  for (const n of s.nodes ?? []) {
    const c = n.counters ?? {};
    lines.push(
      `  ${n.name} ${label(v1.NodeState, 'NODE_STATE_', n.state)} hook=${hookLabel(n.hook)}${n.symbol ? `(${n.symbol})` : ''}` +
        ` lag=${(n.lagSeconds ?? 0).toFixed(1)}s events=${Number(n.eventsReceived ?? 0)} seq=${Number(n.lastSequence ?? 0)}` +
        ` lost=${Number(c.lost ?? 0)} malformed=${Number(c.malformed ?? 0)} suppressed=${Number(c.suppressed ?? 0)} export-dropped=${Number(c.exportDropped ?? 0)}`,
    );
  }
  return lines.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv.map((a) => (a === '-o' ? '--output' : a)), schema, ['insecurePlaintext']);
  const metadata = bearerMetadata(flags);
  const client = new ObserverClient(flags.server, {}, await subscriberTransport(flags));
  try {
    const status = await client.getStatus({ deadline: Date.now() + 10_000 }, metadata);
    const text = flags.output === 'json' ? JSON.stringify(v1.GetStatusResponse.toObject(v1.GetStatusResponse.fromObject(status), { enums: String })) : toText(status);
    process.stdout.write(text + '\n');
    return 0;
  } catch (err) {
    const failure = serverFailure(err);
    process.stderr.write(`icmpwatch status: ${failure.message}\n`);
    return failure.exitCode;
  } finally {
    client.close();
  }
}
