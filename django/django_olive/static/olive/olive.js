// olive.js: the live client for {% olive_comments %}. A plain ES module,
// no build step. One Live per section.olive on the page:
// - websocket to olive ({url}/ws) with backoff and jitter; after a
//   reconnect it resubscribes with `since` and refetches the list from
//   Django when olive answers recovered: false;
// - server-sent events ({url}/sse) when websockets keep failing;
// - close code 4401 (token expired): refresh the cookie, reconnect;
// - posts the comment form with fetch (preview and errors in place);
// - comments inserted live, without duplicates, tombstones applied;
// - who is here (presence), who is typing (ephemeral publish);
// - rectangles on the image (annotations).
// Only messages without `from` (published by Django, not by a browser)
// may carry HTML; a browser's messages are only ever typing signals.

const BACKOFF_MIN = 250, BACKOFF_MAX = 15000, TYPING_EVERY = 2000, TYPING_SHOWN = 4000;
// Websockets that never opened on this page this many times in a row:
// something between us and olive blocks them. (Once they have worked,
// failures are olive restarting, and we keep trying websockets.)
const WS_FAILURES_BEFORE_SSE = 3;

export class Live {
  constructor(section) {
    this.el = section;
    this.cfg = JSON.parse(section.querySelector("script[type='application/json']").textContent);
    this.list = section.querySelector(".olive-comments");
    this.status = section.querySelector(".olive-status");
    this.presenceEl = section.querySelector(".olive-presence");
    this.typingEl = section.querySelector(".olive-typing");
    this.form = section.querySelector(".olive-form");
    this.preview = section.querySelector(".olive-preview");
    this.figure = section.querySelector(".olive-image");
    this.lastId = {};          // key -> last message id seen, for `since`
    this.members = new Map();  // user -> name
    this.typing = new Map();   // user -> {name, timer}
    this.attempt = 0;
    this.wsFailures = 0;
    this.transport = "ws";
    this.refs = 0;
    this.lastTyping = 0;
    this.setupForm();
    if (this.figure) this.setupImage();
    this.drawBoxes();
    this.connect();
  }

  setStatus(text) { this.status.textContent = text; this.el.dataset.state = text; }

  // --- connection -------------------------------------------------------

  base(scheme) {
    const u = new URL(this.cfg.url, location.href);
    if (scheme) u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
    return u.href.replace(/\/$/, "");
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.transport === "sse") return this.connectSse();
    let opened = false;
    const ws = new WebSocket(this.base(true) + "/ws");
    this.ws = ws;
    ws.onopen = () => {
      opened = this.wsWorked = true;
      this.attempt = 0;
      this.wsFailures = 0;
      this.setStatus("live");
      for (const key of this.cfg.keys) {
        const frame = { type: "subscribe", key };
        if (this.lastId[key]) frame.since = this.lastId[key];
        ws.send(JSON.stringify(frame));
      }
    };
    ws.onmessage = (ev) => this.onFrame(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.clearPresence();
      this.el.dataset.closeCode = ev.code;  // why the page reconnected, for people and tests
      this.setStatus("reconnecting");
      if (ev.code === 4401) return this.refreshThen(() => this.connect());
      if (!opened && !this.wsWorked && ++this.wsFailures >= WS_FAILURES_BEFORE_SSE) this.transport = "sse";
      // A refused upgrade (401 for a stale cookie) looks like any failure.
      if (!opened && this.attempt === 0) return this.refreshThen(() => this.retry());
      this.retry();
    };
  }

  connectSse() {
    const q = new URLSearchParams();
    for (const key of this.cfg.keys) q.append("key", key);
    const since = this.lastId[this.cfg.key];
    if (since) q.set("since", since);
    const es = new EventSource(this.base(false) + "/sse?" + q);
    this.es = es;
    es.onopen = () => { this.attempt = 0; this.setStatus("live (sse)"); };
    es.onmessage = (ev) => this.onFrame(JSON.parse(ev.data));
    es.addEventListener("close", () => { es.close(); this.refreshThen(() => this.connectSse()); });
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) { this.es = null; this.retry(); }
    };
  }

  retry() {
    const ceiling = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** this.attempt++);
    const delay = ceiling / 2 + Math.random() * ceiling / 2;
    this.setStatus("reconnecting");
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  async refreshThen(next) {
    try {
      const q = new URLSearchParams({ key: this.cfg.key });
      await fetch(this.cfg.token_url + "?" + q, { credentials: "same-origin" });
    } catch (e) { /* the reconnect will tell */ }
    next();
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(frame)); return true; }
    return false;
  }

  publish(data) {
    const frame = { type: "publish", key: this.cfg.key, data, ref: String(++this.refs) };
    if (this.send(frame)) return;
    if (this.es) {
      fetch(this.base(false) + "/publish", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key: this.cfg.key, data }),
      }).catch(() => {});
    }
  }

  // --- frames -----------------------------------------------------------

  onFrame(f) {
    switch (f.type) {
      case "subscribed":
        if (!f.recovered && this.lastId[f.key]) this.refetch();
        if (f.key === this.cfg.key && this.ws) this.send({ type: "presence", key: f.key });
        break;
      case "message":
        this.lastId[f.key] = f.id;
        if (f.from) this.onUserMessage(f);
        else if (f.data && f.data.type === "comment") this.applyComment(f.data);
        break;
      case "presence":
        this.members = new Map((f.members || []).map((m) => [m.user, m.name || m.user]));
        this.drawPresence(f.anonymous, f.count);
        break;
      case "join":
        if (f.member) this.members.set(f.member.user, f.member.name || f.member.user);
        this.drawPresence(f.anonymous);
        break;
      case "leave":
        if (f.member) this.members.delete(f.member.user);
        this.drawPresence(f.anonymous);
        break;
      case "error":
        if (f.code === "forbidden" && !f.ref) this.setStatus("live updates are off");
        break;
    }
  }

  onUserMessage(f) {
    const me = this.cfg.user && this.cfg.user.id;
    if (!f.data || f.data.type !== "typing" || f.from.user === me) return;
    const old = this.typing.get(f.from.user);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => { this.typing.delete(f.from.user); this.drawTyping(); }, TYPING_SHOWN);
    this.typing.set(f.from.user, { name: f.from.name || f.from.user, timer });
    this.drawTyping();
  }

  applyComment(d) {
    const old = this.list.querySelector(`[data-comment="${d.comment}"]`);
    if (d.op === "removed") { if (old) old.remove(); this.drawBoxes(); return; }
    this.insertHtml(d.html, d.comment);
  }

  insertHtml(html, id) {
    const t = document.createElement("template");
    t.innerHTML = html.trim();
    const node = t.content.firstElementChild;
    const old = this.list.querySelector(`[data-comment="${id}"]`);
    if (old) old.replaceWith(node); else this.list.append(node);
    this.drawBoxes();
    this.el.dispatchEvent(new CustomEvent("olive:comment", { detail: { id, node } }));
  }

  async refetch() {
    const q = new URLSearchParams({ key: this.cfg.key });
    const resp = await fetch(this.cfg.comments_url + "?" + q, { credentials: "same-origin" });
    if (!resp.ok) return;
    this.list.innerHTML = await resp.text();
    this.drawBoxes();
    this.el.dispatchEvent(new CustomEvent("olive:refetched"));
  }

  // --- presence and typing ----------------------------------------------

  clearPresence() { this.members.clear(); this.drawPresence(0); }

  drawPresence(anonymous, count) {
    if (anonymous !== undefined) this.anonymous = anonymous;
    this.presenceEl.replaceChildren();
    if (count !== undefined) { this.presenceEl.textContent = `${count} here`; return; }
    for (const [user, name] of this.members) {
      const li = document.createElement("li");
      li.textContent = name;
      li.dataset.user = user;
      this.presenceEl.append(li);
    }
    if (this.anonymous) {
      const li = document.createElement("li");
      li.textContent = `${this.anonymous} guest${this.anonymous > 1 ? "s" : ""}`;
      this.presenceEl.append(li);
    }
  }

  drawTyping() {
    const names = [...this.typing.values()].map((t) => t.name);
    this.typingEl.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  }

  // --- the form ---------------------------------------------------------

  setupForm() {
    const text = this.form.querySelector("textarea");
    if (text && this.cfg.publish) {
      text.addEventListener("input", () => {
        const now = Date.now();
        if (now - this.lastTyping < TYPING_EVERY) return;
        this.lastTyping = now;
        this.publish({ type: "typing" });
      });
    }
    this.form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.submit(ev.submitter && ev.submitter.name === "preview");
    });
  }

  async submit(preview) {
    const body = new FormData(this.form);
    const textarea = this.form.querySelector("textarea");
    const sent = { text: textarea.value, rect: this.rect };
    if (preview) body.set("preview", "1");
    this.preview.replaceChildren();
    let resp;
    try {
      resp = await fetch(this.form.action, { method: "POST", body, credentials: "same-origin" });
    } catch (e) {
      this.preview.textContent = "Could not reach the site; your comment was not posted.";
      return;
    }
    if (resp.ok && resp.redirected && !preview) {
      const posted = await resp.json();
      this.insertHtml(posted.html, posted.comment);
      // Only what was sent: the user may have started the next comment.
      if (textarea.value === sent.text) textarea.value = "";
      if (this.rect === sent.rect) this.setRect(null);
      return;
    }
    // The comments framework's preview page: its heading, the previewed
    // text and the errors, shown under the form.
    const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
    const parts = doc.querySelectorAll("h1, blockquote, .errorlist");
    if (!parts.length) this.preview.textContent = `The comment was not posted (${resp.status}).`;
    for (const p of parts) this.preview.append(document.importNode(p, true));
    // A new security hash and timestamp come with the preview.
    for (const name of ["timestamp", "security_hash"]) {
      const fresh = doc.querySelector(`input[name="${name}"]`);
      const mine = this.form.querySelector(`input[name="${name}"]`);
      if (fresh && mine) mine.value = fresh.value;
    }
  }

  // --- annotations --------------------------------------------------------

  setupImage() {
    const fig = this.figure;
    const frac = (ev) => {
      const r = fig.querySelector("img").getBoundingClientRect();
      return [Math.min(1, Math.max(0, (ev.clientX - r.left) / r.width)), Math.min(1, Math.max(0, (ev.clientY - r.top) / r.height))];
    };
    let start = null;
    fig.addEventListener("pointerdown", (ev) => {
      if (!this.form.querySelector("input[name=x]")) return;
      start = frac(ev);
      fig.setPointerCapture(ev.pointerId);
      ev.preventDefault();
    });
    fig.addEventListener("pointermove", (ev) => {
      if (!start) return;
      const [x, y] = frac(ev);
      this.setRect({ x: Math.min(x, start[0]), y: Math.min(y, start[1]), w: Math.abs(x - start[0]), h: Math.abs(y - start[1]) });
    });
    fig.addEventListener("pointerup", (ev) => {
      if (!start) return;
      start = null;
      const r = this.rect;
      if (!r || r.w < 0.01 || r.h < 0.01) this.setRect(null);
      else this.form.querySelector("textarea").focus();
    });
  }

  setRect(r) {
    this.rect = r;
    for (const k of ["x", "y", "w", "h"]) {
      const input = this.form.querySelector(`input[name=${k}]`);
      if (input) input.value = r ? r[k].toFixed(4) : "";
    }
    this.drawBoxes();
  }

  drawBoxes() {
    const layer = this.figure && this.figure.querySelector(".olive-boxes");
    if (!layer) return;
    const box = (r, cls, label, id) => {
      const d = document.createElement("div");
      d.className = cls;
      Object.assign(d.style, { left: `${r.x * 100}%`, top: `${r.y * 100}%`, width: `${r.w * 100}%`, height: `${r.h * 100}%` });
      if (label) d.title = label;
      if (id) d.dataset.comment = id;
      return d;
    };
    layer.replaceChildren();
    for (const c of this.list.querySelectorAll("[data-rect]")) {
      const [x, y, w, h] = c.dataset.rect.split(",").map(Number);
      const author = c.querySelector(".olive-author");
      layer.append(box({ x, y, w, h }, "olive-box", author && author.textContent, c.dataset.comment));
    }
    if (this.rect) layer.append(box(this.rect, "olive-box olive-draft"));
  }
}

export function mount(section) {
  if (!section.olive) section.olive = new Live(section);
  return section.olive;
}

for (const section of document.querySelectorAll("section.olive")) mount(section);
