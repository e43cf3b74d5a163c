import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { ApiError, enc, getJson, headers, newId, readChunks, request, sendJson, type UIChunk } from './api.ts';

type Part = { type: string; [field: string]: unknown };
interface UIMessage {
  id: string;
  role: 'system' | 'user' | 'assistant';
  metadata?: Record<string, unknown>;
  parts: Part[];
}
interface SessionSummary {
  id: string;
  seq: number;
  updatedAt: number;
  status: 'idle' | 'streaming';
  messageCount: number;
  title?: string;
}
interface MessageView {
  id: string;
  seq: number;
  metadata?: Record<string, unknown>;
}

/** Where approval decisions go (the HTTP route of the approvals work; see docs/console.md). */
export const approvalPath = (sessionId: string, approvalId: string): string => `/v1/sessions/${enc(sessionId)}/approvals/${enc(approvalId)}`;

/** A tool part's outcome could not be known (the server stopped during the call): its errorText says so. */
const UNKNOWN_OUTCOME = /outcome of this tool call is unknown/;

/** The answer streaming now, built from its chunks. */
interface Live {
  messageId: string | undefined;
  text: string;
  reasoning: string;
  tools: Map<string, Part>;
  error: string | undefined;
}

const emptyLive = (): Live => ({ messageId: undefined, text: '', reasoning: '', tools: new Map(), error: undefined });

function applyChunk(live: Live, c: UIChunk): Live {
  const next = { ...live, tools: new Map(live.tools) };
  const id = typeof c.toolCallId === 'string' ? c.toolCallId : '';
  const tool = (): Part => next.tools.get(id) ?? { type: `tool-${String(c.toolName ?? 'tool')}`, toolCallId: id, toolName: c.toolName };
  switch (c.type) {
    case 'start':
      return { ...emptyLive(), messageId: typeof c.messageId === 'string' ? c.messageId : undefined };
    case 'text-delta':
      next.text += String(c.delta ?? '');
      return next;
    case 'reasoning-delta':
      next.reasoning += String(c.delta ?? '');
      return next;
    case 'tool-input-available':
      next.tools.set(id, { ...tool(), input: c.input, state: 'input-available' });
      return next;
    case 'tool-output-available':
      next.tools.set(id, { ...tool(), output: c.output, state: 'output-available' });
      return next;
    case 'tool-output-error':
      next.tools.set(id, { ...tool(), errorText: c.errorText, state: 'output-error' });
      return next;
    case 'tool-output-denied':
      next.tools.set(id, { ...tool(), state: 'output-denied' });
      return next;
    case 'tool-approval-request':
      next.tools.set(id, { ...tool(), state: 'approval-requested', approval: { id: c.approvalId } });
      return next;
    case 'error':
      next.error = String(c.errorText ?? 'the answer was interrupted');
      return next;
    default:
      return live;
  }
}

function json(value: unknown): string {
  try {
    return JSON.stringify(value, null, 2) ?? String(value);
  } catch {
    return String(value);
  }
}

function ToolCall(props: { part: Part; sessionId: string; onDecided: () => void }) {
  const { part } = props;
  const name = part.type === 'dynamic-tool' ? String(part.toolName) : part.type.replace(/^tool-/, '');
  const state = String(part.state ?? '');
  const unknown = state === 'output-error' && UNKNOWN_OUTCOME.test(String(part.errorText ?? ''));
  const approval = part.approval as { id?: string; approved?: boolean } | undefined;
  const [error, setError] = useState<string>();
  const decide = async (approved: boolean) => {
    setError(undefined);
    try {
      await sendJson('POST', approvalPath(props.sessionId, String(approval?.id ?? '')), { decision: approved ? 'granted' : 'denied' });
      props.onDecided();
    } catch (err) {
      setError(err instanceof ApiError && err.status === 404 ? 'This server does not take approvals over HTTP yet.' : (err as Error).message);
    }
  };
  return (
    <section class={`tool ${unknown ? 'unknown' : ''}`} aria-label={`Tool call ${name}`}>
      <h4>
        Tool <code>{name}</code> <span class="badge">{unknown ? 'outcome unknown' : state}</span>
      </h4>
      <div class="tool-io">
        <div>
          <h5>Input</h5>
          <pre>{json(part.input)}</pre>
        </div>
        {state === 'output-available' && (
          <div>
            <h5>Output</h5>
            <pre>{json(part.output)}</pre>
          </div>
        )}
        {state === 'output-error' && (
          <div>
            <h5>{unknown ? 'Outcome unknown' : 'Error'}</h5>
            <p class={unknown ? 'warn' : 'error'}>{String(part.errorText ?? '')}</p>
          </div>
        )}
        {state === 'output-denied' && <p>The call was denied.</p>}
      </div>
      {state === 'approval-requested' && (
        <div class="actions" role="group" aria-label={`Approval for ${name}`}>
          <button type="button" onClick={() => void decide(true)}>
            Approve
          </button>
          <button type="button" onClick={() => void decide(false)}>
            Deny
          </button>
        </div>
      )}
      {approval?.approved !== undefined && <p>{approval.approved ? 'Approved' : 'Denied'}</p>}
      {error !== undefined && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
    </section>
  );
}

function Parts(props: { parts: Part[]; sessionId: string; onDecided: () => void }) {
  return (
    <>
      {props.parts.map((p, i) => {
        if (p.type === 'text') return <p key={i} class="text">{String(p.text)}</p>;
        if (p.type === 'reasoning') return <details key={i}><summary>Reasoning</summary><p class="text">{String(p.text)}</p></details>;
        if (p.type === 'dynamic-tool' || p.type.startsWith('tool-')) return <ToolCall key={i} part={p} sessionId={props.sessionId} onDecided={props.onDecided} />;
        return null;
      })}
    </>
  );
}

export function SessionList(props: { current: string | undefined; onOpen: (id: string) => void; refreshKey: number; onDeleted: (id: string) => void }) {
  const [pages, setPages] = useState<SessionSummary[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [error, setError] = useState<string>();
  const [confirming, setConfirming] = useState<string>();
  const PAGE = 20;

  const load = useCallback(async (after: string | null) => {
    try {
      const page = await getJson<{ sessions: SessionSummary[]; nextCursor: string | null }>(`/v1/sessions?limit=${PAGE}${after === null ? '' : `&cursor=${enc(after)}`}`);
      setPages((old) => (after === null ? page.sessions : [...old, ...page.sessions]));
      setCursor(page.nextCursor);
      setError(undefined);
    } catch (err) {
      setError((err as Error).message);
    }
  }, []);
  useEffect(() => void load(null), [load, props.refreshKey]);

  const create = async () => {
    try {
      const s = await sendJson<{ id: string }>('POST', '/v1/sessions', {});
      await load(null);
      if (s !== undefined) props.onOpen(s.id);
    } catch (err) {
      setError((err as Error).message);
    }
  };
  const remove = async (id: string) => {
    try {
      await request('DELETE', `/v1/sessions/${enc(id)}`);
      setConfirming(undefined);
      setPages((old) => old.filter((s) => s.id !== id));
      props.onDeleted(id);
    } catch (err) {
      setError((err as Error).message);
    }
  };

  return (
    <nav class="sessions" aria-label="Sessions">
      <div class="sessions-head">
        <h2>Sessions</h2>
        <button type="button" onClick={() => void create()}>
          New session
        </button>
      </div>
      {error !== undefined && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <ul>
        {pages.map((s) => (
          <li key={s.id} class={s.id === props.current ? 'current' : ''}>
            <a href={`#/chat/${enc(s.id)}`} aria-current={s.id === props.current ? 'page' : undefined}>
              {s.title ?? s.id}
              <span class="meta">
                {s.messageCount} messages{s.status === 'streaming' ? ' · streaming' : ''}
              </span>
            </a>
            {confirming === s.id ? (
              <span class="confirm">
                <button type="button" class="danger" aria-label={`Confirm delete of session ${s.id}`} onClick={() => void remove(s.id)}>
                  Confirm delete
                </button>
                <button type="button" aria-label={`Keep session ${s.id}`} onClick={() => setConfirming(undefined)}>
                  Keep
                </button>
              </span>
            ) : (
              <button type="button" class="small" aria-label={`Delete session ${s.id}`} onClick={() => setConfirming(s.id)}>
                Delete
              </button>
            )}
          </li>
        ))}
      </ul>
      {pages.length === 0 && error === undefined && <p class="muted">No session yet.</p>}
      {cursor !== null && (
        <button type="button" onClick={() => void load(cursor)}>
          More sessions
        </button>
      )}
    </nav>
  );
}

export function ChatView(props: { sessionId: string | undefined; onOpen: (id: string) => void }) {
  const { sessionId } = props;
  const [refreshKey, setRefreshKey] = useState(0);
  const onDeleted = (id: string) => {
    if (id === sessionId) props.onOpen('');
  };
  return (
    <div class="chat">
      <SessionList current={sessionId} onOpen={props.onOpen} refreshKey={refreshKey} onDeleted={onDeleted} />
      {sessionId === undefined || sessionId === '' ? (
        <main class="conversation" aria-label="Conversation">
          <p class="muted">Pick a session, or create one with “New session”.</p>
        </main>
      ) : (
        <Conversation key={sessionId} sessionId={sessionId} onOpen={props.onOpen} onChanged={() => setRefreshKey((k) => k + 1)} />
      )}
    </div>
  );
}

function Conversation(props: { sessionId: string; onOpen: (id: string) => void; onChanged: () => void }) {
  const { sessionId } = props;
  const [messages, setMessages] = useState<UIMessage[]>([]);
  const [seqs, setSeqs] = useState<Map<string, number>>(new Map());
  const [live, setLive] = useState<Live>();
  const [streaming, setStreaming] = useState(false);
  const [status, setStatus] = useState('');
  const [error, setError] = useState<string>();
  const [draft, setDraft] = useState('');
  const [missing, setMissing] = useState(false);
  const alive = useRef(new AbortController());
  const reading = useRef(0);
  const endRef = useRef<HTMLDivElement>(null);

  /** The history from the server (the truth after every answer). */
  const loadHistory = useCallback(async (): Promise<void> => {
    const signal = alive.current.signal;
    const [ui, view] = await Promise.all([
      getJson<UIMessage[]>(`/v1/chat/${enc(sessionId)}/messages`, signal),
      getJson<{ messages: MessageView[] }>(`/v1/sessions/${enc(sessionId)}`, signal),
    ]);
    const bySeq = new Map<string, number>();
    for (const m of view.messages) {
      bySeq.set(m.id, m.seq);
      const client = m.metadata?.clientMessageId;
      if (typeof client === 'string') bySeq.set(client, m.seq);
    }
    setMessages(ui);
    setSeqs(bySeq);
  }, [sessionId]);

  /** Reads an answer's stream into `live`; when it ends, the history is read again. Cut: reconnects. */
  const follow = useCallback(
    async (res: Response): Promise<void> => {
      const mine = ++reading.current;
      setStreaming(true);
      setLive(emptyLive());
      setStatus('Answer streaming');
      let cut = false;
      try {
        await readChunks(res, (chunk) => {
          if (reading.current === mine) setLive((l) => applyChunk(l ?? emptyLive(), chunk));
        });
      } catch (err) {
        if (alive.current.signal.aborted) return;
        cut = true;
        setStatus(`Connection lost (${(err as Error).message}); reconnecting…`);
      }
      if (reading.current !== mine) return;
      if (cut) {
        void reconnect();
        return;
      }
      try {
        await loadHistory();
      } catch (err) {
        if (!alive.current.signal.aborted) setError((err as Error).message);
      }
      if (reading.current === mine) {
        setLive(undefined);
        setStreaming(false);
        setStatus('Answer complete');
        props.onChanged();
      }
    },
    [loadHistory],
  );

  /** The history, then the running answer from its first chunk (resume), if one runs. */
  const attach = useCallback(async (): Promise<void> => {
    await loadHistory();
    const res = await request('GET', `/v1/chat/${enc(sessionId)}/stream`, undefined, alive.current.signal);
    if (res.status === 204) {
      setStreaming(false);
      setLive(undefined);
      return;
    }
    void follow(res);
  }, [loadHistory, follow, sessionId]);

  /** After a cut connection (the server went away): try again every second until it answers. */
  const reconnect = useCallback(async (): Promise<void> => {
    for (let attempt = 1; !alive.current.signal.aborted; attempt += 1) {
      await new Promise((r) => setTimeout(r, attempt === 1 ? 500 : 1000));
      if (alive.current.signal.aborted) return;
      try {
        setStreaming(false);
        setLive(undefined);
        await attach();
        setStatus('Reconnected');
        setError(undefined);
        return;
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          setMissing(true);
          return;
        }
        setStatus(`Server unreachable; retrying (attempt ${attempt})…`);
      }
    }
  }, [attach]);

  useEffect(() => {
    const ctl = new AbortController();
    alive.current = ctl;
    attach().catch((err: unknown) => {
      if (ctl.signal.aborted) return;
      if (err instanceof ApiError && err.status === 404) setMissing(true);
      else if (err instanceof ApiError) setError(err.message);
      else void reconnect();
    });
    return () => ctl.abort();
  }, [attach, reconnect]);

  useEffect(() => {
    endRef.current?.scrollIntoView?.({ block: 'end' });
  }, [messages, live]);

  const post = async (body: unknown): Promise<void> => {
    setError(undefined);
    const res = await fetch('/v1/chat', { method: 'POST', headers: headers(true), body: JSON.stringify(body), signal: alive.current.signal });
    if (!res.ok) {
      let message = `HTTP ${res.status}`;
      try {
        message = ((await res.json()) as { error: { message: string } }).error.message;
      } catch {
        // the status says it
      }
      throw new Error(message);
    }
    await follow(res);
  };

  const send = async (e: Event) => {
    e.preventDefault();
    const text = draft.trim();
    if (text === '' || streaming) return;
    const message: UIMessage = { id: newId('ui-'), role: 'user', parts: [{ type: 'text', text }] };
    setDraft('');
    setMessages((m) => [...m, message]);
    try {
      await post({ id: sessionId, messages: [message], trigger: 'submit-message' });
    } catch (err) {
      if (!alive.current.signal.aborted) setError((err as Error).message);
    }
  };

  const retry = async () => {
    try {
      await post({ id: sessionId, messages: [{ id: newId('retry-'), role: 'user', parts: [] }], trigger: 'regenerate-message' });
    } catch (err) {
      if (!alive.current.signal.aborted) setError((err as Error).message);
    }
  };

  const stop = async () => {
    try {
      await sendJson('POST', `/v1/chat/${enc(sessionId)}/stop`, {});
      setStatus('Stopped');
    } catch (err) {
      setError((err as Error).message);
    }
  };

  const fork = async (atSeq: number) => {
    try {
      const f = await sendJson<{ id: string }>('POST', `/v1/sessions/${enc(sessionId)}/fork`, { atSeq });
      props.onChanged();
      if (f !== undefined) props.onOpen(f.id);
    } catch (err) {
      setError((err as Error).message);
    }
  };

  // After a decision the paused turn goes on: read it as it streams (or the history, when it is already done).
  const refresh = () =>
    void attach().catch((err: unknown) => {
      if (!alive.current.signal.aborted) setError((err as Error).message);
    });

  if (missing) {
    return (
      <main class="conversation" aria-label="Conversation">
        <p role="alert">Session {sessionId} was not found (deleted, or another tenant’s).</p>
      </main>
    );
  }

  // The answer being streamed is shown live, not twice.
  const shown = live?.messageId === undefined ? messages : messages.filter((m) => m.id !== live.messageId);
  return (
    <main class="conversation" aria-label="Conversation">
      <h2>
        Session <code>{sessionId}</code>
      </h2>
      <ol class="messages" aria-label="Messages">
        {shown.map((m) => {
          const notice = m.role === 'system' && m.metadata?.interrupted === true;
          const seq = seqs.get(m.id);
          return (
            <li key={m.id} class={`msg ${m.role} ${notice ? 'notice' : ''}`} aria-label={notice ? 'Interrupted notice' : `${m.role} message`}>
              <div class="who">{notice ? 'Interrupted' : m.role}</div>
              {notice ? (
                <div>
                  <p class="warn">The answer was interrupted ({String(m.metadata?.reason ?? 'unknown reason')}).</p>
                  <button type="button" onClick={() => void retry()} disabled={streaming}>
                    Retry
                  </button>
                </div>
              ) : (
                <Parts parts={m.parts} sessionId={sessionId} onDecided={refresh} />
              )}
              {m.metadata?.stopped === true && <p class="muted">Stopped.</p>}
              {seq !== undefined && (
                <button type="button" class="small fork" aria-label={`Fork from message ${seq}`} onClick={() => void fork(seq)} disabled={streaming}>
                  Fork
                </button>
              )}
            </li>
          );
        })}
        {live !== undefined && (
          <li class="msg assistant streaming" aria-label="Answer streaming" aria-busy="true">
            <div class="who">assistant</div>
            {live.reasoning !== '' && (
              <details>
                <summary>Reasoning</summary>
                <p class="text">{live.reasoning}</p>
              </details>
            )}
            <p class="text">{live.text}</p>
            {[...live.tools.values()].map((p) => (
              <ToolCall key={String(p.toolCallId)} part={p} sessionId={sessionId} onDecided={refresh} />
            ))}
            {live.error !== undefined && <p class="warn">{live.error}</p>}
          </li>
        )}
      </ol>
      <div ref={endRef} />
      <p role="status" class="status">
        {status}
      </p>
      {error !== undefined && (
        <p role="alert" class="error">
          {error}
        </p>
      )}
      <form class="composer" onSubmit={(e) => void send(e)}>
        <label for="message">Message</label>
        <textarea
          id="message"
          name="message"
          rows={3}
          value={draft}
          onInput={(e) => setDraft((e.target as HTMLTextAreaElement).value)}
          onKeyDown={(e) => {
            // Ctrl+Enter (or ⌘+Enter) sends; Enter alone makes a new line.
            if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) void send(e);
          }}
        />
        <div class="actions">
          <button type="submit" disabled={streaming}>
            Send
          </button>
          {streaming && (
            <button type="button" onClick={() => void stop()}>
              Stop
            </button>
          )}
        </div>
      </form>
    </main>
  );
}
