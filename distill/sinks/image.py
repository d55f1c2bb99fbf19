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
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from distill.errors import DestinationError, SourceError
from distill.oci import documents, media
from distill.oci.compose import Blob, BuiltImage, BuiltIndex, canonical_json
from distill.oci.digest import VerifiedReader, hex_of, sha256_of
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


def _write_layout_dir(content: _Content, dest: Path, name: str | None) -> None:
    if (dest / "oci-layout").is_file():
        with _locked(dest):
            _add_to_layout(content, dest, name)
        return
    with staged(dest, directory=True) as fresh:
        fresh.chmod(0o755)
        blobs = fresh / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        for blob in _unique(content):
            with open(blobs / hex_of(blob.descriptor.digest), "wb") as out:
                _copy_blob(blob.open, blob.descriptor, out)
        for digest, data in content.documents.items():
            (blobs / hex_of(digest)).write_bytes(data)
        (fresh / "oci-layout").write_bytes(_LAYOUT)
        index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [_index_entry(content, name)]}
        (fresh / "index.json").write_bytes(canonical_json(index))
        for path in (fresh / "oci-layout", fresh / "index.json", *blobs.iterdir()):
            path.chmod(0o644)


def _unique(content: _Content) -> list[Blob]:
    return list({blob.descriptor.digest: blob for blob in content.blobs}.values())


def _add_to_layout(content: _Content, dest: Path, name: str | None) -> None:
    """Add an image to an existing layout, all or nothing: the existing index.json and the blob directories
    are checked first; every new blob and the new index are written as temporary files; then all are
    renamed into place, index.json last. A failure before that leaves the layout exactly as it was."""
    where = f"oci:{dest}"
    index = _existing_index(dest, where)
    blobs = dest / "blobs" / "sha256"
    for directory in (dest / "blobs", blobs):
        if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
            raise DestinationError(
                f"{where}: {directory.relative_to(dest)} is a symlink or not a directory; this is not a layout distill will write into"
            )
    made = [d for d in (dest / "blobs", blobs) if not d.exists()]
    pending: list[tuple[Path, Path]] = []  # (temporary file, final name)
    placed: list[Path] = []  # new files already renamed in, taken back unless index.json was
    committed = False
    try:
        for directory in made:
            directory.mkdir(mode=0o755)
        wanted: list[tuple[str, int, Blob | bytes]] = [(b.descriptor.digest, b.descriptor.size, b) for b in _unique(content)]
        wanted += [(digest, len(data), data) for digest, data in content.documents.items()]  # manifests before an index
        for digest, size, item in wanted:
            final = blobs / hex_of(digest)
            if _holds(final, digest, size):
                continue
            temp = _temp_in(blobs, final.name)
            pending.append((temp, final))
            with open(temp, "wb") as out:
                if isinstance(item, bytes):
                    out.write(item)
                else:
                    _copy_blob(item.open, item.descriptor, out)
        kept = [m for m in index["manifests"] if not (name and (m.get("annotations") or {}).get(media.REF_NAME) == name)]
        document = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [*kept, _index_entry(content, name)]}
        temp = _temp_in(dest, "index.json")
        pending.append((temp, dest / "index.json"))
        temp.write_bytes(canonical_json(document))
        for temp, final in pending:
            temp.chmod(0o644)
            fresh = not final.exists()
            os.replace(temp, final)  # index.json is last
            if fresh:
                placed.append(final)
        committed = True
    except OSError as exc:
        raise DestinationError(f"{where}: cannot write: {exc.strerror or exc}; the layout was left as it was") from None
    finally:
        if not committed:
            for leftover in [temp for temp, _ in pending] + placed:
                leftover.unlink(missing_ok=True)
            for directory in reversed(made):
                with contextlib.suppress(OSError):
                    directory.rmdir()


def _existing_index(dest: Path, where: str) -> dict[str, Any]:
    """The layout's index.json, checked like any image document; refused (exit 5) before anything is written."""
    path = dest / "index.json"
    if not path.exists() and not path.is_symlink():
        return {"manifests": []}
    if path.is_symlink() or not path.is_file():
        raise DestinationError(f"{where}: index.json is a symlink or not a regular file; this is not a layout distill will write into")
    try:
        layout_file = documents.load_object((dest / "oci-layout").read_bytes(), f"{where}: oci-layout")
        documents.check_layout_file(layout_file, f"{where}: oci-layout")
        return documents.check_index(documents.load_object(path.read_bytes(), f"{where}: index.json"), f"{where}: index.json")
    except SourceError as exc:
        raise DestinationError(f"{exc}; not writing into this layout") from None
    except OSError as exc:
        raise DestinationError(f"{where}: cannot read index.json: {exc.strerror or exc}") from None


def _holds(path: Path, digest: str, size: int) -> bool:
    """True when `path` is a regular file with exactly this size and digest (an existing blob is verified,
    never trusted by its name); anything else is replaced."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISREG(st.st_mode) or st.st_size != size:
        return False
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest() == digest


def _temp_in(directory: Path, name: str) -> Path:
    fd, temp = tempfile.mkstemp(prefix=f".{name}.distill-", dir=directory)
    os.close(fd)
    return Path(temp)


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
        add("index.json", canonical_json({"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [_index_entry(content, name)]}))
        if docker is not None:
            tags = [_familiar(name)] if name else []
            entry = {
                "Config": f"blobs/sha256/{hex_of(docker.config_blob.descriptor.digest)}",
                "RepoTags": tags,
                "Layers": [f"blobs/sha256/{hex_of(b.descriptor.digest)}" for b in docker.layers],
            }
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
        response = client.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            repository,
            actions=("pull", "push"),
            headers={"Content-Type": kind},
            body=functools.partial(bytes, data),
            ok=(201, 400, 415),
        )
        status = response.status_code
        response.close()
        if status == 201:
            announced, digest = response.headers.get("Docker-Content-Digest"), sha256_of(data)
            if announced and announced != digest:
                raise DestinationError(f"{client.registry}/{repository}: the registry stored the index as {announced}, not {digest}")
            return digest if kind == media.OCI_INDEX else f"{digest} (as a Docker manifest list: the registry refused the OCI index)"
    raise DestinationError(
        f"{client.registry}/{repository}: the registry refused both the OCI image index and the Docker "
        f"manifest list (HTTP {status}); push one platform at a time with --platform os/arch"
    )


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
