/**
 * The server's public surface (`import { startServer } from 'arbor/server'`):
 * configuration, the HTTP server, and the metrics exporters an application
 * embedding Arbor can use on its own.
 */
export { loadConfig, resolveConfig, ConfigError, DEFAULT_CONFIG, OPTION_SPECS, OPTION_NAMES, OTHER_ENV_VARS, envVarOf, flagNameOf, displayValue, parseFlagValue, optionsHelp, unknownEnvWarnings, type OptionName, type ArborConfig, type TokenEntry, type LoadConfigInput, type ResolvedConfig, type ConfigSource } from './server/config.ts';
export { toArborOptions, providerFor } from './server/arbor-options.ts';
export { startServer, type RunningServer, type StartServerOptions } from './server/server.ts';
export { createApp, sessionView, TENANT_CONFIG_KEY, type SessionView } from './server/app.ts';
export { hashToken, TokenAuthenticator, OPEN_TENANT } from './server/auth.ts';
export { HealthChecker, type HealthReport, type CheckResult, type HealthOptions } from './server/health.ts';
export { HttpErrorCodes, STATUS_BY_CODE } from './server/http-errors.ts';
export { PrometheusMetrics, PROMETHEUS_METRICS, PROCESS_METRICS } from './server/prometheus.ts';
export { startOtelMetrics, startOtelTracing, OTEL_INSTRUMENTS, OTEL_SPANS, type OtelTracing, type HttpOutcome } from './server/otel.ts';
