// A health document with a bit of everything the contract has (two peers, one up and one not
// answered yet, a failing check, drops), for the tests of what is made from documents.
import type { HealthDocument } from '../../src/health/document.js';

export function sampleHealth(over: Partial<HealthDocument> = {}): HealthDocument {
  return {
    site: 'lab', node: 'edge-1', version: '0.1.0', ts: '2026-12-07T12:00:00.000Z', uptimeS: 3600, state: 'degraded',
    tunnel: {
      device: 'flannel.1', mode: 'tun', vni: 1, mtu: 1450, subnet: '10.244.100.0/24', vtepMac: '0e:5c:aa:00:00:01',
      localEndpoint: '192.168.50.10:8472', publicEndpoint: '198.51.100.7:8472',
    },
    peers: [
      { name: 'aws-1', endpoint: '203.0.113.10:8472', subnet: '10.244.1.0/24', state: 'up', rttMs: 1.25, lossPct: 2.5,
        lastSeen: '2026-12-07T11:59:58.000Z', rxPackets: 10, txPackets: 12, rxBytes: 980, txBytes: 3 * 2 ** 40, reason: null },
      { name: 'aws-2', endpoint: '203.0.113.20:8472', subnet: '10.244.2.0/24', state: 'unknown', rttMs: null, lossPct: null,
        lastSeen: null, rxPackets: 0, txPackets: 40, rxBytes: 0, txBytes: 4000, reason: 'not answered yet' },
    ],
    checks: [
      { name: 'ip_forward', ok: true, detail: 'net.ipv4.ip_forward=1' },
      { name: 'public_endpoint', ok: false, detail: 'unknown', fix: 'set underlay.publicIp' },
    ],
    pid: 1234,
    drops: { noPeer: 7, deviceQueue: 3 },
    ...over,
  };
}
