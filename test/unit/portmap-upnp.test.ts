// UPnP IGD: SSDP search answers, the device description, SOAP requests, answers and faults
// (the samples are what miniupnpd 2.3.1 sent in the lab), and the bounded XML subset parser
// underneath, with random and hostile documents.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  UPNP_ERRORS,
  encodeMSearch,
  encodeSoapRequest,
  parseDescription,
  parseSoapResponse,
  parseSsdpResponse,
} from '../../src/nat/portmap/upnp.js';
import { child, childText, descendants, parseXml, type XmlElement } from '../../src/nat/portmap/xml.js';
import { soapFault, soapOk } from './portmap-fakes.js';

const MINIUPNPD_DESCRIPTION =
  '<?xml version="1.0"?>\r\n<root xmlns="urn:schemas-upnp-org:device-1-0" configId="1337"><specVersion><major>1</major>' +
  '<minor>1</minor></specVersion><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType>' +
  '<friendlyName>Debian router</friendlyName><manufacturer>Debian</manufacturer>' +
  '<manufacturerURL>http://www.debian.org/</manufacturerURL><modelDescription>Debian router</modelDescription>' +
  '<modelName>Debian router</modelName><modelNumber>1</modelNumber><modelURL>http://www.debian.org/</modelURL>' +
  '<serialNumber>00000000</serialNumber><UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b</UDN><serviceList><service>' +
  '<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>' +
  '<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId><SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL>' +
  '<eventSubURL>/evt/L3F</eventSubURL></service><service>' +
  '<serviceType>urn:schemas-upnp-org:service:DeviceProtection:1</serviceType>' +
  '<serviceId>urn:upnp-org:serviceId:DeviceProtection1</serviceId><SCPDURL>/DP.xml</SCPDURL>' +
  '<controlURL>/ctl/DP</controlURL><eventSubURL>/evt/DP</eventSubURL></service></serviceList><deviceList><device>' +
  '<deviceType>urn:schemas-upnp-org:device:WANDevice:2</deviceType><friendlyName>WANDevice</friendlyName>' +
  '<manufacturer>MiniUPnP</manufacturer><manufacturerURL>http://miniupnp.free.fr/</manufacturerURL>' +
  '<modelDescription>WAN Device</modelDescription><modelName>WAN Device</modelName><modelNumber>20221221</modelNumber>' +
  '<modelURL>http://miniupnp.free.fr/</modelURL><serialNumber>00000000</serialNumber>' +
  '<UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07c</UDN><UPC>000000000000</UPC><serviceList><service>' +
  '<serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>' +
  '<serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId><SCPDURL>/WANCfg.xml</SCPDURL>' +
  '<controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL></service></serviceList><deviceList>' +
  '<device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:2</deviceType>' +
  '<friendlyName>WANConnectionDevice</friendlyName><manufacturer>MiniUPnP</manufacturer>' +
  '<manufacturerURL>http://miniupnp.free.fr/</manufacturerURL><modelDescription>MiniUPnP daemon</modelDescription>' +
  '<modelName>MiniUPnPd</modelName><modelNumber>20221221</modelNumber><modelURL>http://miniupnp.free.fr/</modelURL>' +
  '<serialNumber>00000000</serialNumber><UDN>uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07d</UDN><UPC>000000000000</UPC>' +
  '<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>' +
  '<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><SCPDURL>/WANIPCn.xml</SCPDURL>' +
  '<controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL></service><service>' +
  '<serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1</serviceType>' +
  '<serviceId>urn:upnp-org:serviceId:WANIPv6Firewall1</serviceId><SCPDURL>/WANIP6FC.xml</SCPDURL>' +
  '<controlURL>/ctl/IP6FCtl</controlURL><eventSubURL>/evt/IP6FCtl</eventSubURL></service></serviceList></device>' +
  '</deviceList></device></deviceList><presentationURL>http://192.0.2.1/</presentationURL></device></root>';

const SSDP_ANSWER =
  'HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n' +
  'USN: uuid:3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nEXT:\r\n' +
  'SERVER: Debian/6.18.44-fc-v669 UPnP/1.1 MiniUPnPd/2.3.1\r\nLOCATION: http://192.0.2.1:39649/rootDesc.xml\r\n' +
  'OPT: "http://schemas.upnp.org/upnp/1/0/"; ns=01\r\n01-NLS: 1796195802\r\nBOOTID.UPNP.ORG: 1796195802\r\nCONFIGID.UPNP.ORG: 1337\r\n\r\n';

const EXTERNAL_IP_ANSWER =
  '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">' +
  '<s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>11.22.33.7</NewExternalIPAddress>' +
  '</u:GetExternalIPAddressResponse></s:Body></s:Envelope>\r\n';

const FAULT_714 =
  '<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><s:Fault>' +
  '<faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0">' +
  '<errorCode>714</errorCode><errorDescription>NoSuchEntryInArray</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>\r\n';

describe('SSDP', () => {
  it('writes M-SEARCH: multicast with MX, unicast without (UDA 1.1)', () => {
    expect(encodeMSearch('239.255.255.250:1900', 'ssdp:all', 1).toString()).toBe(
      'M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: "ssdp:discover"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n',
    );
    expect(encodeMSearch('192.0.2.1:1900', 'urn:x').toString()).toBe('M-SEARCH * HTTP/1.1\r\nHOST: 192.0.2.1:1900\r\nMAN: "ssdp:discover"\r\nST: urn:x\r\n\r\n');
  });

  it("reads miniupnpd's answer", () => {
    expect(parseSsdpResponse(Buffer.from(SSDP_ANSWER))).toEqual({
      location: 'http://192.0.2.1:39649/rootDesc.xml',
      st: 'urn:schemas-upnp-org:device:InternetGatewayDevice:1',
      server: 'Debian/6.18.44-fc-v669 UPnP/1.1 MiniUPnPd/2.3.1',
    });
    // Bare LF line ends and lower-case names are accepted.
    expect(parseSsdpResponse(Buffer.from('HTTP/1.1 200 OK\nlocation: http://192.0.2.1/d.xml\n\n'))?.location).toBe('http://192.0.2.1/d.xml');
  });

  it('refuses other messages, odd locations and oversize answers', () => {
    const bad = [
      SSDP_ANSWER.replace('200 OK', '404 Not Found'),
      SSDP_ANSWER.replace(/LOCATION: [^\r]*\r\n/, ''),
      SSDP_ANSWER.replace('http://192.0.2.1', 'https://192.0.2.1'),
      SSDP_ANSWER.replace('http://192.0.2.1:39649/rootDesc.xml', 'file:///etc/passwd'),
      SSDP_ANSWER.replace('http://192.0.2.1:39649/rootDesc.xml', `http://192.0.2.1/${'a'.repeat(600)}`),
      'NOTIFY * HTTP/1.1\r\nLOCATION: http://192.0.2.1/x\r\n\r\n',
      SSDP_ANSWER + 'X: y\r\n'.repeat(40),
      SSDP_ANSWER + ' '.repeat(2100),
    ];
    for (const b of bad) expect(parseSsdpResponse(Buffer.from(b))).toBeNull();
  });

  it('never throws on arbitrary datagrams', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 3000 }), (b) => void parseSsdpResponse(Buffer.from(b))), { numRuns: 2000 });
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.constantFrom('LOCATION', 'ST', 'SERVER', 'x'), fc.string()), { maxLength: 40 }), (hs) => {
        void parseSsdpResponse(Buffer.from(`HTTP/1.1 200 OK\r\n${hs.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`));
      }),
    );
  });
});

describe('device description', () => {
  it("finds miniupnpd's WANIPConnection:2 control URL", () => {
    expect(parseDescription(MINIUPNPD_DESCRIPTION, 'http://192.0.2.1:39649/rootDesc.xml', '192.0.2.1')).toEqual([
      { serviceType: 'urn:schemas-upnp-org:service:WANIPConnection:2', controlUrl: 'http://192.0.2.1:39649/ctl/IPConn' },
    ]);
  });

  const doc = (services: [string, string][], urlBase = '') =>
    `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">${urlBase ? `<URLBase>${urlBase}</URLBase>` : ''}<device><serviceList>` +
    services.map(([t, c]) => `<service><serviceType>urn:schemas-upnp-org:service:${t}</serviceType><controlURL>${c}</controlURL></service>`).join('') +
    '</serviceList></device></root>';

  it('orders WANIPConnection:2, :1, WANPPPConnection:1, and ignores other services', () => {
    const d = doc([['WANPPPConnection:1', '/ppp'], ['Layer3Forwarding:1', '/l3f'], ['WANIPConnection:1', '/ip1'], ['WANIPConnection:2', '/ip2']]);
    expect(parseDescription(d, 'http://192.0.2.1:5000/d.xml', '192.0.2.1')?.map((s) => s.controlUrl)).toEqual([
      'http://192.0.2.1:5000/ip2', 'http://192.0.2.1:5000/ip1', 'http://192.0.2.1:5000/ppp',
    ]);
  });

  it('resolves against URLBase, and points every URL at the router (never another host)', () => {
    const d = doc([['WANIPConnection:1', 'ctl/a'], ['WANPPPConnection:1', 'http://203.0.113.5:80/evil']], 'http://192.0.2.99:49000/base/');
    expect(parseDescription(d, 'http://192.0.2.1:5000/d.xml', '192.0.2.1')?.map((s) => s.controlUrl)).toEqual([
      'http://192.0.2.1:49000/base/ctl/a', 'http://192.0.2.1/evil',
    ]);
    expect(parseDescription(doc([['WANIPConnection:1', 'https://192.0.2.1/x']]), 'http://192.0.2.1/d.xml', '192.0.2.1')).toEqual([]);
  });

  it('refuses what is not a description', () => {
    expect(parseDescription('<html><body>router login</body></html>', 'http://192.0.2.1/', '192.0.2.1')).toBeNull();
    expect(parseDescription('not xml', 'http://192.0.2.1/', '192.0.2.1')).toBeNull();
    expect(parseDescription(MINIUPNPD_DESCRIPTION.slice(0, 1000), 'http://192.0.2.1/', '192.0.2.1')).toBeNull();
  });
});

describe('SOAP', () => {
  it('writes the envelope with escaped arguments', () => {
    const body = encodeSoapRequest('urn:schemas-upnp-org:service:WANIPConnection:2', 'AddPortMapping', [['NewExternalPort', 8472], ['NewPortMappingDescription', 'a<b&"c"']]);
    const env = parseXml(body)!;
    const action = child(child(env, 'Body')!, 'AddPortMapping')!;
    expect(action.children.map((c) => [c.name, c.text])).toEqual([['NewExternalPort', '8472'], ['NewPortMappingDescription', 'a<b&"c"']]);
    expect(body).toContain('<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">');
  });

  it("reads miniupnpd's answers and faults", () => {
    expect(parseSoapResponse(200, EXTERNAL_IP_ANSWER, 'GetExternalIPAddress')).toEqual({ kind: 'ok', values: { NewExternalIPAddress: '11.22.33.7' } });
    expect(parseSoapResponse(500, FAULT_714, 'GetSpecificPortMappingEntry')).toEqual({
      kind: 'fault', fault: { code: 714, name: 'NoSuchEntryInArray', description: 'NoSuchEntryInArray' },
    });
    expect(parseSoapResponse(500, soapFault(718).body, 'AddPortMapping')).toMatchObject({ fault: { code: 718, name: 'ConflictInMappingEntry' } });
    expect(parseSoapResponse(200, soapOk('DeletePortMapping', '').body, 'DeletePortMapping')).toEqual({ kind: 'ok', values: {} });
  });

  it('names faults by the specification even when the router describes them otherwise', () => {
    const f = FAULT_714.replace('714', '606').replace('NoSuchEntryInArray</errorDescription>', 'nope</errorDescription>');
    expect(parseSoapResponse(500, f, 'X')).toMatchObject({ fault: { code: 606, name: 'Action not authorized', description: 'nope' } });
    const noCode = FAULT_714.replace('<errorCode>714</errorCode>', '');
    expect(parseSoapResponse(500, noCode, 'X')).toMatchObject({ fault: { code: null, name: 'NoSuchEntryInArray' } });
    expect(UPNP_ERRORS[725]).toBe('OnlyPermanentLeasesSupported');
  });

  it('calls anything else malformed', () => {
    expect(parseSoapResponse(200, EXTERNAL_IP_ANSWER, 'AddPortMapping')).toMatchObject({ kind: 'malformed', why: 'no AddPortMappingResponse in the answer' });
    expect(parseSoapResponse(404, '<html/>', 'X')).toMatchObject({ kind: 'malformed' });
    expect(parseSoapResponse(500, EXTERNAL_IP_ANSWER, 'GetExternalIPAddress')).toMatchObject({ kind: 'malformed', why: 'HTTP 500 without a SOAP fault' });
    expect(parseSoapResponse(200, '', 'X')).toMatchObject({ kind: 'malformed' });
  });

  it('never throws on arbitrary bodies', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 999 }), fc.string({ maxLength: 500 }), (st, b) => void parseSoapResponse(st, b, 'X')));
  });
});

describe('XML subset parser', () => {
  it('keeps local names and trimmed text; skips declarations, comments, attributes', () => {
    const x = parseXml('<?xml version="1.0"?><!-- hi --><a:root x="1>2" y=\'<\'>\n <b> one </b><c/><b>two</b></a:root>\n')!;
    expect(x.name).toBe('root');
    expect(x.children.map((c) => [c.name, c.text])).toEqual([['b', 'one'], ['c', ''], ['b', 'two']]);
    expect(childText(x, 'b')).toBe('one');
    expect(descendants(x, 'b')).toHaveLength(2);
  });

  it('decodes entities and character references, keeps CDATA literally', () => {
    expect(parseXml('<a>&lt;&gt;&amp;&quot;&apos;&#65;&#x42;</a>')!.text).toBe('<>&"\'AB');
    expect(parseXml('<a><![CDATA[&lt; & <b>]]></a>')!.text).toBe('&lt; & <b>');
    for (const bad of ['<a>&nope;</a>', '<a>&#0;</a>', '<a>&#xd800;</a>', '<a>& </a>', '<a>&#x110000;</a>']) expect(parseXml(bad), bad).toBeNull();
  });

  it('refuses malformed documents', () => {
    for (const bad of ['', 'text', '<a>', '<a></b>', '<a></a><b></b>', '<a></a>trailing', '<a x="1></a>', '<a><!-- open</a>', '<a <b>></a>', '</a>']) {
      expect(parseXml(bad), bad).toBeNull();
    }
  });

  it('refuses a DOCTYPE (no DTD, so no entity expansion: the "billion laughs" is just refused)', () => {
    const laughs = '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>';
    expect(parseXml(laughs)).toBeNull();
  });

  it('is bounded in depth and element count', () => {
    expect(parseXml('<a>'.repeat(24) + '</a>'.repeat(24))).not.toBeNull();
    expect(parseXml('<a>'.repeat(25) + '</a>'.repeat(25))).toBeNull();
    expect(parseXml('<a>'.repeat(100_000))).toBeNull();
    expect(parseXml(`<r>${'<e/>'.repeat(4095)}</r>`)).not.toBeNull();
    expect(parseXml(`<r>${'<e/>'.repeat(4096)}</r>`)).toBeNull();
  });

  it('stays linear on documents built to make a naive scanner quadratic', () => {
    // 64 KiB of tags with one quote at the very end, and of '&' with no ';'.
    expect(parseXml(`<r>${'<e>'.repeat(16_000)}"`)).toBeNull();
    expect(parseXml(`<r>${'&'.repeat(65_000)}</r>`)).toBeNull();
    expect(parseXml(`<r>${'<!--'.repeat(16_000)}`)).toBeNull();
  });

  it('never throws on arbitrary strings, or on strings made of XML pieces', () => {
    fc.assert(fc.property(fc.string({ maxLength: 300 }), (s) => void parseXml(s)), { numRuns: 3000 });
    const piece = fc.constantFrom('<a>', '</a>', '<b/>', '<x:c y="1">', '</x:c>', '&amp;', '&#', ';', '<!--', '-->', '<![CDATA[', ']]>', '<?', '?>', '"', "'", 'text', ' ', '>');
    fc.assert(fc.property(fc.array(piece, { maxLength: 60 }), (ps) => void parseXml(ps.join(''))), { numRuns: 3000 });
  });

  it('reads back any tree it is given as text (names, nesting, escaped text)', () => {
    const name = fc.stringMatching(/^[A-Za-z][A-Za-z0-9]{0,7}$/);
    const text = fc.string({ maxLength: 12 }).map((s) => s.trim()).filter((s) => !/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ud800-\udfff\ufffe\uffff]/.test(s));
    const { tree } = fc.letrec<{ tree: XmlElement }>((tie) => ({
      tree: fc.record({
        name,
        text,
        children: fc.oneof({ depthSize: 'small', withCrossShrink: true }, fc.constant<XmlElement[]>([]), fc.array(tie('tree'), { maxLength: 3 })),
      }),
    }));
    const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
    const write = (e: XmlElement): string => `<p:${e.name} a="v">${esc(e.text)}${e.children.map(write).join('')}</p:${e.name}>`;
    fc.assert(
      fc.property(tree, (t) => {
        expect(parseXml(write(t))).toEqual(t);
      }),
    );
  });
});
