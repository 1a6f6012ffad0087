// PCP (RFC 6887): MAP and ANNOUNCE against the RFC's layouts, byte for byte (the answers are
// what miniupnpd 2.3.1 sent in the lab), the epoch rule of §8.5, the retransmission schedule
// of §8.1.1, and random input that must never make the decoder throw.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  PCP_RESULT,
  decodePcpResponse,
  encodePcpAnnounceRequest,
  encodePcpMapRequest,
  pcpEpochPlausible,
  pcpResultName,
  pcpRetransmitWaits,
} from '../../src/nat/portmap/pcp.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const NONCE = hex('000102030405060708090a0b');

describe('PCP codec: the RFC 6887 layouts', () => {
  it('§7.1 + §11.1 MAP request: header, client address as ::ffff:a.b.c.d, nonce, protocol, ports, suggested address', () => {
    const b = encodePcpMapRequest({ clientIp: '192.0.2.10', lifetimeS: 120, nonce: NONCE, internalPort: 8472, suggestedExternalPort: 8472 });
    expect(b.toString('hex')).toBe(
      hex(`
        02 01 0000  00000078
        00000000 00000000 0000ffff c000020a
        000102030405060708090a0b
        11 000000   2118 2118
        00000000 00000000 0000ffff 00000000`).toString('hex'),
    );
    const renew = encodePcpMapRequest({ clientIp: '192.0.2.10', lifetimeS: 0, nonce: NONCE, internalPort: 8472, suggestedExternalPort: 8473, suggestedExternalIp: '11.22.33.7' });
    expect(renew.subarray(42).toString('hex')).toBe('2119' + '00000000000000000000ffff0b162107');
    expect(() => encodePcpMapRequest({ clientIp: '192.0.2.10', lifetimeS: 1, nonce: NONCE.subarray(1), internalPort: 1, suggestedExternalPort: 1 })).toThrow(RangeError);
  });

  it('§14.1 ANNOUNCE request: the 24-byte header, lifetime 0', () => {
    expect(encodePcpAnnounceRequest('192.0.2.10').toString('hex')).toBe('0200000000000000' + '00000000000000000000ffffc000020a');
  });

  it('MAP success (miniupnpd): lifetime 120, epoch 42, our nonce, 8472 → 11.22.33.7:8472', () => {
    const r = decodePcpResponse(hex('02810000 00000078 0000002a 000000000000000000000000 000102030405060708090a0b 11000000 21182118 00000000000000000000ffff0b162107'));
    expect(r).toEqual({
      opcode: 1, resultCode: 0, lifetimeS: 120, epochS: 42,
      map: { nonce: NONCE, protocol: 17, internalPort: 8472, externalPort: 8472, externalIp: '11.22.33.7' },
    });
  });

  it('MAP error (miniupnpd, deleting a mapping it does not have): NO_RESOURCES with a 30 s error lifetime', () => {
    const r = decodePcpResponse(hex('02810008 0000001e 0000002d 000000000000000000000000 000102030405060708090a0b 11000000 21182118 00000000000000000000ffff0b162107'))!;
    expect([r.resultCode, pcpResultName(r.resultCode), r.lifetimeS, r.epochS]).toEqual([8, 'NO_RESOURCES', 30, 45]);
  });

  it('ANNOUNCE answer (miniupnpd): epoch 41', () => {
    expect(decodePcpResponse(hex('02800000 00000000 00000029 000000000000000000000000'))).toEqual({ opcode: 0, resultCode: 0, lifetimeS: 0, epochS: 41 });
  });

  it('an error may be the bare header; a success may not', () => {
    expect(decodePcpResponse(hex('02810001 00000000 00000007 000000000000000000000000'))).toMatchObject({ opcode: 1, resultCode: 1 });
    expect(decodePcpResponse(hex('02810000 00000078 00000007 000000000000000000000000'))).toBeNull();
  });

  it('an external address that is not IPv4-mapped is reported as null', () => {
    const b = hex('02810000 00000078 0000002a 000000000000000000000000 000102030405060708090a0b 11000000 21182118 20010db8000000000000000000000001');
    expect(decodePcpResponse(b)!.map!.externalIp).toBeNull();
  });

  it('rejects what is not a PCP version 2 response (§8.3)', () => {
    const ok = hex('02800000 00000000 00000029 000000000000000000000000');
    const variants: [string, Buffer][] = [
      ['request (R bit clear)', Buffer.concat([hex('0200'), ok.subarray(2)])],
      ['version 1', Buffer.concat([hex('01'), ok.subarray(1)])],
      ['NAT-PMP', hex('00800000000001920b162107')],
      ['not a multiple of 4', Buffer.concat([ok, hex('00')])],
      ['shorter than the header', ok.subarray(0, 20)],
      ['over 1100 bytes', Buffer.concat([ok, Buffer.alloc(1080)])],
    ];
    for (const [why, b] of variants) expect(decodePcpResponse(b), why).toBeNull();
    expect(decodePcpResponse(Buffer.concat([ok, Buffer.alloc(1076)]))).not.toBeNull(); // exactly 1100
  });

  it('names every result code of §7.4', () => {
    expect(Object.keys(PCP_RESULT).map(Number)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    expect(pcpResultName(11)).toBe('CANNOT_PROVIDE_EXTERNAL');
    expect(pcpResultName(200)).toBe('UNKNOWN_RESULT_200');
  });
});

describe('PCP codec: properties', () => {
  it('decode(arbitrary bytes) never throws, and what it accepts obeys §7 and §8.3', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 1200 }), fc.boolean(), (bytes, shapeIt) => {
        const b = Buffer.from(bytes);
        if (shapeIt && b.length >= 2) {
          b[0] = 2; // steer half the runs past the first checks
          b[1] |= 0x80;
        }
        const r = decodePcpResponse(b.subarray(0, shapeIt ? b.length & ~3 : b.length));
        if (r === null) return;
        expect(b[0]).toBe(2);
        expect(r.opcode).toBeLessThan(128);
        if (r.opcode === 1 && r.resultCode === 0) expect(r.map).toBeDefined();
      }),
      { numRuns: 5000 },
    );
  });

  it('a MAP request and a response written from it round-trip every field', () => {
    const port = fc.integer({ min: 0, max: 0xffff });
    const ip = fc.ipV4();
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 12, maxLength: 12 }), ip, port, port, fc.integer({ min: 0, max: 0xffffffff }), ip, fc.integer({ min: 0, max: 0xffffffff }), fc.integer({ min: 0, max: 255 }), (nonce, client, iport, eport, life, ext, epoch, result) => {
        const req = encodePcpMapRequest({ clientIp: client, lifetimeS: life, nonce, internalPort: iport, suggestedExternalPort: eport, suggestedExternalIp: ext });
        expect([...req.subarray(20, 24)].join('.')).toBe(client);
        // A server answers by copying the opcode data and filling in the header (§8.2).
        const resp = Buffer.from(req);
        resp[1] |= 0x80;
        resp[3] = result;
        resp.writeUInt32BE(epoch, 8);
        resp.fill(0, 12, 24);
        expect(decodePcpResponse(resp)).toEqual({
          opcode: 1, resultCode: result, lifetimeS: life, epochS: epoch,
          map: { nonce: Buffer.from(nonce), protocol: 17, internalPort: iport, externalPort: eport, externalIp: ext },
        });
      }),
    );
  });
});

describe('PCP epoch (§8.5) and retransmission (§8.1.1)', () => {
  // prev epoch, prev client ms, new epoch, new client ms → plausible?
  it.each([
    [100, 0, 160, 60_000, true],
    [100, 0, 99, 0, true], // back by one second: reordering
    [100, 0, 98, 0, false], // back by two
    [100, 0, 140, 60_000, false], // our clock ran 60 s, the router's 40 s
    [100, 0, 200, 60_000, false], // the router's ran 100 s
    [100, 0, 163, 60_000, true], // within 2 s + 1/16
    [3600, 0, 3, 300_000, false], // a reboot
  ])('epoch %i at %i ms, then %i at %i ms → %s', (ps, pc, s, c, want) => {
    expect(pcpEpochPlausible(ps, pc, s, c)).toBe(want);
  });

  it('waits 3 s ± 10 %, doubling each time ± 10 %, capped at 1024 s', () => {
    expect(pcpRetransmitWaits(5, () => 0.5)).toEqual([3000, 6000, 12000, 24000, 48000]);
    expect(pcpRetransmitWaits(2, () => 0)).toEqual([2700, 5400]);
    expect(pcpRetransmitWaits(2, () => 0.999999)).toEqual([3300, 6600]);
    expect(pcpRetransmitWaits(12, () => 0.5).slice(-2)).toEqual([1_024_000, 1_024_000]);
  });
});
