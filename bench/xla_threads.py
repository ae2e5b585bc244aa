"""JAX's CPU thread count, which the benchmarks set through the environment.

Importing this module puts XLA (JAX's CPU backend) on one thread in this process, unless
the environment already says otherwise; import it before anything imports jax.
"""
import os


def xla_thread_env(threads):
    """The environment that puts JAX's CPU backend (XLA) on ``threads`` threads.

    Read once per process, when JAX starts its CPU client (at its first array or jit), so
    it must be in ``os.environ`` before that and cannot be changed afterwards.
    ``PJRT_NPROC`` sizes the client's intra-op thread pool, and with jaxlib 0.10 it is what
    sets the thread count: a jitted 1000x1000 float32 product ran at 1.95 CPU-seconds per
    second on this 2-core machine with ``--xla_cpu_multi_thread_eigen=false`` alone (the
    flag this suite used to rely on), 0.98 with ``PJRT_NPROC=1``.  The flag is set too,
    to the same effect, for jaxlibs that read it.
    """
    eigen = "false" if threads == 1 else "true"
    return {"PJRT_NPROC": str(threads), "XLA_FLAGS": f"--xla_cpu_multi_thread_eigen={eigen}"}


def jax_threads():
    """The number of threads JAX runs on in this process (see :func:`xla_thread_env`)."""
    return int(os.environ["PJRT_NPROC"])


for _key, _value in xla_thread_env(int(os.environ.get("PJRT_NPROC", 1))).items():
    os.environ.setdefault(_key, _value)
