// Runs LangGraph's checkpointer conformance suite (@langchain/langgraph-checkpoint-validation,
// written for vitest's globals) against ArborSaver. Started by test/langgraph-validation.test.ts.
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    globals: true,
    include: ['test/langgraph/*.vitest.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    reporters: ['dot'],
  },
});
