/**
 * The API's TLS on a node. `--tls auto`: a certificate signed by the cluster CA (certificates.ts), kept in
 * the data dir so a restart serves at once without asking the cluster, checked daily and renewed when it
 * is due; the CA is made, the first time a node needs it, through the replicated log. `--tls-cert FILE
 * --tls-key FILE`: an operator's own certificate, read once at start. This file owns the files, the timer
 * and the talk with the cluster; the decisions are certificates.ts's.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import type { ApiTlsIdentity } from '../api/index.ts';
import type { ClusterCaRecord, ClusterState } from '../cluster/index.ts';
import { ShoalError, errorMessage, invalidArgument, writeFileAtomic, type Logger } from '../shared/index.ts';
import {
  apiCertificateCheckIntervalMs,
  apiCertificateDecision,
  certificateFingerprint,
  createClusterCa,
  issueApiCertificate,
  type CertificateNames,
} from './certificates.ts';
import type { Control } from './control.ts';
import { setTimeout as sleep } from 'node:timers/promises';

/** How the agent serves its API's TCP listener. */
export type ApiTlsMode =
  | { readonly kind: 'off' }
  | { readonly kind: 'auto' }
  | { readonly kind: 'files'; readonly certificateFile: string; readonly keyFile: string };

/** The node's API certificate (its chain: the node's, then the CA's) and key, in the data dir (0600). */
export const apiCertificateFileName = 'api-tls.crt';
export const apiKeyFileName = 'api-tls.key';
/**
 * How long an agent with `--tls auto` and no certificate yet waits for the cluster: for a leader to commit
 * the CA, or for this node to catch up with the one committed. A new cluster elects itself within a second.
 */
export const clusterCaWaitMs = 60_000;
/** Between two attempts to reach the cluster for the CA. */
const clusterCaRetryMs = 250;

/** An operator's certificate and key (`--tls-cert`, `--tls-key`); INVALID_ARGUMENT when they do not make a pair. */
export function readOperatorCertificate(certificateFile: string, keyFile: string): ApiTlsIdentity {
  const read = (file: string, flag: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (error) {
      throw invalidArgument(`cannot read ${flag} ${file}: ${errorMessage(error)}`);
    }
  };
  const identity = {
    certificatePem: read(certificateFile, '--tls-cert'),
    keyPem: read(keyFile, '--tls-key'),
  };
  try {
    // What the server will do with them: fails on an unreadable PEM or a key that is not the certificate's.
    createSecureContext({ cert: identity.certificatePem, key: identity.keyPem });
  } catch (error) {
    throw invalidArgument(
      `--tls-cert ${certificateFile} and --tls-key ${keyFile} are not a certificate and its key: ${errorMessage(error)}`,
    );
  }
  return identity;
}

export interface AutoTlsInit {
  readonly dataDir: string;
  readonly clusterKey: string;
  readonly nodeName: string;
  /** What the certificate covers (apiCertificateNames). */
  readonly names: CertificateNames;
  readonly state: ClusterState;
  readonly control: Control;
  readonly logger: Logger;
  readonly isStopped: () => boolean;
  /** The clock (tests move it). */
  readonly nowMs?: () => number;
}

/** `--tls auto`: the node's certificate from the cluster CA, cached, and renewed before it expires. */
export class AutoTls {
  private readonly init: AutoTlsInit;
  private readonly nowMs: () => number;
  private current: ApiTlsIdentity | null;
  private timer: NodeJS.Timeout | null = null;

  constructor(init: AutoTlsInit) {
    this.init = init;
    this.nowMs = init.nowMs ?? Date.now;
    this.current = this.readCached();
  }

  /** The certificate to serve now: the cached one while it is good, else a new one (which may wait for the cluster). */
  async identity(): Promise<ApiTlsIdentity> {
    return (await this.refresh()).identity;
  }

  /** Checks the certificate every apiCertificateCheckIntervalMs; hands a renewed one to `renewed`. */
  startRenewal(renewed: (identity: ApiTlsIdentity) => void): void {
    this.timer = setInterval(() => {
      this.refresh().then(
        ({ identity, issued }) => {
          if (issued) renewed(identity);
        },
        // Tried again at the next check; a month remains when renewal begins (apiCertificateRenewBeforeMs).
        (error: unknown) =>
          this.init.logger.warn('cannot renew the API certificate', { error: errorMessage(error) }),
      );
    }, apiCertificateCheckIntervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
  }

  /** The CA fingerprint users pin (`shoal login --ca-fingerprint`). */
  caFingerprint(): string | null {
    const ca = this.init.state.clusterCa?.certificatePem ?? this.cachedCaPem();
    return ca === null ? null : certificateFingerprint(ca);
  }

  private async refresh(): Promise<{ identity: ApiTlsIdentity; issued: boolean }> {
    const { state, names, logger } = this.init;
    // The CA to check against: the state's, or, before this node has applied it, the one it cached with its
    // certificate (its own data dir, as trusted as the cluster key beside it).
    const caPem = state.clusterCa?.certificatePem ?? this.cachedCaPem();
    let reason = 'this node has no API certificate yet';
    if (this.current !== null && caPem !== null) {
      const decision = apiCertificateDecision(this.current, { caPem, names }, this.nowMs());
      if (decision.action === 'keep') return { identity: this.current, issued: false };
      reason = decision.reason;
    }
    const ca = await this.clusterCa();
    const identity = await issueApiCertificate({
      ca,
      clusterKey: this.init.clusterKey,
      nodeName: this.init.nodeName,
      names,
      nowMs: this.nowMs(),
    });
    writeFileAtomic(join(this.init.dataDir, apiKeyFileName), identity.keyPem, { mode: 0o600 });
    writeFileAtomic(join(this.init.dataDir, apiCertificateFileName), identity.certificatePem, {
      mode: 0o600,
    });
    this.current = identity;
    logger.info('issued this node its API certificate from the cluster CA', {
      why: reason,
      dns: names.dns.join(','),
      ips: names.ips.join(','),
    });
    return { identity, issued: true };
  }

  /**
   * The cluster's CA: the one in the state, or one this node makes and commits. Two nodes may race to make
   * it; the state takes the first committed and refuses the other (CONFLICT), whose maker then reads it.
   */
  private async clusterCa(): Promise<ClusterCaRecord> {
    const { state, control, logger } = this.init;
    // Read afresh each time: the state changes as entries apply, across the awaits below.
    const committed = (): ClusterCaRecord | null => state.clusterCa;
    const deadline = Date.now() + clusterCaWaitMs;
    let made: ClusterCaRecord | null = null;
    let lastError = 'no leader answered';
    while (!this.init.isStopped()) {
      const known = committed();
      if (known !== null) return known;
      try {
        // Caught up with the leader first: a CA another node made may be committed but not applied here.
        await control.readIndexOnce();
        const applied = committed();
        if (applied !== null) return applied;
        made ??= await createClusterCa({
          clusterKey: this.init.clusterKey,
          createdBy: this.init.nodeName,
          nowMs: this.nowMs(),
        });
        const result = await control.propose({ type: 'setClusterCa', ca: made, atMs: this.nowMs() });
        if (result.ok) {
          logger.info('made the cluster CA', { fingerprint: certificateFingerprint(made.certificatePem) });
          return made;
        }
        lastError = result.message;
      } catch (error) {
        lastError = errorMessage(error);
      }
      if (Date.now() >= deadline) break;
      await sleep(clusterCaRetryMs);
    }
    throw new ShoalError(
      'UNAVAILABLE',
      `--tls auto: cannot get the cluster CA within ${clusterCaWaitMs / 1000} s (${lastError}); a node's first certificate needs the cluster's leader`,
    );
  }

  private readCached(): ApiTlsIdentity | null {
    const certificate = join(this.init.dataDir, apiCertificateFileName);
    const key = join(this.init.dataDir, apiKeyFileName);
    if (!existsSync(certificate) || !existsSync(key)) return null;
    try {
      return { certificatePem: readFileSync(certificate, 'utf8'), keyPem: readFileSync(key, 'utf8') };
    } catch (error) {
      this.init.logger.warn('cannot read the cached API certificate; issuing another', {
        error: errorMessage(error),
      });
      return null;
    }
  }

  /** The CA certificate cached as the second of the chain. */
  private cachedCaPem(): string | null {
    const blocks = this.current?.certificatePem.match(
      /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g,
    );
    return blocks?.[1] === undefined ? null : `${blocks[1]}\n`;
  }
}
