"""Judges GoMark's ports from the outside, as an SRE's tools would see them.

Usage: judge.py SERVE_OUTPUT   (the lines `gomark serve` printed: "name: address")
Environment: GOMARK__SERVER__ASSERTION_KEYS, the `kid:base64key` gomark serve was given,
to sign calls as an admin.
"""

import base64
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.request

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

# Each port's own service; the gateway's gRPC port serves health only.
OWN = {
    "gateway-grpc": None,
    "hubspot-sync": "gomark.hubspot_sync.v1.HubspotSyncService",
    "upso-cadence": "gomark.upso_cadence.v1.UpsoCadenceService",
    "orchestrator": "gomark.orchestrator.v1.OrchestratorService",
    "pipeline-tracker": "gomark.pipeline_tracker.v1.PipelineTrackerService",
}
INFRA = {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}

failures = []


def fail(message):
    failures.append(message)
    print(f"FAIL {message}")


def judge_port(name, address):
    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        own = OWN[name]
        expected = INFRA | ({own} if own else set())
        if services != expected:
            fail(f"{name}: lists {sorted(services)}, expected {sorted(expected)}")
            return
        if own is None:
            print(f"ok   {name}: {sorted(services)}")
            return
        pool = DescriptorPool(database)
        service = pool.FindServiceByName(own)
        for method in service.methods:
            # Resolving both message types proves the descriptors are complete.
            assert method.input_type.full_name and method.output_type.full_name
        print(f"ok   {name}: {own} with {len(service.methods)} RPCs, every message resolvable")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def admin_assertion():
    """A caller assertion as the services sign them (crates/platform/src/assertion.rs)."""
    kid, _, key = os.environ["GOMARK__SERVER__ASSERTION_KEYS"].split(",")[0].partition(":")
    now = int(time.time())
    claims = {"a": "judge", "r": "admin", "s": "portfolio", "iat": now, "exp": now + 60}
    signed = f"v1.{kid}.{b64url(json.dumps(claims).encode())}"
    tag = hmac.new(base64.b64decode(key), signed.encode(), hashlib.sha256).digest()
    return f"{signed}.{b64url(tag)}"


def judge_field_errors(address):
    """An invalid field comes back as INVALID_ARGUMENT with the standard google.rpc details."""
    with grpc.insecure_channel(address) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        request_type = message_factory.GetMessageClass(
            pool.FindMessageTypeByName("gomark.orchestrator.v1.CreateCompanyRequest")
        )
        response_type = message_factory.GetMessageClass(pool.FindMessageTypeByName("gomark.common.v1.Company"))
        create = channel.unary_unary(
            "/gomark.orchestrator.v1.OrchestratorService/CreateCompany",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=response_type.FromString,
        )
        try:
            create(request_type(name="", hubspot_portal_id="123"), metadata=[("x-gomark-assertion", admin_assertion())])
        except grpc.RpcError as call:
            if call.code() != grpc.StatusCode.INVALID_ARGUMENT:
                fail(f"field errors: CreateCompany with an empty name: {call.code()}, expected INVALID_ARGUMENT")
                return
            status = rpc_status.from_call(call)
            if status is None:
                fail("field errors: no grpc-status-details-bin trailer")
                return
            details = {}
            for detail in status.details:
                for kind in (error_details_pb2.BadRequest, error_details_pb2.ErrorInfo):
                    if detail.Is(kind.DESCRIPTOR):
                        decoded = kind()
                        detail.Unpack(decoded)
                        details[kind.DESCRIPTOR.name] = decoded
            fields = [v.field for v in details["BadRequest"].field_violations] if "BadRequest" in details else []
            if fields != ["name"]:
                fail(f"field errors: BadRequest names {fields}, expected ['name']")
            info = details.get("ErrorInfo")
            if info is None or info.domain != "gomark" or info.reason != "INVALID_ARGUMENT":
                fail(f"field errors: ErrorInfo is {info}")
            if fields == ["name"] and info is not None:
                print(f"ok   field errors: INVALID_ARGUMENT with BadRequest {fields} and ErrorInfo {info.reason}")
            return
        fail("field errors: CreateCompany with an empty name succeeded")


def judge_metrics(url):
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    families = list(text_string_to_metric_families(text))
    if not families:
        fail("metrics: no metric families")
    missing = [f.name for f in families if not f.documentation.strip()]
    if missing:
        fail(f"metrics: {len(missing)} families without HELP: {missing[:10]}")
    names = {f.name for f in families}
    for wanted in ["build_info", "process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"]:
        if wanted not in names:
            fail(f"metrics: no {wanted}")
    print(f"ok   metrics: {len(families)} families parsed, {len(families) - len(missing)} with HELP")


def main():
    addresses = {}
    with open(sys.argv[1]) as out:
        for line in out:
            name, _, address = line.strip().partition(": ")
            addresses[name] = address
    for name in OWN:
        if name not in addresses:
            fail(f"{name}: not printed by gomark serve")
            continue
        try:
            judge_port(name, addresses[name])
        except Exception as error:  # a judge reports, it does not crash
            fail(f"{name}: {error!r}")
    try:
        judge_field_errors(addresses["orchestrator"])
    except Exception as error:
        fail(f"field errors: {error!r}")
    try:
        judge_metrics(addresses["metrics"])
    except Exception as error:
        fail(f"metrics: {error!r}")
    if failures:
        print(f"{len(failures)} judge(s) failed")
        sys.exit(1)
    print("all judges passed")


main()
