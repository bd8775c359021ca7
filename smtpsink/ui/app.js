// smtpsink web page. Everything a message carries is untrusted: it reaches
// the DOM only through textContent and attributes set one by one, and its
// HTML only inside a sandboxed iframe served with its own CSP.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { q: "", selected: null, tab: "html", rawFor: null, listSeq: 0 };
const safeScheme = /^(https?:|mailto:)/i;
const listLimit = 200;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  if (!r.ok && r.status !== 404) throw new Error(path + ": " + r.status);
  return r;
}

function fmtTime(s) {
  const d = new Date(s);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function showStats(st) {
  const parts = [
    "received " + st.received, "stored " + st.stored, "rejected " + st.rejected,
    "dropped " + st.dropped, "sessions " + st.sessions, "duplicate Message-IDs " + st.duplicate_message_ids,
  ];
  if (st.bounces_generated || st.complaints_generated) {
    parts.push("bounces " + st.bounces_generated, "complaints " + st.complaints_generated,
      "reports delivered " + st.reports_delivered, "failed " + st.reports_failed);
  }
  $("stats").textContent = parts.join(" · ");
}

async function loadList() {
  const seq = ++state.listSeq;
  const p = new URLSearchParams({ limit: String(listLimit) });
  if (state.q) p.set("q", state.q);
  const r = await api("/api/messages?" + p);
  const msgs = await r.json();
  if (seq !== state.listSeq) return; // a newer request is on its way
  const list = $("list");
  list.replaceChildren(...msgs.map(row));
  $("empty").hidden = msgs.length > 0;
  $("empty").textContent = state.q ? "No message matches." : "No messages";
}

function row(m) {
  const dkim = (m.dkim && m.dkim[0]) || { result: "none" };
  const li = el("li", { "data-id": m.id, tabindex: "0" },
    el("div", { class: "row1" },
      el("span", { class: "to", text: (m.rcpt_to || []).join(", ") }),
      el("span", { class: "time", text: fmtTime(m.received_at) })),
    el("div", { class: "row2" },
      el("span", { class: "subject", text: m.subject || "(no subject)" }),
      m.kind ? el("span", { class: "badge kind", text: m.kind }) : null,
      m.dropped ? el("span", { class: "badge dropped", text: "dropped" }) : null,
      el("span", { class: "badge " + dkim.result, text: "DKIM " + dkim.result })));
  if (m.id === state.selected) li.classList.add("selected");
  li.addEventListener("click", () => { location.hash = "#" + m.id; });
  li.addEventListener("keydown", (ev) => { if (ev.key === "Enter") location.hash = "#" + m.id; });
  return li;
}

function showPlaceholder() {
  state.selected = null;
  $("view").hidden = true;
  $("placeholder").hidden = false;
  $("v-html").removeAttribute("src");
  for (const li of $("list").children) li.classList.remove("selected");
}

async function select(id) {
  const r = await api("/api/messages/" + encodeURIComponent(id));
  if (r.status === 404) { showPlaceholder(); return; }
  const m = await r.json();
  state.selected = id;
  state.rawFor = null;
  for (const li of $("list").children) li.classList.toggle("selected", li.dataset.id === id);
  $("placeholder").hidden = true;
  $("view").hidden = false;
  $("v-subject").textContent = m.subject || "(no subject)";

  const header = (name) => {
    const f = m.headers.find((h) => h.name.toLowerCase() === name.toLowerCase());
    return f ? f.value : "";
  };
  const meta = [
    ["From", header("From")], ["To", header("To")], ["Date", header("Date")],
    ["Envelope", (m.mail_from || "<>") + " → " + m.rcpt_to.join(", ")],
    ["Message-ID", m.message_id], ["Kind", m.kind], ["Size", m.size + " bytes"],
    ["Received", new Date(m.received_at).toLocaleString()],
  ];
  if (m.attachments.length) meta.push(["Attachments", m.attachments.map((a) => (a.filename || "(unnamed)") + " " + a.content_type + " " + a.size + " B").join(", ")]);
  if (m.decode_error) meta.push(["Decoding", m.decode_error]);
  $("v-meta").replaceChildren(...meta.filter(([, v]) => v).flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));

  const links = $("v-links");
  links.replaceChildren();
  if (m.links.length) {
    links.append(el("span", { class: "muted", text: "Links: " }));
    for (const l of m.links) {
      if (safeScheme.test(l.url)) {
        links.append(el("a", { class: "link", href: l.url, target: "_blank", rel: "noopener noreferrer", title: l.text || l.url, text: l.url }));
      } else {
        links.append(el("code", { class: "link unsafe", title: "not opened: scheme not allowed", text: l.url }));
      }
    }
  }

  const hasHTML = m.html !== "";
  $("v-nohtml").hidden = hasHTML;
  $("v-html").hidden = !hasHTML;
  if (hasHTML) $("v-html").src = "/api/messages/" + encodeURIComponent(id) + "/html";
  else $("v-html").removeAttribute("src");
  $("panel-text").textContent = m.text || "(no text part)";
  $("v-headers").replaceChildren(...m.headers.map((h) =>
    el("tr", {}, el("td", { class: "name", text: h.name }), el("td", { class: "value", text: h.value }))));
  $("v-dkim").replaceChildren(...m.dkim.map((d) =>
    el("tr", {}, el("td", { class: d.result, text: d.result }), el("td", { text: d.domain }),
      el("td", { text: d.selector }), el("td", { text: d.algorithm }), el("td", { text: d.error }))));
  const sigs = m.headers.filter((h) => h.name.toLowerCase() === "dkim-signature");
  $("v-dkimsigs").replaceChildren(...(sigs.length ? sigs.map((h) => el("pre", { text: h.value.replace(/;\s*/g, ";\n") }))
    : [el("p", { class: "muted", text: "The message is not signed." })]));
  $("v-rawlink").href = "/api/messages/" + encodeURIComponent(id) + "/raw";
  $("v-rawlink").setAttribute("download", id + ".eml");
  $("v-raw").textContent = "";
  showTab(state.tab);
}

async function showTab(tab) {
  state.tab = tab;
  for (const b of $("tabs").children) b.setAttribute("aria-selected", String(b.dataset.tab === tab));
  for (const p of document.querySelectorAll(".panel")) p.hidden = p.id !== "panel-" + tab;
  if (tab === "raw" && state.selected && state.rawFor !== state.selected) {
    const id = state.selected;
    const r = await api("/api/messages/" + encodeURIComponent(id) + "/raw");
    if (state.selected === id && r.ok) { $("v-raw").textContent = await r.text(); state.rawFor = id; }
  }
}

function route() {
  const id = decodeURIComponent(location.hash.slice(1));
  if (id) select(id); else showPlaceholder();
}

function live() {
  const es = new EventSource("/api/events");
  es.addEventListener("open", () => $("live").classList.remove("off"));
  es.addEventListener("error", () => $("live").classList.add("off"));
  es.addEventListener("change", async (ev) => {
    showStats(JSON.parse(ev.data));
    await loadList();
    if (state.selected && !$("list").querySelector('[data-id="' + CSS.escape(state.selected) + '"]') && !state.q) {
      // Deleted, or pushed out of the ring.
      const r = await api("/api/messages/" + encodeURIComponent(state.selected));
      if (r.status === 404) history.replaceState(null, "", location.pathname), showPlaceholder();
    }
  });
}

function init() {
  for (const b of $("tabs").children) b.addEventListener("click", () => showTab(b.dataset.tab));
  let timer;
  $("search").addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => { state.q = $("search").value.trim(); loadList(); }, 150);
  });
  $("delete-one").addEventListener("click", async () => {
    if (!state.selected) return;
    await api("/api/messages/" + encodeURIComponent(state.selected), { method: "DELETE" });
    history.replaceState(null, "", location.pathname);
    showPlaceholder();
    loadList();
  });
  $("delete-all").addEventListener("click", async () => {
    await api("/api/messages", { method: "DELETE" });
    history.replaceState(null, "", location.pathname);
    showPlaceholder();
    loadList();
  });
  window.addEventListener("hashchange", route);
  showTab(state.tab);
  loadList().then(route);
  live();
}

init();
