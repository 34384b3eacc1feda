"""lumbar-edge: edge inference toolkit for degenerative lumbar spine MRI grading.

``training/``, ``export/`` and ``benchmarks/`` are top-level folders of the repository but are
installed under the ``lumbar_edge`` namespace (``lumbar_edge.training`` ...) so that no package
called ``training`` or ``export`` lands in site-packages.
"""
import os
import shutil
import sys

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildPyWithKernel(build_py):
    """build_py, then the decode kernel's fatbin (lumbar_edge.kernels.build) into the package
    where nvcc is present: into the build folder, or the source folder for ``pip install -e``.
    An up-to-date fatbin in the source folder (CI builds it first) is copied, not rebuilt.
    Without nvcc the package ships without it and the decoder compiles the source at run time."""

    def run(self):
        super().run()
        here = os.path.dirname(os.path.abspath(__file__))
        sys.path.insert(0, here)
        try:
            from lumbar_edge.kernels import build as kernel_build
        finally:
            sys.path.remove(here)
        source = kernel_build.kernel_dir()
        target = source if getattr(self, "editable_mode", False) else os.path.join(self.build_lib, "lumbar_edge", "kernels")
        if kernel_build.is_current(source):
            if os.path.abspath(target) != str(source):
                for name in (kernel_build.FATBIN_NAME, kernel_build.MANIFEST_NAME):
                    shutil.copyfile(source / name, os.path.join(target, name))
            print(f"decode kernel: {kernel_build.FATBIN_NAME} is current")
            return
        if shutil.which("nvcc") is None:
            print("decode kernel: nvcc is not on PATH, so no decode.fatbin is packaged "
                  "(the CUDA decoder will compile decode.cu at run time where nvcc exists)")
            return
        manifest = kernel_build.build(target)
        print(f"decode kernel: built {kernel_build.FATBIN_NAME} (SASS {', '.join(manifest['sass'])}; "
              f"PTX {', '.join(manifest['ptx'])}; not built: {', '.join(manifest['not_built']) or 'none'})")


EXTRAS = {
    "train": ["torch>=2.4", "tqdm>=4.60"],
    "export": ["torch>=2.4", "onnx>=1.16"],
    "trt": ["pycuda>=2024.1", "tensorrt-lean-cu13"],
    "codecs": ["pylibjpeg>=2.0", "pylibjpeg-libjpeg>=2.1", "pylibjpeg-openjpeg>=2.3", "pylibjpeg-rle>=2.0",
               "pyjpegls>=1.2"],
    "serve": ["pynetdicom>=3.0"],
    # The fastest CPU engine on x86 (the openvino backend); reads the bundle's ONNX files.
    "openvino": ["openvino>=2024.4"],
    "dev": ["pytest>=7"],
    # CI's coverage-guided fuzz of the DICOM header reader (tests/dicom/atheris_headers.py).
    "fuzz": ["atheris>=2.3"],
}
EXTRAS["all"] = sorted({dep for name, deps in EXTRAS.items() if name != "fuzz" for dep in deps
                        if "tensorrt" not in dep and "pycuda" not in dep})

setup(
    name="lumbar-edge",
    version="0.1.0",
    description="Detect and grade degenerative lumbar spine disease on MRI, from DICOM to report, on edge GPUs and CPUs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The runtime's subpackages are found automatically; the three top-level folders are mapped
    # under the lumbar_edge namespace (with any subpackages they grow).
    packages=(["lumbar_edge"] + [f"lumbar_edge.{p}" for p in find_packages("lumbar_edge")]
              + [f"lumbar_edge.{top}" for top in ("training", "export", "benchmarks")]
              + [f"lumbar_edge.{top}.{p}" for top in ("training", "export", "benchmarks") for p in find_packages(top)]),
    package_dir={
        "lumbar_edge": "lumbar_edge",
        "lumbar_edge.training": "training",
        "lumbar_edge.export": "export",
        "lumbar_edge.benchmarks": "benchmarks",
    },
    # decode.fatbin and decode.fatbin.json are written by BuildPyWithKernel where nvcc exists.
    package_data={"lumbar_edge": ["kernels/*.cu", "kernels/*.cuh", "kernels/*.cpp"]},
    cmdclass={"build_py": BuildPyWithKernel},
    # zlib-ng: 1.7x faster PNG overlay compression (wheels for x86_64, aarch64, Windows, macOS);
    # lumbar_edge.report.png falls back to the standard zlib without it.
    install_requires=["numpy>=1.24", "pydicom>=2.4", "click>=8.0", "onnxruntime>=1.17", "zlib-ng>=0.4"],
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["lumbar-edge=lumbar_edge.cli:main"]},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Medical Science Apps."],
)
