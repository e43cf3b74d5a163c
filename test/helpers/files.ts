import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

/** Every file under `dir` (recursively) whose bytes contain `marker`, relative to `dir`, sorted. */
export function filesContaining(dir: string, marker: string): string[] {
  const out: string[] = [];
  const needle = Buffer.from(marker, 'utf8');
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (readFileSync(p).includes(needle)) out.push(p.slice(dir.length + 1));
    }
  };
  walk(dir);
  return out.sort();
}
