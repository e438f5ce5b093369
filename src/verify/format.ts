/** The text form of a {@link VerifyReport} (the CLI prints it; --json prints the report itself). */
import type { Candidate, KargCheck, LabelCheck, VerifyReport } from './verify.js';

function how(c: Candidate): string {
  const p = c.profiles.length ? ` = --profile ${c.profiles.join(' / ')}` : '';
  return `${c.options}${p}`;
}

function computedLines(cs: Candidate[] | undefined, tried: number | undefined, indent: string): string[] {
  const out: string[] = [];
  for (const c of cs ?? []) out.push(`${indent}computed: ${c.id ?? `error: ${c.error}`}  (${how(c)})`);
  if (tried !== undefined && tried > (cs?.length ?? 0)) out.push(`${indent}(${tried} combinations tried, none gives the karg's digest)`);
  return out;
}

function kargLines(k: KargCheck): string[] {
  const shown = k.token.length > 60 ? `${k.token.slice(0, 57)}...` : k.token;
  if (k.status === 'invalid') return [`  INVALID  ${shown}: ${k.error}`];
  if (k.status === 'match') return [`  ok       ${shown}`, ...(k.matched ? [`           image digest under ${how(k.matched)}`] : [])];
  return [`  MISMATCH ${shown}`, `           karg:     ${k.hex}`, ...computedLines(k.computed, k.tried, '           ')];
}

function labelLines(l: LabelCheck): string[] {
  const head = `${l.where} ${l.key}`;
  if (l.status === 'invalid') return [`INVALID  ${head}: ${l.error}`];
  if (l.status === 'match') return [`ok       ${head}`, ...(l.matched ? [`         image digest under ${how(l.matched)}`] : [])];
  return [`MISMATCH ${head}`, `         value:    ${l.value}`, ...computedLines(l.computed, undefined, '         ')];
}

export function formatVerifyReport(r: VerifyReport): string {
  const out: string[] = [];
  if (r.source) out.push(`image: ${r.source}`);
  for (const f of r.files) {
    out.push(`${f.path} (${f.kind === 'uki' ? 'UKI' : f.kind === 'addon' ? 'UKI addon' : 'global UKI addon'})`);
    if (f.cmdlines.length === 0) out.push('  no .cmdline section');
    for (const c of f.cmdlines) out.push(`  cmdline${c.profile !== undefined ? ` (profile ${c.profile})` : ''}: ${c.text === '' ? '(empty)' : c.text}`);
    for (const k of f.kargs) out.push(...kargLines(k));
  }
  for (const l of r.labels) out.push(...labelLines(l));
  for (const n of r.notes) out.push(`note: ${n}`);
  if (r.ok) {
    out.push('OK: every composefs karg and sealing label matches this image');
  } else {
    out.push(`FAILED: ${r.problems.length} problem(s)`);
    for (const p of r.problems) out.push(`  - ${p}`);
    if (r.files.some((f) => f.kargs.some((k) => k.status === 'mismatch')) || r.labels.some((l) => l.status === 'mismatch'))
      out.push(
        "hint: the image changed after its digest was computed (e.g. a later layer), or was sealed with other rules; `cfs compare BUILD-TIME-TREE SOURCE` names the differing paths (e.g. the bind-mounted stage against oci:DIR:REF)",
      );
  }
  return out.join('\n') + '\n';
}
