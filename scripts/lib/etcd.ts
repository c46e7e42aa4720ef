/**
 * The etcd anchor for bench:api: Debian's etcd (3.4) as three members on loopback, each client listener
 * served twice — plain HTTP, and HTTPS that demands a client certificate (`etcdctl --cert`'s setup) — so
 * one cluster measures what TLS costs etcd. Certificates come from openssl, made fresh for the run. Writes
 * go through etcd's JSON gateway (`POST /v3/kv/put`), the same server path as etcdctl's gRPC puts, so the
 * load generator is the one the shoal figures use: N Node clients with kept-alive connections.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest, Agent as HttpAgent } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { join } from 'node:path';
import { freePort } from './bench.ts';

/** Whether etcd and openssl are installed (the anchor is skipped, and says so, when they are not). */
export function etcdAvailable(): boolean {
  return ['etcd', 'etcdctl', 'openssl'].every(
    (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0,
  );
}

export interface EtcdCluster {
  /** One member's plain and TLS client endpoints (the leader's, so no write is forwarded). */
  readonly plainUrl: string;
  readonly tlsUrl: string;
  readonly tls: { readonly ca: string; readonly cert: string; readonly key: string };
  readonly caPath: string;
  readonly certPath: string;
  readonly keyPath: string;
  stop(): void;
}

/** A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files in dir. */
function certificates(dir: string): {
  ca: string;
  serverCert: string;
  serverKey: string;
  cert: string;
  key: string;
} {
  const run = (args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: 'ignore' });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  run(['req', '-x509', ...ec, '-days', '1', '-subj', '/CN=bench-ca', '-keyout', 'ca.key', '-out', 'ca.pem']);
  const sign = (name: string, extensions: string): void => {
    run(['req', ...ec, '-subj', `/CN=${name}`, '-keyout', `${name}.key`, '-out', `${name}.csr`]);
    writeFileSync(join(dir, `${name}.ext`), extensions);
    run([
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    ]);
  };
  sign('server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n');
  sign('client', 'extendedKeyUsage=clientAuth\n');
  return {
    ca: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server.key'),
    cert: join(dir, 'client.pem'),
    key: join(dir, 'client.key'),
  };
}

/** Starts three members in dir and waits until a write through the TLS endpoint with --cert succeeds. */
export async function startEtcd(dir: string): Promise<EtcdCluster> {
  const files = certificates(dir);
  const members = await Promise.all(
    [0, 1, 2].map(async (i) => ({
      name: `e${i}`,
      peer: await freePort(),
      plain: await freePort(),
      tls: await freePort(),
    })),
  );
  const initial = members.map((m) => `${m.name}=http://127.0.0.1:${m.peer}`).join(',');
  const processes: ChildProcess[] = members.map((m) =>
    spawn(
      'etcd',
      [
        ...['--name', m.name, '--data-dir', join(dir, m.name)],
        ...['--listen-peer-urls', `http://127.0.0.1:${m.peer}`],
        ...['--initial-advertise-peer-urls', `http://127.0.0.1:${m.peer}`],
        ...['--listen-client-urls', `http://127.0.0.1:${m.plain},https://127.0.0.1:${m.tls}`],
        ...['--advertise-client-urls', `https://127.0.0.1:${m.tls}`],
        ...['--initial-cluster', initial, '--initial-cluster-state', 'new'],
        ...['--cert-file', files.serverCert, '--key-file', files.serverKey],
        ...['--client-cert-auth', '--trusted-ca-file', files.ca],
      ],
      { stdio: 'ignore' },
    ),
  );
  const stop = (): void => {
    for (const child of processes) child.kill('SIGKILL');
  };
  const tlsFlags = ['--cacert', files.ca, '--cert', files.cert, '--key', files.key];
  const endpoints = members.map((m) => `127.0.0.1:${m.tls}`).join(',');
  const deadline = Date.now() + 30_000;
  for (;;) {
    const put = spawnSync('etcdctl', ['--endpoints', endpoints, ...tlsFlags, 'put', 'bench', 'ready'], {
      env: { ...process.env, ETCDCTL_API: '3' },
    });
    if (put.status === 0) break;
    if (Date.now() > deadline) {
      stop();
      throw new Error(`etcd did not accept a write within 30 s: ${put.stderr.toString().trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  // The leader's endpoints: writes to a follower would be forwarded, a hop shoal's figures do not pay.
  const status = spawnSync(
    'etcdctl',
    ['--endpoints', endpoints, ...tlsFlags, 'endpoint', 'status', '-w', 'json'],
    {
      env: { ...process.env, ETCDCTL_API: '3' },
    },
  );
  const statuses = JSON.parse(status.stdout.toString()) as {
    Endpoint: string;
    Status: { header: { member_id: number }; leader: number };
  }[];
  const leaderEndpoint = statuses.find((s) => s.Status.header.member_id === s.Status.leader)?.Endpoint ?? '';
  const leader = members.find((m) => leaderEndpoint.endsWith(`:${m.tls}`)) ?? members[0];
  if (!leader) throw new Error('no etcd members');
  return {
    plainUrl: `http://127.0.0.1:${leader.plain}`,
    tlsUrl: `https://127.0.0.1:${leader.tls}`,
    tls: {
      ca: readFileSync(files.ca, 'utf8'),
      cert: readFileSync(files.cert, 'utf8'),
      key: readFileSync(files.key, 'utf8'),
    },
    caPath: files.ca,
    certPath: files.cert,
    keyPath: files.key,
    stop,
  };
}

/** A client that puts keys through one endpoint's JSON gateway on a kept-alive connection. */
export class EtcdPutClient {
  private readonly url: URL;
  private readonly agent: HttpAgent | HttpsAgent;
  private readonly tls: EtcdCluster['tls'] | null;

  constructor(url: string, tls: EtcdCluster['tls'] | null) {
    this.url = new URL('/v3/kv/put', url);
    this.tls = tls;
    this.agent =
      tls === null
        ? new HttpAgent({ keepAlive: true, maxSockets: 1 })
        : new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: tls.ca, cert: tls.cert, key: tls.key });
  }

  put(key: string, value: string): Promise<void> {
    const body = JSON.stringify({
      key: Buffer.from(key).toString('base64'),
      value: Buffer.from(value).toString('base64'),
    });
    const send = this.tls === null ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = send(
        this.url,
        {
          method: 'POST',
          agent: this.agent,
          headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          res.resume();
          res.on('end', () => {
            if (res.statusCode === 200) resolve();
            else reject(new Error(`etcd answered ${res.statusCode ?? '?'} to a put`));
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
