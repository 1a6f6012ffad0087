#!/usr/bin/env node
// Runs in a lab namespace: pings every address given on the command line at once with
// pingUnderlay (dist/), and prints one JSON line: the results in order, and the most raw
// sockets the namespace had open while they were in flight (/proc/net/raw).
import { readFileSync } from 'node:fs';
import { openUnderlaySockets, pingUnderlay } from '../../dist/control/underlay-probe.js';

const rawSockets = () => readFileSync('/proc/net/raw', 'utf8').trim().split('\n').length - 1;
let most = 0;
const watch = setInterval(() => (most = Math.max(most, rawSockets())), 5);
const results = await Promise.all(process.argv.slice(2).map((a) => pingUnderlay(a, undefined, 1500, 3)));
most = Math.max(most, rawSockets());
clearInterval(watch);
console.log(JSON.stringify({ results, mostRawSockets: most, openAfter: openUnderlaySockets(), rawAfter: rawSockets() }));
