"""`oci:DIR[:REF]` and `oci-archive:FILE[:REF]`: an OCI image layout, as a directory or a tar.

Read: the image `REF` names (or the only one) through `index.json`, every blob verified.
Written: the same manifest, config and blobs every image sink writes, so every sink gives the same
manifest digest; several platforms (`--platform all`) go out as one OCI image index named in
`index.json`. Layouts and archives are written beside the destination and renamed into place; an
existing layout gains the image (blobs first, `index.json` last, under a lock, so concurrent runs do
not corrupt it). The tar stores, the archive writer and `Content` serve `docker-archive:` and
`docker-daemon:` too, and `copy_blob` the registry push.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import posixpath
import secrets
import shutil
import stat
import tarfile
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from distill.errors import DestinationError, SourceError
from distill.oci import documents, media
from distill.oci.compose import Blob, BuiltImage, BuiltIndex, canonical_json
from distill.oci.digest import VerifiedReader, hex_of
from distill.oci.image import MAX_MANIFEST_BYTES, Descriptor, Image, parse_json
from distill.oci.layers import normalize_member_name
from distill.oci.resolve import read_verified, resolve_image
from distill.reference import ReferenceError, parse_reference
from distill.refs import Ref
from distill.registry.options import RegistryOptions
from distill.staging import staged
from distill.target import Platform

if TYPE_CHECKING:
    from distill.transports import SourceOptions

__all__ = ["Content", "DirStore", "TarStore", "copy_blob", "layout_image", "read_image", "write_archive", "write_image"]
_LAYOUT = canonical_json({"imageLayoutVersion": "1.0.0"})


class DirStore:
    """Files of a layout directory; every name is checked to stay inside it."""

    def __init__(self, root: str, name: str) -> None:
        self.root = Path(root)
        self.name = name
        if not self.root.is_dir():
            raise SourceError(f"{name}: no such directory")

    def _path(self, relpath: str) -> Path:
        clean = normalize_member_name(relpath, self.name)
        path = self.root / clean.lstrip("/")
        if path.is_symlink() or not path.is_file():
            raise SourceError(f"{self.name}: {clean.lstrip('/')} is missing or not a regular file")
        return path

    def open(self, relpath: str) -> BinaryIO:
        return open(self._path(relpath), "rb")

    def probe(self, relpath: str, size: int) -> None:
        if self._path(relpath).stat().st_size != size:
            raise SourceError(f"{self.name}: {relpath} is not the {size} bytes its descriptor declares")


class TarStore:
    """Files of a tar archive (oci-archive, docker-archive), read in place by member offset."""

    def __init__(self, source: str | BinaryIO, name: str) -> None:
        self.name = name
        self.file = source  # an open file stays referenced (and open) as long as the store
        self.lock = threading.Lock()  # only for a file object without a descriptor (no positional reads)
        try:
            if isinstance(source, str):
                self.tar = tarfile.open(source, mode="r:")
            else:
                self.tar = tarfile.open(fileobj=source, mode="r:")
        except (OSError, tarfile.TarError, ValueError, OverflowError) as exc:
            raise SourceError(f"{name}: cannot read the archive ({getattr(exc, 'strerror', None) or exc})") from None
        weakref.finalize(self, self.tar.close)  # the archive stays open while anything can still read a blob from it
        self.fd: int | None = None
        with contextlib.suppress(AttributeError, OSError, io.UnsupportedOperation):
            self.fd = self.tar.fileobj.fileno()  # type: ignore[attr-defined]
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self.tar:
                self.members[normalize_member_name(member.name, name)] = member
            ended = self._ends_properly()
        except (OSError, tarfile.TarError, EOFError, ValueError, OverflowError) as exc:
            raise SourceError(f"{name}: truncated or corrupt archive ({exc})") from None
        if not ended:  # tarfile takes a header cut short for the end of the archive
            raise SourceError(f"{name}: truncated archive: it stops before its end-of-archive marker")

    def _ends_properly(self) -> bool:
        """True when two zero blocks follow the last member, as every tar writer puts them."""
        fileobj = self.tar.fileobj
        assert fileobj is not None
        fileobj.seek(self.tar.offset)
        tail = fileobj.read(2 * tarfile.BLOCKSIZE)
        return len(tail) == 2 * tarfile.BLOCKSIZE and not tail.strip(b"\0")

    def has(self, relpath: str) -> bool:
        return normalize_member_name(relpath, self.name) in self.members

    def probe(self, relpath: str, size: int) -> None:
        member = self.members.get(normalize_member_name(relpath, self.name))
        if member is None or not member.isfile() or member.size != size:
            raise SourceError(f"{self.name}: {relpath} is missing from the archive or not the {size} bytes its descriptor declares")

    def open(self, relpath: str) -> BinaryIO:
        """The member's bytes, read by position: several layers are read from one archive at once (threads),
        so no stream may depend on the shared file's offset."""
        member = self.members.get(normalize_member_name(relpath, self.name))
        for _hop in range(8):  # a link to a link to ... a file; a loop is not followed for ever
            if member is None or not (member.islnk() or member.issym()):
                break
            target = posixpath.join(posixpath.dirname(member.name), member.linkname) if member.issym() else member.linkname
            linked = self.members.get(normalize_member_name(target, self.name))
            if linked is None:
                raise SourceError(f"{self.name}: {relpath} links to {member.linkname[:200]!r}, which the archive does not hold")
            member = linked
        if member is None or not member.isfile():
            raise SourceError(f"{self.name}: {relpath} is missing from the archive")
        if member.sparse is not None:
            raise SourceError(f"{self.name}: {relpath} is a sparse member, which an image archive never holds")
        return io.BufferedReader(_Member(self, member.offset_data, member.size, f"{self.name}: {relpath}"))

    def read_at(self, offset: int, count: int) -> bytes:
        """`count` bytes (fewer at the archive's end) at `offset`, leaving the shared file offset alone."""
        if self.fd is not None:
            return os.pread(self.fd, count, offset)
        fileobj = self.tar.fileobj
        assert fileobj is not None
        with self.lock:
            fileobj.seek(offset)
            return fileobj.read(count)


class _Member(io.RawIOBase):
    """One member's bytes, from its own position in the archive; an archive that ends inside them is a
    SourceError, not a short stream."""

    def __init__(self, store: TarStore, offset: int, size: int, where: str) -> None:
        super().__init__()
        self.store, self.offset, self.left, self.where = store, offset, size, where

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self.left)
        if want == 0:
            return 0
        try:
            data = self.store.read_at(self.offset, want)
        except (OSError, ValueError, OverflowError) as exc:
            raise SourceError(f"{self.where}: the archive is unreadable here ({exc})") from None
        if not data:
            raise SourceError(f"{self.where}: the archive is truncated or corrupt here (it ends inside the member)")
        memoryview(buffer)[: len(data)] = data
        self.offset += len(data)
        self.left -= len(data)
        return len(data)


def _blob(store: DirStore | TarStore, descriptor: Descriptor) -> BinaryIO:
    return store.open(f"blobs/sha256/{hex_of(descriptor.digest)}")


def layout_image(store: DirStore | TarStore, ref: str | None, platform: Platform) -> Image:
    """The image named `ref` (or the only one) in an OCI layout."""
    with store.open("index.json") as stream:
        raw_index = stream.read(MAX_MANIFEST_BYTES + 1)
    index = documents.check_index(parse_json(raw_index, f"{store.name}: index.json"), f"{store.name}: index.json")
    entries: list[dict[str, Any]] = index["manifests"]
    names = [_name(e) for e in entries]

    def read(descriptor: Descriptor) -> bytes:
        return read_verified(lambda d: _blob(store, d), descriptor, store.name)

    def open_blob(descriptor: Descriptor) -> BinaryIO:
        return VerifiedReader(
            _blob(store, descriptor),
            descriptor.digest,
            descriptor.size,  # type: ignore[return-value]
            f"{store.name}: blob {descriptor.digest[:19]}",
        )

    def probe(descriptor: Descriptor) -> None:
        store.probe(f"blobs/sha256/{hex_of(descriptor.digest)}", descriptor.size)

    if ref is None and len(entries) > 1 and not any(names):
        # an unnamed multi-platform layout: index.json is itself the index to pick a platform from
        return resolve_image(store.name, raw_index, None, read, read, open_blob, platform, probe)
    if ref is not None:
        chosen = [
            e for e, n in zip(entries, names, strict=True) if n == ref or (e.get("annotations") or {}).get(media.CONTAINERD_NAME) == ref
        ]
        if not chosen:
            known = ", ".join(sorted(n for n in names if n)) or "none"
            raise SourceError(f"{store.name}: no image named {ref!r} in the layout (names: {known})")
    elif len(entries) != 1:
        example = next((n for n in names if n), "REF")
        raise SourceError(f"{store.name}: the layout holds {len(entries)} images; name one, e.g. {store.name}:{example}")
    else:
        chosen = entries
    descriptor = Descriptor.from_json(chosen[0])
    return resolve_image(store.name, read(descriptor), descriptor.media_type, read, read, open_blob, platform, probe)


def _name(entry: dict[str, Any]) -> str | None:
    annotations: dict[str, str] = entry.get("annotations") or {}
    return annotations.get(media.REF_NAME) or annotations.get(media.CONTAINERD_NAME)


def read_image(ref: Ref, options: SourceOptions) -> Image:
    store = DirStore(ref.path, str(ref)) if ref.transport == "oci" else TarStore(ref.path, str(ref))
    return layout_image(store, ref.name, options.platform)


# -- writing -----------------------------------------------------------------------------------------


def write_image(built: BuiltImage | BuiltIndex, ref: Ref, registry: RegistryOptions) -> str:
    content = Content(built)
    dest = Path(ref.path).absolute()
    if ref.transport == "oci":
        _write_layout_dir(content, dest, ref.name)
    else:
        with staged(dest, directory=False) as temp, open(temp, "wb") as out:
            write_archive(content, out, ref.name, docker=None)
    return f"{ref}: {content.top[1]}"


class Content:
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


def _index_entry(content: Content, name: str | None) -> dict[str, Any]:
    kind, digest, size = content.top
    entry: dict[str, Any] = {"mediaType": kind, "digest": digest, "size": size}
    if name:
        entry["annotations"] = {media.REF_NAME: name}
        if "/" in name:
            with contextlib.suppress(ReferenceError):  # a tag that is no reference gets no containerd name
                entry["annotations"][media.CONTAINERD_NAME] = str(parse_reference(name))
    return entry


def copy_blob(built_open: Any, descriptor: Any, out: BinaryIO) -> None:
    with VerifiedReader(built_open(), descriptor.digest, descriptor.size, f"blob {descriptor.digest[:19]}") as reader:
        shutil.copyfileobj(reader, out, 1 << 20)
        reader.verify()


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_layout_dir(content: Content, dest: Path, name: str | None) -> None:
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
                copy_blob(blob.open, blob.descriptor, out)
        for digest, data in content.documents.items():
            (blobs / hex_of(digest)).write_bytes(data)
        (fresh / "oci-layout").write_bytes(_LAYOUT)
        index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [_index_entry(content, name)]}
        (fresh / "index.json").write_bytes(canonical_json(index))
        for path in (fresh / "oci-layout", fresh / "index.json", *blobs.iterdir()):
            path.chmod(0o644)


def _unique(content: Content) -> list[Blob]:
    return list({blob.descriptor.digest: blob for blob in content.blobs}.values())


def _add_to_layout(content: Content, dest: Path, name: str | None) -> None:
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
    index_temp: Path | None = None  # once it is gone, index.json was replaced: the new blobs are the image's
    try:
        for directory in made:
            directory.mkdir(mode=0o755)
        wanted: list[tuple[str, int, Blob | bytes]] = [(b.descriptor.digest, b.descriptor.size, b) for b in _unique(content)]
        wanted += [(digest, len(data), data) for digest, data in content.documents.items()]  # manifests before an index
        for digest, size, item in wanted:
            final = blobs / hex_of(digest)
            if _holds(final, digest, size):
                continue
            temp = _temp_name(blobs, final.name)
            pending.append((temp, final))  # before the file exists, so a signal right after it is made cannot leave it
            with open(temp, "xb") as out:
                if isinstance(item, bytes):
                    out.write(item)
                else:
                    copy_blob(item.open, item.descriptor, out)
        kept = [m for m in index["manifests"] if not (name and (m.get("annotations") or {}).get(media.REF_NAME) == name)]
        document = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": [*kept, _index_entry(content, name)]}
        temp = _temp_name(dest, "index.json")
        pending.append((temp, dest / "index.json"))
        with open(temp, "xb") as out:
            out.write(canonical_json(document))
        index_temp = temp
        for temp, final in pending:
            temp.chmod(0o644)
            if not final.exists():
                placed.append(final)  # before the rename, so a signal right after it cannot leave it behind
            os.replace(temp, final)  # index.json is last
        committed = True
    except OSError as exc:
        raise DestinationError(f"{where}: cannot write: {exc.strerror or exc}; the layout was left as it was") from None
    finally:
        # a signal (KeyboardInterrupt, SystemExit) can land between the rename of index.json and
        # `committed = True`: the rename itself tells whether the layout now names the new blobs
        committed = committed or (index_temp is not None and not index_temp.exists())
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


def _temp_name(directory: Path, name: str) -> Path:
    """A fresh temporary name beside `name`, not yet created: the caller records it, then makes it with "xb"."""
    return directory / f".{name}.distill-{secrets.token_hex(8)}"


def write_archive(content: Content, out: BinaryIO, name: str | None, *, docker: BuiltImage | None) -> None:
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
