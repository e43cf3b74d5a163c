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
import { HealthChecker, type HealthOptions } from './health.ts';
import { HttpErrorCodes } from './http-errors.ts';

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

/** Answers a request the HTTP parser refused (head too large, malformed) with a JSON error, as every other error. */
function onClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? 431 : 400;
  const body = JSON.stringify({ error: { code: tooLarge ? HttpErrorCodes.HEADERS_TOO_LARGE : HttpErrorCodes.BAD_REQUEST, message: tooLarge ? 'request headers are over the limit (maxHeaderBytes)' : 'malformed HTTP request' } });
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** The URL other nodes reach a server listening at `address` on (a wildcard host is replaced by the host name). */
export function urlOf(address: AddressInfo): string {
  const wildcard = address.address === '0.0.0.0' || address.address === '::';
  const host = wildcard ? hostname() : address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return `http://${host}:${address.port}`;
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
    const s = serve({ fetch: (req, env) => (handler === undefined ? starting() : handler(req, env)), port: config.port, hostname: config.host, serverOptions: { maxHeaderSize: config.maxHeaderBytes } }) as Server;
    s.once('error', reject);
    s.once('listening', () => {
      s.off('error', reject);
      resolve(s);
    });
  });
  server.on('clientError', onClientError);
  server.on('error', (err) => logger.error({ err }, 'server error'));
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
  const health = new HealthChecker(arbor, { dataDir: config.dataDir, extraDirs, diskWarnPercent: config.diskWarnPercent, diskFailPercent: config.diskFailPercent, ...options.health });
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
