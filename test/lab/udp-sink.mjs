#!/usr/bin/env node
// Counts UDP datagrams per payload tag on bind:port for `seconds`, then prints JSON.
import dgram from 'node:dgram';
const [bind, port, seconds] = process.argv.slice(2);
const counts = {};
const s = dgram.createSocket('udp4');
s.on('message', (m) => { const k = m.toString('latin1'); counts[k] = (counts[k] ?? 0) + 1; });
s.bind(Number(port), bind, () => console.error('listening'));
setTimeout(() => { console.log(JSON.stringify(counts)); s.close(); }, Number(seconds) * 1000);
