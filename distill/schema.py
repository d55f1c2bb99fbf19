"""Validate one profile document (schema distill/v1) into flat, typed settings.

Each setting is keyed by a tuple (`("paths", "/etc/nginx/**")`, `("system", "timezone")`) so
that merging parents and children is one uniform operation (see `profile.py`). Every problem
is collected, each as `FILE: KEY.PATH: what is wrong; what to do`, before anything is raised.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from distill import paths
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
    "SCHEMA",
    "MAX_PROFILE_BYTES",
    "PATH_TOKENS",
    "TOKEN",
    "Settings",
    "validate_document",
    "parse_mode",
    "CLEAR",
    "EMPTY",
    "SHADOW_FILES",
]

SCHEMA = "distill/v1"
MAX_PROFILE_BYTES = 1 << 20

TOP_KEYS = (
    "schema",
    "name",
    "description",
    "extends",
    "binaries",
    "packages",
    "paths",
    "exclude",
    "dangling",
    "accounts",
    "runtime",
    "system",
    "image",
    "base",
    "hints",
)
PATH_KINDS = tuple(k.value for k in PathKind if k is not PathKind.SOURCE)
PATH_MODIFIERS = ("mode", "owner", "optional")
SYSTEM_KEYS = ("passwd", "shadow", "nsswitch", "tmp", "run", "timezone", "ca-certificates", "os-release", "package-metadata", "setuid")
RUNTIME_KEYS = ("nss", "gconv", "openssl", "libgcc-s", "locales", "tzdata", "dlopen-notes", "plugins", "python", "perl", "ruby", "node")
# the source's password databases hold hashes: they never ship from the source (system.shadow writes locked ones)
SHADOW_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
# merge markers (see profile.py): a child clears what its parents gave under a key, or gave an empty list there
CLEAR = "-clear"
EMPTY = "-empty"
_DLOPEN_THRESHOLDS = tuple(p.value for p in DlopenPriority if p is not DlopenPriority.NO)
IMAGE_KEYS = ("entrypoint", "cmd", "env", "workdir", "user", "expose", "stop-signal", "volumes", "labels")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}\Z")
# tokens a path may use, expanded per target (profile.expand_tokens): $MULTIARCH is the Debian
# multiarch triplet (aarch64-linux-gnu), $LIB what the target's loader expands $LIB to (lib/<triplet>)
PATH_TOKENS = ("MULTIARCH", "LIB")
TOKEN = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_TOKEN = TOKEN
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?\Z")
_PORT = re.compile(r"(\d{1,5})(?:/(tcp|udp|sctp))?\Z")
_SIGNAL = re.compile(r"SIG[A-Z0-9+-]+\Z")

Key = tuple[str, ...]
Settings = dict[Key, tuple[Any, str]]  # key -> (value, origin "file: key.path")


def parse_mode(value: Any) -> int | None:
    """`"0755"`, `"755"`, `"0o755"` or a YAML octal int -> int; None when invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = getattr(value, "text", None)
        if text is not None and not (text.startswith("0") and len(text) > 1):
            return None  # a decimal literal such as 755 is almost surely a typo for octal
        mode = int(value)
    elif isinstance(value, str) and re.fullmatch(r"(0o|0)?[0-7]{1,4}", value):
        mode = int(value.removeprefix("0o"), 8)
    else:
        return None
    return mode if 0 <= mode <= 0o7777 else None


class _Validator:
    def __init__(self, where: str) -> None:
        self.where = where
        self.issues: list[str] = []
        self.settings: Settings = {}

    def error(self, key: str, message: str) -> None:
        self.issues.append(f"{self.where}: {key}: {message}" if key else f"{self.where}: {message}")

    def set(self, key: Key, value: Any, origin: str) -> None:
        self.settings[key] = (value, f"{self.where}: {origin}")

    def override(self, spec: dict[str, Any], name: str, where: str, *prefixes: Key, replaceable: bool = True) -> Any:
        """The value of `name` in `spec`, after the override forms a child uses on what it inherits.

        `null` clears what the parents gave under `prefixes` (a setting falls back to its default);
        `{replace: VALUE}` clears it and gives VALUE instead (lists and mappings only). A plain value
        adds to (lists, mappings) or overrides (settings) the inherited one; an empty list or mapping
        is remembered, so that merging can say it adds nothing.
        """
        value = spec.get(name)
        if value is None:
            if name in spec:
                for prefix in prefixes:
                    self.settings[(CLEAR, *prefix)] = (True, f"{self.where}: {where}")
            return None
        if replaceable and isinstance(value, dict) and list(value) == ["replace"] and isinstance(value["replace"], (list, dict)):
            for prefix in prefixes:
                self.settings[(CLEAR, *prefix)] = (True, f"{self.where}: {where}")
            return value["replace"]
        if replaceable and value in ([], {}):
            for prefix in prefixes:
                self.settings[(EMPTY, *prefix)] = (True, f"{self.where}: {where}")
        return value

    def mapping(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(key, f"must be a mapping, not {_kind(value)}")
            return {}
        for name in value:
            if not isinstance(name, str) or name not in allowed:
                self.error(_sub(key, name), f"unknown key{_hint(name, allowed)}")
        return {k: v for k, v in value.items() if k in allowed}

    def sequence(self, value: Any, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(key, f"must be a list, not {_kind(value)}")
            return []
        return value

    def string(self, value: Any, key: str) -> str | None:
        if not isinstance(value, str) or not value:
            self.error(key, f"must be a non-empty string, not {_kind(value)}")
            return None
        return value

    def boolean(self, value: Any, key: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(key, f"must be yes or no, not {_kind(value)}")
            return None
        return value

    def image_path(self, value: Any, key: str, *, glob: bool = False) -> str | None:
        text = self.string(value, key)
        if text is None:
            return None
        body = text.rstrip("/") or "/"
        if not text.startswith("/"):
            self.error(key, f"{text!r} must be an absolute path inside the image")
        elif paths.clean(body) != body or "\0" in text:
            self.error(key, f"{text!r} is not a clean path (no '.', '..' or '//'); write {paths.clean(body)!r}")
        elif any(part.startswith(".wh.") for part in paths.split(text)):
            self.error(key, f"{text!r}: names starting with .wh. are layer whiteouts and cannot be shipped")
        elif paths.is_glob(text) and not glob:
            self.error(key, f"{text!r}: globs are allowed only in binaries and in paths copied from the source")
        elif unknown := [m.group(0) for m in _TOKEN.finditer(text) if (m.group(1) or m.group(2)) not in PATH_TOKENS]:
            self.error(key, f"{text!r}: unknown token {unknown[0]}; paths may use {', '.join('$' + t for t in PATH_TOKENS)}")
        else:
            return text
        return None


def validate_document(document: Any, where: str) -> tuple[Settings, list[str], list[str]]:
    """Validate one parsed profile: (settings, extends, issues)."""
    v = _Validator(where)
    if not isinstance(document, dict):
        found = "empty" if document is None else f"{_kind(document)}, not a mapping"
        v.error("", f"profile is {found}; start it with `schema: {SCHEMA}`")
        return {}, [], v.issues
    top = v.mapping(document, "", TOP_KEYS)
    if top.get("schema") != SCHEMA:
        v.error("schema", f"must be {SCHEMA!r} (got {top.get('schema')!r})")
    for key in ("name", "description"):
        if key in top:
            text = v.string(top[key], key)
            if key == "name" and text is not None and not _NAME.match(text):
                v.error(key, f"{text!r} must be lowercase letters, digits, '.', '_' or '-'")
    extends = [e for i, e in enumerate(v.sequence(top.get("extends"), "extends")) if v.string(e, f"extends[{i}]")]
    _binaries(v, v.override(top, "binaries", "binaries", ("binaries",)))
    _packages(v, v.override(top, "packages", "packages", ("packages",)))
    _paths(v, v.override(top, "paths", "paths", ("paths",)))
    for key in ("exclude", "dangling"):
        for i, pattern in enumerate(v.sequence(v.override(top, key, key, (key,)), key)):
            if (text := v.image_path(pattern, f"{key}[{i}]", glob=True)) is not None:
                v.set((key, text), True, f"{key}[{i}]")
    _accounts(v, v.override(top, "accounts", "accounts", ("users",), ("groups",), replaceable=False))
    _runtime(v, v.override(top, "runtime", "runtime", ("runtime",), replaceable=False))
    _system(v, v.override(top, "system", "system", ("system",), replaceable=False))
    _image(v, v.override(top, "image", "image", ("image",), replaceable=False))
    if (base := v.override(top, "base", "base", ("base",), replaceable=False)) is not None and v.string(base, "base"):
        v.set(("base",), base, "base")
    if "hints" in top:
        mode = "no" if top["hints"] is False else top["hints"]
        if mode in tuple(HintMode):
            v.set(("hints",), HintMode(mode), "hints")
        else:
            v.error("hints", f"must be report, include or no, not {top['hints']!r}")
    return v.settings, extends, v.issues


def _binaries(v: _Validator, value: Any) -> None:
    for i, item in enumerate(v.sequence(value, "binaries")):
        key = f"binaries[{i}]"
        if isinstance(item, str):
            item = {"path": item}
        spec = v.mapping(item, key, ("path", "optional", "mode"))
        if "path" not in spec:
            if isinstance(item, dict):
                v.error(key, "needs a `path`")
            continue
        path = v.image_path(spec["path"], f"{key}.path", glob=True)
        optional = v.boolean(spec["optional"], f"{key}.optional") if "optional" in spec else False
        mode = _mode(v, spec, key)
        if path is not None:
            v.set(("binaries", path.rstrip("/")), BinarySpec(path.rstrip("/"), bool(optional), mode), key)


def _packages(v: _Validator, value: Any) -> None:
    for i, item in enumerate(v.sequence(value, "packages")):
        key = f"packages[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        spec = v.mapping(item, key, ("name", "optional", "depends"))
        name = spec.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9*?\[][a-z0-9+.*?\[\]-]*(:[a-z0-9]+)?", name):
            v.error(
                f"{key}.name" if isinstance(item, dict) else key,
                f"{name!r} is not a package name such as libssl3, or a pattern such as libpython3.*-stdlib",
            )
            continue
        optional = v.boolean(spec["optional"], f"{key}.optional") if "optional" in spec else False
        depends = v.boolean(spec["depends"], f"{key}.depends") if "depends" in spec else False
        v.set(("packages", name), PackageSpec(name, bool(optional), bool(depends)), key)


def _runtime(v: _Validator, value: Any) -> None:
    spec = v.mapping(value, "runtime", RUNTIME_KEYS)
    for key in spec:
        where = f"runtime.{key}"
        lists = key in ("gconv", "locales", "tzdata", "plugins")
        if lists and spec[key] is False:  # `tzdata: no`: none of it, whatever the parents say
            spec[key] = None
        item = v.override(spec, key, where, ("runtime", key), replaceable=lists)
        if item is None:
            continue
        if key == "plugins":
            _plugins(v, item)
        elif key in ("gconv", "locales", "tzdata"):
            names = ["*"] if item == "all" else (v.sequence(item, where) if not isinstance(item, str) else None)
            if names is None or not all(isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_.+@/*-]+", n) for n in names):
                v.error(where, f"must be `all` or a list of names, not {item!r}")
                continue
            for name in names:
                v.set(("runtime", key, name), True, where)
        elif key == "dlopen-notes":
            if item is False or item in _DLOPEN_THRESHOLDS:
                v.set(("runtime", key), DlopenPriority(item or "no"), where)
            else:
                v.error(where, f"must be required, recommended, suggested or no, not {item!r}")
        elif key in ("nss", "libgcc-s", "python", "perl", "ruby", "node"):
            if item == "auto" or isinstance(item, bool):
                v.set(("runtime", key), _switch(item), where)
            else:
                v.error(where, f"must be auto, yes or no, not {item!r}")
        elif (flag := v.boolean(item, where)) is not None:
            v.set(("runtime", key), flag, where)


def _plugins(v: _Validator, value: Any) -> None:
    """`runtime.plugins`: [{host: program glob, paths: [plugin globs], optional}], keyed by host."""
    for i, item in enumerate(v.sequence(value, "runtime.plugins")):
        key = f"runtime.plugins[{i}]"
        spec = v.mapping(item, key, ("host", "paths", "optional"))
        if "host" not in spec or "paths" not in spec:
            if isinstance(item, dict):
                v.error(key, "needs a `host` (the program that loads the plugins) and `paths` (the plugins)")
            continue
        host = v.image_path(spec["host"], f"{key}.host", glob=True)
        globs = [v.image_path(p, f"{key}.paths[{j}]", glob=True) for j, p in enumerate(v.sequence(spec["paths"], f"{key}.paths"))]
        optional = v.boolean(spec["optional"], f"{key}.optional") if "optional" in spec else False
        if host is not None and globs and all(g is not None for g in globs):
            v.set(("runtime", "plugins", host), PluginSpec(host, tuple(g for g in globs if g), bool(optional)), key)


def _mode(v: _Validator, spec: dict[str, Any], key: str) -> int | None:
    if "mode" not in spec:
        return None
    mode = parse_mode(spec["mode"])
    if mode is None:
        v.error(f"{key}.mode", f'{spec["mode"]!r} is not a mode; write it in octal as a string, e.g. "0755"')
    return mode


def _paths(v: _Validator, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        v.error("paths", f"must be a mapping of path -> options, not {_kind(value)}")
        return
    for raw, options in value.items():
        key = f"paths[{raw!r}]" if isinstance(raw, str) else "paths"
        path = v.image_path(raw, key, glob=True)
        spec = v.mapping(options, key, PATH_KINDS + PATH_MODIFIERS)
        kinds = [k for k in PATH_KINDS if k in spec]
        if len(kinds) > 1:
            v.error(key, f"has {len(kinds)} kinds ({', '.join(kinds)}); keep exactly one")
            continue
        kind = PathKind(kinds[0]) if kinds else PathKind.SOURCE
        entry_value: str | None = None
        if kind is PathKind.MAKE:
            if spec["make"] is not True:
                v.error(f"{key}.make", "must be `true`")
        elif kind is PathKind.COPY:
            entry_value = v.image_path(spec["copy"], f"{key}.copy")
        elif kind in (PathKind.SYMLINK, PathKind.TEXT):
            if not isinstance(spec[kind], str) or (kind is PathKind.SYMLINK and not spec[kind]):
                v.error(f"{key}.{kind}", f"must be a string, not {_kind(spec[kind])}")
            else:
                entry_value = spec[kind]
        if path is not None and kind is PathKind.SOURCE and path.rstrip("/") in SHADOW_FILES:
            v.error(
                key,
                "the source's file holds password hashes and never ships; set `system.shadow: yes` "
                "for one with the shipped accounts, locked",
            )
            continue
        if path is not None and kind is not PathKind.SOURCE and paths.is_glob(path):
            v.error(key, f"{kind} entries need a literal path; globs are allowed only for copies from the source")
            continue
        optional = v.boolean(spec["optional"], f"{key}.optional") if "optional" in spec else False
        owner = _owner(v, spec, key)
        mode = _mode(v, spec, key)
        if path is not None:
            clean = path.rstrip("/") or "/"
            entry = PathSpec(clean, kind, entry_value, mode, owner, bool(optional), path.endswith("/") or kind is PathKind.MAKE)
            v.set(("paths", clean), entry, key)


def _owner(v: _Validator, spec: dict[str, Any], key: str) -> str | None:
    if "owner" not in spec:
        return None
    owner = spec["owner"]
    text = str(owner) if isinstance(owner, int) and not isinstance(owner, bool) else owner
    if not isinstance(text, str) or not all(_ACCOUNT.match(p) or p.isdigit() for p in text.split(":", 1)):
        v.error(f"{key}.owner", f"{owner!r} must be `user`, `user:group` or numeric `uid:gid`")
        return None
    return text


def _accounts(v: _Validator, value: Any) -> None:
    spec = v.mapping(value, "accounts", ("users", "groups"))
    for name in ("users", "groups"):
        spec[name] = v.override(spec, name, f"accounts.{name}", (name,))
    for i, item in enumerate(v.sequence(spec.get("users"), "accounts.users")):
        key = f"accounts.users[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        fields = v.mapping(item, key, ("name", "uid", "gid", "home", "shell", "optional"))
        user = _account(v, fields, key, ("uid", "gid"))
        if user is not None:
            created = "uid" in fields
            v.set(
                ("users", user),
                UserSpec(
                    user,
                    fields.get("uid") if created else None,
                    fields.get("gid") if created else None,
                    fields.get("home", "/nonexistent"),
                    fields.get("shell", "/usr/sbin/nologin"),
                    bool(fields.get("optional", False)),
                ),
                key,
            )
    for i, item in enumerate(v.sequence(spec.get("groups"), "accounts.groups")):
        key = f"accounts.groups[{i}]"
        if isinstance(item, str):
            item = {"name": item}
        fields = v.mapping(item, key, ("name", "gid", "members", "optional"))
        group = _account(v, fields, key, ("gid",))
        members = [m for m in v.sequence(fields.get("members"), f"{key}.members") if isinstance(m, str)]
        if group is not None:
            v.set(("groups", group), GroupSpec(group, fields.get("gid"), tuple(members), bool(fields.get("optional", False))), key)


def _account(v: _Validator, fields: dict[str, Any], key: str, ids: tuple[str, ...]) -> str | None:
    name = fields.get("name")
    if not isinstance(name, str) or not _ACCOUNT.match(name):
        v.error(f"{key}.name", f"{name!r} is not an account name")
        return None
    given = [k for k in ids if k in fields]
    if given and len(given) != len(ids):
        v.error(key, f"a new account needs all of {', '.join(ids)}; or give only `name` to take it from the source")
    for k in given:
        if isinstance(fields[k], bool) or not isinstance(fields[k], int) or not 0 <= fields[k] < 2**31:
            v.error(f"{key}.{k}", f"must be a number between 0 and 2147483647, not {fields[k]!r}")
    for k in ("home", "shell"):
        if k in fields:
            v.image_path(fields[k], f"{key}.{k}")
    if "optional" in fields:
        v.boolean(fields["optional"], f"{key}.optional")
    return name


def _system(v: _Validator, value: Any) -> None:
    spec = v.mapping(value, "system", SYSTEM_KEYS)
    for key in spec:
        where = f"system.{key}"
        item = v.override(spec, key, where, ("system", key), replaceable=False)
        if item is None:
            continue
        if key == "timezone":
            if item is False or item == "none":
                v.set(("system", key), None, where)
            elif isinstance(item, str) and re.fullmatch(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*", item):
                v.set(("system", key), item, where)
            else:
                v.error(where, f"{item!r} is not a zone name such as UTC or Europe/Paris (or `none`)")
        elif key == "setuid":
            if item in tuple(Setuid):
                v.set(("system", key), Setuid(item), where)
            else:
                v.error(where, f"must be strip or keep, not {item!r}")
        elif key in ("ca-certificates", "package-metadata", "shadow"):
            if item == "auto" or isinstance(item, bool):
                v.set(("system", key), _switch(item), where)
            else:
                v.error(where, f"must be auto, yes or no, not {item!r}")
        elif (flag := v.boolean(item, where)) is not None:
            v.set(("system", key), flag, where)


def _image(v: _Validator, value: Any) -> None:
    spec = v.mapping(value, "image", IMAGE_KEYS)
    for key in list(spec):
        spec[key] = v.override(spec, key, f"image.{key}", ("image", key), replaceable=key in ("env", "labels", "expose", "volumes"))
        if spec[key] is None:
            del spec[key]
    for key in ("entrypoint", "cmd"):
        if key in spec:
            items = v.sequence(spec[key], f"image.{key}")
            if all(isinstance(a, str) for a in items):
                v.set(("image", key), tuple(items), f"image.{key}")
            else:
                v.error(f"image.{key}", "must be a list of strings (there is no shell to split a string)")
    for key in ("env", "labels"):
        mapping = spec.get(key)
        if mapping is not None and not isinstance(mapping, dict):
            v.error(f"image.{key}", f"must be a mapping, not {_kind(mapping)}")
            continue
        for name, item in (mapping or {}).items():
            if not isinstance(name, str) or not name or "=" in name:
                v.error(f"image.{key}", f"{name!r} is not a valid name")
            elif not isinstance(item, str):
                v.error(f"image.{key}.{name}", f"must be a string (quote it), not {_kind(item)}")
            else:
                v.set(("image", key, name), item, f"image.{key}.{name}")
    if "workdir" in spec and (workdir := v.image_path(spec["workdir"], "image.workdir")) is not None:
        v.set(("image", "workdir"), workdir, "image.workdir")
    if "user" in spec:
        user = spec["user"]
        if isinstance(user, int) and not isinstance(user, bool):
            user = str(user)
        if isinstance(user, str) and re.fullmatch(r"[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?", user):
            v.set(("image", "user"), user, "image.user")
        else:
            v.error("image.user", f"{spec['user']!r} must be `user`, `uid`, `user:group` or `uid:gid`")
    for i, port in enumerate(v.sequence(spec.get("expose"), "image.expose")):
        match = _PORT.match(str(port)) if isinstance(port, (int, str)) and not isinstance(port, bool) else None
        if match and 0 < int(match.group(1)) < 65536:
            v.set(("image", "expose", f"{int(match.group(1))}/{match.group(2) or 'tcp'}"), True, f"image.expose[{i}]")
        else:
            v.error(f"image.expose[{i}]", f"{port!r} must be a port such as 80 or 80/tcp")
    if "stop-signal" in spec:
        signal = spec["stop-signal"]
        if (isinstance(signal, str) and _SIGNAL.match(signal)) or (isinstance(signal, int) and 0 < signal < 65):
            v.set(("image", "stop-signal"), str(signal), "image.stop-signal")
        else:
            v.error("image.stop-signal", f"{signal!r} must be a signal name such as SIGTERM")
    for i, volume in enumerate(v.sequence(spec.get("volumes"), "image.volumes")):
        if (path := v.image_path(volume, f"image.volumes[{i}]")) is not None:
            v.set(("image", "volumes", path), True, f"image.volumes[{i}]")


def _switch(item: bool | str) -> Switch:
    """`auto`, or a YAML boolean as yes/no."""
    return Switch.AUTO if item == "auto" else (Switch.YES if item else Switch.NO)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "yes/no"
    if isinstance(value, (int, float)):
        return "a number"
    names = {str: "a string", list: "a list", dict: "a mapping"}
    return next((name for kind, name in names.items() if isinstance(value, kind)), type(value).__name__)


def _sub(key: str, name: Any) -> str:
    return f"{key}.{name}" if key else str(name)


def _hint(name: Any, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(name), allowed, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; expected one of: {', '.join(allowed)}"
