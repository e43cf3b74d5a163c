#!/usr/bin/env node
// The `arbor` command: runs the built CLI (npm install builds dist/ through `prepare`).
let cli;
try {
  cli = await import('../dist/cli/main.js');
} catch (err) {
  if (err?.code !== 'ERR_MODULE_NOT_FOUND') throw err;
  process.stderr.write(`arbor: the CLI is not built (${err.message}); run \`npm run build\` in the package directory\n`);
  process.exit(1);
}
await cli.main();
