"""helm lint, helm template for the supported value sets, schema validity, and bad values."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from .helmkit import CHART, Chart, Validator

ZERODHA_CREDS = ("--set", "kite.existingSecret=alphapanda-kite")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

# Every way a user passes value sets: the brokers forms the README documents, the ci files
# skaffold's profiles use, external Redis and Strimzi topics.
VALUE_SETS: dict[str, tuple[str, ...]] = {
    "paper_only_defaults": (),
    "paper_and_zerodha_as_list": ("--set", "brokers={paper,zerodha}", *ZERODHA_CREDS),
    "paper_and_zerodha_as_comma_string": ("--set", "brokers=paper\\,zerodha", *ZERODHA_CREDS),
    "paper_and_zerodha_with_set_json": ("--set-json", 'brokers=["paper","zerodha"]', *ZERODHA_CREDS),
    "dev_values_file": ("-f", str(CHART / "ci" / "dev-values.yaml")),
    "zerodha_sandbox_values_file": ("-f", str(CHART / "ci" / "zerodha-sandbox-values.yaml")),
    "external_redis": ("--set", "redis.external.url=redis://redis.example:6379/0"),
    "external_redis_existing_secret": ("--set", "redis.external.existingSecret=my-redis"),
    "strimzi_topics": (
        "--set",
        "brokers={paper,zerodha,paper-replay}",
        "--set",
        "kafka.topics.create=true",
        *ZERODHA_CREDS,
    ),
    "strategies_and_inline_kite_credentials": (
        "--set",
        "brokers={paper,zerodha}",
        "--set",
        "strategies.content=strategies: []",
        "--set",
        "kite.apiKey=key",
        "--set",
        "kite.apiSecret=secret",
    ),
    "otel_disabled_no_tests": ("--set", "otel.enabled=false", "--set", "tests.enabled=false"),
    "kite_sandbox": ("--set", "brokers={paper,zerodha}", "--set", "kiteSandbox.enabled=true"),
}


def test_lint_when_default_values_then_chart_passes_strict_lint(chart: Chart) -> None:
    done = chart.lint()
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values_name", ["dev-values.yaml", "zerodha-sandbox-values.yaml"])
def test_lint_when_ci_values_file_then_chart_passes_strict_lint(chart: Chart, values_name: str) -> None:
    done = chart.lint("-f", str(CHART / "ci" / values_name))
    assert done.returncode == 0, done.stdout + done.stderr


def test_lint_when_value_key_misspelt_then_lint_fails_on_the_schema(chart: Chart) -> None:
    done = chart.lint("--set", "redis.persistance.size=2Gi")
    assert done.returncode != 0
    assert "additional properties 'persistance' not allowed" in done.stdout + done.stderr


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_render_when_value_set_supported_then_every_object_matches_its_schema(
    chart: Chart, validator: Validator, name: str
) -> None:
    rendered = chart.template(*VALUE_SETS[name])
    assert rendered.objects
    errors = [e for obj in rendered.objects for e in validator.errors(obj)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_render_when_value_set_supported_then_names_and_labels_are_kubernetes_safe(
    chart: Chart, name: str
) -> None:
    rendered = chart.template(*VALUE_SETS[name])
    for obj in rendered.objects:
        meta = obj["metadata"]
        if obj["kind"] != "KafkaTopic":  # KafkaTopic names may hold dots; they are DNS subdomains
            assert DNS_LABEL.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
        labels = meta["labels"]
        for key in (
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/component",
            "app.kubernetes.io/managed-by",
            "alphapanda.io/broker",
        ):
            assert key in labels, f"{obj['kind']}/{meta['name']} lacks label {key}"


@pytest.mark.parametrize(
    "form",
    [
        ("--set", "brokers={paper,zerodha}"),
        ("--set", "brokers=paper\\,zerodha"),
        ("--set", "brokers=paper\\, zerodha"),
        ("--set-json", 'brokers=["paper","zerodha"]'),
        ("--set-json", 'brokers="paper,zerodha"'),
    ],
    ids=["list", "comma_string", "comma_string_with_space", "set_json_list", "set_json_string"],
)
def test_render_when_brokers_given_in_any_supported_form_then_output_is_identical(
    chart: Chart, values_file: Callable[[dict[str, Any]], str], form: tuple[str, ...]
) -> None:
    reference = chart.template("-f", values_file({"brokers": ["paper", "zerodha"]}), *ZERODHA_CREDS)
    assert chart.template(*form, *ZERODHA_CREDS) == reference


def test_render_when_brokers_set_with_plain_comma_then_helm_reports_a_parse_error(chart: Chart) -> None:
    # Documented limitation of --set (README and NOTES show the working forms).
    assert 'key "zerodha" has no value' in chart.template_error("--set", "brokers=paper,zerodha")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--set", "brokers={paper,ib}"),
            'broker "ib" is of no known kind: its name must start with one of paper, zerodha',
        ),
        (("--set", "brokers=ib"), 'broker "ib" is of no known kind'),
        (("--set-json", "brokers=[]"), "brokers: at least one broker is required"),
        (("--set", "brokers="), "brokers: at least one broker is required"),
        (("--set", "brokers=\\,"), "brokers: at least one broker is required"),
        (("--set", "brokers=Paper"), 'broker name "Paper" is invalid'),
        (("--set", "brokers=paper_2"), 'broker name "paper_2" is invalid'),
        (("--set", "brokers=paper\\,paper"), 'broker "paper" is named twice'),
        (("--set", "brokers={zerodha}"), "kite: a zerodha broker is enabled: set kite.existingSecret"),
        (("--set", "imagee.tag=x"), "additional properties 'imagee' not allowed"),
        (("--set", "redis.persistance.size=2Gi"), "additional properties 'persistance' not allowed"),
        (("--set", "functions.risk_manager.minScal=2"), "additional properties 'minScal' not allowed"),
        (("--set", "kafkaSource.ordering=random"), "ordering"),
        (("--set", "kafkaSource.delivery.backoffPolicy=fibonacci"), "backoffPolicy"),
        (("--set", "tests.function=nope"), 'tests.function: "nope" is not a Knative function'),
        (("--set", "functions.market_feed.subscribe={x.y}"), "a deployment workload cannot subscribe"),
        (("--set-json", 'image.tag={"v": 1}'), "/image/tag"),
        (("--set", "image.tag=true"), "at '/image/tag': got boolean, want number or string"),
        (("--set", "kite.root=api.kite.trade"), "at '/kite/root': 'api.kite.trade' does not match"),
        (("--set", "kite.wsRoot=https://ws.kite.trade"), "at '/kite/wsRoot': 'https://ws.kite.trade'"),
        (
            ("--set", "kiteSandbox.enabled=true"),
            "kiteSandbox.enabled: the sandbox stands in for Kite for the zerodha brokers, but the brokers "
            "have none: add one",
        ),
        (
            (
                "--set",
                "brokers={zerodha}",
                "--set",
                "kiteSandbox.enabled=true",
                "--set",
                "kiteSandbox.wsPort=8080",
            ),
            "kiteSandbox: port and wsPort are both 8080",
        ),
        (("--set", "kiteSandbox.port=80"), "at '/kiteSandbox/port': minimum: got 80, want 1,024"),
        (("--set", "kiteSandbox.tickInterval=0"), "/kiteSandbox/tickInterval"),
    ],
    ids=[
        "unknown_broker_in_list",
        "unknown_broker_string",
        "empty_list",
        "empty_string",
        "only_commas",
        "uppercase_name",
        "underscore_name",
        "duplicate",
        "zerodha_without_credentials",
        "typo_top_level",
        "typo_nested",
        "typo_in_function",
        "bad_ordering",
        "bad_backoff_policy",
        "test_target_missing",
        "feed_subscribing",
        "image_tag_object",
        "image_tag_boolean",
        "kite_root_not_a_url",
        "kite_ws_root_not_websocket",
        "kite_sandbox_without_zerodha",
        "kite_sandbox_one_port_for_both",
        "kite_sandbox_privileged_port",
        "kite_sandbox_tick_interval_zero",
    ],
)
def test_render_when_values_are_bad_then_helm_fails_with_a_clear_message(
    chart: Chart, args: tuple[str, ...], message: str
) -> None:
    assert message in chart.template_error(*args)
