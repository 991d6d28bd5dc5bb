#!/usr/bin/env bash
# The GPU verification kit: every GPU figure of this project from ONE command, in under 9 minutes.
#
#   bash benchmarks/gpu/run_all.sh                 # on the GPU machine (wheelhouse carried; see benchmarks/README.md)
#   bash benchmarks/gpu/run_all.sh --dry-run       # anywhere: tiny shapes on CPU, same parts, same output files
#
# Parts run one after another, each under its own time limit (`timeout`), so that one slow part cannot lose the others;
# the whole run stops starting parts once its budget is spent. After every part the output folder ($OUT, or --out)
# is rewritten with results.json, results.md and run.log, so a run stopped from outside keeps what it measured.
#
# Options:
#   --dry-run        tiny shapes, CPU (CUDA hidden), no install; GPU-only parts and rows are recorded as skipped;
#                    every part gets 300 s (a busy 2-core machine spends most of it importing), the run 1200 s
#   --out DIR        output folder (default: $OUT, else outputs/gpu-kit)
#   --budget S       wall-clock budget of the whole run in seconds (default 510; dry run 1200)
#   --only A,B       run only these parts; the others are recorded as skipped
#   --part-limit S   every part's time limit in seconds (default: the table below; dry run 300)
#   --jobs N         parts run N at a time (default 1; the dry run defaults to 2: its time is Python start-up)
#   --wheelhouse D   the wheels to install (default benchmarks/gpu/wheelhouse)
# Environment: PYTHON (default python3) is the interpreter every part uses.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root="$(pwd)"

# ---------------------------------------------------------------------------------------------------------------------
# The parts: name, time limit (s), expected wall time on the GPU machine (s), what it measures. Order = run order.
# ---------------------------------------------------------------------------------------------------------------------
parts=(
    "install|120|20|offline install of the wheelhouse (transformers>=5.24, bitsandbytes)"
    "smoke|60|15|versions, import, one tiny forward of each family on the device"
    "test_gpu|150|40|pytest modeling_tests/test_gpu.py (sdpa vs eager in bf16, batched vs single-row generate)"
    "reference|120|45|full-canvas step at 1 x 384: LLaDA vs transformers' LlamaForCausalLM, eager and CUDA graph"
    "llada8b|240|110|bench_gpu_steps.py --compile, LLaDA-8B shapes, 8 x 512: full-canvas, prefix- and dual-cache steps, eager and captured"
    "llada2mini|200|80|bench_gpu_steps.py --compile, LLaDA2.0-mini shapes, 1 x 256: uncached and block-cache steps, eager and captured"
    "bnb|240|140|bench_quantization.py, LLaDA-8B shapes: bf16 / int8 / nf4 load, peak memory, one generate"
)

dry_run=0
out="${OUT:-outputs/gpu-kit}"
budget=""
only=""
part_limit=""
parallel=""
wheelhouse="benchmarks/gpu/wheelhouse"
python="${PYTHON:-python3}"
while (($#)); do
    case "$1" in
        --dry-run) dry_run=1 ;;
        --out) out="$2"; shift ;;
        --budget) budget="$2"; shift ;;
        --only) only="$2"; shift ;;
        --part-limit) part_limit="$2"; shift ;;
        --jobs) parallel="$2"; shift ;;
        --wheelhouse) wheelhouse="$2"; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run_all.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
if ((dry_run)); then
    mode="dry-run"
    parallel="${parallel:-2}"
    budget="${budget:-1200}"
    part_limit="${part_limit:-300}"
    export CUDA_VISIBLE_DEVICES=""                # the dry run is the CPU run, even on a machine with a GPU
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" # tiny shapes: threads only fight each other
else
    mode="gpu"
    parallel="${parallel:-1}"
    budget="${budget:-510}"
fi

mkdir -p "${out}"
out="$(cd "${out}" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-kit.XXXXXX")"
export PYTHONPATH="${root}/src${PYTHONPATH:+:${PYTHONPATH}}" # the project itself, uninstalled
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PIP_NO_INDEX=1 # no pip call of this run may reach a package registry
started="$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"
deadline=$(($(date +%s) + budget))

for entry in "${parts[@]}"; do
    IFS='|' read -r name limit expected description <<<"${entry}"
    printf '%s\t%s\t%s\t%s\n' "${name}" "${limit}" "${expected}" "${description}" >>"${work}/plan.tsv"
done

report() {
    "${python}" benchmarks/gpu/report.py --work "${work}" --out "${out}" --mode "${mode}" --started "${started}" \
        --budget "${budget}" || echo "run_all.sh: report.py failed" >&2
}

# ---------------------------------------------------------------------------------------------------------------------
# What each part runs, on the GPU and in the dry run. Sets `command` (an array), or `skip` (the reason it does not run).
# ---------------------------------------------------------------------------------------------------------------------
part_command() {
    local name="$1" json="${work}/$1.json"
    command=()
    skip=""
    case "${name}" in
        install)
            if ((dry_run)); then
                skip="dry run: nothing is installed"
            else
                command=(bash benchmarks/gpu/install_wheelhouse.sh "${wheelhouse}" "${python}")
            fi
            ;;
        smoke)
            if ((dry_run)); then
                command=("${python}" benchmarks/gpu/smoke.py --device cpu --dtype float32 --json "${json}")
            else
                command=("${python}" benchmarks/gpu/smoke.py --device cuda --json "${json}")
            fi
            ;;
        test_gpu)
            command=("${python}" -m pytest modeling_tests/test_gpu.py -q -p no:cacheprovider
                --junitxml "${work}/test_gpu.xml")
            ;;
        reference)
            if ((dry_run)); then
                command=("${python}" benchmarks/gpu/bench_reference.py --model tiny --device cpu --dtype float32
                    --prompt-length 16 --answer-length 32 --block-length 16 --repeats 2 --json "${json}")
            else
                command=("${python}" benchmarks/gpu/bench_reference.py --model llada-8b --device cuda --batch 1
                    --prompt-length 128 --answer-length 256 --json "${json}")
            fi
            ;;
        llada8b | llada2mini)
            local -A gpu_args=(
                [llada8b]="--model llada-8b --compile --batch-sizes 8 --answer-lengths 512"
                [llada2mini]="--model llada2-mini --compile --batch-sizes 1 --answer-lengths 256"
            )
            local -A cpu_args=(
                [llada8b]="--model tiny --batch-sizes 2 --answer-lengths 32"
                [llada2mini]="--model tiny-llada2 --batch-sizes 1 2 --answer-lengths 32"
            )
            if ((dry_run)); then
                # The captured steps (torch.compile mode=reduce-overhead: CUDA graphs) are GPU-only.
                # shellcheck disable=SC2206  # the flags are plain words
                command=("${python}" benchmarks/bench_gpu_steps.py ${cpu_args[${name}]} --device cpu --dtype float32
                    --prompt-length 16 --block-length 16 --repeats 2 --nfe 8 --json "${json}")
            else
                # shellcheck disable=SC2206
                command=("${python}" benchmarks/bench_gpu_steps.py ${gpu_args[${name}]} --device cuda
                    --prompt-length 128 --block-length 32 --json "${json}")
            fi
            ;;
        bnb)
            if ((dry_run)); then
                command=("${python}" benchmarks/bench_quantization.py --device cpu --families llada --layers 1
                    --hidden 64 --gen-length 8 --block-length 8 --qlora-steps 0 --skip-modes int8 nf4
                    --skip-reason "dry run: bitsandbytes on CUDA is GPU-only" --json "${json}")
            elif ! "${python}" -c "import importlib.util as u, sys; sys.exit(u.find_spec('bitsandbytes') is None)"; then
                skip="bitsandbytes is not installed (no wheel in ${wheelhouse}?)"
            else
                command=("${python}" benchmarks/bench_quantization.py --device cuda --families llada --gen-length 64
                    --block-length 32 --qlora-steps 0 --init-device cuda --json "${json}")
            fi
            ;;
        *) echo "run_all.sh: no command for part ${name}" >&2; exit 2 ;;
    esac
    if [[ -n "${only}" && ",${only}," != *",${name},"* ]]; then
        command=()
        skip="not selected (--only ${only})"
    fi
}

# Records one finished part: name, status, exit code, seconds, limit, reason, command.
record() {
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"${work}/parts.tsv"
}

run_part() {
    local name="$1" limit="$2"
    local log="${work}/${name}.log" command_line
    limit="${part_limit:-${limit}}"
    part_command "${name}"
    printf -v command_line '%q ' "${command[@]}"
    if [[ -n "${skip}" ]]; then
        record "${name}" skipped "" 0 "${limit}" "${skip}" ""
        echo "----- ${name}: skipped (${skip})"
        report
        return
    fi
    # The part's limit, cut to what is left of the run's budget (keeping a few seconds for the report).
    local left=$((deadline - $(date +%s) - 5))
    if ((left < 10)); then
        record "${name}" skipped "" 0 "${limit}" "out of the run's ${budget} s budget" "${command_line}"
        echo "----- ${name}: skipped (out of the run's ${budget} s budget)"
        report
        return
    fi
    if ((limit > left)); then
        limit="${left}"
    fi
    echo "----- ${name} (limit ${limit} s): ${command_line}"
    local start="${EPOCHREALTIME/./}" rc status reason=""
    set +e
    if ((parallel > 1)); then
        timeout --kill-after=10 "${limit}" "${command[@]}" </dev/null >"${log}" 2>&1
        rc=$?
    else
        timeout --kill-after=10 "${limit}" "${command[@]}" </dev/null 2>&1 | tee "${log}"
        rc=${PIPESTATUS[0]}
    fi
    set -e
    case "${rc}" in
        0) status=ok ;;
        124 | 137) status=timeout; reason="stopped at its ${limit} s limit" ;;
        *) status=failed; reason="exit code ${rc}" ;;
    esac
    local elapsed_us=$((${EPOCHREALTIME/./} - start)) seconds
    seconds="$((elapsed_us / 1000000)).$(printf '%03d' $((elapsed_us / 1000 % 1000)))"
    record "${name}" "${status}" "${rc}" "${seconds}" "${limit}" "${reason}" "${command_line}"
    echo "----- ${name}: ${status} in ${seconds%.*} s"
    report
}

echo "GPU kit (${mode}): output in ${out}, work folder ${work}, budget ${budget} s, ${parallel} part(s) at a time"
report # every part is on record as "not run" from the start
for entry in "${parts[@]}"; do
    IFS='|' read -r name limit _ _ <<<"${entry}"
    if ((parallel > 1)); then
        while (($(jobs -rp | wc -l) >= parallel)); do
            wait -n || true
        done
        run_part "${name}" "${limit}" &
    else
        run_part "${name}" "${limit}"
    fi
done
wait
report
echo "GPU kit (${mode}) done in $(($(date +%s) + budget - deadline)) s; ${out}/results.md:"
sed -n '/^## Parts/,/^## [a-z]/p' "${out}/results.md" | sed '$d'
