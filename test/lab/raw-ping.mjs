// Pings ADDRESS over the underlay with the raw-socket addon of the app in APPDIR (an ICMP
// echo from a raw socket), as the gateway's explanation of a silent peer does
// (src/control/underlay-probe.ts). Run by test/lab/gateway-scenarios.ts with the launcher's
// Node (the host's, or the emulated ARM one with the .deb payload's addon). Prints one JSON
// line { arch, addon, reply } and exits 0 on an answer, 1 after 3 s without.
//   node test/lab/raw-ping.mjs APPDIR ADDRESS
import { createRequire } from 'node:module';
import path from 'node:path';

const [appDir, address] = process.argv.slice(2);
const require = createRequire(path.join(path.resolve(appDir), 'package.json'));
const raw = require('raw-socket');
const addon = require.resolve('raw-socket/build/Release/raw.node');
const sock = raw.createSocket({ protocol: raw.Protocol.ICMP });
const ident = process.pid & 0xffff;
const echo = Buffer.alloc(16);
echo.writeUInt8(8, 0); // echo request
echo.writeUInt16BE(ident, 4);
echo.writeUInt16BE(1, 6);
raw.writeChecksum(echo, 2, raw.createChecksum(echo));
const timer = setTimeout(() => {
  console.log(JSON.stringify({ arch: process.arch, addon, reply: null }));
  process.exit(1);
}, 3_000);
sock.on('message', (buf, source) => {
  const ihl = (buf[0] & 0x0f) * 4; // a raw IPv4 socket delivers the IP header too
  if (source !== address || buf[ihl] !== 0 || buf.readUInt16BE(ihl + 4) !== ident) return;
  clearTimeout(timer);
  console.log(JSON.stringify({ arch: process.arch, addon, reply: source }));
  sock.close();
});
sock.send(echo, 0, echo.length, address, (err) => {
  if (err) {
    console.log(JSON.stringify({ arch: process.arch, addon, reply: null, error: err.message }));
    process.exit(1);
  }
});
