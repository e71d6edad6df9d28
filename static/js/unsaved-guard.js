/*
 * Asks before the page is left with text typed into a form marked data-unsaved-guard that was not
 * sent: the story's title and plot on its settings page, a scene rewrite's instructions. The browser
 * shows its own question ("Leave site? Changes you made may not be saved."); the page cannot word it.
 *
 * A form the server showed again after refusing it (data-unsaved-guard="refused") holds text that was
 * not saved, though it is the page's own: it asks from the start. Sending a form (a post, or a rewrite
 * started over the WebSocket) makes what it held the text to compare with.
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

  forms.forEach(function (form) {
    // Capturing, so that it runs before a handler that cancels the submit to send it another way.
    form.addEventListener(
      "submit",
      function () {
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
