import { X509Certificate, createPrivateKey, generateKeyPairSync } from 'node:crypto';
import { connect } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ShoalClient,
  startApiServer,
  type ApiBackend,
  type ApiServers,
  type ApiTlsIdentity,
} from '../api/index.ts';
import { openCaKey, type ClusterCaRecord } from '../cluster/index.ts';
import { silentLogger } from '../shared/index.ts';
import {
  apiCertificateDecision,
  apiCertificateNames,
  apiCertificateRenewBeforeMs,
  apiCertificateValidityMs,
  certificateBackdateMs,
  certificateFingerprint,
  certificateNames,
  clusterCaValidityMs,
  createClusterCa,
  issueApiCertificate,
  parseFingerprint,
  renewalDue,
  type CertificateNames,
} from './certificates.ts';

const dayMs = 24 * 60 * 60_000;
const clusterKey = 'c3'.repeat(32);
/** Whole seconds: X.509 times have no milliseconds. */
const nowMs = Date.UTC(2026, 0, 15, 12, 0, 0);
const names: CertificateNames = { dns: ['localhost', 'n1'], ips: ['127.0.0.1', '::1'] };

let ca: ClusterCaRecord;
let otherCa: ClusterCaRecord;
let identity: ApiTlsIdentity;

beforeAll(async () => {
  ca = await createClusterCa({ clusterKey, createdBy: 'n1', nowMs });
  otherCa = await createClusterCa({ clusterKey, createdBy: 'n2', nowMs });
  identity = await issueApiCertificate({ ca, clusterKey, nodeName: 'n1', names, nowMs });
});

function certificates(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map(
    (block) => new X509Certificate(block),
  );
}

describe('the cluster CA', () => {
  it('is a self-signed CA for ten years, that signs certificates and nothing that signs further', () => {
    const certificate = new X509Certificate(ca.certificatePem);
    expect(certificate.ca).toBe(true);
    expect(certificate.checkIssued(certificate)).toBe(true);
    expect(certificate.verify(certificate.publicKey)).toBe(true);
    expect(Date.parse(certificate.validFrom)).toBe(nowMs - certificateBackdateMs);
    expect(Date.parse(certificate.validTo)).toBe(nowMs + clusterCaValidityMs);
    expect(certificate.toLegacyObject().ext_key_usage).toBeUndefined();
    expect(certificate.subject).toMatch(/^CN=shoal cluster CA [0-9a-f]{8}$/);
  });

  it('keeps the key of its certificate, sealed with the cluster key', () => {
    const key = createPrivateKey({ key: openCaKey(ca, clusterKey), format: 'der', type: 'pkcs8' });
    expect(new X509Certificate(ca.certificatePem).checkPrivateKey(key)).toBe(true);
    expect(JSON.stringify(ca)).not.toContain('PRIVATE KEY');
  });
});

describe("a node's API certificate", () => {
  it('is signed by the cluster CA for 90 days, covers exactly its names, and comes with the CA in its chain', () => {
    const [leaf, chained, ...more] = certificates(identity.certificatePem);
    const caCertificate = new X509Certificate(ca.certificatePem);
    expect(more).toEqual([]);
    expect(chained?.fingerprint256).toBe(caCertificate.fingerprint256);
    expect(leaf?.ca).toBe(false);
    expect(leaf?.checkIssued(caCertificate)).toBe(true);
    expect(leaf?.verify(caCertificate.publicKey)).toBe(true);
    expect(leaf?.subject).toBe('CN=n1');
    expect(leaf?.subjectAltName).toBe(
      'DNS:localhost, DNS:n1, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1',
    );
    expect(leaf === undefined ? null : certificateNames(leaf)).toEqual(names);
    expect(Date.parse(leaf?.validFrom ?? '')).toBe(nowMs - certificateBackdateMs);
    expect(Date.parse(leaf?.validTo ?? '')).toBe(nowMs + apiCertificateValidityMs);
    expect(leaf?.checkPrivateKey(createPrivateKey(identity.keyPem))).toBe(true);
    expect(leaf?.checkHost('n1')).toBe('n1');
    expect(leaf?.checkIP('127.0.0.2')).toBeUndefined();
  });

  it('covers the --api host, loopback, the host name and the node name; every address for a wildcard', () => {
    expect(
      apiCertificateNames({
        apiHost: '10.0.0.5',
        hostname: 'Box',
        nodeName: 'n1',
        interfaceAddresses: ['10.9.9.9'],
      }),
    ).toEqual({ dns: ['box', 'localhost', 'n1'], ips: ['10.0.0.5', '127.0.0.1', '::1'] });
    expect(
      apiCertificateNames({
        apiHost: 'api.example',
        hostname: 'box',
        nodeName: 'box',
        interfaceAddresses: [],
      }),
    ).toEqual({ dns: ['api.example', 'box', 'localhost'], ips: ['127.0.0.1', '::1'] });
    expect(
      apiCertificateNames({
        apiHost: '0.0.0.0',
        hostname: 'box',
        nodeName: 'n1',
        interfaceAddresses: ['127.0.0.1', '10.0.0.5', 'fd00:0:0:0:0:0:0:1'],
      }),
    ).toEqual({ dns: ['box', 'localhost', 'n1'], ips: ['10.0.0.5', '127.0.0.1', '::1', 'fd00::1'] });
  });
});

describe('renewal', () => {
  it('is due once less than 30 days remain', () => {
    const notAfterMs = nowMs + apiCertificateValidityMs;
    expect(apiCertificateRenewBeforeMs).toBe(30 * dayMs);
    expect(renewalDue(notAfterMs, nowMs)).toBe(false);
    expect(renewalDue(notAfterMs, notAfterMs - apiCertificateRenewBeforeMs)).toBe(false);
    expect(renewalDue(notAfterMs, notAfterMs - apiCertificateRenewBeforeMs + 1)).toBe(true);
    expect(renewalDue(notAfterMs, notAfterMs + dayMs)).toBe(true);
  });

  it('keeps a good certificate and issues another when it is due, missing, wrong or for other names', () => {
    const wanted = { caPem: ca.certificatePem, names };
    const decide = (current: ApiTlsIdentity | null, at = nowMs, want = wanted): string => {
      const decision = apiCertificateDecision(current, want, at);
      return decision.action === 'keep' ? 'keep' : decision.reason;
    };
    expect(decide(identity)).toBe('keep');
    expect(decide(identity, nowMs + 59 * dayMs)).toBe('keep');
    expect(decide(identity, nowMs + 61 * dayMs)).toMatch(/^it expires /);
    expect(decide(identity, nowMs - 2 * certificateBackdateMs)).toMatch(/not valid before/);
    expect(decide(null)).toMatch(/no API certificate yet/);
    expect(decide(identity, nowMs, { ...wanted, names: { ...names, ips: ['10.0.0.5'] } })).toMatch(
      /names it should cover changed/,
    );
    expect(decide(identity, nowMs, { ...wanted, caPem: otherCa.certificatePem })).toMatch(/not signed by/);
    const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    expect(
      decide({ ...identity, keyPem: String(otherKey.export({ format: 'pem', type: 'pkcs8' })) }),
    ).toMatch(/its key does not match/);
    expect(decide({ ...identity, keyPem: 'garbage' })).toMatch(/cannot be read/);
    expect(decide({ certificatePem: 'garbage', keyPem: identity.keyPem })).toMatch(/cannot be read/);
  });
});

describe('fingerprints', () => {
  it("prints a CA's SHA-256 fingerprint as openssl does, and reads it back in any usual form", () => {
    const fingerprint = certificateFingerprint(ca.certificatePem);
    expect(fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(parseFingerprint(fingerprint.toLowerCase(), '--ca-fingerprint')).toBe(fingerprint);
    expect(parseFingerprint(`sha256:${fingerprint.replace(/:/g, '')}`, '--ca-fingerprint')).toBe(fingerprint);
    expect(() => parseFingerprint('AB:CD', '--ca-fingerprint')).toThrow(/--ca-fingerprint must be a SHA-256/);
  });
});

describe('the API over TLS', () => {
  const backend = {
    health: () => ({ status: 'ok', node: 'n1', version: 'test' }),
    clusterCa: () => ({ certificatePem: ca.certificatePem }),
  } as unknown as ApiBackend;
  let servers: ApiServers;
  let address = '';

  beforeAll(async () => {
    // Issued now (the one above is from a fixed date): TLS checks validity against the real clock.
    const current = await issueApiCertificate({ ca, clusterKey, nodeName: 'n1', names, nowMs: Date.now() });
    servers = await startApiServer({
      backend,
      logger: silentLogger,
      tcp: { host: '127.0.0.1', port: 0 },
      tls: current,
    });
    address = `127.0.0.1:${servers.tcpPort ?? 0}`;
  });

  afterAll(() => servers.close());

  async function attempt(
    client: ShoalClient,
    run: (client: ShoalClient) => Promise<unknown>,
  ): Promise<unknown> {
    try {
      return await run(client);
    } catch (error) {
      return error;
    } finally {
      client.close();
    }
  }

  it('answers a client that trusts the cluster CA, and refuses one that trusts another, in one line', async () => {
    expect(
      await attempt(new ShoalClient({ address, ca: ca.certificatePem }), (c) => c.call('health')),
    ).toEqual({
      status: 'ok',
      node: 'n1',
      version: 'test',
    });
    const refused = String(
      await attempt(new ShoalClient({ address, ca: otherCa.certificatePem }), (c) => c.call('health')),
    );
    expect(refused).toMatch(/its TLS certificate is not one this client trusts/);
    expect(refused).not.toContain('\n');
  });

  it('serves the CA to an unverified client, which gets nothing else by it than what anyone may read', async () => {
    const answer = await attempt(new ShoalClient({ address: `https://${address}`, unverified: true }), (c) =>
      c.clusterCa(),
    );
    expect(answer).toEqual({ certificatePem: ca.certificatePem });
    expect(() => new ShoalClient({ address, unverified: true, token: 'shoal_x' })).toThrow(/no token/);
  });

  it('fails a plain-HTTP request to the TLS port, and says the node may speak TLS', async () => {
    const failed = String(await attempt(new ShoalClient({ address }), (c) => c.call('health')));
    expect(failed).toMatch(/use https:\/\/HOST:PORT, --ca FILE or shoal login/);
  });

  it('serves a renewed certificate from the next connection on', async () => {
    const serial = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const socket = connect(
          { host: '127.0.0.1', port: servers.tcpPort ?? 0, ca: ca.certificatePem },
          () => {
            resolve(socket.getPeerCertificate().serialNumber);
            socket.end();
          },
        );
        socket.on('error', reject);
      });
    const before = await serial();
    const renewed = await issueApiCertificate({ ca, clusterKey, nodeName: 'n1', names, nowMs: Date.now() });
    servers.setTls(renewed);
    const after = await serial();
    expect(after).not.toBe(before);
    expect(after).toBe(certificates(renewed.certificatePem)[0]?.serialNumber);
  });
});
