/** The XSalsa20 stream cipher under @libp2p/pnet (the module ships no types; see pnet-cipher.ts). */
declare module 'xsalsa20' {
  interface XSalsa20Cipher {
    update(input: Uint8Array, output?: Uint8Array): Uint8Array;
    finalize(): void;
  }
  export default function xsalsa20(nonce: Uint8Array, key: Uint8Array): XSalsa20Cipher;
}
