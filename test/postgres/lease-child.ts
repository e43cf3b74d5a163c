/**
 * A node that takes a session, appends to it, says so, then waits to be killed
 * (SIGKILL: no close, no lease release). Used by the takeover test.
 *
 *   node --import tsx test/postgres/lease-child.ts <url> <schema> <sid> <events> <leaseMs>
 */
import { PgBackend } from '../../src/postgres/pg-backend.ts';
import { hooks } from '../crash/power-loss-harness.ts';

const [url, schema, sid, events, leaseMs] = process.argv.slice(2);
const backend = await PgBackend.open({ connectionString: url!, schema: schema!, hooks, nodeId: 'child-node', nodeAddress: 'http://child.invalid:4000', leaseMs: Number(leaseMs), poolSize: 3 });
await backend.loadSession(sid!);
for (let n = 1; n <= Number(events); n += 1) await backend.append({ sid: sid!, type: 'user_message_sent', data: { n } });
process.stdout.write('acknowledged\n');
setInterval(() => undefined, 60_000);
