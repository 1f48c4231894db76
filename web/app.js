/* saeflow explorer: a dependency-free single page over the data files written
 * by `saeflow explore`. Routes live in the URL hash so that links and the
 * headless browser test can open any view directly:
 *   #                      feature index (sort=density|max|mean|id, dir=asc|desc, page=P)
 *   #search=red%20circle   features whose top rows' captions contain every word
 *   #search=42             feature 42 (ids are searched too)
 *   #f=42                  the page of feature 42
 *   dead=1 / dead=0        show / hide dead features in lists and neighbours
 *                          (default hidden; the toggle button remembers it)
 * Data: window.SF_INDEX (data/index.js), window.SF_WORDS (data/words.js),
 * feature details in data/f/CCCC.js chunks of 64, loaded on demand with a
 * <script> tag (file:// pages cannot fetch()). */
(function () {
  "use strict";
  var IDX = window.SF_INDEX, WORDS = window.SF_WORDS || {};
  var app = document.getElementById("app");
  var CHUNK = 64, PAGE = 50, SVGNS = "http://www.w3.org/2000/svg";
  var chunks = {}, pending = {};

  if (!IDX) {
    app.innerHTML = '<div class="card empty">data/index.js is missing: build the site with <code>saeflow explore</code>.</div>';
    return;
  }
  var n = IDX.n, TOK = IDX.tokens || null;
  var TITLE = IDX.title || "saeflow explorer";
  /* browser-side state: localStorage may be absent or refuse (file:// in
   * some browsers, private windows): fall back to memory */
  var mem = {};
  function load(k, d) {
    try { var v = window.localStorage.getItem(k); return v == null ? d : v; } catch (e) { return k in mem ? mem[k] : d; }
  }
  function save(k, v) {
    try { if (v == null) window.localStorage.removeItem(k); else window.localStorage.setItem(k, v); } catch (e) { mem[k] = v; }
  }
  function showDead(p) { return p.dead === "1" || (p.dead !== "0" && load("sf.showDead", "0") === "1"); }
  function isDead(j) { return IDX.count[j] === 0; }
  function plural(c, w) { return c + " " + w + (c === 1 ? "" : "s"); }

  /* ---- small helpers ---- */
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "html") e.innerHTML = attrs[k];
      else if (attrs[k] != null) e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function fmt(v) {
    if (v == null || !isFinite(v)) return "–";
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
    return v.toPrecision(a >= 100 ? 4 : 3).replace(/\.?0+$/, "");
  }
  function pct(d) {
    if (d === 0) return "0%";
    if (d >= 0.01) return (100 * d).toFixed(d >= 0.1 ? 1 : 2) + "%";
    return (100 * d).toExponential(1) + "%";
  }
  function imgSrc(row) { return "img/" + row + ".jpg"; }
  function thumb(row, has, cls) {
    return has ? el("img", { "class": cls || "thumb-sm", src: imgSrc(row), alt: "row " + row, loading: "lazy" })
               : el("div", { "class": "noimg" });
  }
  function params() {
    var h = location.hash.replace(/^#/, ""), p = {};
    h.split("&").forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf("="), k = i < 0 ? kv : kv.slice(0, i), v = i < 0 ? "" : kv.slice(i + 1);
      try { p[decodeURIComponent(k)] = decodeURIComponent(v.replace(/\+/g, " ")); } catch (e) { /* bad escape: ignore */ }
    });
    return p;
  }
  function hashOf(p) {
    return "#" + Object.keys(p).filter(function (k) { return p[k] !== "" && p[k] != null; })
      .map(function (k) { return encodeURIComponent(k) + "=" + encodeURIComponent(p[k]); }).join("&");
  }
  /* Query words, tokenised like the C side: ASCII letters/digits and any
   * non-ASCII character form words; ASCII is lower-cased. */
  function words(q) {
    return q.replace(/[A-Z]/g, function (c) { return c.toLowerCase(); })
      .split(/[^a-z0-9\u0080-\uffff]+/).filter(function (w) { return w.length > 0; });
  }
  var DENSE = 0.1; /* fires on more than 10% of rows: flagged as dense */
  function tagFor(j) {
    if (IDX.count[j] === 0) return el("span", { "class": "tag dead", text: "dead" });
    if (IDX.density[j] > DENSE) return el("span", { "class": "tag dense", text: "dense" });
    return null;
  }

  /* ---- charts (inline SVG) ---- */
  function niceTicks(lo, hi, count) {
    if (!(hi > lo)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10((hi - lo) / count))), err = (hi - lo) / count / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var t = [], s = Math.ceil(lo / step) * step;
    for (var v = s; v <= hi + step * 1e-9; v += step) t.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return t;
  }
  /* bars: [{x0, x1, y, cls, tip}] over [xlo, xhi]; xt: [[x, label]] */
  function barChart(bars, xlo, xhi, xt, opt) {
    var W = opt.w || 560, H = opt.h || 200, L = 44, R = 10, T = opt.title ? 24 : 10, B = 30;
    var ymax = 0;
    bars.forEach(function (b) { ymax = Math.max(ymax, b.y); });
    var yt = niceTicks(0, ymax || 1, 4), ytop = Math.max(yt[yt.length - 1], ymax || 1);
    var s = sv("svg", { "class": "chart", viewBox: "0 0 " + W + " " + H, role: "img" });
    if (opt.title) s.appendChild(sv("text", { x: L, y: 14, "class": "title" }, opt.title));
    function X(x) { return L + (x - xlo) / (xhi - xlo) * (W - L - R); }
    function Y(y) { return H - B - y / ytop * (H - B - T); }
    yt.forEach(function (v) {
      s.appendChild(sv("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), "class": "gridline" }));
      s.appendChild(sv("text", { x: L - 6, y: Y(v) + 3.5, "text-anchor": "end" }, fmt(v)));
    });
    bars.forEach(function (b) {
      if (!(b.y > 0)) return;
      var x0 = X(b.x0) + 0.5, x1 = X(b.x1) - 0.5, r = sv("rect", { x: x0, y: Y(b.y), width: Math.max(1, x1 - x0),
        height: Math.max(0.5, Y(0) - Y(b.y)), "class": "bar" + (b.cls ? " " + b.cls : "") });
      if (b.tip) r.appendChild(sv("title", {}, b.tip));
      s.appendChild(r);
    });
    s.appendChild(sv("line", { x1: L, x2: W - R, y1: Y(0), y2: Y(0), "class": "axis" }));
    xt.forEach(function (t) {
      s.appendChild(sv("text", { x: X(t[0]), y: H - B + 14, "text-anchor": "middle" }, t[1]));
    });
    if (opt.xlabel) s.appendChild(sv("text", { x: (L + W - R) / 2, y: H - 3, "text-anchor": "middle" }, opt.xlabel));
    return s;
  }
  function lineChart(xs, ys, title, opt) {
    var W = 300, H = 150, L = 44, R = 10, T = 22, B = 22;
    var pts = [];
    for (var i = 0; i < xs.length; i++) if (ys[i] != null && isFinite(ys[i]) && isFinite(xs[i])) pts.push([xs[i], ys[i]]);
    var s = sv("svg", { "class": "chart", viewBox: "0 0 " + W + " " + H, role: "img" });
    s.appendChild(sv("text", { x: L, y: 13, "class": "title" }, title));
    if (pts.length < 1) {
      s.appendChild(sv("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "not logged"));
      return s;
    }
    var log = opt && opt.log && pts.every(function (p) { return p[1] > 0; });
    var f = log ? function (v) { return Math.log10(v); } : function (v) { return v; };
    var x0 = pts[0][0], x1 = pts[pts.length - 1][0], y0 = Infinity, y1 = -Infinity;
    pts.forEach(function (p) { y0 = Math.min(y0, f(p[1])); y1 = Math.max(y1, f(p[1])); });
    if (!log) y0 = Math.min(y0, 0);
    if (y1 <= y0) y1 = y0 + 1;
    if (x1 <= x0) x1 = x0 + 1;
    function X(x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }
    function Y(y) { return H - B - (y - y0) / (y1 - y0) * (H - B - T); }
    var yt = log && y1 - y0 >= 1 ? niceTicks(Math.ceil(y0), Math.floor(y1), 3).filter(function (v) { return v === Math.round(v); })
                                 : niceTicks(y0, y1, 3);
    yt.forEach(function (v) {
      s.appendChild(sv("line", { x1: L, x2: W - R, y1: Y(v), y2: Y(v), "class": "gridline" }));
      s.appendChild(sv("text", { x: L - 5, y: Y(v) + 3.5, "text-anchor": "end" }, log ? fmt(Math.pow(10, v)) : fmt(v)));
    });
    [x0, x1].forEach(function (v, i) {
      s.appendChild(sv("text", { x: X(v), y: H - 6, "text-anchor": i ? "end" : "start" }, (i ? "step " : "") + fmt(v)));
    });
    var d = pts.map(function (p, i) { return (i ? "L" : "M") + X(p[0]).toFixed(1) + "," + Y(f(p[1])).toFixed(1); }).join("");
    s.appendChild(sv("path", { d: d, "class": "line" }));
    return s;
  }
  /* log10 density of all features, dead ones as their own red bar */
  function densityChart() {
    var lo = 0, alive = [], dead = 0, w = 0.25;
    for (var j = 0; j < n; j++) {
      if (IDX.count[j] === 0 || !(IDX.density[j] > 0)) { dead++; continue; }
      var l = Math.log10(IDX.density[j]);
      alive.push(l);
      lo = Math.min(lo, l);
    }
    lo = Math.floor(lo) - (alive.length ? 0 : 1);
    var nb = Math.max(1, Math.round(-lo / w)), bins = [];
    for (var i = 0; i < nb; i++) bins.push({ x0: lo + i * w, x1: lo + (i + 1) * w, y: 0 });
    alive.forEach(function (l) { bins[Math.min(nb - 1, Math.max(0, Math.floor((l - lo) / w)))].y++; });
    bins.forEach(function (b) {
      b.cls = b.x0 >= Math.log10(DENSE) - 1e-9 ? "dense" : "";
      b.tip = b.y + " features with density 10^" + b.x0.toFixed(2) + " … 10^" + b.x1.toFixed(2);
    });
    var deadX = lo - 0.75;
    bins.push({ x0: deadX, x1: deadX + 0.5, y: dead, cls: "dead", tip: dead + " dead features (never fired)" });
    var xt = [[deadX + 0.25, "dead"]];
    for (var e = lo; e <= 0; e++) xt.push([e, e === 0 ? "1" : "1e" + e]);
    var s = barChart(bins, deadX - 0.1, 0.05, xt, { xlabel: "fraction of rows a feature fires on (log scale)" });
    s.id = "density-chart";
    return s;
  }

  /* ---- feature chunks ---- */
  window.SF_CHUNK = function (c, feats) {
    chunks[c] = feats;
    (pending[c] || []).forEach(function (cb) { cb(); });
    delete pending[c];
  };
  function withFeature(j, cb) {
    var c = Math.floor(j / CHUNK);
    if (chunks[c]) return cb(chunks[c][j - c * CHUNK]);
    var first = !pending[c];
    (pending[c] = pending[c] || []).push(function () { cb(chunks[c][j - c * CHUNK]); });
    if (first) {
      var sc = document.createElement("script");
      sc.src = "data/f/" + String(c).padStart(4, "0") + ".js";
      sc.onerror = function () { app.innerHTML = ""; app.appendChild(el("div", { "class": "card empty", text: "Missing " + sc.src })); };
      document.head.appendChild(sc);
    }
  }

  /* ---- index view ---- */
  function summary() {
    var dead = 0, dense = 0;
    for (var j = 0; j < n; j++) { if (IDX.count[j] === 0) dead++; else if (IDX.density[j] > DENSE) dense++; }
    var m = IDX.meta || {};
    var stats = el("div", { "class": "stats" }, [
      el("div", { "class": "stat" }, [el("b", { id: "n-features", text: String(n) }), el("span", { text: "features" })]),
      el("div", { "class": "stat" }, [el("b", { text: Number(IDX.rows).toLocaleString("en-US") }), el("span", { text: TOK ? "tokens streamed" : "rows streamed" })]),
      TOK ? el("div", { "class": "stat" }, [el("b", { text: Number(TOK.examples).toLocaleString("en-US") }), el("span", { text: "images × " + TOK.T + " tokens" })]) : null,
      el("div", { "class": "stat" }, [el("b", { text: "top " + IDX.N }), el("span", { text: "rows kept / feature" })]),
      el("div", { "class": "stat dead", title: "features that never fired on the streamed rows (the training curve's dead fraction counts features that did not fire during the trainer's recent window instead)" },
        [el("b", { id: "n-dead", text: dead + "" }), el("span", { text: "dead (" + pct(dead / n) + ", never fired)" })]),
      el("div", { "class": "stat" }, [el("b", { text: dense + "" }), el("span", { text: "dense (> 10%)" })])
    ]);
    if (IDX.d) stats.appendChild(el("div", { "class": "stat" }, [el("b", { text: IDX.d + " → " + n }), el("span", { text: "SAE, k = " + IDX.k })]));
    var meta = el("div", { "class": "meta" });
    [["dataset", m.dataset], ["activations", m.activations], ["key", m.key], ["checkpoint", m.checkpoint]].forEach(function (kv) {
      if (!kv[1]) return;
      meta.appendChild(document.createTextNode(kv[0] + " "));
      meta.appendChild(el("code", { text: kv[1] }));
      meta.appendChild(document.createTextNode("   "));
    });
    return el("section", {}, [el("h1", { text: TITLE }), meta, stats]);
  }
  function curvesCard() {
    var c = IDX.curves;
    var card = el("div", { "class": "card", id: "training" }, [el("h2", { text: "Training" })]);
    if (!c) {
      card.appendChild(el("p", { "class": "muted", text: "No training log (metrics.jsonl) next to the checkpoint." }));
      return card;
    }
    card.appendChild(el("div", { "class": "curves" }, [
      lineChart(c.step, c.loss, "loss", { log: true }), lineChart(c.step, c.fvu, "FVU (l2 normalised)", { log: true }),
      lineChart(c.step, c.l0, "L0 (active latents / row)"), lineChart(c.step, c.dead, "dead fraction (trainer's window)")]));
    card.appendChild(el("p", { "class": "muted small", text: "The training curve's dead fraction is the trainer's: latents that did not fire within its recent window of steps. The summary's dead count is features that never fired on any row streamed through topk." }));
    return card;
  }
  function sortedIds(p) {
    var key = p.sort || "density", dir = p.dir || (key === "id" ? "asc" : "desc"), ids = [], all = showDead(p);
    for (var j = 0; j < n; j++) if (all || !isDead(j)) ids.push(j);
    var arr = key === "id" ? null : IDX[key];
    ids.sort(function (a, b) {
      var d = arr ? arr[a] - arr[b] : a - b;
      if (d === 0) d = a - b;
      return dir === "asc" ? d : -d;
    });
    return ids;
  }
  /* Search: numbers are feature ids; words select the features whose top
   * rows' captions contain every word (ranked by how many rows do). */
  function search(q) {
    var toks = words(q), ids = [], hits = {}, wordsUsed = [];
    var nums = toks.filter(function (t) { return /^[0-9]+$/.test(t); });
    nums.forEach(function (t) { var j = parseInt(t, 10); if (j < n && ids.indexOf(j) < 0) ids.push(j); });
    var ws = toks.filter(function (t) { return !/^[0-9]+$/.test(t); });
    if (ws.length) {
      var sets = ws.map(function (w) { wordsUsed.push(w); return WORDS[w] || []; });
      var score = {};
      sets[0].forEach(function (p) { score[p[0]] = p[1]; });
      for (var i = 1; i < sets.length; i++) {
        var nxt = {};
        sets[i].forEach(function (p) { if (p[0] in score) nxt[p[0]] = Math.min(score[p[0]], p[1]); });
        score = nxt;
      }
      Object.keys(score).map(Number).sort(function (a, b) {
        return score[b] - score[a] || IDX.max[b] - IDX.max[a] || a - b;
      }).forEach(function (j) { if (ids.indexOf(j) < 0) { ids.push(j); hits[j] = score[j]; } });
    }
    if (!showDead(params())) ids = ids.filter(function (j) { return !isDead(j) || nums.indexOf(String(j)) >= 0; });
    return { ids: ids, hits: hits, words: wordsUsed };
  }
  function featureTable(ids, p, hits) {
    var page = Math.max(0, parseInt(p.page || "0", 10) || 0), pages = Math.max(1, Math.ceil(ids.length / PAGE));
    if (page >= pages) page = pages - 1;
    var key = p.sort || "density";
    var tb = el("tbody");
    ids.slice(page * PAGE, page * PAGE + PAGE).forEach(function (j) {
      var top = IDX.top[j], d = IDX.density[j];
      var w = d > 0 ? Math.max(2, 100 * (1 + Math.log10(d) / 6)) : 0; /* 1e-6 .. 1 on a log bar */
      var tr = el("tr", { "class": "feat-row", "data-feature": j }, [
        el("td", { "class": "num" }, [el("a", { href: "#f=" + j, text: "#" + j })]),
        el("td", {}, [top ? thumb(top[0], top[1]) : el("div", { "class": "noimg" })]),
        el("td", { "class": "num" }, [el("span", { "class": "dbar" }, [el("i", { style: "width:" + Math.min(100, w).toFixed(1) + "%" })]), pct(d)]),
        el("td", { "class": "num", text: fmt(IDX.max[j]) }),
        el("td", { "class": "num", text: fmt(IDX.mean[j]) }),
        el("td", {}, [tagFor(j), hits && hits[j] ? el("span", { "class": "hits", text: hits[j] + "/" + IDX.N + " rows" }) : null]),
        el("td", { "class": "cap", title: top && top[2] ? top[2] : "", text: top && top[2] ? top[2] : "" })
      ]);
      tr.onclick = function (e) { if (e.target.tagName !== "A") location.hash = "#f=" + j; };
      tb.appendChild(tr);
    });
    function th(label, k) {
      if (!k) return el("th", { text: label });
      var on = key === k, dir = p.dir || (k === "id" ? "asc" : "desc");
      var h = el("th", { "class": "sortable", title: "sort by " + label, text: label + (on ? (dir === "asc" ? " ▲" : " ▼") : "") });
      h.onclick = function () {
        var q = Object.assign({}, p, { sort: k, page: "" });
        q.dir = on ? (dir === "asc" ? "desc" : "asc") : (k === "id" ? "asc" : "desc");
        location.hash = hashOf(q);
      };
      return h;
    }
    var table = el("table", { "class": "features", id: "feature-table" }, [
      el("thead", {}, [el("tr", {}, [th("feature", p.search ? null : "id"), th("top"), th("density", p.search ? null : "density"),
        th("max", p.search ? null : "max"), th("mean", p.search ? null : "mean"), th(""), th("top caption")])]), tb]);
    function pager(delta, label) {
      var b = el("button", { "class": "btn", text: label });
      var np = page + delta;
      if (np < 0 || np >= pages) b.disabled = true;
      b.onclick = function () { location.hash = hashOf(Object.assign({}, p, { page: np ? String(np) : "" })); };
      return b;
    }
    var bar = el("div", { "class": "toolbar" });
    if (!p.search) {
      [["density", "density"], ["max", "max activation"], ["mean", "mean activation"], ["id", "feature id"]].forEach(function (s) {
        var b = el("button", { "class": "btn" + (key === s[0] ? " on" : ""), text: s[1] });
        b.onclick = function () { location.hash = hashOf({ sort: s[0] }); };
        bar.appendChild(b);
      });
    }
    var nd = 0;
    for (var q = 0; q < n; q++) nd += isDead(q);
    var all = showDead(p);
    var tg = el("button", { "class": "btn" + (all ? " on" : ""), id: "toggle-dead", "data-show": all ? "1" : "0",
      text: all ? "hide " + nd + " dead" : "show " + nd + " dead" });
    tg.onclick = function () {
      save("sf.showDead", all ? "0" : "1");
      location.hash = hashOf(Object.assign({}, p, { dead: all ? "0" : "1", page: "" }));
    };
    if (nd) bar.appendChild(tg);
    bar.appendChild(el("span", { "class": "spacer" }));
    bar.appendChild(el("span", { "class": "muted", text: ids.length ? (page * PAGE + 1) + "–" + Math.min(ids.length, page * PAGE + PAGE) + " of " + ids.length : "" }));
    bar.appendChild(pager(-1, "‹ prev"));
    bar.appendChild(pager(1, "next ›"));
    return el("div", { "class": "card" }, [bar, ids.length ? table : el("div", { "class": "empty", text: "No features match." })]);
  }
  function renderIndex(p) {
    app.innerHTML = "";
    document.title = TITLE;
    app.appendChild(summary());
    var dens = el("div", { "class": "card" }, [el("h2", { text: "Feature density" }), densityChart(),
      el("div", { "class": "legend" }, [el("i", { style: "background:var(--dead)" }), "dead", el("i", { style: "background:var(--accent)" }),
        "alive", el("i", { style: "background:var(--dense)" }), "dense (> 10% of rows)"])]);
    app.appendChild(el("div", { "class": "grid2" }, [dens, curvesCard()]));
    if (p.search) {
      var r = search(p.search);
      app.appendChild(el("h2", { id: "search-summary", "data-count": r.ids.length,
        text: r.ids.length + " feature" + (r.ids.length === 1 ? "" : "s") + " for “" + p.search + "”" +
          (r.words.length ? " (top-row captions containing " + r.words.join(" + ") + ")" : "") }));
      app.appendChild(featureTable(r.ids, p, r.hits));
    } else {
      app.appendChild(featureTable(sortedIds(p), p, null));
    }
  }

  /* ---- feature view ---- */
  var STOP = {};
  ("a an and are as at be by for from has in into is it its of on or that the their this to was with")
    .split(" ").forEach(function (w) { STOP[w] = 1; });
  /* words in at least a quarter of the top rows' captions, most common first */
  function commonWords(top) {
    var cnt = {};
    top.forEach(function (t) {
      var seen = {};
      words(t[3] || "").forEach(function (w) {
        if (w.length < 2 || STOP[w] || /^[0-9]+$/.test(w) || seen[w]) return;
        seen[w] = 1;
        cnt[w] = (cnt[w] || 0) + 1;
      });
    });
    return Object.keys(cnt).filter(function (w) { return cnt[w] * 4 >= top.length && cnt[w] > 1; })
      .sort(function (a, b) { return cnt[b] - cnt[a] || (a < b ? -1 : 1); }).slice(0, 10)
      .map(function (w) { return [w, cnt[w]]; });
  }

  function renderFeature(j) {
    app.innerHTML = "";
    if (!(j >= 0 && j < n)) {
      app.appendChild(el("div", { "class": "card empty", text: "No feature " + j + " (this SAE has " + n + ")." }));
      return;
    }
    document.title = "Feature " + j + " · " + TITLE;
    app.appendChild(el("p", { "class": "muted", text: "Loading feature " + j + "…" }));
    withFeature(j, function (f) {
      if (params().f !== String(j)) return; /* the user moved on */
      app.innerHTML = "";
      var nav = el("div", { "class": "nav" }, [
        el("a", { "class": "btn", href: "#", text: "← all features" }),
        j > 0 ? el("a", { "class": "btn", href: "#f=" + (j - 1), text: "‹ #" + (j - 1) }) : null,
        j + 1 < n ? el("a", { "class": "btn", href: "#f=" + (j + 1), text: "#" + (j + 1) + " ›" }) : null]);
      app.appendChild(el("section", { id: "feature", "data-feature": j }, [
        el("div", { "class": "fhead" }, [el("h1", { text: "Feature " + j }), tagFor(j), nav]),
        el("div", { "class": "stats" }, [
          el("div", { "class": "stat" }, [el("b", { text: pct(IDX.density[j]) }), el("span", { text: "density (" + plural(IDX.count[j], TOK ? "token" : "row") + ")" })]),
          TOK ? el("div", { "class": "stat" }, [el("b", { text: pct(TOK.examples ? IDX.ex_count[j] / TOK.examples : 0) }),
            el("span", { text: "of images (" + plural(IDX.ex_count[j], "image") + ")" })]) : null,
          el("div", { "class": "stat" }, [el("b", { text: fmt(IDX.max[j]) }), el("span", { text: "max activation" })]),
          el("div", { "class": "stat" }, [el("b", { text: fmt(IDX.mean[j]) }), el("span", { text: "mean when firing" })])])]));
      /* histogram + neighbours */
      var bars = [], w = f.hist_max / f.hist.length;
      f.hist.forEach(function (c, i) { bars.push({ x0: i * w, x1: (i + 1) * w, y: c, tip: c + " rows in [" + fmt(i * w) + ", " + fmt((i + 1) * w) + ")" }); });
      var histCard = el("div", { "class": "card" }, [el("h2", { text: "Activation histogram (rows where it fires)" })]);
      if (f.hist_max > 0) {
        /* the range is a power of two above the max: show up to the last used bin */
        var last = 0;
        f.hist.forEach(function (c, i) { if (c > 0) last = i; });
        var hi = (last + 1) * w;
        var hs = barChart(bars.slice(0, last + 1), 0, hi, niceTicks(0, hi, 4).map(function (v) { return [v, fmt(v)]; }), { xlabel: "activation" });
        hs.id = "hist-chart";
        histCard.appendChild(hs);
      } else histCard.appendChild(el("p", { "class": "muted", text: "Never fired on the streamed rows." }));
      var all = showDead(params());
      function nbList(id, list, label) {
        var ul = el("ul", { "class": "nblist", id: id }), shown = 0;
        list.forEach(function (e) {
          if (!all && isDead(e[0])) return;
          var t = IDX.top[e[0]];
          shown++;
          ul.appendChild(el("li", { "data-feature": e[0] }, [t ? thumb(t[0], t[1]) : el("div", { "class": "noimg" }),
            el("a", { href: "#f=" + e[0], text: "#" + e[0] }), el("span", { "class": "cos", text: label(e) }),
            el("span", { "class": "cap", text: isDead(e[0]) ? "(dead)" : t && t[2] ? t[2] : "" })]));
        });
        return shown ? ul : null;
      }
      var nbCard = el("div", { "class": "card" }, [el("h2", { text: "Nearest features by decoder direction (cosine)" })]);
      var nbUl = nbList("neighbours", f.nb, function (e) { return e[1].toFixed(3); });
      if (nbUl) nbCard.appendChild(nbUl);
      else nbCard.appendChild(el("p", { "class": "muted", text: !IDX.neighbours ? "Not computed (build with --checkpoint, --neighbours > 0)." :
        f.nb.length ? "Only dead features nearby (show dead features to list them)." : "No neighbours." }));
      var coCard = el("div", { "class": "card" }, [el("h2", { text: "Co-occurring features (shared top " + (TOK ? "images" : "rows") + ")" })]);
      var coUl = nbList("cooccur", f.co || [], function (e) { return e[1] + "/" + IDX.N; });
      coCard.appendChild(coUl || el("p", { "class": "muted", text: "No other feature keeps any of these " + (TOK ? "images" : "rows") + "." }));
      coCard.appendChild(el("p", { "class": "muted small", text: "Counted over the features' top-" + IDX.N + " lists: how many of this feature's top " + (TOK ? "images" : "rows") + " another feature also keeps." }));
      var common = commonWords(f.top);
      if (common.length) {
        var chips = el("div", { "class": "chips", id: "common-words" }, [el("span", { "class": "muted", text: "Words in its top captions: " })]);
        common.forEach(function (c) {
          chips.appendChild(el("a", { "class": "chip", href: hashOf({ search: c[0] }), title: "features whose top captions contain " + c[0] },
            [c[0] + " ", el("b", { text: c[1] + "/" + f.top.length })]));
        });
        app.appendChild(chips);
      }
      app.appendChild(el("div", { "class": "grid2" }, [histCard, noteCard(j)]));
      app.appendChild(el("div", { "class": "grid2" }, [nbCard, coCard]));
      /* top rows (token mode: top images, each with its heat map) */
      var heatOn = load("sf.heat", "1") === "1";
      /* FLUX: the image-token grid covers the whole image, not a centre crop */
      var flux = (IDX.meta || {}).source === "flux";
      var grid = el("div", { "class": "topgrid" + (heatOn ? "" : " noheat") + (flux ? " flux" : ""), id: "top-rows" });
      f.top.forEach(function (t, i) {
        var img = t[2] ? el("img", { "class": "top-img", src: imgSrc(t[0]), alt: "row " + t[0] }) : null;
        /* marks images that decoded (the browser test reads it) */
        if (img) img.onload = function () { img.setAttribute("data-loaded", img.naturalWidth > 0 ? "1" : "0"); };
        var wrap = el("div", { "class": "imgwrap" }, [img]);
        var extra = null;
        if (TOK && t.length > 5) {
          var hm = heatMap(t[4], t[5]);
          if (hm) wrap.appendChild(hm);
          extra = tokenLine(t[1], t[4], t[5], t[6]);
        }
        wrap.appendChild(el("span", { "class": "val", text: fmt(t[1]) }));
        wrap.appendChild(el("span", { "class": "rank", text: "#" + (i + 1) }));
        grid.appendChild(el("div", { "class": "tile", "data-row": t[0] }, [wrap, extra,
          el("div", { "class": "cap", text: t[3] != null ? t[3] : "(no caption)" }), el("div", { "class": "row", text: "row " + t[0] })]));
      });
      var topCard = el("div", { "class": "card" }, [el("h2", { text: "Top " + f.top.length + " activating " + (TOK ? "images" : "rows") })]);
      if (TOK && TOK.grid[0] > 0 && f.top.length) {
        var hb = el("button", { "class": "btn" + (heatOn ? " on" : ""), id: "toggle-heat", text: "heat map overlay" });
        hb.onclick = function () {
          heatOn = !heatOn;
          save("sf.heat", heatOn ? "1" : "0");
          grid.classList.toggle("noheat", !heatOn);
          hb.classList.toggle("on", heatOn);
        };
        topCard.appendChild(el("div", { "class": "toolbar" }, [hb, el("span", { "class": "muted small",
          text: "each image once, at its strongest token; red = the feature's activation on each patch (relative to that image's peak)" })]));
      }
      topCard.appendChild(f.top.length ? grid : el("p", { "class": "muted", text: "Never fired." }));
      app.appendChild(topCard);
      /* a steering grid (flux generate --steer ... --steer-grid) when one was made */
      if (f.steer) app.appendChild(el("div", { "class": "card", id: "steer" }, [el("h2", { text: "Steering" }),
        el("p", { "class": "muted small", text: "Images generated with this feature steered: rows are strengths, columns seeds." }),
        el("img", { "class": "steer-img", id: "steer-img", src: f.steer, alt: "steering grid of feature " + j })]));
      if (f.range && f.top.length) app.appendChild(rangeCard(f));
    });
  }

  /* Heat map over the patch grid: cells at (r, c) of the TOK.grid, shaded by
   * the activation (0..255 of the image's peak). The grid covers the square
   * the tile shows, which is CLIP's centre crop (object-fit: cover). */
  function heatMap(best, pairs) {
    var gh = TOK.grid[0], gw = TOK.grid[1], g0 = TOK.first;
    if (!(gh > 0 && gw > 0)) return null;
    var box = el("div", { "class": "heat", style: "grid-template-rows:repeat(" + gh + ",1fr);grid-template-columns:repeat(" + gw + ",1fr)" });
    for (var i = 0; i < pairs.length; i += 2) {
      var p = pairs[i] - g0;
      if (p < 0 || p >= gh * gw) continue;
      var r = Math.floor(p / gw), c = p % gw;
      box.appendChild(el("i", { "class": "hc" + (pairs[i] === best ? " peak" : ""), "data-pos": pairs[i], "data-r": r, "data-c": c,
        style: "grid-row:" + (r + 1) + ";grid-column:" + (c + 1) + ";opacity:" + (0.08 + 0.5 * pairs[i + 1] / 255).toFixed(3) }));
    }
    return box;
  }
  /* Examples from each quartile of the firing values (a sample of the rows in
   * the histogram bins of that quartile), weakest first: what the feature
   * does when it fires weakly, not only at its peak. */
  function rangeCard(f) {
    var card = el("div", { "class": "card", id: "range" }, [el("h2", { text: "Examples across the activation range" }),
      el("p", { "class": "muted small", text: "A few " + (TOK ? "tokens" : "rows") + " sampled from each quarter of the " +
        (TOK ? "tokens" : "rows") + " where the feature fires, by activation" + (TOK ? " (the marked patch is the token)" : "") + "." })]);
    var names = ["0–25%", "25–50%", "50–75%", "75–100%"];
    f.range.forEach(function (q, qi) {
      var strip = el("div", { "class": "rstrip" });
      q[2].forEach(function (t) {
        var wrap = el("div", { "class": "imgwrap" }, [t[2] ? el("img", { src: imgSrc(t[0]), alt: "row " + t[0], loading: "lazy" }) : null]);
        if (TOK && t.length > 4) {
          var hm = heatMap(t[4], [t[4], 255]);
          if (hm) wrap.appendChild(hm);
        }
        wrap.appendChild(el("span", { "class": "val", text: fmt(t[1]) }));
        strip.appendChild(el("div", { "class": "tile small-tile", "data-row": t[0], title: (t[3] || "") + " (row " + t[0] + ")" }, [wrap,
          el("div", { "class": "cap", text: t[3] != null ? t[3] : "(no caption)" })]));
      });
      card.appendChild(el("div", { "class": "rrow", "data-quartile": qi }, [
        el("div", { "class": "rlabel" }, [el("b", { text: names[qi] }), el("span", { "class": "muted small", text: q[2].length ? fmt(q[0]) + " – " + fmt(q[1]) : "" })]),
        q[2].length ? strip : el("span", { "class": "muted small", text: "no rows" })]));
    });
    return card;
  }
  /* the tokens outside the grid (CLIP: the CLS token; FLUX: the prompt's T5
   * tokens, toks, shaded by the activation) and where the peak is */
  function tokenLine(v, best, pairs, toks) {
    var parts = [], g0 = TOK.first, gh = TOK.grid[0], gw = TOK.grid[1], heat = {};
    for (var i = 0; i < pairs.length; i += 2) heat[pairs[i]] = pairs[i + 1];
    var b = best - g0, peak = gh > 0 && b >= 0 && b < gh * gw ? "peak at patch (" + Math.floor(b / gw) + ", " + (b % gw) + ")"
      : toks && best < toks.length ? "peak at text token " + best + " “" + toks[best].replace(/\u2581/g, " ").trim() + "”"
      : toks && best < g0 ? "peak at padding token " + best : "peak at token " + best;
    if (toks) {
      var line = el("div", { "class": "toks" });
      toks.forEach(function (s, q) {
        var h = heat[q] || 0;
        line.appendChild(el("span", { "class": "tk" + (h ? " fire" : ""), "data-pos": q, "data-heat": h, title: "token " + q + ": " + fmt(v * h / 255),
          style: h ? "background:rgba(255,31,15," + (0.15 + 0.7 * h / 255).toFixed(3) + ")" : null, text: s.replace(/\u2581/g, " ") }));
      });
      var pads = 0, pmax = 0;
      for (var q = toks.length; q < g0; q++) if (heat[q]) { pads++; pmax = Math.max(pmax, heat[q]); }
      var tail = [peak];
      if (pads) tail.unshift(pads + " padding tokens fire (up to " + fmt(v * pmax / 255) + ")");
      return el("div", { "class": "tokline" }, [line, el("div", { text: tail.join(" · ") })]);
    }
    for (var q = 0; q < g0; q++) {
      if (g0 > 1 && !heat[q]) continue; /* many text tokens: the firing ones */
      parts.push((g0 === 1 ? "CLS " : "token " + q + " ") + fmt(v * (heat[q] || 0) / 255));
    }
    parts.push(peak);
    return el("div", { "class": "tokline", text: parts.join(" · ") });
  }

  /* ---- notes: a label and a note per feature, kept in this browser ---- */
  var NOTES_KEY = "sf.notes:" + ((IDX.meta || {}).checkpoint || "") + ":" + n;
  function notes() {
    try { return JSON.parse(load(NOTES_KEY, "{}")) || {}; } catch (e) { return {}; }
  }
  function noteCard(j) {
    var all = notes(), cur = all[j] || { label: "", note: "" };
    var label = el("input", { id: "note-label", type: "text", placeholder: "label (e.g. red things)", value: cur.label || "" });
    var note = el("textarea", { id: "note-text", rows: 4, placeholder: "notes about this feature" });
    note.value = cur.note || "";
    var status = el("span", { "class": "muted small", id: "note-status" });
    function store() {
      var a = notes(), l = label.value.trim(), t = note.value.trim();
      if (l || t) a[j] = { label: l, note: t }; else delete a[j];
      save(NOTES_KEY, JSON.stringify(a));
      status.textContent = "saved in this browser (" + plural(Object.keys(a).length, "note") + ")";
    }
    label.oninput = store;
    note.oninput = store;
    var exp = el("button", { "class": "btn", id: "notes-export", text: "export all as JSON" });
    exp.onclick = function () {
      var blob = new Blob([JSON.stringify({ title: TITLE, meta: IDX.meta || {}, notes: notes() }, null, 2)], { type: "application/json" });
      var a = el("a", { href: URL.createObjectURL(blob), download: "saeflow-notes.json" });
      document.body.appendChild(a);
      a.click();
      a.remove();
    };
    return el("div", { "class": "card notes" }, [el("h2", { text: "Your label and notes" }), label, note, el("div", { "class": "toolbar" }, [exp, status])]);
  }

  function route() {
    var p = params(), box = document.getElementById("search");
    if (p.f != null && p.f !== "") {
      if (/^[0-9]+$/.test(p.f)) renderFeature(parseInt(p.f, 10));
      else { app.innerHTML = ""; app.appendChild(el("div", { "class": "card empty", text: "“" + p.f + "” is not a feature number." })); }
      box.value = "";
    }
    else { renderIndex(p); box.value = p.search || ""; }
    window.scrollTo(0, 0);
  }
  document.getElementById("search-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var q = document.getElementById("search").value.trim();
    var m = /^#?([0-9]+)$/.exec(q);
    location.hash = m ? "#f=" + m[1] : hashOf({ search: q });
  });
  /* left/right arrows step through features on a feature page */
  document.addEventListener("keydown", function (e) {
    var p = params();
    if (p.f == null || e.target.tagName === "INPUT" || e.altKey || e.ctrlKey || e.metaKey) return;
    var j = parseInt(p.f, 10);
    if (e.key === "ArrowLeft" && j > 0) location.hash = "#f=" + (j - 1);
    if (e.key === "ArrowRight" && j + 1 < n) location.hash = "#f=" + (j + 1);
  });
  window.addEventListener("hashchange", route);
  route();
})();
