// The calibration page: the hub's records with their certificates, and a run at the bench.
//
// #/calibration lists the records and starts a run; #/calibration/NUMBER is one record:
// while it is a draft, the operator is told what to apply at each point, sees the live
// reading and whether it is stable, and captures it (the hub checks stability again on
// its own log and keeps the samples behind it) or enters it by hand (marked so); then
// records the conditions, reviews the figures and signs. An admin who did not perform it
// approves it (a failed one only as a failure: applied to nothing) and downloads the PDF.
// The same REST routes as `kmz calibration run` (hub/calibration_routes.py); nothing else.

import { api, fill, formatValue, h } from "./dom.js";

const BASE = "/api/calibrations";
/** Live samples kept per run for the stability indicator (the CLI keeps 64 too). */
const KEPT = 64;
const PHASE_NAMES = { as_found: "as-found", as_left: "as-left" };

function post(path, body) {
  return api(`${BASE}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body ?? {}),
  });
}

/** Whether the newest samples meet the procedure's criterion (calibration/stability.py). */
export function isStable(samples, criterion) {
  if (!samples.length) return false;
  if (criterion.flag) return samples[samples.length - 1].stable === true;
  if (!criterion.window || criterion.max_spread === undefined || criterion.max_spread === null) return true;
  if (samples.length < criterion.window) return false;
  const window = samples.slice(-criterion.window).map((s) => s.value);
  const slack = 1e-12 * Math.max(...window.map(Math.abs));
  return Math.max(...window) - Math.min(...window) <= criterion.max_spread + slack;
}

/** The next reading the record asks for in `phase`: {index, have, want}, or null when done. */
export function nextPoint(record, phase) {
  const procedure = record.procedure;
  const taken = new Map((record[phase] || []).map((p) => [p.index ?? 0, (p.readings ?? []).length]));
  for (let index = 0; index < procedure.points.length; index++) {
    // Defaults are left out of the JSON (calibration/model.py): 3 repetitions.
    const want = procedure.points[index].repetitions || procedure.repetitions || 3;
    const have = taken.get(index) || 0;
    if (have < want) return { index, have, want };
  }
  return null;
}

export function mount(section, context) {
  const { link, grant } = context;
  const body = h("div", { id: "calibration" });
  fill(section, body);
  let run = null; // the record on screen and its live samples
  let listener = null;

  function stopWatching() {
    if (listener) link.removeEventListener("data", listener);
    listener = null;
  }

  function watch(instrument, channel, flag) {
    stopWatching();
    listener = (event) => {
      if (!run) return;
      for (const sample of event.detail.samples) {
        if (sample.instrument !== instrument) continue;
        const value = sample.values[channel];
        if (typeof value !== "number") continue;
        const stable = flag ? sample.values[flag] : undefined;
        run.samples.push({ ts: sample.ts, value, stable: typeof stable === "boolean" ? stable : null,
          corrected: sample.corrected?.[channel] });
        if (run.samples.length > KEPT) run.samples.shift();
      }
      showLive();
    };
    link.addEventListener("data", listener);
  }

  // --- the list and a new run ---------------------------------------------------------

  async function showList() {
    stopWatching();
    run = null;
    fill(body, h("div", { class: "toolbar" }, h("h1", {}, "Calibration")), h("p", {}, "Loading…"));
    let records;
    try {
      records = await api(BASE);
    } catch (error) {
      fill(body, h("h1", {}, "Calibration"), h("p", { class: "error" }, `The hub's calibrations: ${error.message}`));
      return;
    }
    const table = records.length ? h("div", { class: "table-wrap" }, h("table", { id: "calibration-table" },
      h("thead", {}, h("tr", {}, ["certificate", "instrument", "calibrated on", "state", ""]
        .map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, records.map((r) => h("tr", { dataset: { number: r.certificate_number } },
        h("td", {}, h("a", { href: `#/calibration/${encodeURIComponent(r.certificate_number)}` },
          `${r.certificate_number}/${r.revision}`)),
        h("td", {}, r.instrument_id),
        h("td", {}, String(r.calibrated_on)),
        h("td", {}, r.approved ? "approved" : "draft"),
        h("td", {}, h("a", { href: pdfHref(r.certificate_number, r.revision), download: `${r.certificate_number}-${r.revision}.pdf` }, "PDF")))))))
      : h("p", {}, "No calibration on this hub yet.");
    fill(body, h("div", { class: "toolbar" }, h("h1", {}, "Calibration")), table,
      grant.atLeast("operator") ? await startForm() : null);
  }

  async function startForm() {
    let instruments = [];
    let procedures = [];
    let standards = [];
    try {
      [instruments, procedures, standards] = await Promise.all(
        ["instruments", "procedures", "standards"].map((what) => api(`${BASE}/${what}`)));
    } catch (error) {
      return h("p", { class: "error" }, `Cannot start a run: ${error.message}`);
    }
    instruments = instruments.filter((i) => grant.mayWatch(i.id));
    if (!instruments.length || !procedures.length) {
      return h("p", { class: "hint" }, "To start a run here, an admin registers the instrument and a procedure first (",
        h("code", {}, "kmz calibration register"), ").");
    }
    const message = h("p", { class: "message", role: "alert", id: "calibration-start-message" });
    const instrument = h("select", { id: "calibration-instrument", name: "instrument" },
      instruments.map((i) => h("option", { value: i.id }, `${i.id} (${i.unit})`)));
    const procedure = h("select", { id: "calibration-procedure", name: "procedure" });
    const matching = () => {
      const unit = instruments.find((i) => i.id === instrument.value)?.unit;
      fill(procedure, procedures.filter((p) => p.unit === unit)
        .map((p) => h("option", { value: p.name }, `${p.name} v${p.version}: ${p.title}`)));
    };
    instrument.addEventListener("change", matching);
    matching();
    const today = new Date().toISOString().slice(0, 10);
    const picks = standards.map((s) => h("label", {},
      h("input", { type: "checkbox", name: "standard", value: s.id, disabled: s.due < today }),
      `${s.id}: ${s.description}`, s.due < today ? h("span", { class: "error" }, ` (expired ${s.due})`) : null));
    const form = h("form", { id: "calibration-start", class: "command-form" },
      h("h2", {}, "Start a run"),
      h("div", { class: "args" },
        h("label", { for: "calibration-instrument" }, "Instrument"), instrument,
        h("label", { for: "calibration-procedure" }, "Procedure"), procedure),
      picks.length ? h("fieldset", {}, h("legend", {}, "Reference standards used"), picks) : null,
      h("div", {}, h("button", { type: "submit" }, "Start")), message);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      message.textContent = "starting…";
      try {
        const view = await post("", {
          instrument: instrument.value,
          procedure: procedure.value,
          standards: [...form.querySelectorAll("input[name=standard]:checked")].map((i) => i.value),
        });
        location.hash = `#/calibration/${encodeURIComponent(view.record.certificate_number)}`;
      } catch (error) {
        message.textContent = `${error.code}: ${error.message}`;
        message.classList.add("error");
      }
    });
    return form;
  }

  // --- one record ------------------------------------------------------------------------

  async function showRecord(number) {
    let view;
    try {
      view = await api(`${BASE}/${encodeURIComponent(number)}`);
    } catch (error) {
      fill(body, h("h1", {}, "Calibration"), h("p", { class: "error" }, `${number}: ${error.message}`),
        h("p", {}, h("a", { href: "#/calibration" }, "All calibrations")));
      return;
    }
    const sameRun = run && run.number === number;
    run = { number, view, samples: sameRun ? run.samples : [], applied: sameRun ? run.applied : null,
      phase: sameRun ? run.phase : ((view.record.as_left ?? []).length || view.record.adjustment ? "as_left" : "as_found") };
    const record = view.record;
    if (!sameRun) watch(record.instrument.id, record.instrument.channel, (record.procedure.stability ?? {}).flag);
    render();
  }

  function state(view) {
    if (view.approved) return "approved";
    return (view.record.signatures ?? []).some((s) => s.meaning === "performed") ? "signed" : "draft";
  }

  function render() {
    const { view } = run;
    const record = view.record;
    const procedure = record.procedure;
    const current = state(view);
    const header = h("div", { class: "toolbar" },
      h("h1", {}, `Calibration ${record.certificate_number}/${record.revision ?? 1}`),
      h("span", { class: "badge", id: "calibration-state", dataset: { state: current === "approved" ? "online" : "" } }, current),
      view.verdict ? h("span", { id: "calibration-verdict", class: view.verdict === "pass" ? "" : "error" }, `result: ${view.verdict}`) : null,
      h("span", { class: "spacer" }),
      h("a", { href: "#/calibration" }, "All calibrations"));
    const make = [record.instrument.manufacturer, record.instrument.model].filter(Boolean).join(" ");
    const about = h("p", {}, `${record.instrument.id}${make ? ` (${make})` : ""}, `
      + `procedure ${procedure.name} v${procedure.version}: ${procedure.title}`);
    const operating = current === "draft" && grant.atLeast("operator");
    fill(body, header, about,
      operating ? stepPanel() : null,
      pointsTable(view),
      environmentPanel(operating),
      actions(current),
      h("p", { class: "message", role: "alert", id: "calibration-message" }));
    showLive();
  }

  function say(text, isError = false) {
    const el = document.getElementById("calibration-message");
    if (!el) return;
    el.textContent = text;
    el.classList.toggle("error", isError);
  }

  async function act(step) {
    say("…");
    try {
      const view = await step();
      if (view && view.record) run.view = view;
      render();
      return view;
    } catch (error) {
      say(`${error.code}: ${error.message}`, true);
      return null;
    }
  }

  /** What to do next at the bench: apply, watch, capture; or adjust; or go on to review. */
  function stepPanel() {
    const record = run.view.record;
    const procedure = record.procedure;
    const unit = procedure.unit;
    const next = nextPoint(record, run.phase);
    const panel = h("section", { class: "command-form", id: "calibration-step", "aria-live": "polite" });
    if (!next) {
      if (run.phase === "as_found") {
        const text = h("input", { id: "calibration-adjustment", placeholder: "what was adjusted", size: 40 });
        fill(panel, h("h2", {}, `${PHASE_NAMES.as_found} readings complete`),
          h("p", {}, "Review and sign below, or adjust the instrument and measure it again as left:"),
          h("div", { class: "toolbar" }, text, h("button", { type: "button", class: "quiet", id: "calibration-adjust",
            onclick: () => act(async () => {
              const view = await post(`/${run.number}/adjustment`, { text: text.value.trim() || "none" });
              run.phase = "as_left";
              run.applied = null;
              return view;
            }) }, "Adjusted: measure as left")));
      } else {
        fill(panel, h("h2", {}, `${PHASE_NAMES.as_left} readings complete`), h("p", {}, "Review and sign below."));
      }
      return panel;
    }
    const point = procedure.points[next.index];
    const key = `${run.phase}/${next.index}`;
    const applied = run.applied && run.applied.key === key ? run.applied : null;
    const title = h("h2", { id: "calibration-point" },
      `[${PHASE_NAMES[run.phase]}] point ${next.index + 1}/${procedure.points.length}: ${formatValue(point.nominal)} ${unit}`
      + ` (reading ${next.have + 1}/${next.want})`);
    const existing = (record[run.phase] || []).find((p) => (p.index ?? 0) === next.index);
    const reference = h("input", { id: "calibration-reference", type: "number", step: "any", inputmode: "decimal",
      value: String(applied?.reference ?? existing?.reference_value ?? point.nominal), disabled: Boolean(applied || existing) });
    if (!applied) {
      fill(panel, title,
        h("p", { id: "calibration-apply" }, "Apply: ", h("strong", {}, point.apply || `${formatValue(point.nominal)} ${unit}`)),
        h("div", { class: "args" }, h("label", { for: "calibration-reference" }, `Reference value (${unit})`), reference),
        h("div", {}, h("button", { type: "button", id: "calibration-applied", onclick: () => {
          const seen = run.samples.length ? run.samples[run.samples.length - 1].ts : null;
          // Samples from before this moment show the previous load: the hub takes newer
          // ones only (the instrument's clock, as the samples carry it).
          run.applied = { key, reference: Number(reference.value), notBefore: seen === null ? Date.now() / 1000 : seen + 1e-6 };
          render();
        } }, "Applied: read it")));
      return panel;
    }
    const manual = h("input", { id: "calibration-manual", type: "number", step: "any", inputmode: "decimal", placeholder: unit });
    const note = h("input", { id: "calibration-manual-note", placeholder: "why by hand" });
    const reading = {
      phase: run.phase, index: next.index,
      ...(existing ? {} : { reference_value: applied.reference }),
    };
    fill(panel, title,
      h("p", {}, "Applied: ", h("strong", {}, point.apply || `${formatValue(point.nominal)} ${unit}`),
        `, reference ${formatValue(applied.reference)} ${unit}`),
      h("div", { class: "live" },
        h("span", { class: "live-value", id: "calibration-live" }, "–"), h("span", { class: "unit" }, unit),
        h("span", { class: "stability", id: "calibration-stability", dataset: { stable: "no" } }, "waiting"),
        h("span", { class: "hint", id: "calibration-stability-detail" })),
      h("div", { class: "toolbar" },
        h("button", { type: "button", id: "calibration-capture", disabled: true, onclick: () => act(async () => {
          const view = await post(`/${run.number}/capture`, { ...reading, not_before: applied.notBefore });
          say(`captured ${formatValue(view.captured.value)} ${unit}`);
          return view;
        }) }, "Capture"),
        h("span", { class: "hint" }, "or by hand:"), manual, note,
        h("button", { type: "button", class: "quiet", id: "calibration-enter", onclick: () => act(async () => {
          if (manual.value === "") throw Object.assign(new Error("type the reading first"), { code: "invalid_arguments" });
          return post(`/${run.number}/readings`, { ...reading, value: Number(manual.value), note: note.value.trim() });
        }) }, "Enter by hand")));
    return panel;
  }

  /** The live value and the stability indicator, updated with every sample. */
  function showLive() {
    const value = document.getElementById("calibration-live");
    if (!value || !run?.applied) return;
    const criterion = run.view.record.procedure.stability ?? {};
    const fresh = run.samples.filter((s) => s.ts >= run.applied.notBefore);
    const newest = fresh[fresh.length - 1];
    // To the instrument's display step, as the operator reads it off the display.
    const step = run.view.record.instrument.resolution;
    const decimals = step > 0 ? Math.min(10, Math.max(0, -Math.floor(Math.log10(step) + 1e-9))) : 6;
    value.textContent = newest ? newest.value.toFixed(decimals) : "–";
    const stable = isStable(fresh, criterion);
    const indicator = document.getElementById("calibration-stability");
    indicator.dataset.stable = stable ? "yes" : "no";
    indicator.textContent = !newest ? "waiting for a reading" : stable ? "stable" : "settling";
    const detail = document.getElementById("calibration-stability-detail");
    if (criterion.flag) detail.textContent = `(the instrument's ${criterion.flag} flag)`;
    else if (criterion.window) {
      const window = fresh.slice(-criterion.window).map((s) => s.value);
      detail.textContent = window.length >= criterion.window
        ? `(spread ${formatValue(Math.max(...window) - Math.min(...window))} of at most ${formatValue(criterion.max_spread)})`
        : `(${window.length}/${criterion.window} samples)`;
    }
    document.getElementById("calibration-capture").disabled = !stable;
  }

  function pointsTable(view) {
    if (!view.points?.length) return null;
    const unit = view.record.procedure.unit;
    return h("div", {},
      h("h2", {}, "Results"),
      h("div", { class: "table-wrap" }, h("table", { id: "calibration-points" },
        h("thead", {}, h("tr", {}, ["phase", "nominal", "reference", "n", "mean", "error", "s", "U", "tolerance", "result", "by hand"]
          .map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, view.points.map((p) => h("tr", { dataset: { verdict: p.verdict } },
          h("td", {}, PHASE_NAMES[p.phase]),
          h("td", {}, `${formatValue(p.nominal)} ${unit}`),
          h("td", {}, formatValue(p.reference_value)),
          h("td", {}, String(p.n)),
          h("td", {}, formatValue(p.mean)),
          h("td", {}, formatValue(p.error)),
          h("td", {}, formatValue(p.s)),
          h("td", {}, `${formatValue(p.expanded)} (k=${formatValue(p.k)})`),
          h("td", {}, `±${formatValue(p.tolerance)}`),
          h("td", { class: p.verdict === "pass" ? "" : "error" }, p.verdict),
          h("td", {}, p.manual_readings ? `${p.manual_readings} (marked)` : "")))))));
  }

  function environmentPanel(operating) {
    const record = run.view.record;
    const conditions = record.procedure.environment ?? [];
    if (!conditions.length) return null;
    const recorded = new Map((record.environment ?? []).map((e) => [e.name, e]));
    return h("div", {}, h("h2", {}, "Environmental conditions"),
      h("ul", { id: "calibration-environment" }, conditions.map((c) => {
        const e = recorded.get(c.name);
        if (e) {
          const how = e.manual ? "entered by hand" : `from ${c.source}`;
          return h("li", {}, `${c.name}: ${formatValue(e.minimum)} to ${formatValue(e.maximum)} ${c.unit} (${how})`);
        }
        if (!operating) return h("li", {}, `${c.name}: not recorded`);
        const low = h("input", { type: "number", step: "any", size: 6, "aria-label": `${c.name} minimum` });
        const high = h("input", { type: "number", step: "any", size: 6, "aria-label": `${c.name} maximum` });
        return h("li", {}, `${c.name} (${c.unit})${c.source ? `, from ${c.source} at each capture, or` : ""}: `, low, " to ", high, " ",
          h("button", { type: "button", class: "small", onclick: () => act(() => post(`/${run.number}/environment`,
            { name: c.name, minimum: Number(low.value), maximum: Number(high.value) })) }, "Record"));
      })));
  }

  function actions(current) {
    const view = run.view;
    const record = view.record;
    const items = [];
    const done = !nextPoint(record, "as_found") && (run.phase === "as_found" || !nextPoint(record, "as_left"));
    if (current === "draft" && grant.atLeast("operator") && done) {
      const name = h("input", { id: "calibration-sign-name", placeholder: "your full name as printed", size: 28 });
      items.push(h("div", { class: "toolbar" }, name,
        h("button", { type: "button", id: "calibration-sign",
          onclick: () => act(() => post(`/${run.number}/sign`, { full_name: name.value.trim() })) }, "Sign as performed")));
    }
    if (current === "signed" && grant.isAdmin) {
      const performer = (record.signatures ?? []).find((s) => s.meaning === "performed");
      const name = h("input", { id: "calibration-approve-name", placeholder: "your full name as printed", size: 28 });
      const failed = view.verdict === "fail";
      const asFailed = h("input", { type: "checkbox", id: "calibration-approve-failed" });
      items.push(h("p", {}, `Performed by ${performer.full_name} (${performer.user}). Approving makes the record immutable`
        + (failed ? "." : " and applies its correction to the live data.")),
      failed ? h("p", { class: "error" }, "The result is a fail: the instrument is not fit for use. It can be approved only as a failure (kept, applied to nothing; the correction in force until now ends). ",
        h("label", {}, asFailed, " approve as a failure")) : null,
      h("div", { class: "toolbar" }, name, h("button", { type: "button", id: "calibration-approve",
        onclick: () => act(() => post(`/${run.number}/approve`,
          { full_name: name.value.trim(), apply_correction: !(failed && asFailed.checked) })) }, "Approve")));
    }
    if (current === "approved") {
      items.push(h("p", { id: "calibration-applied-as" }, view.correction
        ? `Applied to ${record.instrument.id}.${record.instrument.channel} as ${view.correction.calibration}.`
        : "Not applied to the live data."));
    }
    items.push(h("p", {}, h("a", { id: "calibration-pdf", href: pdfHref(record.certificate_number, record.revision ?? 1),
      download: `${record.certificate_number}-${record.revision ?? 1}.pdf` }, current === "approved" ? "Certificate (PDF)" : "Draft certificate (PDF)")));
    return h("div", { id: "calibration-actions" }, items);
  }

  function pdfHref(number, revision) {
    return `${BASE}/${encodeURIComponent(number)}.pdf?revision=${revision}`;
  }

  return {
    show(params) {
      if (params[0]) showRecord(params[0]);
      else showList();
    },
    hide() {
      stopWatching();
      run = null;
    },
  };
}
