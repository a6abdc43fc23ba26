// What the signed-in person may do, as the hub decides it (hub/auth/permissions.py):
// the page offers only that; the hub checks every message anyway.

const RANK = { agent: 0, viewer: 1, operator: 2, admin: 3 };

/** fnmatch-style glob (`*`, `?`, `[abc]`, `[!abc]`) as a RegExp over instrument ids. */
export function globToRegExp(pattern) {
  let out = "";
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "*") out += ".*";
    else if (c === "?") out += ".";
    else if (c === "[") {
      const end = pattern.indexOf("]", i + 1);
      if (end < 0) { out += "\\["; continue; }
      let set = pattern.slice(i + 1, end);
      if (set.startsWith("!")) set = "^" + set.slice(1);
      out += `[${set.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else out += c.replace(/[.+^${}()|\\\]]/g, "\\$&");
  }
  return new RegExp(`^${out}$`);
}

export class Grant {
  constructor(session) {
    this.user = session.user;
    this.role = session.role;
    this.auth = session.auth;
    this.instruments = session.instruments;
    this.commands = session.commands;
    this.patterns = this.instruments.map(globToRegExp);
  }

  atLeast(role) {
    return this.role !== "agent" && RANK[this.role] >= RANK[role];
  }

  get isAdmin() {
    return this.role === "admin";
  }

  mayWatch(id) {
    return this.atLeast("viewer") && this.patterns.some((p) => p.test(id));
  }

  mayCommand(id, name) {
    return this.atLeast("operator") && this.mayWatch(id)
      && (this.commands.includes("*") || this.commands.includes(name));
  }

  /** Whoever may drive the instrument at all may take its lease. */
  mayLease(id) {
    return this.atLeast("operator") && this.mayWatch(id);
  }

  /** Patterns to subscribe to: the grant's own are always allowed. */
  subscriptionPatterns() {
    return this.instruments.includes("*") ? ["*"] : [...this.instruments];
  }
}
