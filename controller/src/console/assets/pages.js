// pages (issue 16): follow an action's log as it is written. The page
// shows the whole log without this script; with it, each `log` event of
// this action fetches the new lines as HTML rendered by the controller
// (the same converter and the same masked text as the page) and appends
// them. "Follow log" (aria-pressed) keeps the newest line in view;
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

    let busy = false, again = false;
    async function fetchNew() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const job = log.dataset.job || "";
        const after = lastSeq();
        const query = after >= 0 && job ? "?after=" + after + "&job=" + encodeURIComponent(job) : "";
        const url = location.pathname.replace(/\/$/, "") + "/log" + query;
        const response = await fetch(url, { credentials: "same-origin", headers: { "x-sluice-live": "1" } });
        if (!response.ok) return;
        const newJob = response.headers.get("x-sluice-log-job") || "";
        const html = await response.text();
        const parsed = new DOMParser().parseFromString("<pre>" + html + "</pre>", "text/html").body.firstChild;
        if (newJob !== job) {
          // A new attempt: its log starts over.
          log.replaceChildren();
          log.dataset.job = newJob;
        }
        const empty = log.querySelector(".empty");
        if (empty && parsed.childNodes.length) empty.remove();
        while (parsed.firstChild) log.appendChild(document.adoptNode(parsed.firstChild));
        if (log.dataset.following === "true") log.scrollTop = log.scrollHeight;
      } catch (_) {
        // The next event tries again.
      } finally {
        busy = false;
        if (again) { again = false; fetchNew(); }
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
