#!/usr/bin/env bash
# Browser test of the explorer: builds a site from the shapes fixture (192
# images of coloured shapes with captions, activations computed from their
# pixels), with an SAE trained on those activations, loads it from disk in
# headless Chromium and checks the rendered DOM: the feature count, that the
# top images' sources exist, that caption search finds features and that dead
# features are hidden until toggled. A second site, from per-token activations
# of images whose one bright patch is known (fixtures/analysis/tokens), checks
# that each top image carries a heat map whose peak cell is that patch.
# A third site from FLUX activations sampled on the tiny FLUX pipeline checks
# the FLUX feature page: a heat map over the image-token grid on each top
# image, the images (made by the pipeline) loaded, the prompt's T5 tokens,
# the steering grid. Screenshots go to BUILD/explorer-*.png.
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
n_dead=$(grep -o 'id="n-dead">[0-9]*<' "$W/index.dom" | grep -o '[0-9][0-9]*')
rows=$(grep -o 'class="feat-row"' "$W/index.dom" | wc -l)
check "index shows 48 features (got '${n_features:-none}')" [ "${n_features:-0}" = 48 ]
check "index lists the 48 - ${n_dead:-?} live features by default (got $rows)" [ "$rows" = $((48 - ${n_dead:-0})) ]
# the dead-feature toggle: dead=1 lists all 48, dead ones tagged
chrome --dump-dom "$URL#dead=1" > "$W/index_dead.dom" || die "chromium dead=1"
rows_all=$(grep -o 'class="feat-row"' "$W/index_dead.dom" | wc -l)
tagged=$(grep -o 'class="tag dead"' "$W/index_dead.dom" | wc -l)
check "dead=1 lists all 48 features (got $rows_all), $n_dead tagged dead (got $tagged)" \
    [ "$rows_all" = 48 -a "$tagged" = "${n_dead:-x}" ]
check "the toggle button is there" grep -q 'id="toggle-dead" data-show="0"' "$W/index.dom"
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
check "co-occurring features card" grep -q 'Co-occurring features' "$W/feature.dom"
check "examples across the range (4 quartiles)" [ "$(grep -o 'class="rrow" data-quartile' "$W/feature.dom" | wc -l)" = 4 ]
check "label / note fields and export" grep -q 'id="note-label".*id="note-text".*id="notes-export"' "$W/feature.dom"

# per-token site: image i has its white patch in cell q = (5i + 1) % 16 of the
# 4x4 grid; feature 0 is the patch brightness, features 3..5 never fire
TF="$SRC/fixtures/analysis/tokens"
"$EXE" topk --checkpoint "$TF/sae" --acts "$TF/acts.safetensors" --key vision \
    --out "$W/topk_tok.safetensors" -N 8 --quiet || die "saeflow topk (tokens)"
"$EXE" explore --topk "$W/topk_tok.safetensors" --out "$W/site_tok" --data "folder:$TF/images" \
    --checkpoint "$TF/sae" --title "" --quiet || die "saeflow explore (tokens)"
TURL="file://$W/site_tok/index.html"
chrome --dump-dom "$TURL#f=0" > "$W/tok.dom" || die "chromium token page"
tiles=$(tr -d '\n' < "$W/tok.dom" | sed 's/id="range".*//' | grep -o 'class="tile" data-row="[0-9]*"' | grep -o '[0-9]*"$' | tr -d '"')
check "token page shows the 8 images once each" [ "$(echo $tiles | wc -w)" = 8 -a "$(echo "$tiles" | sort -u | wc -l)" = 8 ]
# (the top-rows card comes before the range examples, whose tiles mark their token)
check "heat maps rendered on the 8 top images" [ "$(tr -d '\n' < "$W/tok.dom" | sed 's/id="range".*//' | grep -o 'class="heat"' | wc -l)" = 8 ]
check "range examples mark their token" grep -q 'id="range".*class="heat"' "$W/tok.dom"
ok=1
for i in $tiles; do
    q=$(((5 * i + 1) % 16))
    r=$((q / 4)) c=$((q % 4))
    # the tile of row i, up to the next tile: its peak cell sits at grid row r+1, column c+1
    tile=$(sed 's/<div class="tile"/\n&/g' "$W/tok.dom" | grep "^<div class=\"tile\" data-row=\"$i\"")
    echo "$tile" | grep -q "class=\"hc peak\" data-pos=\"$((q + 1))\" data-r=\"$r\" data-c=\"$c\" style=\"grid-row:$((r + 1));grid-column:$((c + 1));" \
        || { ok=0; echo "  row $i: no peak cell at ($r, $c)"; }
    echo "$tile" | grep -q "peak at patch ($r, $c)" || { ok=0; echo "  row $i: wrong peak text"; }
done
check "every heat map peaks on the image's bright patch" [ $ok = 1 ]
check "the CLS value is shown" grep -q 'CLS 0 ·' "$W/tok.dom"
check "overlay toggle present" grep -q 'id="toggle-heat"' "$W/tok.dom"
check "empty --title falls back" grep -q '<h1>Feature 0</h1>' "$W/tok.dom"
chrome --dump-dom "$TURL" > "$W/tok_index.dom" || die "chromium token index"
check "token index hides the 3 dead features" [ "$(grep -o 'class="feat-row"' "$W/tok_index.dom" | wc -l)" = 3 ]
check "token index title falls back" grep -q '<h1>saeflow explorer</h1>' "$W/tok_index.dom"
chrome --dump-dom "$TURL#f=abc" > "$W/tok_bad.dom" || die "chromium #f=abc"
check "#f=abc is not a NaN feature" grep -q 'is not a feature number' "$W/tok_bad.dom"
chrome --screenshot="$BUILD/explorer-heat.png" --window-size=1280,1100 "$TURL#f=0" >/dev/null || die "screenshot"

# FLUX site: an SAE on a single block of the tiny FLUX pipeline (16 T5 tokens
# then a 4 x 2 image grid at 64 x 32 px), topk sampled on the fly, explore
# making the prompts' images with the pipeline; a steering grid linked
FP="$SRC/fixtures/flux-pipe/schnell"
printf '%s\n' "a red fox in the snow" "a blue car on a road" "green trees by a lake" \
    "a cat sleeping on a sofa" "sunset over the sea" "a bowl of fruit" > "$W/caps.txt"
FS="--model $FP --captions $W/caps.txt --height 64 --width 32 --max_sequence_length 16 --prompt_batch 4 --seed 5"
"$EXE" train --source flux $FS --hook single_transformer_blocks.1 --tokens_per_image 0 --arch topk --k 4 \
    --expansion 2 --batch_size 16 --iters 30 --threads 2 --savedir "$W/fsae" --quiet || die "saeflow train --source flux"
"$EXE" topk --source flux $FS --hook single_transformer_blocks.1 --checkpoint "$W/fsae/single_transformer_blocks.1" \
    -N 4 --out "$W/topk_flux.safetensors" --quiet || die "saeflow topk --source flux"
mkdir -p "$W/steer"
"$EXE" explore --topk "$W/topk_flux.safetensors" --out "$W/site_flux" --image-cache "$W/fcache" --quiet \
    || die "saeflow explore (flux)"
FF=$(grep -o 'class="feat-row" data-feature="[0-9]*"' <(chrome --dump-dom "file://$W/site_flux/index.html") \
    | head -1 | grep -o '[0-9]*"$' | tr -d '"')
cp "$(ls "$W"/fcache/flux-*/row*.png | head -1)" "$W/steer/feature_$FF.png"
"$EXE" explore --topk "$W/topk_flux.safetensors" --out "$W/site_flux" --image-cache "$W/fcache" \
    --steer-dir "$W/steer" --quiet || die "saeflow explore (flux, steer)"
FURL="file://$W/site_flux/index.html"
chrome --dump-dom "$FURL#f=$FF" > "$W/flux.dom" || die "chromium flux page"
ftop=$(tr -d '\n' < "$W/flux.dom" | sed 's/id="range".*//')
n_ft=$(echo "$ftop" | grep -o 'class="tile" data-row="[0-9]*"' | wc -l)
check "FLUX page $FF shows top images (got $n_ft)" [ "$n_ft" -ge 1 ]
check "a heat map on each FLUX top image" [ "$(echo "$ftop" | grep -o 'class="heat"' | wc -l)" = "$n_ft" ]
check "heat cells on the 4 x 2 image grid" [ "$(echo "$ftop" | grep -o 'class="hc[ "][^>]*data-r="[0-3]" data-c="[01]"' | wc -l)" -ge 1 ]
check "each FLUX tile names its peak token" [ "$(echo "$ftop" | grep -o 'peak at \(patch\|text token\|padding token\)' | wc -l)" = "$n_ft" ]
check "every FLUX top image loaded in the browser" [ "$(echo "$ftop" | grep -o 'class="top-img"[^>]*data-loaded="1"' | wc -l)" = "$n_ft" ]
missing=0
for s in $(echo "$ftop" | grep -o 'class="top-img" src="[^"]*"' | sed 's/.*src="//; s/"$//'); do
    [ -s "$W/site_flux/$s" ] || { missing=1; echo "  missing $s"; }
done
check "FLUX image files exist" [ $missing = 0 ]
check "the prompt's T5 tokens are shown, firing ones shaded" grep -q 'class="tk fire" data-pos="[0-9]*" data-heat="[1-9]' "$W/flux.dom"
check "the caption is shown" grep -q 'class="cap">a \(red fox\|blue car\|cat\|bowl\)\|class="cap">\(green\|sunset\)' "$W/flux.dom"
check "the steering grid is linked and loads" grep -q "id=\"steer-img\" src=\"steer/feature_$FF.png\"" "$W/flux.dom"
check "its file is in the site" test -s "$W/site_flux/steer/feature_$FF.png"
chrome --screenshot="$BUILD/explorer-flux.png" --window-size=1280,1300 "$FURL#f=$FF" >/dev/null || die "screenshot"

chrome --screenshot="$BUILD/explorer-index.png" --window-size=1280,900 "$URL" >/dev/null || die "screenshot"
chrome --screenshot="$BUILD/explorer-feature.png" --window-size=1280,1100 "$URL#f=$F" >/dev/null || die "screenshot"
check "screenshots saved" test -s "$BUILD/explorer-index.png" -a -s "$BUILD/explorer-feature.png"
[ $fail = 0 ] && echo "browser test passed" || echo "browser test FAILED (files in $W)"
exit $fail
