import { setMaxListeners } from 'node:events';
import { STATUS_CODES, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { hostname } from 'node:os';
import { serve } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import { createArbor, ErrorCodes, subscribeTelemetry, type Arbor, type ArborOptions } from '../index.ts';
import { toArborOptions, unsafeDisableFencingFromEnv } from './arbor-options.ts';
import type { ArborConfig, OptionName } from './config.ts';
import { PrometheusMetrics } from './prometheus.ts';
import type { MeterProvider, TracerProvider } from '@opentelemetry/api';
import { startOtelMetrics, startOtelTracing } from './otel.ts';
import { createApp } from './app.ts';
import { TokenAuthenticator } from './auth.ts';
import { HealthChecker, type CheckResult, type HealthOptions } from './health.ts';
import { HttpError, HttpErrorCodes } from './http-errors.ts';
import { isLoopbackAddress, rawErrorResponse } from './browser-safety.ts';

/** A running server. */
export interface RunningServer {
  /** e.g. `http://127.0.0.1:4000` (the port actually bound when 0 was asked for). */
  readonly url: string;
  readonly arbor: Arbor;
  readonly logger: Logger;
  /**
   * Graceful shutdown: stops accepting connections, closes Arbor (running
   * answers end with stream_interrupted, mailboxes drain, snapshots are taken,
   * the journal is flushed and closed), ends open streams after their last
   * events, then closes every connection. Idempotent.
   */
  close(): Promise<void>;
}

export interface StartServerOptions {
  /** Logs go here (default: stderr, so stdout stays for the URL line). */
  logger?: Logger;
  /** Health check settings over the configuration's (tests inject a full disk, or probe on every call). */
  health?: Partial<HealthOptions>;
  /** Options passed to createArbor over the configuration's (tests pass a filesystem that fails). */
  arborOverrides?: ArborOptions;
  /** Where the OpenTelemetry spans go (default: the global tracer provider, a no-op unless the application installed an SDK). */
  tracerProvider?: TracerProvider;
  /** Where the OpenTelemetry metrics go (default: the global meter provider). */
  meterProvider?: MeterProvider;
}

/** How long open connections get to finish after Arbor closed, before they are cut. */
const CONNECTION_GRACE_MS = 2_000;

/**
 * Answers a request the HTTP parser refused (head too large, malformed) or
 * Node cut off as too slow (its head or body not in within headersTimeoutMs /
 * requestTimeoutMs: 408) with a JSON error, as every other error, and closes
 * the connection. Nothing is written once an answer has begun.
 */
function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  const answering = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (err.code === 'ECONNRESET' || !socket.writable || answering?.headersSent === true) {
    socket.destroy();
    return;
  }
  const timeout = err.code === 'ERR_HTTP_REQUEST_TIMEOUT';
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const status = timeout ? 408 : tooLarge ? 431 : 400;
  const error = timeout
    ? new HttpError(408, HttpErrorCodes.REQUEST_TIMEOUT, 'the request did not arrive in time (headersTimeoutMs for its head, requestTimeoutMs for all of it)')
    : tooLarge
      ? new HttpError(431, HttpErrorCodes.HEADERS_TOO_LARGE, 'request headers are over the limit (maxHeaderBytes)')
      : new HttpError(400, HttpErrorCodes.BAD_REQUEST, 'malformed HTTP request');
  socket.end(rawErrorResponse(status, STATUS_CODES[status]!, error));
  // A client that does not read its answer does not keep the socket either.
  setTimeout(() => socket.destroy(), 1_000).unref();
}

/** How often Node looks for requests past headersTimeoutMs / requestTimeoutMs (its default, 30 s, would let them run that much longer). */
export function connectionsCheckingIntervalMs(config: Pick<ArborConfig, 'headersTimeoutMs' | 'requestTimeoutMs'>): number {
  return Math.max(10, Math.min(1_000, Math.floor(Math.min(config.headersTimeoutMs, config.requestTimeoutMs) / 4)));
}

/** The URL other nodes reach a server listening at `address` on (a wildcard host is replaced by the host name). */
export function urlOf(address: AddressInfo): string {
  const wildcard = address.address === '0.0.0.0' || address.address === '::';
  const host = wildcard ? hostname() : address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
}

/**
 * `checks.exposure` of /health: `warn` when the server listens beyond
 * loopback (0.0.0.0, ::, a public address) with no tokens: anyone who reaches
 * the address reads and writes every session.
 */
export function exposureCheck(config: Pick<ArborConfig, 'tokens'>, address: AddressInfo): CheckResult {
  const loopback = isLoopbackAddress(address.address);
  if (loopback) return { status: 'ok', message: `listening on loopback (${address.address}) only`, loopback, tokens: config.tokens.length > 0 };
  if (config.tokens.length > 0) return { status: 'ok', message: `listening on ${address.address}; every /v1 request needs a token`, loopback, tokens: true };
  return {
    status: 'warn',
    message: `listening on ${address.address}, beyond loopback, with no tokens: anyone who can reach this address can read and write every session (configure tokens, or listen on 127.0.0.1)`,
    loopback,
    tokens: false,
  };
}

/**
 * Names this server goes by beside loopback names and IP addresses: the host
 * it was told to listen on (on every address: the machine's name, as urlOf
 * prints it), and its node address's host (other nodes forward to it).
 */
function ownHostsOf(host: string, nodeAddress: string | undefined): string[] {
  const names = host === '0.0.0.0' || host === '::' ? [hostname()] : [host];
  if (nodeAddress !== undefined) {
    try {
      names.push(new URL(nodeAddress).hostname);
    } catch {
      // validated by the configuration; an unparsable one adds nothing
    }
  }
  return names;
}

/**
 * Serves the HTTP API on `config.host:config.port` and opens Arbor with
 * `config`. It listens first (answering 503 with Retry-After until Arbor is
 * open), so that on PostgreSQL the address it listens on — with `--port 0`
 * the port actually bound — is the node address other nodes forward to.
 */
export async function startServer(config: Readonly<ArborConfig>, options: StartServerOptions = {}): Promise<RunningServer> {
  const logger = options.logger ?? pino({ level: config.logLevel, base: { service: 'arbor' } }, pino.destination(2));
  const unsafeDisableFencing = unsafeDisableFencingFromEnv();
  let handler: ((req: Request, env: unknown) => Response | Promise<Response>) | undefined;
  const starting = (): Response =>
    new Response(JSON.stringify({ error: { code: ErrorCodes.NOT_LOADED, message: 'the server is starting' } }), { status: 503, headers: { 'content-type': 'application/json', 'retry-after': '1' } });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({
      fetch: (req, env) => (handler === undefined ? starting() : handler(req, env)),
      port: config.port,
      hostname: config.host,
      serverOptions: {
        maxHeaderSize: config.maxHeaderBytes,
        headersTimeout: config.headersTimeoutMs,
        requestTimeout: config.requestTimeoutMs,
        keepAliveTimeout: config.keepAliveTimeoutMs,
        connectionsCheckingInterval: connectionsCheckingIntervalMs(config),
      },
    }) as Server;
    s.keepAliveTimeout = config.keepAliveTimeoutMs;
    s.maxConnections = config.maxConnections;
    s.once('error', reject);
    s.once('listening', () => {
      s.off('error', reject);
      resolve(s);
    });
  });
  server.on('clientError', onClientError);
  server.on('error', (err) => logger.error({ err }, 'server error'));
  let droppedAt = 0;
  server.on('drop', () => {
    // A flood of connections is one warning every 10 s, not one per connection.
    if (Date.now() - droppedAt < 10_000) return;
    droppedAt = Date.now();
    logger.warn({ maxConnections: config.maxConnections }, 'connection refused: maxConnections open connections already');
  });
  const address = server.address() as AddressInfo;
  const listenUrl = `http://${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`;
  const url = listenUrl;

  // Failures the runtime handled in the background (a snapshot, the recovery pass, a crashed handler) reach the log
  // with their code, from the first recovery on. The channel is process-wide: a second server in the process logs them too.
  const stopErrorLog = subscribeTelemetry({ error: (m) => logger.error({ source: m.source, code: m.code, ...(m.sessionId === undefined ? {} : { sessionId: m.sessionId }) }, m.message) });
  let arbor: Arbor;
  let ignored: OptionName[];
  try {
    const built = toArborOptions(config, undefined, { defaultNodeAddress: urlOf(address), unsafeDisableFencing });
    ignored = built.ignored;
    arbor = await createArbor({ ...built.options, ...options.arborOverrides });
  } catch (err) {
    // Nothing is served: stop listening, so the port is free again.
    await new Promise<void>((r) => server.close(() => r()));
    server.closeAllConnections();
    stopErrorLog();
    throw err;
  }
  if (ignored.length > 0) logger.debug({ options: ignored }, 'options left at their defaults: this runtime build does not take them yet');
  if (unsafeDisableFencing) logger.warn('ARBOR_UNSAFE_DISABLE_FENCING=1: PostgreSQL writes are NOT fenced (test-only; never in production)');
  const report = arbor.recoveryReport();
  // A backend shared with other nodes says who this node is to them: requests are routed by it.
  const ownership = arbor.backend.ownership;
  const node = ownership === undefined ? undefined : { nodeId: ownership.nodeId, nodeAddress: ownership.nodeAddress };
  logger.info(config.databaseUrl === undefined ? { dataDir: config.dataDir, recovery: report.counts } : { backend: 'postgres', schema: config.pgSchema, node }, 'arbor opened');
  const metrics = new PrometheusMetrics(arbor);
  const stopOtel = startOtelMetrics(arbor, options.meterProvider?.getMeter('arbor'));
  const tracing = startOtelTracing(options.tracerProvider?.getTracer('arbor'));
  const extraDirs = [config.journalDir, config.snapshotDir].filter((d): d is string => d !== undefined);
  const exposure = exposureCheck(config, address);
  if (exposure.status !== 'ok') logger.warn({ host: config.host, address: address.address }, exposure.message);
  if (config.allowedHosts.includes('*')) logger.warn('allowedHosts is "*": the Host header is not checked, so a web page whose DNS name is rebound to this address can read from the server (docs/http-safety.md)');
  if (config.corsOrigins.includes('*') && config.tokens.length === 0) logger.warn('corsOrigins is "*" and no tokens are configured: a page of any origin may read and write every session');
  const health = new HealthChecker(arbor, { dataDir: config.dataDir, extraDirs, diskWarnPercent: config.diskWarnPercent, diskFailPercent: config.diskFailPercent, exposure, ...options.health });
  const shutdown = new AbortController();
  // Every open stream listens for shutdown: no listener limit on this signal.
  setMaxListeners(0, shutdown.signal);
  const { app, streams } = createApp({
    arbor,
    auth: new TokenAuthenticator(config.tokens, config.operatorTokens),
    health,
    metrics,
    logger,
    maxBodyBytes: config.maxBodyBytes,
    retryAfterSeconds: config.retryAfterSeconds,
    shutdown: shutdown.signal,
    tracing,
    browser: { allowedHosts: config.allowedHosts, corsOrigins: config.corsOrigins, ownHosts: ownHostsOf(config.host, ownership?.nodeAddress) },
    ...(ownership === undefined ? {} : { node: { nodeId: ownership.nodeId, nodeAddress: ownership.nodeAddress, leaseMs: ownership.leaseMs } }),
  });
  handler = (req, env) => app.fetch(req, env);
  logger.info({ url }, 'listening');

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closing ??= (async () => {
      logger.info('shutting down');
      const closed = new Promise<void>((r) => server.close(() => r()));
      server.closeIdleConnections();
      // Requests arriving meanwhile are refused by the runtime with ARBOR_CLOSED (503, Retry-After).
      await arbor.close();
      shutdown.abort();
      const grace = setTimeout(() => server.closeAllConnections(), CONNECTION_GRACE_MS);
      await closed;
      clearTimeout(grace);
      stopOtel();
      tracing.stop();
      metrics.close();
      streams.close();
      stopErrorLog();
      logger.info('stopped');
    })();
    return closing;
  };
  return { url, arbor, logger, close };
}
