"""The fused peephole step (``peephole_step.c``), compiled on first use and called via ctypes.

Training a peephole layer on CPU runs each time step's element-wise work in one C call instead
of ~28 torch kernels (forward and backward); the matmuls stay in torch (oneDNN). Measured on
this 2-core VM (batch 64, hidden 128, one thread): about 30 µs forward and 13 µs backward a step,
against ~280 µs for the torch kernels; ``bench/peephole.py`` has the training figures.

The C file is compiled once per process with the machine's C compiler (``$CC`` or ``cc``,
``-O3 -march=native``, under a second; no torch headers, no build step at install) and loaded
with ctypes. Where there is no compiler, the build fails, or ``SPARKLSTM_PEEPHOLE_KERNEL=0`` is set,
:func:`step_kernel` returns None and the layer keeps its torch-kernel steps: same equations,
same buffers, equal results to float32 rounding (tests check the two paths against each
other). Inference never uses it, so Spark executors need no compiler.
"""

from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

__all__ = ["step_kernel"]

SOURCE = Path(__file__).with_name("peephole_step.c")
ENV = "SPARKLSTM_PEEPHOLE_KERNEL"
# -ffast-math lets gcc vectorise the step's loops (16 lanes with AVX-512; 1.3x faster than with
# only -fno-math-errno); -fno-finite-math-only keeps NaN and infinity semantics, so a NaN
# still propagates as in torch (tests/test_peephole_kernel.py checks it).
FLAGS = ["-O3", "-march=native", "-ffast-math", "-fno-finite-math-only", "-fPIC"]

_state: dict = {"lib": None, "tried": False}

_P, _I = ctypes.c_void_p, ctypes.c_int


def step_kernel():
    """The loaded library, or None where it cannot be used (see the module docstring)."""
    if os.environ.get(ENV, "1") == "0":
        return None
    if not _state["tried"]:
        _state["tried"] = True
        _state["lib"] = _build()
    return _state["lib"]


def _build():
    cc = shlex.split(os.environ.get("CC", "")) or [shutil.which("cc") or shutil.which("gcc")]
    if cc[0] is None:
        return None  # no compiler: quietly the torch-kernel steps
    tmp = Path(tempfile.mkdtemp(prefix="sparklstm-kernel-"))
    obj, out = tmp / "peephole_step.o", tmp / "peephole_step.so"
    try:
        # Compile and link in two steps: linking a shared library with -ffast-math makes gcc
        # (before 13) add crtfastmath.o, whose constructor would switch the whole process to
        # flush denormals on load, overriding the user's train.flush_denormal.
        for cmd in ([*cc, *FLAGS, "-c", "-o", str(obj), str(SOURCE)],
                    [*cc, "-shared", "-o", str(out), str(obj), "-lm"]):
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
        lib = ctypes.CDLL(str(out))
    except (OSError, subprocess.SubprocessError) as e:
        detail = getattr(e, "stderr", None) or str(e)
        warnings.warn(f"peephole layer: fused step not built ({cc[0]}: "
                      f"{detail.strip().splitlines()[-1] if detail.strip() else type(e).__name__}); "
                      f"using torch kernels")
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the loaded library stays mapped
    lib.peephole_forward_step.argtypes = [_I, _I, _P, _I, _P, _P, _I, _P, _P,
                                          _P, _P, _P, _P, _P, _P, _P]
    lib.peephole_forward_step.restype = None
    lib.peephole_backward_step.argtypes = [_I, _I, _P, ctypes.c_long, _P, _I, _P, _P, _P, _P,
                                           _P, _P, _P, _P, _P, _P, _P, _P]
    lib.peephole_backward_step.restype = None
    return lib
