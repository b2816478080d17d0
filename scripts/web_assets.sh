#!/usr/bin/env bash
# Fetch the third-party JavaScript the built book serves itself (no CDN at read time):
# MathJax 3 (formulas), RequireJS and the Jupyter widgets HTML manager (static widgets).
# Packages come from the npm registry at build time; nothing third-party is committed.
set -euo pipefail
out=${1:-build/web_assets}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out/static"
fetch() {  # fetch <package@version> -> extracted into $tmp/<dir>
  local spec=$1 dir=$2
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>"$tmp/npm.log") || { cat "$tmp/npm.log" >&2; exit 1; }
  mkdir -p "$tmp/$dir" && tar -xzf "$tmp"/*.tgz -C "$tmp/$dir" && rm "$tmp"/*.tgz
}
fetch mathjax@3.2.2 mathjax
rm -rf "$out/static/mathjax" && mkdir -p "$out/static/mathjax"
cp -r "$tmp/mathjax/package/es5/tex-chtml.js" "$tmp/mathjax/package/es5/output" "$out/static/mathjax/"
# only the CHTML fonts are needed (tex-chtml); drop the SVG output
rm -rf "$out/static/mathjax/output/svg" "$out/static/mathjax/output/svg.js"
fetch requirejs@2.3.7 requirejs
cp "$tmp/requirejs/package/require.js" "$out/static/require.js"
fetch @jupyter-widgets/html-manager@1.0.15 htmlmanager
# the bundle loads its fonts relative to itself: keep the whole dist folder
rm -rf "$out/static/html-manager" && cp -r "$tmp/htmlmanager/package/dist" "$out/static/html-manager"
rm -f "$out/static/html-manager/"*.map
# The manager finds its fonts relative to its RequireJS module id ("@jupyter-widgets/html-manager/
# dist/...", i.e. relative to the page, where they are not): map that id to the copy in _static.
cat > "$out/static/widgets-paths.js" <<'JS'
(function () {
  var here = document.currentScript.src.replace(/[^\/]*$/, "");
  require.config({paths: {"@jupyter-widgets/html-manager/dist": here + "html-manager"}});
})();
JS
touch "$out/.done"
echo "web assets in $out/static: $(du -sh "$out/static" | cut -f1)"
