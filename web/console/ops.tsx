import { useCallback, useEffect, useState } from 'preact/hooks';
import { ApiError, enc, getJson, headers } from './api.ts';

interface Check {
  status: 'ok' | 'warn' | 'fail';
  message?: string;
  [detail: string]: unknown;
}
interface Health {
  status: 'ok' | 'warn' | 'fail';
  checks: Record<string, Check>;
  node?: { id: string; address: string | null };
}
interface OpsSession {
  id: string;
  seq: number;
  updatedAt: number;
  status: string;
  messageCount: number;
  bytes: number | null;
  owner?: string | null;
}
interface OpsSessions {
  backend: string;
  node: { id: string; address: string | null } | null;
  sessions: OpsSession[];
  nextCursor: string | null;
  recovery: { pending: number; completedAt: number | null; counts: Record<string, number>; sessions: { id: string; status: string; seq: number; replayed: number }[] };
}
interface Stat {
  count: number;
  avgMs: number;
  maxMs: number;
}
interface Latency {
  windowMs: number;
  samples: { t: number; journal: Stat; ack: Stat }[];
}
interface TimelineEvent {
  seq: number;
  type: string;
  ts: number;
  summary?: string;
}

const time = (ms: number): string => new Date(ms).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
const size = (bytes: number | null): string => (bytes === null ? 'not in memory' : bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`);

/** A small line chart of the mean (and a faint one of the max) per window. */
function Chart(props: { title: string; samples: Latency['samples']; pick: (s: Latency['samples'][number]) => Stat }) {
  const W = 320;
  const H = 90;
  const stats = props.samples.map(props.pick);
  const top = Math.max(1, ...stats.map((s) => s.maxMs));
  const x = (i: number) => (stats.length <= 1 ? 0 : (i / (stats.length - 1)) * W);
  const y = (v: number) => H - (v / top) * (H - 6) - 3;
  const line = (f: (s: Stat) => number) => stats.map((s, i) => `${x(i).toFixed(1)},${y(f(s)).toFixed(1)}`).join(' ');
  const counted = stats.filter((s) => s.count > 0);
  const last = counted.at(-1);
  const total = counted.reduce((n, s) => n + s.count, 0);
  const desc = last === undefined ? 'no samples yet' : `${total} in the last ${stats.length * 10} s; newest window: mean ${last.avgMs.toFixed(2)} ms, max ${last.maxMs.toFixed(2)} ms`;
  return (
    <figure class="chart">
      <figcaption>
        {props.title}: <span>{desc}</span>
      </figcaption>
      <svg viewBox={`0 0 ${W} ${H}`} width={W} height={H} role="img" aria-label={`${props.title}: ${desc}`}>
        <line x1="0" y1={H - 3} x2={W} y2={H - 3} class="axis" />
        <polyline points={line((s) => s.maxMs)} class="max" />
        <polyline points={line((s) => s.avgMs)} class="avg" />
        <text x="2" y="10" class="label">
          {top.toFixed(1)} ms
        </text>
      </svg>
    </figure>
  );
}

function Timeline(props: { sessionId: string; onClose: () => void }) {
  const [events, setEvents] = useState<TimelineEvent[]>([]);
  const [next, setNext] = useState<number | null>(1);
  const [error, setError] = useState<string>();
  const load = useCallback(
    async (from: number, reset: boolean) => {
      try {
        const page = await getJson<{ events: TimelineEvent[]; nextFromSeq: number | null }>(`/v1/sessions/${enc(props.sessionId)}/events?limit=200&fromSeq=${from}`);
        setEvents((old) => (reset ? page.events : [...old, ...page.events]));
        setNext(page.nextFromSeq);
      } catch (err) {
        setError((err as Error).message);
      }
    },
    [props.sessionId],
  );
  useEffect(() => void load(1, true), [load]);
  return (
    <section class="timeline" aria-label={`Timeline of session ${props.sessionId}`}>
      <h3>
        Timeline of <code>{props.sessionId}</code>{' '}
        <button type="button" class="small" onClick={props.onClose}>
          Close timeline
        </button>
      </h3>
      {error !== undefined && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <table>
        <thead>
          <tr>
            <th scope="col">Seq</th>
            <th scope="col">Time</th>
            <th scope="col">Type</th>
            <th scope="col">Summary</th>
          </tr>
        </thead>
        <tbody>
          {events.map((e) => (
            <tr key={e.seq}>
              <td>{e.seq}</td>
              <td>{time(e.ts)}</td>
              <td>
                <code>{e.type}</code>
              </td>
              <td>{e.summary ?? ''}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {next !== null && events.length > 0 && (
        <button type="button" onClick={() => void load(next, false)}>
          More events
        </button>
      )}
    </section>
  );
}

export function OpsView() {
  const [health, setHealth] = useState<Health>();
  const [ops, setOps] = useState<OpsSessions>();
  const [latency, setLatency] = useState<Latency>();
  const [errors, setErrors] = useState<string[]>([]);
  const [timeline, setTimeline] = useState<string>();
  const [cursor, setCursor] = useState<string | null>(null);

  const refresh = useCallback(async (after: string | null = null) => {
    const problems: string[] = [];
    const note = (what: string) => (err: unknown) => {
      problems.push(err instanceof ApiError && err.status === 401 ? `${what}: needs an operator token (set it above)` : `${what}: ${(err as Error).message}`);
    };
    // /health answers 503 with its report when a check fails: read it either way.
    const h = fetch('/health', { headers: headers(false), cache: 'no-store' })
      .then(async (r) => setHealth((await r.json()) as Health))
      .catch(note('health'));
    const s = getJson<OpsSessions>(`/ops/sessions?limit=50${after === null ? '' : `&cursor=${enc(after)}`}`)
      .then((o) => setOps(o))
      .catch(note('sessions'));
    const l = getJson<Latency>('/ops/latency')
      .then(setLatency)
      .catch(note('latency'));
    await Promise.all([h, s, l]);
    setCursor(after);
    setErrors(problems);
  }, []);

  useEffect(() => {
    void refresh();
    const timer = setInterval(() => void refresh(), 10_000);
    return () => clearInterval(timer);
  }, [refresh]);

  const checks = health === undefined ? [] : Object.entries(health.checks);
  const recovery = ops?.recovery;
  const shared = ops?.node !== null && ops?.node !== undefined;
  return (
    <main class="ops" aria-label="Operations">
      <div class="ops-head">
        <h2>Operations</h2>
        <button type="button" onClick={() => void refresh(cursor)}>
          Refresh
        </button>
      </div>
      {errors.map((e) => (
        <p role="alert" class="error" key={e}>
          {e}
        </p>
      ))}
      <section aria-labelledby="health-h">
        <h3 id="health-h">
          Health: <span class={`status-${health?.status ?? 'unknown'}`}>{health?.status ?? '…'}</span>
          {health?.node !== undefined && (
            <span class="meta">
              {' '}
              (node {health.node.id})
            </span>
          )}
        </h3>
        <table>
          <thead>
            <tr>
              <th scope="col">Check</th>
              <th scope="col">Status</th>
              <th scope="col">Message</th>
            </tr>
          </thead>
          <tbody>
            {checks.map(([name, c]) => (
              <tr key={name}>
                <th scope="row">{name}</th>
                <td class={`status-${c.status}`}>{c.status}</td>
                <td>{c.message ?? ''}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
      <section aria-labelledby="recovery-h">
        <h3 id="recovery-h">Recovery</h3>
        {recovery === undefined ? (
          <p class="muted">…</p>
        ) : (
          <>
            <p>
              {recovery.pending === 0 ? `Every session recovered${recovery.completedAt === null ? '' : ` (done ${time(recovery.completedAt)})`}.` : `Recovering: ${recovery.pending} sessions pending (each is recovered on first access).`}{' '}
              {Object.entries(recovery.counts)
                .filter(([, n]) => n > 0)
                .map(([k, n]) => `${k}: ${n}`)
                .join(', ')}
            </p>
            {recovery.sessions.length > 0 && (
              <table>
                <thead>
                  <tr>
                    <th scope="col">Session</th>
                    <th scope="col">Status</th>
                    <th scope="col">Seq</th>
                    <th scope="col">Replayed</th>
                  </tr>
                </thead>
                <tbody>
                  {recovery.sessions.slice(-50).map((r) => (
                    <tr key={r.id}>
                      <td>
                        <code>{r.id}</code>
                      </td>
                      <td>{r.status}</td>
                      <td>{r.seq}</td>
                      <td>{r.replayed}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            )}
          </>
        )}
      </section>
      <section aria-labelledby="latency-h">
        <h3 id="latency-h">Latency, last {latency === undefined ? '' : `${(latency.samples.length * latency.windowMs) / 60_000} `}minutes</h3>
        {latency !== undefined && (
          <div class="charts">
            <Chart title="Journal write" samples={latency.samples} pick={(s) => s.journal} />
            <Chart title="Acknowledgement" samples={latency.samples} pick={(s) => s.ack} />
          </div>
        )}
      </section>
      <section aria-labelledby="sessions-h">
        <h3 id="sessions-h">Sessions{ops === undefined ? '' : ` (${ops.backend})`}</h3>
        <table>
          <thead>
            <tr>
              <th scope="col">Session</th>
              <th scope="col">Seq</th>
              <th scope="col">Messages</th>
              <th scope="col">Size</th>
              <th scope="col">Last activity</th>
              {shared && <th scope="col">Lease owner</th>}
              <th scope="col">Timeline</th>
            </tr>
          </thead>
          <tbody>
            {(ops?.sessions ?? []).map((s) => (
              <tr key={s.id}>
                <td>
                  <code>{s.id}</code>
                  {s.status === 'streaming' ? ' (streaming)' : ''}
                </td>
                <td>{s.seq}</td>
                <td>{s.messageCount}</td>
                <td>{size(s.bytes)}</td>
                <td>{time(s.updatedAt)}</td>
                {shared && <td>{s.owner ?? 'another node, or none'}</td>}
                <td>
                  <button type="button" class="small" aria-label={`Timeline of session ${s.id}`} onClick={() => setTimeline(s.id)}>
                    Timeline
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
        {ops?.nextCursor != null && (
          <button type="button" onClick={() => void refresh(ops.nextCursor)}>
            Next sessions
          </button>
        )}
      </section>
      {timeline !== undefined && <Timeline key={timeline} sessionId={timeline} onClose={() => setTimeline(undefined)} />}
    </main>
  );
}
