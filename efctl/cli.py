"""``efctl``: argument parsing and the one place errors become ``error: …`` lines.

Exit status: 0 on success, 1 when a command fails (one line on stderr says why),
2 for a usage mistake (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import protocol.kinds  # noqa: F401  (registers every kind efctl can name)
from efctl import artifacts, commands
from efctl.client import ApiClient, ClientError
from efctl.config import ConfigError, default_config_path, load_efctl_config
from efctl.twin import twin_set
from protocol.errors import EdgefleetError

ROLES = ("admin", "operator", "viewer")
OUTPUTS = ("table", "wide", "json", "yaml")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="efctl", description="Drive an edgefleet cloud: apply, get, describe, delete.",
    )
    parser.add_argument(
        "--config", type=Path, default=None,
        help="efctl config file (default: $EFCTL_CONFIG, else ~/.edgefleet/efctl.yaml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("apply", help="create or update every object in a YAML file")
    p.add_argument("-f", "--filename", required=True, metavar="FILE",
                   help="multi-document YAML file, or - for stdin")

    p = sub.add_parser("get", help="list objects of a kind, or show one")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("-n", "--namespace", metavar="NS")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector, e.g. app=x")
    p.add_argument("-o", "--output", choices=OUTPUTS, default="table")

    p = sub.add_parser("describe", help="show one object in detail")
    p.add_argument("kind", metavar="KIND")
    p.add_argument("name", metavar="NAME")
    p.add_argument("-n", "--namespace", metavar="NS")

    p = sub.add_parser("delete", help="delete an object by name, or every object in a file")
    p.add_argument("kind", metavar="KIND", nargs="?")
    p.add_argument("name", metavar="NAME", nargs="?")
    p.add_argument("-n", "--namespace", metavar="NS")
    p.add_argument("-f", "--filename", metavar="FILE")

    p = sub.add_parser("token", help="join tokens for edge nodes")
    token_sub = p.add_subparsers(dest="action", metavar="ACTION")
    token_sub.required = True
    t = token_sub.add_parser("create", help="print a new join token")
    t.add_argument("--ttl", metavar="DURATION", help="how long it is valid, e.g. 1h (default 24h)")

    p = sub.add_parser("node", help="edge nodes")
    node_sub = p.add_subparsers(dest="action", metavar="ACTION")
    node_sub.required = True
    n = node_sub.add_parser(
        "revoke", help="revoke a node's certificates and cut its link now (admins only); "
        "it comes back only by joining again with a new token")
    n.add_argument("node_name", metavar="NAME")

    p = sub.add_parser("twin", help="device twins")
    twin_sub = p.add_subparsers(dest="action", metavar="ACTION")
    twin_sub.required = True
    tw = twin_sub.add_parser("set", help="set desired values: efctl twin set DEVICE PROP=VALUE...")
    tw.add_argument("device", metavar="DEVICE")
    tw.add_argument("assignments", metavar="PROP=VALUE", nargs="+")
    tw.add_argument("-n", "--namespace")

    p = sub.add_parser("artifact", help="files Apps bring along, stored by their SHA-256")
    art_sub = p.add_subparsers(dest="action", metavar="ACTION")
    art_sub.required = True
    a = art_sub.add_parser("push", help="upload a file; prints its SHA-256")
    a.add_argument("file", metavar="FILE", type=Path)
    a.add_argument("--name", metavar="NAME", help="a name kept with it (default: the file's)")
    a = art_sub.add_parser("list", help="every stored artifact")
    a.add_argument("-o", "--output", choices=("table", "json"), default="table")
    a = art_sub.add_parser("delete", help="delete an artifact (admins only)")
    a.add_argument("sha256", metavar="SHA256")

    p = sub.add_parser("user", help="API users")
    user_sub = p.add_subparsers(dest="action", metavar="ACTION")
    user_sub.required = True
    u = user_sub.add_parser("create", help="print a bearer token for a new API user")
    u.add_argument("user_name", metavar="NAME")
    u.add_argument("--role", required=True, choices=ROLES)
    return parser


def run(args: argparse.Namespace) -> None:
    config = load_efctl_config((args.config or default_config_path()).expanduser())
    with ApiClient(config) as client:
        if args.command == "apply":
            commands.apply(client, args.filename)
        elif args.command == "get":
            commands.get(
                client, args.kind, args.name, namespace=args.namespace,
                all_namespaces=args.all_namespaces, selector=args.selector, output=args.output,
            )
        elif args.command == "describe":
            commands.describe(client, args.kind, args.name, namespace=args.namespace)
        elif args.command == "delete":
            commands.delete(client, args.kind, args.name, namespace=args.namespace,
                            file=args.filename)
        elif args.command == "token":
            commands.token_create(client, args.ttl)
        elif args.command == "node":
            commands.node_revoke(client, args.node_name)
        elif args.command == "twin":
            twin_set(client, args.device, args.assignments, namespace=args.namespace)
        elif args.command == "artifact":
            if args.action == "push":
                artifacts.push(client, args.file, args.name)
            elif args.action == "list":
                artifacts.list_artifacts(client, args.output)
            else:
                artifacts.delete(client, args.sha256)
        elif args.command == "user":
            commands.user_create(client, args.user_name, args.role)
        else:  # argparse only lets known commands through
            raise AssertionError(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (commands.CommandError, ClientError, ConfigError, EdgefleetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `efctl get ... | head`: the reader left; that is not an error.
        return 0
    return 0
