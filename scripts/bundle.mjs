// Bundles the compiled CLI into one ESM file, dist/cfs.mjs, that needs no node_modules.
import { build } from 'esbuild';
import { chmodSync } from 'node:fs';

await build({
  entryPoints: ['build/src/cli/main.js'],
  outfile: 'dist/cfs.mjs',
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __cfsCreateRequire } from 'node:module'; const require = __cfsCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
chmodSync('dist/cfs.mjs', 0o755);
