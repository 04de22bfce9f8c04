"""What a command shows on a terminal while collector pods read nodes, and the notes it prints after."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator

from svctrace.cli.env import Environment

NodeProgress = Callable[[str, str, str], None]  # (node, stage, detail)
_SHOWN = {"queued": "waiting", "creating": "creating the collector pod", "starting": "starting",
          "reading": "reading", "parsing": "read", "done": "done", "failed": "failed"}


@contextlib.contextmanager
def node_progress(env: Environment, what: str = "nodes") -> Iterator[NodeProgress | None]:
    """A live display of each node being read (on a terminal only; None elsewhere): one line per node in
    flight, and a count of the nodes done. Called from the collector's threads."""
    if not env.stderr_is_terminal():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
                  console=env.stderr, transient=True) as bar:
        overall = bar.add_task(f"reading {what}", total=None)
        tasks: dict[str, TaskID] = {}
        done: set[str] = set()
        lock = threading.Lock()

        def update(node: str, stage: str, detail: str) -> None:
            with lock:
                if node in done:
                    return
                task = tasks.get(node)
                if task is None:
                    task = tasks[node] = bar.add_task("", total=None, visible=False)
                    bar.update(overall, total=len(tasks))
                if stage in ("done", "failed"):
                    done.add(node)
                    bar.remove_task(task)
                    bar.update(overall, completed=len(done))
                    return
            text = f"  {node}: {_SHOWN.get(stage, stage)}" + (f" {detail}" if detail and stage != "creating" else "")
            bar.update(task, description=text, visible=stage != "queued")

        yield update


def show_notes(env: Environment, notes: Iterable[str]) -> None:
    """How the nodes were read, when the reader should know (on stderr, so -o json stays clean)."""
    for note in dict.fromkeys(notes):
        env.say(f"note: {note}", "note")
