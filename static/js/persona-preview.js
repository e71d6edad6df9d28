/*
 * The persona editor's live context preview in the admin: as the editor types, the form's current
 * values are posted (debounced; an older request still under way is cancelled) to the admin's preview
 * view, which answers with the exact context the model would get, its token estimate and whether it
 * was shortened, with the text cut off shown struck through after it. Nothing is saved. Loaded as a file (the Content-Security-Policy allows no inline
 * script); text from the server is inserted with textContent only, never as HTML.
 */
(function () {
  "use strict";

  var DELAY_MS = 400;

  function start() {
    var box = document.querySelector(".persona-live-preview");
    var form = box && box.closest("form");
    if (!form || !window.fetch) {
      return; // A read-only page has no form to preview.
    }
    var status = box.querySelector(".persona-live-status");
    var meter = box.querySelector(".persona-live-meter");
    var output = box.querySelector(".persona-live-context");
    var announcer = box.querySelector(".persona-live-announcer");
    // What a screen reader was last told: the token count changes at every pause in the typing, so it
    // hears only a change of outcome (over the budget, within it again, an error), once.
    var outcome = "within";

    function outcomeSay(now, text) {
      if (now !== outcome) {
        outcome = now;
        announcer.textContent = text;
      }
    }
    var timer = null;
    var pending = null;

    function csrfToken() {
      return window.csrfTokenFromCookie(box.dataset.csrfCookie, form.elements.csrfmiddlewaretoken.value);
    }

    function show(answer) {
      output.textContent = answer.context || "(empty)";
      if (answer.cut) {
        // Where the context is shortened: what follows the cut, which the model does not get.
        var cut = document.createElement("del");
        cut.className = "persona-live-cut";
        cut.title = "Cut: over the token budget; the model does not get this.";
        cut.textContent = answer.cut;
        output.appendChild(cut);
      }
      meter.max = answer.budget;
      meter.high = answer.budget * 0.9;
      meter.optimum = 0;
      meter.value = Math.min(answer.full_tokens, answer.budget);
      var text = "About " + answer.tokens + " of " + answer.budget + " tokens (estimate).";
      if (answer.shortened) {
        text += " Over the budget (" + answer.full_tokens + " tokens): the end was cut, marked [shortened]; the struck-through text after it is what the model does not get.";
      }
      status.textContent = text;
      if (answer.shortened) {
        outcomeSay("over", "Over the token budget (" + answer.full_tokens + " of " + answer.budget + "): the end of the context is cut.");
      } else {
        outcomeSay("within", "Within the token budget.");
      }
    }

    function fail(message) {
      outcomeSay("error:" + message, message);
      status.textContent = message;
      output.textContent = "";
      meter.value = 0;
    }

    function update() {
      var data = new FormData(form);
      data.set("persona_id", box.dataset.personaId || "");
      if (pending) {
        pending.abort();
      }
      pending = new AbortController();
      data.set("csrfmiddlewaretoken", csrfToken());
      fetch(box.dataset.url, { method: "POST", body: data, credentials: "same-origin", signal: pending.signal })
        .then(function (response) {
          return response.json().then(
            function (answer) {
              if (response.ok) {
                show(answer);
              } else {
                fail((answer.errors || ["The preview is unavailable."]).join(" "));
              }
            },
            function () {
              // Not JSON (a proxy's error page, Django's CSRF page): said by its status, not by the
              // parser's "Unexpected token".
              fail("The preview is unavailable (the server answered " + response.status + ").");
            }
          );
        })
        .catch(function (error) {
          if (error.name !== "AbortError") {
            fail("The preview is unavailable (" + error.message + ").");
          }
        });
    }

    // Where a save that cannot be made is said, above the buttons that were pressed (role=alert).
    function refuseSave(message, submitter) {
      var note = form.querySelector(".persona-save-refused");
      if (!note) {
        note = document.createElement("p");
        note.className = "errornote persona-save-refused";
        note.setAttribute("role", "alert");
      }
      var row = (submitter && submitter.closest(".submit-row")) || form.querySelector(".submit-row");
      (row || form).parentNode.insertBefore(note, row || form.firstChild);
      note.textContent = message;
      note.scrollIntoView({ block: "center" });
    }

    var asked = false; // the session was asked about for this submit: it goes on as the browser's own
    form.addEventListener("submit", function (event) {
      // A save sends the cookie's token too: after signing in again in another tab (as the signed-out
      // message says), the token this page was served with got Django's CSRF page instead of a save.
      var field = form.elements.csrfmiddlewaretoken;
      if (field) {
        field.value = csrfToken();
      }
      if (asked) {
        asked = false;
        return;
      }
      // Signed out since the page was served (in another tab, or the session expired), a save went to
      // the login page, which dropped the form: every edit on the page was lost. The preview's view is
      // asked first (it answers 401 or 403 in JSON then); the edits stay on the page until it holds.
      event.preventDefault();
      var submitter = event.submitter || null;
      var data = new FormData(form);
      data.set("persona_id", box.dataset.personaId || "");
      data.set("csrfmiddlewaretoken", csrfToken());
      function submitAfterAll() {
        asked = true;
        if (form.requestSubmit) {
          form.requestSubmit(submitter);
        } else {
          HTMLFormElement.prototype.submit.call(form);
        }
      }
      fetch(box.dataset.url, { method: "POST", body: data, credentials: "same-origin" })
        .then(function (response) {
          if (response.status === 401) {
            refuseSave("You are signed out, so nothing was saved: sign in again in another tab (your edits on this page are kept until you leave it), then save again.", submitter);
          } else if (response.status === 403 && (response.headers.get("Content-Type") || "").indexOf("json") >= 0) {
            return response.json().then(function (answer) {
              if (answer.errors) {
                refuseSave("Nothing was saved. " + answer.errors.join(" ").replace("then type on to see the preview", "then save again"), submitter);
              } else {
                submitAfterAll(); // Django's CSRF refusal: the save says it as it would have
              }
            }, submitAfterAll);
          } else {
            submitAfterAll(); // anything else is the save's own to answer
          }
        }, submitAfterAll);
    });

    form.addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(update, DELAY_MS);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
