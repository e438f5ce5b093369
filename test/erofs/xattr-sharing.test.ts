/**
 * The shared xattr table's order, checked against the rule itself (epoch 1: descending by full
 * name, value length, value bytes — libcomposefs; epoch 2: ascending by prefix index, suffix,
 * value — composefs-rs), on inputs that take each of the writer's paths: ids of one length
 * (sorted by their bytes, with runs agreeing in their first 4 bytes), ids of mixed lengths, and
 * value-grouped items equal to id-derived ones (ties).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';

import {
  IdGroups,
  InodeXattrs,
  XATTR_OVERLAY_METACOPY,
  XATTR_OVERLAY_REDIRECT,
  metacopyValue,
  redirectValue,
  shareXattrsFast,
  type XattrItem,
} from '../../src/erofs/xattrs.js';

function ruleOrder(epoch1: boolean) {
  return (a: XattrItem, b: XattrItem): number =>
    epoch1
      ? Buffer.compare(b.name, a.name) || b.value.length - a.value.length || Buffer.compare(b.value, a.value)
      : a.index - b.index || Buffer.compare(a.suffix, b.suffix) || Buffer.compare(a.value, b.value);
}

function ids(count: number, lengths: number[], sharedPrefix: boolean): Buffer[] {
  return Array.from({ length: count }, (_, i) => {
    const len = lengths[i % lengths.length];
    const d = createHash('sha512').update(`id ${i}`).digest();
    const id = Buffer.concat([d, d]).subarray(0, len);
    if (sharedPrefix && i % 3 === 0) id.writeUInt32BE(0xabcdef01, 0); // a run agreeing in 4 bytes
    return id;
  });
}

for (const [label, lengths, sharedPrefix] of [
  ['one length', [32], false],
  ['one length, shared 4-byte prefixes', [64], true],
  ['mixed lengths', [32, 64], true],
] as const) {
  for (const epoch1 of [true, false]) {
    test(`shared xattr table order: ${label}, epoch ${epoch1 ? 1 : 2}`, () => {
      const pool = ids(300, [...lengths], sharedPrefix);
      const n = 2000;
      const generic: (InodeXattrs | null)[] = [];
      const fastId: (Buffer | null)[] = [];
      for (let i = 0; i < n; i++) {
        const id = pool[(i * 7919) % pool.length];
        if (i % 5 === 0) {
          // A general inode: the same id-derived names as ordinary xattrs, plus a label.
          const x = new InodeXattrs(epoch1);
          x.add(XATTR_OVERLAY_METACOPY, metacopyValue(id));
          x.add(XATTR_OVERLAY_REDIRECT, redirectValue(id), id, 2);
          x.add(Buffer.from('security.selinux'), Buffer.from(`label${i % 4}`));
          generic.push(x);
          fastId.push(null);
        } else {
          generic.push(null);
          fastId.push(i % 11 === 0 ? null : id);
        }
      }
      const groups = new IdGroups(n);
      const fastGroup = new Int32Array(n).fill(-1);
      const table = shareXattrsFast(n, generic, fastId, groups, fastGroup, epoch1);
      assert.ok(table.length > pool.length, `table has ${table.length} items`);
      const sorted = [...table].sort(ruleOrder(epoch1));
      assert.deepEqual(table.map((t) => t.value.toString('hex')), sorted.map((t) => t.value.toString('hex')));
      // Every position handed out points at the item it stands for.
      for (let g = 0; g < groups.n; g++) {
        if (groups.mcPos[g] >= 0) assert.ok(table[groups.mcPos[g]].value.equals(metacopyValue(groups.id[g])));
        if (groups.rdPos[g] >= 0) assert.ok(table[groups.rdPos[g]].value.equals(redirectValue(groups.id[g])));
      }
      for (const x of generic) {
        for (const p of x?.shared ?? []) assert.ok(p >= 0 && p < table.length);
      }
    });
  }
}
