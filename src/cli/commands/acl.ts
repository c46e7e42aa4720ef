/** `shoal acl token create|list|revoke`: the API's tokens (admin, or the node's Unix socket). */
import { tokenRoles, tokenTtlMsMax, type TokenRole } from '../../cluster/index.ts';
import { invalidArgument } from '../../shared/index.ts';
import { defineCommand, withClient, type Command } from '../command.ts';
import { apiFlags, parseDuration } from '../flags.ts';
import { formatJson, formatTokens } from '../format.ts';

export const aclCommand: Command = defineCommand({
  name: 'acl',
  summary: "manage the API's tokens: create (prints the secret once), list, revoke",
  synopsis: [
    'shoal acl token create --name NAME --role read|deploy|operator|admin [--namespace NS]... [--ttl DURATION]',
    'shoal acl token list [--json]',
    'shoal acl token revoke ACCESSOR',
  ],
  description:
    'create makes a token and prints its secret on stdout, once: the cluster keeps only a hash of it.\n' +
    'Roles allow what the ones before them do: read reads everything; deploy also submits, kills and\n' +
    'reads logs (only in the --namespace ones, if given); operator also drains, leaves and sets\n' +
    'namespaces; admin also manages tokens. Send a secret with SHOAL_TOKEN (or --token). list shows the\n' +
    'tokens without secrets; revoke refuses one on every node once committed. Needs an admin token, or\n' +
    "the node's Unix socket.",
  options: {
    name: {
      type: 'string',
      value: 'NAME',
      help: 'create: what the token is for (shown in lists and errors)',
    },
    role: { type: 'string', value: tokenRoles.join('|'), help: 'create: what it may do' },
    namespace: {
      type: 'string',
      multiple: true,
      value: 'NS',
      help: 'create: limit its deploy rights to this namespace (repeatable; default all)',
    },
    ttl: {
      type: 'string',
      value: 'DURATION',
      help: 'create: how long it lives, e.g. 90s, 30m, 12h, 7d (default: until revoked)',
    },
    json: { type: 'boolean', help: 'list: print the API view as JSON' },
    ...apiFlags,
  },
  allowPositionals: true,
  run: async ({ values, positionals }, usage) => {
    const [noun, action, ...rest] = positionals;
    if (noun === undefined) {
      process.stdout.write(usage);
      return 0;
    }
    if (noun !== 'token') throw invalidArgument(`shoal acl ${noun}: unknown; use shoal acl token …`);
    if (action === 'create' && rest.length === 0) {
      if (values.name === undefined) throw invalidArgument('shoal acl token create needs --name NAME');
      const role = values.role;
      if (role === undefined || !(tokenRoles as readonly string[]).includes(role))
        throw invalidArgument(`--role must be one of ${tokenRoles.join(', ')}`);
      const ttlMs = parseDuration(values.ttl, '--ttl', tokenTtlMsMax);
      return withClient(values, async (client) => {
        const token = await client.createToken({
          name: values.name ?? '',
          role: role as TokenRole,
          ...(values.namespace.length === 0 ? {} : { namespaces: values.namespace }),
          ...(ttlMs === null ? {} : { ttlSeconds: Math.ceil(ttlMs / 1000) }),
        });
        process.stderr.write(
          `token ${token.name} (accessor ${token.accessorId}, role ${token.role}${token.expiresAt === null ? '' : `, expires ${token.expiresAt}`}); its secret, shown once:\n`,
        );
        process.stdout.write(`${token.secret}\n`);
        return 0;
      });
    }
    if (action === 'list' && rest.length === 0) {
      return withClient(values, async (client) => {
        const tokens = await client.tokens();
        process.stdout.write(values.json ? formatJson(tokens) : formatTokens(tokens));
        return 0;
      });
    }
    if (action === 'revoke' && rest.length === 1 && rest[0] !== undefined) {
      const accessorId = rest[0];
      return withClient(values, async (client) => {
        await client.revokeToken(accessorId);
        process.stderr.write(`token ${accessorId} revoked\n`);
        return 0;
      });
    }
    throw invalidArgument('use shoal acl token create|list|revoke (see shoal acl --help)');
  },
});
