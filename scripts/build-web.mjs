// Bundles the dashboard (web/src, typed against the router) into dist/web with its static files.
import { build } from 'esbuild';
import fs from 'node:fs';

fs.mkdirSync('dist/web', { recursive: true });
for (const file of ['index.html', 'style.css']) fs.copyFileSync(`web/${file}`, `dist/web/${file}`);
await build({
  entryPoints: ['web/src/main.ts'],
  bundle: true,
  format: 'esm',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  outfile: 'dist/web/app.js',
  logLevel: 'warning',
});
