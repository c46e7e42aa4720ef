import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createClusterCa, issueApiCertificate } from './certificates.ts';
import { readOperatorCertificate } from './tls.ts';

const root = mkdtempSync(join(tmpdir(), 'shoal-tls-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("an operator's certificate (--tls-cert, --tls-key)", () => {
  it('is read when the key is the certificate’s, and refused in one line naming both flags otherwise', async () => {
    const clusterKey = 'd4'.repeat(32);
    const ca = await createClusterCa({ clusterKey, createdBy: 'n1', nowMs: Date.now() });
    const names = { dns: ['localhost'], ips: ['127.0.0.1'] };
    const identity = await issueApiCertificate({ ca, clusterKey, nodeName: 'n1', names, nowMs: Date.now() });
    const certificate = join(root, 'api.crt');
    const key = join(root, 'api.key');
    const otherKey = join(root, 'other.key');
    writeFileSync(certificate, identity.certificatePem);
    writeFileSync(key, identity.keyPem);
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
    writeFileSync(otherKey, String(other.export({ format: 'pem', type: 'pkcs8' })));
    expect(readOperatorCertificate(certificate, key)).toEqual(identity);
    expect(() => readOperatorCertificate(certificate, otherKey)).toThrow(
      /^--tls-cert .*api\.crt and --tls-key .*other\.key are not a certificate and its key: /,
    );
    expect(() => readOperatorCertificate(join(root, 'missing.crt'), key)).toThrow(/cannot read --tls-cert/);
  });
});
