// Copy uPlot from node_modules into the hub's static assets, as it is published.
// Run `npm ci && npm run vendor` in this folder after changing the version in
// package.json; commit the copied files. Tests and the hub never need npm.
import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const source = join(here, "node_modules", "uplot");
const target = join(here, "..", "src", "kleinmaelzung", "hub", "static", "vendor");
const { version } = JSON.parse(readFileSync(join(source, "package.json"), "utf8"));

mkdirSync(target, { recursive: true });
for (const [from, to] of [
  ["dist/uPlot.esm.js", "uPlot.esm.js"],
  ["dist/uPlot.min.css", "uPlot.min.css"],
  ["LICENSE", "uPlot.LICENSE"],
]) {
  copyFileSync(join(source, from), join(target, to));
  console.log(`uplot ${version}: ${from} -> static/vendor/${to}`);
}
