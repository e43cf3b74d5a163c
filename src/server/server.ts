import { setMaxListeners } from 'node:events';
import { STATUS_CODES, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { serve } from '@hono/node-server';
import pino, { type Logger } from 'pino';
import { createArbor, type Arbor, type ArborOptions } from '../index.ts';
import { toArborOptions } from '../config/arbor-options.ts';
import type { ArborConfig } from '../config/config.ts';
import { PrometheusMetrics } from '../telemetry/prometheus.ts';
import { startOtelMetrics } from '../telemetry/otel.ts';
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

/** Opens Arbor with `config` and serves the HTTP API on `config.host:config.port`. */
export async function startServer(config: Readonly<ArborConfig>, options: StartServerOptions = {}): Promise<RunningServer> {
  const logger = options.logger ?? pino({ level: config.logLevel, base: { service: 'arbor' } }, pino.destination(2));
  const { options: arborOptions, ignored } = toArborOptions(config);
  if (ignored.length > 0) logger.debug({ options: ignored }, 'options left at their defaults: this runtime build does not take them yet');
  const arbor = await createArbor({ ...arborOptions, ...options.arborOverrides });
  const report = arbor.recoveryReport();
  logger.info({ dataDir: config.dataDir, recovery: report.counts }, 'arbor opened');
  const metrics = new PrometheusMetrics(arbor);
  const stopOtel = startOtelMetrics(arbor);
  const extraDirs = [config.journalDir, config.snapshotDir].filter((d): d is string => d !== undefined);
  const health = new HealthChecker(arbor, { dataDir: config.dataDir, extraDirs, diskWarnPercent: config.diskWarnPercent, diskFailPercent: config.diskFailPercent, ...options.health });
  const shutdown = new AbortController();
  // Every open stream listens for shutdown: no listener limit on this signal.
  setMaxListeners(0, shutdown.signal);
  const { app, streams } = createApp({
    arbor,
    auth: new TokenAuthenticator(config.tokens),
    health,
    metrics,
    logger,
    maxBodyBytes: config.maxBodyBytes,
    retryAfterSeconds: config.retryAfterSeconds,
    shutdown: shutdown.signal,
  });

  let server: Server;
  try {
    server = await new Promise<Server>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: config.port, hostname: config.host, serverOptions: { maxHeaderSize: config.maxHeaderBytes } }) as Server;
      s.once('error', reject);
      s.once('listening', () => {
        s.off('error', reject);
        resolve(s);
      });
    });
  } catch (err) {
    // Nothing listens: close what was opened, so the data directory's lock is released.
    stopOtel();
    metrics.close();
    streams.close();
    await arbor.close();
    throw err;
  }
  server.on('clientError', onClientError);
  server.on('error', (err) => logger.error({ err }, 'server error'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
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
      metrics.close();
      streams.close();
      logger.info('stopped');
    })();
    return closing;
  };
  return { url, arbor, logger, close };
}
