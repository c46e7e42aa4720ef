/**
 * DNS for services, on every node (like Consul's DNS interface), so ordinary clients find a job's
 * healthy instances without a sidecar: `web.service.shoal` (namespace `default`) or
 * `web.team.service.shoal` answer A records, SRV records give each instance's first port, and
 * `_http._tcp.web.service.shoal` its port named http. SRV targets are `<8 hex digits>.addr.shoal`
 * (Consul's `.addr.` names), answered from the name itself, with the matching A records as additionals.
 *
 * Packets are encoded and decoded by dns-packet; nothing here writes wire bytes by hand except the 2-byte
 * length prefix of DNS over TCP. The decisions are pure functions (parseQueryName, buildResponse,
 * truncateResponse, answerMessage), the sockets a thin shell around them (startDnsServer).
 *
 * DNS is case-insensitive, so the lookup receives names lower-cased. A job or namespace whose name holds
 * "." (a label separator), or differs from another only by case, cannot be told apart here.
 */
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { createServer, isIPv4, isIPv6, type Server, type Socket } from 'node:net';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, OptAnswer, Packet, SoaAnswer } from 'dns-packet';
import { ShoalError, assert, errorMessage, invalidArgument, mebibyte, type Logger } from '../shared/index.ts';

export interface ServiceInstanceAddress {
  /** The task's id (stable per instance); not in answers. */
  readonly id: string;
  /** IPv4 address of the node the instance runs on. */
  readonly address: string;
  /** Its host ports, in the order the task declares them. */
  readonly ports: readonly { readonly name: string; readonly port: number }[];
}

/** Healthy instances of a service (a job's name) in a namespace; null when there is no such service. */
export type ServiceLookup = (service: string, namespace: string) => readonly ServiceInstanceAddress[] | null;

export interface DnsServerInit {
  /** The address to listen on, UDP and TCP, e.g. 127.0.0.1. */
  readonly host: string;
  /** dnsPortDefault in the product; 0 picks a free port (the same one for UDP and TCP). */
  readonly port: number;
  /** The zone answered; 'shoal' by default. */
  readonly domain?: string;
  /** How long clients may cache answers, 0 to ttlSecondsMax. */
  readonly ttlSeconds: number;
  readonly lookup: ServiceLookup;
  readonly logger: Logger;
}

export interface DnsServer {
  readonly host: string;
  readonly port: number;
  close(): Promise<void>;
}

export const dnsPortDefault = 8600;
export const dnsDomainDefault = 'shoal';
/** Instances come and go with health checks: a longer TTL would keep clients on dead ones. */
export const ttlSecondsMax = 5;
/** The namespace of `NAME.service.shoal`, without one. */
const namespaceDefault = 'default';
/** Classic DNS over UDP without EDNS (RFC 1035 §4.2.1). */
const udpPayloadBytesClassic = 512;
/** The most we send over UDP even when a client offers more: the DNS Flag Day 2020 size, below fragmentation. */
const udpPayloadBytesMax = 1232;
/** DNS over TCP frames a message with a 16-bit length. */
const tcpMessageBytesMax = 65_535;
/** A TCP client silent this long is disconnected (RFC 7766 §6.2.3 asks for seconds, not minutes). */
const tcpIdleTimeoutMs = 10_000;
/** Connections beyond this are closed at once, so idle clients cannot exhaust file descriptors. */
export const tcpConnectionsMax = 256;
/** A TCP client that sends queries without reading answers is cut off once this much waits for it. */
const tcpWriteBacklogBytesMax = mebibyte;
/** With port 0 the UDP socket takes the TCP listener's port, which UDP may already use: tries before giving up. */
const bindAttemptsMax = 5;
/** The longest label DNS allows (RFC 1035 §2.3.4). */
const labelLengthMax = 63;
const portMax = 65_535;
/** The answers' order rotates with a counter that wraps here (any bound works; it stays a small integer). */
const rotationWrap = 1 << 30;
/** The SOA's timers are for secondaries doing zone transfers, which we do not offer: usual values. */
const soaSerial = 1;
const soaRefreshSeconds = 3600;
const soaRetrySeconds = 600;
const soaExpireSeconds = 86_400;

// Header fields dns-packet leaves to the flags word (it decodes them but does not take them apart on encode).
const rcodes = { noError: 0, formErr: 1, servFail: 2, nxDomain: 3, notImp: 4, refused: 5 } as const;
type Rcode = (typeof rcodes)[keyof typeof rcodes];
/** EDNS's BADVERS (16) does not fit the header's 4 bits: its upper bits go in the OPT record. */
const badVersExtendedRcode = 1;
const opcodeQuery = 0;
const opcodeShift = 11;
const opcodeMask = 0xf;
const headerBytes = 12;
const qrBit = 0x8000;

/** What a question's name asks for. */
export type QueryName =
  /** A service's instances; port is the lower-cased name of `_PORT._tcp.…`, or null for the first port. */
  | {
      readonly kind: 'service';
      readonly service: string;
      readonly namespace: string;
      readonly port: string | null;
    }
  /** `<8 hex digits>.addr.DOMAIN`: the IPv4 address it spells. */
  | { readonly kind: 'addr'; readonly address: string }
  /** DOMAIN itself. */
  | { readonly kind: 'apex' }
  /** Inside DOMAIN but nothing we name: NXDOMAIN. */
  | { readonly kind: 'unknown' }
  /** Not in DOMAIN: REFUSED (we are no resolver). */
  | { readonly kind: 'outside' };

/** A domain as we compare names: lower case, no leading or trailing dot. */
function normalizeName(name: string): string {
  return name.toLowerCase().replace(/^\.+|\.+$/g, '');
}

/** Which name a question asks for, in `domain` (normalized: lower case, no trailing dot). */
export function parseQueryName(name: string, domain: string): QueryName {
  const normalized = normalizeName(name);
  if (normalized === domain) return { kind: 'apex' };
  if (!normalized.endsWith(`.${domain}`)) return { kind: 'outside' };
  const labels = normalized.slice(0, -(domain.length + 1)).split('.');
  if (labels.some((label) => label === '')) return { kind: 'unknown' };
  const last = labels[labels.length - 1];
  if (last === 'addr') {
    const [hex] = labels;
    if (labels.length !== 2 || hex === undefined || !/^[0-9a-f]{8}$/.test(hex)) return { kind: 'unknown' };
    const octets = [0, 2, 4, 6].map((at) => Number.parseInt(hex.slice(at, at + 2), 16));
    return { kind: 'addr', address: octets.join('.') };
  }
  if (last !== 'service') return { kind: 'unknown' };
  const parts = labels.slice(0, -1);
  let port: string | null = null;
  // `_PORT._tcp.NAME[.NAMESPACE]`: RFC 2782's service and protocol labels in front of the service's name.
  if (parts[0]?.startsWith('_')) {
    if (parts[1] !== '_tcp' || parts[0].length < 2) return { kind: 'unknown' };
    port = parts[0].slice(1);
    parts.splice(0, 2);
  }
  const [service, namespace = namespaceDefault] = parts;
  if (service === undefined || parts.length > 2) return { kind: 'unknown' };
  return { kind: 'service', service, namespace, port };
}

/** An IPv4 address as the 8 hex digits of its `.addr.` name. */
export function addressHex(address: string): string {
  return address
    .split('.')
    .map((octet) => Number(octet).toString(16).padStart(2, '0'))
    .join('');
}

/** The list starting at `rotation` (mod its length), wrapping around: round robin across queries. */
function rotate<T>(items: readonly T[], rotation: number): T[] {
  if (items.length === 0) return [];
  const start = rotation % items.length;
  return [...items.slice(start), ...items.slice(0, start)];
}

function isPort(port: number): boolean {
  return Number.isInteger(port) && port > 0 && port <= portMax;
}

export interface AnswerContext {
  /** Normalized: lower case, no trailing dot. */
  readonly domain: string;
  readonly ttlSeconds: number;
  readonly lookup: ServiceLookup;
  /** Where the answers' rotation starts; the server counts queries. */
  readonly rotation: number;
}

function flagsOf(query: DecodedPacket, rcode: Rcode, authoritative: boolean): number {
  const opcode = (query.flags ?? 0) & (opcodeMask << opcodeShift);
  const recursionDesired = (query.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
  return opcode | recursionDesired | (authoritative ? dnsPacket.AUTHORITATIVE_ANSWER : 0) | rcode;
}

function soaOf(context: AnswerContext): SoaAnswer {
  const { domain, ttlSeconds } = context;
  return {
    type: 'SOA',
    name: domain,
    ttl: ttlSeconds,
    class: 'IN',
    data: {
      mname: `ns.${domain}`,
      rname: `hostmaster.${domain}`,
      serial: soaSerial,
      refresh: soaRefreshSeconds,
      retry: soaRetrySeconds,
      expire: soaExpireSeconds,
      // The TTL of negative answers (RFC 2308): the same short one, so a new service is found quickly.
      minimum: ttlSeconds,
    },
  };
}

/** The client's EDNS record, if its query has one. */
function ednsOf(query: DecodedPacket): OptAnswer | undefined {
  return query.additionals?.find((record): record is OptAnswer => record.type === 'OPT');
}

/** Our EDNS record in answers to queries that carry one (RFC 6891 §7). */
function ednsAnswer(extendedRcode = 0): OptAnswer {
  return {
    type: 'OPT',
    name: '.',
    udpPayloadSize: udpPayloadBytesMax,
    extendedRcode,
    ednsVersion: 0,
    flags: 0,
    flag_do: false,
    options: [],
  };
}

/**
 * The response to a decoded query with exactly one question (the caller checks), before any truncation.
 * Calls the lookup at most once; throws what it throws.
 */
export function buildResponse(query: DecodedPacket, context: AnswerContext): Packet {
  const [question] = query.questions ?? [];
  assert(question !== undefined && query.questions?.length === 1, 'buildResponse takes one question');
  const edns = ednsOf(query);
  const additionals: Answer[] = edns ? [ednsAnswer()] : [];
  const reply = (rcode: Rcode, authoritative: boolean, records: Partial<Packet> = {}): Packet => ({
    type: 'response',
    id: query.id ?? 0,
    flags: flagsOf(query, rcode, authoritative),
    questions: [question],
    answers: records.answers ?? [],
    authorities: records.authorities ?? [],
    additionals: [...(records.additionals ?? []), ...additionals],
  });
  if ((((query.flags ?? 0) >> opcodeShift) & opcodeMask) !== opcodeQuery) return reply(rcodes.notImp, false);
  if (edns && edns.ednsVersion !== 0) {
    // RFC 6891 §6.1.3: BADVERS, and the version we speak (0) in our OPT record.
    return { ...reply(rcodes.noError, false), additionals: [ednsAnswer(badVersExtendedRcode)] };
  }
  if (question.class !== undefined && question.class !== 'IN' && question.class !== 'ANY')
    return reply(rcodes.refused, false);

  const { ttlSeconds } = context;
  const noData = (): Packet => reply(rcodes.noError, true, { authorities: [soaOf(context)] });
  const nxDomain = (): Packet => reply(rcodes.nxDomain, true, { authorities: [soaOf(context)] });
  const aRecord = (name: string, address: string): Answer => ({
    type: 'A',
    name,
    ttl: ttlSeconds,
    class: 'IN',
    data: address,
  });
  // The types dns-packet declares leave out ANY and the ones it decodes as UNKNOWN_n.
  const type: string = question.type;
  const wantsA = type === 'A' || type === 'ANY';
  const parsed = parseQueryName(question.name, context.domain);
  switch (parsed.kind) {
    case 'outside':
      return reply(rcodes.refused, false);
    case 'unknown':
      return nxDomain();
    case 'apex':
      if (question.type === 'SOA') return reply(rcodes.noError, true, { answers: [soaOf(context)] });
      return noData();
    case 'addr':
      return wantsA
        ? reply(rcodes.noError, true, { answers: [aRecord(question.name, parsed.address)] })
        : noData();
    case 'service':
      break;
  }

  const found = context.lookup(parsed.service, parsed.namespace);
  if (found === null) return nxDomain();
  // Each instance with the port asked for (or its first port, if any), on an address an A record can hold.
  const instances: { readonly address: string; readonly port: number | null }[] = [];
  for (const instance of found) {
    const port =
      parsed.port === null
        ? instance.ports[0]
        : instance.ports.find((candidate) => candidate.name.toLowerCase() === parsed.port);
    if (!isIPv4(instance.address) || (parsed.port !== null && port === undefined)) continue;
    instances.push({
      address: instance.address,
      port: port !== undefined && isPort(port.port) ? port.port : null,
    });
  }
  // A port no instance has is no name at all; with no instances at all we cannot tell, and say NOERROR.
  if (parsed.port !== null && instances.length === 0 && found.length > 0) return nxDomain();

  if (wantsA) {
    const addresses = [...new Set(instances.map((instance) => instance.address))];
    const answers = rotate(addresses, context.rotation).map((address) => aRecord(question.name, address));
    return answers.length === 0 ? noData() : reply(rcodes.noError, true, { answers });
  }
  if (question.type === 'SRV') {
    const withPort = instances.flatMap(({ address, port }) => (port === null ? [] : [{ address, port }]));
    if (withPort.length === 0) return noData();
    const rotated = rotate(withPort, context.rotation);
    const answers: Answer[] = rotated.map((instance) => ({
      type: 'SRV',
      name: question.name,
      ttl: ttlSeconds,
      class: 'IN',
      data: {
        priority: 1,
        weight: 1,
        port: instance.port,
        target: `${addressHex(instance.address)}.addr.${context.domain}`,
      },
    }));
    const glue = [...new Set(rotated.map((instance) => instance.address))].map((address) =>
      aRecord(`${addressHex(address)}.addr.${context.domain}`, address),
    );
    return reply(rcodes.noError, true, { answers, additionals: glue });
  }
  return noData();
}

/** What one record adds to an encoded message (dns-packet compresses no names, so sizes add up). */
function recordBytes(record: Answer): number {
  return dnsPacket.encodingLength({ answers: [record] }) - headerBytes;
}

/**
 * The response cut to `sizeMaxBytes` encoded. Answers that do not all fit are cut and TC set, so clients
 * ask again over TCP; additionals that do not fit are left out without TC (RFC 2181 §9), EDNS's kept.
 */
export function truncateResponse(response: Packet, sizeMaxBytes: number): Packet {
  if (dnsPacket.encodingLength(response) <= sizeMaxBytes) return response;
  const edns = (response.additionals ?? []).filter((record) => record.type === 'OPT');
  const base: Packet = { ...response, answers: [], authorities: [], additionals: edns };
  let bytes = dnsPacket.encodingLength(base);
  const take = (records: readonly Answer[]): Answer[] => {
    const taken: Answer[] = [];
    for (const record of records) {
      const more = recordBytes(record);
      if (bytes + more > sizeMaxBytes) break;
      bytes += more;
      taken.push(record);
    }
    return taken;
  };
  const answers = response.answers ?? [];
  const keptAnswers = take(answers);
  if (keptAnswers.length < answers.length)
    return { ...base, flags: (response.flags ?? 0) | dnsPacket.TRUNCATED_RESPONSE, answers: keptAnswers };
  const authorities = take(response.authorities ?? []);
  const extra = take((response.additionals ?? []).filter((record) => record.type !== 'OPT'));
  return { ...base, answers: keptAnswers, authorities, additionals: [...extra, ...edns] };
}

/** The most a UDP answer to `query` may take: 512 bytes, or the client's EDNS size up to ours. */
export function udpSizeMaxBytes(query: DecodedPacket): number {
  const edns = ednsOf(query);
  if (!edns) return udpPayloadBytesClassic;
  return Math.min(Math.max(edns.udpPayloadSize, udpPayloadBytesClassic), udpPayloadBytesMax);
}

/** A name we can answer for: printable ASCII in labels of at most 63 characters (what re-encodes as it came). */
function isEncodableName(name: string): boolean {
  return /^[\x21-\x7e]*$/.test(name) && name.split('.').every((label) => label.length <= labelLengthMax);
}

export type DnsTransport = 'udp' | 'tcp';

/**
 * The encoded answer to one message, or null to stay silent: too short for a header, or itself a response
 * (answering those could loop between two servers). Undecodable messages get FORMERR; a lookup that throws,
 * SERVFAIL.
 */
export function answerMessage(
  message: Buffer,
  transport: DnsTransport,
  context: AnswerContext,
): Buffer | null {
  if (message.length < headerBytes) return null;
  const headerFlags = message.readUInt16BE(2);
  if ((headerFlags & qrBit) !== 0) return null;
  const id = message.readUInt16BE(0);
  const bare = (rcode: Rcode): Buffer =>
    dnsPacket.encode({
      type: 'response',
      id,
      flags: (headerFlags & ((opcodeMask << opcodeShift) | dnsPacket.RECURSION_DESIRED)) | rcode,
    });
  let query: DecodedPacket;
  try {
    query = dnsPacket.decode(message);
  } catch {
    return bare(rcodes.formErr);
  }
  const questions = query.questions ?? [];
  if (questions.length !== 1 || !questions.every((question) => isEncodableName(question.name)))
    return bare(rcodes.formErr);
  try {
    const sizeMaxBytes = transport === 'udp' ? udpSizeMaxBytes(query) : tcpMessageBytesMax;
    return dnsPacket.encode(truncateResponse(buildResponse(query, context), sizeMaxBytes));
  } catch {
    return bare(rcodes.servFail);
  }
}

/** Starts answering on `host:port`, UDP and TCP; resolves once both listen. */
export async function startDnsServer(init: DnsServerInit): Promise<DnsServer> {
  const { host, logger } = init;
  const domain = normalizeName(init.domain ?? dnsDomainDefault);
  if (!domain.split('.').every((label) => /^[a-z0-9-]+$/.test(label) && label.length <= labelLengthMax))
    throw invalidArgument(`DNS domain "${init.domain ?? ''}" is not a domain name`);
  if (!Number.isInteger(init.ttlSeconds) || init.ttlSeconds < 0 || init.ttlSeconds > ttlSecondsMax)
    throw invalidArgument(
      `DNS TTL ${init.ttlSeconds} must be a whole number of seconds from 0 to ${ttlSecondsMax}`,
    );
  if (!Number.isInteger(init.port) || init.port < 0 || init.port > portMax)
    throw invalidArgument(`DNS port ${init.port} must be from 0 to ${portMax}`);

  let rotation = 0;
  const lookup: ServiceLookup = (service, namespace) => {
    try {
      return init.lookup(service, namespace);
    } catch (error) {
      logger.warn('service lookup failed; answered SERVFAIL', {
        service,
        namespace,
        error: errorMessage(error),
      });
      throw error;
    }
  };
  const answer = (message: Buffer, transport: DnsTransport, from: string): Buffer | null => {
    rotation = (rotation + 1) % rotationWrap;
    const response = answerMessage(message, transport, {
      domain,
      ttlSeconds: init.ttlSeconds,
      lookup,
      rotation,
    });
    if (response === null) logger.debug('ignored a DNS message', { transport, from, bytes: message.length });
    return response;
  };

  const connections = new Set<Socket>();
  const tcp = createServer((socket) => serveTcp(socket, connections, answer, logger));
  let udp: UdpSocket | null = null;
  let port = init.port;
  for (let attempt = 1; udp === null; attempt++) {
    await listenTcp(tcp, host, port);
    const address = tcp.address();
    assert(address !== null && typeof address === 'object', 'a TCP listener has an address');
    try {
      udp = await bindUdp(host, address.port);
      port = address.port;
    } catch (error) {
      await closeTcp(tcp);
      if (init.port !== 0 || attempt >= bindAttemptsMax)
        throw new ShoalError(
          'UNAVAILABLE',
          `cannot serve DNS on UDP ${host}:${address.port}: ${errorMessage(error)}`,
        );
    }
  }
  const udpSocket = udp;
  udpSocket.on('message', (message: Buffer, remote: RemoteInfo) => {
    const response = answer(message, 'udp', `${remote.address}:${remote.port}`);
    if (response === null) return;
    udpSocket.send(response, remote.port, remote.address, (error) => {
      if (error) logger.debug('cannot send a DNS answer', { to: remote.address, error: error.message });
    });
  });
  // After binding, errors are about single datagrams (e.g. ICMP unreachable); the socket keeps serving.
  udpSocket.on('error', (error) => logger.warn('DNS UDP socket error', { error: error.message }));
  logger.info('serving DNS', { host, port, domain, ttlSeconds: init.ttlSeconds });

  let closing: Promise<void> | null = null;
  return {
    host,
    port,
    close(): Promise<void> {
      closing ??= (async () => {
        for (const socket of connections) socket.destroy();
        await Promise.all([closeTcp(tcp), new Promise<void>((resolve) => udpSocket.close(() => resolve()))]);
      })();
      return closing;
    },
  };
}

/** One TCP client: length-prefixed messages (RFC 1035 §4.2.2), any number of them, answered in order. */
function serveTcp(
  socket: Socket,
  connections: Set<Socket>,
  answer: (message: Buffer, transport: DnsTransport, from: string) => Buffer | null,
  logger: Logger,
): void {
  const from = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
  if (connections.size >= tcpConnectionsMax) {
    logger.debug('refused a DNS TCP connection: too many open', { from, connections: connections.size });
    socket.destroy();
    return;
  }
  connections.add(socket);
  socket.on('close', () => connections.delete(socket));
  socket.on('error', (error) => logger.debug('DNS TCP connection error', { from, error: error.message }));
  socket.setNoDelay(true);
  socket.setTimeout(tcpIdleTimeoutMs, () => socket.destroy());
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    // At most one partial message (under 64 KiB) waits between chunks.
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    while (pending.length >= 2) {
      const length = pending.readUInt16BE(0);
      if (pending.length < 2 + length) break;
      const message = pending.subarray(2, 2 + length);
      pending = pending.subarray(2 + length);
      const response = answer(message, 'tcp', from);
      if (response === null) continue;
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(response.length);
      socket.write(Buffer.concat([prefix, response]));
      if (socket.writableLength > tcpWriteBacklogBytesMax) {
        logger.debug('closed a DNS TCP connection that does not read its answers', { from });
        socket.destroy();
        return;
      }
    }
  });
}

function listenTcp(server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (error: Error): void =>
      reject(new ShoalError('UNAVAILABLE', `cannot serve DNS on TCP ${host}:${port}: ${error.message}`));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve();
    });
  });
}

function closeTcp(server: Server): Promise<void> {
  return new Promise<void>((resolve) => server.close(() => resolve()));
}

function bindUdp(host: string, port: number): Promise<UdpSocket> {
  const socket = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
  return new Promise<UdpSocket>((resolve, reject) => {
    const onError = (error: Error): void => {
      socket.close();
      reject(error);
    };
    socket.once('error', onError);
    socket.bind(port, host, () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}
