// Runs the real agent in-process on the real kernel and collects the events it reports.
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { Agent, type AgentConfig } from '../../src/agent/agent.js';
import { DEFAULT_OBJECT } from '../../src/agent/probe/probe.js';
import type { icmpwatch } from '../../src/common/proto.js';

export interface RunningAgent {
  agent: Agent;
  events: icmpwatch.v1.IEvent[];
  lines: string[];
  /**
   * Resolves with the matching events reported since `mark()` once `count` of them arrived
   * (or rejects after timeoutMs).
   */
  waitFor(match: (ev: icmpwatch.v1.IEvent) => boolean, count?: number, timeoutMs?: number): Promise<icmpwatch.v1.IEvent[]>;
  /** Later waitFor calls see only events reported from now on. */
  mark(): void;
  /** Events reported since the last mark(). */
  recent(): icmpwatch.v1.IEvent[];
  stop(): Promise<void>;
}

export async function startAgent(overrides: Partial<AgentConfig> = {}): Promise<RunningAgent> {
  const lines: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const agent = await Agent.start(
    {
      node: 'test-node',
      hook: 'auto',
      objectPath: DEFAULT_OBJECT,
      btfPath: null,
      ringBytes: 1 << 20,
      eventsPerSecond: 0,
      logFormat: 'json',
      metricsAddr: null,
      endpointsFile: null,
      kubeconfig: null,
      holdMs: 50,
      collector: null,
      exportBufferEvents: 10000,
      exportBufferBytes: 16 << 20,
      ...overrides,
    },
    pino({ level: process.env.ICMPWATCH_TEST_LOG ?? 'silent' }),
    out,
  );
  const events: icmpwatch.v1.IEvent[] = [];
  const waiters = new Set<() => void>();
  agent.addSink({
    publish(ev) {
      events.push(ev);
      for (const w of waiters) w();
    },
    close: async () => {},
  });
  let stopped = false;
  let from = 0;
  return {
    agent,
    events,
    lines,
    waitFor(match, count = 1, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = events.slice(from).filter(match);
          if (found.length >= count) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(found);
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${count} events; got ${events.slice(from).filter(match).length} of ${events.length - from}`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    mark() {
      from = events.length;
    },
    recent() {
      return events.slice(from);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await agent.stop();
    },
  };
}

/** Events of a given ICMP echo id, as (type, seq) pairs. */
export const echoOf = (ev: icmpwatch.v1.IEvent) => ({ type: ev.icmp?.type, id: ev.icmp?.id, seq: ev.icmp?.seq });
