// pages (issue 16): follow an action's log as it is written. The page
// shows the log's tail without this script; with it, `log` events of
// this action fetch the new lines as HTML rendered by the controller
// (the same converter and the same masked text as the page) and append
// them: at most one request in flight and at most two a second however
// fast lines come (each asks for the lines after the last one shown), and
// only the newest `data-keep` lines stay on the page. "Follow log" (aria-pressed) keeps the newest line in view;
// scrolling up stops following, scrolling back to the end resumes.
"use strict";
(function () {
  document.addEventListener("DOMContentLoaded", () => {
    const log = document.getElementById("log");
    const button = document.getElementById("follow");
    // An earlier attempt's log is finished: nothing to follow.
    if (!log || !button || !window.sluice || log.dataset.current !== "true") return;
    button.hidden = false;

    function setFollowing(on) {
      log.dataset.following = on ? "true" : "false";
      button.setAttribute("aria-pressed", on ? "true" : "false");
      if (on) log.scrollTop = log.scrollHeight;
    }
    button.addEventListener("click", () => setFollowing(log.dataset.following !== "true"));
    log.addEventListener("scroll", () => {
      const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
      if (!atEnd && log.dataset.following === "true") setFollowing(false);
      else if (atEnd && log.dataset.following !== "true") setFollowing(true);
    });
    setFollowing(true);

    function lastSeq() {
      const lines = log.querySelectorAll(".line[data-seq]");
      return lines.length ? Number(lines[lines.length - 1].dataset.seq) : -1;
    }

    const GAP_MS = 500;
    const keep = Number(log.dataset.keep) || 5000;
    let busy = false, again = false, lastStart = 0;
    // Events only say "something new": one fetch answers any number of them.
    function fetchNew() {
      if (busy) { again = true; return; }
      busy = true;
      setTimeout(fetchNow, Math.max(0, lastStart + GAP_MS - Date.now()));
    }
    async function fetchNow() {
      lastStart = Date.now();
      let more = false;
      try {
        const job = log.dataset.job || "";
        const after = lastSeq();
        const query = after >= 0 && job ? "?after=" + after + "&job=" + encodeURIComponent(job) : "";
        const url = location.pathname.replace(/\/$/, "") + "/log" + query;
        const response = await fetch(url, { credentials: "same-origin", headers: { "x-sluice-live": "1" } });
        if (!response.ok) return;
        const newJob = response.headers.get("x-sluice-log-job") || "";
        more = response.headers.get("x-sluice-log-more") === "1";
        const html = await response.text();
        const parsed = new DOMParser().parseFromString("<pre>" + html + "</pre>", "text/html").body.firstChild;
        if (newJob !== job) {
          // A new attempt: its log starts over (a page with no line yet
          // knew no job: its lines simply come).
          if (job) log.replaceChildren();
          log.dataset.job = newJob;
        }
        const empty = log.querySelector(".empty");
        if (empty && parsed.childNodes.length) empty.remove();
        while (parsed.firstChild) log.appendChild(document.adoptNode(parsed.firstChild));
        const lines = log.querySelectorAll(".line[data-seq]");
        for (let i = 0; i < lines.length - keep; i++) lines[i].remove();
        if (log.dataset.following === "true") log.scrollTop = log.scrollHeight;
      } catch (_) {
        // The next event tries again.
      } finally {
        busy = false;
        if (again || more) { again = false; fetchNew(); }
      }
    }

    window.sluice.onEvent((event) => {
      if (event.type !== "log") return;
      if (event.stage !== log.dataset.stage || event.action !== log.dataset.action) return;
      if (!location.pathname.includes("/executions/" + encodeURIComponent(event.executionId) + "/")) return;
      fetchNew();
    });
  });
})();
