import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Operational logs: structured JSON on stderr, so that stdout carries only events and the two
 * stay distinguishable in `kubectl logs` (operational lines have `level` and `msg`).
 */
export function createLogger(component: string): Logger {
  return pino(
    {
      base: { component },
      level: process.env.ICMPWATCH_LOG_LEVEL ?? 'info',
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: 2, sync: true }),
  );
}
