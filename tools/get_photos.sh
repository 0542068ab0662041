#!/usr/bin/env bash
# Build a corpus of clean real photographs for synthetic-rain training:
#   data/photos/train/*.png and data/photos/val/*.png  (longest side <= 1024 px, PNG).
# Sources: photo wallpapers from Debian packages (fetched with `apt-get download`, unpacked without
# installing), sample photos from opencv-doc, and colour photos bundled with scikit-image.
# Only files on the hand-made allow-lists below are used. Downloads are kept in data/.photo_cache/
# so reruns need no network; reruns rebuild the same files (unchanged ones are left untouched).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tools/get_photos.sh [--out DIR] [--cache DIR] [--max_side N] [--offline]

Builds DIR/train/ and DIR/val/ (default data/photos/) from clean photographs: wallpapers from the
Debian packages plasma-workspace-wallpapers and lomiri-wallpapers-20.04, sample photos from
opencv-doc, and colour photos bundled with scikit-image. Only an allow-list of photographs chosen
by eye is kept (no abstract or illustrated wallpapers); the split is by photo and fixed.
mate-backgrounds is never used: it is reserved for independent evaluation.

  --out DIR      output folder (default data/photos)
  --cache DIR    where downloaded .deb files are kept (default data/.photo_cache)
  --max_side N   longest side of the saved photos in pixels (default 1024)
  --offline      do not download; use only .deb files already in the cache
  -h, --help     show this help

Needs the project venv (make setup); PY overrides its python (default .venv/bin/python).
EOF
}

die() { echo "get_photos: error: $*" >&2; exit 1; }
warn() { echo "get_photos: warning: $*" >&2; }

cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=data/photos
CACHE=data/.photo_cache
MAX_SIDE=1024
OFFLINE=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift 2 ;;
    --cache) [ $# -ge 2 ] || die "--cache needs a folder"; CACHE=$2; shift 2 ;;
    --max_side) [ $# -ge 2 ] || die "--max_side needs a number"; MAX_SIDE=$2; shift 2 ;;
    --offline) OFFLINE=1; shift ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ "$MAX_SIDE" =~ ^[0-9]+$ ]] || die "--max_side '$MAX_SIDE': not a whole number"
[ -x "$PY" ] || die "$PY not found: run 'make setup' first (or set PY)"

# ---------------------------------------------------------------------------------------------
# Allow-lists. Chosen BY EYE from contact sheets of every image in these package versions
# (Debian bookworm: plasma-workspace-wallpapers 4:5.27.5-2, lomiri-wallpapers-20.04 20.04.0-2,
# opencv-doc 4.6.0+dfsg-12). Only real photographs are listed; everything else was left out.

# Plasma: wallpaper folder names; the largest file in <name>/contents/images/ is used.
PLASMA_PHOTOS=(BytheWater ColdRipple ColorfulCups DarkestHour EveningGlow FallenLeaf Grey Kite
               OneStandsOut Path summer_1am)
# Left out (illustrations, vector art, 3D renders): Altai Autumn Canopee Cascade Cluster Elarun
# Flow FlyingKonqui Honeywave IceCold Kay Kokkini MilkyWay (abstract shapes, despite the name)
# Opal PastelHills Patak SafeLanding Shell Volna.

# Lomiri: FILE:NAME under usr/share/backgrounds/.
LOMIRI_PHOTOS=(Kleiber_by_Lukas_Baubkus.jpg:Kleiber)
# Left out: Fossa_by_Jasper_Roks (abstract), Painting-Colors_by__herobrine7gamer (vector art),
# Infinite-Sea_by_Aury88 (digital composite: tinted Milky Way over rendered water, facet overlay).

# opencv-doc: FILE:NAME under usr/share/doc/opencv-doc/examples/. Pairs of one scene (aloeL/R,
# leuvenA/B) must share a split.
OPENCV_PHOTOS=(data/aloeL.jpg:aloeL data/aloeR.jpg:aloeR data/leuvenA.jpg:leuvenA
               data/leuvenB.jpg:leuvenB alphamat/input_images/plant.jpg:plant
               data/aero1.jpg:aero1 data/aero3.jpg:aero3 data/apple.jpg:apple
               data/baboon.jpg:baboon data/board.jpg:board data/building.jpg:building
               data/butterfly.jpg:butterfly data/fruits.jpg:fruits data/home.jpg:home
               data/messi5.jpg:messi5 data/orange.jpg:orange data/squirrel_cls.jpg:squirrel_cls
               data/stuff.jpg:stuff data/left.jpg:books data/graf1.png:graf1
               data/rubberwhale1.png:rubberwhale1)
# Left out: drawings and logos (HappyFish, LinuxLogo, WindowsLogo, opencv-logo*, starry_night),
# renders (Blender_Suzanne*), synthetic/test charts (pic*, gradient, chessboard, sudoku, digits,
# ...), grayscale images (calibration left/right01-14, basketball*, box*, ...), deliberately
# blurred images (text_defocus, text_motion, licenseplate_motion), near-binary or near-empty
# photos (pca_test1, smarties, ela_original/ela_modified), second frames of pairs used once
# (right.jpg, graf3, rubberwhale2).

# scikit-image bundled colour photos (no download). Left out: hubble_deep_field (space),
# immunohistochemistry/retina/skin/lily (microscopy, medical), grayscale images, drawings.
SKIMAGE_PHOTOS=(astronaut chelsea coffee rocket motorcycle_left)

# Packages inspected and found to hold no photographs, so not downloaded:
#   gnome-backgrounds 43.1-1 (SVG vector art, 3D renders: adwaita, blobs, grid, pixels, wood, ...)
#   ukui-wallpapers 20.04.3-1.1 (all illustrations: calla, city, goldfish, rhythm, ...)

# Fixed validation photos (about 18%), a mix of sources; everything else is train.
VAL_PHOTOS=(plasma_EveningGlow plasma_Path skimage_coffee skimage_rocket opencv_building
            opencv_fruits opencv_squirrel_cls)

# NEVER used: mate-backgrounds is reserved for the independent held-out evaluation (unseen clean
# photos, see utils/heldout.py); training on it would leak the evaluation set.
RESERVED_PACKAGES=(mate-backgrounds)
# ---------------------------------------------------------------------------------------------

mkdir -p "$CACHE/debs"
WORK=$(mktemp -d "$CACHE/extract.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Print the path of PACKAGE's .deb in the cache, downloading it first if needed; on failure print
# a one-line warning and return 1.
fetch_deb() {
  local pkg=$1 deb tmp log
  deb=$(find "$CACHE/debs" -maxdepth 1 -name "${pkg}_*.deb" | sort -V | tail -n 1)
  if [ -n "$deb" ]; then echo "$deb"; return 0; fi
  if [ "$OFFLINE" = 1 ]; then
    warn "$pkg: not in $CACHE/debs and --offline given; skipped"
    return 1
  fi
  tmp=$(mktemp -d "$WORK/download.XXXXXX")   # inside $WORK: removed on exit, even if interrupted
  local apt_opts=()
  [ "$(id -u)" != 0 ] || apt_opts=(-o APT::Sandbox::User=root)   # root: no '_apt' sandbox warning
  if ! log=$(cd "$tmp" && apt-get "${apt_opts[@]}" download "$pkg" 2>&1); then
    rm -rf "$tmp"
    warn "$pkg: apt-get download failed ($(printf '%s\n' "$log" | tail -n 1)); skipped"
    return 1
  fi
  deb=$(find "$tmp" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)
  if [ -z "$deb" ]; then
    rm -rf "$tmp"
    warn "$pkg: apt-get download wrote no .deb; skipped"
    return 1
  fi
  mv "$deb" "$CACHE/debs/"
  rm -rf "$tmp"
  echo "[photos] downloaded $(basename "$deb")" >&2
  echo "$CACHE/debs/$(basename "$deb")"
}

# Unpack the given member paths (relative to the package root, may hold *) of PACKAGE's .deb into
# $WORK/PACKAGE. Members missing from the archive give a warning (and are skipped later).
extract() {
  local pkg=$1 deb; shift
  for reserved in "${RESERVED_PACKAGES[@]}"; do
    [ "$pkg" != "$reserved" ] || die "refusing to use $pkg: it is reserved for evaluation"
  done
  deb=$(fetch_deb "$pkg") || return 1
  mkdir -p "$WORK/$pkg"
  local members=()
  for m in "$@"; do members+=("./$m"); done
  if ! dpkg-deb --fsys-tarfile "$deb" \
       | tar -x -C "$WORK/$pkg" --wildcards "${members[@]}" 2>/dev/null; then
    warn "$pkg: some allow-listed files are not in $(basename "$deb")"
  fi
  return 0
}

ITEMS=()
add_item() {   # NAME SOURCE: SOURCE must exist, else a warning
  if [ -e "$2" ]; then ITEMS+=("$1=$2"); else warn "$1: $2 missing; skipped"; fi
}

# Plasma wallpapers
root=usr/share/wallpapers
members=(); for n in "${PLASMA_PHOTOS[@]}"; do members+=("$root/$n/contents/images/*"); done
if extract plasma-workspace-wallpapers "${members[@]}"; then
  for n in "${PLASMA_PHOTOS[@]}"; do
    add_item "plasma_$n" "$WORK/plasma-workspace-wallpapers/$root/$n/contents/images"
  done
fi

# Lomiri wallpapers
root=usr/share/backgrounds
members=(); for e in "${LOMIRI_PHOTOS[@]}"; do members+=("$root/${e%%:*}"); done
if extract lomiri-wallpapers-20.04 "${members[@]}"; then
  for e in "${LOMIRI_PHOTOS[@]}"; do
    add_item "lomiri_${e##*:}" "$WORK/lomiri-wallpapers-20.04/$root/${e%%:*}"
  done
fi

# opencv-doc sample photos
root=usr/share/doc/opencv-doc/examples
members=(); for e in "${OPENCV_PHOTOS[@]}"; do members+=("$root/${e%%:*}"); done
if extract opencv-doc "${members[@]}"; then
  for e in "${OPENCV_PHOTOS[@]}"; do
    add_item "opencv_${e##*:}" "$WORK/opencv-doc/$root/${e%%:*}"
  done
fi

# scikit-image photos (inside the installed package)
for n in "${SKIMAGE_PHOTOS[@]}"; do ITEMS+=("skimage_$n=skimage:$n"); done

val_args=(); for n in "${VAL_PHOTOS[@]}"; do val_args+=(--val "$n"); done
echo "[photos] converting ${#ITEMS[@]} photos into $OUT/{train,val}/"
"$PY" tools/collect_photos.py --out "$OUT" --max_side "$MAX_SIDE" --source_root "$WORK" \
  "${val_args[@]}" "${ITEMS[@]}"
