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
from typing import Any

import yaml

from detinfer import __version__
from detinfer.validator import options as validate_options

EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["engine"]:  # its own parser: its flags are sglang.launch_server's
        from detinfer.engine.main import main as engine_main

        return engine_main(argv[1:])
    parser = argparse.ArgumentParser(prog="detinfer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"detinfer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig")
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
    run.add_argument("-v", "--verbose", action="store_true")

    crds = sub.add_parser("crds", help="write the CRD and the API reference from the models")
    crds.add_argument("--root", type=Path, default=Path("."), help="repository root")
    crds.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the files are stale"
    )

    render = sub.add_parser(
        "render", help="print the objects the operator would create for a resource file"
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
    return {"run": _run, "crds": _crds, "render": _render, "validate": _validate}[args.command](
        args
    )


class _ValidateArgumentError(Exception):
    """argparse refused the arguments of `validate`, which must still write its summary."""

    @classmethod
    def raise_(cls, message: str) -> None:
        raise cls(message)


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from detinfer import metrics
    from detinfer.controller import handlers  # noqa: F401  (registers the handlers)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    start_http_server(args.metrics_port, args.metrics_address, registry=metrics.REGISTRY)
    kopf.run(
        standalone=True,  # one replica (Recreate); no peering objects needed
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://{args.metrics_address}:{args.liveness_port}/healthz",
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from detinfer.validator.command import run_command

    return run_command(args)


def _crds(args: argparse.Namespace) -> int:
    from detinfer import crd

    outputs = {
        args.root / "crds" / crd.CRD_FILENAME: crd.render_crd_yaml(),
        args.root / "docs" / "api-reference.md": crd.render_reference_markdown(),
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
    from detinfer.api import SpecError, parse_service
    from detinfer.builders import render_objects
    from detinfer.config import OperatorConfig

    config = OperatorConfig.from_env()
    if args.validator_image:
        config = config.model_copy(update={"validator_image": args.validator_image})
    rendered: list[tuple[str, dict[str, Any]]] = []
    failed = False
    for path in args.files:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (OSError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=sys.stderr)
            return EXIT_UNREADABLE
        for doc in docs:
            if not isinstance(doc, dict):
                print(f"{path}: a document is not a mapping", file=sys.stderr)
                failed = True
                continue
            if args.namespace and not (doc.get("metadata") or {}).get("namespace"):
                doc.setdefault("metadata", {})["namespace"] = args.namespace
            label = f"{path}: {(doc.get('metadata') or {}).get('name', '<unnamed>')}"
            try:
                dis = parse_service(doc)
            except SpecError as exc:
                failed = True
                for error in exc.errors:
                    print(f"{label}: {error}", file=sys.stderr)
                continue
            rendered += [(f"{path}", obj) for obj in render_objects(dis, config)]
    if failed:
        return EXIT_INVALID
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
