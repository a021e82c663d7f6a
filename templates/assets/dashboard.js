// Provisioning dashboard: live updates over Server-Sent Events.
// Plain JavaScript, no build step. The pages are complete without this
// script; it only keeps them current. It never sends anything but GETs.
(function () {
  "use strict";

  var STATES = {
    registered: ["registered", "\u25cb"],
    pxe_ready: ["PXE ready", "\u25d4"],
    pxe_booted: ["PXE booted", "\u25d1"],
    installing: ["installing", "\u25d5"],
    installed: ["installed", "\u25c9"],
    first_boot: ["first boot", "\u21bb"],
    joining: ["joining", "\u21c4"],
    ready: ["ready", "\u2713"],
    failed: ["failed", "\u2715"]
  };
  var STEPS = ["registered", "pxe_ready", "pxe_booted", "installing", "installed", "first_boot", "joining", "ready"];

  var body = document.body;
  var page = body.getAttribute("data-page");
  var serverNow = parseInt(body.getAttribute("data-now-ms") || "0", 10);
  var offset = serverNow > 0 ? serverNow - Date.now() : 0;

  function now() { return Date.now() + offset; }

  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function duration(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + pad(s % 60) + "s";
    if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor((s % 3600) / 60)) + "m";
    return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
  }

  function tick() {
    var els = document.querySelectorAll("[data-since-ms]");
    for (var i = 0; i < els.length; i++) {
      var since = parseInt(els[i].getAttribute("data-since-ms"), 10);
      if (since > 0) els[i].textContent = duration(now() - since);
    }
  }

  function announce(text) {
    var region = document.getElementById("announce");
    if (!region) return;
    var p = document.createElement("p");
    p.textContent = text;
    region.appendChild(p);
    while (region.childNodes.length > 5) region.removeChild(region.firstChild);
  }

  function setLive(state, text) {
    var live = document.getElementById("live");
    var label = document.getElementById("live-text");
    if (!live || !label) return;
    live.setAttribute("data-state", state);
    label.textContent = text;
  }

  function setStateClass(el, state) {
    var classes = el.className.split(/\s+/).filter(function (c) { return c.indexOf("st-") !== 0; });
    classes.push("st-" + state);
    el.className = classes.join(" ");
  }

  // Applies a transition to a tile (or the host page's header) at once; the
  // full refresh that follows fills in everything else.
  function applyState(el, state, atMs) {
    var info = STATES[state] || [state, "?"];
    el.setAttribute("data-state", state);
    setStateClass(el, state);
    var badge = el.querySelector("[data-role=badge]");
    if (badge) {
      setStateClass(badge, state);
      var icon = badge.querySelector(".icon");
      if (icon) icon.textContent = info[1];
      var label = badge.querySelector("[data-role=label]");
      if (label) label.textContent = info[0];
    }
    var since = el.querySelector("[data-role=since]");
    if (since) since.setAttribute("data-since-ms", String(atMs));
    var steps = el.querySelector("[data-role=steps]");
    if (steps) {
      var pos = STEPS.indexOf(state);
      var items = steps.children;
      for (var i = 0; i < items.length; i++) {
        var status = pos < 0 ? "failed" : i < pos || (i === pos && state === "ready") ? "done" : i === pos ? "current" : "todo";
        items[i].className = "step " + status;
        var sr = items[i].querySelector(".sr-only");
        if (sr && page === "fleet") sr.textContent = STEPS[i].replace("_", " ") + ": " + status;
      }
      steps.setAttribute("aria-label", "Progress: step " + (pos + 1) + " of 8");
    }
    el.classList.remove("flash");
    void el.offsetWidth;
    el.classList.add("flash");
  }

  // ---- fleet page -------------------------------------------------------

  function currentFilter() { return body.getAttribute("data-filter") || ""; }

  function applyFilter() {
    var filter = currentFilter();
    var tiles = document.querySelectorAll("#grid > .tile");
    var shown = 0;
    for (var i = 0; i < tiles.length; i++) {
      var hide = filter !== "" && tiles[i].getAttribute("data-state") !== filter;
      tiles[i].hidden = hide;
      if (!hide) shown++;
    }
    var empty = document.getElementById("grid-empty");
    if (empty) empty.hidden = shown > 0;
    var links = document.querySelectorAll(".count[data-filter]");
    for (var j = 0; j < links.length; j++) {
      if (links[j].getAttribute("data-filter") === filter) links[j].setAttribute("aria-current", "true");
      else links[j].removeAttribute("aria-current");
    }
    var note = document.getElementById("filter-note");
    if (note) note.textContent = filter ? "\u00b7 " + (STATES[filter] || [filter])[0] : "";
  }

  function recount() {
    var tiles = document.querySelectorAll("#grid > .tile");
    var counts = { all: tiles.length };
    for (var i = 0; i < tiles.length; i++) {
      var s = tiles[i].getAttribute("data-state");
      counts[s] = (counts[s] || 0) + 1;
    }
    var els = document.querySelectorAll("[data-count]");
    for (var j = 0; j < els.length; j++) {
      var key = els[j].getAttribute("data-count");
      var n = counts[key] || 0;
      els[j].textContent = String(n);
      var link = els[j].closest(".count");
      if (link && key !== "all") link.classList.toggle("zero", n === 0);
    }
  }

  function onFilterClick(ev) {
    var link = ev.target.closest ? ev.target.closest(".count[data-filter]") : null;
    if (!link || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    var filter = link.getAttribute("data-filter");
    if (filter === currentFilter() && filter !== "") filter = "";
    body.setAttribute("data-filter", filter);
    history.replaceState(null, "", filter ? "/?state=" + encodeURIComponent(filter) : "/");
    applyFilter();
  }

  function mergeFleet(doc) {
    var grid = document.getElementById("grid");
    var newGrid = doc.getElementById("grid");
    if (!grid || !newGrid) {
      // The set of hosts went from none to some (or back): take the page.
      var main = document.getElementById("main");
      var newMain = doc.getElementById("main");
      if (main && newMain) main.innerHTML = newMain.innerHTML;
      applyFilter();
      return;
    }
    var existing = {};
    var tiles = grid.querySelectorAll(":scope > .tile");
    for (var i = 0; i < tiles.length; i++) existing[tiles[i].getAttribute("data-host")] = tiles[i];
    var fresh = newGrid.querySelectorAll(":scope > .tile");
    var previous = null;
    var seen = {};
    for (var j = 0; j < fresh.length; j++) {
      var name = fresh[j].getAttribute("data-host");
      seen[name] = true;
      var el = existing[name];
      if (el) {
        if (el.innerHTML !== fresh[j].innerHTML) el.innerHTML = fresh[j].innerHTML;
        el.className = fresh[j].className + (el.classList.contains("flash") ? " flash" : "");
        el.setAttribute("data-state", fresh[j].getAttribute("data-state"));
      } else {
        el = document.importNode(fresh[j], true);
      }
      var want = previous ? previous.nextSibling : grid.firstChild;
      if (want !== el) grid.insertBefore(el, want);
      previous = el;
    }
    for (var k in existing) {
      if (!seen[k]) grid.removeChild(existing[k]);
    }
    ["diagnostics", "unknown"].forEach(function (id) {
      var a = document.getElementById(id);
      var b = doc.getElementById(id);
      if (a && b && a.innerHTML !== b.innerHTML) a.innerHTML = b.innerHTML;
    });
    recount();
    applyFilter();
    tick();
  }

  // ---- both pages -------------------------------------------------------

  var refreshTimer = null;
  var refreshing = false;
  var again = false;

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    var url = page === "fleet" ? "/" : location.pathname;
    fetch(url, { headers: { "Accept": "text/html" }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(new Error("HTTP " + r.status)); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = parseInt(doc.body.getAttribute("data-now-ms") || "0", 10);
        if (fresh > 0) offset = fresh - Date.now();
        if (page === "fleet") {
          mergeFleet(doc);
        } else {
          var main = document.getElementById("main");
          var newMain = doc.getElementById("main");
          if (main && newMain && main.innerHTML !== newMain.innerHTML) {
            var hadFocus = main.contains(document.activeElement) && document.activeElement !== main;
            main.innerHTML = newMain.innerHTML;
            if (hadFocus) main.focus();
          }
          tick();
        }
        var gen = document.getElementById("generated");
        var newGen = doc.getElementById("generated");
        if (gen && newGen) gen.textContent = newGen.textContent;
      })
      .catch(function () { /* the next event or reconnect tries again */ })
      .then(function () {
        refreshing = false;
        if (again) { again = false; scheduleRefresh(); }
      });
  }

  function scheduleRefresh() {
    if (refreshTimer) clearTimeout(refreshTimer);
    refreshTimer = setTimeout(function () { refreshTimer = null; refresh(); }, 150);
  }

  function onTransition(t) {
    var info = STATES[t.to] || [t.to];
    var from = STATES[t.from] || [t.from];
    if (page === "fleet") {
      var grid = document.getElementById("grid");
      var tiles = grid ? grid.querySelectorAll(":scope > .tile") : [];
      var found = false;
      for (var i = 0; i < tiles.length; i++) {
        if (tiles[i].getAttribute("data-host") === t.host) {
          applyState(tiles[i], t.to, t.at_ms);
          found = true;
        }
      }
      if (found) { recount(); applyFilter(); tick(); }
      announce(t.host + ": " + from[0] + " \u2192 " + info[0]);
      scheduleRefresh();
    } else if (page === "host" && body.getAttribute("data-host") === t.host) {
      var head = document.getElementById("host-head");
      if (head) { applyState(head, t.to, t.at_ms); tick(); }
      announce(from[0] + " \u2192 " + info[0]);
      scheduleRefresh();
    }
  }

  function connect() {
    if (!window.EventSource) return;
    var es = new EventSource("/events");
    var wasDown = false;
    var lastDiags = null;
    es.addEventListener("open", function () {
      setLive("live", "Live");
      // After a reconnect (a daemon restart, a network blip) events may have
      // been missed: fetch the whole picture once.
      if (wasDown) { wasDown = false; scheduleRefresh(); }
    });
    es.addEventListener("error", function () {
      wasDown = true;
      setLive("reconnecting", "Reconnecting\u2026");
    });
    es.addEventListener("transition", function (e) {
      try { onTransition(JSON.parse(e.data)); } catch (err) { scheduleRefresh(); }
    });
    es.addEventListener("note", function (e) {
      try {
        var n = JSON.parse(e.data);
        if (page === "host" && body.getAttribute("data-host") === n.host) scheduleRefresh();
      } catch (err) { scheduleRefresh(); }
    });
    es.addEventListener("diagnostics", function (e) {
      if (lastDiags !== null && lastDiags !== e.data && page === "fleet") scheduleRefresh();
      lastDiags = e.data;
    });
    es.addEventListener("resync", function () { scheduleRefresh(); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (page === "fleet") {
      document.addEventListener("click", onFilterClick);
      applyFilter();
    }
    tick();
    setInterval(tick, 1000);
    setLive("reconnecting", "Connecting\u2026");
    connect();
  });
})();
