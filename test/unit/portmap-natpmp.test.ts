// NAT-PMP (RFC 6886): requests and responses against the RFC's layouts, byte for byte
// (the answers are what miniupnpd 2.3.1 sent in the lab), the epoch rule of §3.6, and random
// input that must never make the decoder throw.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  NATPMP_RESULT,
  decodeNatPmpResponse,
  encodeNatPmpAddressRequest,
  encodeNatPmpMapRequest,
  natPmpEpochPlausible,
  natPmpResultName,
} from '../../src/nat/portmap/natpmp.js';
import { mutated } from '../support/mutate.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

describe('NAT-PMP codec: the RFC 6886 layouts', () => {
  it('§3.2 public address request: version 0, opcode 0, two bytes', () => {
    expect(encodeNatPmpAddressRequest().toString('hex')).toBe('0000');
  });

  it('§3.3 mapping request: version, opcode 1 (UDP), reserved, internal port, suggested port, lifetime', () => {
    expect(encodeNatPmpMapRequest({ internalPort: 8472, suggestedExternalPort: 8472, lifetimeS: 7200 }).toString('hex')).toBe('00010000' + '21182118' + '00001c20');
    // §3.4 delete: lifetime 0 and suggested port 0.
    expect(encodeNatPmpMapRequest({ internalPort: 8472, suggestedExternalPort: 0, lifetimeS: 0 }).toString('hex')).toBe('000100002118000000000000');
    expect(encodeNatPmpMapRequest({ internalPort: 1, suggestedExternalPort: 2, lifetimeS: 3, protocol: 'tcp' })[1]).toBe(2);
  });

  it('§3.2 public address response (miniupnpd): epoch 402 s, 11.22.33.7', () => {
    expect(decodeNatPmpResponse(hex('0080 0000 00000192 0b162107'))).toEqual({ opcode: 0, resultCode: 0, epochS: 402, externalIp: '11.22.33.7' });
  });

  it('§3.3 mapping response (miniupnpd): 8472 → 8472 for 7200 s; the delete answer', () => {
    expect(decodeNatPmpResponse(hex('0081 0000 00000192 2118 2118 00001c20'))).toEqual({
      opcode: 1, resultCode: 0, epochS: 402, internalPort: 8472, externalPort: 8472, lifetimeS: 7200,
    });
    expect(decodeNatPmpResponse(hex('0081 0000 00000192 2118 0000 00000000'))).toMatchObject({ externalPort: 0, lifetimeS: 0 });
  });

  it('§3.5 error answers: the 8-byte header form (miniupnpd, unsupported opcode 9 → not ours) and the full form', () => {
    expect(decodeNatPmpResponse(hex('0089 0005 00000194'))).toBeNull(); // opcode 9 is nothing we ask
    expect(decodeNatPmpResponse(hex('0081 0001 00000005'))).toEqual({ opcode: 1, resultCode: 1, epochS: 5 });
    expect(decodeNatPmpResponse(hex('0081 0002 00000005 2118 0000 00000000'))).toMatchObject({ resultCode: 2, internalPort: 8472 });
    expect(natPmpResultName(2)).toBe('NOT_AUTHORIZED');
    expect(natPmpResultName(99)).toBe('UNKNOWN_RESULT_99');
    expect(Object.values(NATPMP_RESULT)).toEqual(['SUCCESS', 'UNSUPPORTED_VERSION', 'NOT_AUTHORIZED', 'NETWORK_FAILURE', 'OUT_OF_RESOURCES', 'UNSUPPORTED_OPCODE']);
  });

  it('rejects what is not a NAT-PMP response', () => {
    const reject = [
      '00800000000001920b1621', // success one byte short
      '00800000000001920b16210700', // success one byte long
      '0000 0000 00000192 0b162107', // a request (no response bit)
      '0180 0000 00000192 0b162107', // version 1
      '0281 0000 00000078 0000002a', // a PCP answer
      '0081 0000 00000192 2118', // mapping answer cut short
      '0081 0003 00000192 2118 21', // error, neither 8 bytes nor full
      '008100',
      '',
    ];
    for (const h of reject) expect(decodeNatPmpResponse(hex(h)), h).toBeNull();
  });
});

describe('NAT-PMP codec: properties', () => {
  it('decode(arbitrary bytes) never throws, and what it accepts has a legal shape', () => {
    // Responses as a router writes them (address, mapping, either with an error code, and the
    // 8-byte error form), some with bytes changed; and pure random bytes.
    const u16 = fc.integer({ min: 0, max: 0xffff });
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    const response = fc
      .record({ op: fc.constantFrom(0, 1, 2), result: fc.oneof(fc.constant(0), u16), short: fc.boolean(), epoch: u32, a: u32, b: u32 })
      .map(({ op, result, short, epoch, a, b }) => {
        const r = Buffer.alloc(result !== 0 && short ? 8 : op === 0 ? 12 : 16);
        r[1] = 0x80 | op;
        r.writeUInt16BE(result, 2);
        r.writeUInt32BE(epoch, 4);
        if (r.length > 8) r.writeUInt32BE(a, 8);
        if (r.length > 12) r.writeUInt32BE(b, 12);
        return r;
      });
    const input = fc.oneof({ weight: 3, arbitrary: mutated(response, { head: 16, maxMutations: 2 }) }, { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)) });
    let accepted = 0;
    let rejected = 0;
    fc.assert(
      fc.property(input, (b) => {
        const r = decodeNatPmpResponse(b);
        if (r === null) {
          rejected++;
          return;
        }
        accepted++;
        expect(b[0]).toBe(0);
        expect(b[1] & 0x80).toBe(0x80);
        expect([0, 1, 2]).toContain(r.opcode);
        expect(r.opcode).toBe(b[1] & 0x7f);
        expect(r.resultCode).toBe(b.readUInt16BE(2));
        expect(r.epochS).toBe(b.readUInt32BE(4));
        if (r.resultCode === 0) expect(b.length).toBe(r.opcode === 0 ? 12 : 16);
        else expect([8, r.opcode === 0 ? 12 : 16]).toContain(b.length);
        if (r.opcode === 0 && r.resultCode === 0) expect(r.externalIp).toBe([...b.subarray(8, 12)].join('.'));
        if (r.opcode !== 0 && b.length === 16) expect([r.internalPort, r.externalPort, r.lifetimeS]).toEqual([b.readUInt16BE(8), b.readUInt16BE(10), b.readUInt32BE(12)]);
      }),
      { numRuns: 5000 },
    );
    // Both branches were taken, many times: the property cannot pass by rejecting everything.
    expect(accepted).toBeGreaterThan(500);
    expect(rejected).toBeGreaterThan(500);
  });

  it('decode reads back every field of a response written in the RFC layout', () => {
    const u16 = fc.integer({ min: 0, max: 0xffff });
    const u32 = fc.integer({ min: 0, max: 0xffffffff });
    fc.assert(
      fc.property(fc.constantFrom(1, 2), u16, u32, u16, u16, u32, (op, result, epoch, iport, eport, life) => {
        const b = Buffer.alloc(16);
        b[1] = 0x80 | op;
        b.writeUInt16BE(result, 2);
        b.writeUInt32BE(epoch, 4);
        b.writeUInt16BE(iport, 8);
        b.writeUInt16BE(eport, 10);
        b.writeUInt32BE(life, 12);
        expect(decodeNatPmpResponse(b)).toEqual({ opcode: op, resultCode: result, epochS: epoch, internalPort: iport, externalPort: eport, lifetimeS: life });
      }),
    );
    fc.assert(
      fc.property(u32, u32, (epoch, ip) => {
        const b = Buffer.alloc(12);
        b[1] = 0x80;
        b.writeUInt32BE(epoch, 4);
        b.writeUInt32BE(ip, 8);
        const r = decodeNatPmpResponse(b)!;
        expect(r.epochS).toBe(epoch);
        expect(r.externalIp!.split('.').reduce((a, o) => a * 256 + Number(o), 0)).toBe(ip);
      }),
    );
  });

  it('a mapping request carries its fields at the RFC offsets', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 0xffffffff }), (i, e, l) => {
        const b = encodeNatPmpMapRequest({ internalPort: i, suggestedExternalPort: e, lifetimeS: l });
        expect([b.length, b[0], b[1], b.readUInt16BE(2), b.readUInt16BE(4), b.readUInt16BE(6), b.readUInt32BE(8)]).toEqual([12, 0, 1, 0, i, e, l]);
      }),
    );
  });
});

describe('NAT-PMP epoch (§3.6)', () => {
  // prev epoch, prev client ms, new epoch, new client ms → plausible?
  it.each([
    [100, 0, 160, 60_000, true], // advanced with our clock
    [100, 0, 153, 60_000, true], // 7/8 of 60 s = 52.5, less 2 s of slack
    [100, 0, 150, 60_000, false], // less than 7/8 of the time passed, minus 2 s
    [100, 0, 99, 0, true], // reordering within the slack
    [100, 0, 97, 0, false], // back by 3 s
    [3600, 0, 5, 120_000, false], // a reboot
    [0, 0, 10_000, 1_000, true], // forward jumps are not NAT-PMP's concern
  ])('epoch %i at %i ms, then %i at %i ms → %s', (ps, pc, s, c, want) => {
    expect(natPmpEpochPlausible(ps, pc, s, c)).toBe(want);
  });
});
