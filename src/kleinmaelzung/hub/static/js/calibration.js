// SEAM: calibration (issue 12). Another session is wiring the calibration REST API at the
// time of writing; this page probes for it and shows what it finds. The workflow to build
// here once it lands: start a run, apply each point with the live value and a stability
// indicator, review the fit, sign, download the certificate PDF.

import { fill, h } from "./dom.js";

/** The route this page expects; adapt it to the API as it lands. */
const LIST_ROUTE = "/api/calibrations";

export function mount(section) {
  const body = h("div", { class: "seam", id: "calibration-seam" });
  fill(section, h("div", { class: "toolbar" }, h("h1", {}, "Calibration")), body);

  async function probe() {
    fill(body, "Looking for the hub's calibration API…");
    let response = null;
    try {
      response = await fetch(LIST_ROUTE, { credentials: "same-origin" });
    } catch {
      response = null;
    }
    if (!response || !response.ok) {
      fill(body,
        h("p", {}, "Calibration records, runs and certificates will be here once the hub serves them (issue 12)."),
        h("p", { class: "hint" }, "Meanwhile: ", h("code", {}, "kleinmaelzung.calibration"),
          " in Python keeps the records and makes the certificate PDF; the overview shows corrected values (hover a value) for channels with an approved calibration."));
      return;
    }
    const records = await response.json().catch(() => []);
    const list = Array.isArray(records) ? records : records.records || records.calibrations || [];
    fill(body, h("p", {}, `${list.length} calibration record(s) on this hub.`),
      h("ul", {}, list.slice(0, 50).map((r) => h("li", {}, [r.certificate || r.id, r.instrument, r.state || r.status]
        .filter(Boolean).join(" · ")))));
  }

  return { show: probe };
}
