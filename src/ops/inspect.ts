import { posix as path } from 'node:path';
import { SESSION_STATE_VERSION, type SessionState } from '../core/state.ts';
import { SESSION_HOOKS } from '../core/session-hooks.ts';
import { SessionReplay } from '../backend/replay.ts';
import { assertSessionId } from '../core/ids.ts';
import { SEGMENT_FILE_PATTERN, type JournalRecord } from '../file/journal/format.ts';
import { scanSegment } from '../file/journal/segment-scanner.ts';
import { DEFAULT_STORE_OPTIONS } from '../file/options.ts';
import { decodeSnapshot, type SnapshotContent } from '../backend/snapshot-codec.ts';
import { erasedRecords, keysForOps, type KeyOptions } from './keys.ts';
import type { KeyStore } from '../file/keystore.ts';
import { listDir, readIfPresent, resolveLayout, type LayoutOptions } from './layout.ts';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { SNAPSHOT_FILE } from './verify.ts';

export interface TimelineSnapshot {
  file: string;
  seq: number;
  bytes: number;
  /** wall-clock ms when it was taken (undefined when the file is damaged) */
  ts?: number;
  time?: string;
  status: 'ok' | 'damaged';
  reason?: string;
}

export interface TimelineEvent {
  seq: number;
  lsn: number;
  ts: number;
  time: string;
  type: string;
  summary: string;
  file: string;
  offset: number;
}

export interface StateSummary {
  /** the snapshot the state was rebuilt from (its seq), or 0 when from the first event */
  fromSnapshotSeq: number;
  /** journal events replayed over it */
  replayed: number;
  seq: number;
  /** wall-clock ms of the session's first and last event (0 when unknown: see SessionState) */
  createdAt: number;
  updatedAt: number;
  messages: { total: number; user: number; assistant: number; system: number };
  lastMessage?: { id: string; role: string; seq: number; preview: string };
  stream: SessionState['stream'];
  config: SessionState['config'];
  permissions: number;
  mcpServers: string[];
  toolExecutions: number;
  commands: number;
  /** why the state stops short of the newest event, when it does */
  problem?: string;
}

export interface InspectReport {
  session: string;
  snapshots: TimelineSnapshot[];
  /** the journal events of the session still held in the journal (a snapshot released the older ones), oldest first */
  events: TimelineEvent[];
  /** events left out by `limit` */
  eventsOmitted: number;
  state: StateSummary;
  notes: string[];
}

export interface InspectOptions extends LayoutOptions, KeyOptions {
  maxEventBytes?: number;
  /** show only the newest `limit` events */
  limit?: number;
}

const PREVIEW = 60;

function preview(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > PREVIEW ? `${flat.slice(0, PREVIEW - 1)}…` : flat;
}

function short(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 39)}…` : text;
}

/** A one-line description of a journaled event, for timelines. */
export function summarizeEvent(record: JournalRecord): string {
  const d = (record.data ?? {}) as Record<string, unknown>;
  const s = (k: string): string => (typeof d[k] === 'string' ? (d[k] as string) : '');
  switch (record.type) {
    case 'user_message_sent':
      return `user ${s('messageId')}: "${preview(s('content'))}"${d.clientMessageId === undefined ? '' : ` (client id ${s('clientMessageId')})`}`;
    case 'assistant_stream_started':
      return `answer ${s('messageId')} to ${s('requestMessageId')} started (${s('provider')}${d.model === undefined ? '' : ` ${s('model')}`})${d.retryOf === undefined ? '' : `, retrying ${s('retryOf')}`}`;
    case 'assistant_response_completed':
      return `answer ${s('messageId')} completed: "${preview(s('content'))}"`;
    case 'stream_interrupted':
      return `answer ${s('messageId')} interrupted: ${preview(s('reason'))}`;
    case 'command_executed':
      return `command ${s('command')} (${s('commandId')})${d.error === undefined ? '' : ` failed: ${preview(s('error'))}`}`;
    case 'command_started':
      return `command ${s('command')} (${s('commandId')}) started`;
    case 'command_finished':
      return `command ${s('command')} (${s('commandId')}) ${s('outcome') === 'ok' ? 'finished' : s('outcome') === 'unknown' ? 'outcome unknown' : `failed: ${preview(s('error'))}`}`;
    case 'mcp_server_connected':
      return `MCP server ${s('server')} connected`;
    case 'mcp_tool_executed':
      return `tool ${s('server')}/${s('tool')} (${s('executionId')})${d.isError === true ? ' failed' : ''}`;
    case 'session_config_changed':
      return `config ${s('key')} = ${short(d.newValue)}`;
    case 'permission_decided':
      return `permission ${s('permission')} ${s('decision')}${d.scope === undefined ? '' : ` (${s('scope')})`}`;
    default:
      return short(record.data);
  }
}

/**
 * A session's timeline, read-only (no lock; safe beside a live server): its
 * snapshot files, its events still in the journal, and the state recovery
 * would rebuild (newest valid snapshot + the journal events after it).
 */
export async function inspectSession(sid: string, options: InspectOptions): Promise<InspectReport> {
  assertSessionId(sid);
  const { fs, journalDir, snapshotDir, dataDir } = resolveLayout(options);
  const maxRecordBytes = options.maxEventBytes ?? DEFAULT_STORE_OPTIONS.maxEventBytes;
  const notes: string[] = [];
  // An encrypted data directory needs its key here (ARBOR_ENCRYPTION_KEY when missing or wrong); a deleted session shows nothing.
  const keys = (await keysForOps(fs, dataDir, options, true)) as KeyStore | undefined;
  const isErased = await erasedRecords(fs, dataDir);

  // Journal first, then snapshots (a segment deleted meanwhile is covered by a snapshot listed after).
  const segmentNames = (await listDir(fs, journalDir)).filter((n) => SEGMENT_FILE_PATTERN.test(n));
  let found: { record: JournalRecord; file: string; offset: number }[] = [];
  for (let i = 0; i < segmentNames.length; i += 1) {
    const name = segmentNames[i]!;
    const bytes = await readIfPresent(fs, path.join(journalDir, name));
    if (bytes === undefined) {
      found = [];
      notes.push(`journals/${name} was deleted while reading (released by snapshots)`);
      continue;
    }
    const scan = scanSegment(bytes, { isLast: i === segmentNames.length - 1, maxRecordBytes }, (record, offset) => {
      if (record.sid === sid && !isErased(record.sid, record.lsn)) found.push({ record: keys === undefined ? record : { ...record, data: keys.openData(sid, record.seq, record.data) }, file: `journals/${name}`, offset });
    });
    for (const d of scan.damage) {
      if (d.sessions?.some((s) => s.sid === sid)) notes.push(`journals/${name} offset ${d.offset}: damaged bytes that name this session (${d.reason}); run arbor verify`);
    }
  }
  const snapshots: TimelineSnapshot[] = [];
  const contents = new Map<number, SnapshotContent>();
  const seen = new Set<string>();
  // A live server prunes old snapshots as it writes new ones: when the newest listed one vanished
  // before it was read, a newer one exists, so list again.
  for (let pass = 0; pass < 50; pass += 1) {
    let newestListed = -1;
    let newestRead = -1;
    for (const n of await listDir(fs, snapshotDir)) {
      const m = SNAPSHOT_FILE.exec(n);
      if (m === null || m[1] !== sid) continue;
      const seq = Number(m[2]);
      newestListed = Math.max(newestListed, seq);
      if (seen.has(n)) {
        newestRead = Math.max(newestRead, seq);
        continue;
      }
      const bytes = await readIfPresent(fs, path.join(snapshotDir, n));
      if (bytes === undefined) continue;
      seen.add(n);
      newestRead = Math.max(newestRead, seq);
      const content = await decodeSnapshot(bytes);
      if (typeof content === 'string' || content.sid !== sid || content.seq !== seq) {
        snapshots.push({ file: `snapshots/${n}`, seq, bytes: bytes.length, status: 'damaged', reason: typeof content === 'string' ? content : 'header names another session or seq' });
        continue;
      }
      if (keys !== undefined) content.state = keys.openState(sid, content.state);
      contents.set(seq, content);
      snapshots.push({ file: `snapshots/${n}`, seq, bytes: bytes.length, ts: content.ts, time: new Date(content.ts).toISOString(), status: 'ok' });
    }
    if (newestRead >= newestListed) break;
  }
  if (found.length === 0 && snapshots.length === 0) {
    throw new ArborError(ErrorCodes.OPS_FAILED, `session ${sid} has no snapshot and no journal records in ${dataDir}`, { sessionId: sid, dataDir });
  }

  // The state recovery would rebuild.
  const newest = [...contents.keys()].sort((a, b) => b - a)[0];
  // The same replay as recovery's: snapshot state upcast to this build's version, gap check, reducer.
  const replay = new SessionReplay(SESSION_HOOKS, sid, { snapshot: newest === undefined ? undefined : contents.get(newest), stateSchemaVersion: SESSION_STATE_VERSION });
  const { report } = replay;
  const snapshotUnreadable = replay.failed;
  for (const { record } of found) replay.apply(record);
  const state = replay.state;
  const seq = report.seq;
  const replayed = report.replayed;
  let problem: string | undefined;
  const at = (seqOf: number): { file: string; offset: number; record: JournalRecord } | undefined => found.find((f) => f.record.seq === seqOf);
  if (report.missing !== undefined) {
    const next = at(report.missing[1] + 1);
    problem = `event ${report.missing[0]} is missing (the journal continues at seq ${report.missing[1] + 1}${next === undefined ? '' : `, ${next.file} offset ${next.offset}`})`;
  } else if (replay.failed) {
    const bad = at(seq + 1);
    const why = (replay.cause as Error | undefined)?.message ?? report.error ?? 'unknown';
    problem = snapshotUnreadable || bad === undefined ? `the snapshot at seq ${report.snapshotSeq} does not load: ${why}` : `event ${bad.record.seq} (${bad.file} offset ${bad.offset}) does not apply: ${why}`;
  }
  const byRole = { user: 0, assistant: 0, system: 0 };
  for (const m of state.messages) byRole[m.role] += 1;
  const last = state.messages.at(-1);
  const events = found.map(({ record, file, offset }) => ({
    seq: record.seq,
    lsn: record.lsn,
    ts: record.ts,
    time: new Date(record.ts).toISOString(),
    type: record.type,
    summary: summarizeEvent(record),
    file,
    offset,
  }));
  const limit = options.limit ?? events.length;
  const shown = events.slice(Math.max(0, events.length - limit));
  return {
    session: sid,
    snapshots: snapshots.sort((a, b) => a.seq - b.seq),
    events: shown,
    eventsOmitted: events.length - shown.length,
    state: {
      fromSnapshotSeq: newest ?? 0,
      replayed,
      seq,
      createdAt: state.createdAt,
      updatedAt: state.updatedAt,
      messages: { total: state.messages.length, ...byRole },
      ...(last === undefined ? {} : { lastMessage: { id: last.id, role: last.role, seq: last.seq, preview: preview(last.content) } }),
      stream: state.stream,
      config: state.config,
      permissions: Object.keys(state.permissions).length,
      mcpServers: Object.keys(state.mcpServers),
      toolExecutions: state.toolExecutions.length,
      commands: state.commands.length,
      ...(problem === undefined ? {} : { problem }),
    },
    notes,
  };
}
