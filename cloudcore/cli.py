"""``cloudcore run --data-dir DIR …`` (see INTERFACES.md)."""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import signal
import sys
from pathlib import Path

from certs.errors import CertError
from cloudcore.config import ConfigError, build_config, load_config_file
from protocol.errors import EdgefleetError
from protocol.logsetup import setup_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cloudcore", description="edgefleet cloud core")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the cloud core")
    run.add_argument("--data-dir", type=Path, required=True)
    run.add_argument("--hub-listen", help="HOST:PORT of the edge link (default 0.0.0.0:10000)")
    run.add_argument("--api-listen",
                     help="HOST:PORT of the REST API and join (default 0.0.0.0:10002)")
    run.add_argument("--advertise-address", action="append", default=None,
                     help="IP or DNS name edges use to reach this cloud (repeatable)")
    run.add_argument("--store", choices=["sqlite", "etcd"])
    run.add_argument("--etcd-endpoints")
    run.add_argument("--config", type=Path, help="YAML file of settings")
    run.add_argument("--log-level")
    run.add_argument("--log-format", choices=["text", "json"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        file_values = load_config_file(args.config) if args.config else {}
        cfg = build_config(file_values, {
            "dataDir": args.data_dir,
            "hubListen": args.hub_listen,
            "apiListen": args.api_listen,
            "advertiseAddresses": args.advertise_address,
            "store": args.store,
            "etcdEndpoints": args.etcd_endpoints.split(",") if args.etcd_endpoints else None,
            "logLevel": args.log_level,
            "logFormat": args.log_format,
        })
        setup_logging(cfg.logLevel, cfg.logFormat)
    except (ConfigError, ValueError) as exc:
        print(f"cloudcore: {exc}", file=sys.stderr)
        return 2
    if cfg.store == "etcd":
        print("cloudcore: --store etcd is not available yet; use the default sqlite store",
              file=sys.stderr)
        return 2
    from cloudcore.app import CloudCore  # heavy imports only once the flags are good

    core = CloudCore(cfg)

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
        print(f"cloudcore: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
