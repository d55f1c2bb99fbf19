"""Reduce the source's /etc/passwd and /etc/group to the accounts the output needs.

Entries are taken verbatim from the source (never from the host), except that a password
field holding anything but a placeholder is replaced by `x`: a hash must not travel into the
output. /etc/shadow and /etc/gshadow, when written, are generated for the same accounts, locked.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Account", "Group", "ShadowLine", "AccountDb", "parse_passwd", "parse_group", "parse_shadow"]

_PLACEHOLDERS = ("x", "*", "!", "!!", "")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    line: str


@dataclass(frozen=True)
class Group:
    name: str
    gid: int
    members: tuple[str, ...]
    line: str


@dataclass(frozen=True)
class ShadowLine:
    """One line of a shadow or gshadow file, by the account it is for."""

    name: str
    line: str


def parse_shadow(text: str) -> list[ShadowLine]:
    """shadow or gshadow lines, by name, in file order (only to merge with a base's; never shipped from a source)."""
    return [ShadowLine(line.split(":", 1)[0], line) for line in text.splitlines() if ":" in line and line.split(":", 1)[0]]


def _scrub(fields: list[str]) -> str:
    if fields[1] not in _PLACEHOLDERS:
        fields[1] = "x"
    return ":".join(fields)


def parse_passwd(text: str) -> list[Account]:
    """Well-formed passwd lines, in file order; malformed lines are skipped as the C library does."""
    out = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 7 and fields[2].isdigit() and fields[3].isdigit() and fields[0]:
            out.append(Account(fields[0], int(fields[2]), int(fields[3]), _scrub(fields)))
    return out


def parse_group(text: str) -> list[Group]:
    """Well-formed group lines, in file order."""
    out = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) == 4 and fields[2].isdigit() and fields[0]:
            members = tuple(m for m in fields[3].split(",") if m)
            out.append(Group(fields[0], int(fields[2]), members, _scrub(fields)))
    return out


class AccountDb:
    """The source's accounts plus those a profile creates, with lookups by name and id."""

    def __init__(self, users: list[Account], groups: list[Group]) -> None:
        self.users = list(users)
        self.groups = list(groups)

    def user(self, key: str | int) -> Account | None:
        return next((u for u in self.users if (u.uid if isinstance(key, int) else u.name) == key), None)

    def group(self, key: str | int) -> Group | None:
        return next((g for g in self.groups if (g.gid if isinstance(key, int) else g.name) == key), None)

    def add_user(self, name: str, uid: int, gid: int, home: str, shell: str) -> Account:
        account = Account(name, uid, gid, f"{name}:x:{uid}:{gid}::{home}:{shell}")
        self.users = [u for u in self.users if u.name != name] + [account]
        return account

    def add_group(self, name: str, gid: int, members: tuple[str, ...]) -> Group:
        group = Group(name, gid, members, f"{name}:x:{gid}:{','.join(members)}")
        self.groups = [g for g in self.groups if g.name != name] + [group]
        return group

    def owner(self, spec: str) -> tuple[int, int] | None:
        """`user`, `user:group`, `uid` or `uid:gid` -> (uid, gid); None when a name is unknown."""
        user_part, _, group_part = spec.partition(":")
        if user_part.isdigit():
            uid = int(user_part)
            account = self.user(uid)
            gid = account.gid if account else uid
        else:
            account = self.user(user_part)
            if account is None:
                return None
            uid, gid = account.uid, account.gid
        if group_part:
            if group_part.isdigit():
                gid = int(group_part)
            else:
                group = self.group(group_part)
                if group is None:
                    return None
                gid = group.gid
        return uid, gid

    def render(self, user_names: set[str], group_names: set[str]) -> tuple[str, str]:
        """passwd and group text holding the named accounts, in source order."""
        passwd = "".join(u.line + "\n" for u in self.users if u.name in user_names)
        group = "".join(g.line + "\n" for g in self.groups if g.name in group_names)
        return passwd, group

    def render_shadow(self, user_names: set[str], group_names: set[str]) -> tuple[str, str]:
        """shadow and gshadow text for the named accounts: no password can match (`*`), no aging
        (empty fields, so PAM's account check passes), and nothing read from the source's files."""
        shadow = "".join(f"{u.name}:*:::::::\n" for u in self.users if u.name in user_names)
        gshadow = "".join(f"{g.name}:*::{','.join(g.members)}\n" for g in self.groups if g.name in group_names)
        return shadow, gshadow
