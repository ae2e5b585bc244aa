"""Numba's worker threads, started with a short OpenMP spin.

With Numba's ``omp`` threading layer (GNU libgomp), a worker that has finished a parallel
region keeps spinning, waiting for the next one, before it sleeps: 300,000 spins when
neither ``GOMP_SPINCOUNT`` nor ``OMP_WAIT_POLICY`` is set, meant as about 3 ms and
measured at about 10 ms on the 2-core machine of the README.  A thread that is not
libgomp's and runs then (the helper threads of a step, :func:`fastrnn.models._beside`)
shares a core with a spinning worker: in the PTB-small step the helper's first block of
products took 4.8-11 ms instead of 0.8 ms, and the main thread's recurrence twice its time.

libgomp reads ``GOMP_SPINCOUNT`` once, when it is loaded.  So :func:`start` starts Numba's
threads itself, as soon as a Numba kernel module is imported, with ``GOMP_SPINCOUNT`` set to
:data:`SPIN` for that moment only (the process's environment is put back straight after,
so child processes do not inherit it).  10,000 spins are about 0.3 ms here: longer than the
gap between the per-time-step parallel regions of the LSTM recurrence, so those do not
sleep between steps.  :data:`low_spin` records whether it worked; the step's helper threads
are used only then.  Nothing is changed when the user set ``GOMP_SPINCOUNT`` or
``OMP_WAIT_POLICY`` (their values are read instead), when Numba's threads were already
started, or when libgomp is already loaded (by PyTorch, say, whose own copy has the same
name and is shared): ``low_spin`` is then False unless the user's settings make it true.
Any libgomp user loaded later in the process (PyTorch imported after fastrnn's kernels)
shares the library, and so the setting.
"""
import os

SPIN = 10000

# Whether this process's OpenMP workers (if Numba's layer is "omp") spin at most SPIN
# iterations before sleeping; set by start().
low_spin = False


def _user_spin():
    """The spin count the user's environment sets (None: not set)."""
    policy = os.environ.get("OMP_WAIT_POLICY", "").strip().lower()
    count = os.environ.get("GOMP_SPINCOUNT", "").strip()
    if count:
        try:
            return int(count)
        except ValueError:
            return 1 << 62                       # "infinite" or unreadable: assume long
    if policy == "passive":
        return 0
    if policy == "active":
        return 1 << 62
    return None


def _libgomp_loaded():
    """True when libgomp is loaded in this process, None when that cannot be told."""
    mode = getattr(os, "RTLD_NOLOAD", None)
    if mode is None:
        return None
    import ctypes
    try:
        ctypes.CDLL("libgomp.so.1", mode=mode)
    except OSError:
        return False
    return True


def start():
    """Start Numba's threads (once per process) as the module describes; returns
    :data:`low_spin`."""
    global low_spin
    try:
        from numba.np.ufunc import parallel
        started = parallel._is_initialized
    except (ImportError, AttributeError):     # another Numba layout: leave it to Numba
        return low_spin
    if started:
        return low_spin
    import numba
    user = _user_spin()
    ours = user is None and _libgomp_loaded() is False
    if ours:
        os.environ["GOMP_SPINCOUNT"] = str(SPIN)
    try:
        numba.get_num_threads()                # loads the threading layer (and libgomp)
        layer = numba.threading_layer()
    except (ValueError, RuntimeError, ImportError, OSError):
        return low_spin                        # no layer: Numba reports it when one is used
    finally:
        if ours:
            del os.environ["GOMP_SPINCOUNT"]
    if layer == "omp":
        low_spin = ours or (user is not None and user <= SPIN)
    return low_spin
