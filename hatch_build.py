"""Hatchling build hook: compile ``metadata_relay.turn._forward`` (the C ChannelData forwarder).

Why a hook and not setuptools: the project builds with hatchling, and the extension is one C
file with no dependencies, so the running interpreter's ``sysconfig`` (CC, CFLAGS, CCSHARED,
include dir, EXT_SUFFIX) is all it takes. Editable installs (``uv run``/``uv sync``) get the
module compiled in place next to its source; regular wheels get it force-included and a
platform tag. If compilation fails (no compiler, not Linux) the build warns and goes on: the
service then runs the pure-Python TURN path (``metadata_relay.turn.native`` says which).
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/metadata_relay/turn/_forward.c")
MODULE = "metadata_relay/turn/_forward"


def compile_extension(source: Path, out: Path) -> None:
    """cc $CFLAGS $CCSHARED -shared -I<include> source -o out (raises on failure)."""
    var = sysconfig.get_config_var
    cmd = [
        *shlex.split(var("CC") or "cc"),
        *shlex.split(var("CFLAGS") or ""),
        *shlex.split(var("CCSHARED") or "-fPIC"),
        "-Wall", "-Wextra", "-shared",
        f"-I{sysconfig.get_paths()['include']}",
        str(source), "-o", str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class ForwardExtensionHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if not sys.platform.startswith("linux"):  # recvmmsg/sendmmsg/epoll: Linux only
            self.app.display_warning("_forward: not Linux, pure-Python TURN forwarding only")
            return
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        source = Path(self.root) / SOURCE
        if version == "editable":
            out = source.with_name("_forward" + suffix)
        else:
            out = Path(tempfile.mkdtemp(prefix="forward-build-")) / ("_forward" + suffix)
        try:
            compile_extension(source, out)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            self.app.display_warning(
                f"_forward: C extension not built, pure-Python TURN forwarding only: {detail}")
            return
        if version != "editable":
            build_data["force_include"][str(out)] = MODULE + suffix
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
