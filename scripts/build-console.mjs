#!/usr/bin/env node
// Builds the web console (web/console/) into dist/console/: index.html, app.js
// (the page bundled by esbuild, Preact inside; no CDN at run time) and app.css.
// `arbor serve` serves them at `/` (src/server/console.ts). Run by `npm run build`,
// so `npm install`/`npm ci` of the repository (`prepare`) builds it too.
//
//   node scripts/build-console.mjs [--no-typecheck]
//
// The page is typechecked with its own tsconfig (web/console/tsconfig.json: DOM,
// Preact's JSX) unless --no-typecheck; the repository's `tsc -p .` does not see it.
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'web', 'console');
const out = join(root, 'dist', 'console');

if (!process.argv.includes('--no-typecheck')) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const r = spawnSync(process.execPath, [tsc, '-p', join(src, 'tsconfig.json')], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error('build-console: the page does not typecheck (web/console/tsconfig.json)');
    process.exit(1);
  }
}

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
await build({
  entryPoints: [join(src, 'main.tsx')],
  outfile: join(out, 'app.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2022'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  legalComments: 'none',
  logLevel: 'warning',
});
copyFileSync(join(src, 'index.html'), join(out, 'index.html'));
copyFileSync(join(src, 'style.css'), join(out, 'app.css'));
console.log(`build-console: wrote ${out}`);
