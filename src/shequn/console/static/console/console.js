/* Shequn console: draws the charts, asks before destructive forms, follows import progress. */
(function () {
  "use strict";

  function drawCharts() {
    if (typeof window.Plotly === "undefined") {
      return;
    }
    document.querySelectorAll("[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-figure"));
      if (!source) {
        return;
      }
      var figure = JSON.parse(source.textContent);
      window.Plotly.newPlot(el, figure.data, figure.layout, {displaylogo: false, responsive: true});
    });
  }

  function confirmForms() {
    document.querySelectorAll("form.confirm").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm") || "")) {
          event.preventDefault();
        }
      });
    });
  }

  function followImport() {
    var box = document.getElementById("import-progress");
    if (!box || box.getAttribute("data-finished") === "1") {
      return;
    }
    var url = box.getAttribute("data-status-url");
    var fields = {
      processed_rows: "job-processed", total_rows: "job-total", percent: "job-percent",
      created_count: "job-created", updated_count: "job-updated", unchanged_count: "job-unchanged",
      error_count: "job-errors", message: "job-message"
    };

    function show(state) {
      Object.keys(fields).forEach(function (key) {
        var el = document.getElementById(fields[key]);
        if (el) {
          el.textContent = state[key];
        }
      });
      var bar = document.getElementById("job-bar");
      bar.style.width = state.percent + "%";
      bar.parentNode.setAttribute("aria-valuenow", state.percent);
      var status = document.getElementById("job-status");
      status.textContent = state.status_label;
      status.setAttribute("data-status", state.status);
      status.className = "status status-" + state.status;
    }

    function poll() {
      fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (response) {
          if (!response.ok) {
            throw new Error(response.status);
          }
          return response.json();
        })
        .then(function (state) {
          show(state);
          if (state.finished) {
            // The error report is rendered by the server: load it once the job has finished.
            window.setTimeout(function () { window.location.reload(); }, 600);
          } else {
            window.setTimeout(poll, 1000);
          }
        })
        .catch(function () {
          window.setTimeout(poll, 3000);
        });
    }

    window.setTimeout(poll, 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    confirmForms();
    followImport();
  });
})();
