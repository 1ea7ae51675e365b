"""Servers for tests and benchmarks: an app in a background thread, `llm-srt serve` in a process of its own, free
ports, multipart bodies, and vLLM's CPU settings for a run beside the transformers engine."""

from __future__ import annotations

import os
import socket
import threading
import time


class ServerThread:
    """Run an app with uvicorn in a background thread (tests, benchmarks); `url` is its `http://host:port`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))  # port 0: a free port chosen by the OS
        self.host, self.port = self._socket.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on"))
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The server on {self.url} did not start.")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity: `taskset`, cgroups), where the platform tells; else all."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def vllm_cpu_env(tensor_parallel_size: int = 1, environ: dict | None = None) -> dict[str, str]:
    """vLLM's CPU settings for a run beside the transformers engine, on top of `environ` (default `os.environ`): a
    2 GiB KV cache unless `VLLM_CPU_KVCACHE_SPACE` is set, and, unless `VLLM_CPU_OMP_THREADS_BIND` is set, vLLM's
    compute threads bound to all the cores this process may use, split evenly over the tensor-parallel workers.

    Why: by default vLLM on x86 keeps one core per worker for its scheduler process and computes on the rest, so on a
    2-core machine it would compute on one core while the transformers engine computes on both."""
    env = dict(os.environ if environ is None else environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if "VLLM_CPU_OMP_THREADS_BIND" not in env:
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(usable_cpus()))
        if len(cores) < tensor_parallel_size:
            raise ValueError(f"tensor_parallel_size {tensor_parallel_size} needs as many CPU cores; this run has "
                             f"{len(cores)}.")
        share = len(cores) // tensor_parallel_size
        env["VLLM_CPU_OMP_THREADS_BIND"] = "|".join(
            ",".join(str(core) for core in cores[rank * share:(rank + 1) * share]) for rank in range(tensor_parallel_size)
        )
    return env


MULTIPART_BOUNDARY = "XBOUNDARYX"


def multipart_form(fields: dict, data: bytes, boundary: str = MULTIPART_BOUNDARY) -> bytes:
    """A multipart/form-data body of `fields` and an upload `a.wav` holding `data`, written by hand so that tests can
    send what a careful client library would not."""
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                 "Content-Type: audio/wav\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for a server started in another process)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ServerProcess:
    """A server in another process (`llm-srt serve --engine vllm` or vLLM's own, in vLLM's environment), for tests
    and benchmarks: `command` with `{port}` replaced by a free port; ready once `/health` answers; `url` is its
    `http://host:port`; its output goes to `log_path`. `ServerProcess.llm_srt_serve(python, model, ...)` builds the
    `llm-srt serve` one."""

    def __init__(self, command: list[str], env: dict | None = None, log_path: str | os.PathLike | None = None,
                 start_timeout: float = 900.0):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env, self.start_timeout = env, start_timeout
        self.log_path = str(log_path) if log_path is not None else os.devnull
        self.process = None

    @classmethod
    def llm_srt_serve(cls, python: str, model: str, *serve_args: str, **kwargs) -> "ServerProcess":
        return cls([python, "-m", "llm_srt.cli", "serve", model, "--port", "{port}", *serve_args], **kwargs)

    def log(self) -> str:
        if self.log_path == os.devnull:
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()

    def start(self) -> "ServerProcess":
        import subprocess
        import urllib.request

        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/health", timeout=5).read()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{' '.join(self.command)} did not start: {self.log()[-4000:]}")
                time.sleep(2)

    def stop(self) -> None:
        import subprocess

        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["MULTIPART_BOUNDARY", "ServerProcess", "ServerThread", "free_port", "multipart_form", "usable_cpus",
           "vllm_cpu_env"]
