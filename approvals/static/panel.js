// Progressive enhancement only: every page works without this file.
// 1. [data-poll] elements refresh from their URL (new drafts appear for Decision Makers).
// 2. [data-preview] forms refresh the live preview as you type.
// 3. [data-countdown] elements count down to their deadline (the next public update).
// No inline scripts anywhere: the CSP allows only this file.
(function () {
  "use strict";
  var baseTitle = document.title;

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function countIn(el) {
    var marked = el.querySelector("[data-count]");
    return marked ? parseInt(marked.getAttribute("data-count"), 10) || 0 : 0;
  }

  function poll(el) {
    var url = el.getAttribute("data-poll");
    var seconds = parseInt(el.getAttribute("data-poll-seconds"), 10) || 10;
    var last = el.innerHTML;
    function tick() {
      fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          // A redirect means the session ended: reload, so the person sees the login page.
          if (r.redirected) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html !== null && html !== last) {
            var before = countIn(el);
            el.innerHTML = html;
            last = html;
            var after = countIn(el);
            document.title = after > 0 ? "(" + after + ") " + baseTitle : baseTitle;
            if (after > before) { el.classList.add("flash"); setTimeout(function () { el.classList.remove("flash"); }, 3000); }
          }
        })
        .catch(function () { /* offline for a moment; try again next tick */ })
        .then(function () { setTimeout(tick, seconds * 1000); });
    }
    document.title = countIn(el) > 0 ? "(" + countIn(el) + ") " + baseTitle : baseTitle;
    setTimeout(tick, seconds * 1000);
  }

  function livePreview(form) {
    var url = form.getAttribute("data-preview");
    var target = document.getElementById(form.getAttribute("data-preview-target") || "preview");
    if (!url || !target) { return; }
    var timer = null;
    var seq = 0;
    function refresh() {
      var mine = ++seq;
      var body = new FormData(form);
      body.delete("action");
      fetch(url, { method: "POST", body: body, credentials: "same-origin", headers: { "X-CSRF-Token": csrf() } })
        .then(function (r) { return r.text(); })
        .then(function (html) { if (mine === seq) { target.innerHTML = html; } })
        .catch(function () {});
    }
    function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 400); }
    form.addEventListener("input", schedule);
    form.addEventListener("change", schedule);
  }

  // Same words as the server's ``until`` filter, to the second.
  function countdown(el) {
    var due = Date.parse(el.getAttribute("data-countdown"));
    if (isNaN(due)) { return; }
    function span(seconds) {
      if (seconds < 60) { return seconds + " s"; }
      if (seconds < 3600) { return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s"; }
      return Math.floor(seconds / 3600) + " h " + Math.floor(seconds % 3600 / 60) + " min";
    }
    function tick() {
      var seconds = Math.round((due - Date.now()) / 1000);
      el.textContent = seconds >= 0 ? "in " + span(seconds) : "overdue by " + span(-seconds);
      el.classList.toggle("warn-text", seconds < 0);
    }
    tick();
    setInterval(tick, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-countdown]"), countdown);
    Array.prototype.forEach.call(document.querySelectorAll("[data-poll]"), poll);
    Array.prototype.forEach.call(document.querySelectorAll("form[data-preview]"), livePreview);
  });
})();
