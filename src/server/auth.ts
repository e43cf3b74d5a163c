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
  readonly #operators: readonly Buffer[];
  /** Tenants with a token marked `createSessions: false`. */
  readonly #noCreate: ReadonlySet<string>;

  /** `operatorHashes`: SHA-256 hashes of the operators' tokens (option `operatorTokens`), who see /health in full. */
  constructor(tokens: readonly TokenEntry[], operatorHashes: readonly string[] = []) {
    this.#entries = tokens.map((t) => ({ tenant: t.tenant, hash: Buffer.from(t.sha256, 'hex') }));
    this.#noCreate = new Set(tokens.filter((t) => t.createSessions === false).map((t) => t.tenant));
    this.#operators = operatorHashes.map((h) => Buffer.from(h, 'hex'));
  }

  /** Whether operator tokens are configured. */
  get hasOperators(): boolean {
    return this.#operators.length > 0;
  }

  /** Whether the request's Authorization header carries an operator's token (compared like tenants' tokens: every hash, in constant time). */
  isOperator(authorization: string | undefined): boolean {
    if (this.#operators.length === 0) return false;
    const match = /^Bearer ([\x21-\x7e]{1,4096})$/.exec(authorization ?? '');
    if (match === null) return false;
    const presented = createHash('sha256').update(match[1]!, 'utf8').digest();
    let found = false;
    for (const hash of this.#operators) if (timingSafeEqual(presented, hash)) found = true;
    return found;
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
    return this.identify(authorization)?.tenant;
  }

  /**
   * The tenant and the token's id of the request's Authorization header, or
   * undefined when it is missing or wrong. The token id is {@link tokenIdOf}
   * its configured hash (never the token); an open server has no token id.
   */
  identify(authorization: string | undefined): { tenant: string; tokenId?: string } | undefined {
    if (!this.enabled) return { tenant: OPEN_TENANT };
    const match = /^Bearer ([\x21-\x7e]{1,4096})$/.exec(authorization ?? '');
    if (match === null) return undefined;
    const presented = createHash('sha256').update(match[1]!, 'utf8').digest();
    let found: { tenant: string; hash: Buffer } | undefined;
    for (const entry of this.#entries) {
      // Every entry is compared, even after a match: the time does not depend on which one matched.
      if (timingSafeEqual(presented, entry.hash) && found === undefined) found = entry;
    }
    return found === undefined ? undefined : { tenant: found.tenant, tokenId: tokenIdOf(found.hash.toString('hex')) };
  }
}

/**
 * The id of a configured token, as journaled with the decisions it makes
 * (`decidedBy.tokenId`): `sha256:` and the first 12 hex digits of the
 * token's configured SHA-256 hash. It names the token entry in the config
 * without being usable as the token.
 */
export function tokenIdOf(sha256Hex: string): string {
  return `sha256:${sha256Hex.toLowerCase().slice(0, 12)}`;
}
