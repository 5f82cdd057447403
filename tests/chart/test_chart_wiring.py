"""The chart's topic -> function wiring against alphapanda.topics, broker isolation, secrets."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from alphapanda import topics
from alphapanda.events import EventType, MarketTick
from alphapanda.topics import Binding, Function

from .helmkit import NAMESPACE, REPO, Chart, Obj, Rendered

ZERODHA_CREDS = ("--set", "kite.existingSecret=alphapanda-kite")
BROKER_SETS = [["paper"], ["zerodha"], ["paper", "zerodha"], ["paper", "zerodha", "paper-replay"]]


def render_brokers(chart: Chart, brokers: list[str], *extra: str) -> Rendered:
    return chart.template("--set-json", f"brokers={json.dumps(brokers)}", *ZERODHA_CREDS, *extra)


def ksvc_name(binding: Binding) -> str:
    """The Knative Service name the chart must give a binding's function."""
    fn = binding.function.dns_name
    return f"{binding.broker}-{fn}" if binding.broker else fn


def env_of(workload: Obj) -> dict[str, Any]:
    spec = workload["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def workloads(rendered: Rendered) -> list[Obj]:
    return list(rendered.ksvcs.values()) + rendered.of_kind("Deployment")


def sinking_to(rendered: Rendered, name: str) -> list[Obj]:
    """The KafkaSources whose sink is the Knative Service `name`."""
    return [s for s in rendered.kafka_sources if s["spec"]["sink"]["ref"]["name"] == name]


@pytest.mark.parametrize("brokers", BROKER_SETS, ids=lambda b: "+".join(b))
def test_render_when_brokers_enabled_then_kafkasources_match_topics_bindings(
    chart: Chart, brokers: list[str]
) -> None:
    rendered = render_brokers(chart, brokers)
    sources_by_group: dict[str, list[Obj]] = defaultdict(list)
    for source in rendered.kafka_sources:
        sources_by_group[source["spec"]["consumerGroup"]].append(source)

    expected = topics.bindings(brokers)
    assert set(sources_by_group) == {b.consumer_group for b in expected}, "groups differ from topics.py"
    for binding in expected:
        sources = sources_by_group[binding.consumer_group]
        consumed = sorted(t for s in sources for t in s["spec"]["topics"])
        assert consumed == sorted(binding.topics), binding
        for source in sources:
            spec = source["spec"]
            assert len(spec["topics"]) == 1, "one topic per source, so each topic has its own DLQ"
            assert spec["sink"]["ref"] == {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": ksvc_name(binding),
            }
            assert ksvc_name(binding) in rendered.ksvcs
            dls = spec["delivery"]["deadLetterSink"]["ref"]
            assert dls["kind"] == "KafkaSink" and dls["apiVersion"] == "eventing.knative.dev/v1alpha1"
            assert rendered.kafka_sinks[dls["name"]]["spec"]["topic"] == topics.dlq(spec["topics"][0])


@pytest.mark.parametrize("brokers", BROKER_SETS, ids=lambda b: "+".join(b))
def test_render_when_brokers_enabled_then_every_source_retries_in_order_and_dead_letters(
    chart: Chart, brokers: list[str]
) -> None:
    rendered = render_brokers(chart, brokers)
    all_topics = set(topics.all_topics(brokers))
    assert rendered.kafka_sources
    for source in rendered.kafka_sources:
        spec = source["spec"]
        assert spec["ordering"] == "ordered"
        assert spec["initialOffset"] in {"earliest", "latest"}
        delivery = spec["delivery"]
        assert delivery["retry"] >= 1
        assert delivery["backoffPolicy"] == "exponential"
        assert delivery["backoffDelay"].startswith("PT") and delivery["timeout"].startswith("PT")
        assert "deadLetterSink" in delivery
        assert set(spec["topics"]) <= all_topics
    for sink in rendered.kafka_sinks.values():
        assert sink["spec"]["topic"] in all_topics and sink["spec"]["topic"].endswith(topics.DLQ_SUFFIX)


@pytest.mark.parametrize("brokers", BROKER_SETS, ids=lambda b: "+".join(b))
def test_render_when_topics_created_then_kafkatopics_are_exactly_all_topics(
    chart: Chart, brokers: list[str]
) -> None:
    rendered = render_brokers(chart, brokers, "--set", "kafka.topics.create=true")
    names = [t["spec"]["topicName"] for t in rendered.of_kind("KafkaTopic")]
    assert sorted(names) == sorted(topics.all_topics(brokers))
    for topic in rendered.of_kind("KafkaTopic"):
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "my-cluster"


def test_render_when_topics_not_requested_then_no_kafkatopics(chart: Chart) -> None:
    assert not chart.template().of_kind("KafkaTopic")


@pytest.mark.parametrize("brokers", [["paper"], ["paper", "zerodha"]], ids=lambda b: "+".join(b))
def test_render_when_pipeline_function_then_its_ksvc_serves_its_module_with_functions_framework(
    chart: Chart, brokers: list[str]
) -> None:
    rendered = render_brokers(chart, brokers)
    for binding in topics.bindings(brokers):
        ksvc = rendered.ksvcs[ksvc_name(binding)]
        (container,) = ksvc["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["functions-framework"]
        assert container["args"] == [
            "--source",
            f"functions/{binding.function.value}/main.py",
            "--target",
            "handle",
            "--signature-type",
            "cloudevent",
            "--port",
            "8080",
        ]
        assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
        labels = ksvc["metadata"]["labels"]
        assert labels["networking.knative.dev/visibility"] == "cluster-local"
        assert labels["alphapanda.io/broker"] == (binding.broker or "shared")
        annotations = ksvc["spec"]["template"]["metadata"]["annotations"]
        assert {"autoscaling.knative.dev/min-scale", "autoscaling.knative.dev/max-scale"} <= set(annotations)


def test_render_when_any_brokers_then_market_feed_is_one_long_running_deployment(chart: Chart) -> None:
    rendered = render_brokers(chart, ["paper", "zerodha"])
    (feed,) = rendered.of_kind("Deployment")
    assert feed["metadata"]["name"] == Function.MARKET_FEED.dns_name
    assert feed["spec"]["replicas"] == 1 and feed["spec"]["strategy"]["type"] == "Recreate"
    (container,) = feed["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["alphapanda", "feed"]
    assert Function.MARKET_FEED not in {s.function for s in topics.PIPELINE}, "the feed subscribes to nothing"
    assert not sinking_to(rendered, feed["metadata"]["name"])


@pytest.mark.parametrize(
    "brokers", [["paper", "zerodha"], ["paper", "zerodha", "paper-replay"]], ids="+".join
)
def test_render_when_several_brokers_then_no_object_references_another_brokers_names(
    chart: Chart, brokers: list[str]
) -> None:
    rendered = render_brokers(chart, brokers, "--set", "kafka.topics.create=true")
    names_of: dict[str, set[str]] = {}
    for broker in brokers:
        names = set(topics.all_topics([broker])) - set(topics.all_topics([]))  # drop the shared market topics
        names |= {b.consumer_group for b in topics.bindings([broker]) if b.broker}
        names |= {ksvc_name(b) for b in topics.bindings([broker]) if b.broker}
        names_of[broker] = names
    owned = 0
    for obj in rendered.objects:
        owner = obj["metadata"]["labels"]["alphapanda.io/broker"]
        if owner == "shared":
            continue
        owned += 1
        text = json.dumps(obj)
        for other, names in names_of.items():
            if other == owner:
                continue
            leaked = sorted(n for n in names if f'"{n}"' in text or f"{n}." in text)
            assert not leaked, f"{obj['kind']}/{obj['metadata']['name']} of {owner} names {other}'s {leaked}"
    assert owned
    for workload in workloads(rendered):
        owner = workload["metadata"]["labels"]["alphapanda.io/broker"]
        expected = ",".join(brokers) if owner == "shared" else owner
        assert env_of(workload)["ALPHAPANDA_BROKERS"] == expected


def test_render_when_several_brokers_then_workload_selectors_are_disjoint(chart: Chart) -> None:
    rendered = render_brokers(
        chart,
        ["paper", "zerodha"],
        "--set-json",
        'functions.risk_manager={"workload":"deployment","command":["x"],"subscribe":[]}',
    )
    selectors = [
        tuple(sorted(o["spec"]["selector"]["matchLabels"].items()))
        for o in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet")
    ]
    assert len(selectors) == len(set(selectors)) >= 4
    for obj in rendered.of_kind("Deployment") + rendered.of_kind("StatefulSet"):
        selector = obj["spec"]["selector"]["matchLabels"]
        assert selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()


def test_render_when_paper_only_then_nothing_of_zerodha_is_rendered(chart: Chart) -> None:
    rendered = chart.template()
    text = json.dumps(rendered.objects)
    assert "zerodha" not in text
    assert "ALPHAPANDA_KITE__" not in text
    assert "order-updates" not in text
    assert not [s for s in rendered.of_kind("Secret") if "kite" in s["metadata"]["name"]]


def test_render_when_defaults_then_the_read_api_is_served_once_over_plain_http_without_a_source(
    chart: Chart,
) -> None:
    rendered = render_brokers(chart, ["paper", "paper-2"])
    (container,) = rendered.ksvcs["api"]["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert args[args.index("--signature-type") + 1] == "http"
    assert args[args.index("--source") + 1] == "functions/api/main.py"
    assert not sinking_to(rendered, "api")
    assert not [name for name in rendered.ksvcs if name.endswith("-api")]  # shared, not per broker
    assert "networking.knative.dev/visibility" not in rendered.ksvcs["api"]["metadata"]["labels"]


HTTP_FUNCTIONS = ("--set", "functions.order_updates.enabled=true", "--set", "functions.api.enabled=true")


def test_render_when_zerodha_enabled_then_zerodha_parts_render_for_zerodha_only(chart: Chart) -> None:
    rendered = render_brokers(chart, ["paper", "zerodha"], *HTTP_FUNCTIONS)
    updates = rendered.ksvcs["order-updates"]
    assert not [name for name in rendered.ksvcs if name.endswith("-order-updates")]
    # Public: Kite's postbacks come from outside the cluster.
    assert "networking.knative.dev/visibility" not in updates["metadata"]["labels"]
    assert not sinking_to(rendered, "order-updates")
    assert not sinking_to(rendered, "api")
    with_kite = {
        w["metadata"]["name"] for w in workloads(rendered) if "ALPHAPANDA_KITE__API_KEY" in env_of(w)
    }
    assert with_kite == {"zerodha-trading-engine", "order-updates", "market-feed", "api"}
    for workload in workloads(rendered):
        env = env_of(workload)
        if "ALPHAPANDA_KITE__API_KEY" in env:
            for key in ("ALPHAPANDA_KITE__API_KEY", "ALPHAPANDA_KITE__API_SECRET"):
                assert env[key]["secretKeyRef"]["name"] == "alphapanda-kite"


def test_render_when_two_zerodha_brokers_then_one_postback_endpoint_serves_both(chart: Chart) -> None:
    # They trade through the one Kite app of `kite.*`, which posts all its orders' updates to
    # one URL: a postback endpoint per broker would leave one broker's orders without updates.
    rendered = render_brokers(chart, ["paper", "zerodha", "zerodha-2"], *HTTP_FUNCTIONS)
    assert [name for name in rendered.ksvcs if name.endswith("order-updates")] == ["order-updates"]
    env = env_of(rendered.ksvcs["order-updates"])
    assert env["ALPHAPANDA_BROKERS"] == "paper,zerodha,zerodha-2"
    assert {"zerodha-trading-engine", "zerodha-2-trading-engine"} <= set(rendered.ksvcs)


def test_notes_when_zerodha_enabled_then_they_say_where_kites_postbacks_go(chart: Chart) -> None:
    notes = chart.notes("--set-json", 'brokers=["paper","zerodha","zerodha-2"]', *ZERODHA_CREDS)
    assert "Register the order-updates service's URL as the Kite app's postback URL" in notes
    assert f"kubectl -n {NAMESPACE} get ksvc order-updates -o jsonpath='{{.status.url}}'" in notes
    assert "order-updates" not in chart.notes("--set-json", 'brokers=["paper"]')


def test_render_when_kite_roots_set_then_exactly_the_credentialed_pods_use_them(chart: Chart) -> None:
    roots = {
        "ALPHAPANDA_KITE__ROOT": "http://kite-sandbox:8000",
        "ALPHAPANDA_KITE__WS_ROOT": "ws://kite-sandbox:8001",
    }
    default = render_brokers(chart, ["paper", "zerodha"], *HTTP_FUNCTIONS)
    # By default the pods use Kite's own roots (the settings' defaults).
    assert not [w for w in workloads(default) if roots.keys() & env_of(w).keys()]
    rendered = render_brokers(
        chart,
        ["paper", "zerodha"],
        *HTTP_FUNCTIONS,
        "--set",
        f"kite.root={roots['ALPHAPANDA_KITE__ROOT']}",
        "--set",
        f"kite.wsRoot={roots['ALPHAPANDA_KITE__WS_ROOT']}",
    )
    for workload in workloads(rendered):
        env = env_of(workload)
        expected = roots if "ALPHAPANDA_KITE__API_KEY" in env else {}
        assert {k: env[k] for k in roots if k in env} == expected, workload["metadata"]["name"]


def test_render_when_credentials_given_inline_then_they_appear_only_in_secrets(chart: Chart) -> None:
    key, secret, password = "KEY-SENTINEL-7f3a", "SECRET-SENTINEL-91bc", "PASSWORD-SENTINEL-c0de"
    rendered = chart.template(
        "--set",
        "brokers={paper,zerodha}",
        "--set",
        f"kite.apiKey={key}",
        "--set",
        f"kite.apiSecret={secret}",
        "--set",
        f"redis.external.url=redis://default:{password}@redis.example:6379/0",
        "--set",
        "strategies.content=strategies: []",
    )
    assert rendered.of_kind("ConfigMap"), "a ConfigMap must exist for this check to mean anything"
    for obj in rendered.objects:
        if obj["kind"] != "Secret":
            text = json.dumps(obj)
            assert key not in text and secret not in text and password not in text, obj["metadata"]["name"]
    decoded = json.dumps(
        [
            {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
            for s in rendered.of_kind("Secret")
        ]
    )
    assert key in decoded and secret in decoded and password in decoded
    for workload in workloads(rendered):
        assert "secretKeyRef" in env_of(workload)["ALPHAPANDA_REDIS__URL"]


def test_render_when_both_workload_kinds_then_they_get_the_same_env_contract(chart: Chart) -> None:
    rendered = render_brokers(
        chart, ["paper", "zerodha"], "--set", "strategies.content=strategies: []", *HTTP_FUNCTIONS
    )
    feed_env = set(env_of(rendered.named("Deployment", "market-feed")))
    api_env = set(env_of(rendered.ksvcs["api"]))  # both shared and kite-enabled
    assert feed_env == api_env
    assert {
        "ALPHAPANDA_BROKERS",
        "ALPHAPANDA_KAFKA__BOOTSTRAP_SERVERS",
        "ALPHAPANDA_REDIS__URL",
        "ALPHAPANDA_STRATEGIES_FILE",
        "ALPHAPANDA_KITE__API_KEY",
        "ALPHAPANDA_KITE__API_SECRET",
        "OTEL_SERVICE_NAME",
        "OTEL_RESOURCE_ATTRIBUTES",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    } <= feed_env


def test_render_when_function_added_in_values_then_it_is_wired_without_template_changes(
    chart: Chart, values_file: Callable[[dict[str, Any]], str]
) -> None:
    matcher = {"brokerKinds": ["paper"], "subscribe": ["market.{asset_class}.ticks"]}
    extra = {"functions": {"order_matcher": matcher}}
    rendered = render_brokers(chart, ["paper", "zerodha"], "-f", values_file(extra))
    assert "paper-order-matcher" in rendered.ksvcs and "zerodha-order-matcher" not in rendered.ksvcs
    sources = sinking_to(rendered, "paper-order-matcher")
    # The group a future topics.Subscription(ORDER_MATCHER, Scope.BROKER, ...) would name for paper.
    assert {s["spec"]["consumerGroup"] for s in sources} == {"alphapanda-paper-order-matcher"}
    assert sorted(t for s in sources for t in s["spec"]["topics"]) == sorted(
        topics.market_ticks(a) for a in topics.ASSET_CLASSES
    )


def test_render_when_helm_test_enabled_then_its_pod_posts_a_valid_tick_to_a_rendered_function(
    chart: Chart,
) -> None:
    rendered = chart.template()
    (pod,) = rendered.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TARGET_URL"] == "http://strategy-runner.alphapanda.svc.cluster.local"
    assert "strategy-runner" in rendered.ksvcs
    assert env["EVENT_TYPE"] == EventType.MARKET_TICK.value
    tick = MarketTick.model_validate_json(env["EVENT_DATA"])  # the body the function will decode
    assert topics.market_ticks(tick.asset_class) in topics.all_topics([])
    script = container["command"][-1]
    for header in (
        "ce-specversion",
        "ce-id",
        "ce-type",
        "ce-source",
        "ce-correlationid",
        "ce-causationid",
        "ce-partitionkey",
    ):
        assert f'"{header}"' in script


def served_modules(rendered: Rendered) -> set[str]:
    """The functions/<module> directories the rendered Knative Services run."""
    served = set()
    for ksvc in rendered.ksvcs.values():
        args = ksvc["spec"]["template"]["spec"]["containers"][0].get("args", [])
        if "--source" in args:
            served.add(args[args.index("--source") + 1].split("/")[1])
    return served


def test_render_when_defaults_then_every_function_module_in_the_repo_is_served(chart: Chart) -> None:
    modules = {p.parent.name for p in (REPO / "functions").glob("*/main.py")}
    assert modules, "functions/*/main.py should exist"
    served = served_modules(render_brokers(chart, ["paper", "zerodha"]))
    assert modules <= served, f"enable these in values.yaml functions: {sorted(modules - served)}"


def test_render_when_defaults_then_every_served_module_exists_in_the_repo(chart: Chart) -> None:
    served = served_modules(render_brokers(chart, ["paper", "zerodha"]))
    missing = sorted(m for m in served if not (REPO / "functions" / m / "main.py").is_file())
    assert not missing, f"the chart deploys functions with no code: {missing}"
