import { describe, expect, it } from 'vitest';
import { denial, type Caller, type TokenRecord, type TokenRole } from './tokens.ts';

const token = (role: TokenRole, namespaces: string[] | null = null): TokenRecord => ({
  accessorId: 'abcdefabcdef',
  name: role,
  role,
  namespaces,
  secretHash: '0'.repeat(64),
  createdAtMs: 0,
  expiresAtMs: null,
});
const as = (role: TokenRole, namespaces: string[] | null = null): Caller => ({
  kind: 'token',
  token: token(role, namespaces),
});

describe('what a token may do', () => {
  it('ranks read < deploy < operator < admin', () => {
    expect(denial(as('read'), 'deploy', null)).toMatch(/has role read; this needs deploy/);
    expect(denial(as('deploy'), 'deploy', 'team')).toBeNull();
    expect(denial(as('deploy', ['other']), 'deploy', 'team')).toMatch(/may not act in namespace team/);
    expect(denial(as('admin', ['other']), 'deploy', 'team')).toBeNull();
  });

  it('gives a framework token the scheduler API in its namespaces, and nothing else', () => {
    expect(denial(as('framework', ['batch']), 'framework', 'batch')).toBeNull();
    expect(denial(as('framework', ['batch']), 'framework', 'web')).toMatch(/may not act in namespace web/);
    expect(denial(as('framework'), 'read', null)).toMatch(/may use only the scheduler API/);
    expect(denial(as('framework'), 'deploy', 'batch')).toMatch(/may use only the scheduler API/);
  });

  it('lets tokens that may deploy run frameworks, and not read-only ones', () => {
    expect(denial(as('deploy', ['batch']), 'framework', 'batch')).toBeNull();
    expect(denial(as('operator'), 'framework', 'batch')).toBeNull();
    expect(denial(as('read'), 'framework', 'batch')).toMatch(/has role read; this needs framework/);
    expect(denial({ kind: 'local' }, 'framework', 'batch')).toBeNull();
  });
});
