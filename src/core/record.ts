/**
 * The stored form of one critical event, as every backend hands it back:
 * journal records on files, rows on PostgreSQL. Reducers and upcasters take it.
 */
/** One journaled event as stored. `data` is any JSON value. */
export interface JournalRecord {
  lsn: number;
  sid: string;
  seq: number;
  /** wall-clock milliseconds when appended */
  ts: number;
  type: string;
  /** the event's schema version, for upcasters */
  v: number;
  data: unknown;
  /** the client's idempotency key, when the append carried one */
  cid?: string;
}
