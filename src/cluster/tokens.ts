/**
 * API tokens: what the replicated state keeps of them (a hash of the secret, never the secret), their
 * roles, and the pure decision of what a token may do. The secret is 32 random bytes shown once, when the
 * token is made; a secret of that strength needs no slow hash, so a SHA-256 of it is the lookup key.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as z from 'zod/mini';
import { text, whole } from '../shared/schema.ts';

/**
 * Roles. The first four each allow what the ones before it do: `read` reads everything; `deploy` also
 * submits, kills, reads logs and runs frameworks (in its namespaces, when the token names some); `operator`
 * also drains, leaves and sets namespaces; `admin` also manages tokens, snapshots and the cluster key.
 * `framework` stands apart: the scheduler API (`POST /v1/scheduler`) in its namespaces, and nothing else.
 */
export const tokenRoles = ['read', 'deploy', 'operator', 'admin', 'framework'] as const;
export type TokenRole = (typeof tokenRoles)[number];
/** What a route needs: a role, or nothing (`public`: the health check and the API's description). */
export type Access = TokenRole | 'public';

/** Tokens the cluster keeps; one more is refused. */
export const tokensMax = 10_000;
/** The longest a token may live when it is given a ttl (none: it lives until revoked). */
export const tokenTtlMsMax = 10 * 365 * 24 * 60 * 60_000;
/** What prefixes every secret, so a leaked one is easy to recognise (and to scan for). */
export const tokenSecretPrefix = 'shoal_';
/** Accessor ids name a token in lists and revocations: 12 hex digits, not secret. */
export const accessorIdPattern = /^[0-9a-f]{12}$/;

export const tokenRecordSchema = z.strictObject({
  accessorId: z.string().check(z.regex(accessorIdPattern)),
  name: text(128, 1),
  role: z.enum(tokenRoles),
  /** The namespaces its deploy rights cover; null: all. */
  namespaces: z.nullable(z.array(text(64, 1)).check(z.minLength(1), z.maxLength(64))),
  /** Hex SHA-256 of the secret. */
  secretHash: z.string().check(z.regex(/^[0-9a-f]{64}$/)),
  createdAtMs: whole(0),
  /** null: never expires. */
  expiresAtMs: z.nullable(whole(0)),
});
export type TokenRecord = z.infer<typeof tokenRecordSchema>;

/** A new secret, and what the state keeps of it. */
export function newTokenSecret(): { secret: string; secretHash: string } {
  const secret = `${tokenSecretPrefix}${randomBytes(32).toString('base64url')}`;
  return { secret, secretHash: hashTokenSecret(secret) };
}

export function hashTokenSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export function newAccessorId(): string {
  return randomBytes(6).toString('hex');
}

/** The ranked roles' order; `framework` ranks with none of them. */
function rank(role: TokenRole): number {
  return role === 'framework' ? -1 : tokenRoles.indexOf(role);
}

/** Who is asking: a token's holder, or the local Unix socket's user (who may do anything, as root may). */
export type Caller = { readonly kind: 'local' } | { readonly kind: 'token'; readonly token: TokenRecord };

/**
 * Whether a caller may do what a route needs, in a namespace when the route acts on one. Returns null
 * when allowed, else why not (the API answers it with 403).
 */
export function denial(caller: Caller, need: Access, namespace: string | null): string | null {
  if (need === 'public' || caller.kind === 'local') return null;
  const { token } = caller;
  if (token.role === 'framework' && need !== 'framework')
    return `token ${token.name} (${token.accessorId}) has role framework: it may use only the scheduler API`;
  // The scheduler API: framework tokens, and those that may deploy (a framework launches tasks).
  const enough =
    need === 'framework'
      ? token.role === 'framework' || rank(token.role) >= rank('deploy')
      : rank(token.role) >= rank(need);
  if (!enough) {
    return `token ${token.name} (${token.accessorId}) has role ${token.role}; this needs ${need}`;
  }
  if (
    namespace !== null &&
    token.role !== 'admin' &&
    token.namespaces !== null &&
    !token.namespaces.includes(namespace)
  ) {
    return `token ${token.name} (${token.accessorId}) may not act in namespace ${namespace} (it covers ${token.namespaces.join(', ')})`;
  }
  return null;
}

/** Whether a token has expired at nowMs. */
export function tokenExpired(token: TokenRecord, nowMs: number): boolean {
  return token.expiresAtMs !== null && nowMs >= token.expiresAtMs;
}
