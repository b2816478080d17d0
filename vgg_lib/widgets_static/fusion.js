// The fusion calculator without a kernel (vgg_lib.explorer.fusion.static.static_html inlines this file).
// The page carries, per evaluation and seed, the first images' posteriors quantised to 8 bits
// (q = round(255 p)), gzipped and base64-encoded; the browser's own DecompressionStream unpacks
// them. Fusing is summing the members' q per class (exact integers): the same order of classes
// as vgg_lib.evaluate.fuse on q / 256, so the errors equal FusionState's with QuantisedPosteriors.
function vggFusionMount(root, data, initial) {
  "use strict";
  var esc = function (s) { return String(s).replace(/[&<>"]/g, function (c) {
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]; }); };
  var fmt = function (n) { return Number(n).toLocaleString("en-US"); };
  var st = {nets: initial.nets.slice(), methods: initial.methods.slice(), seed: String(initial.seed)};
  var unpacked = {};   // "net|tag|seed" or "labels|<image set>" -> Uint8Array
  var byKey = data.evaluations;
  var methods = Object.keys(data.methods);

  function bytes(b64) {
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  function gunzip(b64) {
    var stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }
  function unpackAll() {
    var jobs = [];
    Object.keys(byKey).forEach(function (k) {
      Object.keys(byKey[k].seeds).forEach(function (s) {
        jobs.push(gunzip(byKey[k].seeds[s]).then(function (a) { unpacked[k + "|" + s] = a; }));
      });
    });
    Object.keys(data.image_sets).forEach(function (k) {
      jobs.push(gunzip(data.image_sets[k].labels).then(function (a) { unpacked["labels|" + k] = a; }));
    });
    return Promise.all(jobs);
  }

  function label(tag) { return data.methods[tag] || tag; }
  function members() {
    var out = [];
    data.nets.forEach(function (n) {
      if (st.nets.indexOf(n) < 0) return;
      methods.forEach(function (t) { if (st.methods.indexOf(t) >= 0 && byKey[n + "|" + t]) out.push([n, t]); });
    });
    return out;
  }
  // top-k error in percent, a tie across the k-th place a miss (FusionState's topk_error)
  function errors(sums, labels, n, classes, ks) {
    var miss = ks.map(function () { return 0; });
    for (var i = 0; i < n; i++) {
      var own = sums[i * classes + labels[i]], rivals = -1;
      for (var c = 0; c < classes; c++) if (sums[i * classes + c] >= own) rivals++;
      ks.forEach(function (k, j) { if (rivals >= k) miss[j]++; });
    }
    return miss.map(function (m) { return 100 * (1 - (n - m) / n); });   // evaluate.topk_error's formula
  }

  function result() {
    var ms = members(), out = {members: ms, skipped: [], message: ""};
    data.nets.forEach(function (n) {
      if (st.nets.indexOf(n) < 0) return;
      methods.forEach(function (t) {
        if (st.methods.indexOf(t) >= 0 && !byKey[n + "|" + t]) out.skipped.push(n + " (" + label(t) + ")"); });
    });
    var first = {}, sets = [];
    ms.forEach(function (m) {
      var s = byKey[m[0] + "|" + m[1]].images;
      if (!(s in first)) { first[s] = m; sets.push(s); }
    });
    if (!st.nets.length || !st.methods.length) out.message = "Select at least one net and one evaluation method.";
    else if (!ms.length) out.message = "None of the selected nets was evaluated by the selected methods.";
    else if (sets.length > 1)
      out.message = "These evaluations scored different images, so their posteriors cannot be averaged image by " +
        "image: " + sets.map(function (s) { var m = first[s]; return m[0] + " (" + label(m[1]) + "): " + s; })
          .join("; ") + ". Select evaluations of the same images.";
    if (out.message) return out;
    var info = data.image_sets[sets[0]], n = info.n, classes = info.classes;
    var labels = unpacked["labels|" + sets[0]], sums = new Int32Array(n * classes);
    var ks = classes >= 5 ? [1, 5] : [1];
    out.singles = {};
    ms.forEach(function (m) {
      var q = unpacked[m[0] + "|" + m[1] + "|" + st.seed];
      for (var i = 0; i < q.length; i++) sums[i] += q[i];
      out.singles[m[0] + "|" + m[1]] = errors(q, labels, n, classes, [1])[0];
    });
    var e = errors(sums, labels, n, classes, ks);
    out.images = n; out.top1 = e[0]; out.top5 = classes >= 5 ? e[1] : null;
    return out;
  }

  function resultHtml(r) {   // the markup of vgg_lib.explorer.fusion.render.result_html
    var skipped = r.skipped.length ? '<p class="fus-note">Not evaluated, left out: ' + esc(r.skipped.join(", ")) +
      '.</p>' : "";
    if (r.message) return '<div class="fus-message" role="status">' + esc(r.message) + '</div>' + skipped;
    var rows = r.members.map(function (m) {
      return '<tr><td>' + esc(m[0]) + '</td><td>' + esc(label(m[1])) + '</td><td class="fus-num">' +
        r.singles[m[0] + "|" + m[1]].toFixed(2) + '</td></tr>'; }).join("");
    var top5 = r.top5 === null ? "" : ', top-5 <b class="fus-top5" data-value="' + r.top5 + '">' +
      r.top5.toFixed(2) + '%</b>';
    return '<div class="fus-message" role="status"></div><p class="fus-fused">Fused (' + r.members.length +
      ' evaluation' + (r.members.length !== 1 ? "s" : "") + ', ' + fmt(r.images) + ' images): top-1 error ' +
      '<b class="fus-top1" data-value="' + r.top1 + '">' + r.top1.toFixed(2) + '%</b>' + top5 + '</p>' +
      '<table class="fus-members"><tr><th>net</th><th>evaluation</th><th>top-1 error alone (%)</th></tr>' + rows +
      '</table>' + skipped;
  }

  // -- markup and controls ------------------------------------------------------------------
  function boxes(cls, names, chosen, text) {
    return names.map(function (x) {
      return '<label><input type="checkbox" class="' + cls + '" value="' + esc(x) + '"' +
        (chosen.indexOf(x) >= 0 ? " checked" : "") + '>' + esc(text(x)) + '</label>'; }).join("");
  }
  root.innerHTML =
    '<div class="fus-controls"><fieldset class="fus-nets"><legend>nets</legend>' +
    boxes("fus-net", data.nets, st.nets, function (x) { return x; }) + '</fieldset>' +
    '<fieldset class="fus-methods"><legend>evaluation methods</legend>' +
    boxes("fus-method", methods, st.methods, label) + '</fieldset>' +
    '<label class="fus-seed-label">seed <select class="fus-seed">' + data.seeds.map(function (s) {
      return '<option value="' + s + '"' + (String(s) === st.seed ? " selected" : "") + '>' + s + '</option>';
    }).join("") + '</select></label></div><div class="fus-result">Unpacking the posteriors...</div>' +
    '<p class="fus-note">On the first ' + fmt(Object.keys(data.image_sets).map(function (k) {
      return data.image_sets[k].n; })[0]) + ' images of each evaluation, posteriors quantised to 8 bits ' +
    '(the chapter\'s tables use all of them); a tie across the k-th place counts as a miss.</p>';

  function read() {
    var picked = function (cls) {
      return Array.prototype.filter.call(root.querySelectorAll("." + cls), function (b) { return b.checked; })
        .map(function (b) { return b.value; }); };
    st.nets = picked("fus-net");
    st.methods = picked("fus-method");
    st.seed = root.querySelector(".fus-seed").value;
  }
  function show() {
    var r = result();
    root.querySelector(".fus-result").innerHTML = resultHtml(r);
    return r;
  }
  // for the browser tests and the curious: select without clicking, read the numbers
  root.vggFusion = {
    select: function (nets, ms, seed) {
      Array.prototype.forEach.call(root.querySelectorAll(".fus-net"), function (b) { b.checked = nets.indexOf(b.value) >= 0; });
      Array.prototype.forEach.call(root.querySelectorAll(".fus-method"), function (b) { b.checked = ms.indexOf(b.value) >= 0; });
      if (seed !== undefined) root.querySelector(".fus-seed").value = String(seed);
      read();
      return show();
    }
  };
  unpackAll().then(function () {
    root.addEventListener("change", function () { read(); show(); });
    show();
    root.classList.add("fus-ready");
  }, function (e) {
    root.querySelector(".fus-result").innerHTML = '<div class="fus-message" role="status">This browser cannot unpack ' +
      'the posteriors (' + esc(e) + ').</div>';
  });
}
