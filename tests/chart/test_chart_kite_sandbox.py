"""The in-cluster Kite sandbox (kiteSandbox.enabled): what the chart renders, and its rendered
command run for real on this machine with the real kiteconnect client at the pods' root."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from typing import Any
from urllib.parse import urlparse

from kiteconnect import KiteConnect

from alphapanda.runtime.embedded import free_port
from alphapanda.runtime.sandboxed import SANDBOX_API_KEY, SANDBOX_API_SECRET, sandbox_request_token

from .helmkit import NAMESPACE, RELEASE, Chart, Obj, Rendered
from .test_chart_wiring import env_of, workloads

SANDBOX = f"{RELEASE}-alphapanda-kite-sandbox"
ON = ("--set", "brokers={paper,zerodha}", "--set", "kiteSandbox.enabled=true")


def _sandbox_objects(rendered: Rendered) -> tuple[Obj, Obj]:
    (deployment,) = [d for d in rendered.of_kind("Deployment") if d["metadata"]["name"] == SANDBOX]
    (service,) = [s for s in rendered.of_kind("Service") if s["metadata"]["name"] == SANDBOX]
    return deployment, service


def _container(deployment: Obj) -> Obj:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_render_when_kite_sandbox_off_then_nothing_of_it_is_rendered(chart: Chart) -> None:
    rendered = chart.template("--set", "brokers={paper,zerodha}", "--set", "kite.existingSecret=kite")
    assert not [o for o in rendered.objects if "kite-sandbox" in o["metadata"]["name"]]


def test_render_when_kite_sandbox_on_then_every_credentialed_pod_and_only_those_use_its_service(
    chart: Chart,
) -> None:
    rendered = chart.template(*ON)
    deployment, service = _sandbox_objects(rendered)
    host = f"{SANDBOX}.{NAMESPACE}.svc.cluster.local"
    expected = {
        "ALPHAPANDA_KITE__ROOT": f"http://{host}:8080",
        "ALPHAPANDA_KITE__WS_ROOT": f"ws://{host}:8081",
    }
    credentialed = 0
    for workload in workloads(rendered):
        if workload is deployment:
            continue
        env = env_of(workload)
        roots = {k: env[k] for k in expected if k in env}
        if "ALPHAPANDA_KITE__API_KEY" in env:
            credentialed += 1
            assert roots == expected, workload["metadata"]["name"]
        else:
            assert roots == {}, workload["metadata"]["name"]
    assert credentialed >= 2  # at least the feed and the trading engine
    # The Service reaches the sandbox's pod, on the ports its container listens on.
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    container = _container(deployment)
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["port"]: named[p["targetPort"]] for p in service["spec"]["ports"]} == {8080: 8080, 8081: 8081}
    command = container["command"]
    assert command[:2] == ["alphapanda", "kite-sandbox"]
    assert (_option(command, "--host"), _option(command, "--port"), _option(command, "--ws-port")) == (
        "0.0.0.0",
        "8080",
        "8081",
    )
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"


def test_render_when_kite_sandbox_on_then_it_posts_order_updates_to_the_order_updates_service(
    chart: Chart,
) -> None:
    rendered = chart.template(*ON)
    command = _container(_sandbox_objects(rendered)[0])["command"]
    url = urlparse(_option(command, "--postback-url"))
    name, namespace = url.hostname.split(".")[:2]  # type: ignore[union-attr]
    assert name == "order-updates" and name in rendered.ksvcs and namespace == NAMESPACE
    # Without order_updates the sandbox posts nowhere (updates still reach the pipeline over the ticker).
    off = chart.template(*ON, "--set", "functions.order_updates.enabled=false")
    assert "--postback-url" not in _container(_sandbox_objects(off)[0])["command"]


def test_render_when_kite_sandbox_serves_two_zerodha_brokers_then_both_trade_and_log_in_against_it(
    chart: Chart,
) -> None:
    # One sandbox is one Kite app, as the real one is: both brokers use it, and its postbacks
    # go to the one order-updates, which gives each order's updates to its broker.
    two = ("--set", "brokers={paper,zerodha,zerodha-2}", "--set", "kiteSandbox.enabled=true")
    rendered = chart.template(*two)
    host = f"{SANDBOX}.{NAMESPACE}.svc.cluster.local"
    for engine in ("zerodha-trading-engine", "zerodha-2-trading-engine"):
        assert env_of(rendered.ksvcs[engine])["ALPHAPANDA_KITE__ROOT"] == f"http://{host}:8080"
    postback = urlparse(_option(_container(_sandbox_objects(rendered)[0])["command"], "--postback-url"))
    assert postback.hostname == f"order-updates.{NAMESPACE}.svc.cluster.local"
    notes = chart.notes(*two)
    for broker in ("zerodha", "zerodha-2"):
        assert f"exec deploy/market-feed -- alphapanda login --sandbox --broker {broker}\n" in notes + "\n"


def test_render_when_kite_sandbox_on_then_its_market_clock_runs_unless_turned_off(chart: Chart) -> None:
    default = _container(_sandbox_objects(chart.template(*ON))[0])["command"]
    wall = chart.template(*ON, "--set", "kiteSandbox.marketClock=false")

    assert "--market-clock" in default
    assert "--market-clock" not in _container(_sandbox_objects(wall)[0])["command"]


def test_render_when_kite_roots_set_then_they_win_over_the_sandbox(chart: Chart) -> None:
    rendered = chart.template(*ON, "--set", "kite.root=http://kite.example:9000")
    roots = {
        (env.get("ALPHAPANDA_KITE__ROOT"), env.get("ALPHAPANDA_KITE__WS_ROOT"))
        for env in (env_of(w) for w in workloads(rendered) if w["metadata"]["name"] != SANDBOX)
        if "ALPHAPANDA_KITE__API_KEY" in env
    }
    assert roots == {("http://kite.example:9000", f"ws://{SANDBOX}.{NAMESPACE}.svc.cluster.local:8081")}


def test_render_when_kite_sandbox_on_without_credentials_then_the_chart_secret_holds_the_sandbox_pair(
    chart: Chart,
) -> None:
    (secret,) = chart.template(*ON).of_kind("Secret")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {"api-key": SANDBOX_API_KEY, "api-secret": SANDBOX_API_SECRET}
    # Credentials of one's own are kept, and an existing Secret is used as it is.
    (own,) = chart.template(*ON, "--set", "kite.apiKey=k1", "--set", "kite.apiSecret=s1").of_kind("Secret")
    assert base64.b64decode(own["data"]["api-key"]).decode() == "k1"
    existing = chart.template(*ON, "--set", "kite.existingSecret=mine")
    assert not existing.of_kind("Secret")
    env = env_of(_sandbox_objects(existing)[0])
    assert env["ALPHAPANDA_KITE__API_SECRET"] == {"secretKeyRef": {"name": "mine", "key": "api-secret"}}


def _pod_env(rendered: Rendered, container: Obj) -> dict[str, str]:
    """The container's environment as the kubelet would give it: secret references resolved
    against the rendered Secrets."""
    secrets = {
        s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
        for s in rendered.of_kind("Secret")
    }
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = secrets[ref["name"]][ref["key"]]
    return env


def test_rendered_kite_sandbox_when_run_then_the_real_kite_client_logs_in_at_the_root_the_pods_get(
    chart: Chart,
) -> None:
    rest_port, ws_port = free_port(), free_port()
    rendered = chart.template(
        *ON,
        "--set",
        "kite.apiKey=chart-key",
        "--set",
        "kite.apiSecret=chart-secret",
        "--set",
        f"kiteSandbox.port={rest_port}",
        "--set",
        f"kiteSandbox.wsPort={ws_port}",
    )
    container = _container(_sandbox_objects(rendered)[0])
    command = container["command"]
    assert command[0] == "alphapanda"
    # The cluster's DNS names do not resolve here: the pods' root, at 127.0.0.2, a loopback
    # address the sandbox answers on only if it listens on every interface as a pod must.
    engine_env = env_of(rendered.ksvcs["zerodha-trading-engine"])
    root = urlparse(engine_env["ALPHAPANDA_KITE__ROOT"])._replace(netloc=f"127.0.0.2:{rest_port}").geturl()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAPANDA_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "alphapanda.cli", *command[1:]],
        env={**environment, **_pod_env(rendered, container)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        # Read line by line up to its last start-up line (communicate() would skip what readline buffered).
        banner = [process.stdout.readline()]
        while banner[-1] and not banner[-1].startswith("or log in against it"):
            banner.append(process.stdout.readline())
        assert banner[0].startswith("Kite sandbox REST root:"), "".join(banner)
        kite: Any = KiteConnect("chart-key", root=root)
        session = kite.generate_session(sandbox_request_token(root), api_secret="chart-secret")
        assert session["access_token"]
        assert {row["tradingsymbol"] for row in kite.instruments("NSE")} >= {"SBIN", "ICICIBANK"}
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    log = "".join(banner) + output
    assert "chart-secret" not in log  # the operator's secret never reaches the pod's log
    assert "listening on every interface (0.0.0.0)" in log
    assert "Kite sandbox market clock starts at " in log
    assert "order updates are posted to http://order-updates.alphapanda.svc.cluster.local/" in log
