// Optional enhancement of the veribench status pages: times shown in the reader's time zone.
// The pages work without it (they are server-rendered, times in UTC).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("main time[datetime]").forEach(function (el) {
    var d = new Date(el.getAttribute("datetime"));
    if (!isNaN(d.getTime())) {
      el.title = el.textContent;
      el.textContent = d.toLocaleString();
    }
  });
});
