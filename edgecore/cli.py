"""``edgecore join …`` and ``edgecore run …`` (see INTERFACES.md)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
import sys
from pathlib import Path

from certs.errors import CertError
from edgecore.config import ConfigError
from protocol.errors import EdgefleetError
from protocol.logsetup import setup_logging


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgecore", description="edgefleet edge core")
    sub = p.add_subparsers(dest="command", required=True)
    j = sub.add_parser("join", help="join this node to a cloud")
    j.add_argument("--server", required=True, help="https://HOST:10002")
    j.add_argument("--token", required=True)
    j.add_argument("--node-name", required=True)
    j.add_argument("--data-dir", type=Path, required=True)
    j.add_argument("--labels", help="k=v,k2=v2")
    r = sub.add_parser("run", help="run the edge core")
    r.add_argument("--data-dir", type=Path, required=True)
    r.add_argument("--mqtt", choices=["embedded", "external"], default="embedded",
                   help="run the embedded MQTT broker (default) or use an external one")
    r.add_argument("--mqtt-url", help="tcp://HOST:PORT of the external broker")
    r.add_argument("--mqtt-listen", type=_hostport, default=("127.0.0.1", 1883),
                   metavar="HOST:PORT", help="where the embedded broker listens")
    r.add_argument("--metaserver", type=_hostport, metavar="HOST:PORT")
    r.add_argument("--servicebus", action="store_true",
                   help="deliver rule messages to HTTP services on 127.0.0.1 (off by default)")
    r.add_argument("--log-level", default="info")
    r.add_argument("--log-format", choices=["text", "json"], default="text")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "join":
        from edgecore.join import JoinError, join, parse_labels

        try:
            cfg = join(args.server, args.token, args.node_name, args.data_dir,
                       parse_labels(args.labels))
        except (JoinError, CertError, EdgefleetError, OSError) as exc:
            print(f"edgecore join: {exc}", file=sys.stderr)
            return 1
        print(f"node {cfg.nodeName} joined {cfg.server}; start it with: "
              f"edgecore run --data-dir {args.data_dir}")
        return 0

    try:
        setup_logging(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"edgecore: {exc}", file=sys.stderr)
        return 2
    from edgecore.app import EdgeCore

    try:
        if args.mqtt == "external" and not args.mqtt_url:
            print("edgecore: --mqtt external needs --mqtt-url tcp://HOST:PORT", file=sys.stderr)
            return 2
        core = EdgeCore(args.data_dir, metaserver=args.metaserver, mqtt_mode=args.mqtt,
                        mqtt_listen=args.mqtt_listen, mqtt_url=args.mqtt_url,
                        servicebus=args.servicebus or None)
    except ConfigError as exc:
        print(f"edgecore: {exc}", file=sys.stderr)
        return 2

    # `kill -USR1 PID` writes every thread's stack to the log: for diagnosing hangs.
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    async def _run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, core.request_stop)
        await core.run()

    try:
        asyncio.run(_run())
    except (CertError, EdgefleetError, OSError) as exc:
        print(f"edgecore: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
