"""Load a profile: find it, follow `extends` (a DAG), merge, and freeze it as a `Profile`.

Merging: parents in order, then the file itself. A child may override anything it inherits:
it sets a setting, adds to a list, or clears (`null`) or replaces (`{replace: ...}`) what its
parents gave under a key (the markers `schema.CLEAR`, applied here). Two parents that set the
same key (a path, an account, a system or image setting) to different values conflict, and the
child must settle it. Lists (binaries, exclude, exposed
ports, volumes) are unions. Every problem in every file is reported before anything runs.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

from distill.builtin_index import indexed_document
from distill.errors import ProfileError
from distill.schema import CLEAR, EMPTY, MAX_PROFILE_BYTES, SCHEMA, TOKEN, Settings, validate_document
from distill.specs import (
    BinarySpec,
    DlopenPriority,
    GroupSpec,
    HintMode,
    PackageSpec,
    PathKind,
    PathSpec,
    PluginSpec,
    Setuid,
    Switch,
    UserSpec,
)

__all__ = [
    "Profile",
    "SystemConfig",
    "RuntimeConfig",
    "ImageConfig",
    "builtin_dir",
    "builtin_profiles",
    "load_profile",
    "adhoc_layer",
    "profile_paths",
    "expand_tokens",
]


@dataclass(frozen=True)
class SystemConfig:
    passwd: bool = True
    shadow: Switch = Switch.AUTO
    nsswitch: bool = True
    tmp: bool = True
    run: bool = True
    timezone: str | None = "UTC"
    ca_certificates: Switch = Switch.AUTO
    os_release: bool = True
    package_metadata: Switch = Switch.AUTO
    setuid: Setuid = Setuid.STRIP


@dataclass(frozen=True)
class RuntimeConfig:
    """Files programs load at run time, which no ELF header names (see docs/profiles.md)."""

    nss: Switch = Switch.NO
    gconv: tuple[str, ...] = ()  # charsets, or ("*",) for all
    openssl: bool = False
    libgcc_s: Switch = Switch.NO
    locales: tuple[str, ...] = ()
    tzdata: tuple[str, ...] = ()  # zones, or ("*",) for all
    dlopen_notes: DlopenPriority = DlopenPriority.NO
    plugins: tuple[PluginSpec, ...] = ()  # plugin sets and the program that loads each
    python: Switch = Switch.AUTO  # a shipped Python's standard library (distill.interpreters)
    perl: Switch = Switch.AUTO  # a shipped Perl's core modules (distill.scriptlibs)
    ruby: Switch = Switch.AUTO  # a shipped Ruby's standard library (distill.scriptlibs)
    node: Switch = Switch.AUTO  # the built-in modules a distribution's Node keeps outside its binary


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str | None = None
    user: str | None = None
    expose: tuple[str, ...] = ()
    stop_signal: str | None = None
    volumes: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A merged, validated profile. Each spec carries its origin (`file: key`) for reports."""

    name: str
    description: str
    files: tuple[str, ...]
    digest: str
    binaries: tuple[tuple[BinarySpec, str], ...] = ()
    packages: tuple[tuple[PackageSpec, str], ...] = ()
    paths: tuple[tuple[PathSpec, str], ...] = ()
    exclude: tuple[str, ...] = ()
    dangling: tuple[str, ...] = ()  # symlinks allowed to point at nothing in the output
    users: tuple[tuple[UserSpec, str], ...] = ()
    groups: tuple[tuple[GroupSpec, str], ...] = ()
    runtime: RuntimeConfig = RuntimeConfig()
    system: SystemConfig = SystemConfig()
    image: ImageConfig = ImageConfig()
    base: str = "scratch"
    hints: HintMode = HintMode.REPORT  # executables and libraries named in shipped strings (distill.hints)
    origins: dict[str, str] = field(default_factory=dict)  # "system.timezone" -> who set it, for hints

    def origin(self, key: str) -> str:
        """Who set a scalar key (`profiles/nginx.yaml: system.timezone`, `command line: --tz Europe/Paris`)."""
        return self.origins.get(key, key)


COMMAND_LINE = "command line"


def from_command_line(origin: str) -> bool:
    """Whether a flag set it: hints then name the flag, not a profile key."""
    return origin.startswith(f"{COMMAND_LINE}: ")


def profile_paths(profile: Profile) -> list[tuple[str, str]]:
    """(path, origin) of every image path the profile names: binaries, paths (and copy/symlink sources), exclude."""
    out = [(spec.path, origin) for spec, origin in profile.binaries]
    for spec, origin in profile.paths:
        out.append((spec.path, origin))
        if spec.kind in (PathKind.COPY, PathKind.SYMLINK) and spec.value:
            out.append((spec.value, origin))
    out.extend((pattern, "exclude") for pattern in profile.exclude)
    return out


def expand_tokens(profile: Profile, values: dict[str, str]) -> Profile:
    """The profile with `$MULTIARCH`/`$LIB` (or `${...}`) in its paths replaced by one target's `values`."""

    def expand(text: str) -> str:
        return TOKEN.sub(lambda m: values.get(m.group(1) or m.group(2), m.group(0)), text)

    def expand_path(spec: PathSpec) -> PathSpec:
        names_path = spec.value and spec.kind in (PathKind.COPY, PathKind.SYMLINK)
        return replace(spec, path=expand(spec.path), value=expand(spec.value) if names_path and spec.value else spec.value)

    return replace(
        profile,
        binaries=tuple((replace(spec, path=expand(spec.path)), origin) for spec, origin in profile.binaries),
        paths=tuple((expand_path(spec), origin) for spec, origin in profile.paths),
        exclude=tuple(expand(pattern) for pattern in profile.exclude),
    )


def builtin_dir() -> Path:
    """Where the built-in profiles live: inside the wheel, or `profiles/` of a source checkout."""
    packaged = Path(__file__).parent / "profiles"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "profiles"


def builtin_profiles() -> list[tuple[str, str]]:
    """(name, description) of every built-in profile and fragment."""
    out = []
    for path in sorted(_builtin_root().glob("*.yaml"), key=lambda p: p.stem):
        document, _ = _parse(path, path.read_text(encoding="utf-8"), str(path), builtin=True)
        description = document.get("description", "") if isinstance(document, dict) else ""
        out.append((path.stem, str(description)))
    return out


def _parse(path: Path, text: str, display: str, *, builtin: bool) -> tuple[Any, str | None]:
    """(document, error) of a profile file; a built-in comes from the pre-parsed index while it matches its text."""
    if builtin and (indexed := indexed_document(path, text)) is not None:
        return indexed[0], None
    from distill.yamlsafe import parse_yaml  # PyYAML only for what the index does not hold

    return parse_yaml(text, display)


@functools.cache
def _builtin_root() -> Path:
    return builtin_dir().resolve()


def _display(path: Path) -> str:
    """How messages name a profile file: relative to the built-ins, else as the user gave it."""
    try:
        return "profiles/" + str(path.relative_to(builtin_dir()))
    except ValueError:
        return str(path)


class _Resolver:
    """Follows `extends` depth first, memoising each file's merged settings."""

    def __init__(self) -> None:
        self.issues: list[str] = []
        self.done: dict[Path, Settings] = {}
        self.order: list[Path] = []
        self.names: dict[Path, tuple[str, str]] = {}

    def load(self, path: Path, stack: tuple[Path, ...], where: str) -> Settings:
        path = path.resolve()
        if path in stack:
            cycle = " -> ".join(_display(p) for p in (*stack[stack.index(path) :], path))
            self.issues.append(f"{where}: extends: cycle {cycle}; remove one of these extends")
            return {}
        if path in self.done:
            return self.done[path]
        display = _display(path)
        text = self._read(path, where, display)
        if text is None:
            return {}
        document, error = _parse(path, text, display, builtin=path.parent == _builtin_root())
        if error:
            self.issues.append(error)
            return {}
        own, extends, issues = validate_document(document, display)
        self.issues.extend(issues)
        parents = []
        for i, reference in enumerate(extends):
            located = self._locate(reference, path, f"{display}: extends[{i}]")
            if located is not None:
                parents.append(self.load(located, (*stack, path), f"{display}: extends[{i}]"))
        merged = self._merge(parents, own, display)
        if isinstance(document, dict):
            self.names[path] = (str(document.get("name") or path.stem), str(document.get("description") or ""))
        self.done[path] = merged
        self.order.append(path)
        return merged

    def _read(self, path: Path, where: str, display: str) -> str | None:
        try:
            if path.stat().st_size > MAX_PROFILE_BYTES:
                self.issues.append(f"{display}: larger than {MAX_PROFILE_BYTES // 1024} KiB; a profile is a short list of rules")
                return None
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.issues.append(f"{where}: no profile file {display}; check the name or path")
        except (OSError, UnicodeDecodeError) as exc:
            self.issues.append(f"{where}: cannot read {display}: {getattr(exc, 'strerror', None) or exc}")
        return None

    def _locate(self, reference: str, including: Path, where: str) -> Path | None:
        if reference.startswith("/"):
            self.issues.append(f"{where}: {reference!r} is absolute; use a built-in name or a path relative to this file")
            return None
        if "/" in reference or reference.endswith((".yaml", ".yml")):
            return including.parent / reference
        return builtin_dir() / f"{reference}.yaml"

    def _merge(self, parents: list[Settings], own: Settings, display: str) -> Settings:
        clears = {key[1:]: origin for key, (_, origin) in own.items() if key[0] == CLEAR}
        empties = {key[1:]: origin for key, (_, origin) in own.items() if key[0] == EMPTY}
        own = {key: item for key, item in own.items() if key[0] not in (CLEAR, EMPTY)}
        combined: Settings = {}
        for parent in parents:
            for key, (value, origin) in parent.items():
                if any(key[: len(prefix)] == prefix for prefix in clears):
                    continue  # the child cleared or replaced it
                if key not in combined:
                    combined[key] = (value, origin)
                elif combined[key][0] != value and key not in own:
                    first = combined[key][1]
                    self.issues.append(
                        f"{display}: extends: {first} and {origin} set {_key(key)} differently; set it in {display} to choose"
                    )
        for prefix, origin in empties.items():
            inherited = next((item for key, item in combined.items() if key[: len(prefix)] == prefix), None)
            if inherited is not None:
                self.issues.append(
                    f"{origin}: empty, which adds nothing to what {inherited[1]} gives (lists merge as unions); "
                    "write `null` to clear it, or `{replace: [...]}` to replace it"
                )
        combined.update(own)
        return combined


def _key(key: tuple[str, ...]) -> str:
    head, *rest = key
    return f"{head}[{rest[0]!r}]" if head in ("paths", "binaries", "packages", "users", "groups", "exclude", "dangling") else ".".join(key)


def load_profile(reference: str, *, extra: Settings | None = None, cwd: Path | None = None) -> Profile:
    """Load a built-in name or a profile file, apply `extra` (command-line additions) last."""
    resolver = _Resolver()
    if "/" in reference or reference.endswith((".yaml", ".yml")):
        path = (cwd or Path.cwd()) / reference
    else:
        path = builtin_dir() / f"{reference}.yaml"
        if not path.is_file():
            names = [name for name, _ in builtin_profiles()]
            import difflib  # only for this message

            close = difflib.get_close_matches(reference, names, n=1)
            guess = f" (did you mean {close[0]}?)" if close else ""
            raise ProfileError(
                f"no built-in profile {reference!r}{guess}; known: {', '.join(names)} (or give a file path such as ./my.yaml)"
            )
    settings = resolver.load(path, (), "profile")
    if extra:
        settings = resolver._merge([settings], extra, "command line")
    if resolver.issues:
        raise ProfileError(resolver.issues[0], issues=resolver.issues)
    name, description = resolver.names.get(path.resolve(), (path.stem, ""))
    files = tuple(_display(p) for p in resolver.order)
    return _freeze(name, description, files, settings)


def adhoc_layer(document: dict[str, Any], flag: str | None = None) -> Settings:
    """Validate command-line additions, written as a profile document, into settings.

    With `flag` (`--tz Europe/Paris`), every setting's origin is that flag, so hints can name it.
    """
    where = f"{COMMAND_LINE}: {flag}" if flag else COMMAND_LINE
    settings, _, issues = validate_document({"schema": SCHEMA, **document}, where)
    if issues:
        raise ProfileError(issues[0], issues=issues)
    return {key: (value, where) for key, (value, _) in settings.items()} if flag else settings


def _freeze(name: str, description: str, files: tuple[str, ...], settings: Settings) -> Profile:
    def group(head: str) -> tuple[tuple[Any, str], ...]:
        return tuple((value, origin) for key, (value, origin) in settings.items() if key[0] == head)

    def scalar(*key: str, default: Any = None) -> Any:
        return settings[key][0] if key in settings else default

    def keyed(head: str, sub: str) -> list[str]:
        return [key[2] for key in settings if key[:2] == (head, sub) and len(key) == 3]

    system = SystemConfig(**{key[1].replace("-", "_"): value for key, (value, _) in settings.items() if key[0] == "system"})
    runtime_settings: dict[str, Any] = {
        key[1].replace("-", "_"): value for key, (value, _) in settings.items() if key[0] == "runtime" and len(key) == 2
    }
    runtime_lists: dict[str, Any] = {name: tuple(sorted(keyed("runtime", name))) for name in ("gconv", "locales", "tzdata")}
    plugins = tuple(settings[("runtime", "plugins", host)][0] for host in sorted(keyed("runtime", "plugins")))
    runtime = RuntimeConfig(**runtime_settings, **runtime_lists, plugins=plugins)
    image = ImageConfig(
        entrypoint=scalar("image", "entrypoint"),
        cmd=scalar("image", "cmd"),
        env={k: settings[("image", "env", k)][0] for k in keyed("image", "env")},
        workdir=scalar("image", "workdir"),
        user=scalar("image", "user"),
        expose=tuple(sorted(keyed("image", "expose"))),
        stop_signal=scalar("image", "stop-signal"),
        volumes=tuple(sorted(keyed("image", "volumes"))),
        labels={k: settings[("image", "labels", k)][0] for k in keyed("image", "labels")},
    )
    canonical = json.dumps([[list(k), _plain(v)] for k, (v, _) in sorted(settings.items())], sort_keys=True)
    return Profile(
        name=name,
        description=description,
        files=files,
        digest="sha256:" + hashlib.sha256(canonical.encode()).hexdigest(),
        binaries=group("binaries"),
        packages=group("packages"),
        paths=group("paths"),
        exclude=tuple(key[1] for key in settings if key[0] == "exclude"),
        dangling=tuple(key[1] for key in settings if key[0] == "dangling"),
        users=group("users"),
        groups=group("groups"),
        runtime=runtime,
        system=system,
        image=image,
        base=scalar("base", default="scratch"),
        hints=scalar("hints", default=HintMode.REPORT),
        origins={".".join(key): origin for key, (_, origin) in settings.items() if key[0] in ("system", "image", "base")},
    )


def _plain(value: Any) -> Any:
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value
