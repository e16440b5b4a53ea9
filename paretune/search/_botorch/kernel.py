"""Loading BoTorch's fused qLogNEHVI kernel without hanging on the lock of a dead compile."""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

# This module's own logger (a child of the package's): waiting for a compile is not a proposal
# that fell back, which the sampler reports on the package's logger.
_log = logging.getLogger(__name__)

# BoTorch compiles a C++ kernel for its multi-objective log-improvement acquisitions the first
# time one is built in an environment (torch.utils.cpp_extension: 40-75 s on 2 cores), holding a
# lock file meanwhile. A process killed during the compile leaves the lock behind, and every
# later build then waits on it forever without a word. A lock this old is a dead one.
STALE_KERNEL_LOCK_S = 300.0


def load_fused_kernel() -> None:
    """Load (compiling it the first time) BoTorch's fused kernel, as its acquisitions would, but
    first remove the lock of a compile that died instead of waiting on it for ever, and say so
    while a live compile in another process is waited for. A no-op once this process has tried
    to load it, or where BoTorch has no such kernel. ``.ci/run`` calls it beside mypy."""
    try:
        from botorch.acquisition.multi_objective import logei
        from torch.utils import cpp_extension

        load = logei._try_load_fused_kernel
        if getattr(logei, "_load_attempted", True):
            return
        lock = Path(cpp_extension._get_build_directory("logei_fused_ext", verbose=False)) / "lock"
    except Exception:  # another BoTorch or torch: its own loading, nothing to clear
        return
    said = False
    while lock.exists():
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            break  # released meanwhile
        if age > STALE_KERNEL_LOCK_S:
            _log.warning(
                "removing %s: left %.0f s ago by a compile of BoTorch's fused kernel that did "
                "not finish (a killed process)",
                lock,
                age,
            )
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            break
        if not said:
            _log.warning(
                "waiting for another process to finish compiling BoTorch's fused kernel "
                "(lock %s, %.0f s old; removed at %.0f s)",
                lock,
                age,
                STALE_KERNEL_LOCK_S,
            )
            said = True
        time.sleep(0.5)
    load()
