"""The `detinfer` command: run the operator, generate the CRD, render what a resource becomes,
validate engines for determinism."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml

from detinfer import __version__, safeyaml
from detinfer.validator import options as validate_options

# `detinfer render`'s exit codes (also in its --help and the README).
EXIT_INVALID = 1  # a resource the API server would refuse, a document that is none, no resource
EXIT_UNREADABLE = 2  # a file that cannot be read as YAML of JSON values, or bad arguments


_MAX_MIB = safeyaml.MAX_BYTES // (1024 * 1024)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["engine"]:  # its own parser: its flags are sglang.launch_server's
        from detinfer.engine.main import main as engine_main

        return engine_main(argv[1:])
    parser = argparse.ArgumentParser(prog="detinfer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"detinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="run the operator: in a pod with its ServiceAccount (or DETINFER_SERVICE_ACCOUNT_DIR), "
        "elsewhere with the current kubeconfig",
    )
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); all namespaces when not given",
    )
    run.add_argument("--metrics-address", default="0.0.0.0")
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics")
    run.add_argument("--liveness-port", type=int, default=8081, help="kopf's /healthz")
    run.add_argument(
        "--no-scanning",
        action="store_true",
        help="kopf neither watches CRDs nor lists namespaces (no RBAC for either; the CRD must "
        "exist when the operator starts, as the Helm chart ensures)",
    )
    run.add_argument("-v", "--verbose", action="store_true")

    crds = sub.add_parser(
        "crds",
        help="write the CRD, the API reference and the Helm chart's CRD, values and schema "
        "from the models",
    )
    crds.add_argument("--root", type=Path, default=Path("."), help="repository root")
    crds.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files are stale"
    )

    render = sub.add_parser(
        "render",
        help="print the objects the operator would create for a resource file",
        description="Print the objects the operator would create for each resource in the "
        "files, after the API server's rules. Nothing is printed to stdout unless every "
        "resource is valid; each problem is one line on stderr naming the file and the field.",
        epilog=f"exit codes: 0 every resource rendered; {EXIT_INVALID} a resource is invalid "
        "(schema, CEL rules, metadata), a document is not a mapping, or a file holds no "
        f"resource; {EXIT_UNREADABLE} a file cannot be read (missing, larger than "
        f"{_MAX_MIB} MiB, not UTF-8, not YAML, nested deeper than {safeyaml.MAX_DEPTH} levels, "
        f"more than {safeyaml.MAX_ALIASES} aliases or {safeyaml.MAX_NODES} values once they are "
        "expanded, or a value JSON has no type for: a date, !!binary, !!set, a non-string or "
        "repeated key, .inf/.nan), or the arguments or the operator's DETINFER_* settings are "
        "wrong.",
    )
    render.add_argument("files", nargs="+", type=Path)
    render.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    render.add_argument("-n", "--namespace", help="namespace for resources that name none")
    render.add_argument(
        "--validator-image", help="image of the validation Job (default: the operator's setting)"
    )

    sub.add_parser(
        "engine",
        help="start the reference engine (a small torch LLM server with SGLang's API)",
        add_help=False,
    )

    bench = sub.add_parser(
        "bench",
        help="measure what determinism costs: one workload against a deterministic endpoint "
        "and a baseline, alternately; exit 0 measured, 2 could not measure",
        description="Measure the cost of determinism (docs/overhead.md): the same fixed "
        "workload against a deterministic endpoint and a baseline without the flag, alternating "
        "between them; prints TTFT, ITL, end-to-end latency and tokens/s per concurrency level "
        "and the overhead. Exit 0: measured; 2: could not measure.",
    )
    from detinfer.overhead.command import add_arguments as bench_arguments

    bench_arguments(bench)

    validate = sub.add_parser(
        "validate",
        help="test engine endpoints for determinism; exit 0 deterministic, 1 not, 2 could not test",
        description="Test engine endpoints for determinism (docs/validator.md). Exit 0: "
        "deterministic; 1: nondeterminism or a fingerprint mismatch; 2: could not test.",
    )
    validate_options.add_arguments(validate)
    validate.error = _ValidateArgumentError.raise_  # type: ignore[method-assign]

    try:
        args = parser.parse_args(argv)
    except _ValidateArgumentError as exc:
        from detinfer.validator.command import bad_arguments

        return bad_arguments(list(argv if argv is not None else sys.argv[1:]), str(exc))
    if hasattr(signal, "SIGPIPE"):
        # `detinfer render ... | head` exits quietly. Not validate: a server that closes its
        # socket while the validator writes would kill it before it writes its summary, so it
        # keeps Python's own setting (ignore SIGPIPE, raise BrokenPipeError).
        signal.signal(
            signal.SIGPIPE, signal.SIG_IGN if args.command == "validate" else signal.SIG_DFL
        )
    commands = {
        "run": _run,
        "crds": _crds,
        "render": _render,
        "validate": _validate,
        "bench": _bench,
    }
    return commands[args.command](args)


class _ValidateArgumentError(Exception):
    """argparse refused the arguments of `validate`, which must still write its summary."""

    @classmethod
    def raise_(cls, message: str) -> NoReturn:
        raise cls(message)


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from detinfer import connection, metrics
    from detinfer.controller import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf's own in-cluster login reads only the standard ServiceAccount path; this one also
    # reads DETINFER_SERVICE_ACCOUNT_DIR (detinfer.connection), like the operator's client.
    kopf.on.login()(connection.kopf_login)
    if args.no_scanning:

        @kopf.on.startup()
        def _no_scanning(settings: kopf.OperatorSettings, **_: Any) -> None:
            # kopf then serves the resources found at start (API discovery only) and takes the
            # namespaces given as exact names: no watch of CRDs, no list of namespaces.
            settings.scanning.disabled = True

    start_http_server(args.metrics_port, args.metrics_address, registry=metrics.REGISTRY)
    kopf.run(
        standalone=True,  # one replica (Recreate); no peering objects needed
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        # The children's watches (controller/watches.py) watch the same namespaces.
        memo=kopf.Memo(namespaces=args.namespace or None),
        liveness_endpoint=f"http://{args.metrics_address}:{args.liveness_port}/healthz",
    )
    return 0


def _bench(args: argparse.Namespace) -> int:
    from detinfer.overhead.command import run

    return run(args)


def _validate(args: argparse.Namespace) -> int:
    from detinfer.validator.command import run_command

    return run_command(args)


def _crds(args: argparse.Namespace) -> int:
    from detinfer import chart, crd
    from detinfer.engine import flag_table

    crd_text = crd.render_crd_yaml()
    outputs = {
        args.root / flag_table.TABLE_PATH: flag_table.render(),
        args.root / "crds" / crd.CRD_FILENAME: crd_text,
        args.root / "docs" / "api-reference.md": crd.render_reference_markdown(),
        # The chart installs the same CRD, byte for byte, and its values come from chart.py.
        **chart.chart_outputs(args.root, crd.CRD_FILENAME, crd_text),
    }
    stale = [p for p, text in outputs.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path} is stale: run `make crds`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from detinfer.api import SpecError, parse_dis
    from detinfer.builders import render_objects
    from detinfer.config import OperatorConfig

    try:
        config = OperatorConfig.from_env()
    except ValidationError as exc:
        first = exc.errors()[0]
        variable = f"DETINFER_{str(first['loc'][0]).upper()}"
        print(
            f"detinfer render: {variable}: {first['msg']} (got {first.get('input')!r:.60})",
            file=sys.stderr,
        )
        return EXIT_UNREADABLE
    if args.validator_image:
        config = config.model_copy(update={"validator_image": args.validator_image})
    rendered: list[tuple[str, dict[str, Any]]] = []
    status = 0
    for path in args.files:
        try:
            docs = [d for d in safeyaml.load_file(path) if d is not None]
        except safeyaml.YamlFileError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        if not docs:
            print(
                f"{path}: holds no resource (it is empty, or only comments and empty documents)",
                file=sys.stderr,
            )
            status = max(status, EXIT_INVALID)
        for doc in docs:
            if not isinstance(doc, dict):
                kind = (
                    "a list" if isinstance(doc, list) else f"the {type(doc).__name__} {doc!r:.40}"
                )
                print(f"{path}: a document is {kind}, not a resource (a mapping)", file=sys.stderr)
                status = max(status, EXIT_INVALID)
                continue
            metadata = doc.get("metadata")
            if args.namespace and metadata is None:
                doc["metadata"] = metadata = {}
            if args.namespace and isinstance(metadata, dict) and not metadata.get("namespace"):
                metadata["namespace"] = args.namespace
            name = metadata.get("name") if isinstance(metadata, dict) else None
            shown = name if isinstance(name, str) and name.isprintable() else None
            label = f"{path}: {shown[:63] if shown else '<unnamed>'}"
            try:
                dis = parse_dis(doc)
            except SpecError as exc:
                status = max(status, EXIT_INVALID)
                for error in exc.errors:
                    print(f"{label}: {error}", file=sys.stderr)
                continue
            rendered += [(f"{path}", obj) for obj in render_objects(dis, config)]
    if status:
        return status
    if args.output == "json":
        print(
            json.dumps(
                {"apiVersion": "v1", "kind": "List", "items": [o for _, o in rendered]}, indent=2
            )
        )
    else:
        for source, obj in rendered:
            print(f"---\n# Source: {source} ({obj['kind']} {obj['metadata']['name']})")
            print(yaml.safe_dump(obj, sort_keys=False, width=100), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
