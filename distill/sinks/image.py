"""Image sinks: `oci:`, `oci-archive:`, `docker-archive:`, `docker://` and `docker-daemon:`.

All write the same manifest, config and blobs, so every sink gives the same manifest digest.
Several platforms (`--platform all`) go out as one OCI image index over every platform's manifest:
layouts and archives name the index in `index.json`, a push puts each manifest by digest and the
index under the tag. A registry that refuses the OCI index media type (HTTP 400 or 415 on that
PUT, as registries that predate OCI do) gets the same list as a Docker manifest list instead.
Layouts and archives are written beside the destination and renamed into place; an existing OCI
layout gains the image (blobs first, `index.json` last, under a lock, so concurrent runs do not
corrupt it). A push uploads what the registry lacks, mounting base layers from the base's
repository when both live on one registry, and puts the manifest last.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from distill.errors import DestinationError
from distill.oci import media
from distill.oci.compose import Blob, BuiltImage, BuiltIndex, canonical_json
from distill.oci.digest import VerifiedReader, hex_of, sha256_of
from distill.oci.image import parse_json
from distill.reference import ReferenceError, parse_reference
from distill.refs import Ref
from distill.registry.options import RegistryOptions
from distill.sinks.staging import staged
from distill.transports import transport

if TYPE_CHECKING:
    from distill.registry.client import RegistryClient

__all__ = ["write_image"]
_LAYOUT = canonical_json({"imageLayoutVersion": "1.0.0"})


class _Content:
    """What a layout or archive holds: blobs, the manifests (and index) as bytes, and the top descriptor."""

    def __init__(self, built: BuiltImage | BuiltIndex) -> None:
        self.blobs: list[Blob] = built.blobs
        self.documents: dict[str, bytes] = {}
        if isinstance(built, BuiltIndex):
            for image in built.images:
                self.documents[image.manifest_digest] = image.manifest_bytes
            self.documents[built.index_digest] = built.index_bytes
            self.top = (media.OCI_INDEX, built.index_digest, len(built.index_bytes))
        else:
            self.documents[built.manifest_digest] = built.manifest_bytes
            self.top = (media.OCI_MANIFEST, built.manifest_digest, len(built.manifest_bytes))
        self.created = built.created


def write_image(built: BuiltImage | BuiltIndex, ref: Ref, registry: RegistryOptions) -> str:
    """Write `built` to one image destination; return a one-line summary."""
    content = _Content(built)
    digest = content.top[1]
    if isinstance(built, BuiltIndex) and not transport(ref.transport).platforms:
        raise AssertionError(f"{ref.transport} takes one platform")  # the pipeline refuses this before planning
    if ref.transport == "oci":
        _write_layout_dir(content, Path(ref.path).absolute(), ref.name)
        return f"{ref}: {digest}"
    if ref.transport in ("oci-archive", "docker-archive"):
        dest = Path(ref.path).absolute()
        with staged(dest, directory=False) as temp, open(temp, "wb") as out:
            docker = built if isinstance(built, BuiltImage) and ref.transport == "docker-archive" else None
            _write_archive(content, out, ref.name, docker=docker)
        return f"{ref}: {digest}"
    if ref.transport == "docker":
        return f"{ref}: pushed {_push(built, ref, registry)}"
    assert isinstance(built, BuiltImage)
    if ref.transport == "docker-daemon":
        with tempfile.TemporaryFile() as archive:
            _write_archive(content, archive, ref.name, docker=built)
            size = archive.tell()
            archive.seek(0)
            from distill.daemon import DaemonClient

            said = DaemonClient(error=DestinationError).load(archive, size)
        return f"{ref}: {said}"
    raise AssertionError(ref.transport)


def _index_entry(content: _Content, name: str | None) -> dict[str, Any]:
    kind, digest, size = content.top
    entry: dict[str, Any] = {"mediaType": kind, "digest": digest, "size": size}
    if name:
        entry["annotations"] = {media.REF_NAME: name}
        if "/" in name:
            with contextlib.suppress(ReferenceError):  # a tag that is no reference gets no containerd name
                entry["annotations"][media.CONTAINERD_NAME] = str(parse_reference(name))
    return entry


def _copy_blob(built_open: Any, descriptor: Any, out: BinaryIO) -> None:
    with VerifiedReader(built_open(), descriptor.digest, descriptor.size, f"blob {descriptor.digest[:19]}") as reader:
        shutil.copyfileobj(reader, out, 1 << 20)
        reader.verify()


# -- layouts and archives --------------------------------------------------------------------------


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _put_blobs(content: _Content, root: Path) -> list[Path]:
    """Write the blobs `root` lacks; returns the files added, for an interrupted run to take back."""
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    added: list[Path] = []
    try:
        for blob in content.blobs:
            target = blobs / hex_of(blob.descriptor.digest)
            if target.is_file() and target.stat().st_size == blob.descriptor.size:
                continue
            if not target.exists():
                added.append(target)  # before the rename: a signal may end the run right after it
            with staged(target, directory=False) as temp, open(temp, "wb") as out:
                _copy_blob(blob.open, blob.descriptor, out)
            target.chmod(0o644)
        for digest, data in content.documents.items():  # manifests before the index that names them
            manifest = blobs / hex_of(digest)
            if not manifest.exists():
                added.append(manifest)
                with staged(manifest, directory=False) as temp:
                    temp.write_bytes(data)
                manifest.chmod(0o644)
    except BaseException:
        _take_back(added)
        raise
    return added


def _take_back(added: list[Path]) -> None:
    for path in added:
        path.unlink(missing_ok=True)


def _write_layout_dir(content: _Content, dest: Path, name: str | None) -> None:
    if (dest / "oci-layout").is_file():  # add to an existing layout, index.json last
        with _locked(dest):
            added = _put_blobs(content, dest)
            index_path = dest / "index.json"
            document = b""
            try:
                index = parse_json(index_path.read_bytes(), f"oci:{dest}: index.json") if index_path.exists() else {}
                kept = [m for m in index.get("manifests", [])
                        if not (name and isinstance(m, dict) and (m.get("annotations") or {}).get(media.REF_NAME) == name)]
                document = canonical_json({"schemaVersion": 2, "mediaType": media.OCI_INDEX,
                                           "manifests": [*kept, _index_entry(content, name)]})
                with staged(index_path, directory=False) as temp:
                    temp.write_bytes(document)
                    temp.chmod(0o644)
            except BaseException:
                if not (index_path.exists() and index_path.read_bytes() == document):  # not committed: take it all back
                    _take_back(added)
                raise
        return
    with staged(dest, directory=True) as fresh:
        fresh.chmod(0o755)
        _put_blobs(content, fresh)
        (fresh / "oci-layout").write_bytes(_LAYOUT)
        index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [_index_entry(content, name)]}
        (fresh / "index.json").write_bytes(canonical_json(index))
        for path in (fresh / "oci-layout", fresh / "index.json"):
            path.chmod(0o644)


def _write_archive(content: _Content, out: BinaryIO, name: str | None, *, docker: BuiltImage | None) -> None:
    """An OCI layout as a tar; with `docker` (the one image), also Docker's manifest.json (the dual
    format Docker 25+ writes)."""
    mtime = content.created
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(path: str, data: bytes | None = None, stream: Any = None, size: int = 0) -> None:
            info = tarfile.TarInfo(path)
            info.mtime, info.uname, info.gname = mtime, "", ""
            if data is None and stream is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                return
            info.mode, info.size = 0o644, len(data) if data is not None else size
            tar.addfile(info, io.BytesIO(data) if data is not None else stream)

        add("blobs/")
        add("blobs/sha256/")
        blobs = sorted({b.descriptor.digest: b for b in content.blobs}.values(), key=lambda b: b.descriptor.digest)
        entries = sorted([*[(b.descriptor.digest, b) for b in blobs], *[(d, None) for d in content.documents]], key=lambda e: e[0])
        for digest, blob in entries:
            path = f"blobs/sha256/{hex_of(digest)}"
            if blob is None:
                add(path, content.documents[digest])
                continue
            with VerifiedReader(blob.open(), digest, blob.descriptor.size, f"blob {digest[:19]}") as reader:
                add(path, stream=reader, size=blob.descriptor.size)
                reader.verify()
        add("index.json", canonical_json({"schemaVersion": 2, "mediaType": media.OCI_INDEX,
                                          "manifests": [_index_entry(content, name)]}))
        if docker is not None:
            tags = [_familiar(name)] if name else []
            entry = {"Config": f"blobs/sha256/{hex_of(docker.config_blob.descriptor.digest)}", "RepoTags": tags,
                     "Layers": [f"blobs/sha256/{hex_of(b.descriptor.digest)}" for b in docker.layers]}
            add("manifest.json", canonical_json([entry]))
        add("oci-layout", _LAYOUT)


def _familiar(name: str) -> str:
    try:
        return parse_reference(name).familiar
    except ReferenceError:
        raise DestinationError(f"docker-archive: {name!r} is not an image name such as app:1 or registry/app:1") from None


# -- registry ----------------------------------------------------------------------------------------


def _push(built: BuiltImage | BuiltIndex, ref: Ref, options: RegistryOptions) -> str:
    from distill.registry.client import RegistryClient  # loads requests only when pushing

    assert ref.image is not None
    client = RegistryClient(ref.image, replace(options, error=DestinationError))
    tag = ref.image.tag
    if isinstance(built, BuiltImage):
        return _push_image(client, built, ref, tag or built.manifest_digest)
    for image in built.images:  # every manifest by digest first, so the index never names a missing one
        _push_image(client, image, ref, image.manifest_digest)
    return _put_index(client, built, ref.image.repository, tag or built.index_digest)


def _put_index(client: RegistryClient, built: BuiltIndex, repository: str, reference: str) -> str:
    """PUT the OCI index; a registry that refuses its media type (400/415) gets the Docker manifest list."""
    for data, kind in ((built.index_bytes, media.OCI_INDEX), (built.docker_list_bytes, media.DOCKER_LIST)):
        response = client.request("PUT", f"/v2/{repository}/manifests/{reference}", repository, actions=("pull", "push"),
                                  headers={"Content-Type": kind}, body=functools.partial(bytes, data), ok=(201, 400, 415))
        status = response.status_code
        response.close()
        if status == 201:
            announced, digest = response.headers.get("Docker-Content-Digest"), sha256_of(data)
            if announced and announced != digest:
                raise DestinationError(f"{client.registry}/{repository}: the registry stored the index as {announced}, not {digest}")
            return digest if kind == media.OCI_INDEX else f"{digest} (as a Docker manifest list: the registry refused the OCI index)"
    raise DestinationError(f"{client.registry}/{repository}: the registry refused both the OCI image index and the Docker "
                           f"manifest list (HTTP {status}); push one platform at a time with --platform os/arch")


def _push_image(client: RegistryClient, built: BuiltImage, ref: Ref, reference: str) -> str:
    assert ref.image is not None
    repository = ref.image.repository
    base_repository = None
    if built.base is not None and built.base_name:
        try:
            base_ref = parse_reference(built.base_name)
            if base_ref.registry == ref.image.registry and base_ref.repository != repository:
                base_repository = base_ref.repository
        except ReferenceError:
            pass
    base_digests = {d.digest for d in built.base.layers} if built.base else set()
    for blob in built.blobs:
        digest, size = blob.descriptor.digest, blob.descriptor.size
        if client.has_blob(repository, digest):
            continue
        if base_repository and digest in base_digests and client.mount_blob(repository, digest, base_repository):
            continue
        with tempfile.TemporaryFile() as spooled:
            _copy_blob(blob.open, blob.descriptor, spooled)

            def reopen(file: BinaryIO = spooled) -> BinaryIO:
                file.seek(0)
                return file

            client.upload_blob(repository, digest, size, reopen)
    return client.put_manifest(repository, reference, built.manifest_bytes, media.OCI_MANIFEST)
