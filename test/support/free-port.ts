// A loopback TCP port nobody holds now: the kernel's pick, let go at once, for a server a
// test starts by port (a small race with other processes, which loopback tests accept).
import net from 'node:net';

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}
