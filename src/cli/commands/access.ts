/**
 * Reaching a cluster from elsewhere: `shoal login` (check a node's CA by its fingerprint, then store the
 * address, the token and the CA for later commands), `shoal ca` (the fingerprint an admin hands to users)
 * and `shoal key show` (the cluster key another node joins with).
 */
import { ShoalClient, httpsAddressPrefix } from '../../api/index.ts';
import { certificateFingerprint, formatHostPort, parseFingerprint, parseHostPort } from '../../node/index.ts';
import { ShoalError, invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { cliConfigPath, writeCliConfig } from '../config.ts';
import { apiFlags, apiToken, readCertificateFile } from '../flags.ts';

/** How long login waits for each answer: a node that takes longer is not worth storing. */
const loginTimeoutMs = 10_000;

export const loginCommand: Command = defineCommand({
  name: 'login',
  summary: "check a node's CA by its fingerprint, then remember its address, the CA and a token",
  synopsis: [
    'shoal login HOST:PORT --ca-fingerprint SHA256 [--token SECRET]',
    'shoal login HOST:PORT --ca FILE [--token SECRET]',
  ],
  description:
    "Connects to a node's API over TLS, reads the cluster CA's certificate and checks its SHA-256\n" +
    'fingerprint against the one given (an admin prints it on a node with shoal ca fingerprint); a wrong\n' +
    'one is refused. Then checks the token, if given, over a connection verified against that CA, and\n' +
    `stores the address, the token and the CA in ${cliConfigPath()} (0600), so that later commands on this\n` +
    'machine (shoal ps) need no --addr, --token or --ca. --addr, SHOAL_ADDR, --token and SHOAL_TOKEN still\n' +
    'take precedence.',
  options: {
    'ca-fingerprint': {
      type: 'string',
      value: 'SHA256',
      help: "the cluster CA's SHA-256 fingerprint (AB:CD:…), from shoal ca fingerprint on a node",
    },
    ...apiFlags,
  },
  allowPositionals: true,
  run: async ({ values, positionals }) => {
    if (positionals.length > 1) throw invalidArgument('shoal login takes one HOST:PORT');
    const given = positionals[0] ?? values.addr;
    if (given === undefined) throw invalidArgument('shoal login needs the address of a node: HOST:PORT');
    const hostPort = parseHostPort(given.replace(/^https:\/\//i, '').replace(/\/+$/, ''), 'the address');
    const address = `${httpsAddressPrefix}${formatHostPort(hostPort)}`;
    const fingerprint = values['ca-fingerprint'];
    if (fingerprint !== undefined && values.ca !== undefined)
      throw invalidArgument('give --ca-fingerprint SHA256 or --ca FILE, not both');
    let caPem: string;
    if (fingerprint !== undefined)
      caPem = await pinnedCa(address, parseFingerprint(fingerprint, '--ca-fingerprint'));
    else if (values.ca !== undefined) caPem = readCertificateFile(values.ca, '--ca');
    else
      throw invalidArgument(
        'shoal login needs the cluster CA: --ca-fingerprint SHA256 (an admin prints it on a node with shoal ca fingerprint) or --ca FILE',
      );
    const token = apiToken(values);
    // Everything from here on is verified against the CA: the token goes to no other server.
    const client = new ShoalClient({
      address,
      ca: caPem,
      timeoutMs: loginTimeoutMs,
      ...(token === undefined ? {} : { token }),
    });
    let node: string;
    try {
      node = token === undefined ? (await client.call('health')).node : (await client.status()).name;
    } finally {
      client.close();
    }
    const path = writeCliConfig({ address, caPem, ...(token === undefined ? {} : { token }) });
    process.stderr.write(
      `logged in to ${address} (node ${node}${token === undefined ? ', no token' : ''}); stored in ${path}\n`,
    );
    return 0;
  },
});

/**
 * The cluster CA's certificate as the node at `address` serves it, if its fingerprint is `fingerprint`.
 * Read over TLS without verifying the server (the CA is what is not known yet) and with no token; what it
 * returns is then trusted only because its fingerprint matches the one the user was given.
 */
async function pinnedCa(address: string, fingerprint: string): Promise<string> {
  const client = new ShoalClient({ address, unverified: true, timeoutMs: loginTimeoutMs, keepAlive: false });
  const { certificatePem } = await client.clusterCa();
  let served: string;
  try {
    served = certificateFingerprint(certificatePem);
  } catch {
    throw new ShoalError('INTERNAL', `${address} answered with a CA certificate that cannot be read`);
  }
  if (served !== fingerprint)
    throw new ShoalError(
      'PERMISSION_DENIED',
      `the CA of ${address} does not have the fingerprint given; not logged in. Check it with an admin (shoal ca fingerprint, on a node): if it is right, something is between you and the cluster`,
    );
  return certificatePem;
}

export const caCommand: Command = defineCommand({
  name: 'ca',
  summary: "print the cluster CA's fingerprint (for shoal login) or its certificate",
  synopsis: ['shoal ca fingerprint', 'shoal ca cert'],
  description:
    "fingerprint prints the SHA-256 fingerprint of the cluster's CA, which signs every node's API\n" +
    'certificate under shoal agent --tls auto: give it to users for shoal login --ca-fingerprint. cert prints\n' +
    "the CA's certificate (PEM), for --ca FILE or other clients. Run on a node, they ask it over its Unix\n" +
    'socket; the CA is public, and a node serves it without a token.',
  options: { ...apiFlags },
  allowPositionals: true,
  run: async ({ values, positionals }, usage) => {
    const [action, ...rest] = positionals;
    if (action === undefined) {
      process.stdout.write(usage);
      return 0;
    }
    if (rest.length > 0 || (action !== 'fingerprint' && action !== 'cert'))
      throw invalidArgument('use shoal ca fingerprint|cert (see shoal ca --help)');
    return withClient(values, async (client) => {
      const { certificatePem } = await client.clusterCa();
      process.stdout.write(
        action === 'cert' ? certificatePem : `${certificateFingerprint(certificatePem)}\n`,
      );
      return 0;
    });
  },
});

export const keyCommand: Command = defineCommand({
  name: 'key',
  summary: 'print the cluster key, which another node joins with (admin)',
  synopsis: ['shoal key show'],
  description:
    'Prints the cluster key on stdout: another node joins with shoal agent --join HOST:PORT --key-file FILE\n' +
    '(or --key KEY). It is a secret: whoever has it can join a node and read what the cluster holds. Needs\n' +
    "an admin token, or the node's Unix socket.",
  options: { ...apiFlags },
  allowPositionals: true,
  run: async ({ values, positionals }, usage) => {
    const [action, ...rest] = positionals;
    if (action === undefined) {
      process.stdout.write(usage);
      return 0;
    }
    if (action !== 'show' || rest.length > 0)
      throw invalidArgument('use shoal key show (see shoal key --help)');
    return withClient(values, async (client) => {
      process.stdout.write(`${(await client.clusterKey()).key}\n`);
      return 0;
    });
  },
});
