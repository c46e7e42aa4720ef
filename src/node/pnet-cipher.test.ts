import { generateKeyPair } from '@libp2p/crypto/keys';
import { describe, expect, it } from 'vitest';
import xsalsa20 from 'xsalsa20';
import { generateClusterKey } from './identity.ts';
import { createP2p } from './p2p.ts';
import { pnetCipherRepaired } from './pnet-cipher.ts';

/** The module's own fields on a cipher (xsalsa20 1.2.0): its slot and its view of the WebAssembly memory. */
interface CipherInternals {
  readonly _xor: { readonly _pointer: number; readonly _memory: Uint8Array } | null;
}

const nonce = Uint8Array.from({ length: 24 }, (_, i) => i);
const key = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);

function internals(cipher: unknown): NonNullable<CipherInternals['_xor']> {
  const inner = (cipher as CipherInternals)._xor;
  if (inner === null) throw new Error('finalized');
  return inner;
}

/** Where the module puts the next cipher: it moves up 64 bytes for every cipher never finalized. */
function nextSlot(): number {
  const probe = xsalsa20(nonce, key);
  const pointer = internals(probe)._pointer;
  probe.finalize();
  return pointer;
}

describe("pnet's cipher, repaired (pnet-cipher.ts)", () => {
  it('is repaired on import', () => {
    expect(pnetCipherRepaired).toBe(true);
  });

  it('encrypts a large message without growing its memory, and the keystream is unchanged', () => {
    const plain = new Uint8Array(1024 * 1024 + 17).map((_, i) => (i * 31) % 251);
    const sender = xsalsa20(nonce, key);
    const other = xsalsa20(nonce, key);
    const sealed = sender.update(plain);
    // Before the repair a 1 MiB update grew the memory, and every other cipher then grew it on each update.
    expect(internals(sender)._memory.length).toBe(640 * 1024);
    other.update(new Uint8Array(100));
    expect(internals(other)._memory.length).toBe(640 * 1024);
    // The same keystream as small updates (the cipher carries partial blocks over): a receiver opens it.
    const receiver = xsalsa20(nonce, key);
    const opened = new Uint8Array(plain.length);
    for (let offset = 0; offset < sealed.length; offset += 1000)
      opened.set(receiver.update(sealed.subarray(offset, offset + 1000)), offset);
    expect(Buffer.compare(opened, plain)).toBe(0);
    for (const cipher of [sender, other, receiver]) cipher.finalize();
  });

  it('ignores an update after finalize instead of throwing (a late read on a closed connection)', () => {
    const cipher = xsalsa20(nonce, key);
    cipher.finalize();
    expect(() => cipher.update(new Uint8Array(10))).not.toThrow();
    expect(() => cipher.finalize()).not.toThrow();
  });

  it("frees a connection's ciphers when it closes", { timeout: 60_000 }, async () => {
    const clusterKey = generateClusterKey();
    const [a, b] = await Promise.all(
      [0, 1].map(async () =>
        createP2p({
          privateKey: await generateKeyPair('Ed25519'),
          listenMultiaddr: '/ip4/127.0.0.1/tcp/0',
          clusterKey,
        }),
      ),
    );
    if (a === undefined || b === undefined) throw new Error('no hosts');
    try {
      const before = nextSlot();
      const connections = 40;
      for (let i = 0; i < connections; i++) {
        const connection = await a.dial(b.getMultiaddrs());
        await connection.close();
        await new Promise((settle) => setTimeout(settle, 10));
      }
      await new Promise((settle) => setTimeout(settle, 200));
      // Each connection made four ciphers (two per side, both hosts in this process); unrepaired, the next
      // slot would be 40 × 4 × 64 bytes further up.
      expect(nextSlot() - before).toBeLessThan(64 * 8);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });
});
