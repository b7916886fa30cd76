"""HubSpot's official Python client (hubspot-api-client) against hubspot-sim.

Run by .ci/hubspot-clients/run, which starts the simulator and sets HUBSPOT_SIM_URL. Every
test uses its own token, so its own simulated portal and rate-limit budget.
"""

import json
import os
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from urllib3.util.retry import Retry

from hubspot import HubSpot
from hubspot.crm.associations.v4 import ApiException as AssociationsApiException
from hubspot.crm.deals import (
    ApiException as DealsApiException,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.pipelines import (
    PipelineInput,
    PipelinePatchInput,
    PipelineStageInput,
    PipelineStagePatchInput,
)
from hubspot.crm.properties import (
    ApiException as PropertiesApiException,
    OptionInput,
    PropertyCreate,
    PropertyGroupCreate,
    PropertyGroupUpdate,
    PropertyUpdate,
)
from hubspot.utils.signature import Signature
from hubspot.webhooks import SettingsChangeRequest, SubscriptionCreateRequest, ThrottlingSettings

BASE = os.environ["HUBSPOT_SIM_URL"]
APP_ID = int(os.environ.get("HUBSPOT_SIM_APP_ID", "1"))
CLIENT_ID = os.environ.get("HUBSPOT_SIM_CLIENT_ID", "hubspot-sim-client-id")
CLIENT_SECRET = os.environ.get("HUBSPOT_SIM_CLIENT_SECRET", "hubspot-sim-secret")


def retry():
    # The client's own retry middleware (urllib3): 429s and 5xx, every method.
    return Retry(total=8, backoff_factor=0.5, status_forcelist=[429, 502, 503], allowed_methods=None)


def client(token=None):
    """An official client pointed at the simulator through its `host` option."""
    token = token or f"py-{uuid.uuid4().hex[:12]}"
    return HubSpot(access_token=token, host=BASE, base_url=BASE, retry=retry())


def admin(method, path, body=None):
    """The simulator's own test hooks (/_sim/...)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
        return json.loads(text) if text else None


def portal_id(api):
    request = urllib.request.Request(BASE + "/_sim/portal-id", headers={"Authorization": f"Bearer {api.access_token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["portalId"]


def new_deal(api, name="Deal", stage="appointmentscheduled", **extra):
    properties = {"dealname": name, "dealstage": stage, **extra}
    return api.crm.deals.basic_api.create(SimplePublicObjectInputForCreate(properties=properties))


# ----- properties and groups ------------------------------------------------------------


def test_properties_crud_and_archived_true():
    api = client()
    core = api.crm.properties.core_api
    created = core.create(
        "deals",
        PropertyCreate(
            name="gomark_tier",
            label="Tier",
            type="enumeration",
            field_type="select",
            group_name="dealinformation",
            options=[OptionInput(label="Gold", value="gold", display_order=0, hidden=False)],
        ),
    )
    assert created.name == "gomark_tier" and created.options[0].value == "gold"
    updated = core.update("deals", "gomark_tier", PropertyUpdate(label="Customer tier"))
    assert updated.label == "Customer tier"
    assert core.get_by_name("deals", "gomark_tier", archived=False).label == "Customer tier"
    core.archive("deals", "gomark_tier")
    # The client sends archived=True (Python's spelling); HubSpot accepts it.
    archived = core.get_all("deals", archived=True).results
    assert [p.name for p in archived] == ["gomark_tier"]
    assert "gomark_tier" not in [p.name for p in core.get_all("deals").results]
    with pytest.raises(PropertiesApiException) as error:
        core.get_by_name("deals", "gomark_tier")
    assert error.value.status == 404


def test_property_groups():
    api = client()
    groups = api.crm.properties.groups_api
    groups.create("deals", PropertyGroupCreate(name="gomark_extra", label="Extra", display_order=3))
    groups.update("deals", "gomark_extra", PropertyGroupUpdate(label="Extra fields"))
    assert groups.get_by_name("deals", "gomark_extra").label == "Extra fields"
    groups.archive("deals", "gomark_extra")
    assert "gomark_extra" not in [g.name for g in groups.get_all("deals").results]
    # This client version's group list takes no `archived`; the query form is checked directly.
    archived = api.api_request({"method": "GET", "path": "/crm/v3/properties/deals/groups", "qs": {"archived": True}})
    assert archived.status_code == 200
    assert "gomark_extra" in [g["name"] for g in archived.json()["results"]]


# ----- pipelines, stages and audits -----------------------------------------------------


def test_pipelines_stages_and_audits():
    api = client()
    pipelines = api.crm.pipelines.pipelines_api
    stages = api.crm.pipelines.pipeline_stages_api
    pipeline = pipelines.create(
        "deals",
        PipelineInput(
            label="Renewals",
            display_order=1,
            stages=[PipelineStageInput(label="Open", display_order=0, metadata={"probability": "0.5"})],
        ),
    )
    assert [s.label for s in pipeline.stages] == ["Open"]
    stage = stages.create(
        "deals",
        pipeline.id,
        PipelineStageInput(label="Won", display_order=1, metadata={"probability": "1.0", "isClosed": "true"}),
    )
    stages.update("deals", pipeline.id, stage.id, PipelineStagePatchInput(label="Closed won", metadata={"probability": "1.0"}))
    pipelines.update("deals", pipeline.id, PipelinePatchInput(label="Renewals 2027"))
    assert [s.label for s in stages.get_all("deals", pipeline.id).results] == ["Open", "Closed won"]
    audit = api.crm.pipelines.pipeline_audits_api.get_audit("deals", pipeline.id).results
    assert [a.action for a in audit] == ["UPDATE", "CREATE"]
    assert audit[0].identifier == pipeline.id
    # The client's stage-audit method leaves {pipelineId} unfilled in its path (a codegen bug
    # in hubspot-api-client 12.0.0), so the stage audit is read through the client's generic
    # request helper.
    response = api.api_request({"method": "GET", "path": f"/crm/v3/pipelines/deals/{pipeline.id}/stages/{stage.id}/audit"})
    assert response.status_code == 200
    assert [a["action"] for a in response.json()["results"]] == ["UPDATE", "CREATE"]
    pipelines.archive("deals", pipeline.id)
    assert pipeline.id not in [p.id for p in pipelines.get_all("deals").results]
    archived = api.api_request({"method": "GET", "path": "/crm/v3/pipelines/deals", "qs": {"archived": True}})
    assert pipeline.id in [p["id"] for p in archived.json()["results"]]


# ----- deals ---------------------------------------------------------------------------


def test_deals_batch_upsert_and_iso_dates():
    api = client()
    api.crm.properties.core_api.create(
        "deals",
        PropertyCreate(name="ext_id", label="External id", type="string", field_type="text", group_name="dealinformation", has_unique_value=True),
    )

    def upsert(name):
        inputs = [
            SimplePublicObjectBatchInputUpsert(id=f"EXT-{i}", id_property="ext_id", properties={"dealname": f"{name} {i}", "dealstage": "qualifiedtobuy"})
            for i in range(3)
        ]
        return api.crm.deals.batch_api.upsert(BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs))

    first = upsert("Acme")
    assert first.status == "COMPLETE" and len(first.results) == 3
    second = upsert("Acme renewed")
    assert sorted(r.id for r in first.results) == sorted(r.id for r in second.results)
    assert all(r.properties["dealname"].startswith("Acme renewed") for r in second.results)
    deal = new_deal(api, closedate="1767225600000")
    # Datetimes as HubSpot returns them: ISO-8601 (epoch ms accepted on input).
    assert deal.properties["closedate"] == "2026-01-01T00:00:00.000Z"
    assert deal.properties["createdate"].endswith("Z") and "T" in deal.properties["createdate"]
    updated = api.crm.deals.basic_api.update(deal.id, SimplePublicObjectInput(properties={"amount": "120"}))
    assert updated.properties["amount"] == "120"


def test_deals_paging_with_after():
    api = client()
    batch = BatchInputSimplePublicObjectBatchInputForCreate(
        inputs=[SimplePublicObjectInputForCreate(properties={"dealname": f"D{i}", "dealstage": "closedwon"}) for i in range(25)]
    )
    created = api.crm.deals.batch_api.create(batch)
    ids = {d.id for d in created.results}
    seen, after, pages = [], None, 0
    while True:
        page = api.crm.deals.basic_api.get_page(limit=10, after=after, archived=False)
        seen.extend(d.id for d in page.results)
        pages += 1
        if page.paging is None or page.paging.next is None:
            break
        after = page.paging.next.after
    assert pages == 3 and set(seen) == ids and len(seen) == 25
    assert {d.id for d in api.crm.deals.get_all()} == ids


def test_search_and_its_10000_cap():
    api = client()
    admin("POST", "/_sim/seed-deals", {"portalToken": api.access_token, "count": 10_050, "stage": "closedwon"})
    search = api.crm.deals.search_api

    def request(after, limit=100):
        flt = Filter(property_name="dealstage", operator="EQ", value="closedwon")
        return PublicObjectSearchRequest(filter_groups=[FilterGroup(filters=[flt])], limit=limit, after=after, properties=["dealname"])

    page = search.do_search(request(0))
    assert page.total == 10_050 and len(page.results) == 100 and page.paging.next.after == "100"
    last = search.do_search(request(9_900))
    assert len(last.results) == 100
    with pytest.raises(DealsApiException) as error:
        search.do_search(request(10_000))
    assert error.value.status == 400
    assert json.loads(error.value.body)["category"] == "VALIDATION_ERROR"


# ----- associations --------------------------------------------------------------------


def test_associations_v4():
    api = client()
    deal = new_deal(api)
    assoc = api.crm.associations.v4.basic_api
    result = assoc.create_default("deals", deal.id, "contacts", "501")
    assert result.status == "COMPLETE"
    page = assoc.get_page("deals", deal.id, "contacts")
    assert [r.to_object_id for r in page.results] == ["501"] or [r.to_object_id for r in page.results] == [501]
    assert page.results[0].association_types[0].type_id == 3
    assoc.archive("deals", deal.id, "contacts", "501")
    assert assoc.get_page("deals", deal.id, "contacts").results == []
    with pytest.raises(AssociationsApiException) as error:
        assoc.create_default("deals", "1", "contacts", "2")
    assert error.value.status == 404


# ----- rate limits ---------------------------------------------------------------------


def test_rate_limit_429s_are_retried_by_the_client():
    api = client()
    deals = api.crm.deals.basic_api
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: deals.get_page(limit=1), range(130)))
    assert len(results) == 130
    stats = admin("GET", f"/_sim/stats?portalId={portal_id(api)}")
    # More than the budget was sent: the simulator answered 429s, the client retried them.
    assert stats["rateLimited"] > 0


# ----- journal -------------------------------------------------------------------------


def test_journal_reads_with_client_credentials():
    api = client()
    portal = portal_id(api)
    deal = new_deal(api, name="Journaled")
    api.crm.deals.basic_api.update(deal.id, SimplePublicObjectInput(properties={"dealstage": "closedwon"}))
    # Client credentials (journal scopes) through the client's generic request helper: its
    # generated OAuth API has no `scope` parameter.
    access = client_credentials_token("developer.webhooks_journal.read")
    app = HubSpot(access_token=access, base_url=BASE)
    earliest = app.api_request({"method": "GET", "path": f"/webhooks-journal/journal-local/2026-03/earliest?installPortalId={portal}"})
    assert earliest.status_code == 200
    entry = earliest.json()
    events = json.loads(urllib.request.urlopen(entry["url"], timeout=10).read())
    assert events[0]["subscriptionType"] == "deal.creation" and events[0]["changeSource"] == "INTEGRATION"
    following = app.api_request({"method": "GET", "path": f"/webhooks-journal/journal-local/2026-03/offset/{entry['currentOffset']}/next?installPortalId={portal}"})
    assert following.status_code == 200
    change = json.loads(urllib.request.urlopen(following.json()["url"], timeout=10).read())
    assert [(e["propertyName"], e["propertyValue"]) for e in change] == [("dealstage", "closedwon")]
    latest = app.api_request({"method": "GET", "path": f"/webhooks-journal/journal-local/2026-03/offset/{following.json()['currentOffset']}/next?installPortalId={portal}"})
    assert latest.status_code == 204
    # A portal token is not a client-credentials token.
    assert api.api_request({"method": "GET", "path": "/webhooks-journal/journal-local/2026-03/latest"}).status_code == 403


def client_credentials_token(scopes):
    response = HubSpot(base_url=BASE).api_request(
        {
            "method": "POST",
            "path": "/oauth/2026-03/token",
            "default_json": False,
            "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            "body": f"grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&scope={scopes}",
        }
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer" and scopes in body["scopes"]
    return body["access_token"]


def test_oauth_refresh_with_the_client_tokens_api():
    portal_token = f"py-install-{uuid.uuid4().hex[:8]}"
    refresh = f"refresh-{uuid.uuid4().hex[:8]}"
    admin("POST", "/_sim/oauth/refresh-tokens", {"refreshToken": refresh, "portalToken": portal_token})
    tokens = HubSpot(host=BASE).oauth.tokens_api
    issued = tokens.create(grant_type="refresh_token", refresh_token=refresh, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    assert issued.refresh_token == refresh and issued.expires_in == 1800
    api = client(issued.access_token)
    new_deal(api, name="Via OAuth")
    assert portal_id(client(portal_token)) == portal_id(api)
    assert [d.properties["dealname"] for d in client(portal_token).crm.deals.get_all()] == ["Via OAuth"]


# ----- webhook signatures --------------------------------------------------------------


def test_webhook_signatures_validate_with_the_client_helper():
    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.headers, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hubspot/webhooks?source=sim"
    try:
        developer = HubSpot(api_key="developer-key", host=BASE)
        developer.webhooks.settings_api.configure(
            APP_ID, SettingsChangeRequest(target_url=url, throttling=ThrottlingSettings(max_concurrent_requests=5))
        )
        developer.webhooks.subscriptions_api.create(APP_ID, SubscriptionCreateRequest(event_type="deal.creation", active=True))
        api = client()
        new_deal(api, name="Signed")
        deadline = time.time() + 10
        while not received and time.time() < deadline:
            time.sleep(0.05)
        assert received, "no webhook arrived"
        for headers, body in received:
            assert Signature.is_valid(
                signature=headers["X-HubSpot-Signature-v3"],
                client_secret=CLIENT_SECRET,
                request_body=body.decode("utf-8"),
                http_uri=url,
                signature_version="v3",
                timestamp=headers["X-HubSpot-Request-Timestamp"],
            )
            assert not Signature.is_valid(
                signature=headers["X-HubSpot-Signature-v3"],
                client_secret="wrong",
                request_body=body.decode("utf-8"),
                http_uri=url,
                signature_version="v3",
                timestamp=headers["X-HubSpot-Request-Timestamp"],
            )
        events = [e for _, body in received for e in json.loads(body)]
        assert any(e["subscriptionType"] == "deal.creation" and e["changeSource"] == "INTEGRATION" for e in events)
    finally:
        HubSpot(api_key="developer-key", host=BASE).webhooks.settings_api.clear(APP_ID)
        server.shutdown()
