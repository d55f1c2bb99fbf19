"""Fuzz the layer index (distill's tar header reader, distill/oci/tarindex.py) and the merged view: any
bytes as an uncompressed layer give a view or a SourceError, nothing else."""

import os
import tempfile
from pathlib import Path

import atheris
from harness import run

with atheris.instrument_imports(include=["distill"]):
    from distill.errors import SourceError
    from distill.oci.merged import ImageView
    from distill.oci.tarindex import members as layer_index

SPOOL = os.path.join(tempfile.mkdtemp(prefix="fuzz-layer-"), "layer.tar")


def test_one_input(data: bytes) -> None:
    with open(SPOOL, "wb") as out:
        out.write(data)
    try:
        members, _ = layer_index(Path(SPOOL), "fuzz")
        view = ImageView("fuzz")
        view.apply(Path(SPOOL), members, "fuzz")
        for node in view.walk("/"):
            if node.is_file:
                with view.open(node.path) as stream:
                    stream.read()
    except SourceError:
        pass


if __name__ == "__main__":
    run(test_one_input)
