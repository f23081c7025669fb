/* Toolgate live security feed: reads /ws/security-feed and updates the page's DOM directly.
 *
 * Loaded by <script src> from the /live page's st.html widget (same origin, so
 * the gateway's CSP allows it without any inline script).  Streamlit may run
 * this file more than once (each time the widget mounts): every root element
 * [data-toolgate-live] is bound once, and a feed whose root left the page
 * closes its socket.  Event data is attacker-influenced (paths, user names of
 * failed sign-ins): it is only ever set with textContent, never as HTML.
 */
(function () {
  "use strict";
  var REG = window.__toolgateLiveFeed || (window.__toolgateLiveFeed = { feeds: [] });
  var MAX_ITEMS = 200;
  var KIND_LABEL = { denial: "Denied", signin_failure: "Sign-in failed", policy: "Policy" };
  var COUNT_LABEL = { denial: "denied", signin_failure: "failed sign-ins", policy: "policy changes", anonymous: "anonymous" };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function timeOf(iso) {
    var d = iso ? new Date(iso) : new Date();
    if (isNaN(d.getTime())) d = new Date();
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return { short: p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds()), full: d.toISOString() };
  }

  function describe(ev) {
    var who = ev.user || "anonymous";
    var what = ev.path || (ev.tool ? "tool " + ev.tool : "");
    var meta = [];
    var title;
    if (ev.kind === "denial") {
      title = who + " denied " + what;
      if (ev.reason) meta.push(ev.reason);
      if (ev.rule_id) meta.push("rule " + ev.rule_id);
      if (ev.status) meta.push(String(ev.status));
      if (ev.action === "page.denied") meta.push("in-app page switch");
      if (ev.action === "websocket.session") meta.push("websocket");
    } else if (ev.kind === "signin_failure") {
      title = "Sign-in failed for " + who;
      if (ev.reason) meta.push(ev.reason);
      if (ev.auth_method) meta.push(ev.auth_method);
    } else {
      if (ev.action === "policy.changed") title = "Policy changed" + (ev.user ? " by " + ev.user : "");
      else if (ev.action === "policy.reloaded") title = "Policy reloaded";
      else title = "Policy reload rejected";
      if (ev.policy_version) meta.push("version " + ev.policy_version);
      if (ev.reason) meta.push(ev.reason);
      var d = ev.details || {};
      Object.keys(d).forEach(function (k) { meta.push(k + ": " + d[k]); });
    }
    if (ev.client_ip) meta.push("from " + ev.client_ip);
    return { title: title, meta: meta.join(" · ") };
  }

  function Feed(root) {
    this.root = root;
    this.url = root.getAttribute("data-ws") || "/ws/security-feed";
    this.ws = null;
    this.attempt = 0;
    this.lastId = null;
    this.epoch = null;
    this.timer = null;
    this.lastMessage = 0;
    this.heartbeatMs = 20000;
    this.stopped = false;
    this.counts = { denial: 0, signin_failure: 0, policy: 0, anonymous: 0 };
    this.hiddenAnon = 0;
    this.build();
    this.connect();
    var self = this;
    this.tick = setInterval(function () { self.onTick(); }, 1000);
  }

  Feed.prototype.build = function () {
    var r = this.root;
    r.textContent = "";
    var bar = el("div", "tg-live-bar");
    this.state = el("span", "tg-live-state", "Connecting…");
    this.state.setAttribute("role", "status");
    this.state.setAttribute("aria-live", "polite");
    bar.appendChild(this.state);
    this.countEls = {};
    var counts = el("span", "tg-live-counts");
    var self = this;
    ["denial", "signin_failure", "policy", "anonymous"].forEach(function (k) {
      var c = el("span", "tg-live-count tg-kind-" + k);
      c.setAttribute("data-kind", k);
      var n = el("b", null, "0");
      c.appendChild(n);
      c.appendChild(document.createTextNode(" " + COUNT_LABEL[k]));
      self.countEls[k] = n;
      counts.appendChild(c);
    });
    bar.appendChild(counts);
    var filters = el("span", "tg-live-filters");
    this.show = {};
    [["denial", "Denials", true], ["signin_failure", "Sign-in failures", true], ["policy", "Policy changes", true], ["anonymous", "Anonymous requests", false]].forEach(function (f) {
      var lab = el("label", "tg-live-filter");
      var box = document.createElement("input");
      box.type = "checkbox";
      box.checked = f[2];
      box.setAttribute("data-filter", f[0]);
      self.show[f[0]] = f[2];
      box.addEventListener("change", function () { self.show[f[0]] = box.checked; self.applyFilters(); });
      lab.appendChild(box);
      lab.appendChild(document.createTextNode(" " + f[1]));
      filters.appendChild(lab);
    });
    var clear = el("button", "tg-live-clear", "Clear");
    clear.type = "button";
    clear.addEventListener("click", function () { self.list.textContent = ""; self.updateEmpty(); });
    filters.appendChild(clear);
    bar.appendChild(filters);
    r.appendChild(bar);
    this.empty = el("p", "tg-live-empty", "Waiting for denials, failed sign-ins and policy changes…");
    r.appendChild(this.empty);
    this.list = el("ol", "tg-live-list");
    r.appendChild(this.list);
  };

  Feed.prototype.setState = function (state, text) {
    this.root.setAttribute("data-state", state);
    this.state.setAttribute("data-state", state);
    this.state.textContent = text;
  };

  Feed.prototype.connect = function () {
    if (this.stopped) return;
    var self = this;
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var q = this.epoch && this.lastId !== null ? "?epoch=" + encodeURIComponent(this.epoch) + "&since=" + this.lastId : "";
    this.setState("connecting", this.attempt ? "Reconnecting…" : "Connecting…");
    var ws;
    try {
      ws = new WebSocket(proto + "//" + location.host + this.url + q);
    } catch (e) {
      this.retry();
      return;
    }
    this.ws = ws;
    this.greeted = false;
    ws.onmessage = function (m) { self.onMessage(m); };
    ws.onclose = function (e) { self.onClose(e); };
  };

  Feed.prototype.onMessage = function (m) {
    this.lastMessage = Date.now();
    var msg;
    try { msg = JSON.parse(m.data); } catch (e) { return; }
    if (msg.type === "hello") {
      this.greeted = true;
      this.attempt = 0;
      if (msg.epoch !== this.epoch) this.lastId = null;
      this.epoch = msg.epoch;
      this.heartbeatMs = (msg.heartbeat_s || 20) * 1000;
      this.setState("live", "Live");
    } else if (msg.type === "event" && msg.event) {
      this.take(msg.event);
    } else if (msg.type === "events" && Array.isArray(msg.events)) {
      for (var i = 0; i < msg.events.length; i++) this.take(msg.events[i]);
    } else if (msg.type === "dropped") {
      this.notice(msg.count + " events skipped (the page could not keep up)");
    }
  };

  Feed.prototype.take = function (ev) {
    if (!ev || typeof ev !== "object") return;
    if (typeof ev.id === "number") this.lastId = ev.id;
    this.add(ev);
  };

  Feed.prototype.onClose = function (e) {
    this.ws = null;
    if (this.stopped) return;
    if (e.code === 4401) { this.halt("signed-out", "Session ended: reload the page to sign in again"); return; }
    if (e.code === 4403) { this.halt("forbidden", "Access to the live feed was withdrawn"); return; }
    var self = this;
    if (!this.greeted && this.attempt >= 1) {
      // A refused handshake looks like any dropped connection; ask whether we are still signed in.
      fetch("/api/whoami", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) self.halt("signed-out", "Signed out: reload the page to sign in again");
          else self.retry();
        })
        .catch(function () { self.retry(); });
      return;
    }
    this.retry();
  };

  Feed.prototype.retry = function () {
    if (this.stopped) return;
    var base = Math.min(30000, 500 * Math.pow(2, this.attempt));
    var delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.attempt += 1;
    this.retryAt = Date.now() + delay;
    this.setState("reconnecting", "Disconnected: retrying in " + Math.ceil(delay / 1000) + " s");
    var self = this;
    clearTimeout(this.timer);
    this.timer = setTimeout(function () { self.retryAt = null; self.connect(); }, delay);
  };

  Feed.prototype.halt = function (state, text) {
    this.stopped = true;
    clearTimeout(this.timer);
    this.setState(state, text);
  };

  Feed.prototype.onTick = function () {
    if (!this.root.isConnected) { this.destroy(); return; }
    if (this.retryAt) {
      this.setState("reconnecting", "Disconnected: retrying in " + Math.max(0, Math.ceil((this.retryAt - Date.now()) / 1000)) + " s");
    }
    // A silent socket (no event, no heartbeat) is a dead one.
    if (this.ws && this.greeted && Date.now() - this.lastMessage > this.heartbeatMs * 2.5) {
      try { this.ws.close(); } catch (e) { /* already closing */ }
    }
  };

  Feed.prototype.destroy = function () {
    this.stopped = true;
    clearInterval(this.tick);
    clearTimeout(this.timer);
    if (this.ws) { try { this.ws.close(1000); } catch (e) { /* ignore */ } }
    REG.feeds = REG.feeds.filter(function (f) { return f !== this; }, this);
  };

  Feed.prototype.visible = function (li) {
    var k = li.getAttribute("data-kind");
    if (k === "notice") return true;
    if (!this.show[k]) return false;
    if (li.getAttribute("data-anonymous") === "true" && !this.show.anonymous) return false;
    return true;
  };

  Feed.prototype.applyFilters = function () {
    var items = this.list.children;
    for (var i = 0; i < items.length; i++) items[i].hidden = !this.visible(items[i]);
    this.updateEmpty();
  };

  Feed.prototype.updateEmpty = function () {
    var any = false;
    var items = this.list.children;
    for (var i = 0; i < items.length; i++) if (!items[i].hidden) { any = true; break; }
    this.empty.hidden = any;
  };

  Feed.prototype.add = function (ev) {
    var kind = KIND_LABEL[ev.kind] ? ev.kind : "denial";
    var counted = ev.anonymous ? "anonymous" : kind;
    this.counts[counted] += 1;
    this.countEls[counted].textContent = String(this.counts[counted]);
    var t = timeOf(ev.ts);
    var d = describe(ev);
    var li = el("li", "tg-live-item tg-kind-" + kind + " tg-new");
    li.setAttribute("data-kind", kind);
    li.setAttribute("data-action", ev.action || "");
    if (ev.anonymous) li.setAttribute("data-anonymous", "true");
    var time = el("time", "tg-live-time", t.short);
    time.setAttribute("datetime", t.full);
    time.title = t.full;
    li.appendChild(time);
    li.appendChild(el("span", "tg-live-badge", KIND_LABEL[kind]));
    var body = el("span", "tg-live-body");
    body.appendChild(el("span", "tg-live-title", d.title));
    if (d.meta) body.appendChild(el("span", "tg-live-meta", d.meta));
    li.appendChild(body);
    li.hidden = !this.visible(li);
    this.list.insertBefore(li, this.list.firstChild);
    while (this.list.children.length > MAX_ITEMS) this.list.removeChild(this.list.lastChild);
    setTimeout(function () { li.classList.remove("tg-new"); }, 2500);
    this.updateEmpty();
  };

  Feed.prototype.notice = function (text) {
    var li = el("li", "tg-live-item tg-live-notice", text);
    li.setAttribute("data-kind", "notice");
    this.list.insertBefore(li, this.list.firstChild);
  };

  function bindAll() {
    var roots = document.querySelectorAll("[data-toolgate-live]");
    for (var i = 0; i < roots.length; i++) {
      if (roots[i].getAttribute("data-bound") === "1") continue;
      roots[i].setAttribute("data-bound", "1");
      REG.feeds.push(new Feed(roots[i]));
    }
  }

  bindAll();
})();
