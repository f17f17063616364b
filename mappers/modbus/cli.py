"""``mapper-modbus [--dmi-socket DIR/dmi.sock] [--name NAME] [--socket PATH]``.

Registers protocol ``modbus`` with edgecore over DMI, receives its Devices, polls them
and reports their twins.  Runs until SIGTERM/SIGINT.  Deployed as an App, it finds the
DMI socket in ``$EDGEFLEET_DMI_SOCKET``, which edged sets for every replica."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from mappers.modbus.driver import ModbusDriver
from mappers.sdk.dmi import ManagerClient, MapperServer
from mappers.sdk.runtime import MapperRuntime
from protocol.logsetup import setup_logging


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mapper-modbus", description="edgefleet Modbus mapper")
    from_env = os.environ.get("EDGEFLEET_DMI_SOCKET")
    p.add_argument("--dmi-socket", type=Path, required=from_env is None,
                   default=Path(from_env) if from_env else None,
                   help="edgecore's DIR/dmi.sock (default: $EDGEFLEET_DMI_SOCKET)")
    p.add_argument("--name", default="modbus")
    p.add_argument("--socket", type=Path,
                   help="this mapper's own socket (default: modbus.sock beside dmi.sock)")
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    try:
        setup_logging(args.log_level)
    except ValueError as exc:
        print(f"mapper-modbus: {exc}", file=sys.stderr)
        return 2
    own = args.socket or args.dmi_socket.with_name(f"{args.name}.sock")

    async def run() -> None:
        driver = ModbusDriver()
        manager = ManagerClient(args.dmi_socket, name=args.name, protocol="modbus",
                                address=str(own), version="0.1.0")
        runtime = MapperRuntime(driver, manager)
        server = MapperServer(own, runtime)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.start(server)
        await stop.wait()
        await runtime.stop()
        await server.stop()
        await manager.close()
        await driver.pool.close()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
