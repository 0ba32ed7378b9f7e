// Live updates in place, for the celery-qstash dashboard and the AutoSend sandbox inbox.
//
// Every <body data-refresh> seconds this fetches the page again and swaps each
// [data-live] region for the region with the same id in the fresh copy, unless the
// reader is using it (the focus is inside, a <details> confirmation is open, a box is
// checked). Text typed into a search box, an open confirmation and the scroll position
// stay. Served from the page's own origin under a Content-Security-Policy of
// script-src 'self' (no inline script, no eval). Without JavaScript, the page's
// <noscript><meta http-equiv="refresh"> reloads it whole instead.
(function () {
  "use strict";
  var body = document.body;
  var seconds = parseInt(body.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0) || !window.fetch || !window.DOMParser) {
    return;
  }
  var updates = 0;

  function busy(region) {
    var active = document.activeElement;
    if (active && active !== body && region.contains(active)) {
      return true;
    }
    return region.querySelector("details[open], input[type=checkbox]:checked") !== null;
  }

  function swap(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html");
    var regions = document.querySelectorAll("[data-live]");
    for (var i = 0; i < regions.length; i++) {
      var old = regions[i];
      var next = old.id ? fresh.getElementById(old.id) : null;
      if (next && !busy(old) && next.innerHTML !== old.innerHTML) {
        old.innerHTML = next.innerHTML;
      }
    }
    var title = fresh.querySelector("title");
    if (title) {
      document.title = title.textContent;
    }
    updates += 1;
    body.setAttribute("data-live-updates", String(updates));
  }

  function tick() {
    if (document.hidden) {
      schedule();
      return;
    }
    fetch(window.location.href, {credentials: "same-origin", headers: {"X-Live-Update": "1"}})
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(swap, function () { /* the server is restarting: try again next period */ })
      .then(schedule);
  }

  function schedule() {
    window.setTimeout(tick, seconds * 1000);
  }

  schedule();
})();
