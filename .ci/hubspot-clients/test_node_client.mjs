// HubSpot's official Node client (@hubspot/api-client) against hubspot-sim.
//
// Run by .ci/hubspot-clients/run, which starts the simulator and sets HUBSPOT_SIM_URL. Every
// test uses its own token, so its own simulated portal and rate-limit budget.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { test } from 'node:test';

import { Client, Signature } from '@hubspot/api-client';

const BASE = process.env.HUBSPOT_SIM_URL;
const APP_ID = Number(process.env.HUBSPOT_SIM_APP_ID ?? '1');
const CLIENT_ID = process.env.HUBSPOT_SIM_CLIENT_ID ?? 'hubspot-sim-client-id';
const CLIENT_SECRET = process.env.HUBSPOT_SIM_CLIENT_SECRET ?? 'hubspot-sim-secret';

assert.ok(BASE, 'HUBSPOT_SIM_URL must be set (use .ci/hubspot-clients/run)');

/** An official client pointed at the simulator through its `basePath` option. */
function client(token = `node-${randomUUID().slice(0, 12)}`) {
  // numberOfApiCallRetries turns on the client's own retry decorator (5xx and 429s).
  return new Client({ accessToken: token, basePath: BASE, numberOfApiCallRetries: 6 });
}

/** The simulator's own test hooks (/_sim/...). */
async function admin(method, path, body) {
  const response = await fetch(BASE + path, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

async function portalId(token) {
  const response = await fetch(`${BASE}/_sim/portal-id`, { headers: { authorization: `Bearer ${token}` } });
  return (await response.json()).portalId;
}

function newDeal(api, name = 'Deal', extra = {}) {
  return api.crm.deals.basicApi.create({
    properties: { dealname: name, dealstage: 'appointmentscheduled', ...extra },
    associations: [],
  });
}

test('properties: create, read, update, archive, list archived', async () => {
  const api = client();
  const core = api.crm.properties.coreApi;
  const created = await core.create('deals', {
    name: 'gomark_score',
    label: 'Score',
    type: 'number',
    fieldType: 'number',
    groupName: 'dealinformation',
  });
  assert.equal(created.name, 'gomark_score');
  const updated = await core.update('deals', 'gomark_score', { label: 'GoMark score' });
  assert.equal(updated.label, 'GoMark score');
  assert.equal((await core.getByName('deals', 'gomark_score')).label, 'GoMark score');
  await core.archive('deals', 'gomark_score');
  const archived = await core.getAll('deals', true);
  assert.deepEqual(archived.results.map((p) => p.name), ['gomark_score']);
  await assert.rejects(core.getByName('deals', 'gomark_score'), (err) => err.code === 404);
});

test('property groups', async () => {
  const api = client();
  const groups = api.crm.properties.groupsApi;
  await groups.create('deals', { name: 'gomark_node', label: 'Node', displayOrder: 2 });
  await groups.update('deals', 'gomark_node', { label: 'Node fields' });
  assert.equal((await groups.getByName('deals', 'gomark_node')).label, 'Node fields');
  await groups.archive('deals', 'gomark_node');
  const names = (await groups.getAll('deals')).results.map((g) => g.name);
  assert.ok(!names.includes('gomark_node'));
});

test('pipelines, stages and their audits', async () => {
  const api = client();
  const { pipelinesApi, pipelineStagesApi, pipelineAuditsApi } = api.crm.pipelines;
  const pipeline = await pipelinesApi.create('deals', {
    label: 'Expansion',
    displayOrder: 2,
    stages: [{ label: 'Open', displayOrder: 0, metadata: { probability: '0.5' } }],
  });
  const stage = await pipelineStagesApi.create('deals', pipeline.id, {
    label: 'Won',
    displayOrder: 1,
    metadata: { probability: '1.0', isClosed: 'true' },
  });
  await pipelineStagesApi.update('deals', pipeline.id, stage.id, { label: 'Closed won', metadata: { probability: '1.0' } });
  await pipelinesApi.update('deals', pipeline.id, { label: 'Expansion 2027' });
  const stages = await pipelineStagesApi.getAll('deals', pipeline.id);
  assert.deepEqual(stages.results.map((s) => s.label), ['Open', 'Closed won']);
  const audit = await pipelineAuditsApi.getAudit('deals', pipeline.id);
  assert.deepEqual(audit.results.map((a) => a.action), ['UPDATE', 'CREATE']);
  assert.equal(audit.results[0].identifier, pipeline.id);
  // The generated stage-audit method has no pipelineId parameter although its path needs
  // one (client 14.0.1), so the stage audit goes through the client's generic request.
  const response = await api.apiRequest({
    method: 'GET',
    path: `/crm/v3/pipelines/deals/${pipeline.id}/stages/${stage.id}/audit`,
  });
  assert.equal(response.status, 200);
  assert.deepEqual((await response.json()).results.map((a) => a.action), ['UPDATE', 'CREATE']);
  await pipelinesApi.archive('deals', pipeline.id, true, true);
  assert.ok(!(await pipelinesApi.getAll('deals')).results.some((p) => p.id === pipeline.id));
});

test('deals: batch upsert, ISO datetimes', async () => {
  const api = client();
  await api.crm.properties.coreApi.create('deals', {
    name: 'ext_id',
    label: 'External id',
    type: 'string',
    fieldType: 'text',
    groupName: 'dealinformation',
    hasUniqueValue: true,
  });
  const upsert = (name) =>
    api.crm.deals.batchApi.upsert({
      inputs: [0, 1, 2].map((i) => ({
        id: `EXT-${i}`,
        idProperty: 'ext_id',
        properties: { dealname: `${name} ${i}`, dealstage: 'qualifiedtobuy' },
      })),
    });
  const first = await upsert('Acme');
  assert.equal(first.results.length, 3);
  const second = await upsert('Acme renewed');
  assert.deepEqual(first.results.map((r) => r.id).sort(), second.results.map((r) => r.id).sort());
  assert.ok(second.results.every((r) => r.properties.dealname.startsWith('Acme renewed')));
  const deal = await newDeal(api, 'Dated', { closedate: '1767225600000' });
  assert.equal(deal.properties.closedate, '2026-01-01T00:00:00.000Z');
  assert.match(deal.properties.createdate, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
});

test('deals: paging with after, and getAll', async () => {
  const api = client();
  const created = await api.crm.deals.batchApi.create({
    inputs: Array.from({ length: 25 }, (_, i) => ({ properties: { dealname: `D${i}`, dealstage: 'closedwon' }, associations: [] })),
  });
  const ids = new Set(created.results.map((d) => d.id));
  const seen = [];
  let after;
  let pages = 0;
  do {
    const page = await api.crm.deals.basicApi.getPage(10, after, undefined, undefined, undefined, false);
    seen.push(...page.results.map((d) => d.id));
    after = page.paging?.next?.after;
    pages += 1;
  } while (after);
  assert.equal(pages, 3);
  assert.deepEqual(new Set(seen), ids);
  assert.equal((await api.crm.deals.getAll()).length, 25);
});

test('search and its 10,000-result cap', async () => {
  const api = client();
  await admin('POST', '/_sim/seed-deals', { portalToken: api.config.accessToken, count: 10050, stage: 'closedwon' });
  const request = (after, limit = 100) => ({
    filterGroups: [{ filters: [{ propertyName: 'dealstage', operator: 'EQ', value: 'closedwon' }] }],
    properties: ['dealname'],
    sorts: [],
    limit,
    after,
  });
  const page = await api.crm.deals.searchApi.doSearch(request('0'));
  assert.equal(page.total, 10050);
  assert.equal(page.paging.next.after, '100');
  assert.equal((await api.crm.deals.searchApi.doSearch(request('9900'))).results.length, 100);
  await assert.rejects(api.crm.deals.searchApi.doSearch(request('10000')), (err) => {
    assert.equal(err.code, 400);
    assert.equal(err.body.category, 'VALIDATION_ERROR');
    return true;
  });
});

test('associations v4', async () => {
  const api = client();
  const deal = await newDeal(api);
  const assoc = api.crm.associations.v4.basicApi;
  const made = await assoc.createDefault('deals', deal.id, 'companies', '601');
  assert.equal(made.status, 'COMPLETE');
  const labeled = await assoc.create('deals', deal.id, 'contacts', '501', [
    { associationCategory: 'HUBSPOT_DEFINED', associationTypeId: 3 },
  ]);
  assert.equal(String(labeled.toObjectId), '501');
  const page = await assoc.getPage('deals', deal.id, 'contacts');
  assert.deepEqual(page.results.map((r) => String(r.toObjectId)), ['501']);
  assert.equal(page.results[0].associationTypes[0].typeId, 3);
  const batch = await api.crm.associations.v4.batchApi.getPage('deals', 'companies', { inputs: [{ id: deal.id }] });
  assert.equal(String(batch.results[0].to[0].toObjectId), '601');
  await assoc.archive('deals', deal.id, 'contacts', '501');
  assert.deepEqual((await assoc.getPage('deals', deal.id, 'contacts')).results, []);
});

test('rate limits: 429s are retried by the client', async () => {
  const token = `node-rl-${randomUUID().slice(0, 8)}`;
  const api = client(token);
  // Past the 100-request burst budget: TEN_SECONDLY_ROLLING 429s, retried after 10 s.
  const reads = await Promise.all(Array.from({ length: 105 }, () => api.crm.deals.basicApi.getPage(1)));
  assert.equal(reads.length, 105);
  // Past the 5-per-second search budget: "secondly" 429s, retried after 1 s.
  const searches = await Promise.all(
    Array.from({ length: 9 }, () => api.crm.deals.searchApi.doSearch({ filterGroups: [], sorts: [], properties: [], limit: 1, after: '0' })),
  );
  assert.equal(searches.length, 9);
  const stats = await admin('GET', `/_sim/stats?portalId=${await portalId(token)}`);
  assert.ok(stats.rateLimited >= 5, `expected 429s, saw ${stats.rateLimited}`);
});

test('OAuth refresh with the client tokens API, client credentials for the journal', async () => {
  const portalToken = `node-install-${randomUUID().slice(0, 8)}`;
  const refresh = `refresh-${randomUUID().slice(0, 8)}`;
  await admin('POST', '/_sim/oauth/refresh-tokens', { refreshToken: refresh, portalToken });
  const tokens = new Client({ basePath: BASE }).oauth.tokensApi;
  const issued = await tokens.create('refresh_token', undefined, undefined, CLIENT_ID, CLIENT_SECRET, refresh);
  assert.equal(issued.expiresIn, 1800);
  const api = client(issued.accessToken);
  const deal = await newDeal(api, 'Journaled');
  await api.crm.deals.basicApi.update(deal.id, { properties: { amount: '250' } });
  const portal = await portalId(portalToken);

  const response = await new Client({ basePath: BASE }).apiRequest({
    method: 'POST',
    path: '/oauth/2026-03/token',
    defaultJson: false,
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: `grant_type=client_credentials&client_id=${CLIENT_ID}&client_secret=${CLIENT_SECRET}&scope=developer.webhooks_journal.read`,
  });
  assert.equal(response.status, 200);
  const { access_token: journalToken } = await response.json();
  const app = new Client({ accessToken: journalToken, basePath: BASE });
  const read = async (path) => app.apiRequest({ method: 'GET', path });
  const earliest = await read(`/webhooks-journal/journal-local/2026-03/earliest?installPortalId=${portal}`);
  assert.equal(earliest.status, 200);
  const first = await earliest.json();
  const created = await (await fetch(first.url)).json();
  assert.equal(created[0].subscriptionType, 'deal.creation');
  assert.equal(created[0].changeSource, 'INTEGRATION');
  assert.equal(created[0].sourceId, String(APP_ID), 'OAuth writes carry the app id');
  const next = await read(`/webhooks-journal/journal-local/2026-03/offset/${first.currentOffset}/next?installPortalId=${portal}`);
  const second = await next.json();
  const changed = await (await fetch(second.url)).json();
  assert.deepEqual(changed.map((e) => [e.propertyName, e.propertyValue]), [['amount', '250']]);
  const done = await read(`/webhooks-journal/journal-local/2026-03/offset/${second.currentOffset}/next?installPortalId=${portal}`);
  assert.equal(done.status, 204);
  const bogus = await read(`/webhooks-journal/journal-local/2026-03/offset/${randomUUID()}/next?installPortalId=${portal}`);
  assert.equal(bogus.status, 404);
});

test('webhook signatures validate with Signature.isValid', async () => {
  const received = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      received.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      res.writeHead(204).end();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}/hubspot/webhooks?from=node`;
  const developer = new Client({ developerApiKey: 'developer-key', basePath: BASE });
  try {
    await developer.webhooks.settingsApi.configure(APP_ID, { targetUrl: url, throttling: { maxConcurrentRequests: 5 } });
    await developer.webhooks.subscriptionsApi.create(APP_ID, { eventType: 'deal.creation', active: true });
    await newDeal(client(), 'Signed');
    for (let i = 0; i < 200 && received.length === 0; i += 1) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    assert.ok(received.length > 0, 'no webhook arrived');
    for (const { headers, body } of received) {
      const options = {
        signature: headers['x-hubspot-signature-v3'],
        clientSecret: CLIENT_SECRET,
        requestBody: body,
        signatureVersion: 'v3',
        url,
        method: 'POST',
        timestamp: Number(headers['x-hubspot-request-timestamp']),
      };
      assert.ok(Signature.isValid(options));
      assert.ok(!Signature.isValid({ ...options, clientSecret: 'wrong' }));
    }
  } finally {
    await developer.webhooks.settingsApi.clear(APP_ID);
    server.close();
  }
});
