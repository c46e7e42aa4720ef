/**
 * Schema helpers, and the one place the validation library is configured. Modules validate with zod's
 * tree-shakable "mini" build (`import * as z from 'zod/mini'`: functions, not methods), which costs a
 * process ~1 MiB of memory at start where the classic build costs ~11 MiB, for code we never call. Every
 * module with schemas imports this one, so the English messages are set before anything is parsed.
 */
import * as z from 'zod/mini';
import en from 'zod/v4/locales/en.js';

z.config(en());

/** A string of at most lengthMax characters (and at least lengthMin). */
export const text = (lengthMax: number, lengthMin = 0): z.ZodMiniString =>
  z.string().check(z.minLength(lengthMin), z.maxLength(lengthMax));

/** A whole number in [min, max] (a safe integer, whatever the bounds). */
export const whole = (
  min: number,
  max = Number.MAX_SAFE_INTEGER,
  minMessage?: string,
): z.ZodMiniNumberFormat => z.int().check(z.gte(min, minMessage), z.lte(max));
