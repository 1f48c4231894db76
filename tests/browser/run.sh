#!/usr/bin/env bash
# Browser test of the explorer: builds a site from the shapes fixture (192
# images of coloured shapes with captions, activations computed from their
# pixels), with an SAE trained on those activations, loads it from disk in
# headless Chromium and checks the rendered DOM: the feature count, that the
# top images' sources exist, and that caption search finds features.
# Screenshots of the index and one feature page go to BUILD/explorer-*.png.
#
#   tests/browser/run.sh SAEFLOW_EXE BUILD_DIR
#
# Exit 0 pass, 1 fail, 77 skip (no chromium; ctest SKIP_RETURN_CODE).
set -u
EXE=${1:?usage: run.sh SAEFLOW_EXE BUILD_DIR}
BUILD=${2:?usage: run.sh SAEFLOW_EXE BUILD_DIR}
SRC=$(cd "$(dirname "$0")/../.." && pwd)
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$CHROME" ]; then
    echo "SKIP: chromium not installed"
    exit 77
fi
W="$BUILD/tmp/browser"
rm -rf "$W" && mkdir -p "$W"
FIX="$SRC/fixtures/analysis"
fail=0
check() { # check DESCRIPTION CONDITION...
    local what=$1; shift
    if "$@"; then echo "ok   $what"; else echo "FAIL $what"; fail=1; fi
}
die() { echo "FAIL $*"; exit 1; }

"$EXE" train --tensorpath "$FIX/acts.safetensors" --pages 48 --k 4 --batch_size 32 --num_epochs 30 \
    --lr 2e-3 --lr_warmup_steps 10 --bodycount 2000 --savedir "$W" --name sae --threads 2 --quiet \
    || die "saeflow train"
"$EXE" topk --checkpoint "$W/sae" --acts "$FIX/acts.safetensors" --data "folder:$FIX/shapes" \
    --out "$W/topk.safetensors" -N 12 --quiet || die "saeflow topk"
"$EXE" explore --topk "$W/topk.safetensors" --out "$W/site" --title "Shapes test site" --quiet \
    || die "saeflow explore"

# Chromium, headless, from file:// with its own profile; virtual time lets the
# page's scripts (including the feature chunk loaded on demand) finish.
chrome() { # chrome OUT_ARG URL
    timeout 90 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run \
        --user-data-dir="$W/profile" --virtual-time-budget=5000 "$@" 2>>"$W/chromium.log"
}
URL="file://$W/site/index.html"
chrome --dump-dom "$URL" > "$W/index.dom" || die "chromium (see $W/chromium.log)"
chrome --dump-dom "$URL#search=red" > "$W/search.dom" || die "chromium search"
chrome --dump-dom "$URL#search=zebra" > "$W/search0.dom" || die "chromium search"

n_features=$(grep -o 'id="n-features">[0-9]*<' "$W/index.dom" | grep -o '[0-9][0-9]*')
rows=$(grep -o 'class="feat-row"' "$W/index.dom" | wc -l)
check "index shows 48 features (got '${n_features:-none}')" [ "${n_features:-0}" = 48 ]
check "index lists 48 feature rows (got $rows)" [ "$rows" = 48 ]
check "density histogram rendered" grep -q 'id="density-chart"' "$W/index.dom"
check "training curves rendered" grep -q 'FVU (l2 normalised)' "$W/index.dom"

# search: features whose top rows' captions contain "red"
hits=$(grep -o 'id="search-summary" data-count="[0-9]*"' "$W/search.dom" | grep -o '[0-9][0-9]*"$' | tr -d '"')
hits0=$(grep -o 'id="search-summary" data-count="[0-9]*"' "$W/search0.dom" | grep -o '[0-9][0-9]*"$' | tr -d '"')
check "search 'red' finds features (got ${hits:-none})" [ "${hits:-0}" -ge 1 ]
check "search 'zebra' finds none (got ${hits0:-none})" [ "${hits0:-x}" = 0 ]
# every feature the page lists for "red" really has "red" in a top-row caption
ok=1
for f in $(grep -o 'class="feat-row" data-feature="[0-9]*"' "$W/search.dom" | grep -o '[0-9]*"$' | tr -d '"'); do
    chunk=$(printf '%04d' $((f / 64)))
    grep -q "{\"id\":$f,.*red" "$W/site/data/f/$chunk.js" || { ok=0; echo "  feature $f has no red caption"; }
done
check "search results are right" [ $ok = 1 ]

# a feature page: the busiest feature (first row of the index, sorted by density)
F=$(grep -o 'class="feat-row" data-feature="[0-9]*"' "$W/index.dom" | head -1 | grep -o '[0-9]*"$' | tr -d '"')
chrome --dump-dom "$URL#f=$F" > "$W/feature.dom" || die "chromium feature page"
check "feature page $F rendered" grep -q "id=\"feature\" data-feature=\"$F\"" "$W/feature.dom"
imgs=$(grep -o 'class="top-img" src="[^"]*"' "$W/feature.dom" | sed 's/.*src="//; s/"$//')
n_imgs=$(echo "$imgs" | grep -c . || true)
check "feature page shows 12 top images (got $n_imgs)" [ "$n_imgs" = 12 ]
missing=0
for s in $imgs; do [ -s "$W/site/$s" ] || { missing=1; echo "  missing $s"; }; done
check "top image files exist" [ $missing = 0 ]
check "activation histogram rendered" grep -q 'id="hist-chart"' "$W/feature.dom"
check "decoder neighbours listed" grep -q 'id="neighbours"' "$W/feature.dom"
check "frequent caption words listed" grep -q 'id="common-words"' "$W/feature.dom"

chrome --screenshot="$BUILD/explorer-index.png" --window-size=1280,900 "$URL" >/dev/null || die "screenshot"
chrome --screenshot="$BUILD/explorer-feature.png" --window-size=1280,1100 "$URL#f=$F" >/dev/null || die "screenshot"
check "screenshots saved" test -s "$BUILD/explorer-index.png" -a -s "$BUILD/explorer-feature.png"
[ $fail = 0 ] && echo "browser test passed" || echo "browser test FAILED (files in $W)"
exit $fail
