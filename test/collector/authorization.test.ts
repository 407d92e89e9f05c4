// Subscriber access control against the real kube-apiserver (test/k8s): ServiceAccount tokens from
// the TokenRequest API, RBAC bindings on icmpevents.icmpwatch.io, a collector whose own token may
// only create TokenReviews and SubjectAccessReviews, and one mixed event stream that each
// subscriber must see exactly its share of.
import { createSign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Metadata, status } from '@grpc/grpc-js';
import { AuthorizationV1Api, CoreV1Api, RbacAuthorizationV1Api, type KubeConfig } from '@kubernetes/client-node';
import { expect } from 'chai';
import { ACCESS_GROUP, ACCESS_RESOURCE, ACCESS_REVIEW_RULES, ACCESS_VERB } from '../../src/collector/access-review.js';
import { DEFAULT_ADMISSION_LIMITS, type AdmissionLimits } from '../../src/collector/admission.js';
import type { Collector } from '../../src/collector/collector.js';
import { ObserverClient } from '../../src/common/grpc/clients.js';
import { icmpwatch } from '../../src/common/proto.js';
import { ApiProxy, uniqueName, useCluster, via, type TestCluster } from '../k8s/cluster.js';
import { CollectingSubscriber, echoEvent, eventually, sequences, startCollector, startExporter } from './harness.js';

const { EndpointKind: Kind, LostEventsSource } = icmpwatch.v1;
const CACHE_TTL_MS = 2000;
const VIEWER_RULES = [{ apiGroups: [ACCESS_GROUP], resources: [ACCESS_RESOURCE], verbs: [ACCESS_VERB] }];

const bearer = (token: string) => {
  const md = new Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A ServiceAccount token whose times are moved an hour into the past, signed with the cluster's key. */
function expiredCopy(token: string, signingKey: string): string {
  const [header, payload] = token.split('.');
  const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  Object.assign(claims, { iat: now - 7200, nbf: now - 7200, exp: now - 3600 });
  const body = `${header}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}`;
  return `${body}.${createSign('RSA-SHA256').update(body).sign(signingKey).toString('base64url')}`;
}

describe('subscriber access control (real kube-apiserver)', function () {
  this.timeout(60_000);
  let cluster: TestCluster;
  let core: CoreV1Api;
  let rbac: RbacAuthorizationV1Api;
  let collectorKc: KubeConfig;
  let usersNs: string;
  let nsA: string;
  let nsB: string;
  let viewerRole: string;
  const clusterRoles: string[] = [];
  const clusterBindings: string[] = [];
  const tokens = { cluster: '', nsA: '', nobody: '', expired: '' };
  const cleanups: (() => unknown)[] = [];

  const user = (name: string) => `system:serviceaccount:${usersNs}:${name}`;

  async function serviceAccountToken(name: string): Promise<string> {
    await core.createNamespacedServiceAccount({ namespace: usersNs, body: { metadata: { name } } });
    const tr = await core.createNamespacedServiceAccountToken({ name, namespace: usersNs, body: { spec: { audiences: [], expirationSeconds: 3600 } } });
    return tr.status!.token!;
  }

  async function bindInNamespace(sa: string, namespace: string): Promise<string> {
    const name = uniqueName(sa);
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: viewerRole },
        subjects: [{ kind: 'ServiceAccount', name: sa, namespace: usersNs }],
      },
    });
    return name;
  }

  /** The RBAC authorizer reads bindings from an informer: wait until it agrees. */
  async function untilAllowed(sa: string, namespace: string, expected: boolean): Promise<void> {
    const authz = cluster.admin.makeApiClient(AuthorizationV1Api);
    await eventually(async () => {
      const r = await authz.createSubjectAccessReview({
        body: {
          spec: {
            user: user(sa),
            groups: ['system:serviceaccounts', `system:serviceaccounts:${usersNs}`, 'system:authenticated'],
            resourceAttributes: { group: ACCESS_GROUP, resource: ACCESS_RESOURCE, verb: ACCESS_VERB, namespace },
          },
        },
      });
      return r.status?.allowed === expected;
    }, 15_000);
  }

  before(async function () {
    cluster = await useCluster(this);
    core = cluster.admin.makeApiClient(CoreV1Api);
    rbac = cluster.admin.makeApiClient(RbacAuthorizationV1Api);
    // The collector's own rights are exactly the chart's: create the two reviews, nothing else.
    const reviewer = uniqueName('icmpwatch-collector');
    viewerRole = uniqueName('icmpwatch-viewer');
    await rbac.createClusterRole({
      body: {
        metadata: { name: reviewer },
        rules: ACCESS_REVIEW_RULES.map((r) => ({ ...r, apiGroups: [...r.apiGroups], resources: [...r.resources], verbs: [...r.verbs] })),
      },
    });
    await rbac.createClusterRole({ body: { metadata: { name: viewerRole }, rules: VIEWER_RULES } });
    clusterRoles.push(reviewer, viewerRole);
    collectorKc = await cluster.serviceAccount(reviewer);

    usersNs = await cluster.namespace('authz-users');
    nsA = await cluster.namespace('authz-a');
    nsB = await cluster.namespace('authz-b');
    tokens.cluster = await serviceAccountToken('cluster-viewer');
    tokens.nsA = await serviceAccountToken('a-viewer');
    tokens.nobody = await serviceAccountToken('nobody');
    const signingKey = readFileSync(join(dirname(cluster.kubeconfigPath), 'pki', 'sa.key'), 'utf8');
    tokens.expired = expiredCopy(tokens.nobody, signingKey);
    const binding = uniqueName('cluster-viewer');
    await rbac.createClusterRoleBinding({
      body: {
        metadata: { name: binding },
        roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: viewerRole },
        subjects: [{ kind: 'ServiceAccount', name: 'cluster-viewer', namespace: usersNs }],
      },
    });
    clusterBindings.push(binding);
    await bindInNamespace('a-viewer', nsA);
    await untilAllowed('cluster-viewer', '', true);
    await untilAllowed('a-viewer', nsA, true);
  });

  after(async () => {
    for (const c of cleanups.reverse()) await c();
    for (const name of clusterBindings) await rbac.deleteClusterRoleBinding({ name }).catch(() => undefined);
    for (const name of clusterRoles) await rbac.deleteClusterRole({ name }).catch(() => undefined);
  });

  async function collectorWith(
    kubeConfig: KubeConfig,
    { cacheTtlMs = CACHE_TTL_MS, limits = DEFAULT_ADMISSION_LIMITS }: { cacheTtlMs?: number; limits?: AdmissionLimits } = {},
  ): Promise<{ collector: Collector; client: ObserverClient }> {
    const collector = await startCollector({ access: { kubeConfig, cacheTtlMs }, limits });
    const client = new ObserverClient(collector.address);
    cleanups.push(async () => {
      client.close();
      await collector.stop(1000);
    });
    return { collector, client };
  }

  function exporterTo(collector: Collector, counters = () => ({ events: 0, lost: 0, malformed: 0, suppressed: 0 }), node = 'node-a') {
    const exporter = startExporter(collector.address, { counters, node });
    cleanups.push(() => exporter.close(1000));
    return exporter;
  }

  /** One event per kind of pair, sequences from `first`: A-A, A-B, B-B, B-node, external-A, node-external. */
  function mixed(first: number): icmpwatch.v1.IEvent[] {
    const pod = (namespace: string, ip: string) => ({ ip, namespace, pod: `p-${ip}`, kind: Kind.ENDPOINT_KIND_POD });
    const node = { ip: '192.0.2.10', node: 'node-a', kind: Kind.ENDPOINT_KIND_NODE };
    const external = { ip: '198.51.100.7', kind: Kind.ENDPOINT_KIND_EXTERNAL };
    const ends: [icmpwatch.v1.IEndpoint, icmpwatch.v1.IEndpoint][] = [
      [pod(nsA, '10.1.0.1'), pod(nsA, '10.1.0.2')],
      [pod(nsA, '10.1.0.1'), pod(nsB, '10.2.0.1')],
      [pod(nsB, '10.2.0.1'), pod(nsB, '10.2.0.2')],
      [pod(nsB, '10.2.0.1'), node],
      [external, pod(nsA, '10.1.0.2')],
      [node, external],
    ];
    return ends.map(([source, destination], i) => echoEvent(first + i, { source, destination }));
  }
  /** Offsets in `mixed` a namespace-A viewer may see. */
  const A_VISIBLE = [0, 1, 4];

  async function refusal(stream: CollectingSubscriber): Promise<{ code: number; details: string }> {
    const err = (await stream.done) as (Error & { code?: number; details?: string }) | null;
    expect(err, 'the stream should have been refused').to.be.an('error');
    return { code: err!.code!, details: err!.details ?? '' };
  }

  describe('one mixed stream', function () {
    let collector: Collector;
    let client: ObserverClient;
    let lost = 0;

    before(async () => {
      ({ collector, client } = await collectorWith(collectorKc));
      const exporter = exporterTo(collector, () => ({ events: 0, lost, malformed: 0, suppressed: 0 }));
      lost = 3; // a ring-buffer loss notice about node-a: cluster scope only
      for (const ev of mixed(1)) exporter.publish(ev);
      await eventually(() => collector.metrics.eventsStored.get().then((m) => m.values.reduce((n, v) => n + v.value, 0) === 6));
    });

    for (const rpc of ['subscribe', 'subscribeBatches'] as const) {
      it(`history (${rpc}): the cluster viewer sees everything, the namespace-A viewer the events with an end in A, no rights nothing`, async () => {
        const request = { last: 100 };
        const all = new CollectingSubscriber(client, request, bearer(tokens.cluster), rpc);
        const a = new CollectingSubscriber(client, request, bearer(tokens.nsA), rpc);
        const none = new CollectingSubscriber(client, request, bearer(tokens.nobody), rpc);
        for (const s of [all, a, none]) expect(await s.done).to.equal(null);
        expect(sequences(all.events)).to.deep.equal([1, 2, 3, 4, 5, 6]);
        expect(all.lost.map((l) => l.source)).to.include(LostEventsSource.LOST_EVENTS_SOURCE_RING_BUFFER);
        expect(sequences(a.events)).to.deep.equal(A_VISIBLE.map((i) => i + 1));
        expect(a.received.filter((r) => !r.event), 'node status and agent loss notices').to.deep.equal([]);
        expect(none.received).to.deep.equal([]);
      });
    }

    it('live: each follower gets exactly its share, in order (SubscribeBatches the same as Subscribe)', async () => {
      const all = new CollectingSubscriber(client, { follow: true }, bearer(tokens.cluster));
      const a = new CollectingSubscriber(client, { follow: true }, bearer(tokens.nsA));
      const none = new CollectingSubscriber(client, { follow: true }, bearer(tokens.nobody));
      const batched = [tokens.cluster, tokens.nsA, tokens.nobody].map((t) => new CollectingSubscriber(client, { follow: true }, bearer(t), 'subscribeBatches'));
      await eventually(async () => (await collector.metrics.subscribers.get()).values[0]?.value === 6);
      // A node that connects now: its status record is for cluster scope only.
      const exporter = exporterTo(collector, undefined, 'node-b');
      // Last, an A-A event: once the namespace-A viewer has it, it has had everything before it.
      for (const ev of [...mixed(101), mixed(107)[0]!]) exporter.publish(ev);
      await all.until((s) => s.events.length === 7);
      await a.until((s) => s.events.some((e) => Number(e.sequence) === 107));
      expect(sequences(all.events)).to.deep.equal([101, 102, 103, 104, 105, 106, 107]);
      expect(all.received.filter((r) => r.nodeStatus).map((r) => r.nodeName)).to.include('node-b');
      expect(sequences(a.events)).to.deep.equal([...A_VISIBLE.map((i) => i + 101), 107]);
      expect(a.received.filter((r) => !r.event)).to.deep.equal([]);
      expect(none.received).to.deep.equal([]);
      await batched[0]!.until((s) => s.received.length === all.received.length);
      await batched[1]!.until((s) => s.received.length === a.received.length);
      expect(batched.map((s) => s.received)).to.deep.equal([all.received, a.received, []]);
      for (const s of [all, a, none, ...batched]) s.stream.cancel();
    });

    it('a namespace filter the subscriber may not read: PERMISSION_DENIED naming what is missing', async () => {
      for (const rpc of ['subscribe', 'subscribeBatches'] as const) {
        const s = new CollectingSubscriber(client, { last: 10, allow: [{ namespace: [nsB] }] }, bearer(tokens.nsA), rpc);
        const { code, details } = await refusal(s);
        expect(code, rpc).to.equal(status.PERMISSION_DENIED);
        expect(details).to.include(user('a-viewer')).and.include(`get icmpevents.icmpwatch.io in namespace ${nsB}`).and.include('cluster-wide');
      }
      // Its own namespace is fine.
      const own = new CollectingSubscriber(client, { last: 100, allow: [{ namespace: [nsA] }] }, bearer(tokens.nsA));
      expect(await own.done).to.equal(null);
      expect(sequences(own.events)).to.include.members([1, 2, 5]);
      for (const e of own.events) expect([e.source?.namespace, e.destination?.namespace]).to.include(nsA);
    });

    for (const [name, metadata] of [
      ['no token', () => new Metadata()],
      ['a malformed token', () => bearer('not-a-token')],
      ['an expired token', () => bearer(tokens.expired)],
    ] as const) {
      it(`${name}: UNAUTHENTICATED on Subscribe, SubscribeBatches, GetStatus and ListNodes`, async () => {
        const { code, details } = await refusal(new CollectingSubscriber(client, { last: 10 }, metadata()));
        expect(code, details).to.equal(status.UNAUTHENTICATED);
        expect((await refusal(new CollectingSubscriber(client, { last: 10 }, metadata(), 'subscribeBatches'))).code).to.equal(status.UNAUTHENTICATED);
        if (name === 'no token') expect(details).to.include('authorization: Bearer');
        // Signed with the cluster's own key and otherwise valid: refused for its expiry alone.
        if (name === 'an expired token') expect(details).to.match(/expired/);
        for (const call of [client.getStatus({}, metadata()), client.listNodes({}, metadata())]) {
          const err = (await call.then(() => null, (e: unknown) => e)) as { code: number } | null;
          expect(err?.code).to.equal(status.UNAUTHENTICATED);
        }
      });
    }

    it('GetStatus and ListNodes: cluster scope only', async () => {
      expect(Number((await client.getStatus({}, bearer(tokens.cluster))).eventsSeen)).to.be.greaterThan(0);
      expect((await client.listNodes({}, bearer(tokens.cluster))).nodes!.map((n) => n.name)).to.include('node-a');
      for (const token of [tokens.nsA, tokens.nobody]) {
        for (const [method, call] of [
          ['GetStatus', client.getStatus({}, bearer(token))],
          ['ListNodes', client.listNodes({}, bearer(token))],
        ] as const) {
          const err = (await call.then(() => null, (e: unknown) => e)) as { code: number; details: string } | null;
          expect(err?.code, method).to.equal(status.PERMISSION_DENIED);
          expect(err!.details).to.include('get icmpevents.icmpwatch.io cluster-wide').and.include(method);
        }
      }
    });
  });

  it('a binding revoked mid-stream stops delivery within the cache lifetime; granted again, it resumes', async () => {
    const { collector, client } = await collectorWith(collectorKc);
    const token = await serviceAccountToken('revoked');
    const binding = await bindInNamespace('revoked', nsA);
    await untilAllowed('revoked', nsA, true);
    const s = new CollectingSubscriber(client, { follow: true }, bearer(token));
    const exporter = exporterTo(collector);
    let seq = 1000;
    const ticker = setInterval(() => exporter.publish(mixed(seq++)[0]!), 50);
    cleanups.push(() => clearInterval(ticker));
    let lastArrival = 0;
    s.stream.on('data', () => (lastArrival = Date.now()));
    await s.until((x) => x.events.length >= 3);

    await rbac.deleteNamespacedRoleBinding({ name: binding, namespace: nsA });
    await untilAllowed('revoked', nsA, false);
    const revokedAt = Date.now();
    // Quiet for longer than the cache lifetime while events keep coming: delivery has stopped...
    await eventually(() => Date.now() - lastArrival > CACHE_TTL_MS * 1.5, CACHE_TTL_MS * 4);
    // ...within the cache lifetime of the API server saying no (a tick and a round trip of slack).
    expect(lastArrival - revokedAt, 'ms from the revocation to the last delivery').to.be.lessThan(CACHE_TTL_MS + 500);
    if (process.env.ICMPWATCH_TEST_LOG) process.stderr.write(`revocation: last delivery ${lastArrival - revokedAt} ms after the API server said no\n`);
    // ...while the stream stays open, and a new binding starts it again.
    const countWhileRevoked = s.events.length;
    await bindInNamespace('revoked', nsA);
    await s.until((x) => x.events.length > countWhileRevoked, CACHE_TTL_MS + 5000);
    clearInterval(ticker);
    expect(await Promise.race([s.done.then(() => 'ended'), sleep(10).then(() => 'open')])).to.equal('open');
    s.stream.cancel();
  });

  it('--max-subscribers counts streams once access is granted: refused tries and stalled reviews never take a viewer\'s place', async () => {
    const proxy = await ApiProxy.start(collectorKc.getCurrentCluster()!.server);
    cleanups.push(() => proxy.close());
    // Answers outlive the test: the viewer's, cached first, are all it needs once the proxy freezes.
    const { collector, client } = await collectorWith(via(collectorKc, proxy.url), {
      cacheTtlMs: 600_000,
      limits: { maxSubscribers: 1, maxSubscribersPerPeer: 64, requestsPerSecond: 10_000 },
    });
    const subscribers = async () => (await collector.metrics.subscribers.get()).values[0]?.value ?? 0;
    const refused = async (reason: string) => (await collector.metrics.requestsRefused.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
    const stillOpen = async (s: CollectingSubscriber) => (await Promise.race([s.done.then((err) => `ended: ${err?.message}`), sleep(50).then(() => 'open')])) === 'open';
    const deniedFilter = { follow: true, allow: [{ namespace: [nsB] }] };
    expect(await new CollectingSubscriber(client, { last: 1 }, bearer(tokens.cluster)).done).to.equal(null);
    expect((await refusal(new CollectingSubscriber(client, deniedFilter, bearer(tokens.nobody)))).code).to.equal(status.PERMISSION_DENIED);

    // Reviews that never answer (tokens the collector has not seen: the API server is asked), one
    // of them cancelled by its client while waiting, and a user without rights trying again and again.
    proxy.freeze();
    const stalled = Array.from({ length: 4 }, (_, i) => new CollectingSubscriber(client, { follow: true }, bearer(`never-reviewed-${i}`)));
    const tries = Array.from({ length: 10 }, () => new CollectingSubscriber(client, deniedFilter, bearer(tokens.nobody)));
    await sleep(300);
    stalled[0]!.stream.cancel();
    for (const t of tries) expect((await refusal(t)).code).to.equal(status.PERMISSION_DENIED);
    const first = new CollectingSubscriber(client, { follow: true }, bearer(tokens.cluster));
    await eventually(async () => (await subscribers()) === 1);
    expect(await stillOpen(first), 'the viewer is admitted').to.equal(true);
    expect(Number((await client.getStatus({}, bearer(tokens.cluster))).subscribers)).to.equal(1);

    // Two viewers at once: the second is beyond the limit.
    const second = await refusal(new CollectingSubscriber(client, { last: 1 }, bearer(tokens.cluster)));
    expect(second).to.deep.equal({ code: status.RESOURCE_EXHAUSTED, details: 'too many subscribers: at most 1 Subscribe streams (--max-subscribers)' });
    expect(await refused('subscribers')).to.equal(1);
    expect(await refused('permission_denied')).to.equal(11);

    // The stalled reviews fail once the API server is reachable again; none of them held a place.
    proxy.restore();
    for (const s of stalled.slice(1)) expect((await refusal(s)).code).to.equal(status.UNAVAILABLE);
    expect((await refusal(stalled[0]!)).code).to.equal(status.CANCELLED);
    expect(await subscribers()).to.equal(1);
    // The first viewer's place is given back when its stream ends.
    first.stream.cancel();
    await eventually(async () => (await subscribers()) === 0);
    const next = new CollectingSubscriber(client, { follow: true }, bearer(tokens.cluster));
    await eventually(async () => (await subscribers()) === 1);
    expect(await stillOpen(next)).to.equal(true);
    next.stream.cancel();
    expect(await refused('subscribers')).to.equal(1);
  });

  it('the API server unreachable: UNAVAILABLE for new calls, and open streams end with UNAVAILABLE (never fail open)', async () => {
    const proxy = await ApiProxy.start(collectorKc.getCurrentCluster()!.server);
    cleanups.push(() => proxy.close());
    const { collector, client } = await collectorWith(via(collectorKc, proxy.url));
    const exporter = exporterTo(collector);
    exporter.publish(mixed(2000)[0]!);
    const open = new CollectingSubscriber(client, { follow: true, last: 10 }, bearer(tokens.cluster));
    await open.until((x) => x.events.length === 1);

    proxy.cut();
    const { code, details } = await refusal(new CollectingSubscriber(client, { last: 10 }, bearer(tokens.nsA)));
    expect(code).to.equal(status.UNAVAILABLE);
    expect(details).to.match(/cannot check access: TokenReview at https:\/\/127\.0\.0\.1:\d+ failed/);
    const err = (await client.getStatus({}, bearer(tokens.nsA)).then(() => null, (e: unknown) => e)) as { code: number } | null;
    expect(err?.code).to.equal(status.UNAVAILABLE);
    // The open stream's cached answers run out; its recheck fails and ends it.
    const ended = await refusal(open);
    expect(ended.code).to.equal(status.UNAVAILABLE);
  });
});
