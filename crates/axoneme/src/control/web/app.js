// The flow view's script: the login form, and the live view (filters, service map, latest
// flows, the policy decision behind a selected edge).
//
// The agent sends a few aggregated batches a second, whatever the rate of flows; this script
// merges them into its counts and redraws at most once per animation frame. The map has one
// element per identity and per edge, the table a bounded number of rows. Text from the agent
// is set with textContent only.
"use strict";

/** Rows the flow table keeps, newest first. */
const FLOW_ROWS = 100;
/** Recent flows replayed when the view (re)connects. */
const REPLAY = 2000;
/** The order of parallel edges between two identities, by verdict. */
const LANES = { forwarded: 0, audit: 1, denied: 2 };
const SVG = "http://www.w3.org/2000/svg";
/** The size of an identity's card on the map. */
const NODE = { w: 132, h: 44 };

const view = {
  nodes: new Map(),
  edges: new Map(),
  flows: [],
  total: 0,
  lost: 0,
  recent: [],
  source: null,
  /** Counts connects, so that only the latest opens a stream. */
  generation: 0,
  selected: null,
  drawing: false,
};

if (document.body.dataset.page === "login") {
  login();
} else {
  live();
}

function showError(message) {
  const error = document.getElementById("error");
  error.textContent = message;
  error.hidden = !message;
}

function login() {
  const form = document.getElementById("login");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await fetch("/ui/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: form.elements.token.value }),
    });
    if (answer.ok) {
      location.replace("/ui/");
    } else {
      showError((await answer.json()).error);
    }
  });
}

function live() {
  const form = document.getElementById("filters");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    connect(filters(form));
  });
  document.getElementById("map").addEventListener("click", (event) => {
    const edge = event.target.closest(".edge");
    if (edge) select(edge.dataset.key);
  });
  connect(filters(form));
}

/** The form's filters as `/v1/monitor`'s query: comma-separated values repeat a key. */
function filters(form) {
  const params = new URLSearchParams();
  for (const input of form.elements) {
    if (!input.name) continue;
    for (const value of input.value.split(",")) {
      if (value.trim()) params.append(input.name, value.trim());
    }
  }
  return params;
}

async function connect(params) {
  // A later connect (the filter applied again) makes this one give up.
  const generation = ++view.generation;
  if (view.source) view.source.close();
  view.source = null;
  reset();
  params.append("last", String(REPLAY));
  params.append("follow", "true");
  const url = "events?" + params;
  // A filter the agent cannot use is answered 400 with the reason, which EventSource would
  // not show: ask once with fetch, and read the stream only if it starts.
  const check = new AbortController();
  try {
    const answer = await fetch(url, { signal: check.signal });
    if (generation !== view.generation) return;
    if (!answer.ok) {
      const body = await answer.json().catch(() => ({ error: answer.statusText }));
      showError(body.error);
      setStatus("stopped: fix the filter");
      return;
    }
  } catch (error) {
    if (generation === view.generation) showError(`the agent cannot be reached: ${error}`);
    return;
  } finally {
    check.abort();
  }
  showError("");
  const source = new EventSource(url);
  view.source = source;
  // Every connection starts with a replay of recent flows: counts start again from it.
  source.onopen = () => {
    reset();
    setStatus("live");
  };
  source.onerror = () => setStatus("reconnecting…");
  source.onmessage = (event) => {
    merge(JSON.parse(event.data));
    if (!view.drawing) {
      view.drawing = true;
      requestAnimationFrame(draw);
    }
  };
}

function setStatus(text) {
  document.getElementById("status").textContent = text;
}

function reset() {
  view.nodes.clear();
  view.edges.clear();
  view.flows = [];
  view.total = 0;
  view.lost = 0;
  view.recent = [];
  view.selected = null;
  document.getElementById("edges").replaceChildren();
  document.getElementById("nodes").replaceChildren();
  document.getElementById("rule").replaceChildren();
  document.getElementById("rule-hint").hidden = false;
  draw();
}

function merge(batch) {
  for (const node of batch.nodes) {
    if (!view.nodes.has(node.id)) view.nodes.set(node.id, node);
  }
  for (const edge of batch.edges) {
    const key = `${edge.from}>${edge.to}:${edge.verdict}`;
    const known = view.edges.get(key);
    if (known) {
      known.count += edge.count;
      known.trace = edge.trace;
    } else {
      view.edges.set(key, { ...edge, key });
    }
  }
  view.flows.push(...batch.flows);
  if (view.flows.length > FLOW_ROWS) view.flows.splice(0, view.flows.length - FLOW_ROWS);
  view.total += batch.total;
  view.lost += batch.lost;
  const now = performance.now();
  view.recent.push([now, batch.total]);
  view.recent = view.recent.filter(([at]) => now - at < 5000);
}

function draw() {
  view.drawing = false;
  drawMap();
  drawFlows();
  const rate = view.recent.reduce((sum, [, n]) => sum + n, 0) / 5;
  let stats = `${view.total} flows · ${Math.round(rate)}/s`;
  if (view.lost) stats += ` · ${view.lost} lost (the view fell behind)`;
  const shown = document.getElementById("stats");
  shown.textContent = stats;
  shown.dataset.lost = String(view.lost);
}

function element(name, attributes = {}, parent = null) {
  const made = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) made.setAttribute(key, value);
  if (parent) parent.appendChild(made);
  return made;
}

/** Identities on a circle, in the order of their numbers. */
function positions() {
  const ids = [...view.nodes.keys()].sort((a, b) => a - b);
  const placed = new Map();
  ids.forEach((id, i) => {
    const angle = Math.PI + (2 * Math.PI * i) / ids.length;
    const radius = ids.length === 1 ? 0 : 210;
    placed.set(id, { x: 450 + radius * Math.cos(angle), y: 270 + radius * Math.sin(angle) });
  });
  return placed;
}

function nodeName(id) {
  const node = view.nodes.get(id);
  return node ? `${node.name} (${id})` : String(id);
}

function drawMap() {
  const placed = positions();
  const nodeLayer = document.getElementById("nodes");
  for (const [id, node] of view.nodes) {
    let group = nodeLayer.querySelector(`[data-id="${id}"]`);
    if (!group) {
      group = element("g", { class: "node", "data-id": id }, nodeLayer);
      element("rect", { x: -NODE.w / 2, y: -NODE.h / 2, width: NODE.w, height: NODE.h, rx: 8 }, group);
      element("text", { class: "name", dy: -2 }, group).textContent = node.name;
      element("text", { class: "id", dy: 14 }, group).textContent = `identity ${id}`;
      element("title", {}, group).textContent = (node.labels || []).join("\n");
    }
    const { x, y } = placed.get(id);
    group.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)})`);
  }
  const edgeLayer = document.getElementById("edges");
  for (const edge of view.edges.values()) {
    let group = edgeLayer.querySelector(`[data-key="${edge.key}"]`);
    if (!group) {
      group = element("g", { class: `edge ${edge.verdict}`, "data-key": edge.key, "data-verdict": edge.verdict }, edgeLayer);
      element("path", { class: "hit" }, group);
      element("path", { class: "line", "marker-end": `url(#arrow-${edge.verdict})` }, group);
      element("text", { class: "count" }, group);
      element("title", {}, group);
    }
    const from = placed.get(edge.from);
    const to = placed.get(edge.to);
    const d = curve(from, to, LANES[edge.verdict]);
    for (const path of group.querySelectorAll("path")) path.setAttribute("d", d.path);
    const count = group.querySelector(".count");
    count.setAttribute("x", d.label.x.toFixed(1));
    count.setAttribute("y", d.label.y.toFixed(1));
    count.textContent = String(edge.count);
    group.dataset.count = String(edge.count);
    group.querySelector("title").textContent =
      `${nodeName(edge.from)} → ${nodeName(edge.to)}: ${edge.count} ${edge.verdict}`;
    group.classList.toggle("selected", edge.key === view.selected);
  }
}

/** A curve from `a` to `b` (a loop when they are one), bent further for each lane so that
 * edges of different verdicts between the same identities stay apart; it stops at the
 * circles' edges. */
function curve(a, b, lane) {
  if (a === b || (a.x === b.x && a.y === b.y)) {
    const spread = 40 + 18 * lane;
    const top = a.y - NODE.h / 2;
    return {
      path: `M${a.x - 30},${top} C${a.x - spread},${top - 90 - spread} ${a.x + spread},${top - 90 - spread} ${a.x + 30},${top - 4}`,
      label: { x: a.x, y: top - 70 - spread * 0.75 },
    };
  }
  const dx = b.x - a.x;
  const dy = b.y - a.y;
  const length = Math.hypot(dx, dy);
  const bend = 24 + 42 * lane;
  const control = { x: (a.x + b.x) / 2 - (dy / length) * bend, y: (a.y + b.y) / 2 + (dx / length) * bend };
  // Where the way from a card's centre towards `to` leaves the card, and `gap` beyond.
  const leaving = (from, to, gap) => {
    const ux = to.x - from.x;
    const uy = to.y - from.y;
    const scale = Math.min(Math.abs((NODE.w / 2 + gap) / ux) || Infinity, Math.abs((NODE.h / 2 + gap) / uy) || Infinity);
    return { x: from.x + ux * scale, y: from.y + uy * scale };
  };
  const start = leaving(a, control, 2);
  const end = leaving(b, control, 4);
  return {
    path: `M${start.x.toFixed(1)},${start.y.toFixed(1)} Q${control.x.toFixed(1)},${control.y.toFixed(1)} ${end.x.toFixed(1)},${end.y.toFixed(1)}`,
    label: { x: 0.25 * start.x + 0.5 * control.x + 0.25 * end.x, y: 0.25 * start.y + 0.5 * control.y + 0.25 * end.y - 4 },
  };
}

function drawFlows() {
  const rows = document.createDocumentFragment();
  for (let i = view.flows.length - 1; i >= 0; i--) {
    const flow = view.flows[i];
    const row = document.createElement("tr");
    row.className = flow.verdict;
    const cells = [flow.time, nodeName(flow.from), nodeName(flow.to), flow.proto, flow.verdict.toUpperCase(), flow.summary];
    cells.forEach((text, column) => {
      const cell = document.createElement("td");
      if (column === 4) cell.className = "verdict";
      cell.textContent = text;
      row.appendChild(cell);
    });
    rows.appendChild(row);
  }
  document.querySelector("#flows tbody").replaceChildren(rows);
}

/** Shows why the agent decides as it does on the edge `key`: `policy trace` of its latest
 * request, and the rules of the policy that decided. */
async function select(key) {
  const edge = view.edges.get(key);
  if (!edge) return;
  view.selected = key;
  drawMap();
  document.getElementById("rule-hint").hidden = true;
  const panel = document.getElementById("rule");
  panel.replaceChildren(text("p", "tracing…"));
  const answer = await fetch("trace", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(edge.trace),
  });
  const trace = await answer.json();
  if (view.selected !== key) return;
  if (!answer.ok) {
    panel.replaceChildren(text("p", `policy trace failed: ${trace.error}`));
    return;
  }
  const audited = trace.allowed && trace.reason.startsWith("audit mode");
  const decision = text("p", `${audited ? "AUDIT" : trace.allowed ? "ALLOWED" : "DENIED"} at ${trace.stage === "l7" ? "L7" : "L3/L4"}`);
  decision.className = `decision ${audited ? "audit" : trace.allowed ? "allowed" : "denied"}`;
  decision.id = "decision";
  const facts = document.createElement("dl");
  const fact = (term, value) => {
    facts.append(text("dt", term), text("dd", value));
  };
  fact("edge", `${nodeName(edge.from)} → ${nodeName(edge.to)}`);
  fact("requests", `${edge.count} ${edge.verdict}`);
  const l7 = Object.entries(edge.trace.l7 || {}).map(([k, v]) => `${k}=${v}`).join(" ");
  fact("traced now", `${edge.trace.egress ? "egress" : "ingress"} to ${edge.trace.endpoint} port ${edge.trace.port}${l7 ? ": " + l7 : ""}`);
  fact("policy", trace.policy_name || "none");
  const checked = trace.checked_policies || [];
  if (checked.length) fact("checked against", checked.join(", "));
  fact("reason", trace.reason);
  panel.replaceChildren(decision, facts);
  // The rules of the policy that decided, or else of those the request was checked against.
  const sides = edge.trace.egress ? ["egress", "egressDeny"] : ["ingress", "ingressDeny"];
  const rules = document.createElement("div");
  rules.id = "rules";
  for (const name of trace.policy_name ? [trace.policy_name] : checked) {
    const policy = await fetch(`policy/${encodeURIComponent(name)}`);
    if (!policy.ok || view.selected !== key) return;
    const spec = (await policy.json()).document.spec || {};
    const shown = Object.fromEntries(sides.filter((side) => spec[side]).map((side) => [side, spec[side]]));
    rules.append(text("h3", `rules of ${name}`), text("pre", yaml(shown, "")));
  }
  panel.append(rules);
}

/** `value` (JSON data) written as YAML, for reading. */
function yaml(value, indent) {
  const scalar = (v) => (typeof v === "string" && /^[\w./*-]+$/.test(v) ? v : JSON.stringify(v));
  const lines = [];
  const inner = indent + "  ";
  if (Array.isArray(value)) {
    for (const item of value) {
      const written = typeof item === "object" && item !== null ? yaml(item, inner).trimStart() : scalar(item);
      lines.push(`${indent}- ${written}`);
    }
  } else {
    for (const [key, item] of Object.entries(value)) {
      const nested = typeof item === "object" && item !== null && Object.keys(item).length > 0;
      lines.push(nested ? `${indent}${key}:\n${yaml(item, inner)}` : `${indent}${key}: ${scalar(item)}`);
    }
  }
  return lines.join("\n");
}

function text(tag, content) {
  const made = document.createElement(tag);
  made.textContent = content;
  return made;
}
