"""Build script: the pure-Python package always installs; the Cython kernels are optional.

Every ``fastrnn/_kernels/*.pyx`` becomes an extension module ``fastrnn._kernels.<name>``.
Without a C compiler (or without Cython/NumPy/SciPy at build time) the build of the
extensions fails softly and the package installs without them: the ``cython`` backend
then reports itself unavailable.  Set ``FASTRNN_BUILD_CYTHON=1`` to make a failed
extension build fatal instead -- CI does, so a broken Cython path cannot pass unnoticed.
"""
import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

REQUIRE_CYTHON = os.environ.get("FASTRNN_BUILD_CYTHON", "") not in ("", "0")


def _extensions():
    try:
        import numpy
        from Cython.Build import cythonize
    except ImportError as exc:
        if REQUIRE_CYTHON:
            raise RuntimeError(f"FASTRNN_BUILD_CYTHON=1 but the Cython build tools are missing: {exc}")
        print(f"fastrnn: building without the Cython backend ({exc})", file=sys.stderr)
        return []
    from setuptools import Extension

    # FASTRNN_CYTHON_ONLY=_rnn_cy,_gru_cy builds only those modules (for development).
    only = {m for m in os.environ.get("FASTRNN_CYTHON_ONLY", "").split(",") if m}
    exts = []
    for pyx in sorted(glob.glob(os.path.join("fastrnn", "_kernels", "*.pyx"))):
        stem = os.path.splitext(os.path.basename(pyx))[0]
        if only and stem not in only:
            continue
        name = "fastrnn._kernels." + stem
        exts.append(
            Extension(
                name,
                [pyx],
                include_dirs=[numpy.get_include()],
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=["-O3"],
            )
        )
    try:
        return cythonize(
            exts,
            language_level=3,
            compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True,
                                 "initializedcheck": False},
        )
    except Exception as exc:  # a .pyx that does not translate
        if REQUIRE_CYTHON:
            raise
        print(f"fastrnn: Cython translation failed ({exc}); building without the Cython backend",
              file=sys.stderr)
        return []


class OptionalBuildExt(build_ext):
    """Treat a failed extension build as a warning unless FASTRNN_BUILD_CYTHON=1."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # compiler missing, compile error, ...
            if REQUIRE_CYTHON:
                raise
            print(f"fastrnn: Cython backend not built ({exc}); numba and numpy backends remain",
                  file=sys.stderr)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            if REQUIRE_CYTHON:
                raise
            print(f"fastrnn: extension {ext.name} not built ({exc})", file=sys.stderr)


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
