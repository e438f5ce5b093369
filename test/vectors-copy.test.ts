/** The project carries its own copy of the vectors; when ../shared is beside it, they must agree. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { C_VECTORS, GOLDEN, SHARED } from './helpers.js';

const pairs: [string, string][] = [
  [GOLDEN, path.join(SHARED, 'spec/vectors/golden')],
  [C_VECTORS, path.join(SHARED, 'spec/vectors/erofs-v0-v1')],
];

for (const [ours, theirs] of pairs) {
  test(`test/vectors/${path.basename(ours)} matches ../shared`, (t) => {
    if (!existsSync(theirs)) {
      t.skip(`${theirs} not present`);
      return;
    }
    const mine = readdirSync(ours);
    for (const f of mine) {
      assert.ok(readFileSync(path.join(ours, f)).equals(readFileSync(path.join(theirs, f))), `${f} differs from ../shared`);
    }
    // every input and id upstream of us is carried (images only where we keep them)
    for (const f of readdirSync(theirs).filter((f) => !f.endsWith('.img') && !f.endsWith('.py') && !f.endsWith('.sh'))) {
      assert.ok(mine.includes(f), `${f} is in ../shared but not in test/vectors`);
    }
  });
}
