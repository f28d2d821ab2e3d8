"""py-spy profiles of oncevault's workers under load (helper of bench/vs_openbao.py).

``record(pids, seconds, out_dir)`` samples every worker with ``py-spy record --format
raw`` (collapsed stacks; ``--nonblocking`` so the workers are not paused) while the
caller loads them; ``summarise(files)`` prints the functions with the most samples,
self and inclusive, across every thread (event loop and aiosqlite threads alike).
Needs ``py-spy`` in the virtualenv (``.venv/bin/pip install py-spy``).

Also usable alone on collapsed files: ``.venv/bin/python bench/vs_openbao_profile.py FILE...``
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def worker_pids(pgid: int, main_pid: int) -> list[int]:
    """The processes of group ``pgid`` except the server's main process."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == main_pid:
            continue
        try:
            rest = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(rest[2]) == pgid:
            pids.append(int(entry.name))
    return sorted(pids)


def py_spy() -> str:
    return str(Path(sys.executable).parent / "py-spy")


def start(
    pids: list[int], seconds: int, out_dir: Path, *, native: bool = False
) -> list[subprocess.Popen[bytes]]:
    """Start one ``py-spy record`` per pid; wait for them with :func:`finish`.

    ``native`` adds C frames (SQLite, OpenSSL, granian) to the Python stacks."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for pid in pids:
        procs.append(
            subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "200",
                    "--threads",
                    *(["--native"] if native else ["--nonblocking"]),
                    "--format",
                    "raw",
                    "--output",
                    str(out_dir / f"worker-{pid}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    return procs


def finish(procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _name(frame: str) -> str:
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{match['func']} ({path})"


def summarise(files: list[Path], top: int = 30) -> list[str]:
    """Samples per thread kind, then the event loop's (MainThread) top functions.

    py-spy drops idle samples (a thread waiting in epoll or on a queue), so a thread's
    share of samples is roughly its share of CPU time.
    """
    threads: Counter[str] = Counter()
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = main = 0
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            kind = "other"
            if frames and frames[0].startswith("thread ("):
                head = frames.pop(0)
                kind = head.split(": ", 1)[1] if ": " in head else head
                kind = re.sub(r"-\d+", "", kind)
            total += count
            threads[kind] += count
            if kind != "MainThread" or not frames:
                continue
            main += count
            names = [_name(f) for f in frames]
            self_counts[names[-1]] += count
            for name in set(names):
                inclusive[name] += count
    out = [f"{total} samples over {len(files)} worker(s); by thread:"]
    out += [f"  {100 * c / total:5.1f}%  {name}" for name, c in threads.most_common(8)]
    main = max(main, 1)
    out += ["", f"event loop (MainThread, {main} samples), self:"]
    out += [f"  {100 * c / main:5.1f}%  {name}" for name, c in self_counts.most_common(top)]
    out += ["", "event loop, inclusive:"]
    out += [f"  {100 * c / main:5.1f}%  {name}" for name, c in inclusive.most_common(top * 2)]
    return out


if __name__ == "__main__":
    print("\n".join(summarise([Path(p) for p in sys.argv[1:]])))
