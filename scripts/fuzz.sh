#!/usr/bin/env bash
# Fuzz campaigns, repeatable: runs each cargo-fuzz target (all of protocols/*/fuzz and
# crates/*/fuzz by default) for the same budget under `nice`, one at a time, then minimises its
# corpus with `cargo fuzz cmin` and prints one line of figures per target: executions (from
# libFuzzer's final stats), executions per second, seconds, corpus files before and after
# minimisation, and the crashes, timeouts and OOMs found (kept in the target's artifacts/).
#
#   scripts/fuzz.sh [--runs N | --seconds S] [--sanitizer address] [target...]
#
# By default each target runs 60 s, all targets, built without a sanitizer: the parsers and the
# policy crate have no `unsafe`, and AddressSanitizer costs half the rate or more
# (`--sanitizer address` turns it on).
#
# Corpora stay between runs (in each fuzz package's corpus/, not committed), so campaigns add up;
# an empty corpus is first seeded: the policy target with the example policies and the YAML and
# JSON of the READMEs, cql_text with the string literals of the CQL lexer and classifier tests,
# kafka with a few requests and responses in its script mode and one in raw reads.
# All fuzz packages build into one target directory (target/fuzz unless CARGO_TARGET_DIR is
# set), so the crates they share are built once; logs go to target/fuzz-logs/<target>.log and the
# figures are also appended to target/fuzz-logs/figures.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

budget=(-max_total_time=60)
sanitizer=none
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) budget=("-runs=$2"); shift 2 ;;
    --seconds) budget=("-max_total_time=$2"); shift 2 ;;
    --sanitizer) sanitizer=$2; shift 2 ;;
    -*) echo "usage: $0 [--runs N | --seconds S] [--sanitizer address] [target...]" >&2; exit 2 ;;
    *) break ;;
  esac
done

# Every target, by name, and the fuzz package holding it.
declare -A package
for file in protocols/*/fuzz/fuzz_targets/*.rs crates/*/fuzz/fuzz_targets/*.rs; do
  package[$(basename "$file" .rs)]=${file%/fuzz_targets/*}
done
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(printf '%s\n' "${!package[@]}" | sort)
for target in "${targets[@]}"; do
  [ -n "${package[$target]:-}" ] || { echo "unknown target $target (have: ${!package[*]})" >&2; exit 2; }
done

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/fuzz}
logs=$root/target/fuzz-logs
mkdir -p "$logs"

# Seeds an empty corpus directory $2 for target $1 from texts in the repository.
seed() {
  case "$1" in
    policy)
      for file in examples/*/policy.yaml; do
        cp "$file" "$2/$(basename "$(dirname "$file")").yaml"
      done
      awk -v dir="$2" '/^```(yaml|json)/ { n++; on = 1; next } /^```/ { on = 0 }
        on { print > (dir "/readme-" n) }' README.md examples/*/README.md ;;
    cql_text)
      grep -ohE '"([^"\\]|\\.){4,}"' protocols/cassandra/src/statement/tests.rs \
        protocols/cassandra/src/lexer.rs | sed 's/^"//; s/"$//' | sort -u |
        awk -v dir="$2" '{ print > (dir "/test-" NR) }' ;;
    kafka)
      # Valid frames in the target's script mode (first byte odd): Metadata for `a` and its
      # response naming `a` by id 0x11..., a Fetch by that id and its response, a denied
      # Produce to `b`, a Metadata for `a` and `x` letting the broker create them; and the
      # Produce as raw reads (first byte even).
      local id='\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11\x11'
      local zero='\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00'
      local produce='\x00\xff\xff\x00\x00\x03\xe8\x02\x02b\x02\x00\x00\x00\x00\x06RECS!\x00\x00\x00'
      printf '%b' "\x01\x00\x03\x0c\x00\x17\x02${zero}\x02a\x00\x00\x00\x00" \
        "\x80\x00\x00\x28\x00\x00\x00\x00\x00\x01\x00\xff\xff\xff\xff\x02\x00\x00\x02a${id}\x00\x01\x80\x00\x00\x00\x00\x00" \
        "\x07\x01\x10\x00\x4c\x00\x00\x01\xf4\x00\x00\x00\x01\x00\x0f\x42\x40\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02${id}\x02\x00\x00\x00\x00\xff\xff\xff\xff\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x0f\x42\x40\x00\x00\x01\x01\x00" \
        "\x80\x01\x00\x05\x00resp" "\x00\x00\x09\x00\x18${produce}" \
        "\x00\x03\x0c\x00\x2a\x03${zero}\x02a\x00${zero}\x02x\x00\x01\x00\x00" >"$2/script"
      printf '%b' "\x00\x2b\x00\x00\x00\x27\x00\x00\x00\x09\x00\x00\x00\x07\x00\x04fuzz\x00${produce}" \
        >"$2/raw" ;;
  esac
}

# Files in directory $1 (0 when it does not exist).
count() {
  find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l
}

figures=()
for target in "${targets[@]}"; do
  dir=$root/${package[$target]}
  corpus=$dir/corpus/$target
  artifacts=$dir/artifacts/$target
  log=$logs/$target.log
  mkdir -p "$corpus" "$artifacts"
  [ "$(count "$corpus")" -gt 0 ] || seed "$target" "$corpus"
  (cd "$dir" && nice -n 19 cargo +nightly fuzz build -s "$sanitizer" "$target")
  found_before=$(count "$artifacts")
  echo "fuzzing $target (${budget[*]}, sanitizer $sanitizer), log in $log"
  start=$SECONDS
  status=0
  (cd "$dir" && nice -n 19 cargo +nightly fuzz run -s "$sanitizer" "$target" -- \
    -print_final_stats=1 -timeout=20 "${budget[@]}") >"$log" 2>&1 || status=$?
  seconds=$((SECONDS - start))
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  found=$(($(count "$artifacts") - found_before))
  [ "$status" = 0 ] || echo "$target stopped with status $status: see $log" >&2
  corpus_before=$(count "$corpus")
  (cd "$dir" && nice -n 19 cargo +nightly fuzz cmin -s "$sanitizer" "$target") >>"$log" 2>&1 ||
    echo "minimising the corpus of $target failed: see $log" >&2
  corpus_after=$(count "$corpus")
  figures+=("$(printf '%-10s executions %12s  exec/s %7s  seconds %6s  corpus %5s -> %5s  crashes %s' \
    "$target" "${executions:-0}" "${rate:-0}" "$seconds" "$corpus_before" "$corpus_after" "$found")")
  echo "$(date -u +%FT%TZ) ${figures[-1]}" >>"$logs/figures.txt"
done
printf '%s\n' "${figures[@]}"
