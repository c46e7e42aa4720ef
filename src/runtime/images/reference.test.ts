import { describe, expect, it } from 'vitest';
import { isShoalError } from '../../shared/index.ts';
import { formatImageReference, parseImageReference, registryApiHost } from './reference.ts';

const digest = `sha256:${'ab'.repeat(32)}`;

describe('parseImageReference', () => {
  it.each([
    ['busybox', 'docker.io', 'library/busybox', 'latest', null],
    ['busybox:1.36', 'docker.io', 'library/busybox', '1.36', null],
    ['team/app', 'docker.io', 'team/app', 'latest', null],
    ['docker.io/busybox', 'docker.io', 'library/busybox', 'latest', null],
    ['index.docker.io/library/busybox:musl', 'docker.io', 'library/busybox', 'musl', null],
    ['localhost/app', 'localhost', 'app', 'latest', null],
    ['localhost:5000/app:v1', 'localhost:5000', 'app', 'v1', null],
    ['127.0.0.1:5000/team/app', '127.0.0.1:5000', 'team/app', 'latest', null],
    ['[::1]:5000/app', '[::1]:5000', 'app', 'latest', null],
    ['Registry.Example.com/a/b/c:x_Y.z-1', 'registry.example.com', 'a/b/c', 'x_Y.z-1', null],
    [`busybox@${digest}`, 'docker.io', 'library/busybox', null, digest],
    [`ghcr.io/o/app:1@${digest}`, 'ghcr.io', 'o/app', '1', digest],
    ['my-app__x.y', 'docker.io', 'library/my-app__x.y', 'latest', null],
  ])('%s', (text, registry, repository, tag, expectedDigest) => {
    expect(parseImageReference(text)).toEqual({ registry, repository, tag, digest: expectedDigest });
  });

  it.each([
    ['', /it is empty/],
    ['Busybox', /must be lowercase/],
    ['busybox:', /a tag is/],
    ['busybox:-x', /a tag is/],
    [`busybox:${'x'.repeat(129)}`, /a tag is/],
    ['busybox@sha256:abc', /the digest must be/],
    [`busybox@md5:${'a'.repeat(32)}`, /the digest must be/],
    ['a//b', /"" is not a valid name part/],
    ['app-/x', /"app-" is not a valid name part/],
    ['host:99999/app', /port 99999 is out of range/],
    ['my host/app', /white space/],
    ['localhost:5000/', /no repository name/],
    ['x'.repeat(600), /longer than 512/],
  ])('refuses %j', (text, why) => {
    let caught: unknown;
    try {
      parseImageReference(text);
    } catch (error) {
      caught = error;
    }
    expect(isShoalError(caught, 'INVALID_ARGUMENT')).toBe(true);
    expect((caught as Error).message).toMatch(why);
    expect((caught as Error).message).not.toContain('\n');
  });

  it('formats the canonical reference, and Docker Hub is served from its API host', () => {
    expect(formatImageReference(parseImageReference('busybox'))).toBe('docker.io/library/busybox:latest');
    expect(formatImageReference(parseImageReference(`localhost:5000/a:1@${digest}`))).toBe(
      `localhost:5000/a:1@${digest}`,
    );
    expect(registryApiHost('docker.io')).toBe('registry-1.docker.io');
    expect(registryApiHost('127.0.0.1:5000')).toBe('127.0.0.1:5000');
  });
});
