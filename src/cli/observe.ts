import { status } from '@grpc/grpc-js';
import { z } from 'zod';
import { flag, hostPort, parseFlags, repeated, UsageError } from '../common/config.js';
import { parseDurationMs } from '../common/duration.js';
import { eventToJson, eventToText } from '../common/event-format.js';
import { ObserverClient } from '../common/grpc/clients.js';
import { parseSubscribeRequest, type SubscribeRequestIssue } from '../common/grpc/subscribe-request.js';
import { lostEventsToText, noticeToJson, nodeStatusToText } from '../common/notice-format.js';
import { icmpwatch } from '../common/proto.js';
import { bearerMetadata } from './bearer-token.js';
import { subscriberTlsFlags, subscriberTlsUsage, subscriberTransport } from './client-tls.js';
import { serverFailure } from './server-error.js';

const v1 = icmpwatch.v1;

export const summary = `icmpwatch observe --server HOST:PORT [flags]
  Prints ICMP events of the whole cluster from the collector: recent history, then live with --follow.

  --server HOST:PORT     the collector (required)
${subscriberTlsUsage}
  --token-file FILE      bearer token for the collector (re-read on each connect; default $ICMPWATCH_TOKEN);
                         over TLS only: a token with --insecure-plaintext is refused (exit 2)
  --last N               the last N matching events (default 20 without --follow/--since)
  --follow               keep printing new events
  --since T, --until T   RFC 3339 time (2026-11-25T05:55:00Z) or an age (90s, 15m, 2h)
  -o, --output FORMAT    text (default) or json (one object per line)
 filters (a flag repeated: any of its values; different flags: all must match):
  --node NAME            --namespace NS (either end)      --pod [NS/]NAME-PREFIX (either end)
  --source-pod, --destination-pod [NS/]NAME-PREFIX
  --ip IP|CIDR (either end)         --source-ip, --destination-ip IP|CIDR
  --type NAME|N|N/CODE   (echo-request, port-unreachable, time-exceeded, packet-too-big, ...)
  --code N               --family ipv4|ipv6               --point destination|host|forwarded|unknown
 exclusions (each hides what matches it): --deny-node, --deny-namespace, --deny-pod, --deny-ip,
  --deny-source-ip, --deny-destination-ip, --deny-type, --deny-code, --deny-family, --deny-point, ...
 exit status: 0 ok, 1 collector error, 2 bad flags, 3 token rejected or not allowed`;

/** Filter flags by request field; the deny flag of each is `--deny-<flag>`. */
const FILTER_FLAGS = {
  node: 'node',
  namespace: 'namespace',
  pod: 'pod',
  sourcePod: 'source-pod',
  destinationPod: 'destination-pod',
  ip: 'ip',
  sourceIp: 'source-ip',
  destinationIp: 'destination-ip',
  icmpType: 'type',
  icmpCode: 'code',
  family: 'family',
  observationPoint: 'point',
} as const;
type FilterField = keyof typeof FILTER_FLAGS;

const FAMILIES: Record<string, icmpwatch.v1.Family> = {
  ipv4: v1.Family.FAMILY_IPV4,
  '4': v1.Family.FAMILY_IPV4,
  ipv6: v1.Family.FAMILY_IPV6,
  '6': v1.Family.FAMILY_IPV6,
};
const POINTS: Record<string, icmpwatch.v1.ObservationPoint> = {
  destination: v1.ObservationPoint.OBSERVATION_POINT_DESTINATION,
  host: v1.ObservationPoint.OBSERVATION_POINT_HOST,
  forwarded: v1.ObservationPoint.OBSERVATION_POINT_FORWARDED,
  unknown: v1.ObservationPoint.OBSERVATION_POINT_UNKNOWN,
};
const oneOf = <T>(table: Record<string, T>, what: string) =>
  z.string().transform((s, ctx) => {
    // Own keys only: 'constructor' or '__proto__' must not find Object.prototype's members.
    const value = Object.hasOwn(table, s.toLowerCase()) ? table[s.toLowerCase()] : undefined;
    if (value === undefined) ctx.addIssue(`unknown ${what} '${s}': expected one of ${Object.keys(table).join(', ')}`);
    return value as T;
  });

/** Each filter field's flag values, converted to what the request field holds. */
const filterValues = {
  node: repeated(z.string()),
  namespace: repeated(z.string()),
  pod: repeated(z.string()),
  sourcePod: repeated(z.string()),
  destinationPod: repeated(z.string()),
  ip: repeated(z.string()),
  sourceIp: repeated(z.string()),
  destinationIp: repeated(z.string()),
  icmpType: repeated(z.string()),
  icmpCode: repeated(z.coerce.number().int().min(0).max(255)),
  family: repeated(oneOf(FAMILIES, 'family')),
  observationPoint: repeated(oneOf(POINTS, 'observation point')),
};

const camel = (flagName: string) => flagName.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
const fields = Object.keys(FILTER_FLAGS) as FilterField[];
const filterShape = Object.fromEntries(fields.flatMap((f) => [[camel(FILTER_FLAGS[f]), filterValues[f]], [camel(`deny-${FILTER_FLAGS[f]}`), filterValues[f]]]));

export const schema = z.object({
  server: hostPort(),
  ...subscriberTlsFlags,
  tokenFile: z.string().min(1).optional(),
  last: z.coerce.number().int().optional(),
  follow: flag(),
  since: z.string().optional(),
  until: z.string().optional(),
  output: z.enum(['text', 'json']).default('text'),
  ...filterShape,
});

/** RFC 3339, or an age meaning that long before now. */
function parseTime(value: string, flagName: string): icmpwatch.v1.SubscribeRequest['since'] {
  const age = parseDurationMs(value);
  const ms = age !== null ? Date.now() - age : /^\d{4}-\d\d-\d\dT/.test(value) ? Date.parse(value) : NaN;
  if (Number.isNaN(ms)) throw new UsageError(`--${flagName}: expected an RFC 3339 time or an age such as 15m, got '${value}'`);
  // Keep the sub-millisecond digits of an RFC 3339 time: --since an event's own time must include it.
  const fraction = /\.(\d+)/.exec(age === null ? value : '')?.[1];
  const seconds = Math.floor(ms / 1000);
  const nanos = fraction ? Number(fraction.slice(0, 9).padEnd(9, '0')) : (ms - seconds * 1000) * 1e6;
  return { seconds, nanos };
}

/** The flag a request issue is about: allow[0].ip[1] -> --ip, deny[3].ip -> --deny-ip. */
function flagOf(issue: SubscribeRequestIssue, denyFields: FilterField[]): string {
  const [top, index, field] = issue.path;
  if (top === 'allow' && typeof field === 'string') return `--${FILTER_FLAGS[field as FilterField]}`;
  if (top === 'deny' && typeof index === 'number' && denyFields[index]) return `--deny-${FILTER_FLAGS[denyFields[index]]}`;
  return `--${String(top)}`;
}

export async function run(argv: string[]): Promise<number> {
  const flags = parseFlags(
    argv.map((a) => (a === '-o' ? '--output' : a)),
    schema,
    ['follow', 'insecurePlaintext'],
  ) as z.infer<typeof schema> & Record<string, unknown[]>;

  const allow: icmpwatch.v1.IFilter = {};
  const deny: icmpwatch.v1.IFilter[] = [];
  const denyFields: FilterField[] = [];
  for (const field of fields) {
    const allowed = flags[camel(FILTER_FLAGS[field])]!;
    const denied = flags[camel(`deny-${FILTER_FLAGS[field]}`)]!;
    if (allowed.length) Object.assign(allow, { [field]: allowed });
    if (denied.length) {
      deny.push({ [field]: denied });
      denyFields.push(field);
    }
  }
  const historyAsked = flags.last !== undefined || flags.follow || flags.since !== undefined;
  const request: icmpwatch.v1.ISubscribeRequest = {
    last: flags.last ?? (historyAsked ? 0 : 20),
    follow: flags.follow,
    since: flags.since === undefined ? null : parseTime(flags.since, 'since'),
    until: flags.until === undefined ? null : parseTime(flags.until, 'until'),
    allow: Object.keys(allow).length ? [allow] : [],
    deny,
  };
  const checked = parseSubscribeRequest(request);
  if (!checked.ok) throw new UsageError(checked.issues.map((i) => `${flagOf(i, denyFields)}: ${i.message}`).join('; '));

  const print = (r: icmpwatch.v1.ISubscribeResponse): string =>
    flags.output === 'json'
      ? JSON.stringify(r.event ? eventToJson(r.event) : noticeToJson(r))
      : r.event
        ? eventToText(r.event)
        : r.lostEvents
          ? lostEventsToText(r)
          : nodeStatusToText(r);

  const metadata = bearerMetadata(flags);
  const client = new ObserverClient(flags.server, {}, await subscriberTransport(flags));
  const stream = client.subscribeBatches(request, {}, metadata);
  // Set when this process cancels its own call (a signal, a reader that went away): a normal end.
  // A CANCELLED status from the server is an error like any other.
  let cancelledHere = false;
  const cancel = () => {
    cancelledHere = true;
    stream.cancel();
  };
  process.once('SIGINT', cancel);
  process.once('SIGTERM', cancel);
  try {
    return await new Promise<number>((resolve) => {
      stream.on('data', (batch: icmpwatch.v1.SubscribeBatch) => {
        if (!process.stdout.write(batch.responses.map((r) => print(r) + '\n').join(''))) {
          stream.pause();
          process.stdout.once('drain', () => stream.resume());
        }
      });
      // A reader that went away (`| head`) is a normal end.
      process.stdout.on('error', cancel);
      stream.on('error', (err: Error & { code?: number }) => {
        if (cancelledHere && err.code === status.CANCELLED) return resolve(0);
        const failure = serverFailure(err);
        process.stderr.write(`icmpwatch observe: ${failure.message}\n`);
        resolve(failure.exitCode);
      });
      stream.on('end', () => resolve(0));
    });
  } finally {
    process.off('SIGINT', cancel);
    process.off('SIGTERM', cancel);
    client.close();
  }
}
