// The testing explorer without a kernel (vgg_lib.explorer.testing.static.static_html inlines this file).
// The page carries the committed precomputed views (results/explorer/testing_views.json): per net,
// image and Q the posteriors of the centre crop, of the 50 grid crops, their average
// (evaluate.multi_crop) and dense evaluation (evaluate.dense), 8 bits each, and the class-score map
// (to 0.01), gzipped; the browser's DecompressionStream unpacks them. The drawing is that of
// vgg_lib.explorer.testing.render.
function vggTestingMount(root, data, initial) {
  "use strict";
  var VIEW_PX = 300, C = data.classes.length, G = data.grid, ROWS = 1 + 2 * G * G + 2;
  var METHODS = {centre: "centre crop", multi: "multi-crop (5x5 grid and flips)", dense: "dense (fully convolutional)"};
  var esc = function (s) { return String(s).replace(/[&<>"]/g, function (c) {
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); };
  var st = {net: initial.net, image: initial.image, method: initial.method, Q: initial.Q, cls: null};
  var blocks = {};
  var indices = data.images.map(function (e) { return e.index; });

  function gunzip(b64) {
    var raw = atob(b64), bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer();
  }
  function unpackAll() {
    return Promise.all(Object.keys(data.nets).map(function (net) {
      var b = data.nets[net];
      return Promise.all([gunzip(b.posteriors), gunzip(b.scores)]).then(function (ab) {
        var dv = new DataView(ab[1]), scores = new Float64Array(ab[1].byteLength / 2);
        for (var i = 0; i < scores.length; i++) scores[i] = dv.getInt16(2 * i, true) / 100;
        blocks[net] = {posts: new Uint8Array(ab[0]), scores: scores, side: b.score_side};
      });
    }));
  }

  function view() {
    var b = blocks[st.net], i = indices.indexOf(st.image), j = data.qs.indexOf(st.Q), nq = data.qs.length;
    var row = function (r) {
      var o = ((i * nq + j) * ROWS + r) * C, out = [];
      for (var c = 0; c < C; c++) out.push(b.posts[o + c] / 255);
      return out;
    };
    var hw = data.map_sides[String(st.Q)], scores = [];
    for (var y = 0; y < hw[0]; y++) {
      var line = [];
      for (var x = 0; x < hw[1]; x++) {
        var o = ((((i * nq + j) * b.side + y) * b.side) + x) * C;
        line.push(Array.prototype.slice.call(b.scores, o, o + C));
      }
      scores.push(line);
    }
    var crops = [];
    for (var r = 1; r <= 2 * G * G; r++) crops.push(row(r));
    return {label: data.images[i].label, uri: data.images[i].png, centre: row(0), crops: crops, multi: row(ROWS - 2),
            dense: row(ROWS - 1), scores: scores, positions: data.positions[String(st.Q)]};
  }
  function softmax(s) {
    var m = Math.max.apply(null, s), e = s.map(function (x) { return Math.exp(x - m); });
    var z = e.reduce(function (a, b) { return a + b; }, 0);
    return e.map(function (x) { return x / z; });
  }
  function argmax(p) { var k = 0; p.forEach(function (x, i) { if (x > p[k]) k = i; }); return k; }

  function numbers() {   // TestingState.numbers
    var v = view(), shown = st.cls === null ? v.label : data.classes.indexOf(st.cls), post, per, boxes = [];
    if (st.method === "centre") {
      post = v.centre; per = [v.centre[shown]];
      var mid = v.positions[(v.positions.length - 1) / 2];
      boxes = [[mid[0], mid[1], data.crop]];
    } else if (st.method === "multi") {
      post = v.multi; per = v.crops.map(function (p) { return p[shown]; });
      boxes = v.positions.map(function (p) { return [p[0], p[1], data.crop]; });
    } else {
      post = v.dense; per = [];
      v.scores.forEach(function (line, y) { line.forEach(function (s, x) {
        per.push(softmax(s)[shown]); boxes.push([y * data.stride, x * data.stride, data.crop]); }); });
    }
    var prediction = argmax(post);
    return {best: argmax(per) % boxes.length, view: v, posteriors: post, prediction: prediction, label: v.label, right: prediction === v.label,
            shown: shown, per_crop: per, boxes: boxes};
  }

  function heat(value, low, high) {
    var t = high <= low ? 0 : (value - low) / (high - low);
    return "hsl(" + Math.round(220 - 220 * t) + ", 80%, " + Math.round(85 - 35 * t) + "%)";
  }
  function grid(values, cls, digits) {   // render.grid_html
    var flat = [].concat.apply([], values), low = Math.min.apply(null, flat), high = Math.max.apply(null, flat);
    return '<table class="tex-grid ' + cls + '">' + values.map(function (row) {
      return "<tr>" + row.map(function (x) {
        return '<td style="background:' + heat(x, low, high) + '">' + x.toFixed(digits) + "</td>"; }).join("") + "</tr>";
    }).join("") + "</table>";
  }
  function chunk(xs, n) { var out = []; for (var i = 0; i < xs.length; i += n) out.push(xs.slice(i, i + n)); return out; }

  function imageSvg(n) {   // render.image_svg
    var q = st.Q, width = Math.max(0.3, q / 150).toFixed(2), best = n.boxes[n.best];
    var rects = n.boxes.map(function (b) {
      return '<rect x="' + b[1] + '" y="' + b[0] + '" width="' + b[2] + '" height="' + b[2] + '"/>'; });
    var dots = n.boxes.map(function (b) {
      return '<circle cx="' + (b[1] + b[2] / 2) + '" cy="' + (b[0] + b[2] / 2) + '" r="' + (q / 100).toFixed(2) + '"/>'; });
    return '<svg class="tex-image" xmlns="http://www.w3.org/2000/svg" width="' + VIEW_PX + '" height="' + VIEW_PX +
      '" viewBox="-1 -1 ' + (q + 2) + ' ' + (q + 2) + '" data-boxes="' + n.boxes.length + '"><image href="' +
      n.view.uri + '" x="0" y="0" width="' + q + '" height="' + q + '" preserveAspectRatio="none" ' +
      'style="image-rendering:pixelated"/><g class="tex-boxes" fill="none" stroke="#00e5ff" stroke-width="' + width +
      '" stroke-opacity="0.35">' + rects.join("") + '</g><g fill="#00e5ff">' + dots.join("") + '</g>' +
      '<rect class="tex-best" x="' + best[1] + '" y="' + best[0] + '" width="' + best[2] + '" height="' + best[2] +
      '" fill="none" stroke="#ffd600" stroke-width="' + width + '"/></svg>';
  }
  function cropsHtml(n) {
    var name = esc(data.classes[n.shown]), per = n.per_crop;
    if (st.method === "centre")
      return '<p>Centre crop: P(' + name + ') = <span class="tex-per-crop">' + per[0].toFixed(2) + '</span></p>';
    if (st.method === "multi")
      return '<p>P(' + name + ') of each crop (left) and of its mirror image (right), in the grid\'s layout:</p>' +
        '<div class="tex-pair">' + grid(chunk(per.slice(0, G * G), G), "tex-per-crop", 2) +
        grid(chunk(per.slice(G * G), G), "tex-per-flip", 2) + '</div>';
    var s = n.view.scores, h = s.length, w = s[0].length;
    return '<p>The class-score map (' + h + 'x' + w + ' windows), raw scores of ' + name + ':</p>' +
      grid(s.map(function (line) { return line.map(function (c) { return c[n.shown]; }); }), "tex-scores", 1) +
      '<p>P(' + name + ') of each window alone (its soft-max):</p>' + grid(chunk(per, w), "tex-per-crop", 2);
  }
  function posteriorsHtml(n) {
    var rows = data.classes.map(function (name, c) {
      var p = n.posteriors[c];
      return '<tr class="' + (c === n.label ? "tex-label" : "") + '"><td>' + esc(name) + '</td><td class="tex-p">' +
        p.toFixed(3) + '</td><td><span class="tex-bar" style="width:' + (100 * p).toFixed(1) + 'px"></span></td></tr>';
    }).join("");
    var verdict = n.right ? "right" : "wrong";
    return '<p class="tex-note">Yellow: the ' + (st.method !== "dense" ? "crop" : "window") + ' most confident of ' +
      esc(data.classes[n.shown]) + '.</p><p>Prediction: <b class="tex-prediction">' + esc(data.classes[n.prediction]) + '</b>, label ' +
      '<b class="tex-label-name">' + esc(data.classes[n.label]) + '</b>: <span class="tex-verdict tex-verdict-' +
      verdict + '">' + verdict + '</span></p><table class="tex-table tex-posteriors">' + rows + '</table>';
  }

  // -- markup and controls ------------------------------------------------------------------
  var opts = function (pairs, v) { return pairs.map(function (p) {
    return '<option value="' + esc(p[0]) + '"' + (String(p[0]) === String(v) ? " selected" : "") + '>' + esc(p[1]) +
      '</option>'; }).join(""); };
  root.innerHTML =
    '<p class="tex-note tex-source">Precomputed when the book was built from the committed views ' +
    '(results/explorer/testing_views.json); in JupyterLab the same explorer computes with the checkpoints.</p>' +
    '<div class="tex-message" role="status"></div><div class="tex-controls">' +
    '<label>net <select class="tex-net">' + opts(Object.keys(data.nets).map(function (k) {
      return [k, k + " (configuration " + data.nets[k].config + ")"]; }), st.net) + '</select></label>' +
    '<label>image <select class="tex-image-choice">' + opts(data.images.map(function (e) {
      return [e.index, "#" + e.index + " (" + data.classes[e.label] + ")"]; }), st.image) + '</select></label>' +
    '<label>method <select class="tex-method">' + opts(Object.keys(METHODS).map(function (k) {
      return [k, METHODS[k]]; }), st.method) + '</select></label>' +
    '<label>Q <select class="tex-q">' + opts(data.qs.map(function (q) { return [q, q]; }), st.Q) + '</select></label>' +
    '<label>class <select class="tex-class">' + opts([["label", "the label"]].concat(data.classes.map(function (c) {
      return [c, c]; })), "label") + '</select></label></div>' +
    '<div class="tex-main"><div class="tex-image-box">Unpacking the views...</div><div class="tex-right"></div></div>';

  function say(text) { root.querySelector(".tex-message").textContent = text; }
  function show() {
    var n = numbers();
    root.querySelector(".tex-image-box").innerHTML = imageSvg(n);
    root.querySelector(".tex-right").innerHTML = posteriorsHtml(n) + cropsHtml(n);
    return n;
  }
  // the controls, and for the tests: select without the controls (bad values: a message)
  function select(sel) {
    var allowed = {net: Object.keys(data.nets), image: indices, method: Object.keys(METHODS), Q: data.qs,
                   cls: ["label"].concat(data.classes)};
    for (var k in sel) {
      if (sel[k] === undefined || sel[k] === null) continue;
      if (allowed[k].indexOf(sel[k]) < 0) {
        say((k === "cls" ? "class" : k) + " " + JSON.stringify(sel[k]) + " is not available; allowed: " + allowed[k].join(", "));
        return numbers();
      }
    }
    say("");
    if (sel.image !== undefined && sel.image !== st.image) st.cls = null;
    ["net", "image", "method", "Q"].forEach(function (k) { if (sel[k] !== undefined && sel[k] !== null) st[k] = sel[k]; });
    if (sel.cls !== undefined && sel.cls !== null) st.cls = sel.cls === "label" ? null : sel.cls;
    root.querySelector(".tex-net").value = st.net;
    root.querySelector(".tex-image-choice").value = String(st.image);
    root.querySelector(".tex-method").value = st.method;
    root.querySelector(".tex-q").value = String(st.Q);
    root.querySelector(".tex-class").value = st.cls === null ? "label" : st.cls;
    return show();
  }
  root.vggTesting = {select: select, numbers: numbers};
  unpackAll().then(function () {
    root.addEventListener("change", function () {
      select({net: root.querySelector(".tex-net").value, image: +root.querySelector(".tex-image-choice").value,
              method: root.querySelector(".tex-method").value, Q: +root.querySelector(".tex-q").value,
              cls: root.querySelector(".tex-class").value});
    });
    show();
    root.classList.add("tex-ready");
  }, function (e) { say("This browser cannot unpack the views (" + e + ")."); });
}
