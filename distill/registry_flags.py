"""The registry flags every command that reads images takes (`--creds`, `--authfile`, `--tls-verify`), once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from distill.errors import UsageError

if TYPE_CHECKING:
    from distill.registry.options import RegistryOptions

__all__ = ["REGISTRY_FLAGS", "registry_options"]

REGISTRY_FLAGS = [
    click.option("--creds", metavar="USER:PASSWORD", help="registry credentials"),
    click.option("--authfile", metavar="FILE", help="registry auth file (containers auth.json or docker config.json)"),
    click.option(
        "--tls-verify",
        type=click.BOOL,
        default=True,
        is_flag=False,
        flag_value=True,
        metavar="[=BOOL]",
        help="verify registry TLS certificates and refuse plain http (default true; --tls-verify=false as in podman)",
    ),
]


def registry_options(flags: dict[str, Any]) -> RegistryOptions:
    """What the registry flags say, with a bad `--creds` refused as a usage error."""
    from distill.registry.options import RegistryOptions

    creds = None
    if flags["creds"] is not None:
        from distill.registry.auth import CredentialsError, parse_creds_flag

        try:
            creds = parse_creds_flag(flags["creds"])
        except CredentialsError as exc:
            raise UsageError(f"--creds: {exc}") from None
    return RegistryOptions(creds=creds, authfile=flags["authfile"], tls_verify=flags["tls_verify"])
