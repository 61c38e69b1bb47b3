// HybridFlow console: live pages over server-sent events, and the "resumes in" countdowns.
// The pages work without it; with it, the part of the page under #live is fetched again when the server says that
// something it shows changed (new messages, decisions, pauses), from this serve or from any other process.
(function () {
  "use strict";

  function span(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) return seconds + " s";
    var minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    var hours = Math.floor(minutes / 60);
    minutes = minutes % 60;
    if (hours < 48) return minutes ? hours + " h " + minutes + " min" : hours + " h";
    var days = Math.floor(hours / 24);
    hours = hours % 24;
    return hours ? days + " d " + hours + " h" : days + " d";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-until]").forEach(function (el) {
      var left = (Date.parse(el.getAttribute("data-until")) - now) / 1000;
      el.textContent = span(Math.ceil(left));
    });
  }

  var refreshing = false;
  var again = false;

  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (response.redirected && response.url.indexOf("/ui/login") >= 0) { window.location = response.url; return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var live = document.getElementById("live");
        if (fresh && live) {
          live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes));
          document.body.setAttribute("data-refreshed", String(Date.now()));
          tick();
        }
      })
      .catch(function () {})
      .then(function () {
        refreshing = false;
        if (again) { again = false; refresh(); }
      });
  }

  function concerns(change, live) {
    if (!live) return false;
    if (change.chats === null) return true;
    if (live.indexOf("chat:") === 0) return change.chats.indexOf(live.slice(5)) >= 0;
    return change.chats.length > 0 || change.tenants;
  }

  function connect() {
    var body = document.body;
    var live = body.getAttribute("data-live");
    var status = document.getElementById("live-status");
    if (!live || !window.EventSource) return;
    var cursor = body.getAttribute("data-cursor") || "";
    var source = new EventSource("/ui/events" + (cursor ? "?since=" + encodeURIComponent(cursor) : ""));
    function show(on) {
      if (!status) return;
      status.hidden = false;
      status.textContent = status.getAttribute(on ? "data-on" : "data-off");
      status.className = "live-status " + (on ? "on" : "off");
    }
    source.onopen = function () { show(true); };
    source.onerror = function () { show(false); };
    source.addEventListener("change", function (event) {
      var change = JSON.parse(event.data);
      body.setAttribute("data-cursor", change.cursor);
      if (concerns(change, live)) refresh();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, 15000);
    connect();
  });
})();
