"""distill: turn a fat image or rootfs into a minimal root filesystem for one app."""

__version__ = "0.1.0"
