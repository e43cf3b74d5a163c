import type { Tool, ToolSet } from 'ai';
import { ArborError, ErrorCodes } from '../core/errors.ts';
import { safetyOf, type ToolSafety } from './policy.ts';

/**
 * The tools a turn may call: the application's own (`createArbor({ tools })`,
 * AI SDK `tool()` definitions, optionally with `idempotent: true`) and those
 * of the MCP servers that are up. A server that fails or dies has its tools
 * withdrawn here; the others keep working.
 */

/** An AI SDK tool, plus Arbor's own marker that it is safe to repeat. */
export type ArborTool = Tool & { idempotent?: boolean };

/** One registered tool. */
export interface ToolEntry {
  readonly name: string;
  /** `app`, or the MCP server's name */
  readonly source: string;
  readonly tool: ArborTool;
  readonly safety: ToolSafety;
  /** shown as the SDK's `dynamic-tool` part (MCP tools: their schema is only known at run time) */
  readonly dynamic: boolean;
}

const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Options of the registry. */
export interface ToolRegistryOptions {
  /** Tool names that always need an approval (configuration). */
  needsApproval?: readonly string[];
}

export class ToolRegistry {
  readonly #entries = new Map<string, ToolEntry>();
  readonly #approval: ReadonlySet<string>;

  constructor(appTools: Readonly<Record<string, ArborTool>> = {}, options: ToolRegistryOptions = {}) {
    this.#approval = new Set(options.needsApproval ?? []);
    for (const [name, tool] of Object.entries(appTools)) {
      if (!TOOL_NAME.test(name)) throw new ArborError(ErrorCodes.INVALID_INPUT, `tool name ${JSON.stringify(name)} in option tools is invalid: expected 1-64 of A-Z a-z 0-9 _ -`, { field: `tools.${name}` });
      if (typeof tool !== 'object' || tool === null || typeof (tool as { execute?: unknown }).execute !== 'function') {
        throw new ArborError(ErrorCodes.INVALID_INPUT, `tool ${name} in option tools has no execute function (Arbor runs the tools itself)`, { field: `tools.${name}.execute` });
      }
      this.#entries.set(name, Object.freeze({ name, source: 'app', tool, safety: safetyOf(tool, this.#approval.has(name)), dynamic: false }));
    }
  }

  /**
   * Adds a server's tools. A name another source already has is skipped and
   * returned (the first one keeps it), so one server cannot shadow another's tool.
   */
  addServer(server: string, tools: Readonly<Record<string, Tool>>): { added: string[]; skipped: string[] } {
    const added: string[] = [];
    const skipped: string[] = [];
    for (const [name, tool] of Object.entries(tools)) {
      const existing = this.#entries.get(name);
      if ((existing !== undefined && existing.source !== server) || !TOOL_NAME.test(name)) {
        skipped.push(name);
        continue;
      }
      this.#entries.set(name, Object.freeze({ name, source: server, tool, safety: safetyOf(tool, this.#approval.has(name)), dynamic: true }));
      added.push(name);
    }
    return { added, skipped };
  }

  /** Withdraws every tool of `server` (it failed or died). */
  withdraw(server: string): string[] {
    const gone: string[] = [];
    for (const [name, e] of this.#entries) {
      if (e.source === server) {
        this.#entries.delete(name);
        gone.push(name);
      }
    }
    return gone;
  }

  get(name: string): ToolEntry | undefined {
    return this.#entries.get(name);
  }

  get size(): number {
    return this.#entries.size;
  }

  names(): string[] {
    return [...this.#entries.keys()];
  }

  /**
   * The tools as the model sees them: description and input schema, without
   * `execute` (Arbor runs each call itself, after journaling its intent) and
   * without `needsApproval` (Arbor decides approvals).
   */
  definitions(): ToolSet {
    const out: ToolSet = {};
    for (const [name, e] of this.#entries) {
      const { execute: _execute, needsApproval: _approval, idempotent: _idempotent, onInputStart: _a, onInputDelta: _b, onInputAvailable: _c, ...rest } = e.tool as ArborTool & Record<string, unknown>;
      out[name] = rest as Tool;
    }
    return out;
  }
}
