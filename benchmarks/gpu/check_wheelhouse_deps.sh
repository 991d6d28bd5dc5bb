#!/usr/bin/env bash
# Checks, here and before any GPU time is spent, that the wheelhouse installs offline on top of the GPU machine's
# image. No torch wheel for CPU exists for Python 3.12 here, so this checks dependency resolution, not imports:
#
#  1. a fresh Python 3.12 venv gets the image's versions of transformers (5.17), huggingface_hub, tokenizers and
#     safetensors from the package registry (everything they pull in comes along);
#  2. the wheelhouse's transformers installs on top of it with --no-index --find-links: pip must resolve every
#     requirement of transformers >= 5.24 from what is installed, as run_all.sh's install part will on the GPU;
#  3. bitsandbytes installs with --no-deps (its torch cannot be had here), and the Requires-Dist of both wheels are
#     checked against the image's package list (image-packages.txt): each requirement must be in the image, and in
#     a version its specifier allows wherever the version is known.
#
#   bash benchmarks/gpu/check_wheelhouse_deps.sh [WHEELHOUSE]
#
# Environment: PYTHON312 (default: pyenv's 3.12) is the interpreter of the venv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

wheelhouse="$(cd "${1:-benchmarks/gpu/wheelhouse}" && pwd)"
image_packages="$(pwd)/benchmarks/gpu/image-packages.txt"
python312="${PYTHON312:-$(pyenv prefix 3.12 2>/dev/null)/bin/python3.12}"

scratch="$(mktemp -d)"
trap 'rm -rf "${scratch}"' EXIT
venv="${scratch}/venv"
pip=("${venv}/bin/python" -m pip --disable-pip-version-check)

echo "== 1. Python 3.12 venv with the image's versions"
"${python312}" -m venv "${venv}"
"${venv}/bin/python" --version
image_pins=()
for name in transformers huggingface-hub tokenizers safetensors; do
    image_pins+=("$(grep -i -m1 "^${name}==" "${image_packages}")")
done
echo "+ pip install ${image_pins[*]}"
"${pip[@]}" install --quiet "${image_pins[@]}"

echo "== 2. the wheelhouse's transformers, offline, resolved against what is installed"
"${pip[@]}" install --no-index --find-links "${wheelhouse}" "transformers>=5.24" | grep -v "^Requirement already"

echo "== 3. bitsandbytes without its dependencies; both wheels' requirements against the image's package list"
"${pip[@]}" install --no-index --no-deps --find-links "${wheelhouse}" bitsandbytes | grep "^Successfully"
"${venv}/bin/python" - "${image_packages}" <<'PY'
import importlib.metadata as metadata
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


image = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line and not line.startswith("#"):
        name, _, version = line.partition("==")
        image[canonicalize_name(name)] = version or None

problems = 0
print(f"{'wheel':<20} {'requirement':<30} {'image':<14} verdict")
for package in ("transformers", "bitsandbytes"):
    for text in metadata.requires(package) or []:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # an extra, or a marker that does not hold for the image's Python
        name = canonicalize_name(requirement.name)
        if name not in image:
            verdict, problems = "MISSING from the image", problems + 1
        elif image[name] is None:
            verdict = "in the image (version not recorded)"
        elif requirement.specifier.contains(image[name], prereleases=True):
            verdict = "ok"
        else:
            verdict, problems = "version NOT allowed", problems + 1
        wheel = f"{package} {metadata.version(package)}"
        print(f"{wheel:<20} {str(requirement):<30} {image.get(name) or '-':<14} {verdict}")
if problems:
    sys.exit(f"{problems} requirement(s) not met by the image")
print("every requirement of the wheelhouse is in the image")
PY
