// A Kubernetes Node -> a peer or a reason: flannel's rules (kube.go nodeToLease, the VXLAN
// backend's lease decoding), our endpoint rule (public-ip when routable, else ExternalIP),
// and the rules that keep the site safe. Table tests for each rule, the kubectl fixture, and
// fast-check for arbitrary and malformed Node JSON (never a throw, never a bad peer).
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ANNOTATIONS, annotationsUnder, dualStackProblem, nodeManifest, nodeVerdict, nodeVtepMac, viewFromNodes, type FlannelContext } from '../../src/cluster/flannel-node.js';
import { peersFromNodes } from '../../src/cli/kube.js';
import { cidrContains, cidrOverlaps, ipToInt, isGloballyRoutable, isIPv4, parseCidr } from '../../src/util/ipv4.js';
import { parseMac } from '../../src/util/mac.js';
import { flannelNode } from '../support/kube-harness.js';

const FIXTURE = readFileSync(path.join(import.meta.dirname, '..', 'fixtures', 'kubectl', 'nodes-eks-flannel.json'), 'utf8');
const CTX: FlannelContext = { vni: 1, network: parseCidr('10.244.0.0/16'), selfNames: ['vxedge-lab-edge-1'], selfSubnet: parseCidr('10.244.100.0/24') };

type Node = ReturnType<typeof flannelNode> & { metadata: { annotations: Record<string, string> }; spec: Record<string, unknown>; status: Record<string, unknown> };
const node = (over: (n: Node) => void = () => {}, spec: Parameters<typeof flannelNode>[1] = { subnet: '10.244.1.0/24', publicIp: '203.0.113.10' }) => {
  const n = structuredClone(flannelNode('aws-1', spec)) as Node;
  over(n);
  return n;
};
const setData = (data: unknown) => (n: Node) => {
  n.metadata.annotations[ANNOTATIONS.backendData] = typeof data === 'string' ? data : JSON.stringify(data);
};

describe('isGloballyRoutable', () => {
  const table: [string, boolean][] = [
    ['8.8.8.8', true],
    ['52.16.1.10', true],
    ['10.0.0.1', false],
    ['172.16.0.1', false],
    ['172.31.255.255', false],
    ['172.32.0.1', true],
    ['192.168.1.1', false],
    ['100.64.0.1', false],
    ['100.127.255.255', false],
    ['100.128.0.1', true],
    ['169.254.169.254', false],
    ['127.0.0.1', false],
    ['0.1.2.3', false],
    ['192.0.0.8', false],
    ['198.18.0.1', false],
    ['198.19.255.255', false],
    ['198.20.0.1', true],
    ['224.0.0.5', false],
    ['240.0.0.1', false],
    ['255.255.255.255', false],
    // RFC 5737 documentation ranges: our lab's "internet", routable on purpose.
    ['192.0.2.10', true],
    ['198.51.100.2', true],
    ['203.0.113.10', true],
  ];
  for (const [ip, want] of table) it(`${ip} -> ${want}`, () => expect(isGloballyRoutable(ipToInt(ip))).toBe(want));
});

describe('nodeVerdict: flannel rules', () => {
  it('a stock EKS flannel node is a peer at its public-ip', () => {
    const v = nodeVerdict(node(), CTX);
    expect(v.peer).toEqual({ name: 'aws-1', publicIp: '203.0.113.10', subnet: parseCidr('10.244.1.0/24'), vtepMac: '0a:bb:00:00:00:01', via: 'public-ip' });
  });

  const skips: [string, (n: Node) => void, string][] = [
    ['no kube-subnet-manager annotation', (n) => delete n.metadata.annotations[ANNOTATIONS.kubeSubnetManager], 'kube-subnet-manager is not "true"'],
    ['kube-subnet-manager "True"', (n) => (n.metadata.annotations[ANNOTATIONS.kubeSubnetManager] = 'True'), 'kube-subnet-manager is not "true"'],
    ['no annotations at all', (n) => delete (n.metadata as { annotations?: unknown }).annotations, 'kube-subnet-manager'],
    ['annotations not an object', (n) => ((n.metadata as { annotations: unknown }).annotations = 'x'), 'kube-subnet-manager'],
    ['a flanneld with --kube-annotation-prefix=example.com (its annotations under example.com/)', (n) => {
      const a = n.metadata.annotations;
      for (const k of Object.keys(a).filter((k) => k.startsWith('flannel.alpha.coreos.com/'))) {
        a[k.replace('flannel.alpha.coreos.com/', 'example.com/')] = a[k]!;
        delete a[k];
      }
    }, 'its flannel annotations are under example.com/ (flanneld --kube-annotation-prefix), not flannel.alpha.coreos.com/, the prefix vxedge reads: ' +
      'if the site belongs to that flannel network, set cluster.kubernetes.annotationPrefix (vxedge peers: --kube-annotation-prefix) to example.com/'],
    ['another prefix\'s kube-subnet-manager that is not "true"', (n) => {
      delete n.metadata.annotations[ANNOTATIONS.kubeSubnetManager];
      n.metadata.annotations['example.com/kube-subnet-manager'] = 'false';
    }, 'annotation flannel.alpha.coreos.com/kube-subnet-manager is not "true" (flannel ignores it too)'],
    ['backend-type wireguard', (n) => (n.metadata.annotations[ANNOTATIONS.backendType] = 'wireguard'), 'backend-type is "wireguard", not "vxlan"'],
    ['backend-type missing', (n) => delete n.metadata.annotations[ANNOTATIONS.backendType], 'backend-type is null'],
    ['public-ip missing', (n) => delete n.metadata.annotations[ANNOTATIONS.publicIp], 'public-ip null is not an IPv4 address'],
    ['public-ip IPv6', (n) => (n.metadata.annotations[ANNOTATIONS.publicIp] = '2001:db8::1'), 'is not an IPv4 address'],
    ['public-ip with a port', (n) => (n.metadata.annotations[ANNOTATIONS.publicIp] = '203.0.113.10:8472'), 'is not an IPv4 address'],
    ['backend-data not JSON (flannel#1122)', setData('{VtepMAC:aa:bb:cc:dd:ee}'), 'backend-data is not valid JSON'],
    ['backend-data an array', setData([1]), 'is not a JSON object'],
    ['VtepMAC missing', setData({ VNI: 1 }), 'VtepMAC null is not a unicast MAC'],
    ['VtepMAC a number', setData({ VtepMAC: 12 }), 'VtepMAC 12 is not'],
    ['VtepMAC short', setData({ VtepMAC: '0a:bb:00:00:01' }), 'is not a unicast MAC'],
    ['VtepMAC multicast', setData({ VtepMAC: '01:00:5e:00:00:01' }), 'is not a unicast MAC'],
    ['VNI 2 (ours is 1)', setData({ VNI: 2, VtepMAC: '0a:bb:00:00:00:01' }), 'VNI 2 is not ours (vxlan.vni 1)'],
    ['VNI "1" as a string', setData({ VNI: '1', VtepMAC: '0a:bb:00:00:00:01' }), 'VNI "1" is not ours'],
    ['no podCIDR', (n) => (n.spec = {}), 'no IPv4 podCIDR'],
    ['IPv6 podCIDR only', (n) => (n.spec = { podCIDRs: ['fd00:10:244:1::/64'] }), 'no IPv4 podCIDR'],
    ['podCIDR garbage', (n) => (n.spec = { podCIDR: '10.244.1.0' }), 'no IPv4 podCIDR'],
    ['podCIDR outside the network', (n) => (n.spec = { podCIDR: '10.245.1.0/24' }), 'outside the pod network 10.244.0.0/16 (overlay.network)'],
    ['podCIDR = the site subnet', (n) => (n.spec = { podCIDR: '10.244.100.0/24' }), 'overlaps this site\'s subnet 10.244.100.0/24'],
    ['podCIDR containing the site subnet', (n) => (n.spec = { podCIDR: '10.244.0.0/17' }), 'overlaps this site\'s subnet'],
    ['podCIDR inside the site subnet', (n) => (n.spec = { podCIDR: '10.244.100.128/25' }), 'overlaps this site\'s subnet'],
    ['the site\'s own Node', (n) => (n.metadata.name = 'vxedge-lab-edge-1'), 'this gateway itself'],
  ];
  for (const [what, edit, why] of skips) {
    it(`skips: ${what}`, () => {
      const v = nodeVerdict(node(edit), CTX);
      expect(v.peer).toBeUndefined();
      expect(v.skip?.why).toContain(why);
    });
  }

  it('without a context, VNI, network and the site are not checked', () => {
    expect(nodeVerdict(node(setData({ VNI: 7, VtepMAC: '0a:bb:00:00:00:01' }))).peer).toBeDefined();
    expect(nodeVerdict(node((n) => (n.spec = { podCIDR: '10.245.1.0/24' }))).peer).toBeDefined();
    expect(nodeVerdict(node((n) => (n.spec = { podCIDR: '10.244.100.0/24' }))).peer).toBeDefined();
  });

  it('reads backend-data as Go does: keys case-insensitively, VNI absent or null is ours, a dotted MAC', () => {
    expect(nodeVerdict(node(setData({ vtepmac: '0A:BB:00:00:00:02', vni: 1 })), CTX).peer?.vtepMac).toBe('0a:bb:00:00:00:02');
    expect(nodeVerdict(node(setData({ VtepMAC: '0a:bb:00:00:00:03' })), CTX).peer).toBeDefined();
    expect(nodeVerdict(node(setData({ VtepMAC: '0a:bb:00:00:00:03', VNI: null })), CTX).peer).toBeDefined();
    expect(nodeVerdict(node(setData({ VtepMAC: '0abb.0000.0004', VNI: 1 })), CTX).peer?.vtepMac).toBe('0a:bb:00:00:00:04');
    expect(nodeVerdict(node(setData({ VtepMAC: '0a-bb-00-00-00-05' })), CTX).peer?.vtepMac).toBe('0a:bb:00:00:00:05');
    // An exact key wins over a case-insensitive one.
    expect(nodeVerdict(node(setData({ vtepmac: 'zz', VtepMAC: '0a:bb:00:00:00:06' })), CTX).peer?.vtepMac).toBe('0a:bb:00:00:00:06');
  });

  it('takes the first IPv4 podCIDR of podCIDRs, podCIDR only when podCIDRs is empty, and masks host bits as Go does', () => {
    expect(nodeVerdict(node((n) => (n.spec = { podCIDRs: ['fd00::/64', '10.244.7.0/24'], podCIDR: '10.244.8.0/24' })), CTX).peer?.subnet.text).toBe('10.244.7.0/24');
    expect(nodeVerdict(node((n) => (n.spec = { podCIDRs: [], podCIDR: '10.244.8.0/24' })), CTX).peer?.subnet.text).toBe('10.244.8.0/24');
    expect(nodeVerdict(node((n) => (n.spec = { podCIDR: '10.244.9.5/24' })), CTX).peer?.subnet.text).toBe('10.244.9.0/24');
  });
});

describe('another --kube-annotation-prefix (cluster.kubernetes.annotationPrefix)', () => {
  const NET = annotationsUnder('example.com/net');
  const ctx: FlannelContext = { ...CTX, annotations: NET };
  const under = (prefix: string, name = 'aws-1', subnet = '10.244.1.0/24') => flannelNode(name, { subnet, publicIp: '203.0.113.10', prefix });

  it('names every key as flannel completes the prefix', () => {
    expect(NET.prefix).toBe('example.com/net-');
    expect(NET.all).toEqual([
      'example.com/net-kube-subnet-manager', 'example.com/net-backend-type', 'example.com/net-backend-data', 'example.com/net-public-ip',
      'example.com/net-public-ip-overwrite', 'example.com/net-public-ipv6', 'example.com/net-backend-v6-data',
    ]);
    expect(annotationsUnder('example.com').backendType).toBe('example.com/backend-type');
    expect(annotationsUnder()).toEqual(ANNOTATIONS);
    expect(() => annotationsUnder('example')).toThrow(/not a lower-case domain name with a dot/);
  });

  it('a node under that prefix is a peer; one under the default prefix is left out, naming it', () => {
    expect(nodeVerdict(under('example.com/net-'), ctx).peer).toMatchObject({ name: 'aws-1', publicIp: '203.0.113.10', vtepMac: '0a:bb:00:00:00:01' });
    const v = nodeVerdict(under('flannel.alpha.coreos.com/'), ctx);
    expect(v.skip?.why).toBe(
      'its flannel annotations are under flannel.alpha.coreos.com/ (flanneld --kube-annotation-prefix), not example.com/net-, the prefix vxedge reads: ' +
        'if the site belongs to that flannel network, set cluster.kubernetes.annotationPrefix (vxedge peers: --kube-annotation-prefix) to flannel.alpha.coreos.com/',
    );
    expect(v.kept).toBe(true);
    // The default context still reads the default prefix only.
    expect(nodeVerdict(under('example.com/net-'), CTX).skip?.why).toMatch(/^its flannel annotations are under example\.com\/net- /);
  });

  it('a node in both flannel networks is a peer of each, by its own annotations', () => {
    const both = under('example.com/net-', 'aws-2', '10.244.2.0/24') as { metadata: { annotations: Record<string, string> } };
    Object.assign(both.metadata.annotations, (under('flannel.alpha.coreos.com/', 'aws-2', '10.244.2.0/24') as typeof both).metadata.annotations);
    both.metadata.annotations['flannel.alpha.coreos.com/public-ip'] = '203.0.113.99';
    expect(nodeVerdict(both, ctx).peer?.publicIp).toBe('203.0.113.10');
    expect(nodeVerdict(both, CTX).peer?.publicIp).toBe('203.0.113.99');
  });

  it("the site's Node carries them; the VTEP MAC, the endpoint's fix and the dual-stack fix are read and named under them", () => {
    const m = nodeManifest({ site: 'lab', node: 'edge-1', subnet: '10.244.100.0/24', vni: 1, vtepMac: '0e:5c:aa:00:00:64', publicIp: '198.51.100.2', annotations: NET }) as {
      metadata: { annotations: Record<string, string> };
    };
    expect(m.metadata.annotations).toEqual({
      'example.com/net-kube-subnet-manager': 'true', 'example.com/net-backend-type': 'vxlan',
      'example.com/net-backend-data': '{"VNI":1,"VtepMAC":"0e:5c:aa:00:00:64"}', 'example.com/net-public-ip': '198.51.100.2',
    });
    expect(nodeVtepMac(m, NET)).toBe('0e:5c:aa:00:00:64');
    expect(nodeVtepMac(m)).toBeNull();
    const private_ = flannelNode('aws-3', { subnet: '10.244.3.0/24', publicIp: '172.31.0.3', prefix: 'example.com/net-' });
    expect(nodeVerdict(private_, ctx).skip?.why).toMatch(/the annotation example\.com\/net-public-ip-overwrite, to the node's Elastic IP/);
    const dual = under('example.com/net-', 'aws-4', '10.244.4.0/24') as { metadata: { annotations: Record<string, string> } };
    dual.metadata.annotations['example.com/net-public-ipv6'] = '2001:db8::4';
    const view = viewFromNodes([dual, under('flannel.alpha.coreos.com/', 'aws-5', '10.244.5.0/24')], ctx, 8472);
    expect(view.dualStack).toEqual(['aws-4']);
    expect(dualStackProblem(view, NET)!.fix).toMatch(/kubectl annotate nodes --all example\.com\/net-public-ipv6- example\.com\/net-backend-v6-data-$/);
    expect(viewFromNodes([dual], CTX, 8472).dualStack).toBeUndefined();
  });

  it('vxedge peers reads the prefix it is given', () => {
    const list = JSON.stringify({ kind: 'List', items: [under('example.com/net-')] });
    expect(peersFromNodes(list, { annotationPrefix: 'example.com/net' }).peers).toHaveLength(1);
    expect(peersFromNodes(list).peers).toHaveLength(0);
  });
});

describe('nodeVtepMac', () => {
  const withData = (data: string | undefined) => ({ metadata: { annotations: data === undefined ? {} : { [ANNOTATIONS.backendData]: data } } });
  it('reads backend-data as flannel does: Go\'s case-insensitive key, the MAC normalised; null for what flannel could not use', () => {
    expect(nodeVtepMac(withData('{"VNI":1,"VtepMAC":"0E:5C:AA:00:00:64"}'))).toBe('0e:5c:aa:00:00:64');
    expect(nodeVtepMac(withData('{"vtepmac":"0e:5c:aa:00:00:64"}'))).toBe('0e:5c:aa:00:00:64');
    for (const bad of ['not json', '{"VtepMAC":"01:00:5e:00:00:01"}', '[]', undefined]) expect(nodeVtepMac(withData(bad)), String(bad)).toBeNull();
    expect(nodeVtepMac(null)).toBeNull();
  });
});

describe('nodeVerdict: the endpoint', () => {
  it('a private public-ip with a public ExternalIP: the ExternalIP', () => {
    const v = nodeVerdict(node(undefined, { subnet: '10.244.2.0/24', publicIp: '172.31.21.12', externalIp: '203.0.113.20' }), CTX);
    expect(v.peer).toMatchObject({ publicIp: '203.0.113.20', via: 'ExternalIP' });
  });

  it('a routable public-ip wins over the ExternalIP (flannel --public-ip was set)', () => {
    const v = nodeVerdict(node(undefined, { subnet: '10.244.2.0/24', publicIp: '203.0.113.21', externalIp: '203.0.113.20' }), CTX);
    expect(v.peer).toMatchObject({ publicIp: '203.0.113.21', via: 'public-ip' });
  });

  for (const [what, external] of [['no ExternalIP', undefined], ['a private ExternalIP', '10.1.2.3'], ['a CGNAT ExternalIP', '100.64.1.1']] as const) {
    it(`a private public-ip with ${what}: skipped, naming the fix`, () => {
      const v = nodeVerdict(node(undefined, { subnet: '10.244.2.0/24', publicIp: '172.31.21.12', externalIp: external }), CTX);
      expect(v.skip?.why).toContain('public-ip 172.31.21.12 is a private address');
      expect(v.skip?.why).toContain('--public-ip');
      expect(v.skip?.why).toContain('public-ip-overwrite');
      expect(v.skip?.why).toContain('give the instance a public IP');
    });
  }

  it('ignores malformed status.addresses', () => {
    const v = nodeVerdict(node((n) => (n.status = { addresses: [null, 5, { type: 'ExternalIP' }, { type: 'ExternalIP', address: 'x' }, { type: 'ExternalIP', address: '52.1.1.1' }] }), { subnet: '10.244.2.0/24', publicIp: '10.0.0.5' }), CTX);
    expect(v.peer?.publicIp).toBe('52.1.1.1');
  });
});

describe('the site\'s own Node', () => {
  it('vxedge manifest\'s object is exactly what another gateway would take as a peer', () => {
    const m = nodeManifest({ site: 'lab', node: 'edge-1', subnet: '10.244.100.0/24', vni: 1, vtepMac: '0e:5c:aa:00:00:64', publicIp: '198.51.100.2' });
    expect(nodeVerdict(m, { vni: 1, network: parseCidr('10.244.0.0/16') }).peer).toEqual({
      name: 'vxedge-lab-edge-1', publicIp: '198.51.100.2', subnet: parseCidr('10.244.100.0/24'), vtepMac: '0e:5c:aa:00:00:64', via: 'public-ip',
    });
    expect(nodeVerdict(m, CTX).skip?.why).toBe('this gateway itself');
  });

  it('cluster.kubernetes.nodeName names the Node', () => {
    const m = nodeManifest({ site: 'lab', name: 'plant7-gw', subnet: '10.244.100.0/24', vni: 1, vtepMac: '0e:5c:aa:00:00:64', publicIp: '198.51.100.2' }) as { metadata: { name: string; labels: object } };
    expect(m.metadata.name).toBe('plant7-gw');
    expect(m.metadata.labels).toEqual({ 'vxedge.io/site': 'lab', 'vxedge.io/gateway': 'true', 'node.kubernetes.io/exclude-from-external-load-balancers': 'true' });
    // A providerID no cloud provider owns: its node lifecycle controller cannot find the Node gone.
    expect((m as unknown as { spec: { providerID: string } }).spec.providerID).toBe('vxedge://plant7-gw');
  });
});

describe('viewFromNodes and peersFromNodes on the kubectl fixture', () => {
  it('judges every node; peers carry the port, both lists in name order', () => {
    const items = JSON.parse(FIXTURE).items as unknown[];
    const v = viewFromNodes(items, CTX, 8472);
    expect(v.nodes).toBe(6);
    expect(v.peers.map((p) => [p.name, p.publicIp, p.port])).toEqual([
      ['ip-172-31-20-11.eu-west-1.compute.internal', '203.0.113.10', 8472],
      ['ip-172-31-21-12.eu-west-1.compute.internal', '203.0.113.20', 8472],
    ]);
    expect(v.skipped.map((s) => s.name)).toEqual([
      'f5-bigip-vxlan',
      'ip-172-31-22-13.eu-west-1.compute.internal',
      'ip-172-31-23-14.eu-west-1.compute.internal',
      'vxedge-lab-edge-1',
    ]);
  });

  it('peersFromNodes: the ExternalIP rule, and the site checks when given', () => {
    const doc = JSON.parse(FIXTURE);
    doc.items[0].metadata.annotations[ANNOTATIONS.publicIp] = '172.31.20.11'; // flannel without --public-ip
    doc.items[1].metadata.annotations[ANNOTATIONS.publicIp] = '172.31.21.12'; // and no ExternalIP
    const r = peersFromNodes(JSON.stringify(doc), { names: ['vxedge-lab-edge-1'], subnet: '10.244.100.0/24', network: '10.244.0.0/16', vni: 1 });
    expect(r.peers).toEqual([{ name: 'ip-172-31-20-11.eu-west-1.compute.internal', publicIp: '203.0.113.10', subnet: '10.244.1.0/24', vtepMac: 'e6:7c:02:8e:e8:7e' }]);
    expect(r.skipped.find((s) => s.name.startsWith('ip-172-31-21-12'))?.why).toContain('private address');
  });

  it('peersFromNodes: a single Node, and unreadable input', () => {
    const one = JSON.parse(FIXTURE).items[0];
    expect(peersFromNodes(JSON.stringify(one)).peers).toHaveLength(1);
    expect(() => peersFromNodes('not json')).toThrow(/not JSON/);
    expect(() => peersFromNodes('{"kind":"Pod"}')).toThrow(/no "items" list/);
    expect(() => peersFromNodes('null')).toThrow(/no "items" list/);
    // kubectl that failed pipes nothing: "Unexpected end of JSON input" said nothing of that.
    expect(() => peersFromNodes(' \n')).toThrow('the input is empty; expected the output of `kubectl get nodes -o json` (did kubectl fail?)');
    // A BOM, as the config loader takes it.
    expect(peersFromNodes('\uFEFF' + JSON.stringify(one)).peers).toHaveLength(1);
  });
});

describe('dual-stack flannel nodes (they skip the site\'s IPv4-only Node)', () => {
  /** A node as flanneld with EnableIPv6 writes it: both IPv6 annotations and a second podCIDR. */
  const dual = (name: string, over: (n: Node) => void = () => {}) => node((n) => {
    n.metadata.name = name;
    n.metadata.annotations[ANNOTATIONS.publicIpv6] = '2001:db8::10';
    n.metadata.annotations[ANNOTATIONS.backendV6Data] = '{"VNI":1,"VtepMAC":"0a:bb:00:00:00:61"}';
    n.spec.podCIDRs = ['10.244.1.0/24', 'fd00:10:244:1::/64'];
    over(n);
  });

  it('are named in the view, in name order, and still peers: the site reaches their pods', () => {
    const v = viewFromNodes([dual('aws-b'), node(), dual('aws-a', (n) => (n.spec.podCIDRs = ['10.244.2.0/24', 'fd00:10:244:2::/64']))], CTX, 8472);
    expect(v.dualStack).toEqual(['aws-a', 'aws-b']);
    expect(v.peers.map((p) => p.name).sort()).toEqual(['aws-1', 'aws-a', 'aws-b']);
  });

  it('either IPv6 annotation counts; not the site itself, nor a Node that is no flannel VXLAN lease, nor an empty value', () => {
    const only = (key: string) => dual('x', (n) => delete n.metadata.annotations[key]);
    expect(viewFromNodes([only(ANNOTATIONS.publicIpv6)], CTX, 8472).dualStack).toEqual(['x']);
    expect(viewFromNodes([only(ANNOTATIONS.backendV6Data)], CTX, 8472).dualStack).toEqual(['x']);
    const notCounted = [
      dual('vxedge-lab-edge-1'),
      dual('lb', (n) => delete n.metadata.annotations[ANNOTATIONS.kubeSubnetManager]),
      dual('gw', (n) => (n.metadata.annotations[ANNOTATIONS.backendType] = 'host-gw')),
      dual('empty', (n) => {
        n.metadata.annotations[ANNOTATIONS.publicIpv6] = '';
        n.metadata.annotations[ANNOTATIONS.backendV6Data] = '';
      }),
    ];
    const v = viewFromNodes(notCounted, CTX, 8472);
    expect(v.nodes).toBe(4);
    expect(v).not.toHaveProperty('dualStack');
  });

  it('the problem names the nodes (three, then a count) and the fix; none without them', () => {
    expect(dualStackProblem(null)).toBeNull();
    expect(dualStackProblem({})).toBeNull();
    expect(dualStackProblem({ dualStack: [] })).toBeNull();
    const one = dualStackProblem({ dualStack: ['aws-a'] })!;
    expect(one.detail).toBe(
      '1 flannel node(s) run dual-stack (aws-a: flannel.alpha.coreos.com/public-ipv6 set) and route nothing to this site: ' +
        'flanneld with EnableIPv6 skips a Node without an IPv6 public IP and podCIDR, and the site announces IPv4 only',
    );
    expect(one.fix).toBe(
      'vxedge carries IPv4 only: set "EnableIPv6": false in flannel\'s net-conf.json (ConfigMap kube-flannel-cfg) and restart flanneld, ' +
        'then remove the IPv6 annotations it leaves behind: kubectl annotate nodes --all flannel.alpha.coreos.com/public-ipv6- flannel.alpha.coreos.com/backend-v6-data-',
    );
    expect(dualStackProblem({ dualStack: ['a', 'b', 'c', 'd', 'e'] })!.detail).toMatch(/^5 flannel node\(s\) run dual-stack \(a, b, c and 2 more: /);
  });

  it('`vxedge peers` hands the problem on (stderr); none for a stock IPv4 cluster', () => {
    const r = peersFromNodes(JSON.stringify({ items: [dual('aws-a'), node()] }));
    expect(r.peers).toHaveLength(2);
    expect(r.dualStack).toEqual(dualStackProblem({ dualStack: ['aws-a'] }));
    expect(peersFromNodes(FIXTURE).dualStack).toBeNull();
  });
});

describe('properties', () => {
  const checkPeer = (v: ReturnType<typeof nodeVerdict>) => {
    expect(Boolean(v.peer) !== Boolean(v.skip)).toBe(true);
    if (v.skip) {
      expect(typeof v.skip.name).toBe('string');
      expect(v.skip.why.length).toBeGreaterThan(0);
      return;
    }
    const p = v.peer!;
    expect(isIPv4(p.publicIp) && isGloballyRoutable(ipToInt(p.publicIp))).toBe(true);
    expect(cidrContains(CTX.network!, p.subnet)).toBe(true);
    expect(cidrOverlaps(CTX.selfSubnet!, p.subnet)).toBe(false);
    expect(parseMac(p.vtepMac)).toBe(p.vtepMac);
    expect(CTX.selfNames).not.toContain(p.name);
  };

  it('arbitrary JSON values never throw', () => {
    fc.assert(fc.property(fc.jsonValue(), (j) => checkPeer(nodeVerdict(j, CTX))), { numRuns: 500 });
    fc.assert(fc.property(fc.anything(), (j) => checkPeer(nodeVerdict(j, CTX))), { numRuns: 300 });
  });

  it('a valid Node with any field replaced by junk never throws and never yields a bad peer', () => {
    const junk = fc.oneof(fc.jsonValue(), fc.string(), fc.constantFrom('10.244.1.0/24', '10.244.100.0/24', '172.31.0.1', '203.0.113.9', '{"VtepMAC":"0a:bb:00:00:00:09"}', 'true', 'vxlan', '0a:bb:00:00:00:09', '__proto__'));
    const paths = fc.constantFrom(
      ['metadata', 'name'], ['metadata', 'annotations'], ['metadata', 'annotations', ANNOTATIONS.backendData], ['metadata', 'annotations', ANNOTATIONS.publicIp],
      ['metadata', 'annotations', ANNOTATIONS.backendType], ['metadata', 'annotations', ANNOTATIONS.kubeSubnetManager], ['spec'], ['spec', 'podCIDR'], ['spec', 'podCIDRs'],
      ['status'], ['status', 'addresses'], ['metadata'],
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(paths, junk), { maxLength: 4 }), fc.boolean(), (edits, privateIp) => {
        const n = node(undefined, { subnet: '10.244.1.0/24', publicIp: privateIp ? '172.31.0.1' : '203.0.113.10', externalIp: '203.0.113.11' }) as Record<string, unknown>;
        for (const [p, value] of edits) {
          let o: Record<string, unknown> = n;
          for (const k of p.slice(0, -1)) {
            if (typeof o[k] !== 'object' || o[k] === null) o[k] = {};
            o = o[k] as Record<string, unknown>;
          }
          o[p[p.length - 1]] = value;
        }
        checkPeer(nodeVerdict(n, CTX));
      }),
      { numRuns: 1000 },
    );
  });

  it('peersFromNodes never throws on a list of anything', () => {
    fc.assert(fc.property(fc.array(fc.jsonValue()), (items) => {
      const r = peersFromNodes(JSON.stringify({ kind: 'List', items }));
      expect(r.peers.length + r.skipped.length).toBe(items.length);
    }), { numRuns: 300 });
  });
});
