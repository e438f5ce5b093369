import { PROFILES } from '../profiles.js';

/** One line per profile, for --help. */
export function profilesHelp(): string {
  const lines = PROFILES.map((p) => `  ${p.name.padEnd(18)} ${p.newest ? '[newest] ' : ''}${p.summary}`);
  lines.push(`  ${'bootc'.padEnd(18)} = bootc-1.16.4 (the newest bootc release whose tag was read)`);
  return lines.join('\n');
}
