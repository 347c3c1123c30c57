"""Build of the C core and its Cython wrapper.

Declarative except for one customisation: the kernels for wide x86 ISAs are
compiled from their own files with their own -m flags (the rest of the build
stays at the baseline, so one wheel runs on any x86-64), and each is dropped
when the compiler or platform cannot build it. dispatch.c learns which ones
made it through LF_HAVE_<ISA> macros and picks one at run time.

Environment switches:
  LSTM_FAST_DEBUG=1          -O0 -g, assertions on
  LSTM_FAST_SANITIZE=address build with a sanitizer (needs LD_PRELOAD of its runtime)
"""
import os
import platform

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CSRC = "csrc"
CORE_SOURCES = [
    "csrc/status.c",
    "csrc/cpu_features.c",
    "csrc/dispatch.c",
    "csrc/plan.c",
    "csrc/pack.c",
    "csrc/grid.c",
    "csrc/pool.c",
    "csrc/kernels/kernels_portable.c",
]
HEADERS = [
    "csrc/lstm_fast.h",
    "csrc/internal.h",
    "csrc/kernels/kernel_body.h",
    "csrc/kernels/kernel_isa.h",
    "csrc/kernels/vector_math.h",
    "csrc/kernels/avx512_tiles.h",
]
# ISA name -> (source, flags), built in this order: AMX only after AVX512.
ISA_KERNELS = {
    "AVX2": ("csrc/kernels/kernels_avx2.c", ["-mavx2", "-mfma"]),
    "AVX512": (
        "csrc/kernels/kernels_avx512.c",
        ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma"],
    ),
    # Built only where AVX512 built (dispatch.c serves its float64 from there).
    "AMX": (
        "csrc/kernels/kernels_amx.c",
        ["-mavx512f", "-mavx512bw", "-mavx512dq", "-mavx512vl", "-mavx2", "-mfma",
         "-mavx512bf16", "-mamx-tile", "-mamx-bf16"],
    ),
}


def _base_flags(compiler_type):
    if compiler_type == "msvc":
        # The kernels are GNU C (vector extensions, __builtin_*): say so here
        # rather than fail on the first vector type.
        raise RuntimeError("lstm_fast's C core needs GCC or Clang (GNU C); "
                           "MSVC cannot compile it (on Windows, use MinGW-w64 or clang)")
    flags = ["-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
    if os.environ.get("LSTM_FAST_DEBUG") == "1":
        flags += ["-O0", "-g", "-UNDEBUG"]
    else:
        # No -ffast-math: NaN propagation and saturation are part of the contract.
        # -g0 overrides the -g that Python's own CFLAGS bring: debug info was
        # 7 of the core's 8.5 MB.
        flags += ["-O3", "-g0"]
    sanitizer = os.environ.get("LSTM_FAST_SANITIZE")
    if sanitizer:
        flags += [f"-fsanitize={sanitizer}", "-fno-omit-frame-pointer", "-g"]
    return flags


def _is_x86_64():
    return platform.machine().lower() in ("x86_64", "amd64")


class BuildExt(build_ext):
    def run(self):
        super().run()
        # The package sits at the top of the checkout, and `python -m ...`
        # puts the checkout first on sys.path: after a plain `pip install .`
        # the source folder would shadow the installed package without its
        # compiled core. Leaving the built module in the source folder too (as
        # an in-place build does) makes both imports the same code.
        if not self.inplace:
            self.copy_extensions_to_source()

    def build_extension(self, ext):
        ctype = self.compiler.compiler_type
        base = _base_flags(ctype)
        ext.extra_compile_args = list(ext.extra_compile_args or []) + base
        if os.environ.get("LSTM_FAST_SANITIZE"):
            ext.extra_link_args = list(ext.extra_link_args or []) + [
                f"-fsanitize={os.environ['LSTM_FAST_SANITIZE']}"
            ]
        if ext.name == "lstm_fast._core" and _is_x86_64():
            built = set()
            for isa, (source, flags) in ISA_KERNELS.items():
                if isa == "AMX" and "AVX512" not in built:
                    continue
                try:
                    objects = self.compiler.compile(
                        [source],
                        output_dir=self.build_temp,
                        include_dirs=[CSRC],
                        extra_postargs=base + flags,
                        depends=HEADERS,
                    )
                except Exception as exc:  # an old compiler: keep the build, lose the ISA
                    print(f"lstm_fast: {isa} kernels not built ({exc}); portable path remains")
                    continue
                ext.extra_objects = list(ext.extra_objects or []) + objects
                built.add(isa)
                ext.define_macros = list(ext.define_macros or []) + [(f"LF_HAVE_{isa}", "1")]
        super().build_extension(ext)


def _extensions():
    import numpy
    from Cython.Build import cythonize

    ext = Extension(
        "lstm_fast._core",
        sources=["lstm_fast/_core.pyx"] + CORE_SOURCES,
        include_dirs=[CSRC, numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_link_args=["-pthread"] if os.name == "posix" else [],
        depends=HEADERS + ["lstm_fast/_core.pxd"] + [s for s, _ in ISA_KERNELS.values()],
    )
    return cythonize(
        [ext],
        compiler_directives={
            "language_level": 3,
            # Python's indexing rules for lists and tuples (the hot paths index
            # C arrays only, which these directives do not touch).
            "boundscheck": True,
            "wraparound": True,
            "cdivision": True,
        },
    )


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
