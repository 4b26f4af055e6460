// ddstore console: refreshes a page's live part (#live, data-refresh =
// milliseconds) by fetching the page again with ?part=live, while the tab
// is visible. A 401 means the session ended: back to the login page.
"use strict";
(function () {
  var live = document.getElementById("live");
  if (!live) return;
  var every = parseInt(live.getAttribute("data-refresh"), 10);
  if (!(every > 0)) return;
  var busy = false;
  function stamp() {
    var s = document.getElementById("refreshed");
    if (s) s.textContent = "last " + new Date().toLocaleTimeString();
  }
  function tick() {
    if (busy || document.hidden) return;
    busy = true;
    var url = new URL(window.location.href);
    url.searchParams.set("part", "live");
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) {
          window.location.reload();
          return null;
        }
        return r.text();
      })
      .then(function (html) {
        if (html !== null) {
          live.innerHTML = html;
          stamp();
        }
      })
      .catch(function () {
        var s = document.getElementById("refreshed");
        if (s) s.textContent = "console unreachable at " + new Date().toLocaleTimeString();
      })
      .finally(function () { busy = false; });
  }
  stamp();
  setInterval(tick, every);
})();
