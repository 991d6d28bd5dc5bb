#!/usr/bin/env bash
# Installs the GPU kit's wheelhouse (benchmarks/gpu/make_wheelhouse.sh) into PYTHON's environment, offline: pip gets
# --no-index, so nothing can reach a package registry. The GPU image already has everything these wheels need; should
# pip still fail to resolve a dependency from what is installed, the wheels are installed without their dependencies
# (the failure stays in the log) rather than losing the run. The project itself is not installed: run_all.sh puts
# src/ on PYTHONPATH.
#
#   bash benchmarks/gpu/install_wheelhouse.sh [WHEELHOUSE] [PYTHON]
set -euo pipefail

wheelhouse="${1:-benchmarks/gpu/wheelhouse}"
python="${2:-python3}"

if ! compgen -G "${wheelhouse}/transformers-*.whl" >/dev/null; then
    echo "install: no transformers wheel in ${wheelhouse}; run benchmarks/gpu/make_wheelhouse.sh and carry it" >&2
    exit 1
fi
requirements=("transformers>=5.24")
if compgen -G "${wheelhouse}/bitsandbytes-*.whl" >/dev/null; then
    requirements+=("bitsandbytes")
fi

pip_install=("${python}" -m pip install --no-index --find-links "${wheelhouse}" --no-cache-dir
    --disable-pip-version-check --progress-bar off)
echo "+ ${pip_install[*]} ${requirements[*]}"
if ! "${pip_install[@]}" "${requirements[@]}"; then
    echo "install: pip could not resolve the wheels' dependencies from the installed packages; installing them" \
        "with --no-deps" >&2
    "${pip_install[@]}" --no-deps "${requirements[@]}"
fi

"${python}" - <<'PY'
import importlib.metadata as metadata

for name in ("transformers", "huggingface_hub", "tokenizers", "bitsandbytes", "torch"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name} not installed")
PY
