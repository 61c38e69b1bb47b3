"""Where ``serve`` spends its time under load: a py-spy recording and a short text summary of it.

The summary looks at the event-loop (main) thread, which is where a webhook's Python work runs and what saturates
first; the database threads of aiosqlite mostly wait on their queue, and SQLite's own work in them releases the GIL.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path

from harness import run_command

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_THREAD = re.compile(r"^thread \(\d+\): (?P<name>.*)$")
_IDLE = ("EpollSelector.select", "select.epoll.poll")  # the loop waiting for something to do
_ENTRY = "Handle._run (asyncio/events.py)"  # what the event loop runs: the frame after it names the activity
CHECKOUT = str(Path(__file__).resolve().parent.parent)  # this checkout, wherever it is: paths relative to it


def py_spy() -> str | None:
    """py-spy from PATH or from the virtualenv running the benchmark."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


async def record(pid: int, seconds: float, output: Path, rate: int = 250) -> Path:
    """Sample every thread of ``pid`` for ``seconds`` into collapsed stacks (``thread;frame;... count`` lines)."""
    executable = py_spy()
    if executable is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    await run_command([executable, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
                       "--rate", str(rate), "--nonblocking", "--threads", "--format", "raw", "--output", str(output)],
                      timeout=seconds + 60)
    return output


def _name(frame: str) -> str:
    """``function (module/path.py)``: line numbers dropped, site-packages and stdlib prefixes cut."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "lib/python3.11/", "lib/python3.12/", "lib/python3.13/", f"{CHECKOUT}/"):
        path = path.split(marker, 1)[-1]
    return f"{match['function']} ({path})"


def _main_thread_stacks(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])
        if not count.isdigit() or (thread and thread["name"] != "MainThread"):
            continue
        stacks[tuple(_name(f) for f in frames[1 if thread else 0:])] += int(count)
    return stacks


def _activity(frames: tuple[str, ...]) -> str:
    if _ENTRY in frames:
        index = frames.index(_ENTRY)
        if index + 1 < len(frames):
            return frames[index + 1]
    return frames[-1] if frames else "?"


def summarize(path: Path, seconds: float, rate: int = 250, top: int = 10) -> str:
    """What the event loop was busy with: by activity, by function (self), and HybridFlow's functions (total)."""
    stacks = _main_thread_stacks(path)
    busy = {frames: n for frames, n in stacks.items() if frames and not frames[-1].startswith(_IDLE)}
    total = sum(busy.values())
    if not total:
        return f"  (no samples of the main thread in {path})"
    by_activity: Counter[str] = Counter()
    own: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for frames, count in busy.items():
        by_activity[_activity(frames)] += count
        own[frames[-1]] += count
        below_loop = frames[frames.index(_ENTRY) + 1:] if _ENTRY in frames else frames
        for name in set(below_loop):
            if name.split("(", 1)[-1].startswith("hybridflow/"):
                ours[name] += count

    def table(counter: Counter[str]) -> list[str]:
        return [f"      {count / total:6.1%}  {name}" for name, count in counter.most_common(top)]

    return "\n".join([
        f"  event loop busy {total / (seconds * rate):.0%} of the time ({total:,} samples; stacks in {path})",
        "    by activity (the task or callback the loop was running):", *table(by_activity),
        "    by function, self time:", *table(own),
        "    HybridFlow functions, time including what they call:", *table(ours),
    ])
