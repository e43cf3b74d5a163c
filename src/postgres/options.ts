import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Pool } from 'pg';
import type { RecoveryHooks } from '../backend/replay.ts';
import { SCHEMA_NAME_PATTERN } from './migrations.ts';
import { integer as integerOption } from '../core/validate.ts';

/** Options of `PgBackend.open`. Give `connectionString` or `pool`. */
export interface PgBackendOptions<S> {
  /** e.g. `postgres://user@host:5432/db`; the backend creates (and ends) its own pool. */
  connectionString?: string;
  /** A caller-owned pool (not ended by `close()`); it needs at least 3 connections. */
  pool?: Pool;
  /** Connections of the pool created from `connectionString`. */
  poolSize?: number;
  hooks: RecoveryHooks<S>;
  /** This process's name in the lease table; unique per process (default: host-pid-random). */
  nodeId?: string;
  /** Where other nodes can reach this one (e.g. `http://10.0.0.5:4000`); returned in ARBOR_NOT_OWNER details. */
  nodeAddress?: string;
  /**
   * How long a lease lasts without renewal, on the database's clock. Shorter:
   * a crashed node's sessions are taken over sooner; longer: a node survives
   * longer pauses (GC, a stalled VM, a slow database) without losing them.
   */
  leaseMs?: number;
  /** Renewal period of every held lease (one statement); default leaseMs / 3. */
  renewEveryMs?: number;
  /** PostgreSQL schema for the tables (created when missing). */
  schema?: string;
  maxSnapshotsPerSession?: number;
  /** How many recent clientMessageIds per session are remembered (and carried in snapshots). */
  dedupeWindow?: number;
  /** Wait this long after the first queued append before flushing (0: next microtask). */
  flushIntervalMs?: number;
  /** Caps of one group-commit transaction. */
  maxBatchRecords?: number;
  maxBatchBytes?: number;
  /** Bound of the queue; beyond it appends reject at once with ARBOR_QUEUE_FULL. */
  maxQueueRecords?: number;
  maxQueueBytes?: number;
  /** Largest event (its JSON data, type and clientMessageId) accepted. */
  maxEventBytes?: number;
  /** Version of the state shape written into snapshots (upcastState hook for older ones). */
  stateSchemaVersion?: number;
  /**
   * Encryption at rest (docs/encryption.md): the master key, 32 bytes in
   * base64 (or `encryptionKeyFile`, a file holding it). Each session gets its
   * own data key, wrapped by this one, in the schema's `data_keys` table;
   * event data and snapshot states are sealed before they are sent.
   */
  encryptionKey?: string | undefined;
  encryptionKeyFile?: string | undefined;
  /** How errors name where `encryptionKey` came from (default `option encryptionKey`). */
  encryptionKeySource?: string | undefined;
}

export interface ResolvedPgBackendOptions {
  connectionString: string | undefined;
  poolSize: number;
  nodeId: string;
  nodeAddress: string | undefined;
  leaseMs: number;
  renewEveryMs: number;
  schema: string;
  maxSnapshotsPerSession: number;
  dedupeWindow: number;
  flushIntervalMs: number;
  maxBatchRecords: number;
  maxBatchBytes: number;
  maxQueueRecords: number;
  maxQueueBytes: number;
  maxEventBytes: number;
  stateSchemaVersion: number;
  encryptionKey: string | undefined;
  encryptionKeyFile: string | undefined;
  encryptionKeySource: string | undefined;
}

export const DEFAULT_PG_BACKEND_OPTIONS = Object.freeze({
  poolSize: 10,
  leaseMs: 5_000,
  schema: 'arbor',
  maxSnapshotsPerSession: 5,
  dedupeWindow: 1000,
  flushIntervalMs: 0,
  maxBatchRecords: 5_000,
  maxBatchBytes: 8 * 1024 * 1024,
  maxQueueRecords: 100_000,
  maxQueueBytes: 64 * 1024 * 1024,
  maxEventBytes: 1024 * 1024,
  stateSchemaVersion: 1,
});

function integer(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
  return integerOption(name, value, min, max, 'PgBackend');
}

function optionalString(name: string, value: unknown): string | undefined {
  if (value !== undefined && typeof value !== 'string') throw new TypeError(`PgBackend option ${name} must be a string`);
  return value;
}

export function defaultNodeId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** Validates options once, with errors that name the option; returns them frozen. */
export function resolvePgBackendOptions<S>(options: PgBackendOptions<S>): Readonly<ResolvedPgBackendOptions> {
  if (typeof options !== 'object' || options === null) throw new TypeError('PgBackend options must be an object');
  const { hooks } = options;
  if (typeof hooks?.reducer !== 'function' || typeof hooks.initialState !== 'function') {
    throw new TypeError('PgBackend option hooks must have reducer and initialState functions');
  }
  if ((options.connectionString === undefined) === (options.pool === undefined)) {
    throw new TypeError('PgBackend needs exactly one of the options connectionString and pool');
  }
  if (options.connectionString !== undefined && (typeof options.connectionString !== 'string' || options.connectionString.length === 0)) {
    throw new TypeError('PgBackend option connectionString must be a non-empty string');
  }
  const d = DEFAULT_PG_BACKEND_OPTIONS;
  const nodeId = options.nodeId ?? defaultNodeId();
  if (typeof nodeId !== 'string' || nodeId.length === 0 || nodeId.length > 200) throw new RangeError('PgBackend option nodeId must be a string of 1-200 characters');
  if (options.nodeAddress !== undefined && (typeof options.nodeAddress !== 'string' || options.nodeAddress.length > 1000)) {
    throw new RangeError('PgBackend option nodeAddress must be a string of at most 1000 characters');
  }
  const schema = options.schema ?? d.schema;
  if (typeof schema !== 'string' || !SCHEMA_NAME_PATTERN.test(schema)) throw new RangeError(`PgBackend option schema must match ${SCHEMA_NAME_PATTERN}, got ${JSON.stringify(schema)}`);
  const leaseMs = integer('leaseMs', options.leaseMs ?? d.leaseMs, 100, 24 * 3600_000);
  const renewEveryMs = integer('renewEveryMs', options.renewEveryMs ?? Math.max(10, Math.floor(leaseMs / 3)), 10);
  if (renewEveryMs >= leaseMs) throw new RangeError(`PgBackend option renewEveryMs (${renewEveryMs}) must be less than leaseMs (${leaseMs})`);
  return Object.freeze({
    connectionString: options.connectionString,
    poolSize: integer('poolSize', options.poolSize ?? d.poolSize, 3, 1000),
    nodeId,
    nodeAddress: options.nodeAddress,
    leaseMs,
    renewEveryMs,
    schema,
    maxSnapshotsPerSession: integer('maxSnapshotsPerSession', options.maxSnapshotsPerSession ?? d.maxSnapshotsPerSession, 1, 1000),
    dedupeWindow: integer('dedupeWindow', options.dedupeWindow ?? d.dedupeWindow, 1),
    flushIntervalMs: integer('flushIntervalMs', options.flushIntervalMs ?? d.flushIntervalMs, 0, 60_000),
    maxBatchRecords: integer('maxBatchRecords', options.maxBatchRecords ?? d.maxBatchRecords, 1, 100_000),
    maxBatchBytes: integer('maxBatchBytes', options.maxBatchBytes ?? d.maxBatchBytes, 1),
    maxQueueRecords: integer('maxQueueRecords', options.maxQueueRecords ?? d.maxQueueRecords, 1),
    maxQueueBytes: integer('maxQueueBytes', options.maxQueueBytes ?? d.maxQueueBytes, 1),
    maxEventBytes: integer('maxEventBytes', options.maxEventBytes ?? d.maxEventBytes, 1, 256 * 1024 * 1024),
    stateSchemaVersion: integer('stateSchemaVersion', options.stateSchemaVersion ?? options.hooks.stateSchemaVersion ?? d.stateSchemaVersion, 1, 2 ** 32 - 1),
    encryptionKey: optionalString('encryptionKey', options.encryptionKey),
    encryptionKeyFile: optionalString('encryptionKeyFile', options.encryptionKeyFile),
    encryptionKeySource: optionalString('encryptionKeySource', options.encryptionKeySource),
  });
}
