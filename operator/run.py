"""``kubevine operator``: run the kopf operator that brings VineWorkflows to life.

Exists so that the image has one entry point (`kubevine operator ARGS`, what the Helm
chart's Deployment runs) and so that the choices kopf leaves open are made once, here:

* **Where to watch.** `--namespace NS` (repeatable) or `--all-namespaces`; without
  either, the pod's own namespace (`POD_NAMESPACE`, set by the chart). Namespaced mode
  turns kopf's cluster scanning off, so the operator needs no cluster-wide permission
  (not even to list CRDs): the CRD must exist when it starts, which the chart ensures.
* **More than one replica.** kopf peering (`--peering NAME`, default the setting
  `KUBEVINE_OPERATOR_PEERING_NAME`) keeps one replica active and the others paused; the
  peering object must exist (the chart creates it). kopf pauses *every* operator that
  sees a peer of the same priority, so replicas of one Deployment, which share their
  arguments, would all stand still: unless `--priority` is given, each replica draws a
  random one, the highest works, and when it exits the next highest resumes (at once
  after a clean exit; after kopf's 60 s peer lifetime if it was killed). `--standalone`
  runs without peering, for a single replica or local development.
* **Liveness.** kopf serves `--liveness` (default http://0.0.0.0:8080/healthz), which
  fails when its event loop stops making progress; `--liveness ''` turns it off.
* **Metrics.** Prometheus `/metrics` on `--metrics-port` (default the setting
  `KUBEVINE_OPERATOR_METRICS_PORT`, 9091; 0 turns it off): desired and actual workers,
  the last decision and its cause, handler errors, workflows by phase
  (`kubevine.operator.metrics`).
* **Logs.** JSON lines with `--log-format json`, `KUBEVINE_LOG_FORMAT=json` or
  `KUBEVINE_OPERATOR_LOG_FORMAT=json` (the chart's value), else text.

* **The CRD it needs.** Before kopf starts, the VineWorkflow schema the cluster serves is
  compared with the operator's own (`crdcheck`); an older CRD stops it with the command that
  upgrades it (`--skip-crd-check` starts anyway).
* **Node caches.** `kubevine operator node-cache ...` runs the node-cache keeper instead (the
  chart's DaemonSet; see `nodecache`).

Everything per workflow lives in `handlers`; the settings shared by all workflows come
from `KUBEVINE_OPERATOR_*` variables (`OperatorSettings.from_env`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from typing import Any, cast

import kopf

from kubevine import logs
from kubevine.operator import crdcheck, handlers, nodecache
from kubevine.operator.autoscale import ScalingPolicy
from kubevine.operator.cache import SELECTOR
from kubevine.operator.kube import KubeApi, load_api_client
from kubevine.operator.scaler import Context
from kubevine.operator.settings import OperatorSettings, SettingsError

log = logging.getLogger(__name__)

DEFAULT_LIVENESS = "http://0.0.0.0:8080/healthz"
#: The finalizer kopf puts on each workflow so it can stop the workflow's timer first.
FINALIZER = "kubevine.io/operator"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubevine operator",
        description="Run the kubevine operator: VineWorkflow handlers and the worker autoscaler.",
        epilog="Operator-wide settings come from KUBEVINE_OPERATOR_* environment variables "
        "(see docs/kubernetes.md).",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-n",
        "--namespace",
        action="append",
        dest="namespaces",
        metavar="NS",
        help="watch VineWorkflows in this namespace (repeatable); default: $POD_NAMESPACE",
    )
    where.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    parser.add_argument(
        "--liveness",
        default=DEFAULT_LIVENESS,
        metavar="URL",
        help=f"liveness endpoint to serve (default {DEFAULT_LIVENESS}; '' for none)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve Prometheus /metrics on this port (default: $KUBEVINE_OPERATOR_METRICS_PORT "
        "or 9091; 0: off)",
    )
    parser.add_argument(
        "--metrics-host", default="0.0.0.0", metavar="ADDR", help="address /metrics binds (default 0.0.0.0)"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object shared by the replicas (default: $KUBEVINE_OPERATOR_PEERING_NAME)",
    )
    peering.add_argument("--standalone", action="store_true", help="run without peering (one replica only)")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority: the highest replica works (default: a random one per process)",
    )
    parser.add_argument(
        "--skip-crd-check",
        action="store_true",
        help="start even if the cluster's VineWorkflow CRD lacks fields this operator uses",
    )
    parser.add_argument("--log-level", default=os.environ.get("KUBEVINE_LOG_LEVEL", "INFO"))
    parser.add_argument("--log-format", choices=["text", "json"], default=None)
    return parser


def log_format(arg: str | None, environ: Mapping[str, str], settings: OperatorSettings) -> str:
    """The flag, else `KUBEVINE_LOG_FORMAT`, else the operator setting if set, else text."""
    if arg:
        return arg
    if environ.get("KUBEVINE_LOG_FORMAT") in ("json", "text"):
        return environ["KUBEVINE_LOG_FORMAT"]
    if OperatorSettings.env_name("log_format") in environ:
        return settings.log_format
    return "text"


class _QuietTimer(logging.Filter):
    """Drops kopf's "Timer 'autoscale' succeeded.", "Indexer '...' succeeded." and "Handler
    'metrics' succeeded." lines: one per workflow per interval or per watch event says
    nothing; the steps that change something log what they did."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not (
            text.startswith("Timer 'autoscale' succeeded")
            or (text.startswith("Indexer '") and text.endswith("succeeded."))
            or text == "Handler 'metrics' succeeded."
        )


def kopf_settings(clusterwide: bool) -> kopf.OperatorSettings:
    """kopf's own settings for this operator. The children it indexes are watched with a
    server-side label selector: the API server sends only what the operator created."""
    settings = kopf.OperatorSettings()
    settings.scanning.disabled = not clusterwide
    settings.persistence.finalizer = FINALIZER
    settings.posting.level = logging.WARNING  # handler failures become Events; our decisions post their own
    settings.peering.stealth = True  # no log line per keep-alive
    for group, version, plural in handlers.CHILD_KINDS.values():
        settings.watching.label_selectors[(group, version, plural) if group else (version, plural)] = SELECTOR
    return settings


def peering_identity(environ: Mapping[str, str]) -> str:
    """Who this replica is in the peering object: its pod's name (or host and pid). kopf's own
    default asks the password database for the user's name, which a container running as an
    arbitrary uid (OpenShift's random uids, or any uid the image does not list) does not have."""
    pod = environ.get("POD_NAME")
    return pod if pod else f"{socket.gethostname()}-{os.getpid()}"


def _refuse(args: argparse.Namespace, message: str) -> int:
    """Stop before kopf is configured: say why in the log format asked for (exit 2)."""
    named = [os.environ.get(n) for n in ("KUBEVINE_LOG_FORMAT", OperatorSettings.env_name("log_format"))]
    fmt = args.log_format or next((f for f in named if f in ("json", "text")), "text")
    logs.setup(str(args.log_level), fmt)
    log.error("kubevine operator: %s", message)
    return 2


def main(argv: list[str]) -> int:
    if argv[:1] == ["node-cache"]:
        return nodecache.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = OperatorSettings.from_env(os.environ)
    except SettingsError as e:
        return _refuse(args, str(e))
    if not settings.namespace and os.environ.get("POD_NAMESPACE"):
        settings = settings.model_copy(update={"namespace": os.environ["POD_NAMESPACE"]})
    namespaces: list[str] = list(args.namespaces or [])
    if not args.all_namespaces and not namespaces:
        if not os.environ.get("POD_NAMESPACE"):
            return _refuse(args, "give --namespace NS (repeatable) or --all-namespaces")
        namespaces = [os.environ["POD_NAMESPACE"]]
    fmt = log_format(args.log_format, os.environ, settings)
    level = getattr(logging, str(args.log_level).upper(), logging.INFO)
    kopf.configure(
        debug=level <= logging.DEBUG,
        quiet=level >= logging.WARNING,
        log_format=kopf.LogFormat.JSON if fmt == "json" else kopf.LogFormat.FULL,
        log_refkey="workflow",
    )
    logging.getLogger().setLevel(level)
    logging.getLogger("kopf.objects").addFilter(_QuietTimer())
    if level > logging.DEBUG:  # one line per liveness probe says nothing
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)

    kube = KubeApi(load_api_client())
    if not args.skip_crd_check:
        try:
            crdcheck.check(kube)
        except crdcheck.CrdError as e:
            return _refuse(args, str(e))
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    context = Context(settings=settings, kube=kube, policy=ScalingPolicy.from_settings(settings))
    metrics_port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    metrics_server = None
    if metrics_port:
        try:
            metrics_server = context.metrics.serve(metrics_port, args.metrics_host)
        except OSError as e:
            log.error(
                "kubevine operator: cannot serve /metrics on %s:%d: %s", args.metrics_host, metrics_port, e
            )
            return 2
        log.info("kubevine operator: Prometheus /metrics on %s:%d", args.metrics_host, metrics_port)
    priority = args.priority if args.priority is not None else secrets.randbelow(1 << 30) + 1
    log.info(
        "kubevine operator: watching %s, %s, autoscaler every %gs",
        "all namespaces" if args.all_namespaces else ", ".join(namespaces),
        "standalone"
        if args.standalone
        else f"peering {args.peering or settings.peering_name!r} (priority {priority})",
        settings.scale_interval_seconds,
    )
    try:
        _run_kopf(args, settings, registry, context, namespaces, priority)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    return 0


def _run_kopf(
    args: argparse.Namespace,
    settings: OperatorSettings,
    registry: kopf.OperatorRegistry,
    context: Context,
    namespaces: list[str],
    priority: int,
) -> None:
    asyncio.run(
        kopf.operator(
            registry=registry,
            settings=kopf_settings(args.all_namespaces),
            standalone=True if args.standalone else None,
            peering_name=None if args.standalone else (args.peering or settings.peering_name),
            priority=priority,
            liveness_endpoint=args.liveness or None,
            identity=cast(Any, peering_identity(os.environ)),  # kopf's Identity is a NewType of str
            clusterwide=args.all_namespaces,
            namespaces=[] if args.all_namespaces else namespaces,
            memo=context,
        )
    )
