/** The PostgreSQL backend: shared storage and session ownership for several Arbor processes. */
export { PgBackend, openPgBackend, type PgBackendInternals, type PgBackendStats } from './pg-backend.ts';
export { DEFAULT_PG_BACKEND_OPTIONS, resolvePgBackendOptions, type PgBackendOptions, type ResolvedPgBackendOptions } from './options.ts';
export { MIGRATIONS, SCHEMA_VERSION, SCHEMA_NAME_PATTERN, migrate, type Migration, type MigrationResult } from './migrations.ts';
