"""Run the offline AWS world alone: ``python -m tests.emulator [--port N]``.

Prints the endpoint and the environment a shell needs, then serves until Ctrl-C.
With ``--ready-file PATH`` it also writes the endpoint URL there once listening
(how the pytest fixture and the sandbox find it).
"""
from __future__ import annotations

import argparse
import signal
import sys

from .server import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=5000, help="port (0 picks a free one)")
    parser.add_argument("--ready-file", help="write the endpoint URL here once listening")
    args = parser.parse_args(argv)

    def ready(url: str) -> None:
        if args.ready_file:
            with open(args.ready_file + ".tmp", "w", encoding="utf-8") as f:
                f.write(url)
            import os

            os.replace(args.ready_file + ".tmp", args.ready_file)
        print(f"AWS emulator listening on {url}", flush=True)
        print(
            f"  export AWS_ENDPOINT_URL={url} AWS_URL={url} AWS_ACCESS_KEY_ID=testing "
            "AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1",
            flush=True,
        )
        print(f"  faults and call counts: {url}/_emulator/faults, {url}/_emulator/calls", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(args.host, args.port, on_ready=ready)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
