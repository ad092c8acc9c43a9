"""The viewer's page: HTML, CSS and vanilla JavaScript, with __TITLE__ and __DATA__ filled in by
`workbench.viewer.write_viewer`. Kept in a Python module so it installs with the package."""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; background: #f6f6f4; }
header { position: sticky; top: 0; background: #fff; border-bottom: 1px solid #ccc; padding: 8px 16px; z-index: 1; }
h1 { font-size: 17px; margin: 0 0 6px; }
#filters { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: end; }
#filters label { display: flex; flex-direction: column; font-size: 11px; color: #555; }
#filters select, #filters input { font-size: 13px; max-width: 260px; }
#count { font-weight: 600; margin-left: auto; }
main { padding: 10px 16px; }
.gen { background: #fff; border: 1px solid #ddd; border-radius: 6px; margin: 0 0 12px; padding: 8px 10px; }
.gen h2 { font-size: 13px; margin: 0 0 6px; font-weight: 600; }
.gen h2 .muted { font-weight: 400; color: #777; }
.cols { display: grid; grid-template-columns: repeat(auto-fit, minmax(240px, 1fr)); gap: 8px; }
.col { min-width: 0; }
.col h3 { font-size: 11px; text-transform: uppercase; letter-spacing: .04em; color: #666; margin: 0 0 3px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 0; font: 12.5px/1.35 ui-monospace, monospace;
      background: #fafafa; border: 1px solid #eee; padding: 6px; max-height: 360px; overflow: auto; }
.steered pre { background: #f3f7ff; border-color: #cfdcf5; }
.badges { margin: 4px 0 0; display: flex; flex-wrap: wrap; gap: 4px; }
.b { font-size: 11px; padding: 1px 6px; border-radius: 9px; background: #eee; color: #333; }
.b.pass { background: #d8f0d8; color: #145214; } .b.fail { background: #f6d9d9; color: #7a1515; }
.b.degenerate { background: #7a1515; color: #fff; }
#more { margin: 8px 0 30px; }
.note { color: #777; font-size: 12px; }
</style>
</head>
<body>
<header>
<h1>__TITLE__</h1>
<div id="filters"></div>
</header>
<main>
<p class="note" id="note"></p>
<div id="list"></div>
<button id="more" hidden>show more</button>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const ROWS = DATA.rows;
const ANY = "", STEERED = "steered", NONE = "none";
// filter name -> [label, options as [value, text]]; a filter with one real value is left out
const distinct = (f) => [...new Set(ROWS.map(f))].filter((v) => v !== null && v !== "").sort(
  (a, b) => (typeof a === "number" && typeof b === "number") ? a - b : String(a).localeCompare(String(b)));
const FILTERS = {
  phase: ["phase", [[ANY, "all"], ...distinct((r) => r.phase).map((v) => [v, v])]],
  instruction: ["instruction", [[ANY, "all"], ...distinct((r) => r.inst).map((v) => [v, v])]],
  condition: ["instruction in prompt", [[ANY, "both"], ["without", "without"], ["with", "with"]]],
  layer: ["layer", [[STEERED, "any steered"], [NONE, "none (unsteered)"], [ANY, "all"],
                    ...distinct((r) => r.layer).map((v) => [String(v), String(v)])]],
  weight: ["weight", [[ANY, "all"], ...distinct((r) => r.steered ? r.weight : null).map((v) => [String(v), String(v)])]],
  group: ["mode / arm", [[ANY, "all"], ...distinct((r) => r.group).map((v) => [v, v])]],
  verdict: ["loose verdict", [[ANY, "all"], ["pass", "followed"], ["fail", "not followed"]]],
  degenerate: ["degenerate", [[ANY, "all"], ["yes", "yes"], ["no", "no"]]],
};
const state = {};
function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  for (const name of Object.keys(FILTERS)) state[name] = params.has(name) ? params.get(name) : FILTERS[name][1][0][0];
  state.text = params.get("text") || "";
}
function writeHash() {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(state)) {
    const dflt = name === "text" ? "" : FILTERS[name][1][0][0];
    if (value !== dflt) params.set(name, value);
  }
  history.replaceState(null, "", "#" + params.toString());
}
function passes(r) {
  if (state.phase && r.phase !== state.phase) return false;
  if (state.instruction && r.inst !== state.instruction) return false;
  if (state.condition && r.cond !== (state.condition === "with")) return false;
  if (state.layer === STEERED && !r.steered) return false;
  if (state.layer === NONE && r.steered) return false;
  if (![ANY, STEERED, NONE].includes(state.layer) && String(r.layer) !== state.layer) return false;
  if (state.weight && (!r.steered || String(r.weight) !== state.weight)) return false;
  if (state.group && r.group !== state.group) return false;
  if (state.verdict && (!("loose" in r.verdicts) || r.verdicts.loose !== (state.verdict === "pass"))) return false;
  if (state.degenerate && r.degenerate !== (state.degenerate === "yes")) return false;
  if (state.text) {
    const t = state.text.toLowerCase();
    if (!r.response.toLowerCase().includes(t) && !r.prompt.toLowerCase().includes(t)) return false;
  }
  return true;
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function badges(r) {
  const box = el("div", "badges");
  for (const [name, ok] of Object.entries(r.verdicts)) box.append(el("span", "b " + (ok ? "pass" : "fail"), name + (ok ? " ✓" : " ✗")));
  if (r.degenerate === true) box.append(el("span", "b degenerate", "degenerate" + (r.reason ? ": " + r.reason : "")));
  if (r.degenerate === false) box.append(el("span", "b", "not degenerate"));
  if (r.finish) box.append(el("span", "b", r.finish + (r.tokens !== null ? ", " + r.tokens + " tokens" : "")));
  for (const [name, v] of Object.entries(r.metrics)) box.append(el("span", "b", name + " " + v));
  return box;
}
function column(title, r, cls, prompt) {
  const c = el("div", "col " + (cls || ""));
  c.append(el("h3", "", title));
  if (r === null || r === undefined) { c.append(el("pre", "", "(not in this run)")); return c; }
  if (prompt !== undefined && r.prompt !== prompt) {  // a reference answer to another prompt: show it on request
    const d = el("details");
    d.append(el("summary", "note", "its prompt"));
    d.append(el("pre", "", r.prompt));
    c.append(d);
  }
  c.append(el("pre", "", r.response));
  c.append(badges(r));
  return c;
}
function card(r) {
  const g = el("div", "gen");
  g.dataset.job = r.job;
  const head = el("h2", "", r.inst || "(no instruction)");
  head.append(el("span", "muted", "  " + [r.phase, r.key, r.cond ? "instruction in prompt" : "no instruction in prompt",
                                           r.steered ? r.label : "unsteered"].filter(Boolean).join(" · ")));
  g.append(head);
  const cols = el("div", "cols");
  const prompt = el("div", "col");
  prompt.append(el("h3", "", "prompt"));
  prompt.append(el("pre", "", r.prompt));
  cols.append(prompt);
  if (r.steered) {
    cols.append(column("unsteered", ROWS[r.base]));
    cols.append(column("steered: " + r.label, r, "steered"));
  } else {
    cols.append(column("unsteered", r));
  }
  if (!r.cond && r.base_with !== null) {
    cols.append(column("unsteered, instruction in prompt", ROWS[r.base_with], "", r.prompt));
    if (r.steered && r.steered_with !== null) cols.append(column("steered, instruction in prompt", ROWS[r.steered_with], "steered", r.prompt));
  }
  g.append(cols);
  return g;
}
let matched = [], shown = 0;
function render() {
  matched = ROWS.filter(passes);
  shown = 0;
  document.getElementById("list").replaceChildren();
  more();
}
function more() {
  const list = document.getElementById("list");
  const next = matched.slice(shown, shown + DATA.meta.page);
  list.append(...next.map(card));
  shown += next.length;
  document.getElementById("count").textContent = `${matched.length} of ${ROWS.length} generations match · ${shown} shown`;
  document.getElementById("count").dataset.matched = matched.length;
  document.getElementById("more").hidden = shown >= matched.length;
}
function buildFilters() {
  const box = document.getElementById("filters");
  for (const [name, [label, options]] of Object.entries(FILTERS)) {
    if (options.length < 2 || (options.length === 2 && name !== "condition" && name !== "verdict")) continue;
    const l = el("label", "", label);
    const s = el("select");
    s.id = "f-" + name;
    for (const [value, text] of options) { const o = el("option", "", text); o.value = value; s.append(o); }
    s.value = state[name];
    if (s.value !== state[name]) { const o = el("option", "", state[name] + " (no match)"); o.value = state[name]; s.append(o); s.value = state[name]; }
    s.addEventListener("change", () => { state[name] = s.value; writeHash(); render(); });
    l.append(s);
    box.append(l);
  }
  const l = el("label", "", "text contains");
  const t = el("input");
  t.id = "f-text"; t.value = state.text; t.placeholder = "in prompt or answer";
  t.addEventListener("input", () => { state.text = t.value; writeHash(); render(); });
  l.append(t);
  box.append(l);
  const count = el("span");
  count.id = "count";
  box.append(count);
}
readHash();
buildFilters();
document.getElementById("more").addEventListener("click", more);
window.addEventListener("hashchange", () => {
  readHash();
  for (const name of Object.keys(FILTERS)) { const s = document.getElementById("f-" + name); if (s) s.value = state[name]; }
  document.getElementById("f-text").value = state.text;
  render();
});
const m = DATA.meta;
document.getElementById("note").textContent = `${m.run}: ${m.n} generations` +
  (m.skipped_lines ? `, ${m.skipped_lines} unreadable lines of generations.jsonl skipped` : "") +
  ". Filters are kept in the address (#...), so a link reopens this view.";
render();
</script>
</body>
</html>
"""
