"""What machine and code produced a number: device names, versions, threads, git sha."""

from __future__ import annotations

import functools
import hashlib
import platform
import socket
import subprocess
import sys
from pathlib import Path

import torch

from estimators.core.registry import import_user_module

_REPO = Path(__file__).resolve().parent.parent


class DeviceError(ValueError):
    """An unknown or unavailable device; the message says which are allowed here."""


def available_devices() -> list[str]:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    return devices


def resolve_devices(spec: str, available: list[str] | None = None) -> list[str]:
    """Parse ``cpu,cuda`` / ``auto`` into validated device strings (``auto`` = every available device).

    ``available``: the devices judged available elsewhere (by a cluster's workers) instead of on this machine;
    then ``cuda`` is accepted without a local GPU, and whether a worker has one is decided when the cell runs.
    """
    local = available is None
    available = available_devices() if local else available
    names = [d.strip() for d in spec.split(",") if d.strip()]
    if not names:
        raise DeviceError("no device given; allowed: cpu, cuda, cuda:N, auto")
    resolved: list[str] = []
    for name in names:
        if name == "auto":
            resolved.extend(available)
            continue
        try:
            device = torch.device(name)
        except RuntimeError:
            raise DeviceError(f"unknown device {name!r}; allowed: cpu, cuda, cuda:N, auto") from None
        if device.type == "cpu":
            resolved.append("cpu")
        elif device.type == "cuda":
            if not local:
                resolved.append(name)
                continue
            if not torch.cuda.is_available():
                raise DeviceError(
                    f"device {name!r} is not available on this machine (torch {torch.__version__} sees no CUDA "
                    f"GPU); available: {', '.join(available_devices())} (or use --device auto)"
                )
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise DeviceError(
                    f"device {name!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
                )
            resolved.append(name)
        else:
            raise DeviceError(f"unsupported device {name!r}; allowed: cpu, cuda, cuda:N, auto")
    return list(dict.fromkeys(resolved))


@functools.lru_cache(maxsize=None)
def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        index = torch.device(device).index
        if not torch.cuda.is_available() or (index is not None and index >= torch.cuda.device_count()):
            # A cuda cell recorded as skipped or failed where that device does not exist (a Dask client or
            # worker without it): it ran on no device, so there is no name to give, and the row must still be
            # written.
            return ""
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_name()


@functools.lru_cache(maxsize=None)
def git_sha() -> str:
    """Commit of the varbench checkout, with '-dirty' when its code has uncommitted changes; 'unknown' outside git.

    Changes under results/ do not count: they are measurements (re-recording the committed baseline rewrites
    it while it runs), not code."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results"],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


# Modules that only drive, render or gate a sweep: editing them changes no number in a table, so they are not
# part of code_fingerprint (every other module of bench/ and estimators/ is).
NOT_MEASURING = ("bench/__main__.py", "bench/cli.py", "bench/perf/", "bench/regression/", "bench/report/",
                 "bench/run_folder.py")  # fmt: skip


@functools.lru_cache(maxsize=None)
def code_fingerprint() -> str:
    """16 hex digits of sha256 over varbench's measuring source files: unlike git_sha it changes with any edit,
    committed or not, and not with edits elsewhere (docs, tests, the report)."""
    digest = hashlib.sha256()
    for path in sorted([*(_REPO / "bench").rglob("*.py"), *(_REPO / "estimators").rglob("*.py")]):
        name = path.relative_to(_REPO).as_posix()
        if not name.startswith(NOT_MEASURING):
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def user_code_fingerprint(*names: str) -> str:
    """16 hex digits of sha256 over the source files of the user modules that ``names`` (a cell's problem and
    estimator) load from (``module:attribute``); '' when they are all varbench's own (code_fingerprint covers
    those)."""
    parts = [_module_fingerprint(name.partition(":")[0]) for name in names if ":" in name]
    if not parts:
        return ""
    return parts[0] if len(parts) == 1 else hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=None)
def _module_fingerprint(module_name: str) -> str:
    """sha256 (16 hex digits) of a user module's source file, read once per process."""
    try:
        source = getattr(sys.modules.get(module_name) or import_user_module(module_name), "__file__", None)
        return hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    except Exception:  # noqa: BLE001 - the cell's own import reports why; its error row still needs this column
        return "unknown"


# glibc returns freed blocks above its mmap threshold (and the heap's free top) to the kernel, so each call's
# fresh 1 MB tensors page-fault in again and timings measure the kernel (docs/performance.md). Mmap threshold at
# glibc's 32 MB maximum, no trimming.
STEADY_HEAP = {"M_MMAP_THRESHOLD": (-3, 32 * 2**20), "M_TRIM_THRESHOLD": (-1, 2**36), "M_TOP_PAD": (-2, 256 * 2**20)}
# The same settings as environment variables, for processes started from here (read by glibc at start-up).
STEADY_HEAP_ENV = {f"MALLOC_{name[2:]}_": str(value) for name, (_, value) in STEADY_HEAP.items()}


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Keep freed memory in this process's heap (glibc ``mallopt``), so timings measure the estimators rather
    than page faults; True when applied, False where the C library is not glibc (nothing changes there)."""
    import ctypes  # noqa: PLC0415

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # M_TRIM_THRESHOLD takes an int here: 2^31 − 1 bytes (2 GiB) is as good as "never trim" for these calls.
    return all(mallopt(option, min(value, 2**31 - 1)) == 1 for option, value in STEADY_HEAP.values())


def synchronize(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def describe() -> dict[str, str]:
    """The environment section of a report."""
    info = {
        "cpu": cpu_name(),
        "cpu cores (os)": str(__import__("os").cpu_count()),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "git sha": git_sha(),
    }
    if torch.cuda.is_available():
        info["gpus"] = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        info["cuda"] = str(torch.version.cuda)
    else:
        info["gpus"] = "none visible to torch"
    return info
