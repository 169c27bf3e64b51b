"""The fast lane (``pytest -m "not slow"``): which tests leave it, and the guard that keeps it fast.

A test is ``slow`` when it asks for a fixture that starts a Flow, a served process, a browser, a
proxy or a kernel (``SLOW_FIXTURES``), or one of the real-size models (``REAL_SIZE_FIXTURES``: RN50
at 224 px, the 512x512 UNet's test weights), or is marked by hand (e.g. the conformance runs on the
reference fixtures). Every other test runs under a guard:
starting one of those programs (``FORBIDDEN``) fails it, whether it starts the program itself
(refused at once) or through a child, e.g. ``client.py`` starting its own Flow (seen by watching
the test's new descendant processes).
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "FORBIDDEN",
    "ForbiddenProcess",
    "ProcessWatch",
    "REAL_SIZE_FIXTURES",
    "SLOW_FIXTURES",
    "forbidden",
    "guarded",
    "refusing_popen",
]

# fixtures that start a served Flow, a browser, nginx, or set up the environment of a Flow the test starts
SLOW_FIXTURES = frozenset({"served_flow", "served_http", "token_flow", "page", "proxy", "flow_env"})
# fixtures of real-size models, whose every forward pass costs seconds on a CPU
REAL_SIZE_FIXTURES = frozenset({"rn50_models", "model_dir"})
# programs a fast test may not start (by the name of the executable or of the script Python runs)
FORBIDDEN = frozenset({"serve.py", "jina", "chromium", "chrome", "headless_shell", "nginx", "ipykernel_launcher"})
JINA_SERVING = frozenset({"flow", "gateway", "executor", "deployment"})
WATCH_PERIOD_S = 0.2  # a Flow, a browser or a kernel lives for seconds: a few polls see it


class ForbiddenProcess(RuntimeError):
    """A test of the fast lane started a program that belongs to the slow lane."""


def forbidden(argv: Sequence[str]) -> str | None:
    """The forbidden program ``argv`` runs, or None: its executable, or the script or module (``-m``)
    a Python interpreter runs. ``argv``: a command as given to ``subprocess`` or read from
    ``/proc/PID/cmdline`` (where a program may have rewritten it, e.g. ``nginx: master process ...``)."""
    words = [str(word) for word in argv if str(word)]
    if not words or "--help" in words[1:]:  # a program asked for its usage serves nothing
        return None
    program = words[0]
    names = {Path(program).name, Path(program.split()[0]).name.rstrip(":")}
    if Path(program).name.startswith("python"):
        rest = iter(words[1:])
        for word in rest:
            if word == "-m":
                names.add(next(rest, ""))
                break
            if not word.startswith("-"):
                names.add(Path(word).name)  # the script
                break
    if "jina" in names:  # jina's subcommands that serve; ``jina export`` or ``ping`` only write or ask
        after = [Path(w).name for w in words]
        subcommand = after[after.index("jina") + 1] if after.index("jina") + 1 < len(after) else ""
        if subcommand not in JINA_SERVING:
            names.discard("jina")
    found = sorted(names & FORBIDDEN)
    return found[0] if found else None


def _children() -> dict[int, list[int]]:
    """Every process's children, from ``/proc`` (an empty map where there is no ``/proc``)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                # the command name, in parentheses, may hold spaces: the fields after its last ')' are plain
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while being read
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """The ids of the processes below ``pid`` (children, grandchildren, ...)."""
    children, found, todo = _children(), set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def command_line(pid: int) -> list[str]:
    """A process's command as a list of words (empty once it ended)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return [word.decode(errors="replace") for word in cmdline.read().split(b"\0") if word]
    except OSError:
        return []


class ProcessWatch:
    """Watches, from a thread, for new descendants of this process that run a forbidden program.

    The processes there when the watch starts are left alone (a session's served Flow, started by a
    slow test, lives on through later tests). ``found``: ``(pid, command)`` of each one seen.
    """

    def __init__(self, period_s: float = WATCH_PERIOD_S):
        self.period_s = period_s
        self.found: list[tuple[int, list[str]]] = []
        self._ignored: set[int] = set()  # there before the watch, or found already
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(self) -> None:
        """Look once; a forbidden process not seen before goes into ``found``. A process is judged
        on its command each time (a child runs its parent's command until it execs its own)."""
        for pid in sorted(descendants(os.getpid()) - self._ignored):
            command = command_line(pid)
            if command and forbidden(command):
                self._ignored.add(pid)
                self.found.append((pid, command))

    def start(self) -> ProcessWatch:
        self._ignored = descendants(os.getpid())
        self._thread = threading.Thread(target=self._run, name="process-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching, after one last look."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.scan()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.scan()


@contextmanager
def refusing_popen(refused: list[list[str]]) -> Iterator[None]:
    """While the block runs, ``subprocess`` refuses (``ForbiddenProcess``) to start a forbidden
    program, and each refused command goes into ``refused`` (so a test that swallows the error
    still fails)."""
    original = subprocess.Popen._execute_child  # every Popen, asyncio's and subclasses' too, starts here

    def execute_child(self, args, *rest, **options):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        shell = rest[8] if len(rest) > 8 else options.get("shell", False)  # _execute_child's 10th argument
        if shell:
            argv = str(argv[0]).split()  # a shell line: judged by its first words
        if name := forbidden([os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else a for a in argv]):
            refused.append([str(a) for a in argv])
            raise ForbiddenProcess(
                f"a test of the fast lane started {name} ({' '.join(map(str, argv))[:300]}): "
                "mark it @pytest.mark.slow, or use a fixture of tests/lane.py's SLOW_FIXTURES"
            )
        return original(self, args, *rest, **options)

    subprocess.Popen._execute_child = execute_child
    try:
        yield
    finally:
        subprocess.Popen._execute_child = original


class Guard:
    """What one fast test started that it may not: refused commands and processes seen by the watch."""

    def __init__(self) -> None:
        self.refused: list[list[str]] = []
        self.watch = ProcessWatch()

    def problems(self) -> list[str]:
        """One line per forbidden program started."""
        lines = [f"refused: {' '.join(command)}" for command in self.refused]
        return lines + [f"pid {pid}: {' '.join(command)}" for pid, command in self.watch.found]

    def forgive(self) -> None:
        """Forget what was seen so far (for a test of the guard itself)."""
        self.refused.clear()
        self.watch.found.clear()


@contextmanager
def guarded() -> Iterator[Guard]:
    """The guard around one fast test: yields its ``Guard``, whose ``problems()`` are read after."""
    guard = Guard()
    guard.watch.start()
    try:
        with refusing_popen(guard.refused):
            yield guard
    finally:
        guard.watch.stop()
