import { createRequire } from 'node:module';

/** `require` anchored at bench/package.json: peer packages come from bench/node_modules only (they are not dependencies of Arbor). */
export const benchRequire = createRequire(new URL('../package.json', import.meta.url));
