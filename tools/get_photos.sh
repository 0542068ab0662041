#!/usr/bin/env bash
# Build a corpus of clean real photographs for synthetic-rain training:
#   data/photos/train/*.png and data/photos/val/*.png  (longest side <= 1024 px, PNG), and
#   data/photos/SOURCES.tsv (one line per photo: name, split, source package and version, path of
#   the original inside it, licence, credit).
# Sources: photo wallpapers and sample photos from Debian packages (fetched with `apt-get
# download`, unpacked without installing), and colour photos bundled with the installed
# scikit-image and matplotlib. Only files on the hand-made allow-lists below are used. Downloads
# are kept in data/.photo_cache/ so reruns need no network; reruns rebuild the same files
# (unchanged ones are left untouched).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tools/get_photos.sh [--out DIR] [--cache DIR] [--max_side N] [--offline]

Builds DIR/train/ and DIR/val/ (default data/photos/) from clean photographs: wallpapers from the
Debian packages plasma-workspace-wallpapers, lomiri-wallpapers-20.04 and lomiri-wallpapers-16.04,
sample photos from opencv-doc, kphotoalbum (demo album), digikam-data, python3-sklearn and
python3-scipy, and photos bundled with the installed scikit-image and matplotlib. Only an
allow-list of photographs chosen by eye is kept (no abstract, illustrated or rendered images); the
split is by photo and fixed. DIR/SOURCES.tsv records each photo's source package and version, its
path inside the package, its licence and credit. mate-backgrounds is never used: it is reserved
for independent evaluation.

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
# lomiri-wallpapers-16.04 20.04.0-2, opencv-doc 4.6.0+dfsg-12, kphotoalbum 5.9.1-1,
# digikam-data 4:7.9.0-1, python3-sklearn 1.2.1+dfsg-1, python3-scipy 1.10.1-2; scikit-image 0.26.0
# and matplotlib 3.11.2 from the venv). Only real photographs are listed; everything else was left
# out. Entries are FILE:NAME[:LICENCE[:CREDIT]] (FILE under the list's root folder; an empty or
# missing LICENCE/CREDIT takes the list's default) and go to SOURCES.tsv; licences are from each
# package's usr/share/doc/PKG/copyright unless a note says otherwise.

# Plasma: NAME:CREDIT, NAME a wallpaper folder; the largest file in NAME/contents/images/ is used.
# Licence: LGPL-3.0 in each wallpaper's metadata.json (debian/copyright: GPL-2+, KDE VDG);
# credit: the author in metadata.json.
PLASMA_LICENCE='LGPL-3.0 (metadata.json; debian/copyright: GPL-2+)'
PLASMA_PHOTOS=("BytheWater:Maciej Wiklo" "ColdRipple:Risto Saukonpää" "ColorfulCups:Dmitri Popov"
               "DarkestHour:Risto Saukonpää" "EveningGlow:Ian Hex" "FallenLeaf:Martin Klapetek"
               "Grey:Sigi Sagi" "Kite:Risto Saukonpää" "OneStandsOut:Risto Saukonpää"
               "Path:Risto Saukonpää" "summer_1am:Risto Saukonpää")
# Left out (illustrations, vector art, 3D renders): Altai Autumn Canopee Cascade Cluster Elarun
# Flow FlyingKonqui Honeywave IceCold Kay Kokkini MilkyWay (abstract shapes, despite the name)
# Opal PastelHills Patak SafeLanding Shell Volna.

# Lomiri 20.04: under usr/share/backgrounds/.
LOMIRI_PHOTOS=("Kleiber_by_Lukas_Baubkus.jpg:Kleiber:CC-BY-SA-3.0:Lukas Baubkus")
# Left out: Fossa_by_Jasper_Roks (abstract), Painting-Colors_by__herobrine7gamer (vector art),
# Infinite-Sea_by_Aury88 (digital composite: tinted Milky Way over rendered water, facet overlay).

# Lomiri 16.04 (the Ubuntu Touch 16.04 set): under usr/share/backgrounds/. Per-file licences.
LOMIRI16_PHOTOS=(
  "Bridge_by_Sander_Klootwijk.jpg:Bridge:CC-BY-SA-4.0:Sander Klootwijk"
  "Dragonfly_by_Bolly.jpg:Dragonfly:CC-BY-SA-4.0:Bolly"
  "Picture_0B_by_freespace.jpg:fig_bowl:CC-BY-4.0:Trevor (Freespace)"
  "Picture_1A_by_freespace.jpg:brushes:CC-BY-4.0:Trevor (Freespace)"
  "Wine_by_Jakkub_Mede.jpg:Wine:CC-BY-4.0:Jakub Mede"
  "aitzgorri_by_Aitzol_Berasategi.jpg:aitzgorri:CC-BY-4.0:Aitzol Berasategi"
  "free_by_Peter_Nerlich.jpg:free:CC-BY-SA-4.0:Peter Nerlich"
  "friends_by_Aitzol_Berasategi.jpg:friends:CC-BY-4.0:Aitzol Berasategi"
  "greentock_by_Peter_Nerlich.jpg:greentock:CC-BY-SA-4.0:Peter Nerlich"
  "life_by_Aitzol_Berasategi.jpg:life:CC-BY-4.0:Aitzol Berasategi"
  "picosdeeuropa_by_Aitzol_Berasategi.jpg:picosdeeuropa:CC-BY-4.0:Aitzol Berasategi"
  "seeding_by_Clements_Engelhardt.jpg:seeding:CC0-1.0:Clemens Engelhardt"
  "sunset_by_Aitzol_Berasategi.jpg:sunset:CC-BY-4.0:Aitzol Berasategi")
# Left out: umang_by_Abhishek_Mudgal (abstract colour gradient), analogpattern_by_Peter_Nerlich
# (close-up of a texture under a purple-green colour wash: abstract, doubtful as a scene).
# lomiri-wallpapers 20.04.0-2 holds only warty-final-ubuntu.png (abstract gradient): not used.

# opencv-doc: under usr/share/doc/opencv-doc/examples/. Pairs of one scene (aloeL/R, leuvenA/B)
# must share a split. Licence: debian/copyright "Files: *" (Intel Corporation and others).
OPENCV_LICENCE='Apache-2.0 AND BSD-3-Clause'
OPENCV_CREDIT='OpenCV (Intel Corporation and others)'
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

# KPhotoAlbum demo album (800 px snapshots, 2001-2006): under usr/share/kphotoalbum/demo/.
# Licence: debian/copyright gives GPL-2+ for the whole package (no per-file statement); the photos
# are the upstream author's. Several show one subject twice (bar55, donna, grand_canyon, jesper,
# spiff: different shots, not crops): all are train.
KPHOTOALBUM_LICENCE='GPL-2+ (package-wide; no per-file statement)'
KPHOTOALBUM_CREDIT='Jesper K. Pedersen (KPhotoAlbum demo)'
KPHOTOALBUM_PHOTOS=(anne_helene.jpg:anne_helene bar55.jpg:bar55 bar55_2.jpg:bar55_2
                    blackie.jpg:blackie cold_water.jpg:cold_water donna.jpg:donna
                    donna_2.jpg:donna_2 grand_canyon_2.jpg:grand_canyon_2
                    grand_canyon_3.jpg:grand_canyon_3 jesper.jpg:jesper jesper_2.jpg:jesper_2
                    new_wave_2.jpg:new_wave_2 pool.jpg:pool qt-logo.jpg:qt-logo
                    skagen.jpg:skagen skagen_2.jpg:skagen_2 snow.jpg:snow spiff.jpg:spiff
                    spiff_2.jpg:spiff_2 sunset.jpg:sunset)
# Left out: grand_canyon_1, new_wave_1, pool_2, wayne (stored sideways or upside down: the album's
# index.xml rotates them, the files carry no EXIF orientation), movie.avi, CategoryImages/ (small
# thumbnails).

# digikam-data: under usr/share/digikam/. Licence: debian/copyright, "almost all" GPL-2+ (no
# per-file statement for this image); an iPhone 7 photo (2021) of a red-earth hill over a lake.
DIGIKAM_PHOTOS=("about/images/body-background.jpg:lake:GPL-2+ (package-wide; no per-file statement):digiKam team")
# Left out: everything else (logos, splash, HTML-gallery frames and textures, LUT charts).

# python3-sklearn: under usr/lib/python3/dist-packages/sklearn/datasets/images/ (what
# sklearn.datasets.load_sample_images() reads; scikit-learn is not in the venv). Licence and
# credit: that folder's README.txt (debian/copyright: BSD-3-Clause for the package).
SKLEARN_PHOTOS=("china.jpg:china:CC-BY-2.0:danielbuechele (Flickr)"
                "flower.jpg:flower:CC-BY-2.0:vultilion (Flickr)")

# python3-scipy: scipy.misc.face(), the raccoon photo, a bz2-compressed raw 1024x768 RGB file
# (scipy >= 1.12 downloads it instead; the venv's scipy has no copy). Licence: public domain per
# the face() docstring (raccoon-procyon-lotor.jpg, public-domain-image.com); debian/copyright
# gives BSD-3-clause for the package. Left out: ascent.dat (grayscale).
SCIPY_FACE=(usr/lib/python3/dist-packages/scipy/misc/face.dat 1024x768)
SCIPY_LICENCE='public domain (per scipy.misc.face docstring; package BSD-3-clause)'

# scikit-image bundled colour photos (no download): FUNC:LICENCE:CREDIT, from each function's
# docstring (scikit-image itself is BSD-3-Clause). Left out: hubble_deep_field (space),
# immunohistochemistry/retina/skin/lily (microscopy, medical), grayscale images, drawings.
SKIMAGE_PHOTOS=("astronaut:public domain (NASA):NASA"
                "chelsea:CC0-1.0:Stefan van der Walt"
                "coffee:CC0-1.0:Rachel Michetti"
                "rocket:public domain (SpaceX):SpaceX"
                "motorcycle_left:no licence stated (Middlebury 2014 stereo data; cite Scharstein et al., GCPR 2014):D. Scharstein et al.")

# matplotlib sample_data (no download): FILE:NAME:LICENCE:CREDIT. matplotlib states no source; the
# photo is the official 1984 U.S. Navy portrait of Grace Hopper (James S. Davis), a U.S. Government
# work. Left out: Minduka_Present_Blue_Pack.png (clip art), logo2.png, the data files.
MATPLOTLIB_PHOTOS=("grace_hopper.jpg:grace_hopper:public domain (U.S. Navy photo):James S. Davis, U.S. Navy")

# Packages inspected and found to hold no usable photographs, so not downloaded:
#   gnome-backgrounds 43.1-1 (SVG vector art, 3D renders: adwaita, blobs, grid, pixels, wood, ...)
#   ukui-wallpapers 20.04.3-1.1 (all illustrations: calla, city, goldfish, rhythm, ...)
#   lomiri-wallpapers 20.04.0-2 (one abstract gradient), sway-backgrounds 1.7-6 (logo on blue),
#   xfdesktop4-data 4.18.1-1 (mouse logo on gradients, SVG shapes), lxde-common 0.99.2-4 (logo on
#   swooshes), desktop-base 12.0.6+nmu1~deb12u1 and debian-edu-artwork{,-buster,-emerald,
#   -homeworld,-softwaves} 2.12.4-1~deb12u1, debian-edu-artwork-spacefun 20220131-1 (SVG/vector
#   themes, screenshots), cinnamon-desktop-data 5.6.1-1 (no images), xplanet-images 1.3.1-3
#   (satellite maps of the Earth), fotoxx-common 20.08-2 (screenshots), hugin-data
#   2022.0.0+dfsg-2 (help thumbnails of at most 250 px), imagemagick-6-doc 8:6.9.11.60+dfsg-1.6
#   (logos, fractals, montages), jigzo-data 0.6.1-7.1 (puzzle photos only as 232 px framed
#   thumbnails and jigsaw-piece atlases inside .pzl files), gcompris-qt-data 3.1-2 (photos only
#   inside Qt .rcc resource bundles, licences per activity not in debian/copyright).
# Not in Debian bookworm: budgie-backgrounds, deepin/dde wallpapers, pantheon/elementary
# wallpapers, ubuntu-wallpapers*, xubuntu/lubuntu/edubuntu artwork, kali, tails.

# Fixed validation photos (about 18%), a mix of sources; everything else is train.
VAL_PHOTOS=(plasma_EveningGlow plasma_Path skimage_coffee skimage_rocket opencv_building
            opencv_fruits opencv_squirrel_cls lomiri_Wine kphotoalbum_snow sklearn_china)

# NEVER used: mate-backgrounds is reserved for the independent held-out evaluation (unseen clean
# photos, see utils/eval/heldout.py); training on it would leak the evaluation set.
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
  DEB_SOURCE[$pkg]="$pkg $(dpkg-deb -f "$deb" Version)"
  mkdir -p "$WORK/$pkg"
  local members=()
  for m in "$@"; do members+=("./$m"); done
  if ! dpkg-deb --fsys-tarfile "$deb" \
       | tar -x -C "$WORK/$pkg" --wildcards "${members[@]}" 2>/dev/null; then
    warn "$pkg: some allow-listed files are not in $(basename "$deb")"
  fi
  return 0
}

declare -A DEB_SOURCE=()   # package -> "package version", set by extract
ITEMS=()   # NAME=SOURCE arguments of collect_photos.py
META=()    # NAME<TAB>SOURCE<TAB>LICENCE<TAB>CREDIT lines of its --meta file
# NAME SOURCE ORIGIN LICENCE CREDIT: add a photo; SOURCE (the file in a bz2rgb:WxH:FILE source)
# must exist, else a warning. ORIGIN (package and version) may be empty for skimage:/matplotlib:.
add_item() {
  local file=$2
  [[ "$file" != bz2rgb:* ]] || file=${file#bz2rgb:*:}
  [[ "$file" == skimage:* || "$file" == matplotlib:* || -e "$file" ]] \
    || { warn "$1: $file missing; skipped"; return 0; }
  ITEMS+=("$1=$2")
  META+=("$1"$'\t'"$3"$'\t'"$4"$'\t'"$5")
}

# PKG ROOT PREFIX LICENCE CREDIT ENTRY...: unpack ROOT/FILE of each FILE:NAME[:LICENCE[:CREDIT]]
# ENTRY from PKG's .deb and add it as PREFIX_NAME (empty LICENCE/CREDIT: the defaults given).
add_deb_photos() {
  local pkg=$1 root=$2 prefix=$3 licence=$4 credit=$5 e file name lic cred
  shift 5
  local members=()
  for e in "$@"; do members+=("$root/${e%%:*}"); done
  extract "$pkg" "${members[@]}" || return 0
  for e in "$@"; do
    IFS=: read -r file name lic cred <<<"$e"
    add_item "${prefix}_$name" "$WORK/$pkg/$root/$file" "${DEB_SOURCE[$pkg]}" \
      "${lic:-$licence}" "${cred:-$credit}"
  done
}

# Plasma wallpapers (a folder each: collect_photos.py takes its largest image)
root=usr/share/wallpapers
members=(); for e in "${PLASMA_PHOTOS[@]}"; do members+=("$root/${e%%:*}/contents/images/*"); done
if extract plasma-workspace-wallpapers "${members[@]}"; then
  for e in "${PLASMA_PHOTOS[@]}"; do
    add_item "plasma_${e%%:*}" "$WORK/plasma-workspace-wallpapers/$root/${e%%:*}/contents/images" \
      "${DEB_SOURCE[plasma-workspace-wallpapers]}" "$PLASMA_LICENCE" "${e#*:}"
  done
fi

add_deb_photos lomiri-wallpapers-20.04 usr/share/backgrounds lomiri '' '' "${LOMIRI_PHOTOS[@]}"
add_deb_photos lomiri-wallpapers-16.04 usr/share/backgrounds lomiri '' '' "${LOMIRI16_PHOTOS[@]}"
add_deb_photos opencv-doc usr/share/doc/opencv-doc/examples opencv "$OPENCV_LICENCE" \
  "$OPENCV_CREDIT" "${OPENCV_PHOTOS[@]}"
add_deb_photos kphotoalbum usr/share/kphotoalbum/demo kphotoalbum "$KPHOTOALBUM_LICENCE" \
  "$KPHOTOALBUM_CREDIT" "${KPHOTOALBUM_PHOTOS[@]}"
add_deb_photos digikam-data usr/share/digikam digikam '' '' "${DIGIKAM_PHOTOS[@]}"
add_deb_photos python3-sklearn usr/lib/python3/dist-packages/sklearn/datasets/images sklearn '' '' \
  "${SKLEARN_PHOTOS[@]}"

# scipy's raccoon (raw RGB, decoded by collect_photos.py)
if extract python3-scipy "${SCIPY_FACE[0]}"; then
  add_item scipy_face "bz2rgb:${SCIPY_FACE[1]}:$WORK/python3-scipy/${SCIPY_FACE[0]}" \
    "${DEB_SOURCE[python3-scipy]}" "$SCIPY_LICENCE" ''
fi

# Photos inside the installed scikit-image and matplotlib (no download; collect_photos.py names
# the package version)
for e in "${SKIMAGE_PHOTOS[@]}"; do
  IFS=: read -r name lic cred <<<"$e"
  add_item "skimage_$name" "skimage:$name" '' "$lic" "$cred"
done
for e in "${MATPLOTLIB_PHOTOS[@]}"; do
  IFS=: read -r file name lic cred <<<"$e"
  add_item "matplotlib_$name" "matplotlib:$file" '' "$lic" "$cred"
done

val_args=(); for n in "${VAL_PHOTOS[@]}"; do val_args+=(--val "$n"); done
echo "[photos] converting ${#ITEMS[@]} photos into $OUT/{train,val}/"
printf '%s\n' "${META[@]}" >"$WORK/meta.tsv"
"$PY" tools/collect_photos.py --out "$OUT" --max_side "$MAX_SIDE" --source_root "$WORK" \
  --meta "$WORK/meta.tsv" "${val_args[@]}" "${ITEMS[@]}"
