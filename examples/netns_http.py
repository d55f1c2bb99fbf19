#!/usr/bin/env python3
"""Start a server from a root filesystem in a private network namespace and fetch pages from it.

Re-executes itself under `unshare --net` (so nothing listens on any address but the
namespace's own 127.0.0.1), brings up loopback, runs `chroot ROOT COMMAND...` (or, with
`--runc`, the OCI bundle ROOT with `runc run`, sharing the namespace), waits for PORT, sends
GET requests, stops the server and prints a JSON result:

    examples/netns_http.py ROOT --port 80 --get / --get /nope -- /usr/sbin/nginx -g 'daemon off;'
    examples/netns_http.py BUNDLE --runc --get /
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def wait_for_port(port: int, server: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def inside(args: argparse.Namespace) -> dict[str, object]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if args.runc:
        state = tempfile.mkdtemp(prefix="runc-")
        command = ["runc", "--root", state, "run", "--bundle", args.root, f"distill-{os.getpid()}"]
    else:
        command = ["chroot", args.root, *args.command]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    result: dict[str, object] = {"started": False, "responses": {}}
    try:
        result["started"] = wait_for_port(args.port, server)
        if result["started"]:
            for path in args.get:
                conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                result["responses"][path] = {"status": response.status, "body": body[:2000].decode("utf-8", "replace")}  # type: ignore[index]
                conn.close()
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGQUIT if args.quit_signal == "QUIT" else signal.SIGTERM)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        _, err = server.communicate()
        result["exit"] = server.returncode
        result["stderr"] = err.decode("utf-8", "replace")[-2000:]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root")
    parser.add_argument("--port", type=int, default=80)
    parser.add_argument("--get", action="append", default=[])
    parser.add_argument("--quit-signal", default="QUIT")
    parser.add_argument("--runc", action="store_true", help="ROOT is an OCI runtime bundle; run it with runc")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.command = argv[split + 1 :]
    if not args.inside:
        os.execvp("unshare", ["unshare", "--net", "--", sys.executable, os.path.abspath(__file__), "--inside", *sys.argv[1:]])
    print(json.dumps(inside(args)))


if __name__ == "__main__":
    main()
