"""Every `distill` command in a fenced block of README.md and docs/*.md runs as the text says.

Each command is rewritten by one table (SUBSTITUTIONS) onto the tests' local stand-ins: the fat
Debian 12 root for `/fat`, a local registry for `nginx:latest`, `registry.example.com` and the
distroless base, a small image for the README's `my-app`. Its exit code must match the comment
beside it ("exit code N"; 0 when it says none), and where the docs show what a command prints
(`$ distill ...` followed by output), the output must be exactly that.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO, fat_rootfs
from helpers.cli import run_distill
from helpers.images import DEBIAN12_BASE, distroless_layout, fat_layout
from helpers.platforms import index_layout
from helpers.registry import Registry, build_image_layout, skopeo_copy
from helpers.tree import Tree

pytestmark = [pytest.mark.rootfs, pytest.mark.slow]

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SYNOPSIS = re.compile(r"\[[A-Z]|\b(SRC|DEST|TARGET)\b")  # `distill [APP] --from SRC ...` describes, it does not run


@dataclass(frozen=True)
class Example:
    where: str  # file:line
    command: str  # as documented, continuation lines joined, comment removed
    code: int  # the exit code the text promises
    output: tuple[str, ...] | None  # what the docs show it printing, for `$ distill` blocks


def examples() -> list[Example]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for block in _FENCE.finditer(text):
            if block.group(1) not in ("", "sh", "console"):
                continue
            first_line = text[: block.start(2)].count("\n") + 1
            lines = block.group(2).splitlines()
            i = 0
            while i < len(lines):
                line, start = lines[i], i
                while line.endswith("\\"):
                    i += 1
                    line = line[:-1].rstrip() + " " + lines[i].strip()
                i += 1
                prompt = line.startswith("$ ")
                command, _, comment = line.removeprefix("$ ").partition(" # ")
                command = command.strip()
                if (not command.startswith("distill ") and command != "distill") or _SYNOPSIS.search(command):
                    continue
                said = re.search(r"exit(?:s| code)? (\d+)", comment)
                output = None
                if prompt:
                    end = next((j for j in range(i, len(lines)) if lines[j].startswith("$ ")), len(lines))
                    output, i = tuple(lines[i:end]), end
                found.append(Example(f"{doc.relative_to(REPO)}:{first_line + start}", command, int(said.group(1)) if said else 0, output))
    return found


EXAMPLES = examples()


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The local things the documented names stand for."""
    home = tmp_path_factory.mktemp("docs")
    my_app = Tree(home / "my-app").app()
    my_app.prog("/usr/local/bin/my-app")
    my_app.write("/etc/my-app/my-app.conf", "listen 8080\n")
    my_app.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/var/lib/my-app:/usr/sbin/nologin\n")
    my_app.write("/etc/group", "root:x:0:\napp:x:1000:\n")
    build_image_layout(my_app.root, home / "my-app-layout", "1")
    subprocess.run(["skopeo", "copy", f"oci:{fat_layout()}:latest", f"oci-archive:{home / 'fat.tar'}"], check=True, capture_output=True)
    with Registry(home / "registry") as reg:
        skopeo_copy(f"oci:{fat_layout()}:latest", reg.ref("library/nginx:latest"))
        skopeo_copy(f"oci:{fat_layout()}:latest", reg.ref("team/nginx:1.27"))
        skopeo_copy(f"oci:{distroless_layout('bookworm', DEBIAN12_BASE)}:latest", reg.ref("distroless/base-debian12:latest"))
        from test_apps import APP_PACKAGES

        yield {
            "fat": str(fat_rootfs()),
            "apps": str(fat_rootfs(APP_PACKAGES)),
            "registry": reg.host,
            "my-app": str(my_app.root),
            "my-app-layout": str(home / "my-app-layout"),
            "fat-archive": str(home / "fat.tar"),
            "index": str(index_layout()),
            "cache": str(home / "cache"),
            "graphviz": str(fat_rootfs(("graphviz",))),
        }


# What each documented name stands for here, applied in order (the first rules are the more specific).
SUBSTITUTIONS = [
    ("/usr/bin/redis-server --from /fat", "/usr/bin/redis-server --from {apps}"),  # the README's /fat has no redis
    ("learn dot --from /fat", "learn dot --from {graphviz}"),  # nor graphviz
    ("verify /out", "verify {my-app}"),  # a distilled tree
    ("./my-app.yaml --from oci:fat:1", "./my-app.yaml --from oci:{my-app-layout}:1"),
    ("--from oci:fat:1 --platform", "--from oci:{index}:latest --platform"),  # a two-platform index
    ("./my-app.yaml --from /fat", "./my-app.yaml --from {my-app}"),
    ("--from /fat", "--from {fat}"),
    ("--from nginx:latest", "--from {registry}/library/nginx:latest"),
    ("--from oci-archive:fat.tar", "--from oci-archive:{fat-archive}"),
    ("registry.example.com/", "{registry}/"),
    ("gcr.io/distroless/", "{registry}/distroless/"),
    ("rootfs:/out", "rootfs:{work}/out"),
    ("--out …", "--out rootfs:{work}/out"),
]


def localised(command: str, stand_ins: dict[str, str], work: Path) -> str:
    for old, new in SUBSTITUTIONS:
        command = command.replace(old, new)
    return command.format(**stand_ins, work=work)


def documented(text: str, stand_ins: dict[str, str], work: Path) -> str:
    """Output as the docs would print it: local paths back to the documented names."""
    for name in ("apps", "my-app", "fat"):
        text = text.replace(stand_ins[name], "/fat")
    return text.replace(f"{work}/", "/")


def test_the_docs_show_commands() -> None:
    assert len(EXAMPLES) >= 12, EXAMPLES
    assert {e.where.split(":")[0] for e in EXAMPLES} >= {"README.md", "docs/images.md", "docs/profiles.md", "docs/loader.md"}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_documented_command(example: Example, stand_ins: dict[str, str], tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    readme = (REPO / "README.md").read_text()
    (work / "my-app.yaml").write_text(readme.split("# my-app.yaml\n", 1)[1].split("```", 1)[0])
    args = shlex.split(localised(example.command, stand_ins, work))[1:]
    result = run_distill(*args, cwd=work, env={"XDG_CACHE_HOME": stand_ins["cache"]})
    assert result.code == example.code, f"{example.where}: {example.command}\n{result.stderr}"
    if example.output is not None:
        shown = documented(result.stdout + result.stderr, stand_ins, work).splitlines()
        assert shown == list(example.output), f"{example.where}: {example.command}"


def test_the_readme_demo_table_agrees_with_the_run(stand_ins: dict[str, str]) -> None:
    """The README's numbers for `distill nginx` come from the run its first example shows."""
    first = next(e for e in EXAMPLES if e.where.startswith("README.md") and e.output)
    assert first.output is not None
    rows = {line.split("  ")[0]: line.split() for line in first.output}
    files, mb = rows["regular files"][-1], rows["bytes in files"][-2]
    source_files, source_mb = rows["regular files"][-2], rows["bytes in files"][-4]
    readme = (REPO / "README.md").read_text()
    assert re.search(rf"^\| `distill nginx` *\| *{files} \| *{mb} \|", readme, re.MULTILINE), (files, mb)
    assert re.search(rf"^\| fat Debian 12 rootfs \(mmdebstrap\) *\| *{source_files} \| *{source_mb} \|", readme, re.MULTILINE)
