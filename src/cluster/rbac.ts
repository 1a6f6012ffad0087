// `vxedge rbac`: the least privilege a gateway with `cluster.source: kubernetes` needs.
//
// It follows Nodes as flanneld does (list + watch every Node) and keeps exactly one Node of
// its own. RBAC's resourceNames can narrow get/patch/update/delete to that one Node, but not
// create (the name is not known to the authorizer before the object exists) nor list/watch
// of a collection: those three are granted on all Nodes, and the code never writes any Node
// but its own.
//
// A gateway runs outside the cluster, so it needs a credential that lasts: the ServiceAccount
// comes with a token Secret (type kubernetes.io/service-account-token; the token controller
// fills it in) whose token goes into the gateway's kubeconfig. On EKS an IAM identity via the
// exec plugin works too: bind the ClusterRole to that user or group instead.

export interface RbacOptions {
  /** The site's Node name (cluster.kubernetes.nodeName or vxedge-{site}-{node}). */
  nodeName: string;
  /** Where the ServiceAccount lives; default kube-system (it exists in every cluster). */
  namespace?: string;
  /** The ServiceAccount's name; default the Node's name. */
  serviceAccount?: string;
}

export const RBAC_DEFAULT_NAMESPACE = 'kube-system';

export type KubeObject = Record<string, unknown> & { apiVersion: string; kind: string; metadata: { name: string } & Record<string, unknown> };

/** On every Node: following the cluster (list and watch). */
export const FOLLOW_VERBS = ['list', 'watch'] as const;
/** On Nodes, not limited by name (RBAC cannot): making the site's own. */
export const CREATE_VERBS = ['create'] as const;
/** On the site's own Node only (resourceNames): keeping it as registration does. */
export const OWN_NODE_VERBS = ['get', 'patch', 'update', 'delete'] as const;

/** The objects for `kubectl apply -f -`, in an order that applies cleanly. */
export function rbacManifests(o: RbacOptions): KubeObject[] {
  const namespace = o.namespace ?? RBAC_DEFAULT_NAMESPACE;
  const sa = o.serviceAccount ?? o.nodeName;
  const role = `vxedge:${o.nodeName}`;
  const labels = { 'app.kubernetes.io/name': 'vxedge', 'app.kubernetes.io/component': 'gateway' };
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, namespace, labels } },
    {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'kubernetes.io/service-account-token',
      metadata: { name: `${sa}-token`, namespace, labels, annotations: { 'kubernetes.io/service-account.name': sa } },
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: role, labels },
      rules: [
        { apiGroups: [''], resources: ['nodes'], verbs: [...FOLLOW_VERBS, ...CREATE_VERBS] },
        { apiGroups: [''], resources: ['nodes'], resourceNames: [o.nodeName], verbs: [...OWN_NODE_VERBS] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: role, labels },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
      subjects: [{ kind: 'ServiceAccount', name: sa, namespace }],
    },
  ];
}
