import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { loadConfig } from '../../src/server/config.ts';
import { startServer } from '../../src/server/server.ts';
import { startServe } from '../helpers/serve-process.ts';
import { SseClient } from '../helpers/sse.ts';
import { tempDir } from '../helpers/tmp.ts';
import { metricFamilies, sample } from '../helpers/prometheus.ts';
import { startOpenAiCompatibleServer } from '../helpers/openai-compatible-server.ts';

// Metric names as a scraper sees them: GET /metrics of a live server.

function post(url: string, body: unknown): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

/** Scrapes until `ready(text)` holds (a gauge that follows a connection closing), at most `tries` times. */
async function scrapeUntil(url: string, ready: (text: string) => boolean, tries = 100): Promise<string> {
  let text = '';
  for (let i = 0; i < tries; i += 1) {
    text = await scrape(url);
    if (ready(text)) return text;
    await new Promise((r) => setTimeout(r, 20));
  }
  return text;
}

test('arbor serve: process metrics unprefixed; a chat turn with the mock shows the stream, first-chunk, token, SSE and mailbox metrics', async () => {
  const { dir, cleanup } = tempDir('arbor-metrics-');
  const server = await startServe(['--data-dir', join(dir, 'data')], { ARBOR_MOCK_CHUNKS: '4', ARBOR_MOCK_CHUNK_DELAY_MS: '0' });
  try {
    const { url } = server;
    // given a fresh server: Node's default metrics carry their usual names, nothing under arbor_process_
    const fresh = await scrape(url);
    const families = metricFamilies(fresh);
    for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes']) {
      assert.ok(families.has(name), `${name} is exported`);
    }
    assert.equal(typeof sample(fresh, 'process_cpu_seconds_total'), 'number');
    assert.equal(typeof sample(fresh, 'nodejs_eventloop_lag_seconds'), 'number');
    assert.ok(![...families.keys()].some((n) => n.startsWith('arbor_process_')), 'no arbor_process_ prefix');
    // and every Arbor metric keeps the arbor_ prefix; histograms are in seconds or counts
    const own = [...families.keys()].filter((n) => !n.startsWith('process_') && !n.startsWith('nodejs_'));
    assert.ok(own.length > 20 && own.every((n) => n.startsWith('arbor_')), own.join(', '));
    assert.ok(!own.some((n) => /_(ms|milliseconds)(_|$)/.test(n)), 'no millisecond metric');
    assert.equal(sample(fresh, 'arbor_llm_streams_started_total', 'provider="mock",model="mock-echo"'), undefined);
    // when a client holds an SSE stream and a message is answered
    assert.equal((await post(`${url}/v1/sessions`, { id: 'metered' })).status, 201);
    const stream = new SseClient(`${url}/v1/sessions/metered/stream`);
    assert.equal((await stream.next())?.event, 'state');
    assert.equal((await post(`${url}/v1/sessions/metered/messages`, { content: 'hello there' })).status, 202);
    await stream.until((e) => e.event === 'assistant_response_completed');
    const text = await scrape(url);
    // then the LLM side is counted: one stream started and completed with the provider's finish reason
    const mock = 'provider="mock",model="mock-echo"';
    assert.equal(sample(text, 'arbor_llm_streams_started_total', mock), 1);
    assert.equal(sample(text, 'arbor_llm_streams_completed_total', `${mock},finish_reason="stop"`), 1);
    assert.equal(sample(text, 'arbor_llm_time_to_first_chunk_seconds_count', mock), 1);
    assert.equal(sample(text, 'arbor_llm_stream_duration_seconds_count', `${mock},outcome="completed"`), 1);
    // the mock's tokens: two words in, one per chunk out
    assert.equal(sample(text, 'arbor_llm_tokens_total', `${mock},type="input"`), 2);
    assert.equal(sample(text, 'arbor_llm_tokens_total', `${mock},type="output"`), 4);
    // the open SSE connection, and the mailboxes (idle again)
    assert.equal(sample(text, 'arbor_sse_connections'), 1);
    assert.equal(sample(text, 'arbor_sse_connections_total'), 1);
    assert.equal(sample(text, 'arbor_mailbox_depth'), 0);
    assert.equal(sample(text, 'arbor_mailbox_depth_max'), 0);
    // when the client goes away, the gauge follows
    stream.close();
    const after = await scrapeUntil(url, (t) => sample(t, 'arbor_sse_connections') === 0);
    assert.equal(sample(after, 'arbor_sse_connections'), 0);
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
});

test('a provider answering 500 counts a provider error and an interrupted stream, by status and reason', async () => {
  const fake = await startOpenAiCompatibleServer({ mode: 'http-500' });
  const { dir, cleanup } = tempDir('arbor-metrics-err-');
  const server = await startServer(loadConfig({ env: {}, overrides: { dataDir: join(dir, 'data'), port: 0, logLevel: 'silent', llm: 'openai-compatible', llmBaseUrl: fake.baseURL, llmModel: 'test-model', llmMaxRetries: 0 } }));
  try {
    assert.equal((await post(`${server.url}/v1/sessions`, { id: 'failing' })).status, 201);
    assert.equal((await post(`${server.url}/v1/sessions/failing/messages`, { content: 'hi' })).status, 202);
    await server.arbor.session('failing').idle();
    const text = await scrape(server.url);
    const labels = 'provider="openai-compatible",model="test-model"';
    assert.equal(sample(text, 'arbor_llm_streams_started_total', labels), 1);
    assert.equal(sample(text, 'arbor_llm_streams_interrupted_total', `${labels},reason="provider_error"`), 1);
    assert.equal(sample(text, 'arbor_llm_provider_errors_total', `${labels},status="500"`), 1);
    assert.equal(sample(text, 'arbor_llm_time_to_first_chunk_seconds_count', labels), undefined, 'no chunk, no first-chunk time');
  } finally {
    await server.close();
    await fake.close();
    cleanup();
  }
});

test('docs/grafana-dashboard.json parses, and every metric and label it queries is exported by a live arbor serve', async () => {
  const dashboard = JSON.parse(readFileSync(fileURLToPath(new URL('../../docs/grafana-dashboard.json', import.meta.url)), 'utf8')) as { panels: { id: number; title: string; targets: { expr: string }[] }[] };
  const titles = dashboard.panels.map((p) => p.title);
  for (const wanted of ['Appends/s', 'Ack latency p99', 'fsync', 'Streams', 'Time to first chunk', 'Tokens', 'Errors', 'Sessions', 'Event loop', 'Memory']) assert.ok(titles.includes(wanted), `panel ${wanted}`);
  assert.equal(new Set(dashboard.panels.map((p) => p.id)).size, dashboard.panels.length, 'panel ids are unique');
  const { dir, cleanup } = tempDir('arbor-dashboard-');
  const server = await startServe(['--data-dir', join(dir, 'data')], { ARBOR_MOCK_CHUNKS: '2', ARBOR_MOCK_CHUNK_DELAY_MS: '0' });
  try {
    // given a server that answered one message (so labelled series exist)
    assert.equal((await post(`${server.url}/v1/sessions`, { id: 'dash' })).status, 201);
    const stream = new SseClient(`${server.url}/v1/sessions/dash/stream`);
    assert.equal((await post(`${server.url}/v1/sessions/dash/messages`, { content: 'hi' })).status, 202);
    await stream.until((e) => e.event === 'assistant_response_completed');
    stream.close();
    const text = await scrape(server.url);
    const families = metricFamilies(text);
    let checked = 0;
    for (const panel of dashboard.panels) {
      assert.ok(panel.targets.length > 0, `${panel.title} has queries`);
      for (const { expr } of panel.targets) {
        for (const [, series, selector] of expr.matchAll(/\b((?:arbor|process|nodejs)_[a-z0-9_]+)(?:\{([^}]*)\})?/g)) {
          // then the series is a family, or a histogram's _bucket/_sum/_count
          const base = series!.replace(/_(bucket|sum|count)$/, '');
          const kind = families.get(series!) ?? (base !== series ? families.get(base) : undefined);
          assert.ok(kind !== undefined, `${panel.title}: ${series} is not exported`);
          if (base !== series && !families.has(series!)) assert.equal(kind, 'histogram', `${panel.title}: ${series}`);
          // and every label it selects on (but instance, which Prometheus adds) is one the series carries
          const lines = text.split('\n').filter((l) => l.startsWith(`${series}{`));
          for (const [, label] of (selector ?? '').matchAll(/([a-z_]+)=~?"/g)) {
            if (label === 'instance' || lines.length === 0) continue;
            assert.ok(lines.some((l) => l.includes(`${label}="`)), `${panel.title}: ${series} has no label ${label}`);
          }
          checked += 1;
        }
        // and the labels it groups by are on the series it groups
        for (const [, labels, inner] of expr.matchAll(/by \(([^)]*)\) \(rate\(([a-z0-9_]+)/g)) {
          const lines = text.split('\n').filter((l) => l.startsWith(`${inner}{`));
          if (lines.length === 0) continue;
          for (const label of labels!.split(',').map((l) => l.trim())) assert.ok(lines.some((l) => l.includes(`${label}="`)), `${panel.title}: ${inner} has no label ${label}`);
        }
      }
    }
    assert.ok(checked >= 25, `queried series checked: ${checked}`);
    // the POST route the ack-latency panel selects is the route label the server writes
    assert.ok(text.includes('arbor_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/sessions/:id/messages"}'));
  } finally {
    await server.stop('SIGKILL');
    cleanup();
  }
});
