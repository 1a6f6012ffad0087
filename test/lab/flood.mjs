#!/usr/bin/env node
// Sends crafted VXLAN datagrams at the gateway, from whatever namespace it runs in.
//   node flood.mjs --to IP --kinds k1,k2 --count N --gw-mac M --peer-mac M --src IP --dst IP --dport P [--bind IP] [--duration-ms D]
// Every kind sends `count` datagrams; each inner packet (when there is one) is a UDP
// datagram to dst:dport, so a listener there tells what got through. Bounded: at most
// 20 kinds x 2000 datagrams, paced in bursts. With --duration-ms, the kinds are sent
// again and again until D ms (at most 20 000) have passed: a flood that goes on while
// something else happens.
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const { values: o } = parseArgs({
  options: {
    to: { type: 'string' }, port: { type: 'string', default: '8472' }, bind: { type: 'string' },
    kinds: { type: 'string' }, count: { type: 'string', default: '50' },
    'gw-mac': { type: 'string' }, 'peer-mac': { type: 'string' },
    src: { type: 'string' }, dst: { type: 'string' }, dport: { type: 'string', default: '9999' },
    vni: { type: 'string', default: '1' },
    'duration-ms': { type: 'string', default: '0' },
  },
});
const count = Math.min(Number(o.count), 2000);
const until = Date.now() + Math.min(Number(o['duration-ms']), 20_000);
const mac = (s) => Buffer.from(s.split(':').map((h) => parseInt(h, 16)));
const ip = (s) => Buffer.from(s.split('.').map(Number));

function csum(b) {
  let s = 0;
  for (let i = 0; i < b.length; i += 2) s += (b[i] << 8) | (b[i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

function innerUdp(src, dst, payload) {
  const p = Buffer.alloc(28 + payload.length);
  p[0] = 0x45; p.writeUInt16BE(p.length, 2); p[6] = 0x40; p[8] = 64; p[9] = 17;
  ip(src).copy(p, 12); ip(dst).copy(p, 16);
  p.writeUInt16BE(csum(p.subarray(0, 20)), 10);
  p.writeUInt16BE(40000, 20); p.writeUInt16BE(Number(o.dport), 22); p.writeUInt16BE(8 + payload.length, 24);
  payload.copy(p, 28); // UDP checksum 0: "none", valid for IPv4
  return p;
}

function frame({ flags = 0x08, vni = Number(o.vni), dstMac = o['gw-mac'], srcMac = o['peer-mac'], etherType = 0x0800, src = o.src, tag }) {
  const inner = innerUdp(src, o.dst, Buffer.from(tag));
  const f = Buffer.alloc(22 + inner.length);
  f[0] = flags; f[4] = (vni >> 16) & 255; f[5] = (vni >> 8) & 255; f[6] = vni & 255;
  mac(dstMac).copy(f, 8); mac(srcMac).copy(f, 14); f.writeUInt16BE(etherType, 20);
  inner.copy(f, 22);
  return f;
}

const randMac = () => { const m = randomBytes(6); m[0] = (m[0] & 0xfe) | 0x02; return [...m].map((x) => x.toString(16).padStart(2, '0')).join(':'); };

const kinds = {
  good: () => frame({ tag: 'good' }),
  truncated: () => frame({ tag: 'truncated' }).subarray(0, 1 + Math.floor(Math.random() * 41)),
  badFlags: () => frame({ flags: 0x00, tag: 'badFlags' }),
  reservedBits: () => frame({ flags: 0x0c, tag: 'reservedBits' }), // I and VXLAN-GPE's P: no extension flannel uses
  wrongVni: () => frame({ vni: 2, tag: 'wrongVni' }),
  foreignDstMac: () => frame({ dstMac: randMac(), tag: 'foreignDstMac' }),
  foreignSrcMac: () => frame({ srcMac: randMac(), tag: 'foreignSrcMac' }),
  notIPv4: () => frame({ etherType: 0x86dd, tag: 'notIPv4' }),
  oversized: () => Buffer.concat([frame({ tag: 'oversized' }), Buffer.alloc(9400)]),
  random: () => randomBytes(Math.floor(Math.random() * 1400)),
  spoofed: () => frame({ src: '10.244.2.2', tag: 'spoofed' }),
  marker: () => frame({ tag: 'marker' }), // a well-formed frame sent last, to tell the receiver everything before it is in
};

const sock = dgram.createSocket('udp4');
await new Promise((r) => sock.bind({ address: o.bind, port: 0 }, r));
const sent = {};
do {
  for (const k of o.kinds.split(',').slice(0, 20)) {
    if (!kinds[k]) throw new Error(`unknown kind ${k}`);
    sent[k] ??= 0;
    for (let i = 0; i < count; i++) {
      await new Promise((r) => sock.send(kinds[k](), Number(o.port), o.to, r));
      sent[k]++;
      if (i % 50 === 49) await new Promise((r) => setTimeout(r, 5));
    }
  }
} while (Date.now() < until);
sock.close();
console.log(JSON.stringify(sent));
