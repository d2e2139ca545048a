"""Renderers kept alive between render blocks of one process.

The block writer calls :func:`handsynth.views.render_pose_views` once per render block (one
distinct pose's kept augmentations: 8 images at the ``demo`` preset, 300 at ``paper``). Starting
the renderers per call would cost a GL context (~0.4 s; pyrender's ``delete`` also runs a full
``gc.collect``) and a Blender worker (~2 s: ``import bpy``, scene, maps, first world sync) per
block. So a call borrows them here and gives them back.

A renderer is lent to one caller at a time (a lock guards the idle lists); one whose use raised
(a worker that died, a render in flight when the caller stopped) is closed instead of returned;
whatever is idle when the process exits is closed.
"""

from __future__ import annotations

import atexit
import threading
from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Protocol, TypeVar


class Closable(Protocol):
    def close(self) -> None: ...


R = TypeVar("R", bound=Closable)


class RendererPool:
    """Idle renderers by key (everything their construction depends on)."""

    def __init__(self) -> None:
        self._idle: dict[Hashable, list[Closable]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def borrow(self, key: Hashable, make: Callable[[], R], discard: Callable[[R], None] | None = None) -> Iterator[R]:
        """An idle renderer for ``key`` or a new one from ``make``; returned on success, else
        closed (with ``discard`` when given, e.g. a kill instead of a polite quit)."""
        with self._lock:
            idle = self._idle.get(key)
            renderer = idle.pop() if idle else None
        if renderer is None:
            renderer = make()
        try:
            yield renderer
        except BaseException:
            (discard or (lambda r: r.close()))(renderer)
            raise
        with self._lock:
            self._idle.setdefault(key, []).append(renderer)

    def close_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for renderers in idle.values():
            for renderer in renderers:
                renderer.close()


#: The process's pool (closed at exit).
POOL = RendererPool()
atexit.register(POOL.close_all)
