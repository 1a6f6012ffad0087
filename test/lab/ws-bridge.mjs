// A WebSocket front for a lab mosquitto: Debian's mosquitto is built without websockets, so
// the lab test of `mqtt.url: ws://...` puts this in front of the real broker (the broker is
// still what answers; this only carries the MQTT bytes between a WebSocket and TCP).
//
//   node test/lab/ws-bridge.mjs LISTEN_HOST LISTEN_PORT BROKER_HOST BROKER_PORT LIFETIME_S [CERT KEY]
//
// Accepts the "mqtt" subprotocol on any path; prints "listening" once it is; exits after
// LIFETIME_S whatever happens (a lab process is always bounded). With CERT and KEY (PEM files)
// it is a wss:// front: TLS with that certificate, as a reverse proxy on 443 would be.
import { readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { WebSocketServer, createWebSocketStream } from 'ws';

const [host, port, brokerHost, brokerPort, lifetimeS, certFile, keyFile] = process.argv.slice(2);
setTimeout(() => process.exit(0), Number(lifetimeS) * 1000).unref();
const handleProtocols = (p) => (p.has('mqtt') ? 'mqtt' : false);
let wss;
if (certFile) {
  const server = https.createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile) });
  wss = new WebSocketServer({ server, handleProtocols });
  server.listen(Number(port), host, () => process.stdout.write('listening\n'));
} else {
  wss = new WebSocketServer({ host, port: Number(port), handleProtocols });
  wss.on('listening', () => process.stdout.write('listening\n'));
}
wss.on('connection', (ws) => {
  process.stdout.write('connection\n');
  const ws$ = createWebSocketStream(ws);
  const tcp = net.connect(Number(brokerPort), brokerHost);
  const end = () => {
    ws$.destroy();
    tcp.destroy();
  };
  ws$.on('error', end).on('close', end);
  tcp.on('error', end).on('close', end);
  ws$.pipe(tcp).pipe(ws$);
});
