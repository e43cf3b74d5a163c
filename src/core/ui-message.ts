import type { Message, MessagePart, ToolPart } from './state.ts';

/**
 * A session's messages as the AI SDK's `UIMessage` (ai@6): the shapes here are
 * structurally those of `UIMessage`, `TextUIPart`, `ReasoningUIPart`,
 * `StepStartUIPart`, `ToolUIPart` and `DynamicToolUIPart` (core/ imports no SDK;
 * the server casts). Each stored part maps onto exactly one UI part.
 */

/** A UI message part, as plain JSON. */
export type UIPartShape = { readonly type: string } & Readonly<Record<string, unknown>>;

/** A `UIMessage`, as plain JSON. */
export interface UIMessageShape {
  readonly id: string;
  readonly role: 'system' | 'user' | 'assistant';
  readonly metadata?: Readonly<Record<string, unknown>>;
  readonly parts: readonly UIPartShape[];
}

/** The UI part type of a tool part: `tool-<name>`, or `dynamic-tool` for a dynamic one. */
export function toolUIPartType(part: Pick<ToolPart, 'toolName' | 'dynamic'>): string {
  return part.dynamic === true ? 'dynamic-tool' : `tool-${part.toolName}`;
}

/** The UIMessage part for one stored part. */
export function toUIPart(part: MessagePart): UIPartShape {
  switch (part.type) {
    case 'text':
      return { type: 'text', text: part.text, state: 'done' };
    case 'reasoning':
      return { type: 'reasoning', text: part.text, state: 'done' };
    case 'step-start':
      return { type: 'step-start' };
    case 'tool': {
      const out: Record<string, unknown> = { type: toolUIPartType(part), toolCallId: part.toolCallId, state: part.state };
      if (part.dynamic === true) out.toolName = part.toolName;
      if (part.title !== undefined) out.title = part.title;
      if (part.providerExecuted !== undefined) out.providerExecuted = part.providerExecuted;
      out.input = part.input;
      if (part.state === 'output-available') out.output = part.output;
      if (part.state === 'output-error') out.errorText = part.errorText ?? 'the tool failed';
      if (part.approval !== undefined) out.approval = { ...part.approval };
      return out as UIPartShape;
    }
  }
}

/**
 * A stored message as a UIMessage. A user message that came with a client id
 * (POST /v1/chat, or `clientMessageId`) keeps that id, so a client that made it
 * finds it again in the history; every other message has its Arbor id. The
 * metadata is the message's own (an answer's: finishReason, usage, stats,
 * stopped…).
 */
export function toUIMessage(message: Message): UIMessageShape {
  const clientId = message.role === 'user' ? message.metadata?.clientMessageId : undefined;
  return {
    id: typeof clientId === 'string' ? clientId : message.id,
    role: message.role,
    ...(message.metadata === undefined ? {} : { metadata: message.metadata }),
    parts: message.parts.map(toUIPart),
  };
}
