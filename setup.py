"""Builds rskcnn._C against the torch that is installed now.

Install with ``pip install --no-build-isolation -e .`` so that the extension is
compiled against the same torch it will run with (see README, "Build").
"""

import glob
import os
from pathlib import Path

import shutil

ROOT = Path(__file__).parent
DEFAULT_CUDA_ARCHS = "8.0;9.0"


def find_cuda_home() -> str | None:
    """$CUDA_HOME or $CUDA_PATH, else the toolkit that owns the nvcc on PATH, else
    /usr/local/cuda. torch guesses the parent of nvcc's folder, which is wrong when nvcc
    on PATH is a wrapper script (/usr/local/bin/nvcc); a toolkit here must have
    bin/nvcc and include/cuda_runtime.h."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return os.environ[var]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
        try:  # a wrapper script that execs the real nvcc
            for word in Path(nvcc).read_text(errors="ignore").split():
                if word.endswith("/bin/nvcc"):
                    candidates.append(Path(word).parent.parent)
        except OSError:
            pass
    candidates.append(Path("/usr/local/cuda"))
    for home in candidates:
        if (home / "bin" / "nvcc").exists() and (home / "include" / "cuda_runtime.h").exists():
            return str(home)
    return None


# Must be set before torch.utils.cpp_extension computes its CUDA_HOME at import.
if find_cuda_home() and not os.environ.get("CUDA_HOME"):
    os.environ["CUDA_HOME"] = find_cuda_home()

import torch  # noqa: E402
from setuptools import find_packages, setup  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def want_cuda(cuda_sources: list[str]) -> tuple[bool, str]:
    force = os.environ.get("FORCE_CUDA", "")
    if force == "0":
        return False, "FORCE_CUDA=0"
    if not cuda_sources:
        return False, "no CUDA sources in csrc/cuda"
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU build"
    # CUDA_HOME comes from $CUDA_HOME, $CUDA_PATH, the nvcc on PATH or /usr/local/cuda.
    if CUDA_HOME is None:
        return False, "no CUDA toolkit found (set CUDA_HOME or put nvcc on PATH)"
    # Built whenever a toolkit is found, with or without a GPU here: the kernels then
    # compile on every CI run, and the same build works once a GPU is attached.
    return True, f"FORCE_CUDA=1 ({CUDA_HOME})" if force == "1" else f"CUDA toolkit at {CUDA_HOME}"


def pip_cuda_include_dirs() -> list[str]:
    """Headers of torch's pip CUDA libraries (cuBLAS, cuSPARSE, ...), which ATen's CUDA
    headers include and a bare toolkit may lack."""
    try:
        import nvidia  # the namespace package of the nvidia-* wheels torch depends on
    except ImportError:
        return []
    return sorted({str(p.parent) for root in nvidia.__path__ for p in Path(root).glob("*/include/cusparse.h")})


def native_simd_flags() -> list[str]:
    """The widest of AVX-512 and AVX2 that the build machine has: the extension is
    built where it runs (pip install --no-build-isolation). RSKCNN_PORTABLE=1 builds
    for any x86-64."""
    if os.environ.get("RSKCNN_PORTABLE") == "1":
        return []
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    if {"avx512f", "avx512dq", "avx2", "fma"} <= flags:
        return ["-mavx512f", "-mavx512dq", "-mavx2", "-mfma", "-DRSKCNN_VECTOR_BYTES=64"]
    if {"avx2", "fma"} <= flags:
        return ["-mavx2", "-mfma", "-DRSKCNN_VECTOR_BYTES=32"]
    return []


def write_build_info(cuda: bool, reason: str) -> None:
    info = (
        "# Written by setup.py at build time; not tracked.\n"
        f"TORCH_VERSION = {torch.__version__!r}\n"
        f"CUDA_BUILT = {cuda!r}\n"
        f"CUDA_REASON = {reason!r}\n"
        f"CUDA_ARCH_LIST = {os.environ.get('TORCH_CUDA_ARCH_LIST', '') if cuda else ''!r}\n"
    )
    (ROOT / "rskcnn" / "_build_info.py").write_text(info)


def extensions():
    cpp_sources = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/cpu/*.cpp"))
    cuda_sources = sorted(glob.glob("csrc/cuda/*.cu") + glob.glob("csrc/cuda/*.cpp"))
    cuda, reason = want_cuda(cuda_sources)
    if cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
    write_build_info(cuda, reason)
    print(f"rskcnn: building {'with' if cuda else 'without'} CUDA kernels ({reason})")

    # -fopenmp: ATen's parallel_for is inline and runs serially in a file compiled without
    # OpenMP. At load time libgomp.so.1 resolves to the copy torch has already loaded.
    cxx_flags = ["-O3", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fopenmp", *native_simd_flags()]
    kwargs = dict(
        name="rskcnn._C",
        sources=cpp_sources + (cuda_sources if cuda else []),
        include_dirs=[str(ROOT / "csrc")],
        # One binary for every CPython >= 3.10; the module only registers torch ops.
        define_macros=[("Py_LIMITED_API", "0x030A0000")],
        extra_compile_args={"cxx": cxx_flags},
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
    if cuda:
        nvcc_flags = ["-O3", "--expt-relaxed-constexpr", "-lineinfo",
                      "-Xcompiler=-Wall,-Wextra,-Wno-unused-parameter"]
        if os.environ.get("RSKCNN_CUDA_DEBUG") == "1":  # device-side asserts of csrc/cuda
            nvcc_flags.append("-DRSKCNN_CUDA_DEBUG")
        kwargs["extra_compile_args"]["nvcc"] = nvcc_flags
        kwargs["include_dirs"] += pip_cuda_include_dirs()
        return [CUDAExtension(**kwargs)]
    return [CppExtension(**kwargs)]


setup(
    packages=find_packages(include=["rskcnn", "rskcnn.*"]),
    ext_modules=extensions(),
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
