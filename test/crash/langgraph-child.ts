/**
 * Child process of test/crash/langgraph-sigkill.test.ts: a real LangGraph
 * StateGraph (MessagesAnnotation, a deterministic model node, a ToolNode)
 * compiled with ArborSaver, driven through `turns` turns of one thread,
 * resuming whatever an earlier (killed) run left.
 *
 *   node --import tsx test/crash/langgraph-child.ts <dataDir> <invocationsLog> <turns> [pauseAfterAck]
 *
 * Prints `ack <n> put|writes` after each put/putWrites resolved (durable), with
 * a synchronous write; with `pauseAfterAck` it stops dead after that ack and
 * prints `paused`, for the parent to SIGKILL it there. At the end it prints
 * `final <json>`: the thread's messages, projected to what must match.
 */
import { appendFileSync } from 'node:fs';
import { z } from 'zod';
import { AIMessage, HumanMessage, type BaseMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { END, MessagesAnnotation, START, StateGraph } from '@langchain/langgraph';
import { ToolNode, toolsCondition } from '@langchain/langgraph/prebuilt';
import { ArborSaver } from '../../src/langgraph.ts';
import { writeLineSync } from '../helpers/child-io.ts';

const [dataDir, invocations, turnsArg, pauseArg] = process.argv.slice(2);
const turns = Number(turnsArg);
const pauseAfter = pauseArg === undefined ? 0 : Number(pauseArg);

const saver = await ArborSaver.open({ dataDir: dataDir! });
let acks = 0;
function ack(what: string): void {
  acks += 1;
  writeLineSync(`ack ${acks} ${what}`);
  if (pauseAfter > 0 && acks >= pauseAfter) {
    writeLineSync('paused');
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  }
}
const put = saver.put.bind(saver);
const putWrites = saver.putWrites.bind(saver);
saver.put = async (...args) => {
  const r = await put(...args);
  ack('put');
  return r;
};
saver.putWrites = async (...args) => {
  await putWrites(...args);
  ack(`writes ${args[2]}`);
};

const add = tool(
  async ({ a, b }: { a: number; b: number }) => {
    appendFileSync(invocations!, `add ${a} ${b}\n`);
    return String(a + b);
  },
  { name: 'add', description: 'Adds two numbers.', schema: z.object({ a: z.number(), b: z.number() }) },
);

/** The model: asks for the tool after a human message, answers with its result after the tool's. */
function model(state: typeof MessagesAnnotation.State) {
  const turn = state.messages.filter((m) => m.getType() === 'human').length;
  const last = state.messages.at(-1)!;
  if (last.getType() === 'human') {
    return { messages: [new AIMessage({ id: `ai-${turn}-call`, content: '', tool_calls: [{ id: `call-${turn}`, name: 'add', args: { a: turn, b: turn * 10 } }] })] };
  }
  return { messages: [new AIMessage({ id: `ai-${turn}-answer`, content: `the sum is ${String(last.content)}` })] };
}

const graph = new StateGraph(MessagesAnnotation)
  .addNode('agent', model)
  .addNode('tools', new ToolNode([add]))
  .addEdge(START, 'agent')
  .addConditionalEdges('agent', toolsCondition, ['tools', END])
  .addEdge('tools', 'agent')
  .compile({ checkpointer: saver });

// A thread id that is not a session id: mapped, not refused.
// durability 'sync': each checkpoint is saved before the next superstep starts (LangGraph's default,
// 'async', overlaps them, so a tool may run before the checkpoint that scheduled it is durable).
const config = { configurable: { thread_id: 'crash thread #1 / ünïcode' }, durability: 'sync' as const };
for (let turn = 1; turn <= turns; turn += 1) {
  const before = await graph.getState(config);
  // Resume what a killed run left: a step still to run (next), or one whose writes are saved but not yet
  // applied by the loop (an input checkpoint whose __start__ task wrote the human message: LangGraph then
  // shows that message in values and an empty next). New input on top of the latter drops those writes.
  if (before.next.length > 0 || before.tasks.length > 0) await graph.invoke(null, config);
  const messages: BaseMessage[] = (await graph.getState(config)).values.messages ?? [];
  if (messages.some((m) => m.id === `human-${turn}`)) continue;
  await graph.invoke({ messages: [new HumanMessage({ id: `human-${turn}`, content: `turn ${turn}` })] }, config);
}
const end = await graph.getState(config);
const projected = (end.values.messages as BaseMessage[]).map((m) => ({
  type: m.getType(),
  content: m.content,
  id: m.getType() === 'tool' ? undefined : m.id,
  toolCalls: (m as AIMessage).tool_calls?.map((c) => [c.id, c.name, c.args]) ?? [],
  toolCallId: (m as { tool_call_id?: string }).tool_call_id,
}));
writeLineSync(`final ${JSON.stringify({ messages: projected, next: end.next })}`);
await saver.close();
