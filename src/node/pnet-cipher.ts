/**
 * Repairs the XSalsa20 cipher under libp2p's private network (@libp2p/pnet → xsalsa20 1.2.0, WebAssembly),
 * which crashed a voter of the scale benchmark with "WebAssembly.Memory.grow(): Maximum memory size
 * exceeded". Two faults combine:
 *
 * - pnet never calls `finalize()`, so every connection leaks its two ciphers' 64-byte slots and the module's
 *   working area moves up by 128 bytes per connection ever made;
 * - once an input (or that creeping area) passes the first 640 KiB of the module's memory, the memory
 *   grows, which detaches every other cipher's view of it; each of them then sees a zero-length view on its
 *   next update and grows the memory again, by at least 64 KiB per update, until the 4 GiB ceiling.
 *
 * So: a connection's ciphers are finalized when it closes (their slots are reused), and updates are cut
 * into 64 KiB pieces, so the working area never needs more than the memory the module starts with. Both are
 * applied once to the cipher's prototype and pnet's connection class; the keystream is unchanged (the
 * cipher carries partial blocks between updates), so peers without the repair interoperate.
 */
import xsalsa20 from 'xsalsa20';

/** The largest piece one cipher update handles (the module's memory starts at 640 KiB). */
export const cipherUpdateBytesMax = 64 * 1024;

interface Cipher {
  update(input: Uint8Array, output?: Uint8Array): Uint8Array;
  finalize(): void;
  /** Set by the repair once finalized: later updates (a late read after close) are dropped. */
  finalized?: boolean;
}

/** Whether the repair is in place (applied at most once per process). */
export const pnetCipherRepaired = repairCipher();

function repairCipher(): boolean {
  const prototype = Object.getPrototypeOf(xsalsa20(new Uint8Array(24), new Uint8Array(32))) as Cipher & {
    readonly repaired?: true;
  };
  if (prototype.repaired === true) return true;
  // Called below with the cipher as `this`, as the module itself calls them.
  // eslint-disable-next-line @typescript-eslint/unbound-method
  const { update, finalize } = prototype;
  if (typeof update !== 'function' || typeof finalize !== 'function') return false;
  prototype.update = function (this: Cipher, input: Uint8Array, output?: Uint8Array): Uint8Array {
    const out = output ?? new Uint8Array(input.length);
    if (this.finalized === true) return out;
    for (let offset = 0; offset < input.length; offset += cipherUpdateBytesMax) {
      const end = Math.min(input.length, offset + cipherUpdateBytesMax);
      update.call(this, input.subarray(offset, end), out.subarray(offset, end));
    }
    return out;
  };
  prototype.finalize = function (this: Cipher): void {
    if (this.finalized === true) return;
    this.finalized = true;
    finalize.call(this);
  };
  Object.defineProperty(prototype, 'repaired', { value: true });
  return true;
}

/** pnet's connection: its two ciphers, public fields of @libp2p/pnet's BoxMessageStream. */
interface BoxedConnection {
  readonly inboundXor?: Cipher;
  readonly outboundXor?: Cipher;
  addEventListener(type: 'close', listener: () => void): void;
}

/** Frees a protected connection's ciphers when it closes. */
export function finalizeCiphersOnClose(connection: unknown): void {
  const boxed = connection as BoxedConnection;
  if (typeof boxed.addEventListener !== 'function') return;
  boxed.addEventListener('close', () => {
    // A close event may come more than once; finalize() is idempotent once repaired.
    boxed.inboundXor?.finalize();
    boxed.outboundXor?.finalize();
  });
}
