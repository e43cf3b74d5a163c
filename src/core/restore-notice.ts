/**
 * The pure half of the restore marker (file/restore-marker.ts reads and writes
 * it): its shape, and the notice a session restored from a backup is due.
 * Here so that the runtime can decide on notices without knowing the files.
 */

export const RESTORE_MARKER_FORMAT = 'arbor-restore-marker';
export const RESTORE_MARKER_VERSION = 1;

export interface RestoreMarker {
  format: typeof RESTORE_MARKER_FORMAT;
  version: typeof RESTORE_MARKER_VERSION;
  /** the backup's id (its manifest's `backupId`): the idempotency key of the notices */
  backupId: string;
  /** when the backup started (ISO 8601, UTC): every event acknowledged before it is in the backup */
  backupStartedAt: string;
  backupStartedAtMs: number;
  /** when the backup finished copying; events acknowledged between start and finish may or may not be in it */
  backupFinishedAt: string;
  /** when `arbor restore` wrote this marker */
  restoredAt: string;
  /** every session the backup holds, with the last seq it holds */
  sessions: { id: string; lastSeq: number }[];
  /** the text of the notice to show in each listed session */
  notice: string;
}

/** The notice's text for a backup started at `startedAt` (ISO). */
export function restoreNoticeText(startedAt: string): string {
  return `⚠️ This conversation was restored from a backup taken at ${startedAt}. Anything sent after that time may have been lost.`;
}

/** The metadata of a restore notice: what makes it recognisable (and idempotent) in a session's history. */
export type RestoreNoticeMetadata = {
  restored: true;
  backupId: string;
  backupStartedAt: string;
};

/**
 * The notice the runtime should journal for a session it loads from a
 * restored data directory, or undefined when none is due: the session is not
 * listed in the marker (it was created after the restore), or its history
 * already holds a system message whose metadata carries this `backupId`.
 */
export function restoreNoticeFor(
  marker: RestoreMarker,
  session: { id: string; messages: readonly { role: string; metadata?: Readonly<Record<string, unknown>> | undefined }[] },
): { content: string; metadata: RestoreNoticeMetadata } | undefined {
  if (!marker.sessions.some((s) => s.id === session.id)) return undefined;
  const shown = session.messages.some((m) => m.role === 'system' && m.metadata?.restored === true && m.metadata.backupId === marker.backupId);
  if (shown) return undefined;
  return { content: marker.notice, metadata: { restored: true, backupId: marker.backupId, backupStartedAt: marker.backupStartedAt } };
}
