/**
 * Byte units, in one place: sizes in specs, flags and messages are counted in bytes and shown in these.
 * In: nothing. Out: the number of bytes in a kibibyte, a mebibyte and a gibibyte (powers of 1024).
 */
export const kibibyte = 1024;
export const mebibyte = 1024 * kibibyte;
export const gibibyte = 1024 * mebibyte;
