"""Run the emulator as a process: `python -m tests.kube.emulator --port P --kubeconfig-out FILE`.

For benchmarks and manual sessions, where no pytest process hosts the emulator. The
kubeconfig is written once the port is bound, so a parent can wait for the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import pathlib
import signal

import kmock

from .runner import serve, write_kubeconfig
from .server import EmulatorHandler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.kube.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument(
        "--kubeconfig-out", type=pathlib.Path, required=True, help="where to write the kubeconfig"
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)

        def started(handler: EmulatorHandler, server: kmock.Server) -> None:
            url = f"http://127.0.0.1:{server.port}"
            tmp = args.kubeconfig_out.with_name(args.kubeconfig_out.name + ".tmp")
            write_kubeconfig(tmp, url)
            tmp.replace(args.kubeconfig_out)
            print(f"kube-api-emulator listening on {url}", flush=True)

        await serve(args.port, started=started, stop=stop)

    asyncio.run(run())


if __name__ == "__main__":
    main()
