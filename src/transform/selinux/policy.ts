/**
 * Reading the policy from the tree (composefs-rs v0.9.0 crates/composefs-boot/src/selabel.rs).
 *
 * Policy: /etc/selinux/config names the policy (first line containing `=` whose trimmed key is
 * `SELINUXTYPE`, ASCII case-insensitively); `/etc/selinux/<name>/contexts/files/` supplies
 * `file_contexts` (mandatory), `.local`, `.homedirs` (concatenated in that order) and the
 * substitution files `.subs`, `.subs_dist` (a later alias definition replaces an earlier one).
 * `.bin` files are never read. Every line `REGEX [-T] CONTEXT` becomes the pattern
 * `^(REGEX)T$` (or `^(REGEX).$`) matched against `path bytes + type byte`; the LAST matching
 * line wins; `<<none>>` or no match removes `security.selinux`.
 */
import type { Directory, FileSystem, Leaf } from '../../tree/tree.js';
import { SelabelError } from './errors.js';
import { Matcher, compilePattern } from './matcher.js';
import { rustLines, rustSplitWhitespace, rustTrim } from './rust-text.js';

export interface Policy {
  /** Substitutions: alias path -> original path (latin1 keys of UTF-8 bytes). */
  aliases: Map<string, string>;
  /** Context per pattern, index 0 = last line; undefined = `<<none>>`. */
  contexts: (Buffer | undefined)[];
  matcher: Matcher;
}

/** Parses file_contexts-style text into composed patterns and contexts (file order). */
function parseSpecFile(buf: Buffer, what: string, regexps: string[], contexts: string[], origins: string[] = []): void {
  let nr = 0;
  for (const line of rustLines(buf, what)) {
    const lineNr = ++nr;
    const parts = rustSplitWhitespace(line);
    if (parts.length === 0 || parts[0].startsWith('#')) continue;
    const regex = parts[0];
    if (parts.length < 2) throw new SelabelError(`${what} line ${lineNr}: missing separator after regex`);
    const next = parts[1];
    let used = 2;
    if (next.startsWith('-')) {
      const ifmt = next.slice(1);
      if (!['b', 'c', 'd', 'p', 'l', 's', '-'].includes(ifmt)) throw new SelabelError(`${what} line ${lineNr}: invalid type code -${ifmt}`);
      if (parts.length < 3) throw new SelabelError(`${what} line ${lineNr}: missing context field`);
      regexps.push(`^(${regex})${ifmt}$`);
      origins.push(`${what} line ${lineNr}`);
      contexts.push(parts[2]);
      used = 3;
    } else {
      regexps.push(`^(${regex}).$`);
      origins.push(`${what} line ${lineNr}`);
      contexts.push(next);
    }
    if (parts.length > used) throw new SelabelError(`${what} line ${lineNr}: trailing data`);
  }
}

/** Parses a .subs file into `aliases` (later definitions replace earlier ones). */
function parseSubsFile(buf: Buffer, what: string, aliases: Map<string, string>): void {
  let nr = 0;
  for (const line of rustLines(buf, what)) {
    const lineNr = nr++;
    const parts = rustSplitWhitespace(line);
    if (parts.length === 0 || parts[0].startsWith('#')) continue;
    if (parts.length < 2) throw new SelabelError(`${what}: ${lineNr}: missing original path`);
    if (parts.length > 2) throw new SelabelError(`${what}: ${lineNr}: trailing data`);
    aliases.set(Buffer.from(parts[0], 'utf8').toString('latin1'), Buffer.from(parts[1], 'utf8').toString('latin1'));
  }
}

/** composefs-rs `parse_config`: the SELINUXTYPE value, or undefined. */
export function parseConfig(buf: Buffer): string | undefined {
  for (const line of rustLines(buf, '/etc/selinux/config')) {
    const eq = line.indexOf('=');
    if (eq < 0) continue;
    if (asciiLower(rustTrim(line.slice(0, eq))) === 'selinuxtype') return rustTrim(line.slice(eq + 1));
  }
  return undefined;
}

function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** Builds a policy from already-read file contents (name -> bytes; absent = undefined). */
export function buildPolicy(files: { [name: string]: Buffer | undefined }): Policy {
  const regexps: string[] = [];
  const ctx: string[] = [];
  const origins: string[] = [];
  for (const suffix of ['', '.local', '.homedirs']) {
    const name = `file_contexts${suffix}`;
    const b = files[name];
    if (b) parseSpecFile(b, `SELinux spec file ${name}`, regexps, ctx, origins);
    else if (suffix === '') throw new SelabelError('SELinux policy is missing mandatory file_contexts file');
  }
  const aliases = new Map<string, string>();
  for (const suffix of ['.subs', '.subs_dist']) {
    const name = `file_contexts${suffix}`;
    const b = files[name];
    if (b) parseSubsFile(b, `SELinux subs file ${name}`, aliases);
  }
  regexps.reverse();
  ctx.reverse();
  origins.reverse();
  const patterns = regexps.map((r, i) => {
    try {
      return compilePattern(r);
    } catch (e) {
      if (e instanceof SelabelError) throw new SelabelError(`${origins[i]}: ${e.message}`);
      throw e;
    }
  });
  return {
    aliases,
    contexts: ctx.map((c) => (c === '<<none>>' ? undefined : Buffer.from(c, 'utf8'))),
    matcher: new Matcher(patterns),
  };
}

/** The label for a path (latin1 path bytes) and type byte; undefined = remove the label. */
export function lookupLabel(policy: Policy, path: string, ifmt: string): Buffer | undefined {
  const i = policy.matcher.lookup(path + ifmt);
  return i < 0 ? undefined : policy.contexts[i];
}

/** Reads a regular file's content (the boot transform's reader). */
export type PolicyReader = (path: Buffer, leaf: Leaf) => Promise<Buffer | undefined>;

/** composefs-rs `Directory::get_directory_opt`: Rust Path components, relative to `dir`. */
function getDirectoryOpt(dir: Directory, pathname: string): Directory | undefined {
  const comps = pathComponents(pathname);
  let cur = dir;
  for (const c of comps) {
    if (c === '.' || c === '..') throw new SelabelError(`Invalid filename ${JSON.stringify(pathname)}`);
    const e = cur.entries.get(c);
    if (!e) return undefined;
    if (e.kind !== 'dir') throw new SelabelError(`Directory entry ${JSON.stringify(c)} is not a subdirectory`);
    cur = e;
  }
  return cur;
}

/** Rust `Path::components()` minus RootDir: repeated `/` and interior `.` vanish; a leading `.` stays. */
function pathComponents(p: string): string[] {
  const parts = p.split('/');
  const out: string[] = [];
  parts.forEach((c, i) => {
    if (c === '') return;
    if (c === '.' && !(i === 0)) return;
    out.push(c);
  });
  return out;
}

async function openFile(dir: Directory, name: string, dirPath: string, read: PolicyReader): Promise<Buffer | undefined> {
  const e = dir.entries.get(name);
  if (!e) return undefined;
  if (e.kind === 'dir') throw new SelabelError(`${JSON.stringify(name)} is a directory`);
  const c = e.content;
  switch (c.type) {
    case 'inline':
      return c.data;
    case 'sparse':
      return undefined;
    case 'external':
    case 'external-no-verity': {
      const b = await read(Buffer.from(`${dirPath}/${name}`, 'latin1'), e);
      if (!b) throw new SelabelError(`cannot read ${dirPath}/${name}`);
      return b;
    }
    default:
      throw new SelabelError(`${JSON.stringify(name)} is not a regular file`);
  }
}

/**
 * Reads the policy from the tree like composefs-rs `selabel` (tree variant). Returns undefined
 * when the tree has no policy (no /etc/selinux, no config, or no SELINUXTYPE line): then
 * `security.selinux` must be stripped everywhere (relabel.ts `stripSelinux`).
 */
export async function loadPolicy(fs: FileSystem, read: PolicyReader): Promise<Policy | undefined> {
  const etcSelinux = getDirectoryOpt(fs.root, 'etc/selinux');
  if (!etcSelinux) return undefined;
  const config = await openFile(etcSelinux, 'config', '/etc/selinux', read);
  if (!config) return undefined;
  const name = parseConfig(config);
  if (name === undefined) return undefined;
  const nameKeyStr = Buffer.from(name, 'utf8').toString('latin1');
  const files: { [n: string]: Buffer | undefined } = {};
  for (const f of ['file_contexts', 'file_contexts.local', 'file_contexts.homedirs', 'file_contexts.subs', 'file_contexts.subs_dist']) {
    const pdir = getDirectoryOpt(etcSelinux, nameKeyStr);
    if (!pdir) throw new SelabelError(`Directory entry ${JSON.stringify(name)} does not exist (/etc/selinux/${name})`);
    const files_ = getDirectoryOpt(pdir, 'contexts/files');
    if (!files_) throw new SelabelError(`/etc/selinux/${name}/contexts/files does not exist`);
    files[f] = await openFile(files_, f, `/etc/selinux/${nameKeyStr}/contexts/files`, read);
    if (f === 'file_contexts' && !files[f]) throw new SelabelError('SELinux policy is missing mandatory file_contexts file');
  }
  return buildPolicy(files);
}
