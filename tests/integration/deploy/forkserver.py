"""Each run of ./infra/deploy's CLI in a process of its own, forked from one that has already
imported it.

A fresh ``python -m relay_deploy.cli`` spends ~1.5 s importing (pydantic, lightkube, asyncssh,
python-ovh, rich) before it does anything, and the deploy tests start the CLI about 150 times.
So one server process imports those modules once per test session; every run is a ``fork()``
of it that then gets the run's own argv, environment, working directory and stdin/stdout/
stderr pipes, calls the CLI's own entry point (``relay_deploy.cli.main``) and exits with its
exit code. Each run is still a separate process with nothing shared: signals (Ctrl-C) go to it,
files and the kubeconfig are read from its own environment, exit codes are real. What a fresh
interpreter would catch that this cannot (a module used without being imported) is covered by
the tests that start the CLI as a plain subprocess (``World.deploy(fresh=True)``, the launcher
tests).

Wire protocol on a Unix socket, one connection per run: the client sends one JSON line
``{"args", "env", "cwd"}`` with three file descriptors (stdin, stdout, stderr) attached
(SCM_RIGHTS); the server answers ``{"pid": N}`` at once and ``{"rc": N}`` when the run ends.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import selectors
import signal
import socket
import sys
import threading
import traceback
from typing import Any

PRELOAD = (
    "relay_deploy.cli", "relay_deploy.phases", "relay_deploy.status", "relay_deploy.ovh_api",
    "relay_deploy.ovh_order", "relay_deploy.platform", "relay_deploy.kustomize",
    "relay_deploy.probes", "lightkube", "lightkube.resources.apps_v1", "asyncssh", "ovh",
    "ovh.exceptions", "yaml",
)
MAX_MESSAGE = 1 << 20


# ---- server (a process of its own) ---------------------------------------------------------


def serve(path: str) -> None:
    for name in PRELOAD:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")  # EOF: the test session ended
    while True:
        for key, _ in sel.select():
            if key.data == "parent":
                if not os.read(sys.stdin.fileno(), 1):
                    return
            elif key.data == "accept":
                conn, _ = listener.accept()
                _start_run(sel, listener, conn)
            else:
                pid, conn = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                _send(conn, {"rc": os.waitstatus_to_exitcode(status)})
                conn.close()


def _start_run(sel: selectors.BaseSelector, listener: socket.socket, conn: socket.socket
               ) -> None:
    msg, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
    if not msg or len(fds) != 3:  # a readiness probe (or garbage): nothing to run
        for fd in fds:
            os.close(fd)
        conn.close()
        return
    request = json.loads(msg)
    assert threading.active_count() == 1, "fork() needs a single-threaded parent"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        sel.close()
        listener.close()
        conn.close()
        _run(request, fds)
    for fd in fds:
        os.close(fd)
    _send(conn, {"pid": pid})
    sel.register(os.pidfd_open(pid), selectors.EVENT_READ, (pid, conn))


def _run(request: dict[str, Any], fds: list[int]) -> None:
    """In the forked child: become the CLI run the request describes; never returns."""
    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.argv = ["relay-deploy", *request["args"]]
        from relay_deploy.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
    except BaseException:  # report anything, as an interpreter would
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _send(conn: socket.socket, message: dict[str, int]) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


# ---- client (the tests) --------------------------------------------------------------------


class ForkedRun:
    """One run: the subset of asyncio.subprocess.Process the deploy tests use."""

    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 stdin: int, stdout: asyncio.StreamReader, stderr: asyncio.StreamReader
                 ) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._reader, self._writer = reader, writer
        self._stdin: int | None = stdin
        self._stdout, self._stderr = stdout, stderr

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    async def communicate(self, input: bytes = b"") -> tuple[bytes, bytes]:
        if self._stdin is not None:
            if input:
                os.write(self._stdin, input)  # small (an answer to a question): never blocks
            os.close(self._stdin)
            self._stdin = None
        out, err = await asyncio.gather(self._stdout.read(), self._stderr.read())
        line = await self._reader.readline()
        self._writer.close()
        if not line:
            raise RuntimeError("the fork server went away before the run ended")
        self.returncode = int(json.loads(line)["rc"])
        return out, err


async def _pipe_reader(fd: int) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=1 << 24)
    await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", 0))
    return reader


def wait_ready(path: str, server: Any, within: float = 60.0) -> None:
    """Until the server at ``path`` accepts connections (it imports first)."""
    import time

    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the fork server exited ({server.returncode})")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except OSError:
                time.sleep(0.02)
                continue
        return
    raise RuntimeError(f"the fork server did not listen on {path} within {within:.0f}s")


async def start_run(path: str, args: list[str], env: dict[str, str], cwd: str) -> ForkedRun:
    """Start one CLI run through the server at ``path``."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
        message = json.dumps({"args": args, "env": env, "cwd": cwd}).encode()
        socket.send_fds(sock, [message], [in_r, out_w, err_w])
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    sock.setblocking(False)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    line = await reader.readline()
    if not line:
        raise RuntimeError("the fork server did not start the run")
    pid = int(json.loads(line)["pid"])
    return ForkedRun(pid, reader, writer, in_w, await _pipe_reader(out_r),
                     await _pipe_reader(err_r))


if __name__ == "__main__":
    serve(sys.argv[1])
