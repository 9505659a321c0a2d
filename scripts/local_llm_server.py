"""Start a local OpenAI-compatible server (``transformers serve``), wait until it answers, stop it whatever happens.

One place for the server's life, used by ``make rollout-local-llm``, the slow
tests and the local-LLM benchmark:

* as a context manager::

      with LocalLLMServer(model_folder) as server:
          ...  # base_url=server.base_url, model=server.model

* as a command that runs another command beside the server and stops the
  server when that command ends, fails or is interrupted (Ctrl-C, SIGTERM)::

      python scripts/local_llm_server.py --model DIR [--port N] [--continuous-batching] -- CMD ARGS...

  ``CMD`` gets ``TAUGYM_LOCAL_LLM_BASE_URL`` and ``TAUGYM_LOCAL_LLM_MODEL`` in its
  environment, and ``{base_url}`` / ``{model}`` in its arguments are replaced by them.

The server runs in its own process group and is stopped with SIGTERM, then
SIGKILL after a grace period; its output goes to a log file (the path is
printed) so that a failed start can be read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """In the server's process, before it runs: on Linux, ask for SIGKILL when its parent dies, so that a parent
    killed without a chance to stop it (SIGKILL, a crash) leaves no server behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class ServerStartError(RuntimeError):
    """The server exited or did not answer its health check in time; the message holds its log's tail."""


class LocalLLMServer:
    """``transformers serve MODEL --host 127.0.0.1 --port PORT`` in a subprocess, healthy on enter, gone on exit.

    Args:
        model: a Hugging Face model folder (e.g. the one ``python -m train.smollm2`` prints).
        port: the port; default a free one.
        continuous_batching: serve with ``--continuous-batching`` (requests batched as they arrive).
        start_timeout_s: how long to wait for the health check before giving up.
        log_path: where the server's output goes; default a temporary file.
        extra_args: more ``transformers serve`` arguments.

    Attributes: ``base_url`` (``http://127.0.0.1:PORT/v1``), ``model`` (the
    model name to request: the folder's path, which the server loads), ``log_path``.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        port: int | None = None,
        continuous_batching: bool = False,
        start_timeout_s: float = 300.0,
        log_path: str | Path | None = None,
        extra_args: list[str] | None = None,
    ):
        self.model = str(Path(model).expanduser().resolve())
        if not Path(self.model, "config.json").is_file():
            raise FileNotFoundError(
                f"{self.model} is not a Hugging Face model folder (no config.json); prepare one with "
                "`python -m train.smollm2`"
            )
        self.port = port or free_port()
        self.continuous_batching = continuous_batching
        self.start_timeout_s = start_timeout_s
        self.extra_args = list(extra_args or [])
        if log_path is None:
            handle, log_path = tempfile.mkstemp(prefix="transformers-serve-", suffix=".log")
            os.close(handle)
        self.log_path = Path(log_path)
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def command(self) -> list[str]:
        executable = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which("transformers")
        if executable is None:
            raise FileNotFoundError(
                "the `transformers` command is not installed; install the local-llm extra: pip install -e '.[local-llm]'"
            )
        command = [executable, "serve", self.model, "--host", HOST, "--port", str(self.port)]
        if self.continuous_batching:
            command.append("--continuous-batching")
        return command + self.extra_args

    def start(self) -> LocalLLMServer:
        """Start the server and wait for its health check; raises :class:`ServerStartError` if it never answers."""
        if self.process is not None and self.process.poll() is None:
            return self
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped whole, and spared the terminal's Ctrl-C
                preexec_fn=_die_with_parent,
                env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
            )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(
                    f"transformers serve exited with code {self.process.returncode} before it answered; "
                    f"its log ({self.log_path}) ends with:\n{self.log_tail()}"
                )
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(
            f"transformers serve did not answer {self.health_url} within {self.start_timeout_s:g}s; its log "
            f"({self.log_path}) ends with:\n{self.log_tail()}"
        )

    @property
    def health_url(self) -> str:
        return f"http://{HOST}:{self.port}/health"

    def healthy(self) -> bool:
        """Whether the server answers its health check now."""
        try:
            with urllib.request.urlopen(self.health_url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the server's process group: SIGTERM, then SIGKILL after ``grace_s``; safe to call twice."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def kill(self) -> None:
        """SIGKILL the server at once (a crash, for tests of what a run does when its server dies)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _fill(part: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        part = part.replace("{" + name + "}", value)
    return part


def _raise_interrupt(signum, frame):  # SIGTERM (e.g. from make or CI) unwinds like Ctrl-C: the server is stopped
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python scripts/local_llm_server.py",
        description="Run CMD beside a local `transformers serve` of MODEL, then stop the server whatever happens.",
        usage="%(prog)s --model DIR [--port N] [--continuous-batching] [--log FILE] -- CMD [ARGS...]",
    )
    parser.add_argument("--model", required=True, help="a Hugging Face model folder (python -m train.smollm2)")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--continuous-batching", action="store_true")
    parser.add_argument("--log", default=None, help="the server's log file (default: a temporary file)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for the health check")
    args = parser.parse_args(own)
    if not command:
        parser.error("give the command to run after --, e.g. -- python -m rollout --config ...")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    server = LocalLLMServer(
        args.model,
        port=args.port,
        continuous_batching=args.continuous_batching,
        start_timeout_s=args.start_timeout,
        log_path=args.log,
    )
    try:
        started = time.monotonic()
        print(f"starting transformers serve on {server.base_url} (log: {server.log_path})", flush=True)
        server.start()
        print(f"server healthy after {time.monotonic() - started:.1f}s", flush=True)
        values = {"base_url": server.base_url, "model": server.model}
        environment = {
            **os.environ,
            "TAUGYM_LOCAL_LLM_BASE_URL": server.base_url,
            "TAUGYM_LOCAL_LLM_MODEL": server.model,
        }
        return subprocess.call([_fill(part, values) for part in command], env=environment)
    except ServerStartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; stopping the server", file=sys.stderr)
        return 130
    finally:
        server.stop()
        print("server stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
