import http from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from './log.js';

export interface Readiness {
  /** null when ready, else why not. */
  notReadyReason(): string | null;
}

/** /healthz (process alive), /readyz (component ready) and Prometheus /metrics on one port. */
export async function startOpsServer(addr: string, registry: Registry, readiness: Readiness, log: Logger): Promise<http.Server> {
  const idx = addr.lastIndexOf(':');
  const host = addr.slice(0, idx).replace(/^\[|\]$/g, '') || '0.0.0.0';
  const port = Number(addr.slice(idx + 1));
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === '/readyz') {
      const reason = readiness.notReadyReason();
      res.writeHead(reason ? 503 : 200, { 'content-type': 'text/plain' }).end(reason ? `not ready: ${reason}\n` : 'ok\n');
    } else if (path === '/metrics') {
      registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
        (err: Error) => res.writeHead(500).end(err.message),
      );
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  log.info({ addr: server.address() }, 'serving /healthz /readyz /metrics');
  return server;
}
