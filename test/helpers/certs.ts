// A throwaway certificate authority for TLS tests: a CA, a server certificate for the given
// IP addresses and a client certificate, all P-256, valid for one day, made with openssl.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface TestCerts {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/**
 * Writes ca.crt, server.{crt,key} and client.{crt,key} into dir (with `name` as the CA's
 * common name, so two CAs in one test are told apart; `clientName` is the client certificate's
 * CommonName, which etcd takes as the user with --client-cert-auth) and returns their paths.
 */
export function makeCerts(dir: string, opts: { serverIps?: string[]; name?: string; clientName?: string } = {}): TestCerts {
  const ossl = (...args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const san = (opts.serverIps ?? ['127.0.0.1']).map((ip) => `IP:${ip}`).join(',');
  ossl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '1', '-subj', `/CN=${opts.name ?? 'linen-test-ca'}`);
  for (const [name, ext] of [
    ['server', `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\n`],
    ['client', 'extendedKeyUsage=clientAuth\n'],
  ] as const) {
    writeFileSync(join(dir, `${name}.ext`), ext);
    ossl('req', '-new', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${name === 'client' ? opts.clientName ?? 'client' : name}`);
    ossl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '1', '-extfile', `${name}.ext`);
  }
  return {
    ca: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
}
