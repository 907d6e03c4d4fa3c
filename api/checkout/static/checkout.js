// The checkout's only script, and the pages work without it: it sends a form once and follows a payment's status
// live, announcing each change to screen readers (the page without it offers a link to reload it).
(function () {
  "use strict";

  // A second click or Enter while the first submission is on its way does nothing (the server would answer it with
  // the same payment anyway: the form's attempt id is its Idempotency-Key).
  document.querySelectorAll("form[data-once]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.dataset.sent) {
        event.preventDefault();
        return;
      }
      form.dataset.sent = "true";
      var button = form.querySelector("button[type=submit]");
      if (button) button.setAttribute("aria-disabled", "true");
      var note = form.querySelector("[data-sending]");
      if (note) note.textContent = note.dataset.sending;
    });
  });

  // The error summary of a refused form takes focus, so a keyboard or screen-reader user starts there.
  var summary = document.querySelector(".error-summary");
  if (summary) summary.focus();

  var panel = document.getElementById("status-panel");
  var live = document.getElementById("live");
  if (!panel || !live || panel.dataset.final === "true") return;
  var started = Date.now();

  // The wait before the next look: every second while the player is likely watching, every 3 s up to two minutes,
  // then every 15 s (a payout waiting for a person may wait hours: 240 looks an hour stay well inside the session's
  // rate limit).
  function interval() {
    var elapsed = Date.now() - started;
    return elapsed < 30000 ? 1000 : elapsed < 120000 ? 3000 : 15000;
  }

  function schedule(wait) {
    setTimeout(poll, wait === undefined ? interval() : wait);
  }

  // The link no longer opens this payment (changed 403, unknown 404, expired 410): asking again cannot help.
  var GONE = [403, 404, 410];

  function poll() {
    fetch(panel.dataset.poll, { headers: { Accept: "application/json" }, credentials: "omit", cache: "no-store" })
      .then(function (response) {
        if (GONE.indexOf(response.status) !== -1) return;
        if (response.status === 429) {
          // Over the session's rate limit: wait as long as the answer says (in seconds), else the longest step.
          var seconds = parseInt(response.headers.get("Retry-After"), 10);
          schedule(seconds > 0 ? seconds * 1000 : 15000);
          return;
        }
        if (!response.ok) throw new Error("status " + response.status);
        return response.json().then(show);
      })
      .catch(function () {
        schedule();  // the network or the server failed this once: look again later
      });
  }

  function show(status) {
    if (status.state !== panel.dataset.state) {
      // Swapping the panel drops the focus of a control inside it (a link, a button) to the page: it goes to the
      // new panel's title instead, so a keyboard or screen-reader user stays where they were.
      var hadFocus = panel.contains(document.activeElement);
      panel.innerHTML = status.html;
      panel.dataset.state = status.state;
      live.textContent = status.announce;
      if (hadFocus) document.getElementById("outcome-title").focus();
    }
    if (status.final) {
      panel.dataset.final = "true";
    } else {
      schedule();
    }
  }

  schedule();
})();
