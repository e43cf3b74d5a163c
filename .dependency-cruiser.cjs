/**
 * Arbor's layering rules, checked by `npm test` (docs/architecture.md explains them).
 *
 *   core ← backend ← storage ← file, postgres ← (composition: src/backends.ts) ← sessions, hot, llm, telemetry ← runtime
 *   ← package entries (index.ts, ops.ts, testing.ts, server.ts) ← server/, cli/
 */
/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    { name: 'no-circular', severity: 'error', comment: 'Import cycles make start-up order and layering accidental.', from: {}, to: { circular: true } },
    {
      name: 'core-is-pure',
      severity: 'error',
      comment: 'core/ is the pure domain: ids, errors, events, state, record. It imports nothing outside core/ but zod: no node:*, no adapter, no transport.',
      from: { path: '^src/core/', pathNot: '\\.test\\.ts$' },
      to: { pathNot: ['^src/core/', '(^|/)node_modules/zod/'] },
    },
    {
      name: 'backend-knows-no-implementation',
      severity: 'error',
      comment: 'backend/ is the SessionBackend interface, the append checks, replay and the snapshot codec; it knows neither the file store nor PostgreSQL nor their users.',
      from: { path: '^src/backend/' },
      to: { path: '^src/(?!core/|backend/|telemetry/)' },
    },
    {
      name: 'adapters-stay-below-sessions',
      severity: 'error',
      comment: 'The file and PostgreSQL backends implement backend/; they never import sessions, the runtime, the server, the CLI or the ops tools.',
      from: { path: '^src/(file|postgres|storage)/' },
      to: { path: '^src/(sessions|hot|llm|tools|server|cli|ops|testing)/|^src/(runtime|index|ops|server|testing|backends)\\.ts$' },
    },
    {
      name: 'backends-do-not-know-each-other',
      severity: 'error',
      comment: 'The file store and PostgreSQL share only backend/: neither imports the other.',
      from: { path: '^src/(file|postgres)/' },
      to: { path: '^src/(file|postgres)/', pathNot: '^src/$1/' },
    },
    {
      name: 'runtime-uses-the-interface-only',
      severity: 'error',
      comment: 'The runtime and sessions see only SessionBackend; src/backends.ts alone opens a concrete backend.',
      from: { path: '^src/(sessions/|hot/|llm/|runtime\\.ts)' },
      to: { path: '^src/(file|postgres|storage|testing|server|cli|ops)/' },
    },
    {
      name: 'tools-beside-sessions',
      severity: 'error',
      comment: 'tools/ (the tool registry, MCP clients, the safety policy) sits beside sessions/ and llm/: it may import core/ and llm/, never a backend, the transports, the CLI or the ops tools.',
      from: { path: '^src/tools/' },
      to: { path: '^src/(?!core/|llm/|tools/)' },
    },
    {
      name: 'telemetry-is-a-leaf',
      severity: 'error',
      from: { path: '^src/telemetry/' },
      to: { path: '^src/(?!telemetry/|core/)' },
    },
    {
      name: 'ops-below-the-transports',
      severity: 'error',
      from: { path: '^src/ops/' },
      to: { path: '^src/(sessions|server|cli|testing)/|^src/(runtime|index|server|testing)\\.ts$' },
    },
    {
      name: 'server-through-public-entries',
      severity: 'error',
      comment: 'server/ uses the library only through the package entries (what users get from `exports`).',
      from: { path: '^src/server/' },
      to: { path: '^src/(?!server/|index\\.ts$|ops\\.ts$)' },
    },
    {
      name: 'cli-through-public-entries',
      severity: 'error',
      comment: 'cli/ uses the library only through the package entries.',
      from: { path: '^src/cli/' },
      to: { path: '^src/(?!cli/|index\\.ts$|ops\\.ts$|server\\.ts$)' },
    },
    {
      name: 'langgraph-on-the-storage-engine',
      severity: 'error',
      comment: 'langgraph/ (ArborSaver) runs on the storage engine alone: core/, the backend interface and backends.ts (which opens the backend with its hooks); never the runtime, sessions, the transports or a concrete backend.',
      from: { path: '^src/langgraph/' },
      to: { path: '^src/(?!core/|backend/|langgraph/|backends\\.ts$)' },
    },
    {
      name: 'langgraph-only-through-its-entry',
      severity: 'error',
      comment: 'ArborSaver is reached through the package entry arbor-runtime/langgraph (src/langgraph.ts) only, so the other entries never load the optional peer dependency.',
      from: { path: '^src/', pathNot: '^src/(langgraph/|langgraph\\.ts$)' },
      to: { path: '^src/langgraph/' },
    },
    {
      name: 'library-never-imports-tests',
      severity: 'error',
      from: { path: '^src/', pathNot: '\\.test\\.ts$' },
      to: { path: '^(test|bench)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    // test/ and bench/ are in the graph only so that an import of them from src/ is seen (and refused).
    includeOnly: '^(src|test|bench)/|node_modules/zod/',
    exclude: { path: '\\.test\\.ts$' },
  },
};
