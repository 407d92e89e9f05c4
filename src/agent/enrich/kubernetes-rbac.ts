/**
 * The API access the agent's Kubernetes resolver needs, and nothing more: read-only list/watch
 * of the objects that name addresses (pods, nodes, services) and of the owners between a pod
 * and its workload (ReplicaSet -> Deployment, Job -> CronJob). The Helm chart renders its
 * ClusterRole from this list, and the tests bind exactly this list to the agent's token.
 */
export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
}

const READ = ['get', 'list', 'watch'];

export const AGENT_CLUSTER_ROLE_RULES: readonly PolicyRule[] = [
  { apiGroups: [''], resources: ['pods', 'nodes', 'services'], verbs: READ },
  { apiGroups: ['apps'], resources: ['replicasets'], verbs: READ },
  { apiGroups: ['batch'], resources: ['jobs'], verbs: READ },
];
