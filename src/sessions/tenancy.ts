import { createHash } from 'node:crypto';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { assertSessionId } from '../core/ids.ts';

/**
 * Tenants own their id space (docs/sessions-api.md, "Tenant id space").
 *
 * A session is stored under one *storage id*. The default tenant (the
 * library without a tenant, an open server, and the tenant named
 * `default`) stores a session under its own id, exactly as before tenants
 * had their own space, so existing data directories open unchanged. Every
 * other tenant's session `id` is stored as `__t<tag>_<id>`, where `<tag>`
 * is 12 base64url characters of SHA-256("arbor-tenant:" + tenant): derived
 * deterministically (every node and every restart finds the same session),
 * and two tenants asking for the same id reach two different sessions.
 *
 * Storage ids must be valid session ids (1–128 characters), so a tenant's
 * own ids are at most {@link MAX_TENANT_SESSION_ID_CHARS} characters.
 */
export const DEFAULT_TENANT = 'default';

const TAG_CHARS = 12;
const QUALIFIED = /^__t([A-Za-z0-9_-]{12})_([A-Za-z0-9_-]+)$/;
/** The longest id a tenant other than the default one may give a session (128 minus the storage prefix). */
export const MAX_TENANT_SESSION_ID_CHARS = 128 - (3 + TAG_CHARS + 1);

const tags = new Map<string, string>();

/** The tenant's tag in storage ids and cursors; '' for the default id space. */
export function tenantTag(tenant: string | undefined): string {
  if (tenant === undefined || tenant === DEFAULT_TENANT) return '';
  let tag = tags.get(tenant);
  if (tag === undefined) {
    tag = createHash('sha256').update(`arbor-tenant:${tenant}`, 'utf8').digest('base64url').slice(0, TAG_CHARS);
    if (tags.size < 10_000) tags.set(tenant, tag);
  }
  return tag;
}

/** The storage id of session `id` of `tenant` (the id itself for the default tenant). */
export function storageSessionId(id: string, tenant?: string): string {
  assertSessionId(id);
  const tag = tenantTag(tenant);
  if (tag === '') return id;
  if (id.length > MAX_TENANT_SESSION_ID_CHARS) {
    throw new ArborError(ErrorCodes.INVALID_SESSION_ID, `invalid session id: a session of a tenant has at most ${MAX_TENANT_SESSION_ID_CHARS} characters (this one has ${id.length})`, { field: 'id', sessionId: id.slice(0, 200) });
  }
  return `__t${tag}_${id}`;
}

/** Whether `id` has the form of a tenant's storage id (`__t<tag>_…`): such ids are reserved, never given by clients. */
export function isTenantStorageId(id: string): boolean {
  return QUALIFIED.test(id);
}

/** The id a tenant knows its session by, and the tenant's tag ('' for the default id space), from a storage id. */
export function parseStorageId(sid: string): { id: string; tag: string } {
  const m = QUALIFIED.exec(sid);
  return m === null ? { id: sid, tag: '' } : { id: m[2]!, tag: m[1]! };
}

/** The id a tenant knows the session with storage id `sid` by. */
export function publicSessionId(sid: string): string {
  return parseStorageId(sid).id;
}
