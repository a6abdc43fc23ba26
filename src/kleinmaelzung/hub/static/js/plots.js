// Live plots with uPlot: several channels of several instruments on one plot, pause and
// resume, zoom (drag across the plot) and pan back into history, CSV and PNG downloads.

import { clock, download, fill, h, stamp } from "./dom.js";
import { loadHistory } from "./history.js";

const WINDOWS = [["1 min", 60], ["10 min", 600], ["1 h", 3600]];
const PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];
const FRAME_MS = 33; // at most 30 redraws a second

let uPlotModule = null;
async function uPlotClass() {
  if (!uPlotModule) {
    // Loaded with the plots page only: the overview does not pay for it.
    const link = h("link", { rel: "stylesheet", href: "/static/vendor/uPlot.min.css" });
    document.head.append(link);
    uPlotModule = (await import("../vendor/uPlot.esm.js")).default;
  }
  return uPlotModule;
}

export function mount(section, { lab }) {
  const picker = h("form", { class: "series-picker", "aria-label": "Channels to plot" });
  const windowSelect = h("select", { id: "plot-window", "aria-label": "Time window" },
    WINDOWS.map(([label, s]) => h("option", { value: s, selected: s === 600 }, label)));
  const pause = h("button", { type: "button", id: "plot-pause", "aria-pressed": "false" }, "Pause");
  const live = h("button", { type: "button", class: "quiet", id: "plot-live", disabled: true }, "Back to live");
  const earlier = h("button", { type: "button", class: "quiet", title: "Pan back by half the view" }, "◀ Earlier");
  const later = h("button", { type: "button", class: "quiet", title: "Pan forward by half the view" }, "Later ▶");
  const zoomOut = h("button", { type: "button", class: "quiet", title: "Show twice the time" }, "Zoom out");
  const csv = h("button", { type: "button", class: "quiet", id: "plot-csv" }, "CSV");
  const png = h("button", { type: "button", class: "quiet", id: "plot-png" }, "PNG");
  const box = h("div", { class: "plot-box", id: "plot" });
  const status = h("p", { class: "plot-status", role: "status", id: "plot-status" });
  fill(section,
    h("div", { class: "toolbar" }, h("h1", {}, "Plots"), windowSelect, pause, earlier, later, zoomOut, live,
      h("span", { class: "spacer" }), csv, png),
    h("div", { class: "plot-layout" }, picker, h("div", {}, box, status,
      h("p", { class: "hint" }, "Drag across the plot to zoom in; double-click to zoom back out. ",
        "Earlier data comes from the hub's history API when it has one."))));

  const selected = new Set();
  const history = new Map(); // key -> {t, v}: samples from before this page's live ones
  let chart = null;
  let paused = false;
  let inspecting = null; // {min, max} while the user looks at a range of their own
  let dirty = true;
  let visible = false;
  let lastFrame = 0;
  let historyNote = "";
  let pickerShape = "";

  function numericChannels(entry) {
    const declared = (entry.record.channels || []).map((c) => c.name);
    const seen = Object.entries(entry.values).filter(([, v]) => typeof v === "number" || typeof v === "boolean")
      .map(([name]) => name);
    return [...new Set([...declared, ...seen])];
  }

  function unitOf(key) {
    const [id, channel] = splitKey(key);
    const entry = lab.instruments.get(id);
    return entry?.record.channels?.find((c) => c.name === channel)?.unit || "";
  }

  function renderPicker() {
    const ids = [...lab.instruments.keys()].sort();
    const shape = ids.map((id) => `${id}:${numericChannels(lab.instruments.get(id)).join(",")}`).join(";");
    if (shape === pickerShape) return;
    pickerShape = shape;
    fill(picker, ids.map((id) => {
      const channels = numericChannels(lab.instruments.get(id));
      if (!channels.length) return null;
      return h("fieldset", {}, h("legend", {}, id), channels.map((channel) => {
        const key = `${id}.${channel}`;
        const unit = unitOf(key);
        return h("label", {},
          h("input", { type: "checkbox", value: key, checked: selected.has(key), "data-series": key }),
          unit ? `${channel} [${unit}]` : channel);
      }));
    }));
  }

  picker.addEventListener("change", (event) => {
    const key = event.target.value;
    if (event.target.checked) selected.add(key);
    else selected.delete(key);
    rebuild();
  });

  function keys() {
    return [...selected].sort();
  }

  /**
   * One series' samples in [from, to], from history (earlier) and from what came live.
   * Beyond four points per pixel column, each column keeps its minimum and maximum, in
   * one pass over the held samples without copying them: an hour at 50 Hz draws as
   * fast as a minute, and no peak is lost.
   */
  function points(key, from, to, columns = 0) {
    const live = lab.series.get(key) || EMPTY;
    const past = history.get(key) || EMPTY;
    const firstLive = live.t.length ? live.t[0] : Infinity;
    const segments = [
      [past, lowerBound(past.t, from), Math.min(upperBound(past.t, to), lowerBound(past.t, firstLive))],
      [live, lowerBound(live.t, from), upperBound(live.t, to)],
    ];
    const count = segments.reduce((n, [, a, b]) => n + Math.max(0, b - a), 0);
    const t = [];
    const v = [];
    if (!columns || count <= columns * 4) {
      for (const [series, a, b] of segments) {
        for (let i = a; i < b; i++) {
          t.push(series.t[i]);
          v.push(series.v[i]);
        }
      }
      return { t, v };
    }
    const width = (to - from) / columns;
    let column = -1;
    let loT = 0;
    let loV = 0;
    let hiT = 0;
    let hiV = 0;
    const flush = () => {
      if (column < 0) return;
      if (loT === hiT) {
        t.push(loT);
        v.push(loV);
      } else if (loT < hiT) {
        t.push(loT, hiT);
        v.push(loV, hiV);
      } else {
        t.push(hiT, loT);
        v.push(hiV, loV);
      }
    };
    for (const [series, a, b] of segments) {
      const st = series.t;
      const sv = series.v;
      for (let i = a; i < b; i++) {
        const c = Math.floor((st[i] - from) / width);
        const value = sv[i];
        if (c !== column) {
          flush();
          column = c;
          loT = hiT = st[i];
          loV = hiV = value;
        } else if (value < loV) {
          loT = st[i];
          loV = value;
        } else if (value > hiV) {
          hiT = st[i];
          hiV = value;
        }
      }
    }
    flush();
    return { t, v };
  }

  // Live, with many samples in view: the columns (on an absolute time grid, so that they
  // stay put as the window slides) are kept between frames, and each frame adds only
  // the samples that arrived since. A frame then costs the columns, not the samples.
  const columnCaches = new Map();

  function cachedColumns(key, from, width) {
    const live = lab.series.get(key) || EMPTY;
    const past = history.get(key) || EMPTY;
    const n = live.t.length;
    let c = columnCaches.get(key);
    if (
      !c || c.width !== width || c.past !== past || c.live !== live || c.done > n
      || (c.done > 0 && live.t[c.done - 1] !== c.lastT) // the oldest samples were let go
    ) {
      c = { width, past, live, done: 0, lastT: null, col: [], loT: [], loV: [], hiT: [], hiV: [] };
      columnCaches.set(key, c);
      const firstLive = n ? live.t[0] : Infinity;
      const end = lowerBound(past.t, firstLive);
      for (let i = lowerBound(past.t, from); i < end; i++) addToColumn(c, past.t[i], past.v[i]);
      c.done = lowerBound(live.t, from);
    }
    for (let i = c.done; i < n; i++) addToColumn(c, live.t[i], live.v[i]);
    c.done = n;
    c.lastT = n ? live.t[n - 1] : null;
    const first = lowerBound(c.col, Math.floor(from / width));
    if (first > 0) for (const array of [c.col, c.loT, c.loV, c.hiT, c.hiV]) array.splice(0, first);
    const t = [];
    const v = [];
    for (let j = 0; j < c.col.length; j++) {
      if (c.loT[j] === c.hiT[j]) {
        t.push(c.loT[j]);
        v.push(c.loV[j]);
      } else if (c.loT[j] < c.hiT[j]) {
        t.push(c.loT[j], c.hiT[j]);
        v.push(c.loV[j], c.hiV[j]);
      } else {
        t.push(c.hiT[j], c.loT[j]);
        v.push(c.hiV[j], c.loV[j]);
      }
    }
    return { t, v };
  }

  function addToColumn(c, time, value) {
    const column = Math.floor(time / c.width);
    const last = c.col.length - 1;
    if (last >= 0 && c.col[last] === column) {
      if (value < c.loV[last]) {
        c.loV[last] = value;
        c.loT[last] = time;
      } else if (value > c.hiV[last]) {
        c.hiV[last] = value;
        c.hiT[last] = time;
      }
    } else if (last < 0 || column > c.col[last]) {
      c.col.push(column);
      c.loT.push(time);
      c.loV.push(value);
      c.hiT.push(time);
      c.hiV.push(value);
    }
  }

  /** How many samples of `key` are held in [from, to]. */
  function heldIn(key, from, to) {
    const live = lab.series.get(key) || EMPTY;
    const past = history.get(key) || EMPTY;
    return upperBound(live.t, to) - lowerBound(live.t, from)
      + Math.max(0, upperBound(past.t, to) - lowerBound(past.t, from));
  }

  /** uPlot's aligned data: one time axis (the union), one value array per series (null where none). */
  function aligned(from, to, decimate = true) {
    const columns = decimate ? Math.max(200, box.clientWidth || 800) : 0;
    const liveWidth = Number(windowSelect.value) / columns;
    const parts = keys().map((key) => (
      decimate && !inspecting && heldIn(key, from, to) > columns * 4
        ? cachedColumns(key, from, liveWidth)
        : points(key, from, to, columns)));
    const x = [];
    const ys = parts.map(() => []);
    const at = parts.map(() => 0);
    for (;;) {
      let next = Infinity;
      for (let s = 0; s < parts.length; s++) if (at[s] < parts[s].t.length) next = Math.min(next, parts[s].t[at[s]]);
      if (next === Infinity) break;
      x.push(next);
      for (let s = 0; s < parts.length; s++) {
        if (at[s] < parts[s].t.length && parts[s].t[at[s]] === next) ys[s].push(parts[s].v[at[s]++]);
        else ys[s].push(null);
      }
    }
    return [x, ...ys];
  }

  function range() {
    if (inspecting) return inspecting;
    const now = Date.now() / 1000;
    const span = Number(windowSelect.value);
    // A page just opened holds seconds, not the window: show what there is (a minute at
    // least) rather than a line squeezed against the right edge.
    let earliest = now;
    for (const key of selected) {
      const past = history.get(key)?.t[0];
      const first = lab.series.get(key)?.t[0];
      earliest = Math.min(earliest, past ?? Infinity, first ?? Infinity);
    }
    return { min: Math.max(now - span, Math.min(earliest, now - 10)), max: now };
  }

  function colors() {
    const style = getComputedStyle(document.documentElement);
    return { text: style.getPropertyValue("--muted").trim(), grid: style.getPropertyValue("--line").trim() };
  }

  async function rebuild() {
    const UPlot = await uPlotClass();
    if (chart) {
      chart.destroy();
      chart = null;
    }
    box.replaceChildren();
    columnCaches.clear();
    const chosen = keys();
    if (!chosen.length) {
      box.append(h("p", { class: "hint" }, "Choose channels on the left to plot them."));
      updateStatus();
      return;
    }
    const units = [...new Set(chosen.map(unitOf))];
    const { text, grid } = colors();
    const scaleOf = (unit) => `u:${unit}`;
    const axes = [{
      stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid },
      // Local clock time; the date too once the view spans days.
      values: (u, splits) => {
        const span = u.scales.x.max - u.scales.x.min;
        return splits.map((v) => (span > 86400 ? stamp(v).slice(5, 16) : clock(v)));
      },
    }];
    units.slice(0, 2).forEach((unit, i) => axes.push({
      scale: scaleOf(unit), label: unit || "value", side: i === 0 ? 3 : 1, stroke: text,
      grid: { show: i === 0, stroke: grid, width: 1 }, ticks: { stroke: grid }, size: 60,
    }));
    const scales = { x: { time: true } };
    for (const unit of units) scales[scaleOf(unit)] = { auto: true };
    const { min, max } = range();
    chart = new UPlot({
      width: Math.max(300, box.clientWidth - 16),
      height: Math.max(220, Math.min(480, Math.round(window.innerHeight * 0.55))),
      scales,
      axes,
      series: [
        { label: "time", value: (u, v) => (v === null ? "–" : stamp(v, true)) },
        ...chosen.map((key, i) => ({
          label: unitOf(key) ? `${key} [${unitOf(key)}]` : key,
          scale: scaleOf(unitOf(key)),
          stroke: PALETTE[i % PALETTE.length],
          width: 1.5,
          spanGaps: true,
          points: { show: false },
        })),
      ],
      // A drag across the plot selects a range; we zoom to it ourselves (and fetch history).
      cursor: { drag: { x: true, y: false, setScale: false }, bind: { dblclick: () => null } },
      hooks: {
        setSelect: [(u) => {
          if (u.select.width < 2) return;
          const lo = u.posToVal(u.select.left, "x");
          const hi = u.posToVal(u.select.left + u.select.width, "x");
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          enterInspect(lo, hi);
        }],
      },
    }, aligned(min, max), box);
    chart.over.addEventListener("dblclick", () => zoom(2));
    dirty = true;
    draw(true);
    backfill();
  }

  /** Fill the live window with what the hub's history holds from before this page opened. */
  async function backfill() {
    const now = Date.now() / 1000;
    await fetchHistory(now - Number(windowSelect.value), now);
    dirty = true;
  }

  function draw(force = false) {
    if (!chart || (!force && (paused || inspecting))) return;
    const { min, max } = range();
    chart.setData(aligned(min, max), false);
    chart.setScale("x", { min, max });
    dirty = false;
    updateStatus();
  }

  function updateStatus() {
    const counts = keys().map((key) => (lab.series.get(key)?.t.length || 0) + (history.get(key)?.t.length || 0));
    const total = counts.reduce((a, b) => a + b, 0);
    const mode = inspecting ? "inspecting a range" : paused ? "paused" : "live";
    status.textContent = `${mode} · ${keys().length} series · ${total} points held${historyNote ? " · " + historyNote : ""}`;
    status.dataset.points = String(total);
  }

  async function enterInspect(min, max) {
    inspecting = { min, max };
    live.disabled = false;
    await fetchHistory(min, max);
    chart?.setData(aligned(min, max), false);
    chart?.setScale("x", { min, max });
    updateStatus();
  }

  function leaveInspect() {
    inspecting = null;
    live.disabled = true;
    draw(true);
  }

  async function fetchHistory(min, max) {
    for (const key of keys()) {
      const liveSeries = lab.series.get(key);
      const firstLive = liveSeries?.t.length ? liveSeries.t[0] : Date.now() / 1000;
      if (min >= firstLive) continue;
      const [id, channel] = splitKey(key);
      const answer = await loadHistory(id, channel, min, Math.min(max, firstLive), 2000);
      if (!answer.available) {
        historyNote = "no history API on this hub yet: only what this page received live";
        return;
      }
      historyNote = answer.error ? `history: ${answer.error}` : "";
      if (!answer.error) history.set(key, { t: answer.t, v: answer.v });
    }
  }

  function zoom(factor) {
    const { min, max } = range();
    const mid = (min + max) / 2;
    const half = ((max - min) * factor) / 2;
    enterInspect(mid - half, Math.min(mid + half, Date.now() / 1000));
  }

  function pan(fraction) {
    const { min, max } = range();
    const shift = (max - min) * fraction;
    enterInspect(min + shift, max + shift);
  }

  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused && !inspecting) draw(true);
    updateStatus();
  });
  live.addEventListener("click", leaveInspect);
  earlier.addEventListener("click", () => pan(-0.5));
  later.addEventListener("click", () => pan(0.5));
  zoomOut.addEventListener("click", () => zoom(2));
  windowSelect.addEventListener("change", () => {
    draw(true);
    backfill();
  });

  csv.addEventListener("click", () => {
    if (!chart) return;
    const { min, max } = chart.scales.x;
    const data = aligned(min, max, false); // every sample in view, not the drawn extremes
    const names = keys().map((key) => (unitOf(key) ? `${key} [${unitOf(key)}]` : key));
    const lines = [["time", "unix_s", ...names].map(csvField).join(",")];
    for (let i = 0; i < data[0].length; i++) {
      const t = data[0][i];
      if (t < min || t > max) continue;
      const row = [new Date(t * 1000).toISOString(), t.toFixed(3)];
      for (let s = 1; s < data.length; s++) row.push(data[s][i] === null ? "" : String(data[s][i]));
      lines.push(row.map(csvField).join(","));
    }
    download(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }), `kmz-plot-${fileStamp(min)}.csv`);
  });

  png.addEventListener("click", () => {
    if (!chart) return;
    const source = chart.ctx.canvas;
    const legendHeight = 22 * Math.ceil(keys().length / 3) + 12;
    const canvas = document.createElement("canvas");
    canvas.width = source.width;
    canvas.height = source.height + legendHeight * devicePixelRatio;
    const ctx = canvas.getContext("2d");
    const style = getComputedStyle(document.documentElement);
    ctx.fillStyle = style.getPropertyValue("--panel").trim() || "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.drawImage(source, 0, 0);
    ctx.scale(devicePixelRatio, devicePixelRatio);
    ctx.font = "13px system-ui, sans-serif";
    keys().forEach((key, i) => {
      const x = 10 + (i % 3) * (source.width / devicePixelRatio / 3);
      const y = source.height / devicePixelRatio + 18 + Math.floor(i / 3) * 22;
      ctx.fillStyle = PALETTE[i % PALETTE.length];
      ctx.fillRect(x, y - 9, 14, 4);
      ctx.fillStyle = style.getPropertyValue("--text").trim() || "#000";
      ctx.fillText(unitOf(key) ? `${key} [${unitOf(key)}]` : key, x + 20, y - 3);
    });
    canvas.toBlob((blob) => download(blob, `kmz-plot-${fileStamp(chart.scales.x.min)}.png`), "image/png");
  });

  lab.addEventListener("change", (event) => {
    if (event.detail.structural && visible) renderPicker();
    for (const key of selected) {
      if (event.detail.ids.has(splitKey(key)[0])) dirty = true;
    }
  });

  let frameMs = FRAME_MS;
  function frame(ts) {
    if (!visible) return;
    if (dirty && ts - lastFrame >= frameMs) {
      lastFrame = ts;
      const started = performance.now();
      draw();
      // A draw that takes long (many points, a slow machine) is repeated less often,
      // so that the page stays responsive: at most a third of the time goes to it.
      frameMs = Math.max(FRAME_MS, 3 * (performance.now() - started));
    }
    requestAnimationFrame(frame);
  }

  new ResizeObserver(() => {
    if (chart) chart.setSize({ width: Math.max(300, box.clientWidth - 16), height: chart.height });
  }).observe(box);

  return {
    show(params) {
      visible = true;
      renderPicker();
      const [id] = params;
      if (id && lab.instruments.has(id)) {
        const wanted = numericChannels(lab.instruments.get(id)).map((ch) => `${id}.${ch}`);
        if (wanted.some((k) => !selected.has(k))) {
          for (const key of wanted) selected.add(key);
          pickerShape = "";
          renderPicker();
          rebuild();
        }
      } else if (!chart) {
        rebuild();
      }
      requestAnimationFrame(frame);
    },
    hide() {
      visible = false;
    },
  };
}

function splitKey(key) {
  // Channel names hold no dot; instrument ids may.
  const dot = key.lastIndexOf(".");
  return [key.slice(0, dot), key.slice(dot + 1)];
}

const EMPTY = { t: [], v: [] };

function upperBound(array, value) {
  let lo = 0;
  let hi = array.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (array[mid] <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function lowerBound(array, value) {
  let lo = 0;
  let hi = array.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (array[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function csvField(text) {
  return /[",\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function fileStamp(ts) {
  return stamp(ts).replace(/[: ]/g, "-");
}
