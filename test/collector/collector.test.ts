import { expect } from 'chai';
import * as grpc from '@grpc/grpc-js';
import { service as healthService } from 'grpc-health-check';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { spawnCollector } from '../cli/cli-runner.js';
import { CollectingSubscriber, echoEvent, eventually, freePort, range, sequences, startCollector, startExporter } from './harness.js';

function healthCheck(address: string, service: string): Promise<string> {
  const Health = grpc.makeClientConstructor(healthService, 'grpc.health.v1.Health');
  const client = new Health(address, grpc.credentials.createInsecure());
  return new Promise<string>((resolve, reject) =>
    client.check({ service }, (err: Error | null, res: { status: string }) => {
      client.close();
      if (err) reject(err);
      else resolve(res.status);
    }),
  );
}

describe('collector: lifecycle and operations', () => {
  it('serves /healthz, /readyz and /metrics, and on stop ends subscriber streams after their queue', async () => {
    const collector = await startCollector({ metricsAddr: '127.0.0.1:0' });
    const ops = `http://${collector.opsAddress}`;
    expect((await fetch(`${ops}/healthz`)).status).to.equal(200);
    expect((await fetch(`${ops}/readyz`)).status).to.equal(200);

    const client = new ObserverClient(collector.address);
    const follower = new CollectingSubscriber(client, { follow: true });
    await eventually(async () => (await client.getStatus()).subscribers === 1);
    const agent = startExporter(collector.address);
    for (const seq of range(1, 100)) agent.publish(echoEvent(seq));
    await eventually(() => agent.state().bufferedEvents === 0);

    const metrics = await (await fetch(`${ops}/metrics`)).text();
    expect(metrics).to.match(/^icmpwatch_collector_events_stored_total 100$/m);
    expect(metrics).to.match(/^icmpwatch_collector_subscribers 1$/m);
    expect(metrics).to.match(/^icmpwatch_collector_nodes\{state="NODE_STATE_CONNECTED"\} 1$/m);

    const stopped = collector.stop(2000);
    expect(await follower.done).to.equal(null);
    expect(follower.events).to.have.length(100);
    await stopped;
    await agent.close(100);
    client.close();
    await fetch(`${ops}/healthz`).then(
      () => expect.fail('ops server still up'),
      () => undefined,
    );
  });

  it('on SIGTERM stops accepting, is NOT_SERVING and not ready while a follower drains its queue, then exits 0', async function () {
    this.timeout(30_000);
    const ops = `127.0.0.1:${await freePort()}`;
    const collector = await spawnCollector(['--insecure-plaintext', '--listen', '127.0.0.1:0', '--metrics-addr', ops]);
    const client = new ObserverClient(collector.address);
    // Its own connection, not read from, with HTTP/2's default 64 KiB receive window: what the
    // collector holds for it stays in its queue.
    const slowClient = new ObserverClient(collector.address, { 'grpc.use_local_subchannel_pool': 1, 'grpc-node.flow_control_window': 65535 });
    const agent = startExporter(collector.address, { batchSize: 500 });
    try {
      const follower = new CollectingSubscriber(slowClient, { follow: true });
      follower.stream.pause();
      await eventually(async () => (await client.getStatus()).subscribers === 1);
      const total = 3000;
      const padding = { labels: Object.fromEntries(range(1, 20).map((i) => [`label-${i}`, 'x'.repeat(40)])) };
      for (const seq of range(1, total)) agent.publish(echoEvent(seq, { source: { ip: '10.1.0.2', ...padding } }));
      await eventually(() => agent.state().bufferedEvents === 0);
      expect(follower.events.length).to.be.below(total);

      collector.child.kill('SIGTERM');
      await eventually(async () => (await fetch(`http://${ops}/readyz`)).status === 503);
      expect(await healthCheck(collector.address, '')).to.equal('NOT_SERVING');
      expect(await healthCheck(collector.address, 'icmpwatch.v1.Observer')).to.equal('NOT_SERVING');
      const refused = (await new CollectingSubscriber(client, { follow: true }).done) as grpc.ServiceError;
      expect([refused.code, refused.details]).to.deep.equal([grpc.status.UNAVAILABLE, 'collector is shutting down']);

      follower.stream.resume();
      expect(await follower.done).to.equal(null);
      expect(sequences(follower.events)).to.deep.equal(range(1, total));
      expect(follower.lost).to.deep.equal([]);
      expect(await collector.exited).to.equal(0);
    } finally {
      await agent.close(100);
      client.close();
      slowClient.close();
      collector.child.kill('SIGKILL');
    }
  });
});
