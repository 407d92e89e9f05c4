import { z } from 'zod';
import { Collector } from '../collector/collector.js';
import { hostPort, parseFlags } from '../common/config.js';
import { duration } from '../common/duration.js';
import { createLogger } from '../common/log.js';

export const summary = `icmpwatch collector --listen HOST:PORT [flags]
  Receives the events of every node's agent and serves them to subscribers (gRPC).

  --listen HOST:PORT          gRPC address for agents and subscribers (required)
  --metrics-addr HOST:PORT    /metrics, /healthz, /readyz
  --data-dir DIR              keep the history in append-only files there (survives restarts)
  --history-events N          history bound by count (default 100000)
  --history-age DURATION      history bound by age (default 1h)
  --subscriber-queue N        records queued per slow subscriber before dropping (default 10000)`;

export const schema = z.object({
  listen: hostPort(),
  metricsAddr: hostPort().optional(),
  dataDir: z.string().min(1).optional(),
  historyEvents: z.coerce.number().int().positive().default(100_000),
  historyAge: duration().prefault('1h'),
  subscriberQueue: z.coerce.number().int().positive().default(10_000),
});

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(argv, schema);
  const log = createLogger('collector');
  const collector = await Collector.start({
    listen: flags.listen,
    metricsAddr: flags.metricsAddr ?? null,
    dataDir: flags.dataDir ?? null,
    historyEvents: flags.historyEvents,
    historyAgeMs: flags.historyAge,
    subscriberQueue: flags.subscriberQueue,
    log,
  });
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      log.info({ signal }, 'signal received');
      collector.stop().then(resolve, (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        resolve();
      });
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
  return 0;
}
