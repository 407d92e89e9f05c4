import { readFileSync, statSync, type Stats } from 'node:fs';
import { isIP } from 'node:net';
import { z } from 'zod';
import { describeIssues } from '../../common/config.js';
import { icmpwatch } from '../../common/proto.js';
import type { Logger } from '../../common/log.js';
import { EndpointMemo, type EndpointResolver } from './resolver.js';

const Kind = icmpwatch.v1.EndpointKind;
const Enrichment = icmpwatch.v1.Enrichment;

/** JSON can spell a lone surrogate; protobuf cannot encode it, and the collector rejects the event. */
const text = () => z.string().refine((s) => s.isWellFormed(), 'not valid Unicode (a lone surrogate)');

const EndpointEntry = z.object({
  ip: z
    .string()
    .refine((v) => isIP(v) !== 0, 'not an IP address')
    .refine((v) => !v.includes('%'), 'a zone index (%...) never matches a packet address'),
  namespace: text().min(1),
  pod: text().min(1),
  labels: z.record(text(), text()).optional(),
  node: text().optional(),
  workload: z.object({ kind: text().min(1), name: text().min(1) }).optional(),
});

export const EndpointsFile = z.object({ endpoints: z.array(EndpointEntry) }).strict();

export class EndpointsFileError extends Error {}

/** Far beyond any cluster's pods (about 200 bytes each); a file past it is a mistake, not read. */
export const MAX_ENDPOINTS_FILE_BYTES = 64 << 20;

/** The file's text, refused beyond the size bound before it is read. */
function readEndpointsFile(path: string, size: number): string {
  const tooBig = (bytes: number) =>
    new EndpointsFileError(`${path}: ${bytes} bytes, more than the limit of ${MAX_ENDPOINTS_FILE_BYTES} bytes`);
  if (size > MAX_ENDPOINTS_FILE_BYTES) throw tooBig(size);
  const bytes = readFileSync(path);
  // It may have grown since it was looked at.
  if (bytes.length > MAX_ENDPOINTS_FILE_BYTES) throw tooBig(bytes.length);
  return bytes.toString('utf8');
}

/** Parses and validates an endpoints file; errors name the JSON path of the bad field. */
export function parseEndpointsFile(path: string, text: string): Map<string, icmpwatch.v1.IEndpoint> {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new EndpointsFileError(`${path}: invalid JSON: ${(err as Error).message}`);
  }
  const parsed = EndpointsFile.safeParse(json);
  if (!parsed.success) {
    throw new EndpointsFileError(`${path}: ${describeIssues(parsed.error, (p) => p.map(String).join('.'))}`);
  }
  const table = new Map<string, icmpwatch.v1.IEndpoint>();
  for (const e of parsed.data.endpoints) {
    table.set(normalizeIp(e.ip), {
      ip: normalizeIp(e.ip),
      namespace: e.namespace,
      pod: e.pod,
      labels: e.labels ?? {},
      node: e.node ?? '',
      workload: e.workload ?? null,
      kind: Kind.ENDPOINT_KIND_POD,
      enrichment: Enrichment.ENRICHMENT_RESOLVED,
    });
  }
  return table;
}

/** The text form packets are decoded to (lower-case, compressed IPv6). */
function normalizeIp(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip;
}

/**
 * Labels addresses from a JSON file, for hosts without a cluster. The file is re-read when it
 * changes (polled, so atomic replacement by rename works); a bad version is logged and the last
 * good one kept.
 */
export class EndpointsFileResolver implements EndpointResolver {
  private table: Map<string, icmpwatch.v1.IEndpoint>;
  /** Addresses not in the file (the table's own entries are the same object each time). */
  private readonly external = new EndpointMemo();
  private loaded: Stats;
  private readonly poller: NodeJS.Timeout;
  reloads = 0;
  reloadFailures = 0;

  constructor(
    private readonly path: string,
    private readonly log: Logger,
    pollMs = 1000,
  ) {
    this.loaded = statSync(path);
    this.table = parseEndpointsFile(path, readEndpointsFile(path, this.loaded.size));
    // Polled and compared with the version loaded (fs.watchFile compares consecutive polls, and
    // its first poll may already see a file replaced right after start). Rename-replacement works.
    this.poller = setInterval(() => {
      let cur: Stats;
      try {
        cur = statSync(path);
      } catch {
        return; // between unlink and rename: the next poll sees the new file
      }
      if (cur.mtimeMs !== this.loaded.mtimeMs || cur.ino !== this.loaded.ino || cur.size !== this.loaded.size) this.reload(cur);
    }, pollMs);
    this.poller.unref();
  }

  private reload(seen: Stats): void {
    this.loaded = seen;
    try {
      this.table = parseEndpointsFile(this.path, readEndpointsFile(this.path, seen.size));
      this.reloads++;
      this.log.info({ path: this.path, endpoints: this.table.size }, 'endpoints file reloaded');
    } catch (err) {
      this.reloadFailures++;
      this.log.error({ path: this.path, err: (err as Error).message }, 'endpoints file rejected; keeping the previous version');
    }
  }

  resolve(ip: string): icmpwatch.v1.IEndpoint {
    return (
      this.table.get(ip) ??
      this.external.get(ip, null) ??
      this.external.remember(ip, null, { ip, kind: Kind.ENDPOINT_KIND_EXTERNAL, enrichment: Enrichment.ENRICHMENT_UNKNOWN })
    );
  }

  notReadyReason(): string | null {
    return null;
  }

  close(): void {
    clearInterval(this.poller);
  }
}

/** No source of names: every address is reported as unknown. */
export class NoResolver implements EndpointResolver {
  private readonly answers = new EndpointMemo();

  resolve(ip: string): icmpwatch.v1.IEndpoint {
    return this.answers.get(ip, null) ?? this.answers.remember(ip, null, { ip, enrichment: Enrichment.ENRICHMENT_UNKNOWN });
  }
  notReadyReason(): string | null {
    return null;
  }
  close(): void {}
}
