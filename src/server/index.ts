/**
 * The server's public surface (`import { startServer } from 'arbor/server'`):
 * configuration, the HTTP server, and the metrics exporters an application
 * embedding Arbor can use on its own.
 */
export { loadConfig, ConfigError, DEFAULT_CONFIG, OPTION_SPECS, envVarOf, type ArborConfig, type TokenEntry, type LoadConfigInput } from '../config/config.ts';
export { toArborOptions, providerFor } from '../config/arbor-options.ts';
export { startServer, type RunningServer, type StartServerOptions } from './server.ts';
export { createApp, sessionView, TENANT_CONFIG_KEY, type SessionView } from './app.ts';
export { hashToken, TokenAuthenticator, OPEN_TENANT } from './auth.ts';
export { HealthChecker, type HealthReport, type CheckResult, type HealthOptions } from './health.ts';
export { HttpErrorCodes, STATUS_BY_CODE } from './http-errors.ts';
export { PrometheusMetrics, PROMETHEUS_METRICS } from '../telemetry/prometheus.ts';
export { startOtelMetrics, OTEL_INSTRUMENTS } from '../telemetry/otel.ts';
