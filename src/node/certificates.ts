/**
 * The API's certificates under `--tls auto`: the cluster CA (made once by the first node that needs it,
 * kept in the replicated state with its key sealed by the cluster key, see cluster/ca.ts), each node's own
 * certificate signed by it, the names that certificate covers, when it is renewed, and the fingerprints
 * users pin the CA by. Pure but for the randomness of new keys: time comes in as `nowMs`; the files, the
 * cluster and the timer are tls.ts's.
 *
 * Issuing uses @peculiar/x509 (on WebCrypto), loaded on first use: a CLI command or an agent without
 * `--tls auto` never evaluates it (see x509()). Reading certificates uses node:crypto's X509Certificate.
 */
import { X509Certificate, createPrivateKey, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import type * as X509 from '@peculiar/x509';
import type { ApiTlsIdentity } from '../api/index.ts';
import { openCaKey, sealCaKey, type ClusterCaRecord } from '../cluster/index.ts';
import { assert, invalidArgument } from '../shared/index.ts';

const dayMs = 24 * 60 * 60_000;
/** How long the cluster CA is valid. Nothing renews it yet: a cluster older than this needs a new one. */
export const clusterCaValidityMs = 10 * 365 * dayMs;
/** How long a node's API certificate is valid: short, as it renews itself (the ACME norm). */
export const apiCertificateValidityMs = 90 * dayMs;
/** A node's certificate is renewed once less than this remains: a month to notice a node that cannot. */
export const apiCertificateRenewBeforeMs = 30 * dayMs;
/** How often a node checks whether its certificate is due (renewal needs no quorum, so once a day is plenty). */
export const apiCertificateCheckIntervalMs = dayMs;
/** Certificates start this long before they are made, so a client whose clock lags a little accepts them. */
export const certificateBackdateMs = 60 * 60_000;

/** ECDSA P-256 with SHA-256: every TLS client speaks it, and a key is made in about a millisecond. */
const keyAlgorithm = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const signingAlgorithm = { name: 'ECDSA', hash: 'SHA-256' } as const;

/** The names a certificate covers: DNS names and IP addresses (in their shortest form), each sorted. */
export interface CertificateNames {
  readonly dns: readonly string[];
  readonly ips: readonly string[];
}

/**
 * The names a node's API certificate covers: its --api host (or, for a wildcard such as 0.0.0.0, every
 * address of the machine), loopback (127.0.0.1, ::1, localhost), the host name and the node's --name.
 */
export function apiCertificateNames(facts: {
  readonly apiHost: string;
  readonly hostname: string;
  readonly nodeName: string;
  /** The machine's addresses (os.networkInterfaces), used when apiHost is a wildcard. */
  readonly interfaceAddresses: readonly string[];
}): CertificateNames {
  const wildcard = facts.apiHost === '0.0.0.0' || facts.apiHost === '::';
  const ips = ['127.0.0.1', '::1', ...(wildcard ? facts.interfaceAddresses : [facts.apiHost])].filter(
    (host) => isIP(host) !== 0,
  );
  const dns = ['localhost', facts.hostname, facts.nodeName, facts.apiHost].filter(
    (name) => name !== '' && isIP(name) === 0,
  );
  return {
    dns: [...new Set(dns.map((name) => name.toLowerCase()))].sort(),
    ips: [...new Set(ips.map(shortestIp))].sort(),
  };
}

/** A new cluster CA, its key sealed with the cluster key. */
export async function createClusterCa(init: {
  readonly clusterKey: string;
  /** The node that makes it (its name), recorded with it. */
  readonly createdBy: string;
  readonly nowMs: number;
}): Promise<ClusterCaRecord> {
  const x509 = await library();
  const keys = await crypto.subtle.generateKey(keyAlgorithm, true, ['sign', 'verify']);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    // A random suffix tells two clusters' CAs apart in a browser's or openssl's output.
    name: `CN=shoal cluster CA ${randomBytes(4).toString('hex')}`,
    keys,
    serialNumber: serialNumber(),
    notBefore: new Date(init.nowMs - certificateBackdateMs),
    notAfter: new Date(init.nowMs + clusterCaValidityMs),
    signingAlgorithm,
    extensions: [
      // It signs node certificates and nothing that signs further.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certificatePem = certificate.toString('pem');
  const privateKeyDer = new Uint8Array(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  return {
    certificatePem,
    sealedKey: sealCaKey(privateKeyDer, init.clusterKey, certificatePem),
    createdBy: init.createdBy,
    createdAtMs: init.nowMs,
  };
}

/**
 * A node's API certificate and key, signed by the cluster CA (whose key it opens with the cluster key).
 * The certificate PEM holds the chain: the node's certificate, then the CA's.
 */
export async function issueApiCertificate(init: {
  readonly ca: ClusterCaRecord;
  readonly clusterKey: string;
  /** The node's name: the certificate's common name. */
  readonly nodeName: string;
  readonly names: CertificateNames;
  readonly nowMs: number;
}): Promise<ApiTlsIdentity> {
  assert(init.names.dns.length + init.names.ips.length > 0, 'a certificate covers at least one name');
  const x509 = await library();
  const caCertificate = new x509.X509Certificate(init.ca.certificatePem);
  const caKeyDer = Uint8Array.from(openCaKey(init.ca, init.clusterKey));
  const caKey = await crypto.subtle.importKey('pkcs8', caKeyDer, keyAlgorithm, false, ['sign']);
  const keys = await crypto.subtle.generateKey(keyAlgorithm, true, ['sign', 'verify']);
  const certificate = await x509.X509CertificateGenerator.create({
    subject: `CN=${init.nodeName}`,
    issuer: caCertificate.subject,
    publicKey: keys.publicKey,
    signingKey: caKey,
    serialNumber: serialNumber(),
    notBefore: new Date(init.nowMs - certificateBackdateMs),
    notAfter: new Date(init.nowMs + apiCertificateValidityMs),
    signingAlgorithm,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...init.names.dns.map((value) => ({ type: 'dns' as const, value })),
        ...init.names.ips.map((value) => ({ type: 'ip' as const, value })),
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(caCertificate.publicKey),
    ],
  });
  const keyDer = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  const keyPem = createPrivateKey({ key: keyDer, format: 'der', type: 'pkcs8' }).export({
    format: 'pem',
    type: 'pkcs8',
  });
  return {
    certificatePem: `${certificate.toString('pem').trim()}\n${init.ca.certificatePem.trim()}\n`,
    keyPem: String(keyPem),
  };
}

/** Whether a certificate valid until notAfterMs is due for renewal at nowMs. */
export function renewalDue(notAfterMs: number, nowMs: number): boolean {
  return notAfterMs - nowMs < apiCertificateRenewBeforeMs;
}

/** Whether a node keeps the API certificate it has, or issues a new one, and why. */
export type CertificateDecision =
  | { readonly action: 'keep'; readonly notAfterMs: number }
  | { readonly action: 'issue'; readonly reason: string };

/**
 * Keep the certificate a node has, or issue another: it must exist, hold a matching key, be signed by the
 * cluster's CA, cover exactly the names wanted, be valid now and not be due for renewal.
 */
export function apiCertificateDecision(
  current: ApiTlsIdentity | null,
  wanted: { readonly caPem: string; readonly names: CertificateNames },
  nowMs: number,
): CertificateDecision {
  if (current === null) return { action: 'issue', reason: 'this node has no API certificate yet' };
  let leaf: X509Certificate;
  let ca: X509Certificate;
  try {
    leaf = new X509Certificate(firstCertificatePem(current.certificatePem));
    ca = new X509Certificate(wanted.caPem);
    if (!leaf.checkPrivateKey(createPrivateKey(current.keyPem)))
      return { action: 'issue', reason: 'its key does not match its certificate' };
  } catch {
    return { action: 'issue', reason: 'its certificate or key cannot be read' };
  }
  if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey))
    return { action: 'issue', reason: "it is not signed by the cluster's CA" };
  if (!sameNames(certificateNames(leaf), wanted.names))
    return { action: 'issue', reason: 'the names it should cover changed' };
  const notBeforeMs = Date.parse(leaf.validFrom);
  const notAfterMs = Date.parse(leaf.validTo);
  if (nowMs < notBeforeMs) return { action: 'issue', reason: `it is not valid before ${leaf.validFrom}` };
  if (renewalDue(notAfterMs, nowMs)) return { action: 'issue', reason: `it expires ${leaf.validTo}` };
  return { action: 'keep', notAfterMs };
}

/** The names a certificate's subjectAltName covers. */
export function certificateNames(certificate: X509Certificate): CertificateNames {
  const dns: string[] = [];
  const ips: string[] = [];
  for (const entry of (certificate.subjectAltName ?? '').split(', ')) {
    if (entry.startsWith('DNS:')) dns.push(entry.slice('DNS:'.length).toLowerCase());
    else if (entry.startsWith('IP Address:')) ips.push(shortestIp(entry.slice('IP Address:'.length)));
  }
  return { dns: [...new Set(dns)].sort(), ips: [...new Set(ips)].sort() };
}

function sameNames(a: CertificateNames, b: CertificateNames): boolean {
  return a.dns.join(',') === b.dns.join(',') && a.ips.join(',') === b.ips.join(',');
}

/** The first certificate of a PEM chain. */
export function firstCertificatePem(pem: string): string {
  const match = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(pem);
  if (!match) throw invalidArgument('no PEM certificate found (-----BEGIN CERTIFICATE-----)');
  return `${match[0]}\n`;
}

/** A certificate's SHA-256 fingerprint as openssl prints it: 32 hex pairs, upper case, colon-separated. */
export function certificateFingerprint(pem: string): string {
  return new X509Certificate(firstCertificatePem(pem)).fingerprint256;
}

/**
 * A fingerprint as a user gives it, in the form certificateFingerprint prints: hex pairs with or without
 * colons, any case, with or without a `sha256:` prefix. INVALID_ARGUMENT naming `flag` otherwise.
 */
export function parseFingerprint(text: string, flag: string): string {
  const hex = text
    .trim()
    .replace(/^sha-?256:/i, '')
    .replace(/[:\s]/g, '')
    .toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex))
    throw invalidArgument(`${flag} must be a SHA-256 fingerprint: 64 hex digits, colons allowed (AB:CD:…)`);
  return (hex.match(/../g) ?? []).join(':');
}

/** An IP address in its shortest form (IPv6 as a URL host normalises it: 0:0:0:0:0:0:0:1 → ::1). */
function shortestIp(ip: string): string {
  return isIP(ip) === 6 ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip;
}

/** A positive 128-bit serial number, in hex (RFC 5280: positive, at most 20 bytes, unpredictable). */
function serialNumber(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

let loaded: Promise<typeof X509> | null = null;

/**
 * @peculiar/x509, loaded on first use. The bundle keeps it as a lazily evaluated module, so only an agent
 * with `--tls auto` pays for evaluating it. Its dependency tsyringe needs the Reflect metadata API, which
 * reflect-metadata adds to the global Reflect: loaded first, and only here.
 */
function library(): Promise<typeof X509> {
  loaded ??= (async () => {
    await import('reflect-metadata');
    const x509 = await import('@peculiar/x509');
    x509.cryptoProvider.set(crypto);
    return x509;
  })();
  return loaded;
}
