// pipe: a disclosure (<details>) the reader opened holds its refresh
// region still, as an edited field does (base.js waits while a region
// holds [data-edited]); closing it lets the region refresh again.
"use strict";
(function () {
  document.addEventListener("click", (e) => {
    const summary = e.target.closest && e.target.closest("details > summary");
    if (!summary) return;
    const details = summary.parentElement;
    // The click toggles the details after this handler: read it then.
    setTimeout(() => {
      if (details.open) details.setAttribute("data-edited", "");
      else details.removeAttribute("data-edited");
    }, 0);
  });
})();
