import { randomUUID } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { ArborError, ErrorCodes, isArborError } from '../core/errors.ts';
import { CURRENT_EVENT_VERSION, isRecoverableEventType, parseEventData, type CriticalEventType, type EventData, type RecoverableEventType } from '../core/events.ts';
import { commandsInFlight, findMessage, interruptedNoticeMetadata, interruptionEventData, pendingApprovals, pendingInterruption, reduceSession, toolCallsInFlight, type MessagePart, type SessionState, type ToolPart } from '../core/state.ts';
import type { JournalRecord } from '../core/record.ts';
import type { AppendResult } from '../backend/backend.ts';
import type { ChatTurn, LlmProvider, LlmStreamPart, LlmUsage, StreamRequest } from '../llm/provider.ts';
import { isAbortError, streamPartsOf } from '../llm/provider.ts';
import { FINISH_REASONS, TurnLog, type UIChunk } from './turn-log.ts';
import type { SessionBackend } from '../backend/backend.ts';
import type { HotTier } from '../hot/hot-tier.ts';
import { ChunkBuffer, type Chunk } from './chunk-buffer.ts';
import { Mailbox } from './mailbox.ts';
import { afterCrash } from './restart-intensity.ts';
import { currentTraceParent, epochMs, llmTurnChannel, turnStartChannel, type LlmTurnMessage, type TurnInterruption } from '../telemetry/channels.ts';
import { LlmProviderError } from '../llm/provider.ts';
import type { ToolRegistry } from '../tools/registry.ts';
import { canCallTools } from '../llm/provider.ts';
import { modelMessagesFor } from './model-messages.ts';
import { PromptCache } from './prompt-cache.ts';
import { priorCallsFor, runToolCalls, type AnswerPart, type ModelToolCall, type ToolChunk, type ToolRunnerDeps } from './tool-runner.ts';
import { toolLoop } from './tool-loop.ts';
import { mayRerunAutomatically } from '../tools/policy.ts';

/** What subscribers receive: committed critical events (in seq order) and stream chunks. */
export type SessionUpdate =
  | { kind: 'event'; event: JournalRecord }
  | { kind: 'chunk'; chunk: Chunk }
  | { kind: 'recoverable'; type: RecoverableEventType; data: unknown };

/** A command handler for `executeCommand`: application code, run inside the session's mailbox. */
export type CommandHandler = (context: { sessionId: string; state: SessionState; args: readonly unknown[] }) => unknown;

/** What a session actor needs from the runtime. */
export interface SessionContext {
  readonly store: SessionBackend<SessionState>;
  readonly hot: HotTier<SessionState>;
  readonly llm: LlmProvider;
  readonly commands: Readonly<Record<string, CommandHandler>>;
  /** The tools a turn may call (application tools and those of the MCP servers that are up). */
  readonly tools: ToolRegistry;
  /** Model calls per turn at most. */
  readonly maxToolSteps: number;
  readonly mailboxCapacity: number;
  readonly maxRestarts: number;
  readonly restartWindowMs: number;
  readonly streamBufferChunks: number;
  /**
   * Loads the session's committed state into the hot tier if it is not there
   * (activation). `fresh`: first time in this process after a restart, so
   * what the last process death left must be repaired first. A session in
   * the hot tier is answered at once, without a promise (three times per answer).
   */
  activate(sid: string): { state: SessionState; fresh: boolean } | Promise<{ state: SessionState; fresh: boolean }>;
  /** The notice a session restored from a backup shows once (see ops/restore-marker), if one is due. */
  restoreNotice(state: SessionState): { content: string; metadata: Record<string, unknown> } | undefined;
  /** Told after every committed event (snapshot scheduling; the checkpoint needs its LSN). */
  committed(sid: string, state: SessionState, lsn: number): void;
  /** Told when a handler crashed and the session was restarted, or stopped. */
  crashed(sid: string, error: unknown, stopped: boolean): void;
  /** Told about a failure no caller awaits (ending an answer, repairing after a restart): telemetry reports it. */
  failed(sid: string, source: string, error: unknown): void;
}

/**
 * One session's actor. Every command goes through the mailbox: validate →
 * reduce into the next state (pure: a bad event fails here, before anything is
 * written) → journal the event and await its durability (with expectedSeq, so
 * nothing can slip in between) → put the new state in the hot tier → publish.
 * A handler that throws leaves the hot tier's last committed state untouched;
 * the actor is "restarted" from it, under an OTP-style restart intensity.
 */
export class SessionActor {
  readonly id: string;
  readonly #ctx: SessionContext;
  readonly #mailbox: Mailbox;
  readonly #listeners = new Set<(u: SessionUpdate) => void>();
  readonly #chunks: ChunkBuffer;
  #crashes: number[] = [];
  /**
   * `running`: takes commands and starts answers. `draining` (the runtime is
   * closing): answers queued but not started are not started any more.
   * `stopped`: crashed too often; only internal work (ending answers) runs.
   * Aborting the running answers (reopen, a lost lease) changes nothing here:
   * the session goes on answering afterwards.
   */
  #state: 'running' | 'draining' | 'stopped' = 'running';
  /** The crash that stopped the session. */
  #stopCause: unknown;
  /** Streams run one after another: the next answer starts when the previous one ended. */
  #streamChain: Promise<void> = Promise.resolve();
  readonly #streams = new Map<string, AbortController>();
  /** Answers queued or streaming, in order, with their UI message streams (see TurnLog). */
  readonly #turns: TurnLog[] = [];
  /** The latest turn of each request still queued or streaming. */
  readonly #turnByRequest = new Map<string, TurnLog>();
  /** Each answer's prompt (the whole conversation), its turns made once per message. */
  readonly #prompts = new PromptCache();

  constructor(id: string, ctx: SessionContext) {
    this.id = id;
    this.#ctx = ctx;
    this.#mailbox = new Mailbox(ctx.mailboxCapacity, `session ${id}`);
    this.#chunks = new ChunkBuffer(ctx.streamBufferChunks);
  }

  get mailboxDepth(): number {
    return this.#mailbox.depth;
  }

  /** The actor's lifecycle (see the field). */
  get state(): 'running' | 'draining' | 'stopped' {
    return this.#state;
  }

  get stopped(): boolean {
    return this.#state === 'stopped';
  }

  /** Subscribes to committed events and chunks; returns the unsubscribe function. */
  subscribe(listener: (u: SessionUpdate) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Buffered chunks of a message from `fromIndex`, for a subscriber resuming mid-stream. */
  chunksSince(messageId: string, fromIndex = 0): Chunk[] {
    return this.#chunks.since(messageId, fromIndex);
  }

  #publish(update: SessionUpdate): void {
    for (const listener of this.#listeners) {
      try {
        listener(update);
      } catch (err) {
        // A subscriber's bug is not the session's: it must not stop delivery to the others.
        this.#ctx.failed(this.id, 'subscriber', err);
      }
    }
  }

  /** Whether anyone subscribed (the runtime keeps such an actor when it passivates the session). */
  get hasSubscribers(): boolean {
    return this.#listeners.size > 0;
  }

  /**
   * Runs `task` in the mailbox with the session's committed state; a throw is a
   * crash, supervised. `internal` work (ending a stream, interrupting turns)
   * still runs on a stopped session, so every started turn gets its terminal event.
   */
  run<T>(name: string, task: (state: SessionState) => Promise<T>, internal = false): Promise<T> {
    if (this.#state === 'stopped' && !internal) {
      return Promise.reject(new ArborError(ErrorCodes.SESSION_STOPPED, `session ${this.id} was stopped after ${this.#crashes.length} crashes within ${this.#ctx.restartWindowMs} ms`, { sessionId: this.id }, { cause: this.#stopCause }));
    }
    return this.#mailbox.run(async () => {
      const active = this.#ctx.activate(this.id);
      const { state: loaded, fresh } = active instanceof Promise ? await active : active;
      const state = fresh ? await this.#repairAfterRestart(loaded) : loaded;
      try {
        return await task(state);
      } catch (err) {
        // Refusals and I/O failures are answers, not crashes: the state was never touched.
        if (isArborError(err)) throw err;
        const { crashes, stop } = afterCrash(this.#crashes, Date.now(), this.#ctx.maxRestarts, this.#ctx.restartWindowMs);
        this.#crashes = crashes;
        if (stop) {
          this.#state = 'stopped';
          this.#stopCause = err;
        }
        this.#ctx.crashed(this.id, err, stop);
        throw new ArborError(ErrorCodes.HANDLER_CRASHED, `session ${this.id}: ${name} crashed (${(err as Error)?.message ?? String(err)}); ${stop ? 'the session is stopped' : 'restarted from its last committed state'}`, { sessionId: this.id, command: name, stopped: stop }, { cause: err });
      }
    });
  }

  /**
   * Journals one critical event on top of `state` (inside the mailbox): the
   * event is reduced first, then appended with expectedSeq and awaited, then the
   * new state is committed to the hot tier and published.
   */
  async commit<T extends CriticalEventType>(state: SessionState, type: T, data: EventData<T>, clientMessageId?: string): Promise<{ state: SessionState; result: AppendResult }> {
    const parsed = parseEventData(type, data, { sessionId: this.id });
    const ts = Date.now();
    const v = CURRENT_EVENT_VERSION[type];
    const record: JournalRecord = { lsn: 0, sid: this.id, seq: state.seq + 1, ts, type, v, data: parsed, ...(clientMessageId === undefined ? {} : { cid: clientMessageId }) };
    const next = reduceSession(state, record);
    const result = await this.#ctx.store.append({ sid: this.id, type, v, data: parsed, expectedSeq: state.seq, ts, ...(clientMessageId === undefined ? {} : { clientMessageId }) });
    if (result.duplicate) return { state, result };
    // Durable: now, and only now, the new state is the session's.
    this.#ctx.hot.store(this.id, next);
    this.#ctx.committed(this.id, next, result.lsn);
    // No subscriber (the common case under load): no event copy to build and throw away.
    if (this.#listeners.size > 0) this.#publish({ kind: 'event', event: { ...record, lsn: result.lsn } });
    return { state: next, result };
  }

  // ---- commands -------------------------------------------------------------

  /** The user's message: durable when this resolves; the assistant's answer then streams. */
  sendMessage(
    content: string,
    clientMessageId?: string,
    metadata?: Record<string, unknown>,
    parts?: readonly { type: 'text'; text: string }[],
  ): Promise<{ messageId: string; seq: number; duplicate: boolean; turn: TurnLog | undefined }> {
    const parent = traceParent();
    return this.run('sendMessage', async (state) => {
      const messageId = randomUUID();
      const data = { messageId, content, ...(clientMessageId === undefined ? {} : { clientMessageId }), ...(metadata === undefined ? {} : { metadata }), ...(parts === undefined ? {} : { parts }) };
      const { result } = await this.commit(state, 'user_message_sent', data as EventData<'user_message_sent'>, clientMessageId).catch((err: unknown) => {
        throw asCallerField(err, this.id);
      });
      if (result.duplicate) {
        // A retried request: the original message, no second answer.
        const original = (state.messages.find((m) => m.seq === result.seq) ?? this.#ctx.hot.peek(this.id)?.messages.find((m) => m.seq === result.seq));
        // The same key for another message is a client bug, not a retry: refused, as idempotency keys are elsewhere (Stripe).
        if (original !== undefined && original.content !== content) {
          throw new ArborError(
            ErrorCodes.IDEMPOTENCY_MISMATCH,
            `session ${this.id}: clientMessageId ${JSON.stringify(clientMessageId)} was used for message ${original.id} (seq ${result.seq}) with different content; use a new clientMessageId for a new message`,
            { sessionId: this.id, field: 'clientMessageId', clientMessageId, messageId: original.id, seq: result.seq },
          );
        }
        const id = original?.id ?? messageId;
        return { messageId: id, seq: result.seq, duplicate: true, turn: this.#turnByRequest.get(id) };
      }
      const turn = this.#queueStream(messageId, undefined, undefined, parent);
      return { messageId, seq: result.seq, duplicate: false, turn };
    });
  }

  /** Regenerates the last answer: the interrupted one if the last turn was interrupted, else the last one. */
  retry(): Promise<{ requestMessageId: string; retryOf: string | undefined; turn: TurnLog }> {
    const parent = traceParent();
    return this.run('retry', async (state) => {
      const target = retryTarget(state);
      if (target === undefined) throw new ArborError(ErrorCodes.NOTHING_TO_RETRY, `session ${this.id} has no answer to retry`, { sessionId: this.id });
      const turn = this.#queueStream(target.requestMessageId, target.retryOf, undefined, parent);
      return { ...target, turn };
    });
  }

  /** The first answer queued or streaming (its UI stream), or undefined when there is none. */
  currentTurn(): TurnLog | undefined {
    return this.#turns.find((t) => !t.ended);
  }

  /**
   * Ends the answer streaming now on purpose: the provider request is aborted
   * and the partial answer is journaled as the final one, `stopped: true`.
   * Resolves once that is durable; `stopped: false` when nothing was streaming.
   * Answers queued behind it still run.
   */
  async stop(): Promise<{ stopped: boolean; messageId: string | undefined }> {
    const turn = this.currentTurn();
    const messageId = turn?.messageId;
    const controller = messageId === undefined ? undefined : this.#streams.get(messageId);
    if (turn === undefined || controller === undefined) return { stopped: false, messageId: undefined };
    controller.abort(STOP_REASON);
    await turn.whenEnded();
    return { stopped: true, messageId };
  }

  changeConfig(key: string, newValue: unknown): Promise<{ seq: number }> {
    return this.run('changeConfig', async (state) => {
      const data = { key, newValue, ...(key in state.config ? { oldValue: state.config[key] } : {}) } as EventData<'session_config_changed'>;
      const { result } = await this.commit(state, 'session_config_changed', data);
      return { seq: result.seq };
    });
  }

  /**
   * Journals a decision. With `approvalId` (or `toolCallId`) it answers a
   * pending tool approval (`permission` defaults to the tool's); once no
   * approval of that answer is pending, the paused turn continues: the
   * approved calls run (under the intent log), then the model goes on.
   * ARBOR_NO_SUCH_APPROVAL when nothing with that id is pending.
   */
  decidePermission(input: Omit<EventData<'permission_decided'>, 'permission'> & { permission?: string }): Promise<{ seq: number }> {
    return this.run('decidePermission', async (state) => {
      let data = input as EventData<'permission_decided'>;
      const answers = input.approvalId !== undefined || input.toolCallId !== undefined;
      const pending = answers ? pendingApprovals(state).find((p) => (input.approvalId === undefined || p.approvalId === input.approvalId) && (input.toolCallId === undefined || p.toolCallId === input.toolCallId)) : undefined;
      if (answers) {
        if (pending === undefined) {
          throw new ArborError(ErrorCodes.NO_SUCH_APPROVAL, `session ${this.id} has no pending tool approval ${input.approvalId ?? input.toolCallId}`, { sessionId: this.id, field: input.approvalId === undefined ? 'toolCallId' : 'approvalId' });
        }
        data = { ...input, permission: input.permission ?? `tool:${pending.tool}`, approvalId: pending.approvalId, toolCallId: pending.toolCallId };
      }
      const { state: after, result } = await this.commit(state, 'permission_decided', data);
      if (pending !== undefined && !pendingApprovals(after).some((p) => p.messageId === pending.messageId)) {
        const paused = findMessage(after, pending.messageId);
        const request = paused?.metadata?.requestMessageId;
        if (typeof request === 'string') this.#queueStream(request, undefined, pending.messageId);
      }
      return { seq: result.seq };
    });
  }

  recordToolExecution(event: { type: 'mcp_server_connected'; data: EventData<'mcp_server_connected'> } | { type: 'mcp_tool_executed'; data: EventData<'mcp_tool_executed'> }): Promise<{ seq: number }> {
    return this.run('recordToolExecution', async (state) => {
      const { result } = event.type === 'mcp_server_connected' ? await this.commit(state, event.type, event.data) : await this.commit(state, event.type, event.data);
      return { seq: result.seq };
    });
  }

  /**
   * Runs a registered command handler inside the mailbox, intent first:
   * `command_started` is durable before the handler is called, and
   * `command_finished` (outcome `ok` with the result, or `error`) after it. A
   * process death in between leaves the command's outcome unknown (recovery
   * journals that; it never re-runs it). `commandId` is an idempotency key:
   * a command already journaled under it is not run again; its recorded
   * result is returned (or its recorded failure, or ARBOR_COMMAND_OUTCOME_UNKNOWN).
   */
  executeCommand(command: string, args: readonly unknown[] = [], options: { commandId?: string } = {}): Promise<{ commandId: string; seq: number; result: unknown; duplicate: boolean }> {
    return this.run(`executeCommand ${command}`, async (state) => {
      const handler = this.#ctx.commands[command];
      if (handler === undefined || !Object.hasOwn(this.#ctx.commands, command)) {
        throw new ArborError(ErrorCodes.UNKNOWN_COMMAND, `unknown command ${JSON.stringify(command)} (session ${this.id}); registered: ${Object.keys(this.#ctx.commands).join(', ') || 'none'}`, { sessionId: this.id, field: 'command' });
      }
      const commandId = options.commandId ?? randomUUID();
      if (options.commandId !== undefined) {
        const replay = this.#recordedCommand(state, commandId, command, args);
        if (replay !== undefined) return replay;
      }
      const started = await this.commit(state, 'command_started', { commandId, command, args: [...args] } as EventData<'command_started'>).catch((err: unknown) => {
        throw asCallerField(err, this.id, 'a command');
      });
      const t0 = performance.now();
      const finish = (data: Omit<EventData<'command_finished'>, 'commandId' | 'command' | 'durationMs'>) =>
        this.commit(started.state, 'command_finished', { commandId, command, ...data, durationMs: performance.now() - t0 } as EventData<'command_finished'>);
      let result: unknown;
      try {
        result = await handler({ sessionId: this.id, state, args });
      } catch (err) {
        // Recorded as it happened, then the caller gets the failure (a crash is still a crash: supervised by run()).
        await finish({ outcome: 'error', error: errorText(err), ...(isArborError(err) ? { errorCode: err.code } : {}) });
        throw err;
      }
      try {
        const committed = await finish({ outcome: 'ok', ...(result === undefined ? {} : { result: result as EventData<'command_finished'>['result'] }) });
        return { commandId, seq: committed.result.seq, result, duplicate: false };
      } catch (err) {
        if (!isArborError(err, ErrorCodes.INVALID_INPUT)) throw err;
        // The handler ran, but its result cannot be journaled (not JSON): the command ends as an error that says so.
        const refused = asCallerField(err, this.id, 'a command');
        await finish({ outcome: 'error', error: errorText(refused), errorCode: ErrorCodes.INVALID_INPUT });
        throw refused;
      }
    });
  }

  /** What a command already journaled under `commandId` answers a retry with; undefined when there is none. */
  #recordedCommand(state: SessionState, commandId: string, command: string, args: readonly unknown[]): { commandId: string; seq: number; result: unknown; duplicate: true } | undefined {
    const inFlight = state.commandsInFlight !== undefined && Object.hasOwn(state.commandsInFlight, commandId) ? state.commandsInFlight[commandId] : undefined;
    const done = inFlight === undefined ? state.commands.findLast((c) => c.commandId === commandId) : undefined;
    const recorded = inFlight ?? done;
    if (recorded === undefined) return undefined;
    const where = { sessionId: this.id, field: 'commandId', commandId, command: recorded.command };
    if (recorded.command !== command || !isDeepStrictEqual([...(recorded.args ?? [])], [...args])) {
      throw new ArborError(ErrorCodes.IDEMPOTENCY_MISMATCH, `session ${this.id}: commandId ${JSON.stringify(commandId)} was used for command ${JSON.stringify(recorded.command)} with other arguments; use a new commandId for a new command`, where);
    }
    if (done === undefined || done.outcome === 'unknown') {
      throw new ArborError(ErrorCodes.COMMAND_OUTCOME_UNKNOWN, `session ${this.id}: command ${JSON.stringify(command)} (${commandId}) started at seq ${recorded === done ? done.startedSeq : inFlight!.startedSeq} and its outcome is unknown (the process stopped while it ran); it is not run again: check its effect, and run it under a new commandId if it is needed`, { ...where, seq: done?.seq });
    }
    if (done.outcome === 'error' || done.error !== undefined) {
      const code = KNOWN_CODES.has(done.errorCode ?? '') ? (done.errorCode as ArborError['code']) : ErrorCodes.HANDLER_CRASHED;
      throw new ArborError(code, `session ${this.id}: command ${JSON.stringify(command)} (${commandId}) already ran and failed (seq ${done.seq}): ${done.error ?? 'no reason recorded'}; it is not run again`, { ...where, seq: done.seq, duplicate: true });
    }
    return { commandId, seq: done.seq, result: done.result, duplicate: true };
  }

  /**
   * Publishes a recoverable event (typing indicator, UI state, cache update) to
   * subscribers: validated like every event, never journaled, never in the state.
   */
  publishRecoverable<T extends RecoverableEventType>(type: T, data: EventData<T>): void {
    if (!isRecoverableEventType(type)) {
      throw new ArborError(ErrorCodes.INVALID_INPUT, `${String(type)} is not a recoverable event type (session ${this.id}); critical events go through the session's commands`, { field: 'type', sessionId: this.id });
    }
    const parsed = parseEventData(type, data, { sessionId: this.id });
    this.#publish({ kind: 'recoverable', type, data: parsed });
  }

  // ---- streaming --------------------------------------------------------------

  /** Read through a method: a check at the top of #stream must not narrow what later awaits may change. */
  #isDraining(): boolean {
    return this.#state === 'draining';
  }

  #queueStream(requestMessageId: string, retryOf: string | undefined, continues?: string, parent?: unknown): TurnLog {
    const turn = new TurnLog(requestMessageId, this.#ctx.streamBufferChunks);
    this.#turns.push(turn);
    this.#turnByRequest.set(requestMessageId, turn);
    const done = (): void => {
      // Whatever happened, the turn's readers are released.
      if (!turn.ended) {
        turn.push({ type: 'error', errorText: 'the answer did not start' });
        turn.end();
      }
      const i = this.#turns.indexOf(turn);
      if (i >= 0) this.#turns.splice(i, 1);
      if (this.#turnByRequest.get(requestMessageId) === turn) this.#turnByRequest.delete(requestMessageId);
    };
    this.#streamChain = this.#streamChain
      .then(() => this.#stream(requestMessageId, retryOf, turn, continues, parent))
      .catch((err: unknown) => this.#ctx.failed(this.id, 'stream', err))
      .finally(done);
    return turn;
  }

  /** What the tool runner needs of this actor for the answer `messageId`; tool chunks go to its UI stream. */
  #toolDeps(turn: TurnLog, start: SessionState): ToolRunnerDeps {
    let latest = start;
    return {
      registry: this.#ctx.tools,
      journal: async (type, data) => {
        latest = await this.run(`tool ${type}`, async (state) => (await this.commit(state, type, data)).state, true);
        return latest;
      },
      chunk: (c) => turn.push(c),
      current: () => this.#ctx.hot.peek(this.id) ?? latest,
      now: () => Date.now(),
    };
  }

  /** Resolves when every answer queued so far has ended (completed or interrupted). */
  streamsSettled(): Promise<void> {
    return this.#streamChain;
  }

  /** Resolves when the mailbox is empty and no answer is streaming (waiting again if one command started another). */
  async settled(): Promise<void> {
    for (;;) {
      const chain = this.#streamChain;
      await this.#mailbox.drain();
      await chain;
      if (chain === this.#streamChain && this.#mailbox.depth === 0) return;
    }
  }

  /**
   * One streamed answer: journal its start, publish chunks (memory only), then
   * journal exactly one terminal event: the completed answer (also when
   * stop() ended it: the partial answer, `stopped`), or stream_interrupted
   * when the provider fails or the runtime shuts down. Its UI message stream
   * goes to `turn` as it happens; `finish` only once the end is durable.
   */
  async #stream(requestMessageId: string, retryOf: string | undefined, turn: TurnLog, continues: string | undefined, parent: unknown): Promise<void> {
    if (this.#state === 'draining') return;
    const llm = this.#ctx.llm;
    const messageId = randomUUID();
    let request: Omit<StreamRequest, 'signal'> | undefined;
    // Telemetry: the turn starts before its start is journaled (the batch acknowledging it links to the turn).
    const turnStarted = performance.now();
    const facts = { sessionId: this.id, messageId, requestMessageId, provider: llm.name, model: llm.model };
    if (turnStartChannel.hasSubscribers) turnStartChannel.publish({ ...facts, ...(retryOf === undefined ? {} : { retryOf }), startTime: epochMs(), ...(parent === undefined ? {} : { parent }) });
    const turnEnded = (end: Omit<LlmTurnMessage, 'sessionId' | 'messageId' | 'requestMessageId' | 'provider' | 'model' | 'durationMs'>, model = llm.model): void => {
      if (llmTurnChannel.hasSubscribers) llmTurnChannel.publish({ ...facts, model, ...end, durationMs: performance.now() - turnStarted } satisfies LlmTurnMessage);
    };
    // A turn with tools: the model may call them, step by step (tool-loop.ts).
    const withTools = this.#ctx.tools.size > 0 && canCallTools(llm) ? llm : undefined;
    let startState: SessionState | undefined;
    // Registered before the start is journaled, so a shutdown that begins meanwhile aborts this answer too.
    const controller = new AbortController();
    this.#streams.set(messageId, controller);
    try {
      await this.run('startStream', async (state) => {
        request = { sessionId: this.id, messageId, messages: this.#prompts.promptFor(state, requestMessageId), ...settingsOf(state.config) };
        const data = { messageId, requestMessageId, provider: llm.name, model: request.model ?? llm.model, ...(retryOf === undefined ? {} : { retryOf }) };
        startState = (await this.commit(state, 'assistant_stream_started', data)).state;
      });
    } catch (err) {
      this.#streams.delete(messageId);
      // Nothing started, nothing to end. A stopped session was reported when it stopped; a failed write is news.
      if (!isArborError(err, ErrorCodes.SESSION_STOPPED) && !isArborError(err, ErrorCodes.CLOSED)) this.#ctx.failed(this.id, 'stream', err);
      turnEnded({ outcome: 'interrupted', interruption: 'not_started', reason: (err as Error)?.message ?? String(err), chunks: 0 });
      turn.push({ type: 'error', errorText: `the answer could not start: ${(err as Error)?.message ?? String(err)}` });
      turn.end();
      return;
    }
    const model = request!.model ?? llm.model;
    turn.push({ type: 'start', messageId, messageMetadata: { requestMessageId, provider: llm.name, model, ...(retryOf === undefined ? {} : { retryOf }) } });
    const started = performance.now();
    const llmStartTime = epochMs();
    let firstChunkAt: number | undefined;
    let llmEndedAt: number | undefined;
    let content = '';
    /** the answer's parts so far; consecutive text (or reasoning) grows one part */
    const parts: { type: 'text' | 'reasoning'; text: string }[] = [];
    let open: { type: 'text' | 'reasoning'; id: string } | undefined;
    const close = (): void => {
      if (open !== undefined) turn.push({ type: `${open.type}-end`, id: open.id });
      open = undefined;
    };
    let index = 0;
    let received = 0;
    let finishReason: string | undefined;
    let usage: LlmUsage | undefined;
    let failure: unknown;
    /** a turn with tools: its parts after the last journaled tool event */
    let rest: readonly AnswerPart[] | undefined;
    try {
      if (controller.signal.aborted) throw new Error(String(controller.signal.reason));
      const source =
        withTools === undefined
          ? streamPartsOf(llm, { ...request!, signal: controller.signal })
          : this.#toolTurn(withTools, startState!, turn, { messageId, requestMessageId, retryOf, continues, signal: controller.signal, ...(request!.model === undefined ? {} : { model: request!.model }) });
      // The prompt (the whole history) is the provider's now. Held here too, it would live, and be copied by
      // every young-generation collection, for as long as the answer streams: ~5 KB per answer at 600 messages.
      request = undefined;
      for await (const part of source) {
        if (part.type === 'finish') {
          finishReason = part.finishReason;
          usage = part.usage;
          if ('rest' in part) rest = part.rest;
          continue;
        }
        if (part.type === 'journaled') {
          // The parts so far are in the journal now (the tool events carried them).
          close();
          parts.length = 0;
          continue;
        }
        if (part.type === 'start-step' || part.type === 'finish-step') {
          close();
          turn.push({ type: part.type });
          continue;
        }
        if (part.type === 'chunk') {
          if (part.endsText) close();
          turn.push(part.chunk);
          continue;
        }
        firstChunkAt ??= performance.now();
        received += 1;
        const last = parts.at(-1);
        if (last !== undefined && last.type === part.type) last.text += part.text;
        else parts.push({ type: part.type, text: part.text });
        if (open?.type !== part.type) {
          close();
          open = { type: part.type, id: `${messageId}:${parts.length - 1}` };
          turn.push({ type: `${part.type}-start`, id: open.id });
        }
        turn.pushDelta(part.type === 'text' ? 'text-delta' : 'reasoning-delta', open!.id, part.text);
        if (part.type !== 'text') continue;
        content += part.text;
        this.#chunks.push(messageId, index, part.text);
        if (this.#listeners.size > 0) this.#publish({ kind: 'chunk', chunk: { messageId, index, text: part.text } });
        index += 1;
      }
    } catch (err) {
      failure = err;
    } finally {
      llmEndedAt = performance.now();
      this.#streams.delete(messageId);
    }
    const shuttingDown = this.#isDraining();
    const stopped = failure !== undefined && controller.signal.reason === STOP_REASON;
    let outcome: 'completed' | 'stopped' | 'interrupted' | undefined;
    let reason = '';
    let metadata: Readonly<Record<string, unknown>> | undefined;
    const terminal = async (state: SessionState): Promise<void> => {
      if (pendingInterruption(state)?.messageId !== messageId) return; // already ended (e.g. interrupted at shutdown)
      if (failure === undefined || stopped) {
        const stats = {
          chunks: index,
          durationMs: performance.now() - started,
          ...(stopped || finishReason === undefined ? {} : { finishReason }),
          ...usage,
          ...(firstChunkAt === undefined ? {} : { timeToFirstChunkMs: firstChunkAt - started }),
        };
        // Parts only when they say more than the text: reasoning, or several runs.
        const finalParts: readonly MessagePart[] = rest ?? parts;
        const simple = rest === undefined ? parts.length === 0 || (parts.length === 1 && parts[0]!.type === 'text') : rest.length === 0;
        const data = { messageId, requestMessageId, content, stats, ...(simple ? {} : { parts: finalParts as MessagePart[] }), ...(stopped ? { stopped: true as const } : {}) };
        const { state: after } = await this.commit(state, 'assistant_response_completed', data as EventData<'assistant_response_completed'>);
        metadata = findMessage(after, messageId)?.metadata;
        outcome = stopped ? 'stopped' : 'completed';
      } else {
        reason = isAbortError(failure) || controller.signal.aborted ? String(controller.signal.reason ?? 'aborted') : `provider error: ${(failure as Error)?.message ?? String(failure)}`;
        await this.commit(state, 'stream_interrupted', { messageId, requestMessageId, reason });
        outcome = 'interrupted';
      }
      this.#chunks.forget(messageId);
    };
    await this.run('endStream', terminal, true).catch((err: unknown) => this.#ctx.failed(this.id, 'stream', err));
    close();
    if (outcome === 'completed' || outcome === 'stopped') {
      const chunk: UIChunk = { type: 'finish', ...(finishReason !== undefined && FINISH_REASONS.has(finishReason) && !stopped ? { finishReason } : {}), ...(metadata === undefined ? {} : { messageMetadata: metadata }) };
      turn.push(chunk);
    } else {
      turn.push({ type: 'error', errorText: outcome === 'interrupted' ? `the answer was interrupted: ${reason}` : 'the answer could not be saved' });
    }
    turn.end();
    if (llmTurnChannel.hasSubscribers) {
      const llmFacts = { chunks: received, llmStartTime, llmDurationMs: (llmEndedAt ?? performance.now()) - started, ...(firstChunkAt === undefined ? {} : { timeToFirstChunkMs: firstChunkAt - started }) };
      if (failure === undefined || stopped) {
        turnEnded({ outcome: 'completed', ...llmFacts, ...(finishReason === undefined || stopped ? {} : { finishReason }), ...(usage === undefined ? {} : { usage: { ...usage } }) }, model);
      } else {
        const aborted = isAbortError(failure) || controller.signal.aborted;
        const interruption: TurnInterruption = !aborted ? 'provider_error' : shuttingDown || this.#isDraining() ? 'shutdown' : 'aborted';
        const statusCode = failure instanceof LlmProviderError ? failure.statusCode : undefined;
        turnEnded({ outcome: 'interrupted', interruption, reason: aborted ? String(controller.signal.reason ?? 'aborted') : ((failure as Error)?.message ?? String(failure)), ...llmFacts, ...(statusCode === undefined ? {} : { statusCode }), ...(aborted ? {} : { error: (failure as Error)?.message ?? String(failure) }) }, model);
      }
    }
  }

  /**
   * The text of a turn with tools: runs the approved calls of a continuation
   * first, then the model step by step (tool-loop.ts), yielding the text.
   */
  async *#toolTurn(
    provider: Parameters<typeof toolLoop>[0]['provider'],
    start: SessionState,
    uiTurn: TurnLog,
    turn: { messageId: string; requestMessageId: string; retryOf: string | undefined; continues: string | undefined; signal: AbortSignal; model?: string },
  ): AsyncGenerator<LlmStreamPart | { type: 'journaled' } | { type: 'start-step' } | { type: 'finish-step' } | { type: 'chunk'; chunk: ToolChunk; endsText: boolean } | { type: 'finish'; finishReason: string; usage?: LlmUsage; rest: readonly AnswerPart[] }, void, undefined> {
    const deps = this.#toolDeps(uiTurn, start);
    let state = start;
    if (turn.continues !== undefined) {
      // The approved calls of the paused answer run now (a once grant answers its own call only); denied ones stay denied.
      const approved: ModelToolCall[] = [];
      for (const p of findMessage(state, turn.continues)?.parts ?? []) {
        // A denied call never runs: the client's part shows it (the SDK's tool-output-denied).
        if (p.type === 'tool' && p.state === 'output-denied' && p.approval?.approved === false) uiTurn.push({ type: 'tool-output-denied', toolCallId: p.toolCallId });
        if (p.type === 'tool' && p.state === 'approval-responded' && p.approval?.approved === true && !Object.hasOwn(state.toolCallsInFlight ?? {}, p.toolCallId)) {
          approved.push({ toolCallId: p.toolCallId, toolName: p.toolName, input: p.input });
        }
      }
      if (approved.length > 0) state = (await runToolCalls(deps, { state, messageId: turn.continues, calls: approved, before: [], prior: priorCallsFor(state, undefined) })).state;
    }
    // A retried answer that was interrupted carries on from its partial: the model learns what ran and what is unknown.
    const retried = turn.retryOf === undefined ? undefined : findMessage(state, turn.retryOf);
    const extra = turn.continues !== undefined ? [turn.continues] : retried?.metadata?.interrupted === true && retried.parts.some((p): p is ToolPart => p.type === 'tool') ? [retried.id] : [];
    const messages = modelMessagesFor(state, turn.requestMessageId, extra);
    // retry() of an interrupted answer re-runs, by itself, only its calls of unknown outcome whose tool is safe to repeat.
    const reruns: ModelToolCall[] = [];
    if (extra.length > 0 && turn.continues === undefined) {
      for (const p of retried?.parts ?? []) {
        const entry = p.type === 'tool' && p.outcome === 'unknown' ? this.#ctx.tools.get(p.toolName) : undefined;
        if (p.type === 'tool' && entry !== undefined && mayRerunAutomatically(entry.safety)) reruns.push({ toolCallId: randomUUID(), toolName: p.toolName, input: p.input });
      }
    }
    if (reruns.length > 0) {
      const { results } = await runToolCalls(deps, { state, messageId: turn.messageId, calls: reruns, before: [], prior: [] });
      messages.push({ role: 'assistant', content: reruns.map((c) => ({ type: 'tool-call' as const, toolCallId: c.toolCallId, toolName: c.toolName, input: c.input ?? {} })) });
      messages.push({ role: 'tool', content: results.map((r) => ({ type: 'tool-result' as const, toolCallId: r.toolCallId, toolName: r.toolName, output: r.error === undefined ? { type: 'json' as const, value: (r.output ?? null) as never } : { type: 'error-text' as const, value: r.error } })) });
    }
    for await (const part of toolLoop({
      provider,
      request: { sessionId: this.id, messageId: turn.messageId, tools: this.#ctx.tools.definitions(), signal: turn.signal, ...(turn.model === undefined ? {} : { model: turn.model }) },
      messages,
      maxSteps: this.#ctx.maxToolSteps,
      deps,
      messageId: turn.messageId,
      prior: priorCallsFor(state, turn.retryOf),
    })) {
      if (part.type === 'finish') {
        const usage: LlmUsage = { ...(part.usage?.inputTokens ? { inputTokens: part.usage.inputTokens } : {}), ...(part.usage?.outputTokens ? { outputTokens: part.usage.outputTokens } : {}) };
        yield { type: 'finish', finishReason: part.finishReason, ...(Object.keys(usage).length === 0 ? {} : { usage }), rest: part.rest };
      } else yield part;
    }
  }

  /**
   * Inside the mailbox, before the first command after a restart: the stream
   * the last process was running ends as stream_interrupted (with the visible
   * notice), and so does every request whose answer never started; a session
   * restored from a backup gets its one notice of the loss. A failure
   * here (e.g. a full disk) leaves the state as loaded: the command then runs
   * on it and meets the same failure itself.
   */
  async #repairAfterRestart(loaded: SessionState): Promise<SessionState> {
    let state = loaded;
    try {
      // A tool call journaled as started and never finished: whether it ran is unknown. Say so; never re-run it here.
      for (const { toolCallId, call } of toolCallsInFlight(state)) {
        ({ state } = await this.commit(state, 'tool_call_finished', { messageId: call.messageId, toolCallId, outcome: 'unknown' }));
      }
      // The same for a command whose handler was running: recorded as unknown, never re-run.
      for (const { commandId, call } of commandsInFlight(state)) {
        ({ state } = await this.commit(state, 'command_finished', { commandId, command: call.command, outcome: 'unknown' }));
      }
      const orphaned = interruptionEventData(state, 'the server stopped while this answer was streaming');
      if (orphaned !== undefined) ({ state } = await this.commit(state, 'stream_interrupted', orphaned));
      for (const requestMessageId of unansweredRequests(state)) {
        ({ state } = await this.commit(state, 'stream_interrupted', { messageId: randomUUID(), requestMessageId, reason: 'the server stopped before this answer started' }));
      }
      // Restored from a backup: the user sees that anything after it was lost.
      const restored = this.#ctx.restoreNotice(state);
      if (restored !== undefined) ({ state } = await this.commit(state, 'system_notice_added', { noticeId: randomUUID(), content: restored.content, metadata: restored.metadata } as EventData<'system_notice_added'>));
    } catch (err) {
      // See above: the command meets the failure too; telemetry hears of it here.
      this.#ctx.failed(this.id, 'recovery', err);
    }
    return state;
  }

  /**
   * Aborts every running stream with `reason`; each ends with
   * stream_interrupted. Later answers start as usual (see `drain`).
   */
  abortStreams(reason: string): void {
    for (const controller of this.#streams.values()) controller.abort(reason);
  }

  /** The runtime is closing: aborts the running streams and starts no queued answer any more. */
  drain(reason: string): void {
    if (this.#state === 'running') this.#state = 'draining';
    this.abortStreams(reason);
  }

  /**
   * Gives every acknowledged request whose answer never started (it was queued
   * behind another when the process stopped, or at shutdown) a visible
   * interrupted notice, so no message is left silently unanswered. Only the
   * requests after the last answered one count, so a runtime-written history
   * has at most the few that were queued.
   */
  interruptUnanswered(reason: string): Promise<number> {
    return this.run('interruptUnanswered', async (initial) => {
      let state = initial;
      const pending = unansweredRequests(state);
      for (const requestMessageId of pending) {
        ({ state } = await this.commit(state, 'stream_interrupted', { messageId: randomUUID(), requestMessageId, reason }));
      }
      return pending.length;
    }, true);
  }
}

/** The trace parent of the caller (see `withTraceParent`), read only when someone traces turns. */
function traceParent(): unknown {
  return turnStartChannel.hasSubscribers ? currentTraceParent() : undefined;
}

/** The abort reason of stop(): the answer ends as completed, `stopped`, not interrupted. */
const STOP_REASON = 'stopped on request';

/**
 * The per-session settings a turn applies (config keys `model`, `system`,
 * `temperature`, `maxOutputTokens`). Config holds any JSON the application
 * sets, so a value of another type (or out of range) is not a setting: it is
 * left out, and the provider's default applies.
 */
export function settingsOf(config: Readonly<Record<string, unknown>>): Pick<StreamRequest, 'model' | 'system' | 'temperature' | 'maxOutputTokens'> {
  const out: Pick<StreamRequest, 'model' | 'system' | 'temperature' | 'maxOutputTokens'> = {};
  if (typeof config.model === 'string' && config.model.length > 0) out.model = config.model;
  if (typeof config.system === 'string' && config.system.length > 0) out.system = config.system;
  if (typeof config.temperature === 'number' && config.temperature >= 0 && config.temperature <= 2) out.temperature = config.temperature;
  if (typeof config.maxOutputTokens === 'number' && Number.isSafeInteger(config.maxOutputTokens) && config.maxOutputTokens > 0) out.maxOutputTokens = config.maxOutputTokens;
  return out;
}

/**
 * The conversation an answer is generated from: every user and assistant
 * message up to and including its request, so an answer queued behind a later
 * message still answers its own request. System notices are not sent.
 */
export function promptFor(state: SessionState, requestMessageId: string): ChatTurn[] {
  const request = findMessage(state, requestMessageId);
  const upto = request?.seq ?? state.seq;
  // One pass, one array: it runs for every answer, over the whole conversation.
  const out: ChatTurn[] = [];
  for (const m of state.messages) if (m.role !== 'system' && m.seq <= upto) out.push({ role: m.role, content: m.content });
  return out;
}

/**
 * User messages that have no answer, no interruption notice and no stream in
 * flight: requests whose answer was queued when the process stopped.
 */
export function unansweredRequests(state: SessionState): string[] {
  const answered = new Set<string>();
  if (state.stream.status === 'streaming') answered.add(state.stream.requestMessageId);
  const out: string[] = [];
  for (let i = state.messages.length - 1; i >= 0; i -= 1) {
    const m = state.messages[i]!;
    if (m.role === 'assistant' && typeof m.metadata?.requestMessageId === 'string') answered.add(m.metadata.requestMessageId);
    const notice = interruptedNoticeMetadata(m);
    if (notice !== undefined) answered.add(notice.originalRequest.messageId);
    if (m.role === 'user') {
      if (answered.has(m.id)) break; // everything before an answered request was handled in order
      out.push(m.id);
    }
  }
  return out.reverse();
}

/** What `retry()` regenerates: the interrupted turn if the last message is its notice, else the last answered request. */
export function retryTarget(state: SessionState): { requestMessageId: string; retryOf: string | undefined } | undefined {
  for (let i = state.messages.length - 1; i >= 0; i -= 1) {
    const m = state.messages[i]!;
    const notice = interruptedNoticeMetadata(m);
    if (notice !== undefined) return { requestMessageId: notice.originalRequest.messageId, retryOf: notice.interruptedMessageId };
    if (m.role === 'assistant') {
      const request = m.metadata?.requestMessageId;
      if (typeof request === 'string' && findMessage(state, request) !== undefined) return { requestMessageId: request, retryOf: m.id };
    }
    if (m.role === 'user') return { requestMessageId: m.id, retryOf: undefined };
  }
  return undefined;
}

/**
 * A refused field of sendMessage's event (`data.content`) named as the caller
 * spelt it (`content`): the library's and the HTTP API's field names are the
 * same, the event's wrapper is an implementation detail.
 */
function asCallerField(err: unknown, sessionId: string, what = 'a message'): unknown {
  if (!isArborError(err, ErrorCodes.INVALID_INPUT)) return err;
  const field = err.details.field;
  if (typeof field !== 'string' || !field.startsWith('data.')) return err;
  const name = field.slice('data.'.length);
  const issues = Array.isArray(err.details.issues) ? (err.details.issues as { field: string; message: string }[]) : [];
  const why = issues.find((i) => i.field === field)?.message ?? err.message;
  return new ArborError(ErrorCodes.INVALID_INPUT, `invalid ${name} of ${what} to session ${sessionId}: ${why}`, { ...err.details, field: name }, { cause: err });
}

/** Every ArborError code: a recorded `errorCode` is only reused when it is one of them. */
const KNOWN_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCodes));

/** A thrown value as the journal can hold it: its message, well-formed, bounded. */
function errorText(err: unknown): string {
  const text = (err as Error)?.message ?? String(err);
  return (typeof text === 'string' ? text : String(text)).slice(0, 10_000).toWellFormed() || 'failed';
}
