import { expect } from 'chai';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { CollectingSubscriber, echoEvent, eventually, range, startCollector, startExporter } from './harness.js';

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
});
