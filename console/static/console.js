/* The console's script: small, optional, no libraries. Without it every page still
   works (forms post, a "Refresh" link reloads); with it:
   - elements with data-refresh-url reload their content every data-refresh-seconds
     (the overview, a job that is still running), pausable with a button, and never
     while keyboard focus is inside them (a refresh must not pull focus away);
   - forms with data-confirm ask before they post. */
(function () {
  "use strict";

  function refresher(el) {
    var url = el.getAttribute("data-refresh-url");
    var seconds = parseFloat(el.getAttribute("data-refresh-seconds")) || 5;
    var toggle = el.getAttribute("data-refresh-toggle") && document.getElementById(el.getAttribute("data-refresh-toggle"));
    var paused = false;
    var timer = null;
    var busy = false;

    function schedule() {
      if (timer) { window.clearTimeout(timer); }
      if (!paused) { timer = window.setTimeout(tick, seconds * 1000); }
    }

    function stop(message) {
      paused = true;
      if (timer) { window.clearTimeout(timer); }
      if (message) {
        var note = document.createElement("p");
        note.className = "notice notice-error";
        note.setAttribute("role", "status");
        note.appendChild(document.createTextNode(message + " "));
        var link = document.createElement("a");
        link.href = window.location.pathname + window.location.search;
        link.textContent = "Reload the page";
        note.appendChild(link);
        el.insertBefore(note, el.firstChild);
      }
      if (toggle) { toggle.hidden = true; }
    }

    function tick() {
      if (busy || paused || document.hidden || el.contains(document.activeElement)) { schedule(); return; }
      busy = true;
      window.fetch(url, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) { stop("Your session has ended."); return null; }
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (html) {
          if (html === null) { return; }
          el.innerHTML = html;
          if (el.querySelector("[data-final]")) {
            el.removeAttribute("data-refresh-url");
            paused = true;
          }
        })
        .catch(function () { /* a missed refresh is retried at the next tick */ })
        .then(function () { busy = false; schedule(); });
    }

    if (toggle) {
      toggle.hidden = false;
      toggle.addEventListener("click", function () {
        paused = !paused;
        toggle.setAttribute("aria-pressed", paused ? "true" : "false");
        toggle.textContent = paused ? "Resume auto-refresh" : "Pause auto-refresh";
        if (!paused) { tick(); }
      });
    }
    schedule();
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form && form.getAttribute && form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });

  function start() {
    var els = document.querySelectorAll("[data-refresh-url]");
    for (var i = 0; i < els.length; i++) { refresher(els[i]); }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
