// A STUN server's answer for tests that play one.
import { ipToInt } from '../../src/util/ipv4.js';

/** A Binding success for the request in `req`, mapping the asker to ip:port (XOR-MAPPED-ADDRESS). */
export function bindingSuccess(req: Buffer, ip: string, port: number): Buffer {
  const b = Buffer.alloc(32);
  b.writeUInt16BE(0x0101, 0);
  b.writeUInt16BE(12, 2);
  req.copy(b, 4, 4, 20); // cookie and transaction id
  b.writeUInt16BE(0x0020, 20);
  b.writeUInt16BE(8, 22);
  b[25] = 1;
  b.writeUInt16BE(port ^ 0x2112, 26);
  b.writeUInt32BE((ipToInt(ip) ^ 0x2112a442) >>> 0, 28);
  return b;
}
