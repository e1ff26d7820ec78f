// The console's one script: keeps the progress of unfinished jobs on the page current by
// polling /console/api/progress (every 2 s, only while some job on the page is unfinished).
"use strict";

(function () {
  const PERIOD_MS = 2000;
  const FINAL = new Set(["completed", "failed", "cancelled"]);

  function liveRows() {
    return Array.from(document.querySelectorAll("[data-job][data-live]"));
  }

  function update(row, job) {
    const status = row.querySelector(".status");
    const bar = row.querySelector("progress");
    const stage = row.querySelector(".stage");
    if (status) status.textContent = job.status;
    if (bar) {
      bar.value = job.progress;
      bar.textContent = job.progress + "%";
    }
    if (stage) stage.textContent = job.stage || "";
    if (FINAL.has(job.status)) row.removeAttribute("data-live");
  }

  async function poll() {
    const rows = liveRows();
    if (rows.length === 0) return;
    const ids = rows.map((row) => row.dataset.job).join(",");
    try {
      const answer = await fetch("/console/api/progress?ids=" + encodeURIComponent(ids), {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (answer.ok) {
        const body = await answer.json();
        const byId = new Map(body.jobs.map((job) => [job.id, job]));
        rows.forEach((row) => {
          const job = byId.get(row.dataset.job);
          if (job) update(row, job);
        });
      }
    } catch (error) {
      // A missed poll is retried at the next period.
    }
    window.setTimeout(poll, PERIOD_MS);
  }

  document.addEventListener("DOMContentLoaded", () => window.setTimeout(poll, PERIOD_MS));
})();
