#!/usr/bin/env bash
# Downloads, into benchmarks/gpu/wheelhouse/ (ignored by git), exactly the wheels the GPU machine's image lacks for
# this project, and no others: transformers at the project's floor (the image has 5.17) and bitsandbytes (the image
# has none), for CPython 3.12 on manylinux x86_64. Everything else they need is already in the image
# (check_wheelhouse_deps.sh checks that). Then it checks that the wheelhouse plus the working tree that travels with
# it stays under the device machine's 64 MiB limit, trims bitsandbytes to its CUDA 13.0 library if it does not, and
# prints the paths to carry.
#
#   bash benchmarks/gpu/make_wheelhouse.sh            # trims bitsandbytes only if space is short
#   bash benchmarks/gpu/make_wheelhouse.sh --trim     # trims it anyway
#
# Environment: PYTHON (default python3) runs pip; it needs network access to the package registry.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

wheelhouse="benchmarks/gpu/wheelhouse"
transformers_requirement="transformers>=5.24,<6" # setup.cfg's floor
bitsandbytes_requirement="bitsandbytes>=0.45"    # setup.cfg's quant extra
cuda_library="libbitsandbytes_cuda130.so"         # the GPU machine's torch is built for CUDA 13.0
limit_mib=64                                      # the device machine's limit on what travels
margin_mib=4                                      # room for the tree to grow before the run
python="${PYTHON:-python3}"

trim=auto
case "${1:-}" in
    "") ;;
    --trim) trim=always ;;
    *) echo "make_wheelhouse.sh: unknown argument $1 (--trim is the only option)" >&2; exit 2 ;;
esac

if ! git check-ignore -q "${wheelhouse}/x.whl"; then
    echo "make_wheelhouse.sh: ${wheelhouse} is not ignored by git; add it to .gitignore first" >&2
    exit 1
fi

rm -rf "${wheelhouse}"
mkdir -p "${wheelhouse}"
platforms=()
for platform in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "${platform}")
done
"${python}" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" --dest "${wheelhouse}" "${transformers_requirement}" "${bitsandbytes_requirement}"

bitsandbytes_wheel="$(compgen -G "${wheelhouse}/bitsandbytes-*.whl")"
if [[ "$("${python}" -m zipfile -l "${bitsandbytes_wheel}")" != *"bitsandbytes/${cuda_library}"* ]]; then
    echo "make_wheelhouse.sh: ${bitsandbytes_wheel} has no ${cuda_library}" >&2
    exit 1
fi

# Bytes of what the device machine copies: tracked files and untracked ones git does not ignore (shared/ too, where
# the checkout has one), plus the carried wheelhouse.
tree_bytes() {
    git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s -- 2>/dev/null |
        awk '{ total += $1 } END { print total + 0 }'
}
mib() {
    awk -v bytes="$1" 'BEGIN { printf "%.1f MiB", bytes / 1048576 }'
}
wheelhouse_bytes() {
    du -sb "${wheelhouse}" | cut -f1
}

tree="$(tree_bytes)"
total=$((tree + $(wheelhouse_bytes)))
budget=$(((limit_mib - margin_mib) * 1048576))
if [[ "${trim}" == always ]] || ((total > budget)); then
    echo "trimming bitsandbytes to ${cuda_library} (tree + wheelhouse: $(mib "${total}"); budget $(mib "${budget}"))"
    "${python}" benchmarks/gpu/trim_wheel.py "${bitsandbytes_wheel}" --keep "${cuda_library}" libbitsandbytes_cpu.so
    total=$((tree + $(wheelhouse_bytes)))
fi

echo
echo "wheelhouse ${wheelhouse}:"
for wheel in "${wheelhouse}"/*.whl; do
    echo "  $(basename "${wheel}")  $(mib "$(stat -c %s "${wheel}")")"
done
echo "working tree that travels: $(mib "${tree}"); with the wheelhouse: $(mib "${total}") of ${limit_mib} MiB"
if ((total > limit_mib * 1048576)); then
    echo "make_wheelhouse.sh: over the ${limit_mib} MiB limit" >&2
    exit 1
fi
if ((total > budget)); then
    echo "warning: less than ${margin_mib} MiB to spare; the tree must not grow before the run" >&2
fi
echo
echo "paths to carry: ${wheelhouse}"
echo "command on the GPU machine: bash benchmarks/gpu/run_all.sh"
