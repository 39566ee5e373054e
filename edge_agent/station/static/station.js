// The bench station's pages: server-sent events in, keyboard-first review out. No build step, no framework.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);
  const el = (tag, attrs, ...kids) => {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = v;
      else if (k === "style") n.style.cssText = v;  // CSSOM, allowed by the page's CSP
      else n.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) n.append(k);
    return n;
  };
  const csrf = () => $('meta[name="csrf-token"]').content;
  const page = document.body.dataset.page;
  const stateEl = $("#state");
  const initial = stateEl ? JSON.parse(stateEl.textContent) : {};
  const KIND_TEXT = { passed: "Passed", review: "Review", retake: "Retake", reviewed: "Reviewed", rejected: "Rejected" };

  async function post(url, data) {
    const r = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(data),
      credentials: "same-origin",
    });
    let body = {};
    try { body = await r.json(); } catch (e) { body = { error: r.statusText }; }
    return { ok: r.ok, status: r.status, body };
  }

  // ---------------------------------------------------------------- status strip
  function renderStrip(status) {
    const pills = $("#pills");
    if (!pills || !status || !status.items) return;
    pills.replaceChildren(
      ...status.items.map((i) =>
        el("span", { class: "pill " + i.state, title: i.detail || i.remedy || i.text, "data-name": i.name },
          el("b", { text: i.name }), " " + i.text,
          i.remedy ? el("span", { class: "remedy", text: " → " + i.remedy }) : null)
      )
    );
    const d = $("#device-details");
    if (d && status.devices) {
      const cols = ["name", "connected", "frames_ok", "polls_ok", "frames_bad", "polls_bad", "reconnects", "records", "last_error"];
      const used = cols.filter((c) => status.devices.some((x) => x[c] !== undefined));
      const head = el("tr", {}, ...used.map((c) => el("th", { text: c.replace("_", " ") })));
      const rows = status.devices.map((x) => el("tr", { class: x.connected ? "" : "down" },
        ...used.map((c) => el("td", { text: x[c] == null ? "—" : String(x[c]) }))));
      const sum = Object.entries(status.summary || {}).map(([k, v]) => el("tr", {}, el("th", { text: k.replace(/_/g, " ") }), el("td", { text: String(v) })));
      d.replaceChildren(el("table", { class: "history devices" }, head, ...rows), el("h2", { text: "Pipeline" }), el("table", { class: "fields summary" }, ...sum));
    }
  }

  function renderCounts(c) {
    const box = $("#counts");
    if (!box || !c || document.body.dataset.profile !== "bench") return;
    const item = (label, value, id) => el("span", { class: "stat", id }, el("b", { text: value == null ? "—" : String(value) }), " " + label);
    box.replaceChildren(
      item("inspected", c.inspected, "count-inspected"),
      item("passed", c.passed, "count-passed"),
      item("reviewed", c.reviewed, "count-reviewed"),
      item("retakes", c.retakes, "count-retakes"),
      item("median read", c.median_read_ms == null ? null : c.median_read_ms + " ms", "count-median")
    );
  }

  // ---------------------------------------------------------------- photo with boxes
  function boxPoints(box) {
    if (!Array.isArray(box) || !box.length) return null;
    if (typeof box[0] === "number" && box.length === 4) {
      const [x, y, w, h] = box;
      return [[x, y], [x + w, y], [x + w, y + h], [x, y + h]];
    }
    return Array.isArray(box[0]) ? box : null;
  }

  function drawOverlay(svg, img, view, focus) {
    const w = img.naturalWidth, h = img.naturalHeight;
    if (!w || !h) return;
    svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
    svg.replaceChildren();
    const ns = "http://www.w3.org/2000/svg";
    const poly = (pts, cls, field) => {
      const p = document.createElementNS(ns, "polygon");
      p.setAttribute("points", pts.map((q) => q.join(",")).join(" "));
      p.setAttribute("class", cls);
      if (field) p.dataset.field = field;
      svg.append(p);
    };
    const label = boxPoints(view.label_box);
    if (label) poly(label, "label");
    for (const f of view.fields || []) {
      const pts = boxPoints(f.box);
      if (pts) poly(pts, "box " + f.level + (f.doubtful ? " doubtful" : "") + (focus === f.name ? " focus" : ""), f.name);
    }
  }

  function renderPhoto(box, view) {
    if (!box) return;
    if (!view.photo) {
      const why = view.kind === "passed" ? "Passed slips' photos are not kept" : "Photo not kept";
      box.replaceChildren(el("div", { class: "nophoto", text: why }));
      return;
    }
    const img = el("img", { src: view.photo, alt: "photo of the slip" });
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("class", "overlay");
    img.addEventListener("load", () => drawOverlay(svg, img, view));
    box.replaceChildren(el("div", { class: "zoom" }, img, svg));
  }

  // ---------------------------------------------------------------- live page
  // A value as text, its characters read two ways marked (the review page makes them switches).
  function valueCells(f) {
    if (f.value == null) return ["—"];
    const v = String(f.value), at = new Map((f.doubts || []).map((d) => [d.at, d]));
    if (!at.size) return [v];
    return [...v].map((ch, i) => (at.has(i) ? el("mark", { text: ch, title: `${at.get(i).read} or ${at.get(i).other}` }) : ch));
  }

  function renderVerdict(view) {
    if (!view || !$("#verdict")) return;
    const badge = $("#verdict-badge");
    badge.className = "badge " + view.kind;
    badge.textContent = KIND_TEXT[view.kind] || view.kind;
    const when = view.ts ? view.ts.slice(11, 19) + " UTC" : "";
    const ms = view.read_ms != null ? ` · read in ${Math.round(view.read_ms)} ms` : "";
    const by = view.reviewer ? ` · by ${view.reviewer}` : "";
    $("#verdict-meta").textContent = `${when}${ms}${by}` + (view.review_id ? ` · item ${view.review_id}` : "");
    const reasons = [...(view.retake || []).map((r) => ["retake", "Retake: " + r]), ...(view.reasons || []).map((r) => ["", r])];
    if (view.why && view.decision) reasons.push(["", `${view.decision}: ${view.why}`]);
    $("#verdict-reasons").replaceChildren(...reasons.map(([c, t]) => el("li", { class: c, text: t })));
    $("#verdict-fields").replaceChildren(
      ...(view.fields || []).map((f) =>
        el("tr", { class: f.level + (f.doubtful ? " doubtful" : ""), "data-field": f.name },
          el("th", { text: f.label }),
          el("td", { class: "value" }, ...valueCells(f)),
          el("td", { class: "conf" },
            el("span", { class: "bar" }, el("span", { class: "fill", style: `width:${Math.round(f.confidence * 100)}%` })),
            el("span", { text: f.value == null ? "" : f.confidence.toFixed(2) })))
      )
    );
    const agree = view.agree == null ? el("span", { text: "nothing to compare" })
      : view.agree ? el("span", { class: "ok", text: "agree" }) : el("span", { class: "bad", text: "disagree" });
    $("#verdict-order").replaceChildren("Scan ", el("b", { text: view.scan || "—" }), " · barcode ", el("b", { text: view.barcode || "—" }), " · ", agree);
    renderPhoto($("#live-photo"), view);
    // For the latency benchmark and the browser tests: which record is on screen, and since when.
    document.body.dataset.verdictSeq = view.seq == null ? "" : String(view.seq);
    document.body.dataset.verdictKind = view.kind;
    window.stationShown = window.stationShown || {};
    if (view.seq != null) window.stationShown[view.seq] = performance.timeOrigin + performance.now();
  }

  function renderQueue(items) {
    const q = $("#queue");
    if (!q) return;
    $("#queue-count").textContent = String(items.length);
    $("#queue-empty").hidden = items.length > 0;
    q.tBodies[0].replaceChildren(
      ...items.map((i, n) => {
        const order = (i.fields.find((f) => f.name === "order_no") || {}).value;
        const row = el("tr", { "data-id": i.review_id, class: n === 0 ? "next" : "" },
          el("td", { text: "#" + i.review_id }),
          el("td", { text: (i.queued_at || "").slice(11, 19) }),
          el("td", {}, el("span", { class: "badge small " + i.kind, text: KIND_TEXT[i.kind] || i.kind })),
          el("td", { text: order || "—" }),
          el("td", { class: "why", text: [...(i.retake || []), ...(i.reasons || [])].join("; ") }));
        row.addEventListener("click", () => { location.href = "/review/" + i.review_id; });
        return row;
      })
    );
  }

  const recent = [];
  function renderRecent(list) {
    const r = $("#recent");
    if (!r) return;
    r.tBodies[0].replaceChildren(
      ...list.slice(0, 8).map((v) => {
        const order = (v.fields.find((f) => f.name === "order_no") || {}).value;
        return el("tr", {},
          el("td", { text: (v.ts || "").slice(11, 19) }),
          el("td", {}, el("span", { class: "badge small " + v.kind, text: KIND_TEXT[v.kind] || v.kind })),
          el("td", { text: order || "—" }),
          el("td", { text: v.read_ms != null ? Math.round(v.read_ms) + " ms" : "" }));
      })
    );
  }

  // ---------------------------------------------------------------- events
  function applySnapshot(s) {
    renderStrip(s.status);
    renderCounts(s.counts);
    if (page === "live") {
      if (s.latest) renderVerdict(s.latest);
      renderQueue(s.queue || []);
      recent.length = 0;
      recent.push(...(s.recent || []));
      renderRecent(recent);
    }
    document.body.dataset.connected = "1";
  }

  function connect() {
    const poll = new URLSearchParams(location.search).get("poll");
    if (poll) {  // the alternative the latency benchmark compares with: plain polling
      let head = -1;
      setInterval(async () => {
        const r = await fetch("/api/state", { credentials: "same-origin" });
        const s = await r.json();
        if (s.head_seq !== head) { head = s.head_seq; applySnapshot(s); }
      }, Number(poll));
      return;
    }
    const es = new EventSource("/events");
    es.addEventListener("hello", (e) => {
      applySnapshot(JSON.parse(e.data));
      streamOpen = true;
      const a = document.activeElement;
      if (page === "review" && a && a.tagName === "INPUT" && a.closest(".field")) armScanner(true);
    });
    es.addEventListener("status", (e) => renderStrip(JSON.parse(e.data)));
    es.addEventListener("counts", (e) => renderCounts(JSON.parse(e.data)));
    es.addEventListener("queue", (e) => { if (page === "live") renderQueue(JSON.parse(e.data)); });
    es.addEventListener("verdict", (e) => {
      const v = JSON.parse(e.data);
      if (page === "live") { renderVerdict(v); recent.unshift(v); recent.length = Math.min(recent.length, 20); renderRecent(recent); }
    });
    es.addEventListener("scan", (e) => onScan(JSON.parse(e.data).code));
    es.onerror = () => { document.body.dataset.connected = "0"; streamOpen = false; armed = false; };
  }

  // ---------------------------------------------------------------- keyboard
  const typing = () => {
    const a = document.activeElement;
    return a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  };

  function livePageKeys(e) {
    if (typing() || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "Enter" || e.key === "r" || e.key === "R") { e.preventDefault(); location.href = "/review/next"; }
    else if (e.key === "h" || e.key === "H") { location.href = "/history"; }
  }

  // ---------------------------------------------------------------- review page
  let zoom = { s: 1, x: 0, y: 0 };
  function applyZoom() {
    const z = $("#zoom");
    if (z) z.style.transform = `translate(${zoom.x}px, ${zoom.y}px) scale(${zoom.s})`;
  }
  function zoomBy(f) { zoom.s = Math.min(8, Math.max(1, zoom.s * f)); if (zoom.s === 1) { zoom.x = 0; zoom.y = 0; } zoomedOn = null; applyZoom(); }

  // The photo zoomed onto a field's box (where its value was read), or back to the whole photo when it already
  // is and `toggle` says so. The zoom layer sits centred in the panel and scales about its own centre.
  let zoomedOn = null;
  function zoomToField(name, toggle) {
    const img = $("#photo-img"), panel = $("#review-photo");
    const f = ((initial.item && initial.item.fields) || []).find((x) => x.name === name);
    const pts = f ? boxPoints(f.box) : null;
    if (!img || !panel || !pts || !img.naturalWidth) return;
    if (toggle && zoomedOn === name) { zoom = { s: 1, x: 0, y: 0 }; zoomedOn = null; applyZoom(); return; }
    const k = img.clientWidth / img.naturalWidth;
    const xs = pts.map((p) => p[0] * k), ys = pts.map((p) => p[1] * k);
    const bw = Math.max(1, Math.max(...xs) - Math.min(...xs)), bh = Math.max(1, Math.max(...ys) - Math.min(...ys));
    const s = Math.min(8, Math.max(1, Math.min(panel.clientWidth / (bw * 1.5), panel.clientHeight / (bh * 4))));
    const bx = (Math.max(...xs) + Math.min(...xs)) / 2 - img.clientWidth / 2;
    const by = (Math.max(...ys) + Math.min(...ys)) / 2 - img.clientHeight / 2;
    zoom = { s, x: -s * bx, y: -s * by };
    zoomedOn = name;
    applyZoom();
  }

  let lastField = null;  // the review field last focused (its switches included), for Z
  function focusedField() {
    const f = document.activeElement && document.activeElement.closest && document.activeElement.closest(".field");
    return f ? f.dataset.field : null;
  }

  function setupZoom() {
    const box = $("#review-photo");
    if (!box) return;
    box.addEventListener("wheel", (e) => { e.preventDefault(); zoomBy(e.deltaY < 0 ? 1.2 : 1 / 1.2); }, { passive: false });
    let drag = null;
    box.addEventListener("pointerdown", (e) => { drag = { x: e.clientX - zoom.x, y: e.clientY - zoom.y }; });
    window.addEventListener("pointerup", () => { drag = null; });
    box.addEventListener("pointermove", (e) => { if (drag && zoom.s > 1) { zoom.x = e.clientX - drag.x; zoom.y = e.clientY - drag.y; applyZoom(); } });
    const img = $("#photo-img");
    if (img && initial.item) {
      const draw = () => drawOverlay($("#overlay"), img, initial.item, focusedField());
      if (img.complete) draw(); else img.addEventListener("load", draw);
      document.addEventListener("focusin", draw);
    }
  }

  let armed = false;
  let streamOpen = false;
  function armScanner(want) {
    if (want && !streamOpen) return;  // the page could not receive the scan yet; "hello" arms it
    if (armed === want) return;
    armed = want;
    post("/api/scanner", { armed: want }).then((r) => { document.body.dataset.scannerArmed = r.ok && want ? "1" : "0"; });
  }

  function onScan(code) {
    const a = document.activeElement;
    const form = $("#review-form");
    if (!form || !a || a.tagName !== "INPUT" || !form.contains(a) || a.type === "hidden") return;
    a.value = code;
    a.dispatchEvent(new Event("input", { bubbles: true }));
    a.classList.add("scanned");
    message(`Scanned into ${a.name.replace("_", " ")}: ${code}`, "ok");
  }

  function message(text, cls) {
    const m = $("#message");
    if (m) { m.textContent = text; m.className = "message " + (cls || ""); }
  }

  function changedFields() {
    const out = {};
    for (const input of document.querySelectorAll("#review-form .field input")) {
      if (input.value.trim() !== (input.dataset.original || "")) out[input.name] = input.value.trim();
    }
    return out;
  }

  async function decide(action, extra) {
    const id = Number($(".review").dataset.item);
    const payload = Object.assign({ action, changes: {}, why: "" }, extra);
    message("Saving…", "");
    const r = await post("/api/review/" + id, payload);
    if (!r.ok) { message(r.body.error || "Not saved (" + r.status + ")", "bad"); return; }
    armScanner(false);
    document.body.dataset.decided = r.body.decision;
    message(`Item ${id} ${r.body.decision}. The daemon records it.`, "ok");
    location.href = r.body.next ? "/review/" + r.body.next : "/";
  }

  function whyText() {
    const sel = $("#why"), free = $("#why-text");
    return (free.value.trim() || sel.value).trim();
  }

  // A character the reader could read two ways (letter or digit) is a switch: one click puts the other
  // reading in the field. The strip follows what is typed, and hides when the value's length changes.
  function syncDoubts(input) {
    const strip = input.closest(".field").querySelector(".doubts");
    if (!strip) return;
    const cells = [...strip.children], v = input.value, orig = input.dataset.original || "";
    strip.hidden = v.length !== cells.length;
    input.closest(".field").querySelector(".doubts-hint").hidden = strip.hidden;
    if (strip.hidden) return;
    cells.forEach((c, i) => {
      c.textContent = v[i];
      if (!c.classList.contains("flip")) return;
      c.disabled = !c.dataset.pair.includes(v[i]);
      c.classList.toggle("flipped", v[i] !== orig[i]);
    });
  }

  function flip(button) {
    const input = button.closest(".field").querySelector("input");
    const at = Number(button.dataset.at), pair = button.dataset.pair, v = input.value;
    if (!pair.includes(v[at])) return;
    input.value = v.slice(0, at) + (v[at] === pair[0] ? pair[1] : pair[0]) + v.slice(at + 1);
    input.dispatchEvent(new Event("input", { bubbles: true }));
  }

  function setupReview() {
    const form = $("#review-form");
    setupZoom();
    if (!form) return;
    const fields = [...form.querySelectorAll(".field input")];
    const first = form.querySelector(".field.doubtful input") || fields[0];
    form.addEventListener("focusin", (e) => {
      const f = e.target.closest(".field");
      if (f) lastField = f.dataset.field;
      if (e.target.tagName === "INPUT" && f) armScanner(true);
    });
    form.addEventListener("focusout", (e) => {
      if (!e.relatedTarget || !e.relatedTarget.closest || !e.relatedTarget.closest(".field")) armScanner(false);
    });
    form.addEventListener("input", (e) => {
      const f = e.target.closest(".field");
      if (f) f.classList.toggle("edited", e.target.value.trim() !== (e.target.dataset.original || ""));
      if (f) syncDoubts(e.target);
    });
    for (const b of form.querySelectorAll(".doubts .flip")) {
      const use = () => { flip(b); zoomToField(b.closest(".field").dataset.field, false); };  // and show it
      b.addEventListener("click", (e) => { e.preventDefault(); use(); });
      // Enter switches the focused character (Space does by the button's own click); it must not also save.
      b.addEventListener("keydown", (e) => {
        if (e.key === "Enter") { e.preventDefault(); e.stopPropagation(); use(); }
      });
    }
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!$("#reject-box").hidden) { decide("reject", { why: $("#reject-why").value }); return; }
      const changes = changedFields();
      if (Object.keys(changes).length === 0) { decide("accept", { why: "" }); return; }
      const why = whyText();
      if (!why) { message("Say why the values changed (pick a reason or type one).", "bad"); $("#why").focus(); return; }
      decide("correct", { changes, why });
    });
    if (first) { first.focus(); first.select(); }
    $("#accept").addEventListener("click", () => decide("accept", { why: "" }));
    $("#reject").addEventListener("click", () => { $("#reject-box").hidden = false; $("#reject-why").focus(); });
    $("#reject-confirm").addEventListener("click", () => decide("reject", { why: $("#reject-why").value }));
    $("#reject-why").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); decide("reject", { why: $("#reject-why").value }); } });
    document.addEventListener("keydown", (e) => {
      if (e.key === "Escape") {
        e.preventDefault();
        if (!$("#reject-box").hidden) { $("#reject-box").hidden = true; (first || form).focus(); return; }
        if (typing()) { document.activeElement.blur(); armScanner(false); return; }
        location.href = "/";
        return;
      }
      if (typing() || e.ctrlKey || e.metaKey || e.altKey) return;
      const k = e.key.toLowerCase();
      if (k === "a") { e.preventDefault(); decide("accept", { why: "" }); }
      else if (k === "x") { e.preventDefault(); $("#reject-box").hidden = false; $("#reject-why").focus(); }
      else if (k === "n") { e.preventDefault(); location.href = "/review/next"; }
      else if (k === "+" || k === "=") zoomBy(1.25);
      else if (k === "-") zoomBy(0.8);
      else if (k === "0") { zoom = { s: 1, x: 0, y: 0 }; zoomedOn = null; applyZoom(); }
      else if (k === "z") { e.preventDefault(); zoomToField(lastField || (first && first.name), true); }
      else if (k === "enter") { e.preventDefault(); form.requestSubmit(); }
      else if (/^[1-6]$/.test(k)) { e.preventDefault(); const f = fields[Number(k) - 1]; if (f) { f.focus(); f.select(); } }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (page === "signin") return;
    if (page === "live") {
      if (initial.status) applySnapshot(initial);
      document.addEventListener("keydown", livePageKeys);
    }
    if (page === "review") setupReview();
    if (page === "history") document.addEventListener("keydown", (e) => { if (e.key === "Escape") location.href = "/"; });
    connect();
  });
})();
