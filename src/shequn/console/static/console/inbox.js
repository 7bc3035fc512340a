/* Shequn inbox: keeps a list or a conversation current by conditional polling, and expands canned
   replies in the reply box.

   Every few seconds the page asks the workspace's inbox version with If-None-Match; the server
   answers 304 (one indexed row read) until something changed, and only then is the list or the
   conversation fetched again (?partial=1). Hidden tabs do not poll. See docs/inbox.md. */
(function () {
  "use strict";

  function startPolling(box) {
    var url = box.getAttribute("data-poll-url");
    var every = Math.max(1, parseInt(box.getAttribute("data-poll-seconds"), 10) || 3) * 1000;
    var version = box.getAttribute("data-version");
    var refresh = box.getAttribute("data-refresh") === "1";
    var live = document.getElementById("inbox-live");
    var failures = 0;
    var timer = null;

    function schedule(delay) {
      window.clearTimeout(timer);
      timer = window.setTimeout(tick, delay + Math.floor(Math.random() * 400));
    }

    function fragmentUrl() {
      var u = new URL(window.location.href);
      u.searchParams.set("partial", "1");
      return u.toString();
    }

    function reload() {
      return fetch(fragmentUrl(), {credentials: "same-origin", cache: "no-store",
                                   headers: {"X-Requested-With": "fetch"}})
        .then(function (response) {
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.text();
        })
        .then(function (html) {
          var active = document.activeElement;
          if (active && box.contains(active) && active.tagName === "SELECT") {
            return;  // an agent is choosing in a form of the refreshed part: try again next change
          }
          box.innerHTML = html;
          var counts = box.querySelector("[data-counts]");
          if (counts) {
            var values = JSON.parse(counts.getAttribute("data-counts"));
            Object.keys(values).forEach(function (key) {
              var el = document.getElementById("count-" + key);
              if (el) { el.textContent = values[key]; }
            });
          }
          box.dispatchEvent(new CustomEvent("inbox:refreshed", {bubbles: true}));
        });
    }

    function tick() {
      if (document.hidden) {
        schedule(every);
        return;
      }
      fetch(url, {credentials: "same-origin", cache: "no-store",
                  headers: {"If-None-Match": '"inbox-' + version + '"', "Accept": "application/json"}})
        .then(function (response) {
          if (response.status === 304) { return null; }
          if (!response.ok) { throw new Error(String(response.status)); }
          return response.json();
        })
        .then(function (state) {
          failures = 0;
          if (state === null || String(state.version) === String(version)) { return null; }
          version = String(state.version);
          box.setAttribute("data-version", version);
          if (live) { live.setAttribute("data-state", "changed"); }
          return refresh ? reload() : null;
        })
        .then(function () { schedule(every); })
        .catch(function () {
          failures += 1;
          schedule(Math.min(60000, every * Math.pow(2, failures)));
        });
    }

    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) { schedule(0); }
    });
    schedule(every);
  }

  function cannedReplies() {
    var select = document.getElementById("canned");
    var text = document.getElementById("reply-text");
    if (!select || !text) { return; }
    var byShortcut = {};
    Array.prototype.forEach.call(select.options, function (o) {
      if (o.value) { byShortcut[o.value] = o.getAttribute("data-text"); }
    });

    function insert(snippet) {
      var start = text.selectionStart || 0;
      var end = text.selectionEnd || 0;
      text.value = text.value.slice(0, start) + snippet + text.value.slice(end);
      text.focus();
      text.selectionStart = text.selectionEnd = start + snippet.length;
    }

    select.addEventListener("change", function () {
      var o = select.options[select.selectedIndex];
      if (o && o.value) { insert(o.getAttribute("data-text")); }
      select.selectedIndex = 0;
    });
    text.addEventListener("keydown", function (event) {
      if (event.key !== "Tab") { return; }
      var before = text.value.slice(0, text.selectionStart);
      var match = /(?:^|\s)\/([a-z0-9_-]{1,32})$/.exec(before);
      if (!match || !byShortcut[match[1]]) { return; }
      event.preventDefault();
      var cut = before.length - match[1].length - 1;
      text.value = text.value.slice(0, cut) + byShortcut[match[1]] + text.value.slice(text.selectionStart);
      text.selectionStart = text.selectionEnd = cut + byShortcut[match[1]].length;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    ["inbox-list", "conv-live"].forEach(function (id) {
      var box = document.getElementById(id);
      if (box) { startPolling(box); }
    });
    cannedReplies();
  });
})();
