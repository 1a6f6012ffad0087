#!/usr/bin/env node
// Counts UDP datagrams per payload tag on bind:port.
//   node udp-sink.mjs BIND PORT MAX_SECONDS
// stderr: "listening" once bound, then "seen TAG" the first time each tag arrives (so a test can
// wait for a marker sent after everything else). stdout: the counts as one JSON line, printed
// when stdin ends (the test says it is done) or after MAX_SECONDS at the latest.
import dgram from 'node:dgram';
const [bind, port, seconds] = process.argv.slice(2);
const counts = {};
const s = dgram.createSocket('udp4');
s.on('message', (m) => {
  const k = m.toString('latin1');
  if (!(k in counts)) console.error(`seen ${k}`);
  counts[k] = (counts[k] ?? 0) + 1;
});
s.bind(Number(port), bind, () => console.error('listening'));
let finished = false;
const finish = () => {
  if (finished) return;
  finished = true;
  console.log(JSON.stringify(counts));
  s.close();
  process.exit(0);
};
process.stdin.on('end', finish);
process.stdin.resume();
setTimeout(finish, Number(seconds) * 1000).unref();
