#!/usr/bin/env python3
"""Run every fuzz harness with seeds built here; print executions and crashes per harness.

    tests/fuzz/run.py --runs 4000          # what `make test` does (a fixed number of inputs each)
    tests/fuzz/run.py --seconds 120        # what `make fuzz` does

Seeds: small ELF files compiled with gcc, small layer tars with whiteouts and links, the built-in
profiles, and typical references and challenges. A crash leaves its input in the work directory
and makes this script exit 1.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HARNESSES = ("elf", "layer", "reference", "profile", "auth")


def _tar(members: list[tuple[str, bytes, str, str]], form: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=form) as tar:
        for name, kind, link, data in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tar.addfile(info, io.BytesIO(data.encode()) if data else None)
    return buffer.getvalue()


def seeds(kind: str, corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    if kind == "elf":
        source = corpus / "x.c"
        source.write_text("int f(void) { return 1; }\nint main(void) { return f(); }\n")
        for flags in (["-shared", "-fPIC", "-Wl,-soname,libx.so.1", "-Wl,--enable-new-dtags,-rpath,$ORIGIN"], ["-no-pie"], []):
            out = corpus / f"seed{len(flags)}"
            subprocess.run(
                ["gcc", "-o", str(out), str(source), "-s", "-Wl,--build-id=none", "-Wl,-z,noseparate-code", "-Wl,-z,norelro", *flags],
                check=True,
            )
        source.unlink()
    elif kind == "layer":
        members = [
            ("etc/", tarfile.DIRTYPE, "", ""),
            ("etc/passwd", tarfile.REGTYPE, "", "root:x:0:0\n"),
            ("etc/.wh.motd", tarfile.REGTYPE, "", ""),
            ("lib", tarfile.SYMTYPE, "usr/lib", ""),
            ("usr/lib/x", tarfile.REGTYPE, "", "x"),
            ("usr/lib/y", tarfile.LNKTYPE, "usr/lib/x", ""),
            ("var/.wh..wh..opq", tarfile.REGTYPE, "", ""),
        ]
        (corpus / "a.tar").write_bytes(_tar(members))
        # long names: pax records (path, linkpath), GNU long-name headers, a ustar prefix
        long = [("usr/share/" + "n" * 120, tarfile.REGTYPE, "", "long"), ("l", tarfile.SYMTYPE, "t" * 150, "")]
        (corpus / "pax.tar").write_bytes(_tar(members + long))
        (corpus / "gnu.tar").write_bytes(_tar(members + long, tarfile.GNU_FORMAT))
        (corpus / "ustar.tar").write_bytes(
            _tar([*members, ("usr/" + "p/" * 60 + "f", tarfile.REGTYPE, "", "prefix")], tarfile.USTAR_FORMAT)
        )
    elif kind == "profile":
        for path in (REPO / "profiles").glob("*.yaml"):
            shutil.copy(path, corpus / path.name)
    elif kind == "reference":
        for number, text in enumerate(
            [
                "nginx",
                "docker.io/library/nginx:1.27",
                "localhost:5000/a/b@sha256:" + "a" * 64,
                "[::1]:5000/x:y",
                "ghcr.io/owner/repo:tag@sha256:" + "0" * 64,
            ]
        ):
            (corpus / str(number)).write_text(text)
    elif kind == "auth":
        for number, text in enumerate(
            [
                'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push"',
                'Basic realm="Registry Realm"',
                'Negotiate abc==, Basic realm="x\\"y"',
            ]
        ):
            (corpus / str(number)).write_text(text)


def run(kind: str, work: Path, limit: list[str]) -> dict[str, object]:
    corpus = work / f"corpus-{kind}"
    seeds(kind, corpus)
    command = [
        sys.executable,
        str(HERE / f"fuzz_{kind}.py"),
        *limit,
        "-max_len=65536",
        "-timeout=10",
        f"-artifact_prefix={work}/crash-{kind}-",
        str(corpus),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
    done = re.search(r"Done (\d+) runs", result.stderr)
    crashed = result.returncode != 0
    tail = "\n".join(result.stderr.splitlines()[-25:]) if crashed else ""
    return {"harness": kind, "executions": int(done.group(1)) if done else None, "crashed": crashed, "tail": tail}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int)
    parser.add_argument("--seconds", type=int)
    parser.add_argument("--only", choices=HARNESSES)
    args = parser.parse_args()
    limit = [f"-runs={args.runs}"] if args.runs else [f"-max_total_time={args.seconds or 60}"]
    work = Path(tempfile.mkdtemp(prefix="distill-fuzz-"))
    results = [run(kind, work, limit) for kind in HARNESSES if args.only in (None, kind)]
    print(json.dumps(results, indent=2))
    if any(r["crashed"] for r in results):
        print(f"crash inputs are in {work}", file=sys.stderr)
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
