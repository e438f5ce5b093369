/** Trees and policies for the SELinux tests. */
import assert from 'node:assert/strict';
import { Directory, FileSystem, Leaf, type LeafContent, emptyStat, lookup, splitPath } from '../../../src/tree/tree.js';
import { buildPolicy, lookupLabel } from '../../../src/transform/selinux/policy.js';

export const SEL = 'security.selinux';
export const ctx = (t: string) => `system_u:object_r:${t}:s0`;

/** Creates the parent directories of `path` and returns the last one. */
function parentOf(fs: FileSystem, path: string): [Directory, string] {
  const parts = splitPath(Buffer.from(path, 'latin1'));
  let d = fs.root;
  for (const p of parts.slice(0, -1)) {
    let n = d.entries.get(p);
    if (!n) d.entries.set(p, (n = new Directory(emptyStat())));
    if (n.kind !== 'dir') throw new Error(`not a dir: ${p}`);
    d = n;
  }
  return [d, parts[parts.length - 1]];
}
export function mkdir(fs: FileSystem, path: string): Directory {
  const [d, name] = parentOf(fs, path);
  const n = new Directory(emptyStat());
  d.entries.set(name, n);
  return n;
}
export function mkleaf(fs: FileSystem, path: string, content: LeafContent = { type: 'inline', data: Buffer.alloc(0) }): Leaf {
  const [d, name] = parentOf(fs, path);
  const l = new Leaf(emptyStat(), content);
  d.entries.set(name, l);
  return l;
}
export function link(fs: FileSystem, path: string, leaf: Leaf): void {
  const [d, name] = parentOf(fs, path);
  d.entries.set(name, leaf);
}
export const text = (s: string): LeafContent => ({ type: 'inline', data: Buffer.from(s) });

/** A tree with a policy named `name` made of the given files. */
export function withPolicy(files: Record<string, string>, config = 'SELINUX=enforcing\nSELINUXTYPE=targeted\n', name = 'targeted'): FileSystem {
  const fs = new FileSystem(new Directory(emptyStat()));
  mkleaf(fs, '/etc/selinux/config', text(config));
  mkdir(fs, `/etc/selinux/${name}/contexts/files`);
  for (const [f, body] of Object.entries(files)) mkleaf(fs, `/etc/selinux/${name}/contexts/files/${f}`, text(body));
  return fs;
}
export const noRead = async () => {
  throw new Error('no external files here');
};
export function label(fs: FileSystem, path: string): string | undefined {
  const n = lookup(fs, Buffer.from(path, 'latin1'));
  assert.ok(n, `no ${path}`);
  return n.stat.xattrs.get(SEL)?.toString('latin1');
}
export function setLabel(fs: FileSystem, path: string, v: string): void {
  lookup(fs, Buffer.from(path, 'latin1'))!.stat.xattrs.set(SEL, Buffer.from(v));
}
/** Labels of key (latin1 path) + type from a bare file_contexts. */
export function policyOf(fc: string, extra: Record<string, string> = {}) {
  return buildPolicy({ file_contexts: Buffer.from(fc), ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, Buffer.from(v)])) });
}
export const lbl = (p: ReturnType<typeof policyOf>, path: string, t: string) => lookupLabel(p, path, t)?.toString('latin1');
