// Sluice console: live updates. Every page works without this script;
// with it, a page whose <body data-live="…"> names a pipeline (or "*" for
// all) refreshes in place when the event stream says something changed.
// What refreshes: each element with an id and data-refresh (replaced by
// the element with the same id in the new page), or the whole <main> when
// the page marks none. A form being filled in is never wiped: a region
// whose field holds the focus or was edited waits for the next event; a
// focused link or button is focused again in the new region.
// Refreshes are throttled: a page of every pipeline at most every 5 s,
// others at most once a second. The stream carries log lines only to a
// page that listens for events (sluice.onEvent): others ask for
// ?types=state.
"use strict";
(function () {
  const listeners = [];
  let stream = null, streamHasLogs = false;
  const sluice = {
    // Calls fn(event) for every event of the stream this page follows,
    // log lines included (the stream is reopened with them if needed).
    onEvent(fn) {
      listeners.push(fn);
      if (stream && !streamHasLogs) openStream();
    },
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

  // A keyboard user's place survives a refresh: the control that held the
  // focus in a replaced region is found again in the new one (by id, else
  // as the same-named control of its kind, counted in order) and focused.
  const FOCUSABLE = "a[href], button, input, select, textarea, summary, [tabindex]";
  function focusKey(el) {
    return el.tagName + "|" + (el.getAttribute("aria-label") || el.textContent).trim();
  }
  function controlsNamed(root, key) {
    return Array.from(root.querySelectorAll(FOCUSABLE)).filter((x) => focusKey(x) === key);
  }
  function focusPlace(root) {
    const el = document.activeElement;
    if (!el || el === root || !root.contains(el)) return null;
    if (el.id) return { id: el.id };
    const key = focusKey(el);
    return { key, nth: controlsNamed(root, key).indexOf(el) };
  }
  function restoreFocus(root, place) {
    if (!place || (document.activeElement && document.activeElement !== document.body)) return;
    const el = place.id
      ? document.getElementById(place.id)
      : controlsNamed(root, place.key)[place.nth];
    if (el && root.contains(el)) el.focus({ preventScroll: true });
  }

  let timer = null, running = false, again = false, last = 0;
  // The least time between two refreshes (ms): a page of every pipeline
  // changes with any event anywhere.
  function minGap() { return document.body.dataset.live === "*" ? 5000 : 1000; }
  async function refresh() {
    if (running) { again = true; return; }
    running = true;
    last = Date.now();
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
          const place = focusPlace(region);
          region.replaceWith(document.adoptNode(fresh));
          restoreFocus(fresh, place);
          localTimes(fresh);
          changed = true;
        }
      } else {
        const main = document.querySelector("main"), fresh = next.querySelector("main");
        if (main && fresh && !busy(main) && fresh.innerHTML !== main.innerHTML) {
          const place = focusPlace(main);
          main.innerHTML = fresh.innerHTML;
          localTimes(main);
          restoreFocus(main, place);
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
  // Coalesces a burst of events into one refresh, and keeps refreshes
  // at least minGap() apart.
  function schedule() {
    if (timer !== null) return;
    const wait = Math.max(250, last + minGap() - Date.now());
    timer = setTimeout(() => { timer = null; refresh(); }, wait);
  }

  document.addEventListener("input", (e) => { if (e.target.form) e.target.setAttribute("data-edited", ""); });
  document.addEventListener("submit", (e) => {
    for (const el of e.target.querySelectorAll("[data-edited]")) el.removeAttribute("data-edited");
  });

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    // After every script's own DOMContentLoaded handler: those that
    // listen for events have said so by then.
    setTimeout(openStream, 0);
  });

  function openStream() {
    const live = document.body.dataset.live;
    if (!live || !window.EventSource) return;
    if (stream) stream.close();
    streamHasLogs = listeners.length > 0;
    const query = [];
    if (live !== "*") query.push("pipeline=" + encodeURIComponent(live));
    if (!streamHasLogs) query.push("types=state");
    stream = new EventSource("/console/events" + (query.length ? "?" + query.join("&") : ""));
    stream.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      for (const fn of listeners) fn(event);
      if (event.type !== "log") schedule();
    };
    // An event published between this page's render and the stream's
    // start (or during a reconnect) would be missed: refresh once the
    // stream is open.
    stream.onopen = () => schedule();
    // A stream the server ended for good (signed out, expired, revoked):
    // one refresh, which lands on the sign-in page.
    stream.onerror = () => { if (stream.readyState === EventSource.CLOSED) refresh(); };
  }
})();
