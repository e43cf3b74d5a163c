/** Reading the Prometheus text exposition in tests. */

/** The value of one sample line (`name{labels} value`), labels exactly as written; undefined when absent. */
export function sample(text: string, name: string, labels = ''): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels === '' ? ' ' : `{${labels}} `}`));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** The names of the metric families the text declares (`# TYPE name kind`), with their kind. */
export function metricFamilies(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m !== null) out.set(m[1]!, m[2]!);
  }
  return out;
}

/** Every series name with at least one sample (`name`, `name_bucket`, `name_count`, …). */
export function seriesNames(text: string): Set<string> {
  const out = new Set<string>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    out.add(/^[^{ ]+/.exec(line)![0]);
  }
  return out;
}
