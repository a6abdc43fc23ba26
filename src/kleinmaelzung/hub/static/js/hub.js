// The hub's public WebSocket protocol (docs/protocol.md), as any client speaks it.
//
// Events: "state" (detail: connecting | live | closed), "welcome", "data", "status",
// "missed", "gap", "unauthorized" (closed with 4001: sign in again), "problem" (an error
// with no request id). Requests (subscribe, list, command) return Promises of the answer.

// 4: instrument records carry the metadata held at the hub (the overview groups by it).
const PROTOCOL = 4;
const REQUEST_TIMEOUT_S = 10;

export class HubLink extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.state = "connecting";
    this.pending = new Map();
    this.counter = 0;
    this.patterns = [];
    this.retryS = 0.5;
    this.stopped = false;
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws/client`;
  }

  connect() {
    this.stopped = false;
    this.setState("connecting");
    const ws = new WebSocket(this.url());
    this.ws = ws;
    ws.onopen = () => {
      // The session cookie authenticated the upgrade; no token in the hello.
      ws.send(JSON.stringify({ type: "client_hello", protocol: PROTOCOL, token: null, name: "dashboard" }));
    };
    ws.onmessage = (event) => this.receive(JSON.parse(event.data));
    ws.onclose = (event) => this.closed(ws, event);
  }

  stop() {
    this.stopped = true;
    if (this.ws) this.ws.close(1000, "signed out");
  }

  setState(state) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  receive(message) {
    switch (message.type) {
      case "welcome":
        this.retryS = 0.5;
        this.welcome = message;
        this.setState("live");
        this.dispatchEvent(new CustomEvent("welcome", { detail: message }));
        return;
      case "data":
      case "status":
      case "missed":
      case "gap":
        this.dispatchEvent(new CustomEvent(message.type, { detail: message }));
        return;
      default:
        break;
    }
    const waiting = message.id !== undefined && message.id !== null ? this.pending.get(message.id) : null;
    if (waiting) {
      this.pending.delete(message.id);
      clearTimeout(waiting.timer);
      waiting.resolve(message);
    } else if (message.type === "error") {
      this.dispatchEvent(new CustomEvent("problem", { detail: message }));
    }
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    for (const [id, waiting] of this.pending) {
      clearTimeout(waiting.timer);
      waiting.resolve(lostAnswer(id));
    }
    this.pending.clear();
    this.setState("closed");
    if (this.stopped) return;
    if (event.code === 4001) {
      this.dispatchEvent(new CustomEvent("unauthorized", { detail: event.reason }));
      return;
    }
    const delay = this.retryS * (0.5 + Math.random());
    this.retryS = Math.min(this.retryS * 2, 10);
    setTimeout(() => { if (!this.stopped) this.connect(); }, delay * 1000);
  }

  /** Send a request; resolves with the hub's answer (an `error` or `reply` included). */
  request(message, timeoutS = REQUEST_TIMEOUT_S) {
    const id = `d${++this.counter}`;
    return new Promise((resolve) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== "live") {
        resolve({ type: "error", id, code: "not_connected", message: "not connected to the hub" });
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(id);
        resolve(lostAnswer(id));
      }, timeoutS * 1000);
      this.pending.set(id, { resolve, timer });
      this.ws.send(JSON.stringify({ ...message, id }));
    });
  }

  list() {
    return this.request({ type: "list_instruments" });
  }

  /** Subscribe; `sinceTs` first replays what the hub's log holds from then on. */
  subscribe(patterns, sinceTs = null) {
    const message = { type: "subscribe", patterns, overflow: "latest" };
    if (sinceTs !== null) message.since_ts = sinceTs;
    return this.request(message);
  }

  /** Run a command; resolves with `{ok, result, error}` (a refusal becomes a failed reply). */
  async command(instrument, name, args, timeoutS = 5) {
    const answer = await this.request(
      { type: "command", instrument, name, args, timeout_s: timeoutS },
      timeoutS + 3,
    );
    if (answer.type === "reply") return answer;
    return { ok: false, result: null, error: { code: answer.code, message: answer.message } };
  }
}

function lostAnswer(id) {
  return {
    type: "error",
    id,
    code: "outcome_unknown",
    message: "no answer from the hub (connection lost or too slow): check the instrument before sending again",
  };
}
