// `vxedge rbac`: the objects, their references to each other, and what the ClusterRole allows,
// checked with the kube-apiserver stand-in's RBAC evaluation (the same rules the Kubernetes
// source is tested with end to end).
import { describe, expect, it } from 'vitest';
import { parseAllDocuments, stringify } from 'yaml';
import { RBAC_DEFAULT_NAMESPACE, rbacManifests } from '../../src/cluster/rbac.js';
import { rbacAllows } from '../support/kube-harness.js';

type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };

describe('rbacManifests', () => {
  const objs = rbacManifests({ nodeName: 'vxedge-lab-edge-1' });
  const byKind = (k: string) => objs.find((o) => o.kind === k) as Record<string, any>;

  it('a ServiceAccount with its token Secret, a ClusterRole and its binding, in that order', () => {
    expect(objs.map((o) => o.kind)).toEqual(['ServiceAccount', 'Secret', 'ClusterRole', 'ClusterRoleBinding']);
    expect(byKind('ServiceAccount').metadata).toMatchObject({ name: 'vxedge-lab-edge-1', namespace: RBAC_DEFAULT_NAMESPACE });
    expect(byKind('Secret')).toMatchObject({
      type: 'kubernetes.io/service-account-token',
      metadata: { namespace: RBAC_DEFAULT_NAMESPACE, annotations: { 'kubernetes.io/service-account.name': 'vxedge-lab-edge-1' } },
    });
  });

  it('the ClusterRole: list/watch/create on nodes, everything else only on our own Node', () => {
    const rules = byKind('ClusterRole').rules as Rule[];
    expect(rules).toEqual([
      { apiGroups: [''], resources: ['nodes'], verbs: ['list', 'watch', 'create'] },
      { apiGroups: [''], resources: ['nodes'], resourceNames: ['vxedge-lab-edge-1'], verbs: ['get', 'patch', 'update', 'delete'] },
    ]);
  });

  it('the binding ties the ClusterRole to the ServiceAccount', () => {
    const b = byKind('ClusterRoleBinding');
    expect(b.roleRef).toEqual({ apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: byKind('ClusterRole').metadata.name });
    expect(b.subjects).toEqual([{ kind: 'ServiceAccount', name: 'vxedge-lab-edge-1', namespace: RBAC_DEFAULT_NAMESPACE }]);
  });

  it('namespace and ServiceAccount name can be chosen', () => {
    const o = rbacManifests({ nodeName: 'plant7-gw', namespace: 'vxedge', serviceAccount: 'gw' });
    expect(o[0].metadata).toMatchObject({ name: 'gw', namespace: 'vxedge' });
    expect((o[3] as Record<string, any>).subjects[0]).toEqual({ kind: 'ServiceAccount', name: 'gw', namespace: 'vxedge' });
    expect((o[2] as Record<string, any>).rules[1].resourceNames).toEqual(['plant7-gw']);
  });

  it('prints as YAML documents that read back the same', () => {
    const text = objs.map((o) => stringify(o)).join('---\n');
    expect(parseAllDocuments(text).map((d) => d.toJS())).toEqual(objs);
  });

  it('allows exactly what the gateway does, on exactly its own Node', () => {
    const rules = byKind('ClusterRole').rules as Rule[];
    const allowed = (verb: string, name: string | null) => rbacAllows(rules, verb, name);
    for (const verb of ['list', 'watch', 'create']) expect(allowed(verb, null)).toBe(true);
    for (const verb of ['get', 'patch', 'update', 'delete']) {
      expect(allowed(verb, 'vxedge-lab-edge-1')).toBe(true);
      expect(allowed(verb, 'ip-172-31-20-11')).toBe(false);
    }
    expect(allowed('deletecollection', null)).toBe(false);
    expect(allowed('get', null)).toBe(false);
  });
});
