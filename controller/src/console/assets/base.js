// Sluice console: live updates. Every page works without this script;
// with it, a page whose <body data-live="…"> names a pipeline (or "*" for
// all) refreshes in place when the event stream says something changed.
// What refreshes: each element with an id and data-refresh (replaced by
// the element with the same id in the new page), or the whole <main> when
// the page marks none. A form being filled in is never wiped: a region
// holding the focus or an edited field waits for the next event.
"use strict";
(function () {
  const listeners = [];
  const sluice = {
    // Calls fn(event) for every event of the stream this page follows.
    onEvent(fn) { listeners.push(fn); },
    refresh: () => refresh(),
  };
  window.sluice = sluice;

  function localTimes(root) {
    for (const t of root.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.title = t.textContent; t.textContent = d.toLocaleString(); }
    }
  }

  function busy(el) {
    if (el.contains(document.activeElement) && document.activeElement !== el &&
        document.activeElement.matches("input, textarea, select")) return true;
    return el.querySelector("[data-edited]") !== null;
  }

  let timer = null, running = false, again = false;
  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    try {
      const response = await fetch(location.href, { headers: { "x-sluice-live": "1" }, credentials: "same-origin" });
      if (response.redirected && new URL(response.url).pathname === "/sign-in") { location.href = response.url; return; }
      if (!response.ok) return;
      const next = new DOMParser().parseFromString(await response.text(), "text/html");
      const regions = document.querySelectorAll("[data-refresh][id]");
      let changed = false;
      if (regions.length > 0) {
        for (const region of regions) {
          const fresh = next.getElementById(region.id);
          if (!fresh || busy(region) || fresh.innerHTML === region.innerHTML) continue;
          region.replaceWith(document.adoptNode(fresh));
          localTimes(fresh);
          changed = true;
        }
      } else {
        const main = document.querySelector("main"), fresh = next.querySelector("main");
        if (main && fresh && !busy(main) && fresh.innerHTML !== main.innerHTML) {
          const focused = document.activeElement && document.activeElement.id;
          main.innerHTML = fresh.innerHTML;
          localTimes(main);
          if (focused && document.getElementById(focused)) document.getElementById(focused).focus();
          changed = true;
        }
      }
      if (changed) {
        const status = document.getElementById("live-status");
        if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
        document.dispatchEvent(new CustomEvent("sluice:refreshed"));
      }
    } catch (_) {
      // The next event tries again.
    } finally {
      running = false;
      if (again) { again = false; schedule(); }
    }
  }
  function schedule() { clearTimeout(timer); timer = setTimeout(refresh, 250); }

  document.addEventListener("input", (e) => { if (e.target.form) e.target.setAttribute("data-edited", ""); });
  document.addEventListener("submit", (e) => {
    for (const el of e.target.querySelectorAll("[data-edited]")) el.removeAttribute("data-edited");
  });

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    const live = document.body.dataset.live;
    if (!live || !window.EventSource) return;
    const url = "/console/events" + (live === "*" ? "" : "?pipeline=" + encodeURIComponent(live));
    const stream = new EventSource(url);
    stream.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      for (const fn of listeners) fn(event);
      if (event.type !== "log") schedule();
    };
  });
})();
