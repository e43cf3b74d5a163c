import { createHash, timingSafeEqual } from 'node:crypto';
import type { TokenEntry } from './config.ts';

/** The tenant of every session when no tokens are configured (the server is open). */
export const OPEN_TENANT = 'default';

/** The lowercase hex SHA-256 of a bearer token: what the configuration stores instead of the token. */
export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Maps `Authorization: Bearer <token>` to a tenant. Tokens are configured as
 * SHA-256 hashes; the presented token is hashed and compared with every
 * configured hash in constant time (`timingSafeEqual`, no early exit), so
 * neither the answer time nor the logs reveal which hash came close.
 */
export class TokenAuthenticator {
  readonly #entries: readonly { tenant: string; hash: Buffer }[];
  /** Tenants with a token marked `createSessions: false`. */
  readonly #noCreate: ReadonlySet<string>;

  constructor(tokens: readonly TokenEntry[]) {
    this.#entries = tokens.map((t) => ({ tenant: t.tenant, hash: Buffer.from(t.sha256, 'hex') }));
    this.#noCreate = new Set(tokens.filter((t) => t.createSessions === false).map((t) => t.tenant));
  }

  /** Whether `tenant` may have a session created on first use (POST /v1/chat): not when one of its tokens says `createSessions: false`. */
  mayCreateSessions(tenant: string): boolean {
    return !this.#noCreate.has(tenant);
  }

  /** False: every request belongs to {@link OPEN_TENANT}. */
  get enabled(): boolean {
    return this.#entries.length > 0;
  }

  /** The tenant of the request's Authorization header, or undefined when it is missing or wrong. */
  tenantOf(authorization: string | undefined): string | undefined {
    if (!this.enabled) return OPEN_TENANT;
    const match = /^Bearer ([\x21-\x7e]{1,4096})$/.exec(authorization ?? '');
    if (match === null) return undefined;
    const presented = createHash('sha256').update(match[1]!, 'utf8').digest();
    let found: string | undefined;
    for (const entry of this.#entries) {
      // Every entry is compared, even after a match: the time does not depend on which one matched.
      if (timingSafeEqual(presented, entry.hash) && found === undefined) found = entry.tenant;
    }
    return found;
  }
}
