#!/usr/bin/env bats
# CI's short run of every libFuzzer target (scripts/fuzz.sh --smoke): each is built with
# clang -fsanitize=fuzzer,address,undefined, replays its seed corpus (tests/fuzz/corpus/,
# which holds every input that once crashed or hung a target) and then fuzzes for 10 s.
# `make fuzz` is the long run (FUZZ_SECONDS, default 600 per target).

load helpers

@test "fuzz smoke: every fuzz target builds, replays its corpus and runs 10 s clean" {
    run timeout -k 10 900 scripts/fuzz.sh --smoke
    if [ "$status" -eq 77 ]; then
        skip "clang with its libFuzzer runtime is missing (Debian: clang libclang-rt-14-dev): $output"
    fi
    echo "$output"
    [ "$status" -eq 0 ]
    # every target reported and none failed
    local t
    for t in fuzz_pickle fuzz_zip fuzz_safetensors fuzz_npy fuzz_geometry fuzz_dcp_metadata; do
        grep -Eq "^$t +[0-9?]+ +[0-9]+ .* ok$" <<<"$output"
    done
}
