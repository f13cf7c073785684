// Spectra report: head grid and attention viewer. No libraries, no network.
// The viewer computes one head's weights on selection from the embedded post-RoPE q and k:
// s_j = q_t . k_j * scaling (soft-capped when the layer has a softcap), over the visible keys
// (j <= t when causal; |t - j| < window with a sliding window), then a max-shifted softmax; a
// learned sink logit (gpt-oss) is one more term of the softmax's denominator, so the weights then
// sum to less than 1; a layer whose mask is custom (chunked attention, document masks) carries it as
// bits, and only the keys it shows are visible.
// spectra.report.attention_weights is the same computation in Python.
(function () {
  "use strict";

  const data = JSON.parse(document.getElementById("report-data").textContent);
  const grid = data.grid;
  const view = data.viewer;
  const state = { metric: grid.default_metric, layer: 0, head: 0, sample: 0, query: 0 };
  const CLASS_NAMES = { sink: "static_sink", ind: "induction", prev: "previous_token", pos: "positional",
                        gath: "gatherer", sem: "semantic_retriever", "·": "unclassified" };

  // ---- colours -------------------------------------------------------------------------------
  const VIRIDIS = [[68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
                   [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37]];

  function viridis(x) {
    const t = Math.min(1, Math.max(0, x)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(t));
    const f = t - i;
    const c = VIRIDIS[i].map((v, n) => Math.round(v + f * (VIRIDIS[i + 1][n] - v)));
    return c;
  }

  function formatNumber(v) {
    if (v === null || v === undefined) return "n/a";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
    return v.toPrecision(3).replace(/\.?0+$/, (m) => (m.startsWith(".") ? "" : m));
  }

  // ---- q and k -------------------------------------------------------------------------------
  function decodeFloats(b64) {
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const dv = new DataView(bytes.buffer);
    const out = new Float32Array(bytes.length / 4);
    for (let i = 0; i < out.length; i++) out[i] = dv.getFloat32(4 * i, true);
    return out;
  }

  let Q = null;
  let K = null;
  if (view.available) {
    Q = decodeFloats(view.q);
    K = decodeFloats(view.k);
  }
  const maskBits = {}; // layer -> decoded bytes of its custom mask (packed bits, little-endian in each byte)
  function customVisible(layer, head, sample, query, key) {
    const how = view.layers[layer];
    if (!how.visible) return true;
    if (!maskBits[layer]) maskBits[layer] = Uint8Array.from(atob(how.visible), (c) => c.charCodeAt(0));
    const T = view.n_tokens, heads = how.visible_heads;
    const index = ((sample * heads + (heads > 1 ? head : 0)) * T + query) * T + key;
    return ((maskBits[layer][index >> 3] >> (index & 7)) & 1) === 1;
  }

  function weights(layer, head, sample, query) {
    const T = view.n_tokens, D = view.head_dim, N = view.samples.length;
    const how = view.layers[layer];
    const kv = view.kv_head[head];
    const qBase = (((layer * view.n_heads + head) * N + sample) * T + query) * D;
    const scores = new Float64Array(T);
    const visible = new Array(T);
    let max = -Infinity;
    for (let j = 0; j < T; j++) {
      let ok = how.causal ? j <= query : true;
      if (how.window) ok = ok && Math.abs(query - j) < how.window;
      if (how.visible) ok = ok && customVisible(layer, head, sample, query, j);
      visible[j] = ok;
      if (!ok) continue;
      const kBase = (((layer * view.n_kv_heads + kv) * N + sample) * T + j) * D;
      let dot = 0;
      for (let d = 0; d < D; d++) dot += Q[qBase + d] * K[kBase + d];
      let s = dot * how.scaling;
      if (how.softcap) s = how.softcap * Math.tanh(s / how.softcap);
      scores[j] = s;
      if (s > max) max = s;
    }
    let total = 0;
    const out = new Float64Array(T);
    const sink = how.sinks ? how.sinks[head] : null;
    if (sink !== null && sink > max) max = sink;
    for (let j = 0; j < T; j++) {
      if (!visible[j]) continue;
      out[j] = Math.exp(scores[j] - max);
      total += out[j];
    }
    if (sink !== null) total += Math.exp(sink - max);
    for (let j = 0; j < T; j++) if (visible[j]) out[j] /= total;
    return { weights: out, visible: visible };
  }

  // ---- head grid -----------------------------------------------------------------------------
  const gridEl = document.getElementById("head-grid");
  const cells = [];

  function buildGrid() {
    const metricSelect = document.getElementById("metric-select");
    for (const m of grid.metrics) {
      const option = document.createElement("option");
      option.value = m;
      option.textContent = m;
      metricSelect.appendChild(option);
    }
    metricSelect.value = state.metric || "";
    metricSelect.addEventListener("change", () => { state.metric = metricSelect.value; paintGrid(); });
    const compact = grid.n_heads > 16;
    if (compact) gridEl.classList.add("compact");
    gridEl.style.gridTemplateColumns = `auto repeat(${grid.n_heads}, ${compact ? "18px" : "minmax(44px, 1fr)"})`;
    gridEl.appendChild(Object.assign(document.createElement("div"), { className: "hdr", textContent: "" }));
    for (let h = 0; h < grid.n_heads; h++) {
      gridEl.appendChild(Object.assign(document.createElement("div"), { className: "hdr", textContent: `H${h}` }));
    }
    for (let l = 0; l < grid.n_layers; l++) {
      gridEl.appendChild(Object.assign(document.createElement("div"), { className: "hdr", textContent: `L${l}` }));
      cells.push([]);
      for (let h = 0; h < grid.n_heads; h++) {
        const cell = document.createElement("div");
        cell.className = "cell";
        cell.tabIndex = 0;
        cell.setAttribute("role", "gridcell");
        cell.dataset.layer = String(l);
        cell.dataset.head = String(h);
        cell.addEventListener("click", () => select({ layer: l, head: h }));
        cell.addEventListener("keydown", (e) => {
          if (e.key === "Enter" || e.key === " ") { e.preventDefault(); select({ layer: l, head: h }); }
        });
        gridEl.appendChild(cell);
        cells[l].push(cell);
      }
    }
    const note = [`Per-head values from ${grid.source}`];
    if (grid.note) note.push(`(${grid.note})`);
    note.push("· hover a cell for its class, click it to show that head in the attention viewer.");
    document.getElementById("grid-note").textContent = note.join(" ");
    const counts = {};
    for (const row of grid.class_short) for (const c of row) if (c) counts[c] = (counts[c] || 0) + 1;
    const parts = Object.keys(counts).sort().map((c) => `${c} = ${CLASS_NAMES[c] || c}: ${counts[c]}`);
    document.getElementById("class-counts").textContent = parts.length ? `Classes: ${parts.join(", ")}` : "";
  }

  function paintGrid() {
    const values = state.metric ? grid.values[state.metric] : null;
    let lo = Infinity, hi = -Infinity;
    if (values) for (const row of values) for (const v of row) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    const compact = grid.n_heads > 16;
    for (let l = 0; l < grid.n_layers; l++) {
      for (let h = 0; h < grid.n_heads; h++) {
        const cell = cells[l][h];
        const v = values ? values[l][h] : null;
        cell.textContent = "";
        if (v === null) {
          cell.classList.add("missing");
          cell.style.background = "";
          cell.style.color = "";
        } else {
          cell.classList.remove("missing");
          const [r, g, b] = viridis(hi > lo ? (v - lo) / (hi - lo) : 0.5);
          cell.style.background = `rgb(${r}, ${g}, ${b})`;
          cell.style.color = 0.299 * r + 0.587 * g + 0.114 * b > 140 ? "#111" : "#fff";
        }
        if (!compact) {
          cell.appendChild(Object.assign(document.createElement("span"), { textContent: formatNumber(v) }));
          const short = grid.class_short[l][h];
          if (short) cell.appendChild(Object.assign(document.createElement("span"), { textContent: short }));
        }
        const valueText = v === null ? "no value in this run" : String(v);
        cell.title = `L${l}H${h} · ${state.metric || "no metric"} = ${valueText}\n${grid.classes[l][h]}`;
        cell.dataset.value = v === null ? "" : String(v);
      }
    }
    const legend = document.getElementById("grid-legend");
    legend.textContent = "";
    if (values && lo <= hi) {
      const stops = VIRIDIS.map((c) => `rgb(${c.join(",")})`).join(",");
      legend.append(formatNumber(lo), Object.assign(document.createElement("span"),
        { className: "bar", style: `background: linear-gradient(to right, ${stops})` }), formatNumber(hi));
    }
  }

  // ---- attention viewer ----------------------------------------------------------------------
  function fillSelect(id, n, label, onChange) {
    const el = document.getElementById(id);
    for (let i = 0; i < n; i++) {
      const option = document.createElement("option");
      option.value = String(i);
      option.textContent = label(i);
      el.appendChild(option);
    }
    el.addEventListener("change", () => onChange(Number(el.value)));
    return el;
  }

  function tokenText(text) {
    return text.replace(/\n/g, "↵\n").replace(/\t/g, "⇥");
  }

  function renderViewer() {
    if (!view.available) return;
    const { layer, head, sample, query } = state;
    const tokens = view.samples[sample].tokens;
    const { weights: w, visible } = weights(layer, head, sample, query);
    let max = 0;
    for (let j = 0; j < w.length; j++) if (visible[j] && w[j] > max) max = w[j];
    const box = document.getElementById("tokens");
    box.textContent = "";
    const fragment = document.createDocumentFragment();
    for (let j = 0; j < tokens.length; j++) {
      const span = document.createElement("span");
      span.className = "tok";
      span.dataset.pos = String(j);
      span.textContent = tokenText(tokens[j]);
      if (visible[j]) {
        span.dataset.weight = String(w[j]);
        const alpha = max > 0 ? w[j] / max : 0;
        span.style.background = `rgba(194, 65, 12, ${alpha.toFixed(4)})`;
        if (alpha > 0.55) span.style.color = "#fff";
        span.title = `key ${j} ${JSON.stringify(tokens[j])}: weight ${w[j].toPrecision(4)}`;
      } else {
        span.classList.add("hidden-key");
        span.title = `key ${j} ${JSON.stringify(tokens[j])}: not visible from query ${query}`;
      }
      if (j === query) span.classList.add("query");
      span.addEventListener("click", () => select({ query: j }));
      fragment.appendChild(span);
    }
    box.appendChild(fragment);
    const kv = view.kv_head[head];
    document.getElementById("viewer-title").textContent =
      `Layer ${layer} · head ${head} (KV head ${kv}) · sample ${sample} · query token ${query} ${JSON.stringify(tokens[query])}`;
    const how = view.layers[layer];
    const rule = [`scaling ${how.scaling.toPrecision(6)}`, how.causal ? "causal" : "bidirectional"];
    if (how.softcap) rule.push(`softcap ${how.softcap}`);
    if (how.window) rule.push(`sliding window ${how.window}`);
    if (how.sinks) rule.push(`learned sink logit ${how.sinks[head].toPrecision(4)} in the softmax`);
    if (how.visible) rule.push("the model's custom mask (chunked or document attention)");
    document.getElementById("viewer-note").textContent =
      `${view.model}: softmax(q·k × scaling) of this head computed in the page from the embedded post-RoPE q and k ` +
      `(${rule.join(", ")}). Background intensity = weight / the row's largest weight; click a token to make it the query.` +
      (view.note ? ` Note: ${view.note}.` : "");
    const order = Array.from(w.keys()).filter((j) => visible[j]).sort((a, b) => w[b] - w[a]).slice(0, 5);
    document.getElementById("viewer-top").textContent = "Largest weights: " +
      order.map((j) => `${j} ${JSON.stringify(tokens[j])} ${w[j].toFixed(3)}`).join(" · ");
  }

  function select(change) {
    Object.assign(state, change);
    if (view.available) {
      state.query = Math.min(state.query, view.n_tokens - 1);
      document.getElementById("layer-select").value = String(state.layer);
      document.getElementById("head-select").value = String(state.head);
      document.getElementById("sample-select").value = String(state.sample);
    }
    for (const row of cells) for (const cell of row) cell.classList.remove("selected");
    if (cells[state.layer] && cells[state.layer][state.head]) cells[state.layer][state.head].classList.add("selected");
    renderViewer();
  }

  function buildViewer() {
    if (!view.available) {
      const el = document.getElementById("viewer-unavailable");
      el.hidden = false;
      el.textContent = `The attention viewer is not available: ${view.reason}.`;
      return;
    }
    document.getElementById("viewer-body").hidden = false;
    fillSelect("layer-select", view.n_layers, (i) => `L${i}`, (v) => select({ layer: v }));
    fillSelect("head-select", view.n_heads, (i) => `H${i} (KV ${view.kv_head[i]})`, (v) => select({ head: v }));
    fillSelect("sample-select", view.samples.length, (i) => `window ${i}`, (v) => select({ sample: v }));
    state.query = view.n_tokens - 1;
  }

  buildGrid();
  paintGrid();
  buildViewer();
  select({});

  // For scripts and tests: the state, the selection and the weight computation.
  window.spectraReport = { data: data, state: state, select: select, weights: weights };
})();
