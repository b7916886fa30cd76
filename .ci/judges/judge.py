"""Judges GoMark's ports from the outside, as an SRE's tools would see them.

Usage: judge.py SERVE_OUTPUT   (the lines `gomark serve` printed: "name: address")
"""

import sys
import urllib.request

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
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
        judge_metrics(addresses["metrics"])
    except Exception as error:
        fail(f"metrics: {error!r}")
    if failures:
        print(f"{len(failures)} judge(s) failed")
        sys.exit(1)
    print("all judges passed")


main()
