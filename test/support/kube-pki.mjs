// Certificates and kubeconfigs for the kube-apiserver stand-in (kube-apiserver.mjs).
//
// makePki() makes a throwaway CA, a server certificate for the addresses the stand-in listens
// on, and client certificates (CN = user, O = group, as kube-apiserver reads them), all with
// openssl and P-256 keys (fast to make, accepted by Node's TLS). kubeconfig() writes a
// kubeconfig the official client loads: bearer token, client certificate or exec plugin.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'], timeout: 20_000 });
}

function keyAndCsr(dir, name, subject) {
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', `${name}.key`], dir);
  openssl(['req', '-new', '-key', `${name}.key`, '-subj', subject, '-out', `${name}.csr`], dir);
}

function sign(dir, name, extensions, dates) {
  if (dates) return signDated(dir, { name, ca: 'ca', extensions, ...dates });
  writeFileSync(path.join(dir, `${name}.ext`), extensions);
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '365',
    '-extfile', `${name}.ext`, '-out', `${name}.crt`], dir);
}

/**
 * A P-256 key `<name>.key` and a certificate `<name>.crt` for `cn` in `dir`, signed by
 * `<ca>.crt`/`<ca>.key` there, valid from `notBefore` to `notAfter` (Dates). Returns the paths.
 */
export function datedCert(dir, { name, cn, ca = 'ca', extensions = 'extendedKeyUsage=clientAuth', notBefore, notAfter }) {
  keyAndCsr(dir, name, `/CN=${cn}`);
  signDated(dir, { name, ca, extensions, notBefore, notAfter });
  return { certFile: path.join(dir, `${name}.crt`), keyFile: path.join(dir, `${name}.key`) };
}

/**
 * Signs `<name>.csr` in `dir` with `<ca>.crt`/`<ca>.key` into `<name>.crt`, valid from
 * `notBefore` to `notAfter` (Dates): an expired certificate, or one not valid yet, as a wrong
 * clock or a forgotten renewal makes them. OpenSSL 3.0's `x509 -req` cannot set the start, so
 * this is `openssl ca` with a throwaway database.
 */
function signDated(dir, { name, ca, extensions, notBefore, notAfter }) {
  const asn1 = (d) => d.toISOString().replace(/[-:T]/g, '').slice(0, 14) + 'Z';
  const db = path.join(dir, `${name}.db`);
  mkdirSync(db, { recursive: true });
  writeFileSync(path.join(db, 'index.txt'), '');
  writeFileSync(path.join(db, 'serial'), `${Date.now().toString(16).padStart(16, '0')}\n`);
  writeFileSync(path.join(dir, `${name}.cnf`), [
    '[ca]', 'default_ca = d', '[d]', `database = ${db}/index.txt`, `new_certs_dir = ${db}`, `serial = ${db}/serial`,
    'default_md = sha256', 'policy = p', 'unique_subject = no', '[p]', 'commonName = supplied', 'organizationName = optional',
    '[ext]', extensions.trim(), '',
  ].join('\n'));
  openssl(['ca', '-batch', '-config', `${name}.cnf`, '-cert', `${ca}.crt`, '-keyfile', `${ca}.key`, '-in', `${name}.csr`, '-out', `${name}.crt`,
    '-startdate', asn1(notBefore), '-enddate', asn1(notAfter), '-extensions', 'ext', '-notext'], dir);
}

/**
 * Writes ca.{crt,key}, server.{crt,key} (SANs: `ips` and localhost) and one `<cn>.{crt,key}` per
 * client into `dir`. Returns the paths and the PEM texts.
 */
export function makePki(dir, { ips = ['127.0.0.1'], clients = [], serverDates } = {}) {
  mkdirSync(dir, { recursive: true });
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', 'ca.key'], dir);
  openssl(['req', '-x509', '-new', '-key', 'ca.key', '-subj', '/CN=vxedge-test-ca', '-days', '365', '-out', 'ca.crt',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'], dir);
  keyAndCsr(dir, 'server', '/CN=kube-apiserver');
  const sans = [...ips.map((ip) => `IP:${ip}`), 'DNS:localhost'].join(',');
  sign(dir, 'server', `subjectAltName=${sans}\nextendedKeyUsage=serverAuth\n`, serverDates);
  const out = {
    dir,
    caFile: path.join(dir, 'ca.crt'),
    ca: readFileSync(path.join(dir, 'ca.crt'), 'utf8'),
    cert: readFileSync(path.join(dir, 'server.crt'), 'utf8'),
    key: readFileSync(path.join(dir, 'server.key'), 'utf8'),
    clients: {},
  };
  for (const { cn, o, notBefore, notAfter } of clients) {
    keyAndCsr(dir, cn, `/CN=${cn}${o ? `/O=${o}` : ''}`);
    sign(dir, cn, 'extendedKeyUsage=clientAuth\n', notBefore ? { notBefore, notAfter } : undefined);
    out.clients[cn] = { certFile: path.join(dir, `${cn}.crt`), keyFile: path.join(dir, `${cn}.key`) };
  }
  return out;
}

/**
 * A kubeconfig (JSON is YAML) for `server`, trusting `caFile`, authenticating with exactly one
 * of: { token }, { certFile, keyFile }, { exec: { command, args?, env? } }. Written to `file`.
 */
export function kubeconfig(file, { server, caFile, token, certFile, keyFile, exec }) {
  const user = {};
  if (token !== undefined) user.token = token;
  if (certFile) Object.assign(user, { 'client-certificate': certFile, 'client-key': keyFile });
  if (exec) user.exec = { apiVersion: 'client.authentication.k8s.io/v1beta1', interactiveMode: 'Never', ...exec };
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'test', cluster: { server, 'certificate-authority': caFile } }],
    users: [{ name: 'test', user }],
    contexts: [{ name: 'test', context: { cluster: 'test', user: 'test' } }],
    'current-context': 'test',
  };
  writeFileSync(file, JSON.stringify(doc, null, 2));
  return file;
}
