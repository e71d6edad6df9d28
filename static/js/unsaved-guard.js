/*
 * Asks before the page is left with text typed into a form marked data-unsaved-guard that was not
 * sent: the story's title and plot on its settings page, a scene rewrite's instructions. The browser
 * shows its own question ("Leave site? Changes you made may not be saved."); the page cannot word it.
 *
 * A form the server showed again after refusing it (data-unsaved-guard="refused") holds text that was
 * not saved, though it is the page's own: it asks from the start. Sending a form (a post, or a rewrite
 * started over the WebSocket) makes what it held the text to compare with.
 *
 * A form that also has data-draft-key (the settings page's title and plot) keeps what it sends in
 * sessionStorage under that key. A post that never reached the form's view (the writer was signed out
 * meanwhile and sent to the login page, or signed in again in another tab, so the CSRF token was
 * refused) left the text nowhere: the form came back as the server has it. When the page opens with
 * the fields still as they were before that post, the post did not land, and the text is put back, with
 * the stamp the page was sent with (a change made elsewhere since is then refused as a conflict, both
 * shown), and a notice saying so. Fields as sent, or changed otherwise since, mean the draft is done.
 */
(function () {
  "use strict";

  var forms = Array.prototype.slice.call(document.querySelectorAll("form[data-unsaved-guard]"));
  if (!forms.length) {
    return;
  }

  function typed(form) {
    return Array.prototype.filter.call(form.elements, function (field) {
      return field.tagName === "TEXTAREA" || (field.tagName === "INPUT" && field.type === "text");
    });
  }

  function unsaved(form) {
    if (form.dataset.unsavedGuard === "refused") {
      return true;
    }
    return typed(form).some(function (field) {
      return field.value !== field.defaultValue;
    });
  }

  function fieldValues(form, property) {
    var values = {};
    Array.prototype.forEach.call(form.elements, function (field) {
      if (field.name && (field.tagName === "TEXTAREA" || field.type === "text" || field.type === "hidden")) {
        values[field.name] = field[property];
      }
    });
    return values;
  }

  function draftKeep(form) {
    try {
      var draft = { sent: fieldValues(form, "value"), before: fieldValues(form, "defaultValue") };
      window.sessionStorage.setItem(form.dataset.draftKey, JSON.stringify(draft));
    } catch (error) {
      // Storage full or refused (a private window): the post goes ahead as before.
    }
  }

  function sameTyped(form, values) {
    return typed(form).every(function (field) {
      return values[field.name] === field.value;
    });
  }

  function draftRestore(form) {
    var draft = null;
    try {
      draft = JSON.parse(window.sessionStorage.getItem(form.dataset.draftKey) || "null");
      window.sessionStorage.removeItem(form.dataset.draftKey);
    } catch (error) {
      return;
    }
    if (!draft || typeof draft.sent !== "object" || typeof draft.before !== "object") {
      return;
    }
    if (sameTyped(form, draft.sent) || !sameTyped(form, draft.before)) {
      return; // saved, or changed since: the draft is done
    }
    Array.prototype.forEach.call(form.elements, function (field) {
      if (field.name && typeof draft.sent[field.name] === "string" && field.type !== "hidden") {
        field.value = draft.sent[field.name];
      } else if (field.type === "hidden" && field.name !== "csrfmiddlewaretoken" && draft.before[field.name]) {
        // The stamp the page was sent with; not the CSRF token, which a sign-in since has replaced.
        field.value = draft.before[field.name];
      }
    });
    form.dataset.unsavedGuard = "refused";
    var notice = document.createElement("p");
    notice.className = "notice draft-restored";
    notice.id = "draft-restored";
    notice.setAttribute("role", "status");
    notice.textContent =
      "Your last Save did not reach the server (you were signed out, or signed in again elsewhere), " +
      "so nothing was saved. Your text is back below: Save it again.";
    var heading = form.querySelector("h2");
    form.insertBefore(notice, heading ? heading.nextSibling : form.firstChild);
  }

  forms.forEach(function (form) {
    if (form.dataset.draftKey) {
      draftRestore(form);
    }
    // Capturing, so that it runs before a handler that cancels the submit to send it another way.
    form.addEventListener(
      "submit",
      function () {
        if (form.dataset.draftKey) {
          draftKeep(form);
        }
        form.dataset.unsavedGuard = "sent";
        typed(form).forEach(function (field) {
          field.defaultValue = field.value;
        });
      },
      true
    );
  });

  // A form of the page sent by the browser itself (not taken over by a script, which cancels the submit):
  // the writer leaves on purpose (deleting the story, with a refused title still in the other form).
  var submitting = false;
  document.addEventListener("submit", function (event) {
    if (!event.defaultPrevented) {
      submitting = true;
    }
  });
  window.addEventListener("pageshow", function () {
    submitting = false; // back on the page from the browser's history
  });

  window.addEventListener("beforeunload", function (event) {
    if (!submitting && forms.some(unsaved)) {
      event.preventDefault();
      event.returnValue = "";
    }
  });
})();
