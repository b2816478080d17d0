// The receptive-field explorer without a kernel (vgg_lib.explorer.static.static_html inlines this file).
// The page carries the raw layer list of every configuration (kernel, stride, padding,
// channels); this script walks it with the recurrences of Araujo et al. (Distill, 2019), the
// same as vgg_lib.analysis.receptive_field, and draws the same SVG as vgg_lib.explorer.render.view_svg.
// Nothing is fetched: the image and the precomputed effective receptive fields are data URIs.
function vggRfxMount(root, data, initial) {
  "use strict";
  var S = data.input_size, M = data.margin, VIEW_PX = 360;
  var uid = root.id;
  var esc = function (s) { return String(s).replace(/[&<>"]/g, function (c) {
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); };
  var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
  var num = function (x) { return String(Math.round(x * 1e6) / 1e6); };  // like Python's :g for our values

  // size r, jump j, start c, map side and parameters up to each conv / pool layer
  function walk(spec) {
    var r = 1, j = 1, c = 0, n = S, params = 0, rows = [];
    spec.forEach(function (l) {
      r += (l.k - 1) * j;
      c += ((l.k - 1) / 2 - l.p) * j;
      j *= l.s;
      n = Math.floor((n + 2 * l.p - l.k) / l.s) + 1;
      if (l.kind === "conv") params += l.k * l.k * l.cin * l.cout + (l.bias ? l.cout : 0);
      rows.push({name: l.name, kind: l.kind, size: r, jump: j, start: c, map: n, params: params});
    });
    return rows;
  }
  var tables = {};
  Object.keys(data.configs).forEach(function (k) { tables[k] = walk(data.configs[k].layers); });

  var st = {config: initial.config in tables ? initial.config : Object.keys(tables)[0], layer: initial.layer,
            unit: null, erf: true, grid: true, n: 2, C: 512, tab: 0};
  function rowOf() {
    var rows = tables[st.config];
    for (var i = 0; i < rows.length; i++) if (rows[i].name === st.layer) return rows[i];
    st.layer = rows[rows.length - 1].name;
    return rows[rows.length - 1];
  }
  function centre(row, u) { return [row.start + u[0] * row.jump, row.start + u[1] * row.jump]; }
  function follow(oldRow, row, u) {   // the unit of the new layer nearest to the old unit's centre
    var c = centre(oldRow, u);
    return c.map(function (v) {
      return Math.min(Math.max(Math.round((v - row.start) / row.jump), 0), row.map - 1); });
  }
  function filter(fid) {
    return '<filter id="' + fid + '" color-interpolation-filters="sRGB">' +
      '<feColorMatrix type="matrix" values="1 0 0 0 0 1 0 0 0 0 1 0 0 0 0 1 0 0 0 0"/>' +
      '<feComponentTransfer><feFuncR type="table" tableValues="0.3 1 1 1"/>' +
      '<feFuncG type="table" tableValues="0 0.1 0.8 1"/><feFuncB type="table" tableValues="0 0 0.1 1"/>' +
      '<feFuncA type="table" tableValues="0 0.55 0.8 0.9"/></feComponentTransfer></filter>';
  }

  function axes() {   // which way rows and columns of pixels count, in the grey margin
    var f = M / 3.6, one = function (x) { return (Math.round(x * 10) / 10).toString(); };
    return '<g class="rfx-axes" font-size="' + one(f) + '" fill="#444" pointer-events="none">' +
      '<text x="-0.5" y="' + one(-M / 4) + '">column 0 \u2192 ' + (S - 1) + '</text>' +
      '<text transform="translate(' + one(-M / 4 - f) + ' -0.5) rotate(90)">row 0 \u2192 ' + (S - 1) +
      '</text></g>';
  }

  function view(row, u) {
    var c = centre(row, u), size = row.size, W = S + 2 * M, o = -M - 0.5;
    var h = ['<svg class="rfx-view" xmlns="http://www.w3.org/2000/svg" width="' + VIEW_PX + '" height="' +
      VIEW_PX + '" viewBox="' + o + ' ' + o + ' ' + W + ' ' + W + '" data-size="' + size + '">',
      '<defs>' + filter(uid + "-heat") + '<clipPath id="' + uid + '-clip"><rect x="' + o + '" y="' + o +
      '" width="' + W + '" height="' + W + '"/></clipPath></defs>',
      '<rect x="' + o + '" y="' + o + '" width="' + W + '" height="' + W + '" fill="#e6e6e6"/>',
      '<image href="' + data.image + '" x="-0.5" y="-0.5" width="' + S + '" height="' + S +
      '" preserveAspectRatio="none"/>', axes()];
    var erf = data.configs[st.config].erf[row.name];
    if (st.erf && erf) {
      // precomputed for the centre unit: shift it by the offset of the chosen unit, then clip
      var mid = Math.floor(row.map / 2), dy = (u[0] - mid) * row.jump, dx = (u[1] - mid) * row.jump;
      var b = erf[1];
      h.push('<svg x="-0.5" y="-0.5" width="' + S + '" height="' + S + '" viewBox="-0.5 -0.5 ' + S + ' ' + S +
        '" overflow="hidden"><image class="rfx-erf" href="' + erf[0] + '" x="' + (b[0] + dx - 0.5) + '" y="' +
        (b[1] + dy - 0.5) + '" width="' + b[2] + '" height="' + b[3] +
        '" preserveAspectRatio="none" filter="url(#' + uid + '-heat)"/></svg>');
    }
    if (st.grid) {
      var step = Math.max(1, Math.ceil(row.map / 56)), rad = Math.min(2, Math.max(0.5, row.jump * step / 6));
      var dots = [];
      for (var a = 0; a < row.map; a += step)
        for (var bb = 0; bb < row.map; bb += step)
          dots.push('<circle cx="' + (row.start + bb * row.jump) + '" cy="' + (row.start + a * row.jump) +
            '" r="' + rad + '"/>');
      h.push('<g class="rfx-grid" fill="white" fill-opacity="0.75" data-step="' + step + '">' + dots.join("") + '</g>');
    }
    h.push('<g clip-path="url(#' + uid + '-clip)"><rect class="rfx-box" x="' + (c[1] - (size - 1) / 2 - 0.5) +
      '" y="' + (c[0] - (size - 1) / 2 - 0.5) + '" width="' + size + '" height="' + size +
      '" fill="none" stroke="#00e5ff" stroke-width="' + Math.max(0.8, S / 160).toFixed(2) + '"/></g>');
    h.push('<circle class="rfx-unit" cx="' + c[1] + '" cy="' + c[0] + '" r="' + Math.max(1.5, S / 90).toFixed(2) +
      '" fill="#00e5ff" stroke="black" stroke-width="0.4"/></svg>');
    return h.join("");
  }

  function numbers(row, u) {
    var c = centre(row, u), n = row.map;
    var cells = [["layer", '<span class="rfx-layer-name">' + esc(row.name) + '</span> (' + row.kind + ')'],
      ["receptive field", '<span class="rfx-size">' + row.size + '</span> x ' + row.size + ' pixels'],
      ["jump", '<span class="rfx-jump">' + row.jump + '</span> pixels between unit centres'],
      ["start", '<span class="rfx-start">' + num(row.start) + '</span> (pixel row and column of unit (0, 0)\'s centre)'],
      ["feature map", n + ' x ' + n + ' units'],
      ["unit (row, column)", '<span class="rfx-unit-rc">(' + u[0] + ', ' + u[1] + ')</span>, centred on input pixel ' +
        '<span class="rfx-pixel">(row ' + num(c[0]) + ', column ' + num(c[1]) + ')</span>'],
      ["parameters up to here", '<span class="rfx-params">' + fmt(row.params) + '</span>']];
    return '<table class="rfx-numbers">' + cells.map(function (x) {
      return '<tr><th>' + x[0] + '</th><td>' + x[1] + '</td></tr>'; }).join("") + '</table>' +
      '<p class="rfx-note">Heat: effective receptive field (square root of the gradient magnitude) precomputed when the book was built, for the ' +
      'centre unit of a He-initialised copy at width ' + num(data.erf_width) + ' (random weights), shifted to ' +
      'the chosen unit (exact away from the border). Numbers: the full-size net. Click the image to pick a unit.</p>';
  }

  function compare(n, C) {
    var k = 2 * n + 1, stack = n * 9 * C * C, single = k * k * C * C, cols = [];
    [[n + " x 3x3 (stack)", "stack", stack, n], ["1 x " + k + "x" + k + " (single)", "single", single, 1]]
      .forEach(function (x) {
        var sizes = x[1] === "stack" ? [] : [k];
        if (x[1] === "stack") for (var q = 3; q <= k; q += 2) sizes.push(q);
        var sq = sizes.map(function (q, i) {
          return '<rect x="' + (k - q) / 2 + '" y="' + (k - q) / 2 + '" width="' + q + '" height="' + q +
            '" fill="none" stroke="hsl(' + (200 - 40 * i) + ', 90%, 40%)" stroke-width="0.12"/>'; }).join("");
        var grid = "";
        for (var yy = 0; yy < k; yy++) for (var xx = 0; xx < k; xx++)
          grid += '<rect x="' + xx + '" y="' + yy + '" width="1" height="1" fill="none" stroke="#bbb" stroke-width="0.03"/>';
        var img = data.compare[n] && data.compare[n][x[1]];
        var heat = img ? '<image href="' + img + '" x="0" y="0" width="' + k + '" height="' + k +
          '" preserveAspectRatio="none" filter="url(#' + uid + '-cheat)" style="image-rendering:pixelated"/>' : "";
        cols.push('<div class="rfx-cmp-col"><b>' + x[0] + '</b><br><svg width="170" height="170" viewBox="-0.2 -0.2 ' +
          (k + 0.4) + ' ' + (k + 0.4) + '"><defs>' + filter(uid + "-cheat") + '</defs><rect x="0" y="0" width="' +
          k + '" height="' + k + '" fill="#222"/>' + heat + grid + sq + '</svg><table class="rfx-numbers">' +
          '<tr><th>receptive field</th><td class="rfx-cmp-rf-' + x[1] + '">' + k + ' x ' + k + '</td></tr>' +
          '<tr><th>weights (' + C + ' channels in and out)</th><td class="rfx-cmp-params-' + x[1] + '">' +
          fmt(x[2]) + ' = ' + x[2] / (C * C) + ' C&sup2;</td></tr><tr><th>non-linearities</th><td>' + x[3] +
          '</td></tr></table></div>');
      });
    return '<div class="rfx-cmp">' + cols.join("") + '</div><p class="rfx-note">The single layer has ' +
      '<span class="rfx-cmp-ratio">' + (single / stack).toFixed(2) + '</span>x the weights of the stack for the ' +
      'same ' + k + 'x' + k + ' view. Heat: effective receptive field of the centre unit (random weights, noise ' +
      'input): the stack concentrates on the centre, the single layer spreads evenly.</p>';
  }

  // -- markup and controls ------------------------------------------------------------------
  var opts = function (xs, v) { return xs.map(function (x) {
    return '<option value="' + esc(x) + '"' + (x === v ? " selected" : "") + '>' + esc(x) + '</option>'; }).join(""); };
  root.innerHTML =
    '<div class="rfx-tabs"><button class="rfx-tab rfx-tab-on" data-tab="0">Explore a layer</button>' +
    '<button class="rfx-tab" data-tab="1">Compare: n x 3x3 vs one (2n+1)x(2n+1)</button></div>' +
    '<div class="rfx-pane rfx-pane-0"><div class="rfx-message" role="status"></div><div class="rfx-main">' +
    '<div class="rfx-view-box"></div><div class="rfx-controls">' +
    '<label>configuration <select class="rfx-config">' + opts(Object.keys(tables), st.config) + '</select></label>' +
    '<label>layer <select class="rfx-layer"></select></label>' +
    '<label>unit row <input type="range" class="rfx-row" min="0" step="1"> <output class="rfx-row-out"></output></label>' +
    '<label>unit column <input type="range" class="rfx-col" min="0" step="1"> <output class="rfx-col-out"></output></label>' +
    '<label><input type="checkbox" class="rfx-erf-on" checked> effective receptive field</label> ' +
    '<label><input type="checkbox" class="rfx-grid-on" checked> grid of unit centres (jump)</label>' +
    '<div class="rfx-numbers-box"></div></div></div></div>' +
    '<div class="rfx-pane rfx-pane-1" hidden><div class="rfx-cmp-controls"><label>n (3x3 layers) ' +
    '<input type="range" class="rfx-n" min="1" max="5" value="2"> <output class="rfx-n-out">2</output></label>' +
    '<label>channels C (in and out) <select class="rfx-c">' + opts(["64", "128", "256", "512"], "512") +
    '</select></label></div><div class="rfx-compare-box"></div></div>';
  var $ = function (sel) { return root.querySelector(sel); };

  function fillLayers() {
    var rows = tables[st.config];
    $(".rfx-layer").innerHTML = opts(rows.map(function (r) { return r.name; }), st.layer);
  }
  function render() {
    var row = rowOf();
    if (!st.unit) st.unit = [Math.floor(row.map / 2), Math.floor(row.map / 2)];
    var r = $(".rfx-row"), c = $(".rfx-col");
    r.max = c.max = row.map - 1;
    r.value = st.unit[0]; c.value = st.unit[1];
    $(".rfx-row-out").textContent = st.unit[0];
    $(".rfx-col-out").textContent = st.unit[1];
    $(".rfx-layer").value = st.layer;
    $(".rfx-view-box").innerHTML = view(row, st.unit);
    $(".rfx-numbers-box").innerHTML = numbers(row, st.unit);
  }
  function say(text) { $(".rfx-message").textContent = text; }
  function setUnit(u) {
    var row = rowOf();
    if (!(u[0] >= 0 && u[0] < row.map && u[1] >= 0 && u[1] < row.map)) {
      say("unit (" + u[0] + ", " + u[1] + ") is outside layer " + row.name + "'s " + row.map + "x" + row.map +
          " feature map; rows and columns go from 0 to " + (row.map - 1));
      return;
    }
    say(""); st.unit = u; render();
  }
  function setLayer(name) {
    var old = rowOf(), oldUnit = st.unit;
    st.layer = name;
    var row = rowOf();
    st.unit = oldUnit ? follow(old, row, oldUnit) : null;
    say(""); render();
  }
  $(".rfx-config").addEventListener("change", function (e) {
    var old = rowOf(), oldUnit = st.unit;
    st.config = e.target.value;
    var names = tables[st.config].map(function (r) { return r.name; });
    if (names.indexOf(st.layer) < 0) st.layer = names.indexOf("conv5_3") >= 0 ? "conv5_3" : names[names.length - 1];
    fillLayers();
    st.unit = oldUnit ? follow(old, rowOf(), oldUnit) : null;
    say(""); render();
  });
  $(".rfx-layer").addEventListener("change", function (e) { setLayer(e.target.value); });
  $(".rfx-row").addEventListener("input", function (e) { setUnit([+e.target.value, st.unit[1]]); });
  $(".rfx-col").addEventListener("input", function (e) { setUnit([st.unit[0], +e.target.value]); });
  $(".rfx-erf-on").addEventListener("change", function (e) { st.erf = e.target.checked; render(); });
  $(".rfx-grid-on").addEventListener("change", function (e) { st.grid = e.target.checked; render(); });
  $(".rfx-view-box").addEventListener("click", function (e) {   // click: the unit nearest to the pixel
    var svg = $(".rfx-view"), box = svg.getBoundingClientRect(), row = rowOf(), W = S + 2 * M;
    var x = (e.clientX - box.left) / box.width * W - M - 0.5, y = (e.clientY - box.top) / box.height * W - M - 0.5;
    var pick = function (v) { return Math.round((v - row.start) / row.jump); };
    setUnit([pick(y), pick(x)]);
  });
  function renderCompare() {
    $(".rfx-n-out").textContent = st.n;
    $(".rfx-compare-box").innerHTML = compare(st.n, st.C);
  }
  $(".rfx-n").addEventListener("input", function (e) { st.n = +e.target.value; renderCompare(); });
  $(".rfx-c").addEventListener("change", function (e) { st.C = +e.target.value; renderCompare(); });
  root.querySelectorAll(".rfx-tab").forEach(function (b) {
    b.addEventListener("click", function () {
      root.querySelectorAll(".rfx-tab").forEach(function (x) { x.classList.toggle("rfx-tab-on", x === b); });
      root.querySelectorAll(".rfx-pane").forEach(function (p, i) { p.hidden = String(i) !== b.dataset.tab; });
    });
  });
  root.vggRfx = {state: st, tables: tables, setUnit: setUnit, setLayer: setLayer};   // for tests and curious readers
  fillLayers(); render(); renderCompare();
}
