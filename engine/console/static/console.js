// Crosswalk console: keyboard shortcuts on a proposal, and the CSRF token on htmx requests.
// Loaded as a file (the Content-Security-Policy allows no inline script).
"use strict";

document.addEventListener("htmx:configRequest", function (event) {
  var token = document.body.dataset.csrf;
  if (token) {
    event.detail.headers["X-CSRF-Token"] = token;
  }
});

document.addEventListener("keydown", function (event) {
  var form = document.getElementById("decision");
  if (!form || event.ctrlKey || event.metaKey || event.altKey) {
    return;
  }
  var typing = event.target instanceof HTMLElement &&
    (event.target.tagName === "INPUT" || event.target.tagName === "TEXTAREA");
  var reason = document.getElementById("reason");
  if (typing) {
    // Enter in the reason rejects: a reason is only needed for that.
    if (event.target === reason && event.key === "Enter") {
      event.preventDefault();
      form.requestSubmit(document.getElementById("reject"));
    }
    return;
  }
  if (event.key === "a") {
    event.preventDefault();
    form.requestSubmit(document.getElementById("approve"));
  } else if (event.key === "d") {
    event.preventDefault();
    form.requestSubmit(document.getElementById("defer"));
  } else if (event.key === "r") {
    event.preventDefault();
    reason.focus();
  }
});
