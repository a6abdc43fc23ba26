// Drive: each command an instrument announced, as a form built from its typed arguments;
// the reply or the error inline. Only what the signed-in person may send is offered.

import { clock, fill, formatValue, h } from "./dom.js";

// A command the instrument's declaration marks `dangerous` (a setpoint, a heater) asks for
// confirmation before it is sent. From an agent older than that flag, every command that is
// not a plain read asks.
const READS = /^(get|read|query|measure|identify|status|list)(_|$)/;
export function isDangerous(command) {
  if (typeof command.dangerous === "boolean") return command.dangerous;
  return !READS.test(command.name);
}

/** The hub's own commands on every instrument (the control lease), for operators. */
const LEASE_COMMANDS = [
  {
    name: "lease",
    description: "Take the control lease: until it ends, only your commands run here",
    args: [{ name: "duration_s", type: "float", description: "seconds", minimum: 1, maximum: 28800, default: 600 }],
  },
  { name: "release", description: "Give the control lease back", args: [] },
];

export function mount(section, { lab, link, grant }) {
  const chooser = h("select", { id: "drive-instrument", "aria-label": "Instrument" });
  const header = h("div", { class: "drive-head" });
  const forms = h("div", { class: "instrument-forms" });
  fill(section,
    h("div", { class: "toolbar" }, h("h1", {}, "Drive"), chooser),
    header, forms);
  let current = null;
  let shape = "";

  function drivable(id) {
    const entry = lab.instruments.get(id);
    return (entry.record.commands || []).some((c) => grant.mayCommand(id, c.name)) || grant.mayLease(id);
  }

  function renderChooser() {
    const ids = [...lab.instruments.keys()].sort().filter(drivable);
    const next = ids.join(",");
    if (next === chooser.dataset.ids) return;
    chooser.dataset.ids = next;
    fill(chooser, h("option", { value: "" }, ids.length ? "choose an instrument" : "nothing you may drive"),
      ids.map((id) => h("option", { value: id, selected: id === current }, id)));
    chooser.hidden = !grant.atLeast("operator");
  }

  chooser.addEventListener("change", () => {
    location.hash = chooser.value ? `#/drive/${encodeURIComponent(chooser.value)}` : "#/drive";
  });

  function renderHeader() {
    const entry = current && lab.instruments.get(current);
    if (!entry || !grant.atLeast("operator")) {
      fill(header, h("p", { class: "hint" },
        grant.atLeast("operator") ? "Choose an instrument to see the commands you may send."
          : `You (${grant.user}, ${grant.role}) may watch, not drive: commands need the operator role.`));
      return;
    }
    const r = entry.record;
    const values = Object.entries(entry.values).map(([k, v]) => `${k} ${formatValue(v)}`).join(" · ");
    fill(header,
      h("p", {}, h("strong", {}, r.id), ` — ${r.kind}, `, h("span", { class: "badge", "data-state": lab.displayState(entry) }, lab.displayState(entry)),
        r.reason ? ` ${r.reason}` : "", lab.leaseText(entry) ? ` · ${lab.leaseText(entry)}` : "",
        values ? h("span", { class: "hint" }, ` · ${values}`) : null));
  }

  function renderForms() {
    const entry = current && lab.instruments.get(current);
    if (!entry || !grant.atLeast("operator")) {
      shape = "";
      forms.replaceChildren();
      return;
    }
    const commands = (entry.record.commands || []).filter((c) => grant.mayCommand(current, c.name));
    const offered = grant.mayLease(current) ? [...commands, ...LEASE_COMMANDS] : commands;
    const next = `${current}|${JSON.stringify(offered)}|${entry.record.state}`;
    if (next === shape) return;
    shape = next;
    const offline = entry.record.state === "offline";
    fill(forms, offered.length ? offered.map((command) => commandForm(current, command, offline))
      : h("p", { class: "hint" }, "This instrument announced no command you may send."));
  }

  function commandForm(id, command, offline) {
    const inputs = [];
    const rows = [];
    for (const arg of command.args || []) {
      const type = arg.type || "float";
      const inputId = `arg-${id}-${command.name}-${arg.name}`;
      const attrs = { id: inputId, name: arg.name, "data-type": type, required: type !== "bool" };
      let input;
      if (type === "bool") input = h("input", { ...attrs, type: "checkbox" });
      else if (type === "str") input = h("input", { ...attrs, type: "text" });
      else {
        input = h("input", {
          ...attrs, type: "number", inputmode: "decimal", step: type === "int" ? "1" : "any",
          min: arg.minimum ?? undefined, max: arg.maximum ?? undefined, value: arg.default ?? undefined,
        });
      }
      const range = arg.minimum !== null && arg.minimum !== undefined || arg.maximum !== null && arg.maximum !== undefined
        ? ` ${arg.minimum ?? "…"} to ${arg.maximum ?? "…"}` : "";
      const help = [arg.description, range.trim() && `range${range}`, type].filter(Boolean).join(" · ");
      inputs.push(input);
      rows.push(h("label", { for: inputId }, arg.name), input, h("small", {}, help));
    }
    const send = h("button", { type: "submit", disabled: offline }, isDangerous(command) ? `${command.name}…` : command.name);
    const outcome = h("pre", { class: "outcome", role: "status", "aria-live": "polite" });
    const confirmBox = h("div", { class: "confirm", hidden: true });
    const form = h("form", { class: "command-form", "data-command": command.name },
      h("h3", {}, command.name),
      command.description ? h("p", { class: "hint" }, command.description) : null,
      rows.length ? h("div", { class: "args" }, rows) : null,
      h("div", {}, send), confirmBox, outcome,
      offline ? h("p", { class: "hint" }, "The instrument is offline: commands cannot reach it.") : null);

    function args() {
      const out = {};
      for (const input of inputs) {
        const type = input.dataset.type;
        if (type === "bool") out[input.name] = input.checked;
        else if (type === "str") out[input.name] = input.value;
        else out[input.name] = type === "int" ? parseInt(input.value, 10) : Number(input.value);
      }
      return out;
    }

    async function run(values) {
      send.disabled = true;
      outcome.className = "outcome";
      outcome.textContent = "sent, waiting for the reply…";
      const reply = await link.command(id, command.name, values);
      send.disabled = false;
      if (reply.ok) {
        outcome.className = "outcome ok";
        outcome.textContent = `ok ${formatResult(reply.result)}`;
      } else {
        outcome.className = "outcome failed";
        outcome.textContent = `${reply.error?.code}: ${reply.error?.message}`;
      }
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!form.reportValidity()) return;
      const values = args();
      if (!isDangerous(command)) {
        run(values);
        return;
      }
      const shown = Object.entries(values).map(([k, v]) => `${k}=${v}`).join(" ");
      const yes = h("button", { type: "button", class: "danger" }, `Yes, ${command.name}`);
      const no = h("button", { type: "button", class: "quiet" }, "Cancel");
      fill(confirmBox, h("p", {}, `Send ${command.name} ${shown} to ${id}? It acts on the instrument.`), yes, " ", no);
      confirmBox.hidden = false;
      yes.focus();
      yes.addEventListener("click", () => {
        confirmBox.hidden = true;
        run(values);
      });
      no.addEventListener("click", () => {
        confirmBox.hidden = true;
        send.focus();
      });
    });
    return form;
  }

  lab.addEventListener("change", (event) => {
    if (event.detail.structural) renderChooser();
    if (current && event.detail.ids.has(current)) {
      renderHeader();
      if (event.detail.structural) renderForms();
    }
  });

  return {
    show([id]) {
      current = id && lab.instruments.has(id) ? id : null;
      renderChooser();
      chooser.value = current || "";
      renderHeader();
      renderForms();
    },
  };
}

function formatResult(result) {
  if (result === null || result === undefined) return "";
  if (typeof result !== "object") return String(result);
  return Object.entries(result).map(([k, v]) => {
    if (k === "expires" && typeof v === "number") return `expires=${clock(v)}`; // the lease's
    return `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`;
  }).join(" ");
}
