/** host:port parsing and conversions to libp2p multiaddrs, with errors a user can act on. */
import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import { invalidArgument } from '../shared/errors.ts';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export function parseHostPort(value: string, flag: string): HostPort {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value.trim());
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (!match || host === undefined || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw invalidArgument(`${flag} ${JSON.stringify(value)} is not HOST:PORT (e.g. 127.0.0.1:4700)`);
  }
  return { host, port };
}

export function formatHostPort({ host, port }: HostPort): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

export function toMultiaddr({ host, port }: HostPort): string {
  const family = isIP(host);
  if (family === 4) return `/ip4/${host}/tcp/${port}`;
  if (family === 6) return `/ip6/${host}/tcp/${port}`;
  return `/dns/${host}/tcp/${port}`;
}

/** A join target: a multiaddr as is, or host:port. */
export function parseJoinTarget(value: string): string {
  if (value.startsWith('/')) return value;
  return toMultiaddr(parseHostPort(value, '--join'));
}

/** The address other machines should use: the listen host, or this machine's first external IPv4. */
export function advertisedHost(listenHost: string): string {
  if (listenHost !== '0.0.0.0' && listenHost !== '::') return listenHost;
  for (const addresses of Object.values(networkInterfaces())) {
    for (const address of addresses ?? []) {
      if (address.family === 'IPv4' && !address.internal) return address.address;
    }
  }
  return '127.0.0.1';
}

/** Whether a listen host is reachable only from this machine. */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost' || host === '::1') return true;
  return isIP(host) === 4 && host.startsWith('127.');
}
