import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { promisify } from 'node:util';
import dnsPacket from 'dns-packet';
import type { Answer, DecodedPacket, Packet, RecordType, SrvAnswer, StringAnswer } from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../shared/index.ts';
import {
  addressHex,
  answerMessage,
  buildResponse,
  parseQueryName,
  startDnsServer,
  tcpConnectionsMax,
  truncateResponse,
  udpSizeMaxBytes,
  type AnswerContext,
  type DnsServer,
  type ServiceInstanceAddress,
  type ServiceLookup,
} from './dns.ts';

const digPath = '/usr/bin/dig';
const runFile = promisify(execFile);

const instance = (
  id: string,
  address: string,
  ports: Record<string, number> = {},
): ServiceInstanceAddress => ({
  id,
  address,
  ports: Object.entries(ports).map(([name, port]) => ({ name, port })),
});

/** web: three instances, two of them on one node; api in namespace team; idle: known, nothing healthy. */
const services: Record<string, readonly ServiceInstanceAddress[]> = {
  'default/web': [
    instance('w1', '10.0.0.1', { http: 8080, admin: 9090 }),
    instance('w2', '10.0.0.2', { http: 8081, admin: 9091 }),
    instance('w3', '10.0.0.1', { http: 8082, admin: 9092 }),
  ],
  'team/api': [instance('a1', '10.1.0.7', { grpc: 7000 })],
  'default/idle': [],
  // 60 instances on 60 nodes: more than any UDP answer holds.
  'default/big': Array.from({ length: 60 }, (_, i) =>
    instance(`b${i}`, `10.2.${i >> 4}.${i + 1}`, { http: 20_000 + i }),
  ),
};
const lookup: ServiceLookup = (service, namespace) => services[`${namespace}/${service}`] ?? null;

function context(rotation = 0, overrides: Partial<AnswerContext> = {}): AnswerContext {
  return { domain: 'shoal', ttlSeconds: 3, lookup, rotation, ...overrides };
}

function query(name: string, type: RecordType | 'ANY', extra: Partial<Packet> = {}): Packet {
  return {
    type: 'query',
    id: 4242,
    flags: dnsPacket.RECURSION_DESIRED,
    // dns-packet's types leave out ANY, which it encodes all the same.
    questions: [{ name, type: type as RecordType, class: 'IN' }],
    ...extra,
  };
}

/** A query as the server sees it: through the wire format and back. */
const decodedQuery = (name: string, type: RecordType | 'ANY', extra: Partial<Packet> = {}): DecodedPacket =>
  dnsPacket.decode(dnsPacket.encode(query(name, type, extra)));

const withEdns = (udpPayloadSize: number, ednsVersion = 0): Partial<Packet> => ({
  additionals: [
    {
      type: 'OPT',
      name: '.',
      udpPayloadSize,
      extendedRcode: 0,
      ednsVersion,
      flags: 0,
      flag_do: false,
      options: [],
    },
  ],
});

/** Builds, encodes and decodes the response, so the tests see what a client would. */
function respond(
  name: string,
  type: RecordType | 'ANY',
  rotation = 0,
  extra: Partial<Packet> = {},
): DecodedPacket {
  return dnsPacket.decode(
    dnsPacket.encode(buildResponse(decodedQuery(name, type, extra), context(rotation))),
  );
}

const rcodeOf = (packet: DecodedPacket): string => (packet as DecodedPacket & { rcode: string }).rcode;
const aData = (records: readonly Answer[] | undefined): string[] =>
  (records ?? [])
    .filter((record): record is StringAnswer => record.type === 'A')
    .map((record) => record.data);
const srvData = (records: readonly Answer[] | undefined): SrvAnswer['data'][] =>
  (records ?? []).filter((record): record is SrvAnswer => record.type === 'SRV').map((record) => record.data);

describe('parseQueryName', () => {
  it('reads services, namespaces, named ports and .addr. names, case-insensitively and with or without a trailing dot', () => {
    expect(parseQueryName('web.service.shoal', 'shoal')).toEqual({
      kind: 'service',
      service: 'web',
      namespace: 'default',
      port: null,
    });
    expect(parseQueryName('Web.Team.SERVICE.shoal.', 'shoal')).toEqual({
      kind: 'service',
      service: 'web',
      namespace: 'team',
      port: null,
    });
    expect(parseQueryName('_HTTP._tcp.web.service.shoal', 'shoal')).toEqual({
      kind: 'service',
      service: 'web',
      namespace: 'default',
      port: 'http',
    });
    expect(parseQueryName('_http._tcp.web.team.service.shoal', 'shoal')).toEqual({
      kind: 'service',
      service: 'web',
      namespace: 'team',
      port: 'http',
    });
    expect(parseQueryName('0A000001.addr.shoal', 'shoal')).toEqual({ kind: 'addr', address: '10.0.0.1' });
    expect(parseQueryName('c0a801ff.addr.shoal', 'shoal')).toEqual({
      kind: 'addr',
      address: '192.168.1.255',
    });
    expect(parseQueryName('SHOAL.', 'shoal')).toEqual({ kind: 'apex' });
    expect(parseQueryName('web.service.cluster.local', 'cluster.local')).toMatchObject({ service: 'web' });
  });

  it('tells names outside the domain from names inside it that name nothing', () => {
    for (const name of ['example.com', 'web.service.consul', 'shoal.example.com', 'notshoal', '.'])
      expect(parseQueryName(name, 'shoal'), name).toEqual({ kind: 'outside' });
    for (const name of [
      'service.shoal',
      'web.shoal',
      'a.b.c.service.shoal',
      '_http.web.service.shoal',
      '_http._udp.web.service.shoal',
      '_._tcp.web.service.shoal',
      '_http._tcp.service.shoal',
      'addr.shoal',
      '0a00001.addr.shoal',
      'zz000001.addr.shoal',
      'x.0a000001.addr.shoal',
    ])
      expect(parseQueryName(name, 'shoal'), name).toEqual({ kind: 'unknown' });
  });

  it('spells an IPv4 address as the 8 hex digits its .addr. name reads back', () => {
    expect(addressHex('10.0.0.1')).toBe('0a000001');
    expect(addressHex('255.1.16.0')).toBe('ff011000');
    expect(parseQueryName(`${addressHex('172.16.254.3')}.addr.shoal`, 'shoal')).toEqual({
      kind: 'addr',
      address: '172.16.254.3',
    });
  });
});

describe('buildResponse', () => {
  it('answers A with one record per distinct address, authoritatively, with the TTL, echoing the question', () => {
    const response = respond('Web.Service.Shoal', 'A');
    expect(rcodeOf(response)).toBe('NOERROR');
    expect(response.flag_qr).toBe(true);
    expect(response.flag_aa).toBe(true);
    expect(response.flag_rd).toBe(true);
    expect(response.flag_tc).toBe(false);
    expect(response.id).toBe(4242);
    expect(response.questions).toEqual([{ name: 'Web.Service.Shoal', type: 'A', class: 'IN' }]);
    expect(aData(response.answers).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(response.answers?.every((record) => record.name === 'Web.Service.Shoal')).toBe(true);
    expect(response.answers?.every((record) => record.type !== 'OPT' && record.ttl === 3)).toBe(true);
  });

  it('answers SRV with each instance’s first port on its .addr. name, and the A records as additionals', () => {
    const response = respond('web.service.shoal', 'SRV');
    expect(srvData(response.answers).sort((a, b) => a.port - b.port)).toEqual([
      { priority: 1, weight: 1, port: 8080, target: '0a000001.addr.shoal' },
      { priority: 1, weight: 1, port: 8081, target: '0a000002.addr.shoal' },
      { priority: 1, weight: 1, port: 8082, target: '0a000001.addr.shoal' },
    ]);
    const glue = (response.additionals ?? []).map((record) => [
      record.name,
      record.type === 'A' && record.data,
    ]);
    expect(glue.sort()).toEqual([
      ['0a000001.addr.shoal', '10.0.0.1'],
      ['0a000002.addr.shoal', '10.0.0.2'],
    ]);
  });

  it('answers a named port, in the default namespace or a named one', () => {
    expect(srvData(respond('_admin._tcp.web.service.shoal', 'SRV').answers).map((srv) => srv.port)).toEqual(
      expect.arrayContaining([9090, 9091, 9092]),
    );
    expect(srvData(respond('_GRPC._tcp.api.team.service.shoal', 'SRV').answers)).toEqual([
      { priority: 1, weight: 1, port: 7000, target: '0a010007.addr.shoal' },
    ]);
    expect(aData(respond('api.team.service.shoal', 'A').answers)).toEqual(['10.1.0.7']);
    // The namespace matters: api lives in team, not in default.
    expect(rcodeOf(respond('api.service.shoal', 'A'))).toBe('NXDOMAIN');
  });

  it('says NXDOMAIN for an unknown service or port, with the SOA in authority', () => {
    for (const name of ['nope.service.shoal', '_nope._tcp.web.service.shoal', 'web.shoal', 'zz.addr.shoal']) {
      const response = respond(name, 'A');
      expect(rcodeOf(response), name).toBe('NXDOMAIN');
      expect(response.answers, name).toEqual([]);
      expect(
        response.authorities?.map((record) => record.type),
        name,
      ).toEqual(['SOA']);
    }
  });

  it('says NOERROR with no answers for other types of a known name, and for a service with nothing healthy', () => {
    for (const [name, type] of [
      ['web.service.shoal', 'AAAA'],
      ['web.service.shoal', 'TXT'],
      ['0a000001.addr.shoal', 'AAAA'],
      ['idle.service.shoal', 'A'],
      ['idle.service.shoal', 'SRV'],
      ['_http._tcp.idle.service.shoal', 'SRV'],
      ['shoal', 'A'],
    ] as const) {
      const response = respond(name, type);
      expect(rcodeOf(response), `${name} ${type}`).toBe('NOERROR');
      expect(response.answers, `${name} ${type}`).toEqual([]);
    }
    expect(respond('shoal', 'SOA').answers?.map((record) => record.type)).toEqual(['SOA']);
  });

  it('refuses names outside the domain, not authoritatively', () => {
    const response = respond('example.com', 'A');
    expect(rcodeOf(response)).toBe('REFUSED');
    expect(response.flag_aa).toBe(false);
    expect(response.answers).toEqual([]);
  });

  it('answers an .addr. name with the address it spells, and ANY like A', () => {
    expect(aData(respond('0A000001.addr.shoal.', 'A').answers)).toEqual(['10.0.0.1']);
    expect(aData(respond('web.service.shoal', 'ANY').answers).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
  });

  it('rotates the answers’ order with the rotation, so clients spread across instances', () => {
    const firsts = [0, 1, 2].map(
      (rotation) => srvData(respond('web.service.shoal', 'SRV', rotation).answers)[0]?.port,
    );
    expect(new Set(firsts)).toEqual(new Set([8080, 8081, 8082]));
    const firstAddresses = [0, 1].map(
      (rotation) => aData(respond('web.service.shoal', 'A', rotation).answers)[0],
    );
    expect(new Set(firstAddresses)).toEqual(new Set(['10.0.0.1', '10.0.0.2']));
  });

  it('passes the lookup lower-cased names, and skips instances it cannot put in a record', () => {
    const asked: string[] = [];
    const odd: ServiceLookup = (service, namespace) => {
      asked.push(`${namespace}/${service}`);
      return [
        instance('v6', 'fd00::1', { http: 80 }),
        instance('noports', '10.9.0.1'),
        instance('badport', '10.9.0.2', { http: 70_000 }),
        instance('ok', '10.9.0.3', { http: 80 }),
      ];
    };
    const ask = (name: string, type: RecordType): DecodedPacket =>
      dnsPacket.decode(
        dnsPacket.encode(buildResponse(decodedQuery(name, type), context(0, { lookup: odd }))),
      );
    expect(aData(ask('Odd.Team.service.shoal', 'A').answers).sort()).toEqual([
      '10.9.0.1',
      '10.9.0.2',
      '10.9.0.3',
    ]);
    expect(srvData(ask('odd.service.shoal', 'SRV').answers).map((srv) => srv.target)).toEqual([
      '0a090003.addr.shoal',
    ]);
    expect(asked).toEqual(['team/odd', 'default/odd']);
  });

  it('says BADVERS to an EDNS version it does not speak, and NOTIMP to other opcodes', () => {
    const badVersion = respond('web.service.shoal', 'A', 0, withEdns(1232, 1));
    const opt = badVersion.additionals?.find((record) => record.type === 'OPT');
    expect(opt).toMatchObject({ extendedRcode: 1, ednsVersion: 0 });
    expect(badVersion.answers).toEqual([]);
    // Opcode 2 (STATUS) in the header's bits 11-14.
    const status = respond('web.service.shoal', 'A', 0, { flags: 2 << 11 });
    expect(rcodeOf(status)).toBe('NOTIMP');
  });
});

describe('truncateResponse and udpSizeMaxBytes', () => {
  it('leaves what fits alone, and cuts answers that do not (setting TC) to fit the size', () => {
    const small = buildResponse(decodedQuery('web.service.shoal', 'A'), context());
    expect(truncateResponse(small, 512)).toBe(small);
    const big = buildResponse(decodedQuery('big.service.shoal', 'A'), context());
    expect(big.answers).toHaveLength(60);
    const cut = truncateResponse(big, 512);
    const encoded = dnsPacket.encode(cut);
    expect(encoded.length).toBeLessThanOrEqual(512);
    const decoded = dnsPacket.decode(encoded);
    expect(decoded.flag_tc).toBe(true);
    expect(decoded.answers?.length).toBeGreaterThan(5);
    expect(decoded.answers?.length).toBeLessThan(60);
  });

  it('leaves out additionals that do not fit without setting TC, and keeps the EDNS record', () => {
    const srv = buildResponse(decodedQuery('big.service.shoal', 'SRV', withEdns(4096)), context());
    const sizeBytes = dnsPacket.encodingLength({ ...srv, additionals: srv.additionals?.slice(-1) }) + 40;
    const cut = dnsPacket.decode(dnsPacket.encode(truncateResponse(srv, sizeBytes)));
    expect(cut.flag_tc).toBe(false);
    expect(cut.answers).toHaveLength(60);
    expect(cut.additionals?.map((record) => record.type)).toEqual(['A', 'OPT']);
  });

  it('allows 512 bytes without EDNS, and the client’s EDNS size between 512 and 1232', () => {
    expect(udpSizeMaxBytes(decodedQuery('web.service.shoal', 'A'))).toBe(512);
    expect(udpSizeMaxBytes(decodedQuery('web.service.shoal', 'A', withEdns(4096)))).toBe(1232);
    expect(udpSizeMaxBytes(decodedQuery('web.service.shoal', 'A', withEdns(900)))).toBe(900);
    expect(udpSizeMaxBytes(decodedQuery('web.service.shoal', 'A', withEdns(100)))).toBe(512);
  });
});

describe('answerMessage', () => {
  const asBytes = (packet: Packet): Buffer => dnsPacket.encode(packet);

  it('ignores messages too short for a header, and responses', () => {
    expect(answerMessage(Buffer.alloc(0), 'udp', context())).toBeNull();
    expect(answerMessage(Buffer.from([1, 2, 3, 4, 5]), 'udp', context())).toBeNull();
    const response = asBytes({ ...query('web.service.shoal', 'A'), type: 'response' });
    expect(answerMessage(response, 'udp', context())).toBeNull();
  });

  it('says FORMERR, with the id, to what it cannot decode, several questions, or names it cannot re-encode', () => {
    const truncated = asBytes(query('web.service.shoal', 'A')).subarray(0, 20);
    const twoQuestions = asBytes({
      ...query('web.service.shoal', 'A'),
      questions: [
        { name: 'web.service.shoal', type: 'A' },
        { name: 'api.team.service.shoal', type: 'A' },
      ],
    });
    const noQuestion = asBytes({ ...query('web.service.shoal', 'A'), questions: [] });
    // A label of 63 bytes that are not UTF-8: decoded as U+FFFD each, it would re-encode three times as long.
    const binaryLabel = asBytes(query('web.service.shoal', 'A'));
    const wild = Buffer.concat([
      binaryLabel.subarray(0, 12),
      Buffer.from([63]),
      Buffer.alloc(63, 0xff),
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    for (const [what, message] of [
      ['truncated', truncated],
      ['two questions', twoQuestions],
      ['no question', noQuestion],
      ['binary label', wild],
    ] as const) {
      const answer = answerMessage(message, 'udp', context());
      expect(answer, what).not.toBeNull();
      const decoded = dnsPacket.decode(answer!);
      expect(rcodeOf(decoded), what).toBe('FORMERR');
      expect(decoded.id, what).toBe(4242);
      expect(decoded.flag_qr, what).toBe(true);
    }
  });

  it('says SERVFAIL when the lookup throws', () => {
    const failing: ServiceLookup = () => {
      throw new Error('state unavailable');
    };
    const answer = answerMessage(
      asBytes(query('web.service.shoal', 'A')),
      'udp',
      context(0, { lookup: failing }),
    );
    expect(rcodeOf(dnsPacket.decode(answer!))).toBe('SERVFAIL');
  });

  it('truncates over UDP to the client’s size, and not over TCP', () => {
    const message = asBytes(query('big.service.shoal', 'A'));
    const overUdp = dnsPacket.decode(answerMessage(message, 'udp', context())!);
    expect(overUdp.flag_tc).toBe(true);
    const overTcp = dnsPacket.decode(answerMessage(message, 'tcp', context())!);
    expect(overTcp.flag_tc).toBe(false);
    expect(overTcp.answers).toHaveLength(60);
  });
});

/** One query over UDP; resolves with the decoded answer, or rejects after timeoutMs with none. */
async function askUdp(port: number, message: Buffer, timeoutMs = 2000): Promise<DecodedPacket> {
  const socket = createSocket('udp4');
  try {
    return await new Promise<DecodedPacket>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no UDP answer')), timeoutMs);
      socket.on('message', (answer) => {
        clearTimeout(timer);
        resolve(dnsPacket.decode(answer));
      });
      socket.send(message, port, '127.0.0.1');
    });
  } finally {
    socket.close();
  }
}

/** Queries over an open TCP connection, each written in pieces; resolves with the decoded answers in order. */
function askTcpOn(socket: Socket, messages: readonly Buffer[]): Promise<DecodedPacket[]> {
  return new Promise<DecodedPacket[]>((resolve, reject) => {
    const answers: DecodedPacket[] = [];
    let pending = Buffer.alloc(0);
    const onClose = (): void => reject(new Error(`closed after ${answers.length} answers`));
    const onData = (chunk: Buffer): void => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        answers.push(dnsPacket.decode(pending.subarray(2, 2 + pending.readUInt16BE(0))));
        pending = pending.subarray(2 + pending.readUInt16BE(0));
      }
      if (answers.length < messages.length) return;
      socket.off('data', onData);
      socket.off('close', onClose);
      resolve(answers);
    };
    socket.on('close', onClose);
    socket.on('data', onData);
    const framed = Buffer.concat(
      messages.map((message) => dnsPacket.streamEncode(dnsPacket.decode(message))),
    );
    // Split mid-prefix and mid-message: framing must not depend on how TCP chunks the stream.
    for (let at = 0; at < framed.length; at += 7) socket.write(framed.subarray(at, at + 7));
  });
}

/** Queries over a new TCP connection, closed afterwards. */
async function askTcp(port: number, messages: readonly Buffer[]): Promise<DecodedPacket[]> {
  const socket = connect(port, '127.0.0.1');
  try {
    await new Promise((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return await askTcpOn(socket, messages);
  } finally {
    socket.destroy();
  }
}

describe('startDnsServer', () => {
  let server: DnsServer;
  const debugLines: string[] = [];
  beforeAll(async () => {
    const logger = { ...silentLogger, debug: (message: string) => debugLines.push(message) };
    server = await startDnsServer({ host: '127.0.0.1', port: 0, ttlSeconds: 1, lookup, logger });
  });
  afterAll(() => server.close());

  it('refuses a TTL beyond 5 seconds, a domain that is no name, and a port it cannot bind', async () => {
    const base = { host: '127.0.0.1', port: 0, lookup, logger: silentLogger };
    await expect(startDnsServer({ ...base, ttlSeconds: 6 })).rejects.toThrow(/TTL 6/);
    await expect(startDnsServer({ ...base, ttlSeconds: 1, domain: 'bad_domain' })).rejects.toThrow(/domain/);
    // A port whose UDP side is taken: refused in a message naming it, the TCP side not left listening.
    const taken = createSocket('udp4');
    const takenPort = await new Promise<number>((resolve) =>
      taken.bind(0, '127.0.0.1', () => resolve(taken.address().port)),
    );
    try {
      // UDP, or TCP when a connection elsewhere on this busy machine happens to hold the port's TCP side.
      await expect(startDnsServer({ ...base, port: takenPort, ttlSeconds: 1 })).rejects.toThrow(
        new RegExp(`^cannot serve DNS on (UDP|TCP) 127\\.0\\.0\\.1:${takenPort}`),
      );
      const probe = connect(takenPort, '127.0.0.1');
      await expect(
        new Promise((resolve, reject) => probe.on('connect', resolve).on('error', reject)),
      ).rejects.toThrow(/ECONNREFUSED/);
    } finally {
      taken.close();
    }
  });

  it('answers over UDP on the port it reports, the same for TCP', async () => {
    expect(server.port).toBeGreaterThan(0);
    const answer = await askUdp(server.port, dnsPacket.encode(query('web.service.shoal', 'A')));
    expect(answer.id).toBe(4242);
    expect(aData(answer.answers).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    const srv = await askUdp(server.port, dnsPacket.encode(query('_http._tcp.web.service.shoal', 'SRV')));
    expect(
      srvData(srv.answers)
        .map((record) => record.port)
        .sort(),
    ).toEqual([8080, 8081, 8082]);
    expect(aData(srv.additionals).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
  });

  it('rotates answers from one query to the next', async () => {
    const firsts = new Set<string | undefined>();
    for (let i = 0; i < 6; i++) {
      const answer = await askUdp(server.port, dnsPacket.encode(query('web.service.shoal', 'A')));
      firsts.add(aData(answer.answers)[0]);
    }
    expect(firsts).toEqual(new Set(['10.0.0.1', '10.0.0.2']));
  });

  it('sets TC over UDP when the answer passes 512 bytes, or the EDNS size', async () => {
    const classic = await askUdp(server.port, dnsPacket.encode(query('big.service.shoal', 'A')));
    expect(classic.flag_tc).toBe(true);
    expect(classic.answers!.length).toBeLessThan(60);
    const edns = await askUdp(server.port, dnsPacket.encode(query('big.service.shoal', 'A', withEdns(1232))));
    expect(edns.flag_tc).toBe(true);
    expect(edns.answers!.length).toBeGreaterThan(classic.answers!.length);
  });

  it('answers several queries on one TCP connection, whole however large', async () => {
    const answers = await askTcp(server.port, [
      dnsPacket.encode(query('web.service.shoal', 'A')),
      dnsPacket.encode({ ...query('big.service.shoal', 'SRV'), id: 7 }),
      dnsPacket.encode({ ...query('nope.service.shoal', 'A'), id: 8 }),
    ]);
    expect(aData(answers[0]!.answers).sort()).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(answers[1]!.id).toBe(7);
    expect(answers[1]!.flag_tc).toBe(false);
    expect(srvData(answers[1]!.answers)).toHaveLength(60);
    expect(aData(answers[1]!.additionals)).toHaveLength(60);
    expect(rcodeOf(answers[2]!)).toBe('NXDOMAIN');
  });

  it('survives garbage over UDP and TCP, logging at most at debug, and answers the next query', async () => {
    const garbage = [Buffer.from('hello'), Buffer.alloc(12, 0xff), Buffer.from('0123456789abcdefghijklmnop')];
    const udp = createSocket('udp4');
    for (const message of garbage) udp.send(message, server.port, '127.0.0.1');
    await new Promise((resolve) => setTimeout(resolve, 100));
    udp.close();
    const tcp = connect(server.port, '127.0.0.1');
    await new Promise((resolve) => tcp.on('connect', resolve));
    tcp.write(Buffer.concat([Buffer.from([0, 5]), Buffer.from('hello'), Buffer.from([0, 0])]));
    tcp.destroy();
    const answer = await askUdp(server.port, dnsPacket.encode(query('web.service.shoal', 'A')));
    expect(aData(answer.answers)).toHaveLength(2);
    expect(debugLines.length).toBeGreaterThan(0);
  });
});

describe('the TCP connection cap', () => {
  it('closes connections beyond the cap at once, keeps serving the others, and close() ends them all', async () => {
    const server = await startDnsServer({
      host: '127.0.0.1',
      port: 0,
      ttlSeconds: 1,
      lookup,
      logger: silentLogger,
    });
    const open = async (): Promise<{ socket: Socket; closed: Promise<void> }> => {
      const socket = connect(server.port, '127.0.0.1');
      const closed = new Promise<void>((resolve) => socket.on('close', () => resolve()));
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.on('connect', resolve));
      return { socket, closed };
    };
    const sockets: { socket: Socket; closed: Promise<void> }[] = [];
    try {
      for (let i = 0; i < tcpConnectionsMax; i++) sockets.push(await open());
      // Every accepted connection is counted before the next one is: the server has seen them all once one answers.
      const [first] = await askTcpOn(sockets[0]!.socket, [dnsPacket.encode(query('web.service.shoal', 'A'))]);
      expect(aData(first!.answers)).toHaveLength(2);
      const extra = await open();
      await extra.closed;
      const [still] = await askTcpOn(sockets[1]!.socket, [dnsPacket.encode(query('web.service.shoal', 'A'))]);
      expect(aData(still!.answers)).toHaveLength(2);
    } finally {
      await server.close();
    }
    await Promise.all(sockets.map(({ closed }) => closed));
  });
});

describe.skipIf(!existsSync(digPath))(`dig (skipped: no ${digPath}; apt-get install bind9-dnsutils)`, () => {
  let server: DnsServer;
  beforeAll(async () => {
    server = await startDnsServer({
      host: '127.0.0.1',
      port: 0,
      ttlSeconds: 2,
      lookup,
      logger: silentLogger,
    });
  });
  afterAll(() => server.close());

  /** dig's output; async, since the server answers from this very process. */
  async function dig(...args: string[]): Promise<string> {
    const { stdout } = await runFile(digPath, [
      '@127.0.0.1',
      '-p',
      String(server.port),
      '+time=2',
      '+tries=1',
      ...args,
    ]);
    return stdout;
  }
  const lines = (output: string): string[] => output.trim().split('\n').filter(Boolean).sort();

  it('resolves A, SRV and .addr. names', async () => {
    expect(lines(await dig('web.service.shoal', 'A', '+short'))).toEqual(['10.0.0.1', '10.0.0.2']);
    expect(lines(await dig('web.service.shoal', 'SRV', '+short'))).toEqual([
      '1 1 8080 0a000001.addr.shoal.',
      '1 1 8081 0a000002.addr.shoal.',
      '1 1 8082 0a000001.addr.shoal.',
    ]);
    expect(lines(await dig('_grpc._tcp.api.team.service.shoal', 'SRV', '+short'))).toEqual([
      '1 1 7000 0a010007.addr.shoal.',
    ]);
    expect(lines(await dig('0a000002.addr.shoal', 'A', '+short'))).toEqual(['10.0.0.2']);
  });

  it('resolves over TCP with +tcp', async () => {
    const output = await dig('web.service.shoal', 'A', '+tcp');
    expect(output).toMatch(/status: NOERROR/);
    expect(output).toMatch(/\(TCP\)/);
    expect(output).toMatch(/ANSWER: 2,/);
  });

  it('gets NXDOMAIN for an unknown service and REFUSED outside the domain', async () => {
    expect(await dig('nope.service.shoal', 'A')).toMatch(/status: NXDOMAIN/);
    expect(await dig('example.com', 'A')).toMatch(/status: REFUSED/);
    const aaaa = await dig('web.service.shoal', 'AAAA');
    expect(aaaa).toMatch(/status: NOERROR/);
    expect(aaaa).toMatch(/ANSWER: 0,/);
  });

  it('gets all 60 instances by retrying over TCP when the UDP answer is truncated', async () => {
    const output = await dig('big.service.shoal', 'A');
    expect(output).toMatch(/Truncated, retrying in TCP mode/);
    expect(output).toMatch(/ANSWER: 60,/);
    expect(lines(await dig('big.service.shoal', 'A', '+short'))).toHaveLength(60);
    expect(lines(await dig('big.service.shoal', 'SRV', '+short', '+noedns'))).toHaveLength(60);
  });
});
