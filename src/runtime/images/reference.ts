/**
 * Image references: `[host[:port]/]name[:tag][@sha256:HEX]`, parsed and normalized as Docker does, so a
 * reference means here what it means to `docker pull`.
 *
 * In: the text a user wrote. Out: its parts, with the defaults filled in (registry docker.io, `library/` for a
 * one-part Docker Hub name, tag `latest` when neither tag nor digest is given), and the canonical text.
 * Pure: no I/O.
 */
import { ShoalError } from '../../shared/index.ts';

export interface ImageReference {
  /** `host[:port]` as written (lowercased), `docker.io` for Docker Hub. */
  readonly registry: string;
  /** The repository path, e.g. `library/busybox`. */
  readonly repository: string;
  /** null when only a digest was given. */
  readonly tag: string | null;
  /** `sha256:HEX`, or null. When given, the pull is by digest and the tag only names it. */
  readonly digest: string | null;
}

/** Docker Hub's name in references, and the host that actually serves its registry API. */
export const dockerHubRegistry = 'docker.io';
export const dockerHubApiHost = 'registry-1.docker.io';
/** A whole reference's length limit; Docker's is 255 for the name alone, this leaves room for tag and digest. */
export const referenceLengthMax = 512;
const repositoryLengthMax = 255;

const digestPattern = /^sha256:[a-f0-9]{64}$/;
const tagPattern = /^[\w][\w.-]{0,127}$/;
/** One path component of a repository (the distribution spec's grammar). */
const componentPattern = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
/** A registry host: a DNS name or IPv4 address, or a bracketed IPv6 address, with an optional port. */
const registryPattern =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]{1,5})?$/;

/** Parses a reference; throws INVALID_ARGUMENT with what is wrong and an example of a good one. */
export function parseImageReference(text: string): ImageReference {
  const fail = (why: string): never => {
    throw new ShoalError(
      'INVALID_ARGUMENT',
      `bad image reference ${JSON.stringify(text.slice(0, 100))}: ${why} (e.g. busybox:1.36, registry.example.com:5000/team/app@sha256:…)`,
    );
  };
  if (text.length === 0) fail('it is empty');
  if (text.length > referenceLengthMax) fail(`it is longer than ${referenceLengthMax} characters`);
  if (/\s/.test(text)) fail('it contains white space');

  let rest = text;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestPattern.test(digest)) fail('the digest must be sha256: and 64 lowercase hex digits');
  }

  let registry = dockerHubRegistry;
  const slash = rest.indexOf('/');
  if (slash >= 0) {
    const first = rest.slice(0, slash);
    // Docker's rule: the first component names a registry when it looks like a host (a dot, a port, or
    // localhost); `team/app` is a Docker Hub repository.
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[')) {
      if (!registryPattern.test(first)) fail(`${JSON.stringify(first)} is not a registry host[:port]`);
      const port = /:([0-9]+)$/.exec(first)?.[1];
      if (port !== undefined && (Number(port) < 1 || Number(port) > 65535))
        fail(`port ${port} is out of range`);
      registry = first.toLowerCase();
      rest = rest.slice(slash + 1);
    }
  }
  if (registry === 'index.docker.io') registry = dockerHubRegistry;

  let tag: string | null = null;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.indexOf(':', lastSlash + 1);
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagPattern.test(tag))
      fail('a tag is up to 128 letters, digits, _ . - and does not start with . or -');
  }

  if (rest === '') fail('it has no repository name');
  if (rest !== rest.toLowerCase()) fail('the repository name must be lowercase');
  for (const component of rest.split('/')) {
    if (!componentPattern.test(component)) {
      fail(
        `${JSON.stringify(component)} is not a valid name part (lowercase letters, digits, and . _ - between them)`,
      );
    }
  }
  const repository = registry === dockerHubRegistry && !rest.includes('/') ? `library/${rest}` : rest;
  if (repository.length > repositoryLengthMax)
    fail(`the repository name is longer than ${repositoryLengthMax}`);
  if (tag === null && digest === null) tag = 'latest';
  return { registry, repository, tag, digest };
}

/** The canonical text of a reference: `registry/repository[:tag][@digest]`, every default spelled out. */
export function formatImageReference(reference: ImageReference): string {
  return (
    `${reference.registry}/${reference.repository}` +
    (reference.tag === null ? '' : `:${reference.tag}`) +
    (reference.digest === null ? '' : `@${reference.digest}`)
  );
}

/** The host (and port) whose /v2/ API serves a registry: Docker Hub's API lives on another host than its name. */
export function registryApiHost(registry: string): string {
  return registry === dockerHubRegistry ? dockerHubApiHost : registry;
}
